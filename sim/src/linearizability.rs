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
