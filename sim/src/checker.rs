//! Checkers over a run: the client history (linearizability per key, the weaker rule for
//! serializable reads, at-most-once application of each write) and cluster observations
//! taken every tick (one leader per term, equal state at equal applied index).

use std::collections::BTreeMap;

use mokv_core::{Event, NodeId, Role};

use crate::cluster::Cluster;
use crate::history::{History, Observed, OpKind, Outcome, TxnStep, ValueId};
use crate::linearizability::{self, MapEntry, MapOp, SlotStep, Verdict};
use crate::violation::{HistoryViolation, Undecided, Violation};
use crate::workload::{KEYS, TXN_GROUPS};

/// Step bound of the linearizability search, per key.
pub const MAX_SEARCH_STEPS: u64 = 2_000_000;

/// Findings of the history checkers.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub violations: Vec<HistoryViolation>,
    pub inconclusive: Vec<Undecided>,
}

/// Runs every history checker.
pub fn check_history(h: &History) -> Findings {
    let mut f = Findings::default();
    check_linearizable(h, &mut f);
    check_serializable(h, &mut f);
    check_at_most_once(h, &mut f);
    check_monotonic_reads(h, &mut f);
    check_range_snapshots(h, &mut f);
    f
}

/// Revisions of acknowledged writes (Set and Delete), by key, ascending: `(revision, is_set)`.
/// Revision 0 means "acknowledged, revision not reported" (level 2's deletes): left out.
fn acked_writes(h: &History) -> BTreeMap<&str, Vec<(u64, bool)>> {
    let mut by_key: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    for op in &h.ops {
        match (&op.kind, &op.outcome) {
            (_, Outcome::Written { revision: 0 }) => {}
            (OpKind::Set { key, .. }, Outcome::Written { revision }) => {
                by_key.entry(key).or_default().push((*revision, true));
            }
            (OpKind::Delete { key }, Outcome::Written { revision }) => {
                by_key.entry(key).or_default().push((*revision, false));
            }
            (OpKind::Cas { key, value, .. }, Outcome::Written { revision }) => {
                by_key.entry(key).or_default().push((*revision, value.is_some()));
            }
            (
                OpKind::Txn { success, failure, .. },
                Outcome::TxnDone { succeeded, revision, .. },
            ) => {
                for step in if *succeeded { success } else { failure } {
                    match step {
                        TxnStep::Set(k, _) => by_key.entry(k).or_default().push((*revision, true)),
                        TxnStep::Delete(k) => {
                            by_key.entry(k).or_default().push((*revision, false));
                        }
                        TxnStep::Get(_) => {}
                    }
                }
            }
            _ => {}
        }
    }
    for v in by_key.values_mut() {
        v.sort_unstable();
    }
    by_key
}

/// An acknowledged write to `key` with a revision in `(after, up_to]`, if any.
fn acked_write_between(
    acked: &BTreeMap<&str, Vec<(u64, bool)>>,
    key: &str,
    after: u64,
    up_to: u64,
) -> Option<u64> {
    acked.get(key)?.iter().map(|(r, _)| *r).find(|r| *r > after && *r <= up_to)
}

/// A read as (invoke point, completion point, op index).
type ReadAt = (u64, u64, usize);

