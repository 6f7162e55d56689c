//! Checkers over a run: the client history (linearizability per key, the weaker rule for
//! serializable reads, at-most-once application of each write) and cluster observations
//! taken every tick (one leader per term, equal state at equal applied index).

use std::collections::BTreeMap;

use mokv_core::{Event, NodeId, Role};

use crate::cluster::Cluster;
use crate::history::{History, Observed, OpKind, Outcome, ValueId};
use crate::linearizability::{self, Entry, RegOp, Verdict};
use crate::violation::{HistoryViolation, Undecided, Violation};
use crate::workload::KEYS;

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
        let Outcome::Written { revision } = op.outcome else { continue };
        if revision == 0 {
            continue;
        }
        match &op.kind {
            OpKind::Set { key, .. } => by_key.entry(key).or_default().push((revision, true)),
            OpKind::Delete { key } => by_key.entry(key).or_default().push((revision, false)),
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
        if let (OpKind::Delete { key }, o) = (&op.kind, &op.outcome) {
            if !matches!(o, Outcome::Written { revision } if *revision != 0) {
                unknown_delete.insert(key);
            }
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

/// Per key: Set/Delete and linearizable Get/Range form a linearizable register history.
pub fn check_linearizable(h: &History, f: &mut Findings) {
    for key in KEYS {
        let mut entries = Vec::new();
        for (i, op) in h.ops.iter().enumerate() {
            let reg = match (&op.kind, &op.outcome) {
                (_, Outcome::ReadFailed) => None,
                (OpKind::Set { key: k, value }, _) if k == key => Some(RegOp::Write(Some(*value))),
                (OpKind::Delete { key: k }, _) if k == key => Some(RegOp::Write(None)),
                (OpKind::Get { key: k, linearizable: true }, Outcome::Read(obs)) if k == key => {
                    Some(RegOp::Read(*obs))
                }
                (OpKind::Range { linearizable: true }, Outcome::Ranged(items)) => {
                    Some(RegOp::Read(items.iter().find(|(k, _)| k == key).map(|(_, o)| *o)))
                }
                _ => None,
            };
            if let Some(op_reg) = reg {
                entries.push(Entry {
                    op: op_reg,
                    invoke: op.invoke,
                    complete: op.complete,
                    history_index: i,
                });
            }
        }
        // A write that never completed and whose value nobody read can only make a
        // linearization harder: leave it out (keeps the search small).
        let read_values: std::collections::BTreeSet<ValueId> = entries
            .iter()
            .filter_map(|e| match e.op {
                RegOp::Read(Some(o)) => Some(o.value),
                _ => None,
            })
            .collect();
        entries.retain(|e| match e.op {
            RegOp::Write(Some(v)) => e.complete.is_some() || read_values.contains(&v),
            _ => true,
        });
        match linearizability::check(&entries, MAX_SEARCH_STEPS) {
            Verdict::Ok => {}
            Verdict::Inconclusive => {
                f.inconclusive.push(Undecided { key: key.to_string(), max_steps: MAX_SEARCH_STEPS })
            }
            Verdict::Violation { stuck_at } => {
                f.violations.push(HistoryViolation::NotLinearizable {
                    key: key.to_string(),
                    stuck_at: stuck_at.iter().map(|i| (*i, h.ops[*i].clone())).collect(),
                });
            }
        }
    }
}

/// Where each write is in the history, by value.
fn writes_by_value(h: &History) -> BTreeMap<ValueId, usize> {
    h.ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op.kind {
            OpKind::Set { value, .. } => Some((value, i)),
            _ => None,
        })
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
            let Some(w) = writes.get(&o.value).map(|w| &h.ops[*w]) else {
                f.violations.push(HistoryViolation::UnwrittenValue { read: i, value: o.value });
                continue;
            };
            let OpKind::Set { key: wkey, .. } = &w.kind else { continue };
            if *wkey != key {
                f.violations.push(HistoryViolation::WrongKey {
                    read: i,
                    value: o.value,
                    key: key.clone(),
                    written_to: wkey.clone(),
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
        let Some(w) = writes.get(value) else { continue };
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
