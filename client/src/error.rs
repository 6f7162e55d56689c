//! Client errors. Messages never contain keys or values.

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The certificates could not be read or an endpoint is not a valid address.
    #[error("configuration: {0}")]
    Config(String),
    /// The request itself was refused (INVALID_ARGUMENT, PERMISSION_DENIED, ...): retrying
    /// does not help.
    #[error("refused: {code:?}: {message}")]
    Refused {
        /// The gRPC status code the node answered with.
        code: tonic::Code,
        /// The node's message (never a key or value).
        message: String,
    },
    /// No node could complete the call within its deadline and attempts; nothing was applied.
    #[error("unavailable after {attempts} attempts: {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure, with the node it came from.
        last: String,
    },
    /// A write failed in a way that may hide an application (a lost answer, a timeout) and
    /// could not be confirmed within its deadline: it may or may not have been applied. It was
    /// applied at most once.
    #[error("indeterminate: the write may or may not have been applied")]
    Indeterminate,
}

impl ClientError {
    pub(crate) fn from_status(s: &tonic::Status) -> Self {
        ClientError::Refused { code: s.code(), message: s.message().to_owned() }
    }
}
