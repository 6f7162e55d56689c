//! The node's gossip side: foca driven from the node's inputs, the down-member clock, the
//! cluster id a fresh node adopts, the gossip peers it remembers, and the leader's reconciler
//! turned into conf changes.

use std::collections::BTreeSet;

use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::StateRole;

use super::{Event, Node};
use crate::gossip::{newest, Datagram, GossipError, GossipId, GossipMember, Health};
use crate::members::NodeId;
use crate::reconcile::{self, Action};

impl Node {
    /// A gossip datagram as received (after the shell's decryption).
    pub fn handle_gossip(&mut self, bytes: &[u8]) -> Result<(), GossipError> {
        let Some(g) = &mut self.gossip else { return Ok(()) };
        let r = g.handle_datagram(bytes);
        self.note_gossip_change();
        r
    }

    /// This node leaves the cluster for good: it announces it in gossip, and hands leadership
    /// over if it leads; the leader then removes it from the configuration. Follow with
    /// [`handle_gossip_stop`](Self::handle_gossip_stop) once removed (or after a bound).
    pub fn handle_leave(&mut self) {
        self.announce_leaving();
        self.reconcile();
        self.note_gossip_change();
        self.after_input();
    }

    /// Raft ids whose newest gossip identity says they are leaving (none without gossip).
    pub(super) fn leaving_members(&self) -> BTreeSet<NodeId> {
        let Some(g) = &self.gossip else { return BTreeSet::new() };
        let view = g.members();
        let mut ids: BTreeSet<NodeId> = view.iter().map(|m| m.id.raft_id).collect();
        ids.retain(|id| newest(&view, *id).is_some_and(|m| m.id.leaving));
        ids
    }

    /// Marks this node as leaving for good, in gossip too.
    pub(super) fn announce_leaving(&mut self) {
        self.membership.set_leaving();
        if let Some(g) = &mut self.gossip {
            if !g.identity().leaving {
                let id = GossipId { leaving: true, ..g.identity().bumped() };
                g.change_identity(id);
            }
        }
    }

    /// Declares this node down in gossip and stops gossiping (the last step of a shutdown).
    pub fn handle_gossip_stop(&mut self) {
        if let Some(g) = &mut self.gossip {
            g.leave();
        }
    }

