//! Transactions: compares over several keys, then the operations of one of two branches, all
//! in one log entry.
//!
//! A [`Txn`] is applied as one command at one log index: every compare is evaluated against the
//! state at that entry, the branch is chosen (`success` if every compare holds, else
//! `failure`), and its operations run in order. Writes all carry the entry's index as their
//! revision; reads see the state at that entry including the writes before them in the same
//! branch. Nothing else is applied between them, so a transaction is atomic and its reads are
//! linearizable (they are part of the entry's application).
//!
//! Writes go through the state machine's one write path (`apply_command` with a plain
//! `Command::Set` / `Command::Delete` per operation), so anything that observes writes sees a
//! transaction's writes too.

use crate::codec::{DecodeError, Reader, Writer};
use crate::command::Condition;
use crate::kv::{RangeItem, Versioned};

/// Tag bytes of [`TxnOp`] variants. Numbers are never reused.
const OP_SET: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_GET: u8 = 3;
const OP_RANGE: u8 = 4;

/// Bytes a compare or an operation counts towards [`Txn::size_bytes`] besides its key, value
/// and compared bytes: its fixed part in the proposal encoding, rounded up.
pub const TXN_ITEM_OVERHEAD_BYTES: usize = 16;

/// One compare of a transaction: `condition` on `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub condition: Condition,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnOp {
    /// Writes `value` to `key` (revision: the transaction's).
    Set { key: String, value: Vec<u8> },
    /// Deletes `key` (a missing key is not an error).
    Delete { key: String },
    /// Reads `key`.
    Get { key: String },
    /// Reads the first `limit` keys (in byte order) starting with `prefix`, with values. The node
    /// caps `limit` at its page size when the transaction is proposed; the keys and values
    /// read are bounded by its page byte bound too (at least one item).
    Range { prefix: String, limit: u32 },
}

impl TxnOp {
    /// The key the operation touches (for a range: its prefix).
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Set { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
            TxnOp::Range { prefix, .. } => prefix,
        }
    }

    /// Whether the operation changes data.
    pub fn is_write(&self) -> bool {
        matches!(self, TxnOp::Set { .. } | TxnOp::Delete { .. })
    }

    fn encode_to(&self, w: &mut Writer) {
        match self {
            TxnOp::Set { key, value } => {
                w.put_u8(OP_SET);
                w.put_str(key);
                w.put_bytes(value);
            }
            TxnOp::Delete { key } => {
                w.put_u8(OP_DELETE);
                w.put_str(key);
            }
            TxnOp::Get { key } => {
                w.put_u8(OP_GET);
                w.put_str(key);
            }
            TxnOp::Range { prefix, limit } => {
                w.put_u8(OP_RANGE);
                w.put_str(prefix);
                w.put_u32(*limit);
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.get_u8()? {
            OP_SET => {
                let key = r.get_str()?.to_owned();
                TxnOp::Set { key, value: r.get_bytes()?.to_vec() }
            }
            OP_DELETE => TxnOp::Delete { key: r.get_str()?.to_owned() },
            OP_GET => TxnOp::Get { key: r.get_str()?.to_owned() },
            OP_RANGE => {
                let prefix = r.get_str()?.to_owned();
                TxnOp::Range { prefix, limit: r.get_u32()? }
            }
            tag => return Err(DecodeError::UnknownTag(tag)),
        })
    }

    fn payload_len(&self) -> usize {
        match self {
            TxnOp::Set { key, value } => key.len() + value.len(),
            TxnOp::Delete { key } | TxnOp::Get { key } => key.len(),
            TxnOp::Range { prefix, .. } => prefix.len(),
        }
    }
}