/// A node never serves older state than it served before (within one incarnation: a restart
/// may go back to what was durable). Any read a node answered (Get or Range, either
/// consistency) proves the node had applied at least every index it returned. A later read
/// on the same incarnation, invoked after the earlier one completed, that returns a key at
/// index `m` while some acknowledged write to that key has a revision in `(m, L]`, `L` the
/// highest index served before, went back in time; so does one returning a key at a lower
/// index than that incarnation returned for it before.
pub fn check_monotonic_reads(h: &History, f: &mut Findings) {
    let acked = acked_writes(h);
    let mut by_node: BTreeMap<(NodeId, u64), Vec<ReadAt>> = BTreeMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        let (Some(node), Some(inc), Some(done)) = (op.node, op.node_incarnation, op.complete)
        else {
            continue;
        };
        if matches!(op.outcome, Outcome::Read(_) | Outcome::Ranged(_)) {
            by_node.entry((node, inc)).or_default().push((op.invoke, done, i));
        }
    }
    for ((node, _), reads) in by_node {
        for &(invoke, _, i) in &reads {
            // What this incarnation had served before this read was sent.
            let mut served_max = 0;
            let mut served_key: BTreeMap<String, u64> = BTreeMap::new();
            for &(_, done, j) in &reads {
                if done < invoke {
                    for (k, o) in observations(&h.ops[j]) {
                        served_max = served_max.max(o.mod_index);
                        let e = served_key.entry(k).or_default();
                        *e = (*e).max(o.mod_index);
                    }
                }
            }
            for (k, o) in observations(&h.ops[i]) {
                let went_back = served_key.get(&k).is_some_and(|m| *m > o.mod_index)
                    || acked_write_between(&acked, &k, o.mod_index, served_max).is_some();
                if went_back && f.violations.len() < 20 {
                    f.violations.push(HistoryViolation::WentBackInTime {
                        node,
                        read: i,
                        key: k.clone(),
                        index: o.mod_index,
                        served: served_max,
                    });
                }
            }
        }
    }
}

/// A Range answer is one state of the store, at some index no lower than `M`, the highest
/// index it returned: no key in it has an acknowledged write with a revision in
/// `(its index, M]`, and a key it leaves out was not set at or below `M` and never deleted
/// after.
pub fn check_range_snapshots(h: &History, f: &mut Findings) {
    let acked = acked_writes(h);
    // Keys with a delete whose revision is unknown (not acknowledged, or acknowledged without
    // it): their absence is always explainable.
    let mut unknown_delete: std::collections::BTreeSet<&str> = Default::default();
    for op in &h.ops {
        let known = matches!(op.outcome, Outcome::Written { revision } if revision != 0)
            || matches!(op.outcome, Outcome::CasFailed { .. } | Outcome::TxnDone { .. });
        match &op.kind {
            OpKind::Delete { key } | OpKind::Cas { key, value: None, .. } if !known => {
                unknown_delete.insert(key);
            }
            OpKind::Txn { success, failure, .. } if !known => {
                for step in success.iter().chain(failure) {
                    if let TxnStep::Delete(k) = step {
                        unknown_delete.insert(k);
                    }
                }
            }
            _ => {}
        }
    }
    for (i, op) in h.ops.iter().enumerate() {
        let Outcome::Ranged(items) = &op.outcome else { continue };
        let mut sorted = items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>();
        sorted.dedup();
        if sorted.len() != items.len() || !items.windows(2).all(|w| w[0].0 < w[1].0) {
            f.violations.push(HistoryViolation::RangeUnsorted { range: i });
            continue;
        }
        let at = items.iter().map(|(_, o)| o.mod_index).max().unwrap_or(0);
        for (k, o) in items {
            if let Some(r) = acked_write_between(&acked, k, o.mod_index, at) {
                f.violations.push(HistoryViolation::RangeStaleKey {
                    range: i,
                    key: k.clone(),
                    index: o.mod_index,
                    write: r,
                    range_index: at,
                });
            }
        }
        for key in KEYS {
            if items.iter().any(|(k, _)| k == key) || unknown_delete.contains(key) {
                continue;
            }
            let Some(writes) = acked.get(key) else { continue };
            // Set at or below `at` and never deleted afterwards (the range's state may be
            // newer than `at`: a delete leaves no index behind to raise it).
            if let Some((r, true)) = writes.iter().rev().find(|(r, _)| *r <= at) {
                if !writes.iter().any(|(d, set)| !set && d > r) {
                    f.violations.push(HistoryViolation::RangeMissingKey {
                        range: i,
                        key: key.to_string(),
                        set_at: *r,
                        range_index: at,
                    });
                }
            }
        }
    }
}

