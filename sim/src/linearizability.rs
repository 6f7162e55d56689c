//! Linearizability of one key's register history: a Wing–Gong search (porcupine style) with
//! memoisation over (set of linearized operations, register state) and a step bound.
//!
//! Writes that never completed (timed out, given up) may take effect at any point after their
//! invocation, or never: they have no completion, so the search may place them anywhere later
//! and is done once every *completed* operation is placed.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use crate::history::{Observed, ValueId};

/// One operation on a single register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOp {
    /// `Some(v)`: set to v; `None`: delete.
    Write(Option<ValueId>),
    /// Observed value (with the log index that wrote it; the model tracks values only).
    Read(Option<Observed>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub op: RegOp,
    pub invoke: u64,
    /// `None`: never completed (only meaningful for writes).
    pub complete: Option<u64>,
    /// Index into the run's history, for reports.
    pub history_index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// No linearization exists. Carries a hint: the history indices of the completed
    /// operations the deepest partial linearization could not place.
    Violation {
        stuck_at: Vec<usize>,
    },
    /// The step bound ran out first.
    Inconclusive,
}

type FixedHasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Checks one register history starting from `initial` (absent for a fresh key).
pub fn check(entries: &[Entry], max_steps: u64) -> Verdict {
    // Reads that did not complete carry no information.
    let entries: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.complete.is_some() || matches!(e.op, RegOp::Write(_)))
        .collect();
    let n = entries.len();
    if n == 0 {
        return Verdict::Ok;
    }
    // Completed operations sorted by completion: the earliest unplaced one bounds which
    // operations may be placed next (those invoked before it completed).
    let completed: Vec<usize> = {
        let mut c: Vec<usize> = (0..n).filter(|i| entries[*i].complete.is_some()).collect();
        c.sort_by_key(|i| entries[*i].complete);
        c
    };
    let words = n.div_ceil(64);
    let mut placed = vec![0u64; words];
    let is_placed = |p: &[u64], i: usize| p[i / 64] & (1 << (i % 64)) != 0;
    // Candidate order: by invocation.
    let mut by_invoke: Vec<usize> = (0..n).collect();
    by_invoke.sort_by_key(|i| entries[*i].invoke);

    let mut seen: HashSet<(Vec<u64>, Option<ValueId>), FixedHasher> = HashSet::default();
    // DFS stack of (op placed, previous state, next candidate position to try afterwards).
    let mut stack: Vec<(usize, Option<ValueId>, usize)> = Vec::new();
    let mut state: Option<ValueId> = None;
    let mut next_candidate = 0usize;
    let mut done_completed = 0usize; // how many of `completed` are placed (prefix not tracked)
    let mut steps = 0u64;
    let mut deepest: (usize, Vec<u64>) = (0, placed.clone());

    loop {
        steps += 1;
        if steps > max_steps {
            return Verdict::Inconclusive;
        }
        // The earliest-completing unplaced completed operation.
        let frontier = completed.iter().copied().find(|i| !is_placed(&placed, *i));
        let Some(first) = frontier else { return Verdict::Ok };
        let bound = entries[first].complete.unwrap_or(u64::MAX);
        // Try candidates from `next_candidate` on.
        let mut advanced = false;
        let mut pos = next_candidate;
        while pos < n {
            let i = by_invoke[pos];
            pos += 1;
            if entries[i].invoke > bound {
                break; // later ones are invoked later still
            }
            if is_placed(&placed, i) {
                continue;
            }
            let new_state = match &entries[i].op {
                RegOp::Write(v) => *v,
                RegOp::Read(obs) => {
                    if obs.map(|o| o.value) != state {
                        continue;
                    }
                    state
                }
            };
            placed[i / 64] |= 1 << (i % 64);
            if !seen.insert((placed.clone(), new_state)) {
                placed[i / 64] &= !(1 << (i % 64));
                continue;
            }
            stack.push((i, state, pos));
            state = new_state;
            next_candidate = 0;
            advanced = true;
            if entries[i].complete.is_some() {
                done_completed += 1;
                if done_completed > deepest.0 {
                    deepest = (done_completed, placed.clone());
                }
            }
            break;
        }
        if advanced {
            continue;
        }
        // Backtrack.
        let Some((i, prev, resume)) = stack.pop() else {
            let stuck_at = completed
                .iter()
                .copied()
                .filter(|i| !is_placed(&deepest.1, *i))
                .take(3)
                .map(|i| entries[i].history_index)
                .collect();
            return Verdict::Violation { stuck_at };
        };
        placed[i / 64] &= !(1 << (i % 64));
        if entries[i].complete.is_some() {
            done_completed -= 1;
        }
        state = prev;
        next_candidate = resume;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: Option<u64>, inv: u64, comp: Option<u64>) -> Entry {
        Entry { op: RegOp::Write(v), invoke: inv, complete: comp, history_index: 0 }
    }
    fn r(v: Option<u64>, inv: u64, comp: u64) -> Entry {
        let obs = v.map(|value| Observed { value, mod_index: value });
        Entry { op: RegOp::Read(obs), invoke: inv, complete: Some(comp), history_index: 0 }
    }

    #[test]
    fn sequential_ok_and_stale_read_caught() {
        let h = vec![w(Some(1), 1, Some(2)), r(Some(1), 3, 4), w(Some(2), 5, Some(6))];
        assert_eq!(check(&h, 1000), Verdict::Ok);
        let h = vec![w(Some(1), 1, Some(2)), w(Some(2), 3, Some(4)), r(Some(1), 5, 6)];
        assert!(matches!(check(&h, 1000), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_write_may_be_seen_or_not() {
        let h = vec![w(Some(1), 1, Some(10)), r(None, 2, 3), r(Some(1), 4, 5), r(Some(1), 6, 7)];
        assert_eq!(check(&h, 1000), Verdict::Ok);
        // Once seen, a concurrent write cannot be un-seen.
        let h = vec![w(Some(1), 1, Some(10)), r(Some(1), 2, 3), r(None, 4, 5)];
        assert!(matches!(check(&h, 1000), Verdict::Violation { .. }));
    }

    #[test]
    fn maybe_applied_write_anywhere_after_invocation_or_never() {
        let h = vec![w(Some(1), 1, None), r(None, 2, 3), r(Some(1), 10, 11)];
        assert_eq!(check(&h, 1000), Verdict::Ok);
        let h = vec![w(Some(1), 1, None), r(None, 2, 3)];
        assert_eq!(check(&h, 1000), Verdict::Ok);
        // Not before its invocation.
        let h = vec![r(Some(1), 1, 2), w(Some(1), 3, None)];
        assert!(matches!(check(&h, 1000), Verdict::Violation { .. }));
    }

    #[test]
    fn bounded() {
        let mut h = Vec::new();
        for i in 0..40 {
            h.push(w(Some(i), 1, None));
        }
        h.push(r(Some(999), 2, 3));
        assert_eq!(check(&h, 500), Verdict::Inconclusive);
    }
}

/// Keys one model state covers: a group of [`crate::workload::TXN_GROUPS`].
pub const MAX_SLOTS: usize = 2;

/// The state of a group of keys: each slot's value (`None`: absent).
pub type MapState = [Option<ValueId>; MAX_SLOTS];

/// One step of a transaction on slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotStep {
    Set(usize, ValueId),
    Delete(usize),
    Get(usize),
}

/// One operation on a group of keys, with what is known of its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Set (`Some`) or delete (`None`) one slot.
    Write(usize, Option<ValueId>),
    /// Observed values of some slots, all at one point (a Get: one slot; a Range: every slot).
    Read(Vec<(usize, Option<ValueId>)>),
    /// Compare-and-swap on a slot: `applied` `Some(true)` acknowledged, `Some(false)` its
    /// condition failed, `None` unknown.
    Cas { slot: usize, expect: Option<ValueId>, value: Option<ValueId>, applied: Option<bool> },
    /// A transaction; `known`: the branch taken and the values its `Get` steps returned (when
    /// the answer carried them).
    Txn {
        compares: Vec<(usize, Option<ValueId>)>,
        success: Vec<SlotStep>,
        failure: Vec<SlotStep>,
        known: Option<(bool, Option<Vec<Option<ValueId>>>)>,
    },
}

