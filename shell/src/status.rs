//! The one place where core errors become gRPC status codes (DESIGN.md's table).
//!
//! | core error | code |
//! |---|---|
//! | `InvalidArgument` (empty / oversized key or value, bad page token) | INVALID_ARGUMENT |
//! | key not found (a `Get` of a missing key) | NOT_FOUND |
//! | no verified client certificate | UNAUTHENTICATED |
//! | authorization denied | PERMISSION_DENIED |
//! | `NotLeader` — writes sent to a follower | UNAVAILABLE, leader hint in metadata |
//! | `Unavailable` (no leader, busy, read not confirmed, shutting down, ...) | UNAVAILABLE, hint when known |
//! | `Indeterminate`: timed out after the write was handed to Raft | DEADLINE_EXCEEDED |
//! | `Session(Expired)`: the client's session is gone; open a new one | FAILED_PRECONDITION |
//! | `Session(ResultDiscarded)`: the outcome of that seq can no longer be told | ABORTED |
//! | `QuotaExceeded`: the write would take the data past the state quota | RESOURCE_EXHAUSTED |
//! | anything else (a bug) | INTERNAL |
//!
//! A write sent to a follower is not forwarded: the answer is UNAVAILABLE with the leader's
//! name (`mokv-leader-id`) and client address (`mokv-leader-addr`) in the metadata, which the
//! client library follows. Messages never contain keys or values (the core's error texts give
//! lengths only).

use mokv_core::SessionError;
use mokv_core::{Error, LeaderHint};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Maps a core error; `hint` is the current leader, attached to UNAVAILABLE answers.
pub fn from_core(e: &Error, hint: Option<&LeaderHint>) -> Status {
    match e {
        Error::InvalidArgument(inner) => Status::invalid_argument(inner.to_string()),
        Error::NotLeader { leader } => {
            with_hint(Status::unavailable("not the leader"), leader.as_ref().or(hint))
        }
        Error::Unavailable(u) => with_hint(Status::unavailable(u.to_string()), hint),
        Error::Indeterminate => Status::deadline_exceeded(e.to_string()),
        Error::Session(SessionError::Expired) => Status::failed_precondition(e.to_string()),
        Error::Session(_) => Status::aborted(e.to_string()),
        Error::QuotaExceeded(_) => Status::resource_exhausted(e.to_string()),
        _ => Status::internal("internal error"),
    }
}

/// Adds the leader hint metadata to an UNAVAILABLE status.
pub fn with_hint(mut status: Status, hint: Option<&LeaderHint>) -> Status {
    if let Some(h) = hint {
        let md = status.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(h.name.as_str()) {
            md.insert(mokv_proto::LEADER_HINT_ID, v);
        }
        if let Ok(v) = MetadataValue::try_from(h.rpc_addr.as_str()) {
            md.insert(mokv_proto::LEADER_HINT_ADDR, v);
        }
    }
    status
}

pub fn not_found() -> Status {
    Status::not_found("key not found")
}

pub fn shutting_down() -> Status {
    Status::unavailable("the node is shutting down")
}

pub fn busy() -> Status {
    Status::unavailable("too many requests in flight")
}

pub fn unauthenticated() -> Status {
    Status::unauthenticated("a verified client certificate is required")
}

pub fn permission_denied() -> Status {
    Status::permission_denied("permission denied")
}

/// Short label of a code, for metrics.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Internal => "internal",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mokv_core::InvalidArgument;

    #[test]
    fn table() {
        let hint = LeaderHint { id: 7, name: "n7".into(), rpc_addr: "10.0.0.7:8400".into() };
        let s = from_core(&InvalidArgument::EmptyKey.into(), None);
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = from_core(&Error::NotLeader { leader: Some(hint.clone()) }, None);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(mokv_proto::LEADER_HINT_ID).unwrap(), "n7");
        assert_eq!(s.metadata().get(mokv_proto::LEADER_HINT_ADDR).unwrap(), "10.0.0.7:8400");
        let s = from_core(&Error::NotLeader { leader: None }, None);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.metadata().get(mokv_proto::LEADER_HINT_ID).is_none());
        assert_eq!(from_core(&Error::Indeterminate, None).code(), Code::DeadlineExceeded);
        let s = from_core(&SessionError::Expired.into(), None);
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s = from_core(&SessionError::ResultDiscarded.into(), Some(&hint));
        assert_eq!(s.code(), Code::Aborted);
        let s = from_core(&mokv_core::QuotaExceeded::new(900, 200, 1_000).into(), None);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "state quota exceeded: the data holds 900 bytes, this write would add 200, the quota \
             is 1000"
        );
    }
}
