//! The leader's reconciler: the one next Raft configuration change that brings the
//! configuration closer to what gossip says the cluster is. Pure: the same inputs give the same
//! answer, and it is asked again every tick, so a join seen while there was no leader, or a
//! change that failed, is picked up on the next pass.
//!
//! Gossip only suggests: anyone with the cluster key can gossip any identity. A node is added
//! as a learner, and a member removed because it leaves, only on a [`Proof`] — what the node
//! said about itself over a connection authenticated by its own node certificate.
//! [`proofs_wanted`] lists what the leader should have verified next.

use std::collections::{BTreeMap, BTreeSet};

use crate::gossip::{newest, GossipId, GossipMember, Health, Proof, VerifyRequest};
use crate::members::{Conf, MemberInfo, MemberTable, NodeId};

/// What the leader should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// This leader is leaving: hand leadership over before anything else.
    TransferLeadership,
    Remove(NodeId),
    AddLearner(MemberInfo),
}

#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub self_id: NodeId,
    pub self_leaving: bool,
    pub cluster_id: u64,
    pub conf: &'a Conf,
    pub members: &'a MemberTable,
    pub gossip: &'a [GossipMember],
    /// Since when (ms) each configuration member has been down (in gossip and over Raft):
    /// members not listed are live.
    pub down_since_ms: &'a BTreeMap<NodeId, u64>,
    pub now_ms: u64,
    /// 0: down members are never removed automatically.
    pub dead_member_timeout_ms: u64,
    /// Ids removed from the configuration, with the `started_ms` of their newest gossip
    /// incarnation at the time: not added back automatically unless gossiping from a newer
    /// process.
    pub removed: &'a BTreeMap<NodeId, u64>,
    /// What nodes proved about themselves (newest per Raft id).
    pub proofs: &'a BTreeMap<NodeId, Proof>,
    /// Members that announced their leave over an authenticated rpc.
    pub leaves: &'a BTreeSet<NodeId>,
    /// The planted bug `PlantedBugs::gossip_leave_trusted` (always false outside the
    /// simulator's self-test): a gossiped leave counts as proven.
    pub gossip_leave_trusted: bool,
}

/// `p` proves gossip identity `g`: the same node, at the same address, the same process.
fn proves(p: &Proof, g: &GossipId) -> bool {
    p.name == g.name
        && p.rpc_addr == g.rpc_addr
        && p.claim.raft_id == g.raft_id
        && p.claim.started_ms == g.started_ms
}

impl Inputs<'_> {
    /// Member `id` proved (under its member-table name) that it is leaving: it said so over
    /// an authenticated rpc, or answered a verification so.
    fn proved_leaving(&self, id: NodeId) -> bool {
        let name = self.members.get(&id).map(|m| m.name.as_str());
        self.leaves.contains(&id)
            || (self.gossip_leave_trusted && newest(self.gossip, id).is_some_and(|m| m.id.leaving))
            || self
                .proofs
                .get(&id)
                .is_some_and(|p| p.claim.leaving && Some(p.name.as_str()) == name)
    }

    /// Gossip members that could join, as gossip tells: up, not leaving, data from no
    /// cluster or from ours, not a removed process.
    fn join_suggestions(&self) -> impl Iterator<Item = &GossipMember> {
        let ids = self.conf.all_ids();
        self.gossip.iter().filter(move |m| {
            m.health == Health::Alive
                && !m.id.leaving
                && m.id.raft_id != 0
                && !ids.contains(&m.id.raft_id)
                && (m.id.cluster_id == 0 || m.id.cluster_id == self.cluster_id)
                && self.removed.get(&m.id.raft_id).is_none_or(|started| m.id.started_ms > *started)
        })
    }

    /// The proof that lets suggestion `g` join: it proved this very identity, it is not
    /// leaving, its data is from no cluster or ours.
    fn join_proof(&self, g: &GossipId) -> Option<&Proof> {
        self.proofs.get(&g.raft_id).filter(|p| {
            proves(p, g)
                && !p.claim.leaving
                && (p.claim.cluster_id == 0 || p.claim.cluster_id == self.cluster_id)
        })
    }

    /// Where member `id` is known to listen: its proven address, else the member table's.
    fn known_addr(&self, id: NodeId) -> Option<String> {
        let name = &self.members.get(&id)?.name;
        self.proofs
            .get(&id)
            .filter(|p| p.name == *name)
            .map(|p| p.rpc_addr.clone())
            .or_else(|| self.members.get(&id).map(|m| m.rpc_addr.clone()))
            .filter(|a| !a.is_empty())
    }
}