impl MapOp {
    /// The state after this operation from `s`, or `None` if its observed outcome is
    /// impossible there.
    pub fn step(&self, mut s: MapState) -> Option<MapState> {
        match self {
            MapOp::Write(slot, v) => {
                s[*slot] = *v;
                Some(s)
            }
            MapOp::Read(obs) => obs.iter().all(|(slot, v)| s[*slot] == *v).then_some(s),
            MapOp::Cas { slot, expect, value, applied } => {
                let holds = s[*slot] == *expect;
                match applied {
                    Some(a) if *a != holds => None,
                    _ => {
                        if holds {
                            s[*slot] = *value;
                        }
                        Some(s)
                    }
                }
            }
            MapOp::Txn { compares, success, failure, known } => {
                let holds = compares.iter().all(|(slot, e)| s[*slot] == *e);
                if known.as_ref().is_some_and(|(succeeded, _)| *succeeded != holds) {
                    return None;
                }
                let mut reads = known.as_ref().and_then(|(_, r)| r.as_ref()).map(|r| r.iter());
                for step in if holds { success } else { failure } {
                    match step {
                        SlotStep::Set(slot, v) => s[*slot] = Some(*v),
                        SlotStep::Delete(slot) => s[*slot] = None,
                        SlotStep::Get(slot) => {
                            if let Some(reads) = reads.as_mut() {
                                if reads.next() != Some(&s[*slot]) {
                                    return None;
                                }
                            }
                        }
                    }
                }
                Some(s)
            }
        }
    }
}

/// One operation of a group's history.
#[derive(Debug, Clone)]
pub struct MapEntry {
    pub op: MapOp,
    pub invoke: u64,
    /// `None`: never completed (a write that may or may not have taken effect).
    pub complete: Option<u64>,
    pub history_index: usize,
}

