//! Client requests the node accepts and the answers it gives.

use crate::backup::BackupSource;
use crate::command::{Condition, KeyRevisions, SessionRef};
use crate::error::Error;
use crate::kv::{RangePage, RangeQuery, Versioned};
use crate::lease::LeaseTtl;
use crate::members::{MemberInfo, NodeId};
use crate::node::ClusterReport;
use crate::txn::{Txn, TxnResponse};

/// Chosen by the shell, echoed in the [`Reply`]; the core never interprets it.
pub type RequestId = u64;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (ReadIndex), on any node.
    #[default]
    Linearizable,
    /// This node's local state, possibly stale.
    Serializable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    Set {
        key: String,
        value: Vec<u8>,
        session: Option<SessionRef>,
    },
    Delete {
        key: String,
        session: Option<SessionRef>,
    },
    /// `Set` if `condition` holds when the write is applied; answered
    /// [`Response::Set`] or [`Response::ConditionFailed`].
    SetIf {
        key: String,
        value: Vec<u8>,
        condition: Condition,
        session: Option<SessionRef>,
    },
    /// `Delete` if `condition` holds when the write is applied; answered
    /// [`Response::Delete`] or [`Response::ConditionFailed`].
    DeleteIf {
        key: String,
        condition: Condition,
        session: Option<SessionRef>,
    },
    /// A transaction, applied atomically at one log index; answered [`Response::Txn`]. Bounded
    /// by [`crate::Config::max_txn_ops`] and [`crate::Config::max_txn_bytes`].
    Txn {
        txn: Txn,
        session: Option<SessionRef>,
    },
    /// `Set` attached to lease `lease` (deleted when the lease is revoked or expires), only
    /// if `condition` holds when given; answered like `Set`/`SetIf`, or
    /// [`Error::Lease`] `NotFound` when the lease does not exist when the write is applied.
    SetWithLease {
        key: String,
        value: Vec<u8>,
        lease: u64,
        condition: Option<Condition>,
        session: Option<SessionRef>,
    },
    /// Grants a lease with a TTL within [`crate::Config::lease_min_ttl_ms`]..=
    /// [`crate::Config::lease_max_ttl_ms`]; id `id` (refused if in use) or, without one, one
    /// the cluster picks. Answered [`Response::LeaseGranted`].
    LeaseGrant {
        id: Option<u64>,
        ttl_ms: u64,
        session: Option<SessionRef>,
    },
    /// Revokes a lease, deleting its keys at one revision; answered
    /// [`Response::LeaseRevoked`].
    LeaseRevoke {
        id: u64,
        session: Option<SessionRef>,
    },
    /// Restarts a lease's TTL. Answered by the leader only (others answer not-leader, like a
    /// write), once a ReadIndex round confirmed it still leads and it applied every committed
    /// entry (so an expiry already committed is seen). Answered [`Response::LeaseKeptAlive`].
    LeaseKeepAlive {
        id: u64,
    },
    /// A lease's TTL and what remains of it, from the leader (after a ReadIndex round, like
    /// a keep-alive); with its keys if `keys`. Answered [`Response::LeaseTimeToLive`].
    LeaseTimeToLive {
        id: u64,
        keys: bool,
    },
    /// Opens a client session for `owner` (the caller's certificate CN, as the shell vouches
    /// for it); answered [`Response::SessionRegistered`] with its id once the registration is
    /// applied. Writes then name it in a [`SessionRef`] with the same owner. At
    /// [`crate::Config::max_sessions_per_identity`] sessions of `owner`, its least recently
    /// active one is evicted; at [`crate::SessionLimits::max_sessions`] in all, refused with
    /// [`crate::SessionError::TooManySessions`].
    RegisterSession {
        owner: String,
    },
    Get {
        key: String,
        consistency: Consistency,
    },
    Range {
        query: RangeQuery,
        consistency: Consistency,
    },
    /// Adds a node as a learner (promoted later if `info.auto_promote`).
    AddLearner {
        info: MemberInfo,
    },
    /// Makes a learner a voter.
    Promote {
        id: NodeId,
    },
    /// Removes a member. If it is this leader, leadership is handed over first and the caller
    /// is told to retry on the new leader.
    Remove {
        id: NodeId,
    },
    /// Asks the leader to hand leadership to `to` (0: the most caught-up other voter);
    /// answered once the transfer started.
    TransferLeader {
        to: NodeId,
    },
    /// An operator removes a member. Unlike [`Request::Remove`], a voter is removed only if
    /// the voters left keep a live majority in the leader's view (the strict-quorum guard the
    /// reconciler applies to automatic removals), unless `force`; refused with
    /// [`Error::QuorumGuard`] otherwise. Answered [`Response::Membership`].
    RemoveMember {
        id: NodeId,
        force: bool,
    },
    /// This node's view of the cluster for an operator; answered at once with
    /// [`Response::ClusterReport`] by any node (leader or not).
    ClusterReport,
    /// A copy of every key at an applied index at or after a linearizable read point (a
    /// ReadIndex round, as for a linearizable `Get`), for a backup file; answered
    /// [`Response::Backup`]. The copy is made on the caller's task when the read is served
    /// (one clone of the key map); encoding it is the caller's job, off that task.
    Backup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    Set {
        revision: u64,
    },
    Delete {
        existed: bool,
        revision: u64,
    },
    /// The condition of a `SetIf`/`DeleteIf` did not hold at log index `revision`: nothing
    /// was written (a normal answer, not an error; a retry of the same session seq gets it
    /// again). `current` is the key at that index (`None`: absent), to retry with.
    ConditionFailed {
        revision: u64,
        current: Option<KeyRevisions>,
    },
    /// The outcome of a [`Request::Txn`] (a failed compare is `succeeded == false`, not an
    /// error).
    Txn(TxnResponse),
    /// A lease was granted at log index `revision`.
    LeaseGranted {
        id: u64,
        ttl_ms: u64,
        revision: u64,
    },
    /// The lease was revoked and its keys deleted at log index `revision`.
    LeaseRevoked {
        revision: u64,
    },
    /// The lease's TTL restarted: it expires `ttl_ms` from now unless kept alive again.
    LeaseKeptAlive {
        id: u64,
        ttl_ms: u64,
    },
    LeaseTimeToLive(LeaseTtl),
    /// A [`Request::RegisterSession`] opened session `client_id` (the log index of the
    /// registration).
    SessionRegistered {
        client_id: u64,
    },
    /// `None`: the key does not exist.
    Get(Option<Versioned>),
    Range(RangePage),
    /// A membership change was committed and applied at this index.
    Membership {
        index: u64,
    },
    TransferStarted,
    ClusterReport(Box<ClusterReport>),
    /// The data for a backup ([`Request::Backup`]).
    Backup(BackupSource),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: RequestId,
    pub result: Result<Response, Error>,
}
