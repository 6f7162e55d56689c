//! Membership changes on request: add a learner, promote, remove (a leader removing itself
//! hands over first), leadership transfer, and the leader's automatic learner promotion.

use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::StateRole;

use super::writes::WriteKind;
use super::{promote_change, Node};
use crate::error::{Error, InvalidArgument, Unavailable};
use crate::members::{MemberInfo, NodeId};
use crate::request::{RequestId, Response};

impl Node {
    fn check_conf_change(&self) -> Result<(), Error> {
        self.check_leader()?;
        self.check_capacity()?;
        if self.raw.raft.has_pending_conf() {
            return Err(Unavailable::ConfChangeInProgress.into());
        }
        Ok(())
    }

    pub(super) fn propose_conf_change(&mut self, id: Option<RequestId>, cc: ConfChange) {
        self.propose(id, WriteKind::Membership, |raw, _, ctx| raw.propose_conf_change(ctx, cc));
    }

    pub(super) fn add_learner(&mut self, id: RequestId, info: MemberInfo) {
        // A retried join of a node that is already in with the same addresses succeeded.
        if self.raw.raft.state == StateRole::Leader
            && self.sm.conf().all_ids().contains(&info.id)
            && self.sm.members().get(&info.id) == Some(&info)
        {
            let index = self.sm.applied_index();
            self.reply(id, Ok(Response::Membership { index }));
            return;
        }
        let check = self.check_conf_change().and_then(|()| {
            if info.id == 0 {
                return Err(InvalidArgument::Membership("node id must be non-zero").into());
            }
            if self.sm.conf().all_ids().contains(&info.id) {
                return Err(InvalidArgument::Membership("node is already a member").into());
            }
            Ok(())
        });
        match check {
            Ok(()) => {
                let mut cc = ConfChange::default();
                cc.set_change_type(ConfChangeType::AddLearnerNode);
                cc.node_id = info.id;
                cc.context = info.encode().into();
                self.propose_conf_change(Some(id), cc);
            }
            Err(e) => self.reply(id, Err(e)),
        }
    }

    pub(super) fn promote(&mut self, id: RequestId, node: NodeId) {
        let check = self.check_conf_change().and_then(|()| {
            if !self.sm.conf().learners.contains(&node) {
                return Err(InvalidArgument::Membership("node is not a learner").into());
            }
            Ok(())
        });
        match check {
            Ok(()) => self.propose_conf_change(Some(id), promote_change(node)),
            Err(e) => self.reply(id, Err(e)),
        }
    }

    pub(super) fn remove(&mut self, id: RequestId, node: NodeId) {
        let check = self.check_conf_change().and_then(|()| {
            let conf = self.sm.conf();
            if !conf.all_ids().contains(&node) {
                return Err(InvalidArgument::Membership("node is not a member").into());
            }
            if conf.voters.len() == 1 && conf.voters.contains(&node) {
                return Err(InvalidArgument::Membership("cannot remove the last voter").into());
            }
            Ok(())
        });
        if let Err(e) = check {
            self.reply(id, Err(e));
            return;
        }
        if node == self.config.id {
            // A leader does not remove itself: it hands over first, and the caller retries
            // the removal on the new leader.
            if let Some(to) = self.best_transferee() {
                self.raw.transfer_leader(to);
            }
            self.reply(id, Err(Unavailable::LeadershipTransfer.into()));
            return;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = node;
        self.propose_conf_change(Some(id), cc);
    }

    /// The most caught-up other voter that the leader heard from within the last election
    /// timeout, preferring one that is not leaving. A transfer to a voter that is down times
    /// out after an election timeout, and while it runs every proposal is refused: picking it
    /// again and again would stall the cluster for as long as that voter stays down. One that
    /// is leaving would only hand over again — but "leaving" is what gossip says, and anyone
    /// holding the cluster key can gossip it about a member: when every live voter looks
    /// leaving, one of them still gets the lead, or a leaving leader would keep it for ever.
    pub(super) fn best_transferee(&self) -> Option<NodeId> {
        let prs = self.raw.raft.prs();
        let leaving = self.leaving_members();
        self.sm
            .conf()
            .voters
            .iter()
            .filter(|v| **v != self.config.id)
            .filter_map(|v| prs.get(*v).filter(|p| p.recent_active).map(|p| (*v, p.matched)))
            .max_by_key(|(v, matched)| (!leaving.contains(v), *matched))
            .map(|(v, _)| v)
    }

    /// The leader promotes one caught-up auto-promote learner at a time.
    pub(super) fn maybe_promote_learner(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.has_pending_conf() {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let prs = self.raw.raft.prs();
        let candidate = self.sm.conf().learners.iter().copied().find(|l| {
            let auto = self.sm.members().get(l).is_some_and(|m| m.auto_promote);
            // Caught up: replicating normally (not waiting for a snapshot) and close enough to
            // the end of the log, or probing with everything acknowledged: raft-rs leaves a
            // follower whose snapshot reply came before the snapshot report in Probe until the
            // next entry is appended, which in an idle cluster never comes.
            let caught_up = prs.get(*l).is_some_and(|p| {
                p.matched > 0
                    && match p.state {
                        raft::ProgressState::Replicate => {
                            p.matched + self.config.promote_lag_entries >= last
                        }
                        raft::ProgressState::Probe => p.matched >= last,
                        raft::ProgressState::Snapshot => false,
                    }
            });
            auto && caught_up
        });
        if let Some(l) = candidate {
            self.propose_conf_change(None, promote_change(l));
        }
    }
}
