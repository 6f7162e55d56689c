//! Client errors. Messages never contain keys or values.

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The certificates could not be read or the endpoint is not a valid URI.
    #[error("configuration: {0}")]
    Config(String),
    /// The request itself was refused (INVALID_ARGUMENT, PERMISSION_DENIED, ...): retrying
    /// does not help.
    #[error("refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    /// No node could complete the call within the retry budget.
    #[error("unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    /// The write timed out at the server and may or may not have been applied.
    #[error("indeterminate: the write may or may not have been applied")]
    Indeterminate,
}

impl ClientError {
    pub(crate) fn from_status(s: &tonic::Status) -> Self {
        ClientError::Refused { code: s.code(), message: s.message().to_owned() }
    }
}