/// The verifications the leader needs before it can act on what gossip suggests: a member
/// gossiping that it leaves (asked at its known address), and each node that could join
/// (asked at the address it gossips).
pub(crate) fn proofs_wanted(i: &Inputs<'_>) -> Vec<VerifyRequest> {
    let mut out = Vec::new();
    for id in i.conf.all_ids() {
        if id == i.self_id || i.proved_leaving(id) {
            continue;
        }
        if newest(i.gossip, id).is_some_and(|m| m.id.leaving) {
            if let (Some(m), Some(addr)) = (i.members.get(&id), i.known_addr(id)) {
                out.push(VerifyRequest { name: m.name.clone(), raft_id: id, rpc_addr: addr });
            }
        }
    }
    for g in i.join_suggestions() {
        if i.join_proof(&g.id).is_none() && !g.id.rpc_addr.is_empty() {
            out.push(VerifyRequest {
                name: g.id.name.clone(),
                raft_id: g.id.raft_id,
                rpc_addr: g.id.rpc_addr.clone(),
            });
        }
    }
    out
}

fn is_up(m: &GossipMember) -> bool {
    m.health != Health::Down
}

/// Removing `id` leaves a configuration whose live voters (this leader, and every voter not
/// down in its view) are a majority of it. Otherwise the removal, once committed, could leave
/// the cluster without a quorum for good: say voters {1, 2, 3} with 1 down and 3 lost (a
/// wiped disk): removing 1 leaves {2, 3}, which needs the lost 3, while {1, 2, 3} could still
/// remove 3 once 1 is back (etcd's strict reconfiguration check).
fn keeps_live_quorum(i: &Inputs<'_>, id: NodeId) -> bool {
    if !i.conf.voters.contains(&id) {
        return true;
    }
    let rest: Vec<NodeId> = i.conf.voters.iter().copied().filter(|v| *v != id).collect();
    let live = rest.iter().filter(|v| **v == i.self_id || !i.down_since_ms.contains_key(v)).count();
    !rest.is_empty() && live > rest.len() / 2
}

