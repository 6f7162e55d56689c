//! Applying a [`Txn`] to the data at one log index (types: [`crate::txn`]).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{
    apply_command, key_state_bytes, DataMap, Entry, Keys, RangeItem, RANGE_ITEM_OVERHEAD_BYTES,
};
use crate::command::{Command, WriteOutcome};
use crate::error::QuotaExceeded;
use crate::txn::{Txn, TxnOp, TxnOpResult};

/// What applying a transaction did.
pub(super) struct Applied {
    pub outcome: WriteOutcome,
    pub results: Vec<TxnOpResult>,
}

/// Applies `txn` at `index`: compares against the state at this entry, then the chosen branch
/// in order. Refused as a whole (nothing written) if its writes together would take the data
/// past `quota_bytes`.
pub(super) fn apply(
    data: &mut Keys,
    index: u64,
    txn: &Txn,
    quota_bytes: Option<u64>,
    max_read_bytes: usize,
) -> Result<Applied, QuotaExceeded> {
    let succeeded = txn.compares.iter().all(|c| c.condition.holds(data.get(c.key.as_str())));
    let ops = if succeeded { &txn.success } else { &txn.failure };
    if let Some(quota_bytes) = quota_bytes {
        let growth_bytes = growth_bytes(data, ops);
        let state_bytes = data.state_bytes;
        if growth_bytes > 0 && state_bytes.saturating_add(growth_bytes) > quota_bytes {
            return Err(QuotaExceeded::new(state_bytes, growth_bytes, quota_bytes));
        }
    }
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            TxnOp::Set { key, value } => {
                let set = Command::Set { key: key.clone(), value: value.clone() };
                apply_command(data, index, &set);
                TxnOpResult::Set
            }
            TxnOp::Delete { key } => {
                let delete = Command::Delete { key: key.clone() };
                match apply_command(data, index, &delete) {
                    WriteOutcome::Deleted { existed, .. } => TxnOpResult::Delete { existed },
                    _ => TxnOpResult::Delete { existed: false },
                }
            }
            TxnOp::Get { key } => TxnOpResult::Get(data.get(key.as_str()).map(Entry::to_versioned)),
            TxnOp::Range { prefix, limit } => range(data, prefix, *limit, max_read_bytes),
        };
        results.push(result);
    }
    Ok(Applied { outcome: WriteOutcome::Txn { succeeded, revision: index }, results })
}

/// By how much running `ops` in order would grow the data (0 if it would not): the net change,
/// so a transaction that deletes as much as it adds is never refused.
fn growth_bytes(data: &DataMap, ops: &[TxnOp]) -> u64 {
    // The size of each key written so far, as the ops leave it (0: absent).
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut growth: i128 = 0;
    for op in ops {
        let (key, after) = match op {
            TxnOp::Set { key, value } => (key.as_str(), key_state_bytes(key, value)),
            TxnOp::Delete { key } => (key.as_str(), 0),
            TxnOp::Get { .. } | TxnOp::Range { .. } => continue,
        };
        let before = match sizes.get(key) {
            Some(size) => *size,
            None => data.get(key).map_or(0, |v| key_state_bytes(key, v.value())),
        };
        growth += i128::from(after) - i128::from(before);
        sizes.insert(key, after);
    }
    u64::try_from(growth.max(0)).unwrap_or(u64::MAX)
}

/// The first `limit` keys under `prefix` (at least one, at most `limit.max(1)`), bounded by
/// `max_bytes` past the first, like a range page.
fn range(data: &DataMap, prefix: &str, limit: u32, max_bytes: usize) -> TxnOpResult {
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    let matching = data
        .starting_at(Bound::Included(prefix))
        .take_while(|e| e.key_bytes().starts_with(prefix.as_bytes()));
    let mut items: Vec<RangeItem> = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    for e in matching {
        let item_bytes = e.key_bytes().len() + e.value().len() + RANGE_ITEM_OVERHEAD_BYTES;
        if items.len() == limit
            || (!items.is_empty() && bytes.saturating_add(item_bytes) > max_bytes)
        {
            more = true;
            break;
        }
        bytes += item_bytes;
        items.push(RangeItem::of(e, true));
    }
    TxnOpResult::Range { items, more }
}