    /// The next gossip datagram to send; drain after every input, like the other outputs.
    #[must_use]
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        self.gossip.as_mut()?.poll_datagram()
    }

    /// Every other member gossip knows, with its health in this node's view (empty without
    /// gossip).
    pub fn gossip_members(&self) -> Vec<GossipMember> {
        self.gossip.as_ref().map(|g| g.members()).unwrap_or_default()
    }

    /// This node's current gossip identity.
    pub fn gossip_identity(&self) -> Option<&GossipId> {
        self.gossip.as_ref().map(|g| g.identity())
    }

    /// Once per tick: foca's timers, then what the leader does about it.
    pub(super) fn tick_gossip(&mut self) {
        let Some(g) = &mut self.gossip else { return };
        g.handle_time(self.now_ms);
        if self.membership.is_removed() && !self.membership.is_leaving() {
            // Removed (by an operator, or as a dead member while it was down, then restarted
            // with its disk): it applied its own removal and serves nothing. It says it is
            // leaving, so that the leader does not add it back, and comes back only wiped (new
            // Raft id). A leader that re-adds it before hearing so removes it again after.
            self.announce_leaving();
        }
        self.adopt_cluster_id();
        self.track_down_members();
        self.request_verifications();
        self.reconcile();
        self.note_gossip_change();
    }

    fn note_gossip_change(&mut self) {
        if self.gossip.as_mut().is_some_and(|g| g.take_changed()) {
            self.push_event(Event::GossipChanged);
            self.remember_gossip_peers();
        }
    }

    /// Keeps the gossip address of every node seen (see `NodeMeta::gossip_peers`), and has
    /// the shell store them when they changed. Not synced: losing the latest change in a crash
    /// only costs a few seeds.
    fn remember_gossip_peers(&mut self) {
        let view = self.gossip_members();
        let conf_ids = self.sm.conf().all_ids();
        if self.meta.remember_gossip_peers(&view, self.config.id, &conf_ids) {
            self.persist_meta(false);
        }
    }

    /// A node that started with no data learns its cluster's id from the members of its
    /// configuration once it is in it, and stores it (synced), so that after a restart it is
    /// only ever added back to that cluster.
    ///
    /// Any member will do, not only the leader: a leader that itself joined empty and never
    /// learned the id (its own leader's gossip was cut off) would otherwise keep every node
    /// that joins after it from learning it, and then refuse, for good, the old members that
    /// come back gossiping the id. Members are only ever added with no id or with the
    /// leader's, so the members that know one agree; if they do not, nothing is learned.
    fn adopt_cluster_id(&mut self) {
        let Some(g) = &self.gossip else { return };
        let conf_ids = self.sm.conf().all_ids();
        if g.identity().cluster_id != 0 || !conf_ids.contains(&self.config.id) {
            return;
        }
        let view = g.members();
        let known: BTreeSet<u64> = conf_ids
            .iter()
            .filter(|id| **id != self.config.id)
            .filter_map(|id| newest(&view, *id).map(|m| m.id.cluster_id))
            .filter(|cluster_id| *cluster_id != 0)
            .collect();
        let learned = match known.len() {
            1 => known.first().copied(),
            _ => None,
        };
        if let (Some(cluster_id), Some(g)) = (learned, &mut self.gossip) {
            let id = GossipId { cluster_id, ..g.identity().bumped() };
            g.change_identity(id);
            self.meta.cluster_id = Some(cluster_id);
            self.persist_meta(true);
            self.push_event(Event::ClusterIdLearned { cluster_id });
        }
    }

    /// Since when each configuration member has been down (or unseen) in this node's view,
    /// kept by the leader only (the only one that acts on it) and counted from its election.
    /// A member the leader hears from over Raft (its progress is recently active) is not down,
    /// whatever gossip says: with only the leader's gossip cut off, every follower looks down
    /// to it, and the dead-member timeout would otherwise have it remove every healthy voter.
    fn track_down_members(&mut self) {
        let leads = self.raw.raft.state == StateRole::Leader;
        // The view is only needed (and built) by the leader.
        let (view, ids) = if leads {
            (self.gossip_members(), self.sm.conf().all_ids())
        } else {
            (Vec::new(), BTreeSet::new())
        };
        let prs = self.raw.raft.prs();
        self.membership.track_down(leads, self.config.id, &ids, self.now_ms, |id| {
            let raft_active = prs.get(id).is_some_and(|p| p.recent_active);
            let gossip_up = newest(&view, id)
                .is_some_and(|m| matches!(m.health, Health::Alive | Health::Suspect));
            raft_active || gossip_up
        });
    }

    /// What the reconciler decides from: this node's configuration, member table, down
    /// clock and proofs, with gossip view `view` and the remembered removals `removed`.
    pub(super) fn reconcile_inputs<'a>(
        &'a self,
        g: &crate::gossip::Gossip,
        view: &'a [GossipMember],
        removed: &'a std::collections::BTreeMap<NodeId, u64>,
    ) -> reconcile::Inputs<'a> {
        reconcile::Inputs {
            self_id: self.config.id,
            self_leaving: self.membership.is_leaving(),
            cluster_id: g.identity().cluster_id,
            conf: self.sm.conf(),
            members: self.sm.members(),
            gossip: view,
            down_since_ms: self.membership.down_since_ms(),
            now_ms: self.now_ms,
            dead_member_timeout_ms: self.config.dead_member_timeout_ms,
            removed,
            proofs: self.verifier.proofs(),
            leaves: self.verifier.leaves(),
            gossip_leave_trusted: self.config.planted_bugs.gossip_leave_trusted(),
        }
    }

    /// The leader takes the reconciler's next step, one configuration change at a time.
    pub(super) fn reconcile(&mut self) {
        let Some(g) = &self.gossip else { return };
        if self.raw.raft.state != StateRole::Leader
            || self.membership.is_removed()
            || self.raw.raft.has_pending_conf()
            || self.raw.raft.lead_transferee.is_some()
            || self.check_capacity().is_err()
        {
            return;
        }
        let view = g.members();
        let removed = self.membership.removed_ids();
        let action = reconcile::next_action(&self.reconcile_inputs(g, &view, &removed));
        let mut cc = ConfChange::default();
        match action {
            None => return,
            Some(Action::TransferLeadership) => {
                if let Some(to) = self.best_transferee() {
                    self.raw.transfer_leader(to);
                }
                return;
            }
            Some(Action::Remove(id)) => {
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = id;
            }
            Some(Action::AddLearner(info)) => {
                cc.set_change_type(ConfChangeType::AddLearnerNode);
                cc.node_id = info.id;
                cc.context = info.encode().into();
            }
        }
        self.propose_conf_change(None, cc);
    }
}