pub(crate) fn next_action(i: &Inputs<'_>) -> Option<Action> {
    let ids = i.conf.all_ids();
    let removable = |id: NodeId| {
        id != i.self_id
            && !(i.conf.voters.len() == 1 && i.conf.voters.contains(&id))
            && keeps_live_quorum(i, id)
    };

    // A member that proved it leaves for good is removed (whether or not it is still up);
    // gossip saying so only has it verified. A leader that leaves itself does this first: it
    // hands over only to a member that stays, so two leaving voters would otherwise wait on
    // each other for ever.
    for id in &ids {
        if i.proved_leaving(*id) && removable(*id) {
            return Some(Action::Remove(*id));
        }
    }

    if i.self_leaving && i.conf.voters.iter().any(|v| *v != i.self_id) {
        return Some(Action::TransferLeadership);
    }

    // Suggested joins, each only once the node proved it (its own certificate, at the address
    // it gossips).
    for g in i.join_suggestions() {
        let Some(proof) = i.join_proof(&g.id) else { continue };
        if i.removed.get(&g.id.raft_id).is_some_and(|started| proof.claim.started_ms <= *started) {
            continue;
        }
        let namesake =
            ids.iter().copied().find(|id| i.members.get(id).is_some_and(|m| m.name == g.id.name));
        match namesake {
            None => return Some(Action::AddLearner(g.id.member_info())),
            // A wiped node back under its old name: the old Raft id goes first, but only when
            // it is not up (two live nodes with one name is a misconfiguration, not a
            // replacement).
            Some(old) => {
                let old_up = newest(i.gossip, old).is_some_and(is_up);
                if !old_up && removable(old) {
                    return Some(Action::Remove(old));
                }
            }
        }
    }

    if i.dead_member_timeout_ms > 0 {
        for id in &ids {
            let dead = i
                .down_since_ms
                .get(id)
                .is_some_and(|since| i.now_ms.saturating_sub(*since) >= i.dead_member_timeout_ms);
            if dead && removable(*id) {
                return Some(Action::Remove(*id));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{GossipId, NodeClaim};

    /// What node `g` proves when asked: its own identity.
    fn honest(g: &GossipId) -> Proof {
        Proof {
            name: g.name.clone(),
            rpc_addr: g.rpc_addr.clone(),
            claim: NodeClaim {
                raft_id: g.raft_id,
                cluster_id: g.cluster_id,
                started_ms: g.started_ms,
                leaving: g.leaving,
                gossip_addr: g.gossip_addr.clone(),
            },
        }
    }

    fn gm(name: &str, raft_id: NodeId, health: Health) -> GossipMember {
        GossipMember {
            id: GossipId {
                gossip_addr: format!("{name}:1"),
                name: name.into(),
                raft_id,
                rpc_addr: format!("{name}:2"),
                cluster_id: 0,
                started_ms: raft_id,
                bump: 0,
                leaving: false,
            },
            health,
        }
    }

    fn conf(voters: &[NodeId], learners: &[NodeId]) -> Conf {
        Conf {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            ..Conf::default()
        }
    }

    fn table(names: &[(NodeId, &str)]) -> MemberTable {
        names.iter().map(|(id, n)| (*id, gm(n, *id, Health::Alive).id.member_info())).collect()
    }

    struct Case {
        conf: Conf,
        members: MemberTable,
        gossip: Vec<GossipMember>,
        down: BTreeMap<NodeId, u64>,
        leaving: bool,
        timeout: u64,
        removed: BTreeMap<NodeId, u64>,
        proofs: BTreeMap<NodeId, Proof>,
        leaves: BTreeSet<NodeId>,
    }

    impl Case {
        /// Every gossip member answers verification truthfully (an honest cluster).
        fn prove_all(&mut self) {
            self.proofs.clear();
            for m in &self.gossip {
                if newest(&self.gossip, m.id.raft_id) == Some(m) {
                    self.proofs.insert(m.id.raft_id, honest(&m.id));
                }
            }
        }

        fn new(voters: &[NodeId], names: &[(NodeId, &str)], gossip: Vec<GossipMember>) -> Self {
            let mut c = Self {
                conf: conf(voters, &[]),
                members: table(names),
                gossip,
                down: BTreeMap::new(),
                leaving: false,
                timeout: 0,
                removed: BTreeMap::new(),
                proofs: BTreeMap::new(),
                leaves: BTreeSet::new(),
            };
            c.prove_all();
            c
        }

        fn run(&self) -> Option<Action> {
            next_action(&Inputs {
                self_id: 1,
                self_leaving: self.leaving,
                cluster_id: 42,
                conf: &self.conf,
                members: &self.members,
                gossip: &self.gossip,
                down_since_ms: &self.down,
                now_ms: 10_000,
                dead_member_timeout_ms: self.timeout,
                removed: &self.removed,
                proofs: &self.proofs,
                leaves: &self.leaves,
                gossip_leave_trusted: false,
            })
        }

        fn wanted(&self) -> Vec<VerifyRequest> {
            proofs_wanted(&Inputs {
                self_id: 1,
                self_leaving: self.leaving,
                cluster_id: 42,
                conf: &self.conf,
                members: &self.members,
                gossip: &self.gossip,
                down_since_ms: &self.down,
                now_ms: 10_000,
                dead_member_timeout_ms: self.timeout,
                removed: &self.removed,
                proofs: &self.proofs,
                leaves: &self.leaves,
                gossip_leave_trusted: false,
            })
        }
    }

    #[test]
    fn steady_state_does_nothing() {
        let c = Case::new(&[1, 2], &[(1, "a"), (2, "b")], vec![gm("b", 2, Health::Alive)]);
        assert_eq!(c.run(), None);
    }

    #[test]
    fn new_alive_member_is_added_as_learner_but_not_a_suspect_or_foreign_one() {
        let c = Case::new(&[1], &[(1, "a")], vec![gm("b", 2, Health::Alive)]);
        assert_eq!(c.run(), Some(Action::AddLearner(gm("b", 2, Health::Alive).id.member_info())));
        let c = Case::new(&[1], &[(1, "a")], vec![gm("b", 2, Health::Suspect)]);
        assert_eq!(c.run(), None);
        let mut foreign = gm("b", 2, Health::Alive);
        foreign.id.cluster_id = 7;
        let c = Case::new(&[1], &[(1, "a")], vec![foreign]);
        assert_eq!(c.run(), None);
    }

    #[test]
    fn leaving_member_is_removed_even_once_down_and_leader_hands_over_first() {
        let mut b = gm("b", 2, Health::Down);
        b.id.leaving = true;
        let c = Case::new(&[1, 2, 3], &[(1, "a"), (2, "b"), (3, "c")], vec![b]);
        assert_eq!(c.run(), Some(Action::Remove(2)));
        let mut c = Case::new(&[1, 2], &[(1, "a"), (2, "b")], vec![gm("b", 2, Health::Alive)]);
        c.leaving = true;
        assert_eq!(c.run(), Some(Action::TransferLeadership));
        // The last voter cannot leave by handing over.
        let mut c = Case::new(&[1], &[(1, "a")], vec![]);
        c.leaving = true;
        assert_eq!(c.run(), None);
    }

    #[test]
    fn wiped_node_replaces_its_old_id_only_when_the_old_one_is_not_up() {
        let names = [(1, "a"), (2, "b"), (3, "c")];
        let c = Case::new(
            &[1, 2, 3],
            &names,
            vec![gm("b", 2, Health::Down), gm("b", 9, Health::Alive), gm("c", 3, Health::Alive)],
        );
        assert_eq!(c.run(), Some(Action::Remove(2)));
        // Old id gone: the new one joins.
        let c = Case::new(
            &[1, 3],
            &[(1, "a"), (3, "c")],
            vec![gm("b", 9, Health::Alive), gm("c", 3, Health::Alive)],
        );
        assert_eq!(c.run(), Some(Action::AddLearner(gm("b", 9, Health::Alive).id.member_info())));
        // Both up: a name conflict, left alone.
        let c = Case::new(
            &[1, 2, 3],
            &names,
            vec![gm("b", 2, Health::Alive), gm("b", 9, Health::Alive), gm("c", 3, Health::Alive)],
        );
        assert_eq!(c.run(), None);
    }

    #[test]
    fn no_removal_leaves_a_configuration_without_a_live_quorum() {
        let names = [(1, "a"), (2, "b"), (3, "c")];
        // b down past the timeout, c's disk wiped (back under a new id, 9): removing b would
        // leave {a, c} with c gone for good; removing c would leave {a, b} with b down.
        let mut c = Case::new(
            &[1, 2, 3],
            &names,
            vec![gm("b", 2, Health::Down), gm("c", 9, Health::Alive)],
        );
        c.down.insert(2, 1_000);
        c.down.insert(3, 1_000);
        c.timeout = 5_000;
        assert_eq!(c.run(), None);
        // b back: c's old id goes first, then c joins under its new one.
        c.down.remove(&2);
        c.gossip[0].health = Health::Alive;
        c.prove_all();
        assert_eq!(c.run(), Some(Action::Remove(3)));
        // A leaving voter waits too while its removal would leave no live quorum.
        let mut b = gm("b", 2, Health::Alive);
        b.id.leaving = true;
        let mut c = Case::new(&[1, 2, 3], &names, vec![b, gm("c", 3, Health::Down)]);
        c.down.insert(3, 9_000);
        assert_eq!(c.run(), None);
        c.down.clear();
        assert_eq!(c.run(), Some(Action::Remove(2)));
    }

    #[test]
    fn a_removed_id_is_added_back_only_from_a_newer_process() {
        // b (id 2, process started at 2) was removed while it ran; it still gossips alive.
        let mut c = Case::new(&[1], &[(1, "a")], vec![gm("b", 2, Health::Alive)]);
        c.removed.insert(2, 2);
        assert_eq!(c.run(), None, "the same process is not added back");
        // Restarted (newer process): added back, so that it catches up to its removal.
        c.gossip[0].id.started_ms = 3;
        c.prove_all();
        assert_eq!(c.run(), Some(Action::AddLearner(c.gossip[0].id.member_info())));
        // A wiped node under the same name has a new id: not affected.
        let mut c = Case::new(&[1], &[(1, "a")], vec![gm("b", 9, Health::Alive)]);
        c.removed.insert(2, 2);
        assert_eq!(c.run(), Some(Action::AddLearner(gm("b", 9, Health::Alive).id.member_info())));
    }

    #[test]
    fn down_member_is_removed_only_after_the_timeout_when_enabled() {
        let names = [(1, "a"), (2, "b"), (3, "c")];
        let mut c = Case::new(
            &[1, 2, 3],
            &names,
            vec![gm("b", 2, Health::Down), gm("c", 3, Health::Alive)],
        );
        c.down.insert(2, 1_000);
        assert_eq!(c.run(), None, "off by default");
        c.timeout = 60_000;
        assert_eq!(c.run(), None, "not yet");
        c.timeout = 9_000;
        assert_eq!(c.run(), Some(Action::Remove(2)));
    }

    /// A forger holding the cluster key (no certificate) gossips a newer incarnation of voter
    /// b saying it leaves: b, asked, says it does not. Nothing is removed; b is asked (at its
    /// member-table address, not one the forger chose).
    #[test]
    fn forged_leaving_of_a_voter_removes_nothing() {
        let names = [(1, "a"), (2, "b"), (3, "c")];
        let real_b = gm("b", 2, Health::Alive);
        let mut forged = real_b.clone();
        forged.id.started_ms += 1_000;
        forged.id.leaving = true;
        forged.id.gossip_addr = "forger:1".into();
        let mut c = Case::new(&[1, 2, 3], &names, vec![real_b.clone(), gm("c", 3, Health::Alive)]);
        c.gossip.push(forged);
        assert_eq!(c.run(), None);
        assert_eq!(
            c.wanted(),
            vec![VerifyRequest { name: "b".into(), raft_id: 2, rpc_addr: "b:2".into() }]
        );
        // b really leaves: it proves so, and is removed.
        let mut leaving = real_b.id.clone();
        leaving.leaving = true;
        c.proofs.insert(2, honest(&leaving));
        assert_eq!(c.run(), Some(Action::Remove(2)));
        // A proof under another name (a certificate that is not b's) proves nothing.
        c.proofs.get_mut(&2).unwrap().name = "mallory".into();
        assert_eq!(c.run(), None);
    }

    /// A forger announces new identities: none is added until it proves itself, and each is
    /// asked for at the address it gossips.
    #[test]
    fn forged_new_identities_are_not_added_without_proof() {
        let forged: Vec<GossipMember> =
            (10..15).map(|i| gm(&format!("forged{i}"), i, Health::Alive)).collect();
        let mut c = Case::new(&[1], &[(1, "a")], forged.clone());
        c.proofs.clear();
        assert_eq!(c.run(), None);
        assert_eq!(c.wanted().len(), 5);
        // Another node answering at that address (its own certificate, its own id) is no proof.
        c.proofs.insert(10, Proof { name: "forged10".into(), ..honest(&forged[1].id) });
        assert_eq!(c.run(), None);
        // A forged name of a down member: its old id is not removed on an unproven namesake.
        let names = [(1, "a"), (2, "b"), (3, "c")];
        let mut c = Case::new(
            &[1, 2, 3],
            &names,
            vec![gm("b", 2, Health::Down), gm("b", 9, Health::Alive), gm("c", 3, Health::Alive)],
        );
        c.proofs.remove(&9);
        assert_eq!(c.run(), None);
        // A proof of an older process (the node restarted since) proves nothing either.
        c.prove_all();
        c.proofs.get_mut(&9).unwrap().claim.started_ms -= 1;
        assert_eq!(c.run(), None);
    }
}
