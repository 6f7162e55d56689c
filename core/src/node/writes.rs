//! [`PendingWrites`]: the proposals this node made as leader, waiting to be answered.

use std::collections::BTreeMap;

use raft::eraftpb::Entry;

use crate::request::RequestId;

/// What a pending write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteKind {
    Kv,
    Membership,
}

/// A proposal this node made as leader, waiting for its entry to be applied.
#[derive(Debug)]
pub(super) struct PendingWrite {
    pub(super) id: RequestId,
    term: u64,
    token: u64,
    deadline_tick: u64,
    pub(super) kind: WriteKind,
}

impl PendingWrite {
    /// Whether `e` is the entry this write proposed: the term it was proposed in, carrying its
    /// token as the entry's context. Another entry at the same index (a later leader's)
    /// means this write was dropped.
    pub(super) fn is_entry(&self, e: &Entry) -> bool {
        self.term == e.term && e.context.as_ref() == self.token.to_le_bytes()
    }
}

/// The writes this node proposed and has not answered, by the log index of their entry.
///
/// Invariants:
/// - at most one write per index: proposing at an index that holds one (this node's older
///   entry there was truncated by another leader) hands the old one back to be answered;
/// - a token is never handed out twice by one node (a counter from a seeded start), so an
///   entry of an earlier term or of another node's proposal never passes for ours;
/// - a write leaves only through a `take*` method, whose caller answers it: every write is
///   answered exactly once.
#[derive(Debug)]
pub(super) struct PendingWrites {
    by_index: BTreeMap<u64, PendingWrite>,
    next_token: u64,
}

impl PendingWrites {
    /// No writes; tokens start at `first_token` (drawn from the node's seeded generator).
    pub(super) fn new(first_token: u64) -> Self {
        Self { by_index: BTreeMap::new(), next_token: first_token }
    }

    pub(super) fn len(&self) -> usize {
        self.by_index.len()
    }

    /// A token for the next proposal (its entry's context), whether or not it becomes a
    /// pending write.
    pub(super) fn next_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        t
    }

    /// Records that request `id` was proposed at `index` in `term` with `token`. Returns the
    /// write that waited at that index before, which can never be applied now.
    #[must_use]
    pub(super) fn insert(
        &mut self,
        index: u64,
        id: RequestId,
        term: u64,
        token: u64,
        deadline_tick: u64,
        kind: WriteKind,
    ) -> Option<PendingWrite> {
        self.by_index.insert(index, PendingWrite { id, term, token, deadline_tick, kind })
    }

    pub(super) fn get(&self, index: u64) -> Option<&PendingWrite> {
        self.by_index.get(&index)
    }

    /// The write waiting at `index`, to be answered now.
    pub(super) fn take(&mut self, index: u64) -> Option<PendingWrite> {
        self.by_index.remove(&index)
    }

    /// Every write at an index up to `index` (a snapshot covers them), by index.
    pub(super) fn take_up_to(&mut self, index: u64) -> Vec<PendingWrite> {
        let covered: Vec<u64> = self.by_index.range(..=index).map(|(i, _)| *i).collect();
        covered.into_iter().filter_map(|i| self.by_index.remove(&i)).collect()
    }

    /// Every write whose deadline is `now_tick` or earlier, by index.
    pub(super) fn take_expired(&mut self, now_tick: u64) -> Vec<PendingWrite> {
        let expired: Vec<u64> = self
            .by_index
            .iter()
            .filter(|(_, w)| w.deadline_tick <= now_tick)
            .map(|(index, _)| *index)
            .collect();
        expired.into_iter().filter_map(|i| self.by_index.remove(&i)).collect()
    }

    /// Every write, by index.
    pub(super) fn take_all(&mut self) -> Vec<PendingWrite> {
        std::mem::take(&mut self.by_index).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, token: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.context = token.to_le_bytes().to_vec().into();
        e
    }

    #[test]
    fn an_entry_is_ours_only_with_our_term_and_token() {
        let mut w = PendingWrites::new(40);
        let token = w.next_token();
        assert_eq!(token, 40);
        assert_eq!(w.next_token(), 41, "tokens are never handed out twice");
        assert!(w.insert(5, 1, 3, token, 100, WriteKind::Kv).is_none());
        let pending = w.get(5).unwrap();
        assert!(pending.is_entry(&entry(5, 3, 40)));
        assert!(!pending.is_entry(&entry(5, 4, 40)), "another leader's entry at the index");
        assert!(!pending.is_entry(&entry(5, 3, 41)), "another proposal's token");
    }

    #[test]
    fn a_new_proposal_at_an_index_hands_back_the_old_one() {
        let mut w = PendingWrites::new(0);
        assert!(w.insert(5, 1, 3, 0, 100, WriteKind::Kv).is_none());
        let old = w.insert(5, 2, 4, 1, 100, WriteKind::Membership).unwrap();
        assert_eq!(old.id, 1);
        assert_eq!(w.len(), 1);
        assert_eq!(w.take(5).map(|p| p.id), Some(2));
        assert!(w.take(5).is_none(), "answered once");
    }

    #[test]
    fn takes_leave_in_index_order_and_only_what_they_cover() {
        let mut w = PendingWrites::new(0);
        for (index, deadline) in [(9, 50), (3, 10), (6, 30), (12, 10)] {
            assert!(w.insert(index, index, 1, index, deadline, WriteKind::Kv).is_none());
        }
        let ids = |v: Vec<PendingWrite>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(w.take_expired(10)), vec![3, 12]);
        assert_eq!(ids(w.take_up_to(6)), vec![6]);
        assert_eq!(w.len(), 1);
        assert!(w.insert(u64::MAX, 99, 1, 99, 1, WriteKind::Kv).is_none());
        assert_eq!(ids(w.take_up_to(u64::MAX)), vec![9, 99]);
        assert!(w.insert(1, 1, 1, 1, 1, WriteKind::Kv).is_none());
        assert_eq!(ids(w.take_all()), vec![1]);
        assert_eq!(w.len(), 0);
    }
}
