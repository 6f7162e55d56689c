//! Operator requests: the cluster report behind `mokv status`, removal under the
//! strict-quorum guard, and leadership transfer to a named voter.

use raft::StateRole;

use super::{Node, Status};
use crate::error::{Error, InvalidArgument, QuorumGuard};
use crate::gossip::Health;
use crate::members::{MemberInfo, NodeId};
use crate::request::{RequestId, Response};

/// What one node knows of one member of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberReport {
    /// Its name and addresses, from the replicated member table (only the id if the table
    /// has no entry).
    pub info: MemberInfo,
    /// A voter (else a learner).
    pub voter: bool,
    /// Its health in this node's gossip view (`None`: gossip has not seen it or does not run;
    /// this node itself is `Alive`).
    pub health: Option<Health>,
    /// On a leader: the highest log index known to be on that member (`None` elsewhere).
    pub matched_index: Option<u64>,
    /// On a leader: it heard from that member within the last election timeout.
    pub recently_active: Option<bool>,
    /// Milliseconds since this node last received a Raft message from that member (`None`:
    /// not since this node started, or this node itself). On a follower only the leader
    /// talks to it.
    pub last_contact_ms: Option<u64>,
}

/// One node's view of the cluster, for an operator: its own Raft numbers and what it knows of
/// every member. A whole-cluster table is built from every member's report (each knows its
/// own role, term and indexes; the leader knows every member's replication progress).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterReport {
    pub status: Status,
    /// Every member of the configuration, by id.
    pub members: Vec<MemberReport>,
}

impl Node {
    /// This node's [`ClusterReport`].
    pub fn cluster_report(&self) -> ClusterReport {
        let status = self.status();
        let leads = self.raw.raft.state == StateRole::Leader;
        let prs = self.raw.raft.prs();
        let directory = self.directory();
        let members = status
            .conf
            .all_ids()
            .into_iter()
            .map(|id| {
                let info = self
                    .sm
                    .members()
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| MemberInfo { id, ..MemberInfo::default() });
                let is_self = id == self.config.id;
                let health = if is_self {
                    Some(Health::Alive)
                } else {
                    directory.get(id).and_then(|e| e.health)
                };
                let progress = prs.get(id).filter(|_| leads);
                MemberReport {
                    info,
                    voter: status.conf.is_voter(id),
                    health,
                    matched_index: progress.map(|p| p.matched),
                    recently_active: progress.map(|p| is_self || p.recent_active),
                    last_contact_ms: if is_self {
                        None
                    } else {
                        self.membership.last_heard_ms(id).map(|at| self.now_ms.saturating_sub(at))
                    },
                }
            })
            .collect();
        ClusterReport { status, members }
    }

    /// Removes `node` on an operator's request: like [`Request::Remove`], after the
    /// strict-quorum guard unless `force`.
    ///
    /// [`Request::Remove`]: crate::Request::Remove
    pub(super) fn remove_member(&mut self, id: RequestId, node: NodeId, force: bool) {
        if !force {
            if let Err(e) = self.check_leader().and_then(|()| self.check_quorum_guard(node)) {
                self.reply(id, Err(e));
                return;
            }
        }
        // An operator's removal keeps that process out: the leader's reconciler does not add
        // it back while it gossips from the same incarnation. Automatic removals (a dead
        // member, a leave) are not remembered: a member removed while down joins again when
        // it comes back.
        let started_ms = self
            .gossip
            .as_ref()
            .and_then(|g| crate::gossip::newest(&g.members(), node).map(|m| m.id.started_ms));
        if let Some(started_ms) = started_ms {
            self.membership.remember_removal(node, started_ms);
        }
        self.remove(id, node);
    }

    /// Removing voter `node` leaves voters of which a majority is live: this leader and every
    /// voter it heard from over Raft within the last election timeout or that gossip sees up
    /// (etcd's strict
    /// reconfiguration check; the reconciler's guard for automatic removals is the same rule
    /// on its down clock).
    fn check_quorum_guard(&self, node: NodeId) -> Result<(), Error> {
        let conf = self.sm.conf();
        if !conf.is_voter(node) {
            return Ok(());
        }
        let prs = self.raw.raft.prs();
        let directory = self.directory();
        let rest: Vec<NodeId> = conf.voters.iter().copied().filter(|v| *v != node).collect();
        // raft-rs clears `recent_active` of every peer at each check-quorum round, until its
        // next answer: gossip (up = alive or suspect, as the reconciler's down clock counts it)
        // covers that gap.
        let is_live = |v: NodeId| {
            v == self.config.id
                || prs.get(v).is_some_and(|p| p.recent_active)
                || directory
                    .get(v)
                    .and_then(|e| e.health)
                    .is_some_and(|h| matches!(h, Health::Alive | Health::Suspect))
        };
        let live = rest.iter().filter(|v| is_live(**v)).count();
        if rest.is_empty() || live > rest.len() / 2 {
            Ok(())
        } else {
            Err(QuorumGuard::new(rest.len(), live).into())
        }
    }

    /// Hands leadership to voter `to` (0: the most caught-up live voter). `to` being this
    /// leader is a success with nothing to do.
    pub(super) fn transfer_leader(&mut self, id: RequestId, to: NodeId) {
        if let Err(e) = self.check_leader() {
            self.reply(id, Err(e));
            return;
        }
        let to = match to {
            0 => self.best_transferee(),
            to if to == self.config.id => {
                self.reply(id, Ok(Response::TransferStarted));
                return;
            }
            to if self.sm.conf().voters.contains(&to) => Some(to),
            _ => {
                let e = InvalidArgument::Membership("the transferee is not a voter");
                self.reply(id, Err(e.into()));
                return;
            }
        };
        match to {
            Some(to) => {
                self.raw.transfer_leader(to);
                self.reply(id, Ok(Response::TransferStarted));
            }
            None => self.reply(
                id,
                Err(InvalidArgument::Membership("no other voter to hand over to").into()),
            ),
        }
    }
}
