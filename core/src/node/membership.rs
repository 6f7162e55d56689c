//! [`Membership`]: this node's own standing in the cluster, and the leader's clock of members
//! that are down.

use std::collections::{BTreeMap, BTreeSet};

use crate::members::NodeId;

/// Whether this node is still in, or on its way out; and, on the leader, since when each
/// member has been down.
///
/// Invariants:
/// - `leaving` never goes back to false: a node that said it leaves comes back only wiped,
///   under a new Raft id;
/// - `removed` is set when the node applies its own removal and cleared only when it applies
///   its re-addition (a leader that had not heard it was leaving added it back);
/// - `down_since_ms` is empty unless this node leads, holds only configuration members other
///   than this node, and keeps each one's first down sighting until it is seen up again;
/// - `last_heard_ms` holds configuration members only (the caller checks), so it is bounded by
///   the configuration;
/// - `removed_ids` holds at most [`MAX_REMEMBERED_REMOVALS`] ids, the most recent removals.
#[derive(Debug, Default)]
pub(super) struct Membership {
    removed: bool,
    leaving: bool,
    down_since_ms: BTreeMap<NodeId, u64>,
    /// When (monotonic ms) this node last received a Raft message from each member.
    last_heard_ms: BTreeMap<NodeId, u64>,
    /// Members this node saw removed: id → (order of removal, `started_ms` of its newest gossip
    /// incarnation then, 0 if unseen). The reconciler does not add such an id back
    /// automatically until it gossips from a newer process (a restart): the same process may
    /// not have heard of its removal, and adding it back at once would undo an operator's
    /// `member remove`. A restarted one is added back so that it catches up to its removal and
    /// leaves. Kept in memory, rebuilt from the log entries a node applies; a node that
    /// restarts past the removal (snapshot) forgets it, which costs at most one round of
    /// re-adding and removing again.
    removed_ids: BTreeMap<NodeId, (u64, u64)>,
    removals_seen: u64,
}

/// Bound on [`Membership`]'s remembered removals (ids are never reused, so this only caps
/// memory; the oldest go first).
pub(super) const MAX_REMEMBERED_REMOVALS: usize = 256;

impl Membership {
    /// This node applied its own removal from the configuration.
    pub(super) fn is_removed(&self) -> bool {
        self.removed
    }

    /// This node leaves for good: asked to, or it applied its own removal.
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving
    }

    pub(super) fn set_removed(&mut self) {
        self.removed = true;
    }

    /// This node applied its re-addition after its removal. It does not take a leave back.
    pub(super) fn set_readded(&mut self) {
        self.removed = false;
    }

    pub(super) fn set_leaving(&mut self) {
        self.leaving = true;
    }

    /// A Raft message from member `id` arrived at `now_ms`.
    pub(super) fn heard_from(&mut self, id: NodeId, now_ms: u64) {
        self.last_heard_ms.insert(id, now_ms);
    }

    /// When this node last heard from `id` over Raft (monotonic ms).
    pub(super) fn last_heard_ms(&self, id: NodeId) -> Option<u64> {
        self.last_heard_ms.get(&id).copied()
    }

    /// Forgets what is kept per member for ids no longer in the configuration.
    pub(super) fn retain_members(&mut self, conf_ids: &BTreeSet<NodeId>) {
        self.last_heard_ms.retain(|id, _| conf_ids.contains(id));
    }

    /// Member `id` was removed while its newest gossip incarnation started at `started_ms`.
    pub(super) fn remember_removal(&mut self, id: NodeId, started_ms: u64) {
        self.removals_seen += 1;
        self.removed_ids.insert(id, (self.removals_seen, started_ms));
        if self.removed_ids.len() > MAX_REMEMBERED_REMOVALS {
            let oldest =
                self.removed_ids.iter().min_by_key(|(_, (seq, _))| *seq).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.removed_ids.remove(&oldest);
            }
        }
    }

    /// Removed ids with the `started_ms` of their incarnation at removal (see `removed_ids`).
    pub(super) fn removed_ids(&self) -> BTreeMap<NodeId, u64> {
        self.removed_ids.iter().map(|(id, (_, started))| (*id, *started)).collect()
    }

    /// Since when (ms) each configuration member has been down, as of the last
    /// [`track_down`](Self::track_down).
    pub(super) fn down_since_ms(&self) -> &BTreeMap<NodeId, u64> {
        &self.down_since_ms
    }

    /// Updates the down clock: kept by the leader only (the only one that acts on it) and
    /// counted from its election. `is_up` says whether a member is heard from (over Raft or in
    /// gossip).
    pub(super) fn track_down(
        &mut self,
        leads: bool,
        self_id: NodeId,
        conf_ids: &BTreeSet<NodeId>,
        now_ms: u64,
        is_up: impl Fn(NodeId) -> bool,
    ) {
        if !leads {
            self.down_since_ms.clear();
            return;
        }
        self.down_since_ms.retain(|id, _| conf_ids.contains(id));
        for id in conf_ids.iter().copied().filter(|id| *id != self_id) {
            if is_up(id) {
                self.down_since_ms.remove(&id);
            } else {
                self.down_since_ms.entry(id).or_insert(now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_down_clock_keeps_the_first_sighting_until_the_member_is_up() {
        let mut m = Membership::default();
        let conf = BTreeSet::from([1, 2, 3]);
        m.track_down(true, 1, &conf, 100, |id| id != 3);
        m.track_down(true, 1, &conf, 200, |id| id != 3);
        assert_eq!(m.down_since_ms(), &BTreeMap::from([(3, 100)]));
        m.track_down(true, 1, &conf, 300, |_| true);
        assert!(m.down_since_ms().is_empty(), "up again: the clock restarts");
        m.track_down(true, 1, &conf, 400, |_| false);
        assert_eq!(m.down_since_ms(), &BTreeMap::from([(2, 400), (3, 400)]), "never itself");
        m.track_down(true, 1, &BTreeSet::from([1, 2]), 500, |_| false);
        assert_eq!(m.down_since_ms(), &BTreeMap::from([(2, 400)]), "members only");
        m.track_down(false, 1, &conf, 600, |_| false);
        assert!(m.down_since_ms().is_empty(), "kept by the leader only");
    }

    #[test]
    fn remembered_removals_are_bounded_and_drop_the_oldest_first() {
        let mut m = Membership::default();
        for id in 0..(MAX_REMEMBERED_REMOVALS as u64 + 10) {
            m.remember_removal(1000 - id, id);
        }
        let removed = m.removed_ids();
        assert_eq!(removed.len(), MAX_REMEMBERED_REMOVALS);
        assert!(!removed.contains_key(&1000), "the first removal went first");
        assert_eq!(removed.get(&(1000 - 10)), Some(&10));
        m.remember_removal(5, 1);
        m.remember_removal(5, 2);
        assert_eq!(m.removed_ids().get(&5), Some(&2), "the latest removal of an id counts");
    }

    #[test]
    fn a_readded_node_serves_again_but_still_leaves() {
        let mut m = Membership::default();
        assert!(!m.is_removed() && !m.is_leaving());
        m.set_removed();
        m.set_leaving();
        m.set_readded();
        assert!(!m.is_removed());
        assert!(m.is_leaving(), "a leave is never taken back");
    }
}
