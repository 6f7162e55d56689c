//! The client history: one record per client operation (all attempts of it together), with
//! invocation and completion points on one global, totally ordered clock.
//!
//! Points come from a counter the workload advances at every invocation and every observed
//! completion. An operation's recorded interval contains its real one (it is invoked when
//! the request is handed to a node and completes no earlier than the reply was produced), so
//! checking the recorded intervals never reports a false violation.

use mokv_core::NodeId;

/// Every written value is unique in a run: `v<id>`. Reads name the write they saw by it.
pub type ValueId = u64;

pub fn encode_value(id: ValueId) -> Vec<u8> {
    format!("v{id}").into_bytes()
}

pub fn decode_value(bytes: &[u8]) -> Option<ValueId> {
    std::str::from_utf8(bytes).ok()?.strip_prefix('v')?.parse().ok()
}

/// What was observed of one key: absent, or a value with the log index that last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observed {
    pub value: ValueId,
    pub mod_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Set {
        key: String,
        value: ValueId,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
        linearizable: bool,
    },
    /// Every key of the workload's key space (one page covers it).
    Range {
        linearizable: bool,
    },
    /// Compare-and-swap: write `value` (`None`: delete) if the key holds `expect` (`None`:
    /// absent), compared by value.
    Cas {
        key: String,
        expect: Option<ValueId>,
        value: Option<ValueId>,
    },
    /// A transaction: if every compare (key holds the value, `None`: absent) holds, `success`,
    /// else `failure`.
    Txn {
        compares: Vec<(String, Option<ValueId>)>,
        success: Vec<TxnStep>,
        failure: Vec<TxnStep>,
    },
}

/// One operation of a transaction branch in the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStep {
    Set(String, ValueId),
    Delete(String),
    Get(String),
}

impl TxnStep {
    pub fn key(&self) -> &str {
        match self {
            TxnStep::Set(k, _) | TxnStep::Delete(k) | TxnStep::Get(k) => k,
        }
    }
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            OpKind::Set { .. } | OpKind::Delete { .. } | OpKind::Cas { .. } | OpKind::Txn { .. }
        )
    }

    /// Every key the operation touches (none for a range: it reads them all).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            OpKind::Set { key, .. }
            | OpKind::Delete { key }
            | OpKind::Get { key, .. }
            | OpKind::Cas { key, .. } => vec![key],
            OpKind::Range { .. } => Vec::new(),
            OpKind::Txn { compares, success, failure } => compares
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(success.iter().chain(failure).map(TxnStep::key))
                .collect(),
        }
    }

    /// The values the operation may write, with their keys.
    pub fn written_values(&self) -> Vec<(&str, ValueId)> {
        match self {
            OpKind::Set { key, value } | OpKind::Cas { key, value: Some(value), .. } => {
                vec![(key, *value)]
            }
            OpKind::Txn { success, failure, .. } => success
                .iter()
                .chain(failure)
                .filter_map(|s| match s {
                    TxnStep::Set(k, v) => Some((k.as_str(), *v)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running when the history was checked (a write: maybe applied).
    Pending,
    /// A write acknowledged at this revision (log index).
    Written { revision: u64 },
    /// A Get answered.
    Read(Option<Observed>),
    /// A Range answered: every present key of the key space.
    Ranged(Vec<(String, Observed)>),
    /// A compare-and-swap whose condition did not hold at this revision: nothing written.
    CasFailed { revision: u64 },
    /// A transaction applied at `revision`, through its success branch if `succeeded`; the
    /// results of its `Get` steps in order (`None` when answered from the session).
    TxnDone { succeeded: bool, revision: u64, reads: Option<Vec<Option<Observed>>> },
    /// The client gave up on a write whose outcome it cannot know: maybe applied.
    MaybeApplied,
    /// The client gave up on a read: no information.
    ReadFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub kind: OpKind,
    pub invoke: u64,
    pub invoke_tick: u64,
    /// Completion point; `None` for pending or maybe-applied operations.
    pub complete: Option<u64>,
    pub complete_tick: Option<u64>,
    pub outcome: Outcome,
    /// Node that answered (reads), for the trace.
    pub node: Option<NodeId>,
    /// Incarnation of the node that answered, when the harness knows it: reads answered by
    /// one incarnation of a node must never go back in time (`checker::check_monotonic_reads`).
    pub node_incarnation: Option<u64>,
    pub attempts: u32,
}

/// All operations of a run, in invocation order.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub ops: Vec<Op>,
    clock: u64,
}

impl History {
    /// The next point on the history's clock.
    pub fn point(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn invoke(&mut self, client: u64, kind: OpKind, tick: u64) -> usize {
        let invoke = self.point();
        self.ops.push(Op {
            client,
            kind,
            invoke,
            invoke_tick: tick,
            complete: None,
            complete_tick: None,
            outcome: Outcome::Pending,
            node: None,
            node_incarnation: None,
            attempts: 0,
        });
        self.ops.len() - 1
    }

    pub fn complete(&mut self, op: usize, outcome: Outcome, tick: u64, node: Option<NodeId>) {
        let definite = !matches!(outcome, Outcome::MaybeApplied | Outcome::Pending);
        let point = self.point();
        let o = &mut self.ops[op];
        if definite {
            o.complete = Some(point);
            o.complete_tick = Some(tick);
        }
        o.outcome = outcome;
        o.node = node;
    }

    /// A stable summary of the history, for the determinism check: FNV-1a over each op's
    /// `Debug` text. Recorded history hashes (the witness that a change kept behaviour) were
    /// taken this way, so it stays until they are retaken.
    pub fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for op in &self.ops {
            for b in format!("{op:?}").bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}