/// A transaction: if every compare holds, the `success` operations, else the `failure` ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// Compares plus operations of both branches: what the node's `max_txn_ops` bounds.
    pub fn op_count(&self) -> usize {
        self.compares.len() + self.success.len() + self.failure.len()
    }

    /// The request's size as the node's `max_txn_bytes` bounds it: keys, values and compared
    /// values, plus [`TXN_ITEM_OVERHEAD_BYTES`] per compare and operation.
    pub fn size_bytes(&self) -> usize {
        let compares: usize = self
            .compares
            .iter()
            .map(|c| c.key.len() + c.condition.payload_len() + TXN_ITEM_OVERHEAD_BYTES)
            .sum();
        let ops: usize = self
            .success
            .iter()
            .chain(&self.failure)
            .map(|op| op.payload_len() + TXN_ITEM_OVERHEAD_BYTES)
            .sum();
        compares + ops
    }

    /// Every key the transaction touches with whether it may write it: compares and reads
    /// read, `Set`/`Delete` write. For authorization; a range reports its prefix.
    pub fn touched(&self) -> impl Iterator<Item = (&str, bool)> {
        let compares = self.compares.iter().map(|c| (c.key.as_str(), false));
        let ops = self.success.iter().chain(&self.failure).map(|op| (op.key(), op.is_write()));
        compares.chain(ops)
    }

    pub(crate) fn encode_to(&self, w: &mut Writer) {
        w.put_u64(self.compares.len() as u64);
        for c in &self.compares {
            w.put_str(&c.key);
            c.condition.encode_to(w);
        }
        for branch in [&self.success, &self.failure] {
            w.put_u64(branch.len() as u64);
            for op in branch {
                op.encode_to(w);
            }
        }
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // A compare is at least a key length prefix and a condition tag; an op a tag and a
        // length prefix.
        let n = r.get_count(4 + 1)?;
        let mut compares = Vec::with_capacity(n);
        for _ in 0..n {
            let key = r.get_str()?.to_owned();
            compares.push(Compare { key, condition: Condition::decode_from(r)? });
        }
        let branch = |r: &mut Reader<'_>| -> Result<Vec<TxnOp>, DecodeError> {
            let n = r.get_count(1 + 4)?;
            (0..n).map(|_| TxnOp::decode_from(r)).collect()
        };
        let success = branch(r)?;
        let failure = branch(r)?;
        Ok(Txn { compares, success, failure })
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.size_bytes()
    }
}

/// The result of one operation of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnOpResult {
    /// Written at the transaction's revision.
    Set,
    /// Whether the key existed before the delete.
    Delete { existed: bool },
    /// The key (`None`: absent) at that point of the transaction.
    Get(Option<Versioned>),
    /// The matching keys, and whether more matched than were returned.
    Range { items: Vec<RangeItem>, more: bool },
}

/// The answer to a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (so the `success` branch ran; else `failure` ran).
    pub succeeded: bool,
    /// The log index of the transaction: the revision of each of its writes.
    pub revision: u64,
    /// One result per operation of the branch that ran, in order. `None` when a session retry
    /// is answered from the session: sessions keep only the branch and the revision (a fixed
    /// size per result), so the results of the first application are not repeated.
    pub results: Option<Vec<TxnOpResult>>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::command::tests::arb_condition;
    use proptest::prelude::*;

    fn arb_op() -> impl Strategy<Value = TxnOp> {
        prop_oneof![
            (".{0,6}", proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(key, value)| TxnOp::Set { key, value }),
            ".{0,6}".prop_map(|key| TxnOp::Delete { key }),
            ".{0,6}".prop_map(|key| TxnOp::Get { key }),
            (".{0,6}", any::<u32>()).prop_map(|(prefix, limit)| TxnOp::Range { prefix, limit }),
        ]
    }

    pub(crate) fn arb_txn() -> impl Strategy<Value = Txn> {
        (
            proptest::collection::vec(
                (".{0,6}", arb_condition()).prop_map(|(key, condition)| Compare { key, condition }),
                0..4,
            ),
            proptest::collection::vec(arb_op(), 0..4),
            proptest::collection::vec(arb_op(), 0..4),
        )
            .prop_map(|(compares, success, failure)| Txn { compares, success, failure })
    }

    proptest! {
        #[test]
        fn txns_round_trip(t in arb_txn()) {
            let mut w = Writer::new();
            t.encode_to(&mut w);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(Txn::decode_from(&mut r).unwrap(), t);
            prop_assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn op_tags_are_stable() {
        assert_eq!((OP_SET, OP_DELETE, OP_GET, OP_RANGE), (1, 2, 3, 4));
    }

    #[test]
    fn size_and_touched_keys() {
        let t = Txn {
            compares: vec![Compare {
                key: "a".into(),
                condition: Condition::ValueEquals(vec![0; 3]),
            }],
            success: vec![TxnOp::Set { key: "bb".into(), value: vec![0; 10] }],
            failure: vec![TxnOp::Range { prefix: "p".into(), limit: 5 }],
        };
        assert_eq!(t.op_count(), 3);
        assert_eq!(t.size_bytes(), (1 + 3) + (2 + 10) + 1 + 3 * TXN_ITEM_OVERHEAD_BYTES);
        let touched: Vec<_> = t.touched().collect();
        assert_eq!(touched, vec![("a", false), ("bb", true), ("p", false)]);
    }
}