/// Per group of keys ([`TXN_GROUPS`]): writes, compare-and-swaps, transactions and
/// linearizable Get/Range form a linearizable history of a map over the group's keys. (A
/// transaction stays within one group, so the groups are independent.)
pub fn check_linearizable(h: &History, f: &mut Findings) {
    for group in TXN_GROUPS {
        let slot = |k: &str| group.iter().position(|g| *g == k);
        let mut entries = Vec::new();
        for (i, op) in h.ops.iter().enumerate() {
            if let Some(m) = map_op(&op.kind, &op.outcome, &slot) {
                entries.push(MapEntry {
                    op: m,
                    invoke: op.invoke,
                    complete: op.complete,
                    history_index: i,
                });
            }
        }
        // A write that never completed can only make a linearization harder unless it explains
        // something: a value somebody read, a value a condition compares with (it held for an
        // acknowledged CAS, or for an unacknowledged transaction whose writes were read), a
        // delete, or a condition that failed on a slot it writes (any other value there
        // explains the failure).
        let mut seen_values: std::collections::BTreeSet<ValueId> = Default::default();
        let mut failed_slots: std::collections::BTreeSet<usize> = Default::default();
        for e in &entries {
            match &e.op {
                MapOp::Read(obs) => seen_values.extend(obs.iter().filter_map(|(_, v)| *v)),
                MapOp::Cas { slot, expect, applied, .. } => {
                    seen_values.extend(*expect);
                    if *applied == Some(false) {
                        failed_slots.insert(*slot);
                    }
                }
                MapOp::Txn { compares, known, .. } => {
                    seen_values.extend(compares.iter().filter_map(|(_, v)| *v));
                    if let Some((succeeded, reads)) = known {
                        seen_values.extend(reads.iter().flatten().flatten().copied());
                        if !succeeded {
                            failed_slots.extend(compares.iter().map(|(slot, _)| *slot));
                        }
                    }
                }
                MapOp::Write(..) => {}
            }
        }
        entries.retain(|e| e.complete.is_some() || may_matter(&e.op, &seen_values, &failed_slots));
        let name = group.join("+");
        match linearizability::check_map(&entries, MAX_SEARCH_STEPS) {
            Verdict::Ok => {}
            Verdict::Inconclusive => {
                f.inconclusive.push(Undecided { key: name, max_steps: MAX_SEARCH_STEPS })
            }
            Verdict::Violation { stuck_at } => {
                f.violations.push(HistoryViolation::NotLinearizable {
                    key: name,
                    stuck_at: stuck_at.iter().map(|i| (*i, h.ops[*i].clone())).collect(),
                });
            }
        }
    }
}

/// Whether an operation that never completed may explain something: it deletes, writes a
/// value somebody saw, or writes a slot on which a condition failed.
fn may_matter(
    op: &MapOp,
    seen_values: &std::collections::BTreeSet<ValueId>,
    failed_slots: &std::collections::BTreeSet<usize>,
) -> bool {
    let writes = |slot: &usize, v: &Option<ValueId>| {
        failed_slots.contains(slot) || v.is_none_or(|v| seen_values.contains(&v))
    };
    match op {
        MapOp::Write(slot, v) | MapOp::Cas { slot, value: v, .. } => writes(slot, v),
        MapOp::Txn { success, failure, .. } => success.iter().chain(failure).any(|s| match s {
            SlotStep::Set(slot, v) => writes(slot, &Some(*v)),
            SlotStep::Delete(_) => true,
            SlotStep::Get(_) => false,
        }),
        MapOp::Read(_) => true,
    }
}

