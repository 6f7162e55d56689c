//! Transactions: a builder ([`Txn`]) and the answer ([`TxnOutcome`]).

use mokv_proto::api;
use mokv_proto::api::txn_op::Op;
use mokv_proto::api::txn_op_result::Result as OpResult;

use crate::types::{Condition, Entry};

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnOp {
    /// Write `value` under `key`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete `key` (a missing key is not an error).
    Delete {
        /// The key.
        key: String,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Read the first `limit` keys starting with `prefix` (0: the server's page size).
    Range {
        /// Only keys starting with this.
        prefix: String,
        /// At most this many keys; capped by the server.
        limit: u32,
    },
}

impl TxnOp {
    fn wire(self) -> api::TxnOp {
        let op = match self {
            TxnOp::Set { key, value } => Op::Set(api::TxnSet { key, value }),
            TxnOp::Delete { key } => Op::Delete(api::TxnDelete { key }),
            TxnOp::Get { key } => Op::Get(api::TxnGet { key }),
            TxnOp::Range { prefix, limit } => Op::Range(api::TxnRange { prefix, limit }),
        };
        api::TxnOp { op: Some(op) }
    }
}

/// A transaction for [`Client::txn`](crate::Client::txn): compares over any keys, then the
/// `success` operations if every compare holds, else the `failure` ones. The cluster applies
/// it atomically at one revision; its reads see the state at that revision.
///
/// ```no_run
/// # async fn demo(client: mokv_client::Client) -> Result<(), mokv_client::ClientError> {
/// use mokv_client::{Condition, Txn};
/// // Move 10 from a to b, if nobody changed either since we read them at these revisions.
/// let txn = Txn::new()
///     .compare("a", Condition::ModRevision(7))
///     .compare("b", Condition::ModRevision(9))
///     .on_success_set("a", b"90")
///     .on_success_set("b", b"20")
///     .on_failure_get("a")
///     .on_failure_get("b");
/// let outcome = client.txn(txn).await?;
/// if !outcome.succeeded {
///     // Re-read from outcome.results and try again.
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    compares: Vec<(String, Condition)>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no compares: the success branch runs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compare: `condition` must hold on `key`.
    pub fn compare(mut self, key: &str, condition: Condition) -> Self {
        self.compares.push((key.to_owned(), condition));
        self
    }

    /// Adds an operation to the success branch.
    pub fn on_success(mut self, op: TxnOp) -> Self {
        self.success.push(op);
        self
    }

    /// Adds an operation to the failure branch.
    pub fn on_failure(mut self, op: TxnOp) -> Self {
        self.failure.push(op);
        self
    }

    /// `on_success(TxnOp::Set { .. })`.
    pub fn on_success_set(self, key: &str, value: &[u8]) -> Self {
        self.on_success(TxnOp::Set { key: key.to_owned(), value: value.to_vec() })
    }

    /// `on_success(TxnOp::Get { .. })`.
    pub fn on_success_get(self, key: &str) -> Self {
        self.on_success(TxnOp::Get { key: key.to_owned() })
    }

    /// `on_failure(TxnOp::Get { .. })`.
    pub fn on_failure_get(self, key: &str) -> Self {
        self.on_failure(TxnOp::Get { key: key.to_owned() })
    }

    pub(crate) fn wire(&self, session: api::Session) -> api::TxnRequest {
        api::TxnRequest {
            compare: self
                .compares
                .iter()
                .map(|(key, c)| api::Compare { key: key.clone(), condition: Some(c.wire()) })
                .collect(),
            success: self.success.iter().cloned().map(TxnOp::wire).collect(),
            failure: self.failure.iter().cloned().map(TxnOp::wire).collect(),
            session: Some(session),
        }
    }
}

/// The result of one operation of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnResult {
    /// Written at the transaction's revision.
    Set,
    /// Deleted; whether the key existed.
    Delete {
        /// Whether the key existed before.
        existed: bool,
    },
    /// The key at that point of the transaction (`None`: absent).
    Get(Option<Entry>),
    /// The keys read, and whether more matched.
    Range {
        /// The entries, in key order.
        entries: Vec<Entry>,
        /// More keys matched than were returned.
        more: bool,
    },
}

/// The answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Every compare held and the success branch ran (else the failure branch ran).
    pub succeeded: bool,
    /// The transaction's revision: of each of its writes.
    pub revision: u64,
    /// One per operation of the branch that ran; empty when `replayed`.
    pub results: Vec<TxnResult>,
    /// The answer to a retry of a transaction the cluster had already applied (after a lost
    /// answer): `succeeded` and `revision` are the first application's, and its per-operation
    /// results are not kept by the cluster.
    pub replayed: bool,
}

impl TxnOutcome {
    pub(crate) fn from_wire(r: api::TxnResponse) -> TxnOutcome {
        let results = r
            .results
            .into_iter()
            .filter_map(|res| {
                Some(match res.result? {
                    OpResult::Set(_) => TxnResult::Set,
                    OpResult::Delete(d) => TxnResult::Delete { existed: d.existed },
                    OpResult::Get(g) => TxnResult::Get(g.kv.filter(|_| g.found).map(Entry::from)),
                    OpResult::Range(r) => TxnResult::Range {
                        entries: r.kvs.into_iter().map(Entry::from).collect(),
                        more: r.more,
                    },
                })
            })
            .collect();
        TxnOutcome { succeeded: r.succeeded, revision: r.revision, results, replayed: r.replayed }
    }
}
