//! Client requests the node accepts and the answers it gives.

use crate::backup::BackupSource;
use crate::command::{Condition, KeyRevisions, SessionRef};
use crate::error::Error;
use crate::kv::{RangePage, RangeQuery, Versioned};
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