/// The model operation of one history operation on a group (`slot` maps the group's keys),
/// or `None` when it does not touch the group or carries no information.
fn map_op(kind: &OpKind, outcome: &Outcome, slot: &dyn Fn(&str) -> Option<usize>) -> Option<MapOp> {
    match (kind, outcome) {
        (_, Outcome::ReadFailed) => None,
        (OpKind::Set { key, value }, _) => Some(MapOp::Write(slot(key)?, Some(*value))),
        (OpKind::Delete { key }, _) => Some(MapOp::Write(slot(key)?, None)),
        (OpKind::Get { key, linearizable: true }, Outcome::Read(obs)) => {
            Some(MapOp::Read(vec![(slot(key)?, obs.map(|o| o.value))]))
        }
        (OpKind::Range { linearizable: true }, Outcome::Ranged(items)) => {
            let obs: Vec<(usize, Option<ValueId>)> = KEYS
                .iter()
                .filter_map(|key| {
                    let v = items.iter().find(|(k, _)| k == key).map(|(_, o)| o.value);
                    Some((slot(key)?, v))
                })
                .collect();
            (!obs.is_empty()).then_some(MapOp::Read(obs))
        }
        (OpKind::Cas { key, expect, value }, o) => Some(MapOp::Cas {
            slot: slot(key)?,
            expect: *expect,
            value: *value,
            applied: match o {
                Outcome::Written { .. } => Some(true),
                Outcome::CasFailed { .. } => Some(false),
                _ => None,
            },
        }),
        (OpKind::Txn { compares, success, failure }, o) => {
            let steps = |steps: &[TxnStep]| -> Option<Vec<SlotStep>> {
                steps
                    .iter()
                    .map(|s| {
                        Some(match s {
                            TxnStep::Set(k, v) => SlotStep::Set(slot(k)?, *v),
                            TxnStep::Delete(k) => SlotStep::Delete(slot(k)?),
                            TxnStep::Get(k) => SlotStep::Get(slot(k)?),
                        })
                    })
                    .collect()
            };
            let compares =
                compares.iter().map(|(k, e)| Some((slot(k)?, *e))).collect::<Option<Vec<_>>>()?;
            let known = match o {
                Outcome::TxnDone { succeeded, reads, .. } => Some((
                    *succeeded,
                    reads.as_ref().map(|r| r.iter().map(|o| o.map(|o| o.value)).collect()),
                )),
                _ => None,
            };
            Some(MapOp::Txn { compares, success: steps(success)?, failure: steps(failure)?, known })
        }
        _ => None,
    }
}

/// Where each write is in the history, by value, with the key it writes.
fn writes_by_value(h: &History) -> BTreeMap<ValueId, (usize, &str)> {
    h.ops
        .iter()
        .enumerate()
        .flat_map(|(i, op)| op.kind.written_values().into_iter().map(move |(k, v)| (v, (i, k))))
        .collect()
}

