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
//! | the node stopped (shutdown, disk failure, panic) with the request in flight | DEADLINE_EXCEEDED |
//! | `Session(Unknown)`, `Session(Expired)`: the write names a session the caller has not open (never registered, expired, evicted); not applied, register a new one | FAILED_PRECONDITION |
//! | `Session(TooManySessions)`: registration at the cluster's bound on sessions | RESOURCE_EXHAUSTED |
//! | `Session(ResultDiscarded)`: the outcome of that seq can no longer be told | ABORTED |
//! | `QuotaExceeded`: the write would take the data past the state quota | RESOURCE_EXHAUSTED |
//! | `QuorumGuard`: an operator's removal would leave no live majority of voters | FAILED_PRECONDITION |
//! | `Lease(NotFound)`: no such lease (never granted, revoked or expired) | NOT_FOUND |
//! | `Lease(AlreadyExists)`: a grant asked for an id in use | ALREADY_EXISTS |
//! | `Lease(TooMany)`: the cluster holds its maximum number of leases | RESOURCE_EXHAUSTED |
//!
//! A write sent to a follower is not forwarded: the answer is UNAVAILABLE with the leader's
//! name (`mokv-leader-id`) and client address (`mokv-leader-addr`) in the metadata, which the
//! client library follows. Messages never contain keys or values (the core's error texts give
//! lengths only).

use mokv_core::{Error, ErrorClass, LeaderHint, Request, Response};
use mokv_core::{LeaseError, SessionError};
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::node::driver::{CallError, DriverHandle};

/// Maps a core error; `hint` is the current leader, attached to UNAVAILABLE answers.
///
/// The error's class decides what the status means: a misuse is the caller's to fix
/// (INVALID_ARGUMENT, or FAILED_PRECONDITION for state the request relies on), a retryable
/// error is UNAVAILABLE (nothing was applied: retry, where the hint says), an indeterminate one
/// says that the write may have been applied (DEADLINE_EXCEEDED, or ABORTED when the session can
/// no longer tell).
pub fn from_core(e: &Error, hint: Option<&LeaderHint>) -> Status {
    match e.class() {
        ErrorClass::Misuse => match e {
            Error::InvalidArgument(inner) => Status::invalid_argument(inner.to_string()),
            Error::Session(SessionError::Expired | SessionError::Unknown) => {
                Status::failed_precondition(e.to_string())
            }
            // The request is fine; the cluster is not in a state to take it (a voter down).
            Error::QuorumGuard(_) => Status::failed_precondition(e.to_string()),
            Error::Lease(LeaseError::NotFound) => Status::not_found(e.to_string()),
            Error::Lease(LeaseError::AlreadyExists) => Status::already_exists(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        },
        ErrorClass::Retryable => match e {
            Error::NotLeader { leader } => {
                with_hint(Status::unavailable("not the leader"), leader.as_ref().or(hint))
            }
            Error::Unavailable(u) => with_hint(Status::unavailable(u.to_string()), hint),
            // Retryable once data is deleted (or the quota raised); no other node would accept it.
            Error::QuotaExceeded(_) => Status::resource_exhausted(e.to_string()),
            // Retryable once leases are revoked or expire; no other node would accept it.
            Error::Lease(_) => Status::resource_exhausted(e.to_string()),
            // Registration at the cluster's bound on sessions: retry once some expire.
            Error::Session(SessionError::TooManySessions) => {
                Status::resource_exhausted(e.to_string())
            }
            _ => with_hint(Status::unavailable(e.to_string()), hint),
        },
        ErrorClass::Indeterminate => match e {
            Error::Indeterminate => Status::deadline_exceeded(e.to_string()),
            _ => Status::aborted(e.to_string()),
        },
    }
}

/// Why a request got no answer from the core: the node is busy or stopping (nothing was
/// applied: UNAVAILABLE), or it stopped with the request in flight (DEADLINE_EXCEEDED: a write
/// may still commit).
impl From<CallError> for Status {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Busy => busy(),
            CallError::Stopped => shutting_down(),
            CallError::Interrupted => Status::deadline_exceeded(e.to_string()),
        }
    }
}

/// Hands `request` to the core through the driver; a core error becomes its status, with the
/// leader hint of the node's current view.
pub async fn call(handle: &DriverHandle, request: Request) -> Result<Response, Status> {
    match handle.call(request).await? {
        Ok(r) => Ok(r),
        Err(e) => Err(handle.with_view(|v| from_core(&e, v.leader_hint.as_ref()))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use mokv_core::{InvalidArgument, Unavailable};

    use tonic::Code;

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
    }

    /// Every class maps to its own codes, and the messages are the wire contract (clients and
    /// the e2e tests read them; none carries a key or value).
    #[test]
    fn class_decides_the_code_and_messages_stay() {
        let hint = LeaderHint { id: 7, name: "n7".into(), rpc_addr: "10.0.0.7:8400".into() };
        let cases: [(Error, Code, &str); 9] = [
            (InvalidArgument::EmptyKey.into(), Code::InvalidArgument, "key is empty"),
            (
                InvalidArgument::KeyTooLarge { len: 9, max: 8 }.into(),
                Code::InvalidArgument,
                "key is 9 bytes, the limit is 8",
            ),
            (
                SessionError::Expired.into(),
                Code::FailedPrecondition,
                "session: client session expired; open a new session",
            ),
            (Error::NotLeader { leader: None }, Code::Unavailable, "not the leader"),
            (Unavailable::Busy.into(), Code::Unavailable, "too many requests in flight"),
            (
                Error::Indeterminate,
                Code::DeadlineExceeded,
                "timed out; the write may or may not have been applied",
            ),
            (
                SessionError::ResultDiscarded.into(),
                Code::Aborted,
                "session: result of this request was already discarded",
            ),
            (
                mokv_core::QuotaExceeded::new(900, 200, 1_000).into(),
                Code::ResourceExhausted,
                "state quota exceeded: the data holds 900 bytes, this write would add 200, the \
                 quota is 1000",
            ),
            (
                mokv_core::QuorumGuard::new(2, 1).into(),
                Code::FailedPrecondition,
                "membership change refused: removing this voter leaves 2 voters of which only 1 \
                 are live; a quorum needs 2 (use force to remove anyway)",
            ),
        ];
        for (e, code, message) in cases {
            let s = from_core(&e, Some(&hint));
            assert_eq!((s.code(), s.message()), (code, message), "{e:?}");
            let family: &[Code] = match e.class() {
                ErrorClass::Misuse => &[Code::InvalidArgument, Code::FailedPrecondition],
                ErrorClass::Retryable => &[Code::Unavailable, Code::ResourceExhausted],
                ErrorClass::Indeterminate => &[Code::DeadlineExceeded, Code::Aborted],
            };
            assert!(family.contains(&s.code()), "{e:?}");
            // Only an UNAVAILABLE answer says where to retry (a full store is full everywhere).
            let hinted = s.metadata().get(mokv_proto::LEADER_HINT_ID).is_some();
            assert_eq!(hinted, s.code() == Code::Unavailable, "{e:?}");
        }
        let busy: Status = CallError::Busy.into();
        assert_eq!(
            (busy.code(), busy.message()),
            (Code::Unavailable, "too many requests in flight")
        );
        let stopped: Status = CallError::Stopped.into();
        assert_eq!(
            (stopped.code(), stopped.message()),
            (Code::Unavailable, "the node is shutting down")
        );
        let interrupted: Status = CallError::Interrupted.into();
        assert_eq!(interrupted.code(), Code::DeadlineExceeded);
    }
}
