//! Errors the core reports for client requests, in three classes that decide what a caller may
//! do next (see [`ErrorClass`]).

use crate::members::NodeId;
use crate::session::SessionError;

/// What a caller may do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request itself is wrong; retrying it unchanged fails again.
    Misuse,
    /// Nothing was applied; retrying (possibly elsewhere, after a while) is safe.
    Retryable,
    /// The write may or may not have been applied; retry only with a session.
    Indeterminate,
}

/// A bad request. Messages never contain keys or values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidArgument {
    #[error("key is empty")]
    EmptyKey,
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("invalid page token")]
    BadPageToken,
    #[error("transaction has {count} compares and operations, the limit is {max}")]
    TooManyTxnOps { count: usize, max: usize },
    #[error("transaction is {len} bytes, the limit is {max}")]
    TxnTooLarge { len: usize, max: usize },
    #[error("invalid membership change: {0}")]
    Membership(&'static str),
    #[error("lease TTL is {ttl_ms} ms, it must be within {min_ms}..={max_ms} ms")]
    LeaseTtl { ttl_ms: u64, min_ms: u64, max_ms: u64 },
    #[error("lease id 0 is reserved")]
    LeaseIdZero,
    /// The caller's identity, which names its sessions, is longer than keys may be.
    #[error("session owner is {len} bytes, the limit is {max}")]
    SessionOwnerTooLarge { len: usize, max: usize },
}

/// Where the leader is, when this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: NodeId,
    pub name: String,
    pub rpc_addr: String,
}

/// Why a request was not (and will not be) applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    #[error("too many requests in flight")]
    Busy,
    #[error("the read could not be confirmed by a quorum in time")]
    ReadTimedOut,
    #[error("another membership change is in progress")]
    ConfChangeInProgress,
    #[error("leadership is being transferred")]
    LeadershipTransfer,
    #[error("the proposal was superseded in the log and was not applied")]
    Dropped,
    #[error("this node was removed from the cluster")]
    Removed,
}

/// The failure of one client request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidArgument),
    /// Writes go to the leader; this node is not it. `leader: None`: no leader is known here.
    #[error("not the leader")]
    NotLeader { leader: Option<LeaderHint> },
    #[error("unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    /// Timed out after the write was handed to Raft: it may still be applied.
    #[error("timed out; the write may or may not have been applied")]
    Indeterminate,
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// The write would take the data past the state quota; it was not applied. Deleting keys
    /// (or writing smaller values) makes room.
    #[error("state quota exceeded: {0}")]
    QuotaExceeded(#[from] QuotaExceeded),
    /// An operator's removal was refused by the strict-quorum guard; nothing was proposed.
    /// Retrying succeeds once enough voters are back (or with `force`).
    #[error("membership change refused: {0}")]
    QuorumGuard(#[from] QuorumGuard),
    /// A lease request (or a write attached to a lease) was refused; nothing was applied.
    #[error("{0}")]
    Lease(#[from] crate::lease::LeaseError),
}

/// Why the strict-quorum guard refused to remove a voter: without it, the voters left would
/// not hold a majority of live members (as the leader sees them over Raft), so the cluster
/// could stall for good once the change commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "removing this voter leaves {voters_after} voters of which only {live_after} are live; \
     a quorum needs {quorum_after} (use force to remove anyway)"
)]
#[non_exhaustive]
pub struct QuorumGuard {
    /// Voters the configuration would have after the removal.
    pub voters_after: usize,
    /// How many of them are live: the leader itself, voters it heard from within the last
    /// election timeout, voters gossip sees up.
    pub live_after: usize,
    /// The majority of `voters_after`.
    pub quorum_after: usize,
}

impl QuorumGuard {
    pub const fn new(voters_after: usize, live_after: usize) -> Self {
        Self { voters_after, live_after, quorum_after: voters_after / 2 + 1 }
    }
}

/// Why a write was refused by the state quota: sizes only, never keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data holds {state_bytes} bytes, this write would add {growth_bytes}, the quota is {quota_bytes}"
)]
#[non_exhaustive]
pub struct QuotaExceeded {
    /// [`crate::StateMachine::state_bytes`] when the write was refused.
    pub state_bytes: u64,
    /// By how much the write would have grown it.
    pub growth_bytes: u64,
    /// The quota the leader stamped into the proposal.
    pub quota_bytes: u64,
}

impl QuotaExceeded {
    pub const fn new(state_bytes: u64, growth_bytes: u64, quota_bytes: u64) -> Self {
        Self { state_bytes, growth_bytes, quota_bytes }
    }
}

impl Error {
    /// What the caller may do next. Every consumer that needs to decide between "fix the
    /// request", "retry" and "retry only with a session" asks this instead of matching variants,
    /// so a new variant is classified in one place.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            // Not retried blindly: it takes a change in the cluster (or `force`) to succeed.
            Error::InvalidArgument(_) | Error::QuorumGuard(_) => ErrorClass::Misuse,
            // Nothing was applied; retrying is safe, and succeeds once room has been made.
            Error::NotLeader { .. } | Error::Unavailable(_) | Error::QuotaExceeded(_) => {
                ErrorClass::Retryable
            }
            Error::Indeterminate => ErrorClass::Indeterminate,
            // Not applied by this attempt (an earlier one may have been): the caller must
            // register a new session; the outcome of the write is its to settle.
            Error::Session(SessionError::Expired | SessionError::Unknown) => ErrorClass::Misuse,
            // Nothing changed; retrying succeeds once sessions expire.
            Error::Session(SessionError::TooManySessions) => ErrorClass::Retryable,
            Error::Session(_) => ErrorClass::Indeterminate,
            // Room is made by revoking leases (or by their expiry).
            Error::Lease(crate::lease::LeaseError::TooMany { .. }) => ErrorClass::Retryable,
            Error::Lease(_) => ErrorClass::Misuse,
        }
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod class_tests;

/// Why durable state read back at start-up could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error("snapshot: {0}")]
    Snapshot(crate::codec::DecodeError),
    #[error("corrupt {0} record")]
    Corrupt(&'static str),
    #[error("log has a gap before index {0}")]
    Gap(u64),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::InvalidConfig),
    /// The configured cluster id is not the one this data directory belongs to.
    #[error("the configured cluster id differs from the one stored in the data directory")]
    ClusterIdMismatch,
}

/// Why a message from a peer was refused (it is dropped; the sender retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMessageError {
    #[error("message of {len} bytes is not a raft message")]
    Malformed { len: usize },
    #[error("message addressed to node {to}, not to this node")]
    WrongRecipient { to: NodeId },
    #[error("message type may not come from a peer")]
    LocalType,
    #[error("append entries are not consecutive after the message's index")]
    MalformedAppend,
    #[error("message claims to come from node {from}")]
    BadSender { from: NodeId },
    /// The authenticated caller is not the node the message claims to come from: its
    /// certificate's name is not the name this node knows for `from` (see
    /// `Node::handle_peer_message_from`).
    #[error("message claims to come from node {from}, which the caller's certificate is not")]
    ImpersonatedSender { from: NodeId },
    #[error("read index request without exactly one context entry")]
    MalformedReadIndex,
    #[error("message term does not fit its type")]
    BadTerm,
    #[error("heartbeat commits index {commit}, beyond this node's log")]
    CommitBeyondLog { commit: u64 },
    #[error("snapshot payload is invalid: {0}")]
    BadSnapshot(crate::codec::DecodeError),
    #[error("raft refused the message: {0}")]
    Raft(raft::Error),
}