fn observations(op: &crate::history::Op) -> Vec<(String, Observed)> {
    match (&op.kind, &op.outcome) {
        (OpKind::Get { key, .. }, Outcome::Read(Some(o))) => vec![(key.clone(), *o)],
        (OpKind::Range { .. }, Outcome::Ranged(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// Serializable reads promise less: what they return was written to that key by a write
/// invoked before the read completed (or the key is absent).
pub fn check_serializable(h: &History, f: &mut Findings) {
    let writes = writes_by_value(h);
    for (i, op) in h.ops.iter().enumerate() {
        let (OpKind::Get { linearizable, .. } | OpKind::Range { linearizable }) = op.kind else {
            continue;
        };
        for (key, o) in observations(op) {
            let Some((w, wkey)) = writes.get(&o.value).map(|(w, k)| (&h.ops[*w], *k)) else {
                f.violations.push(HistoryViolation::UnwrittenValue { read: i, value: o.value });
                continue;
            };
            if wkey != key {
                f.violations.push(HistoryViolation::WrongKey {
                    read: i,
                    value: o.value,
                    key: key.clone(),
                    written_to: wkey.to_string(),
                });
            }
            if !linearizable && op.complete.is_some_and(|c| w.invoke > c) {
                f.violations.push(HistoryViolation::ReadBeforeWrite { read: i, value: o.value });
            }
        }
    }
}

/// Each write is applied at most once: every read of a value names the same log index, and
/// an acknowledged Set's revision is that index.
pub fn check_at_most_once(h: &History, f: &mut Findings) {
    let writes = writes_by_value(h);
    let mut seen: BTreeMap<ValueId, (u64, usize)> = BTreeMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        for (_, o) in observations(op) {
            match seen.get(&o.value) {
                Some((index, first)) if *index != o.mod_index => {
                    f.violations.push(HistoryViolation::AppliedTwice {
                        value: o.value,
                        first_read: *first,
                        first_index: *index,
                        read: i,
                        index: o.mod_index,
                    });
                }
                Some(_) => {}
                None => {
                    seen.insert(o.value, (o.mod_index, i));
                }
            }
        }
    }
    for (value, (index, read)) in &seen {
        let Some((w, _)) = writes.get(value) else { continue };
        if let Outcome::Written { revision } = h.ops[*w].outcome {
            if revision != *index {
                f.violations.push(HistoryViolation::RevisionMismatch {
                    write: *w,
                    value: *value,
                    revision,
                    read: *read,
                    index: *index,
                });
            }
        }
    }
}

/// Observations taken while the run goes: at most one leader per term, and equal state
/// digests at equal applied index.
#[derive(Debug, Default)]
pub struct Observer {
    events_seen: usize,
    leaders: BTreeMap<u64, NodeId>,
    last_applied: BTreeMap<NodeId, u64>,
    digests: BTreeMap<u64, (u64, NodeId)>,
    pub violations: Vec<Violation>,
    /// Print every node event (the readable trace).
    pub print_events: bool,
}

impl Observer {
    pub fn observe(&mut self, c: &Cluster) {
        let events = c.events();
        for (tick, node, e) in &events[self.events_seen..] {
            if self.print_events {
                println!("t={tick} n{node} {e:?}");
            }
            if let Event::RoleChanged { role: Role::Leader, term, .. } = e {
                match self.leaders.get(term) {
                    Some(other) if other != node => self.violations.push(Violation::TwoLeaders {
                        term: *term,
                        first: *other,
                        second: *node,
                        tick: *tick,
                    }),
                    _ => {
                        self.leaders.insert(*term, *node);
                    }
                }
            }
        }
        self.events_seen = events.len();
        for id in c.ids() {
            let Some(n) = c.node(id) else { continue };
            let applied = n.state().applied_index();
            if self.last_applied.get(&id) == Some(&applied) {
                continue;
            }
            self.last_applied.insert(id, applied);
            let digest = n.state().digest();
            match self.digests.get(&applied) {
                Some((d, other)) if *d != digest => {
                    if self.violations.len() < 20 {
                        self.violations.push(Violation::Diverged {
                            applied_index: applied,
                            first: *other,
                            second: id,
                            tick: c.now(),
                        });
                    }
                }
                Some(_) => {}
                None => {
                    self.digests.insert(applied, (digest, id));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn op(kind: OpKind, invoke: u64, complete: Option<u64>, outcome: Outcome) -> Op {
        Op {
            client: 1,
            kind,
            invoke,
            invoke_tick: invoke,
            complete,
            complete_tick: complete,
            outcome,
            node: None,
            node_incarnation: None,
            attempts: 1,
        }
    }

    fn set(value: ValueId) -> OpKind {
        OpKind::Set { key: "k0".into(), value }
    }

    /// A write whose value nobody read can still be what made a compare-and-swap fail: it must
    /// stay in the search.
    #[test]
    fn a_write_of_unknown_outcome_explains_a_failed_compare_and_swap() {
        let cas = OpKind::Cas { key: "k0".into(), expect: Some(1), value: Some(3) };
        let mut h = History::default();
        h.ops = vec![
            op(set(1), 1, Some(2), Outcome::Written { revision: 10 }),
            op(set(2), 3, None, Outcome::MaybeApplied),
            op(cas, 4, Some(5), Outcome::CasFailed { revision: 12 }),
        ];
        let mut f = Findings::default();
        check_linearizable(&h, &mut f);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        // Without that write, the failure is impossible.
        let mut without = h.clone();
        without.ops.remove(1);
        let mut f = Findings::default();
        check_linearizable(&without, &mut f);
        assert_eq!(f.violations.len(), 1, "{:?}", f.violations);
    }

    /// A transaction whose writes were read took effect, so its compares held: the write of
    /// unknown outcome that made them hold must stay in the search, even if only a
    /// serializable read saw its value.
    #[test]
    fn a_write_of_unknown_outcome_explains_a_transaction_that_took_effect() {
        let txn = OpKind::Txn {
            compares: vec![("k0".into(), Some(1))],
            success: vec![TxnStep::Set("k1".into(), 2)],
            failure: vec![],
        };
        let mut h = History::default();
        h.ops = vec![
            op(set(1), 1, None, Outcome::MaybeApplied),
            op(txn, 2, None, Outcome::MaybeApplied),
            op(
                OpKind::Get { key: "k1".into(), linearizable: true },
                3,
                Some(4),
                Outcome::Read(Some(Observed { value: 2, mod_index: 9 })),
            ),
        ];
        let mut f = Findings::default();
        check_linearizable(&h, &mut f);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
    }
}