/// Checks a history of operations on a group of keys (all absent at first) against the map
/// model: the same search as [`check`], with a multi-key state, so operations spanning keys
/// (transactions) are checked as one step each.
pub fn check_map(entries: &[MapEntry], max_steps: u64) -> Verdict {
    let n = entries.len();
    if n == 0 {
        return Verdict::Ok;
    }
    let completed: Vec<usize> = {
        let mut c: Vec<usize> = (0..n).filter(|i| entries[*i].complete.is_some()).collect();
        c.sort_by_key(|i| entries[*i].complete);
        c
    };
    let words = n.div_ceil(64);
    let mut placed = vec![0u64; words];
    let is_placed = |p: &[u64], i: usize| p[i / 64] & (1 << (i % 64)) != 0;
    let mut by_invoke: Vec<usize> = (0..n).collect();
    by_invoke.sort_by_key(|i| entries[*i].invoke);

    let mut seen: HashSet<(Vec<u64>, MapState), FixedHasher> = HashSet::default();
    let mut stack: Vec<(usize, MapState, usize)> = Vec::new();
    let mut state: MapState = [None; MAX_SLOTS];
    let mut next_candidate = 0usize;
    let mut done_completed = 0usize;
    let mut steps = 0u64;
    let mut deepest: (usize, Vec<u64>) = (0, placed.clone());
    loop {
        steps += 1;
        if steps > max_steps {
            return Verdict::Inconclusive;
        }
        let frontier = completed.iter().copied().find(|i| !is_placed(&placed, *i));
        let Some(first) = frontier else { return Verdict::Ok };
        let bound = entries[first].complete.unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut pos = next_candidate;
        while pos < n {
            let i = by_invoke[pos];
            pos += 1;
            if entries[i].invoke > bound {
                break;
            }
            if is_placed(&placed, i) {
                continue;
            }
            let Some(new_state) = entries[i].op.step(state) else { continue };
            placed[i / 64] |= 1 << (i % 64);
            if !seen.insert((placed.clone(), new_state)) {
                placed[i / 64] &= !(1 << (i % 64));
                continue;
            }
            stack.push((i, state, pos));
            state = new_state;
            next_candidate = 0;
            advanced = true;
            if entries[i].complete.is_some() {
                done_completed += 1;
                if done_completed > deepest.0 {
                    deepest = (done_completed, placed.clone());
                }
            }
            break;
        }
        if advanced {
            continue;
        }
        let Some((i, prev, resume)) = stack.pop() else {
            let stuck_at = completed
                .iter()
                .copied()
                .filter(|i| !is_placed(&deepest.1, *i))
                .take(3)
                .map(|i| entries[i].history_index)
                .collect();
            return Verdict::Violation { stuck_at };
        };
        placed[i / 64] &= !(1 << (i % 64));
        if entries[i].complete.is_some() {
            done_completed -= 1;
        }
        state = prev;
        next_candidate = resume;
    }
}

#[cfg(test)]
mod map_tests {
    use super::*;

    fn e(op: MapOp, invoke: u64, complete: Option<u64>) -> MapEntry {
        MapEntry { op, invoke, complete, history_index: 0 }
    }

    #[test]
    fn a_transaction_is_one_step_over_both_keys() {
        let transfer = |known| MapOp::Txn {
            compares: vec![(0, Some(1)), (1, Some(2))],
            success: vec![SlotStep::Set(0, 3), SlotStep::Set(1, 4)],
            failure: vec![SlotStep::Get(0), SlotStep::Get(1)],
            known,
        };
        let h = vec![
            e(MapOp::Write(0, Some(1)), 1, Some(2)),
            e(MapOp::Write(1, Some(2)), 3, Some(4)),
            e(transfer(Some((true, Some(vec![])))), 5, Some(6)),
            e(MapOp::Read(vec![(0, Some(3)), (1, Some(4))]), 7, Some(8)),
        ];
        assert_eq!(check_map(&h, 1000), Verdict::Ok);
        // Half a transaction seen: only its first write took effect.
        let mut torn = h.clone();
        torn[3] = e(MapOp::Read(vec![(0, Some(3)), (1, Some(2))]), 7, Some(8));
        assert!(matches!(check_map(&torn, 1000), Verdict::Violation { .. }));
        // A failure branch reporting values the compares would have matched.
        let mut lie = h.clone();
        lie[2] = e(transfer(Some((false, Some(vec![Some(1), Some(2)])))), 5, Some(6));
        assert!(matches!(check_map(&lie, 1000), Verdict::Violation { .. }));
    }

    #[test]
    fn two_acknowledged_cas_from_one_state_cannot_both_apply() {
        let cas =
            |value| MapOp::Cas { slot: 0, expect: None, value: Some(value), applied: Some(true) };
        let h = vec![e(cas(1), 1, Some(4)), e(cas(2), 2, Some(5))];
        assert!(matches!(check_map(&h, 1000), Verdict::Violation { .. }));
        let failed = MapOp::Cas { slot: 0, expect: None, value: Some(2), applied: Some(false) };
        let h = vec![e(cas(1), 1, Some(4)), e(failed, 2, Some(5))];
        assert_eq!(check_map(&h, 1000), Verdict::Ok);
    }
}
