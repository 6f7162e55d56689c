//! The gossip scenario: the cluster forms, grows, shrinks and heals through SWIM gossip (foca)
//! and the leader's reconciler rather than through operator requests, while clients run the
//! usual workload. After the faults stop and the network heals, the Raft configuration must
//! converge to what gossip says the cluster is ([`check_converged`]), and every history checker
//! must still pass.
//!
//! Faults: joins, graceful leaves, crashes, lost disks, pauses, partitions of gossip, Raft or
//! both, and, in half of the seeds, forgers ([`GossipFault::Forge`]): attackers with the gossip
//! key and no node certificate gossiping a voter leaving, a member at another address, or
//! identities nobody has. No configuration change or member address may follow them
//! ([`super::forgery`]: checked at every tick, [`Violation::ForgedMembership`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mokv_core::gossip::Health;
use mokv_core::{Config, NodeId, PlantedBugs, Rng, Role};

use super::forgery::Forgeries;
use crate::cluster::{
    gossip_addr, is_forged_addr, Cluster, GossipParams, NetFaults, Traffic, MS_PER_TICK,
};
use crate::harness::{FaultTiming, Harness, Undo};
use crate::runner::{tick, Scenario, Setup};
use crate::violation::{ConvergenceMismatch, Violation};
use crate::workload::{Phase, WorkloadKnobs};

/// Ticks after the heal within which the configuration must have converged.
pub const CONVERGE_TICKS: u64 = 3_000;
/// Ticks the cluster has to form (no faults) before the fault phase.
pub const FORM_TICKS: u64 = 1_500;

// ---------------------------------------------------------------------- convergence

/// The cluster has converged on `expected`: exactly one live leader, whose applied
/// configuration has exactly `expected` as voters (no learners, no joint state), every node
/// of `expected` is up and has applied that same configuration, and in every such node's
/// gossip view every other one (newest incarnation of its name) is alive under its current
/// Raft id, and nobody else is alive.
pub fn check_converged(
    c: &Cluster,
    expected: &BTreeSet<NodeId>,
) -> Result<(), ConvergenceMismatch> {
    let leaders: Vec<NodeId> = c
        .ids()
        .into_iter()
        .filter(|id| c.node(*id).is_some_and(|n| n.status().role == Role::Leader))
        .collect();
    let [leader] = leaders[..] else { return Err(ConvergenceMismatch::Leaders { leaders }) };
    let conf = c.node(leader).map(|n| n.status().conf).unwrap_or_default();
    if conf.voters != *expected || !conf.learners.is_empty() || !conf.voters_outgoing.is_empty() {
        return Err(ConvergenceMismatch::LeaderConf {
            leader,
            conf: Box::new(conf),
            expected: expected.clone(),
        });
    }
    for id in expected {
        let Some(n) = c.node(*id) else { return Err(ConvergenceMismatch::Down { node: *id }) };
        let st = n.status();
        if st.conf != conf {
            return Err(ConvergenceMismatch::ConfDiffers {
                node: *id,
                conf: Box::new(st.conf),
                leader_conf: Box::new(conf),
            });
        }
        for m in n.gossip_members() {
            // A forger's identities are down once it went silent, whoever they claim to be.
            let wanted = expected.contains(&m.id.raft_id)
                && m.id.raft_id != *id
                && !is_forged_addr(&m.id.gossip_addr);
            // Down identities of gone nodes may linger (foca keeps them, as down, for a day).
            if !wanted && m.health != Health::Down {
                return Err(ConvergenceMismatch::NonMemberSeen {
                    viewer: *id,
                    name: m.id.name,
                    raft_id: m.id.raft_id,
                    health: m.health,
                });
            }
        }
        for other in expected {
            if other == id {
                continue;
            }
            let name = &c.member_info(*other).name;
            // A forged newer incarnation of `other` (down) may shadow the real one in the
            // directory: gossip may suggest a member seems down. The real one must be alive.
            let seen =
                if c.has_forgers() { c.real_health_of(*id, name) } else { c.health_of(*id, name) };
            match seen {
                Some((rid, Health::Alive)) if rid == *other => {}
                seen => {
                    return Err(ConvergenceMismatch::MemberNotAlive {
                        viewer: *id,
                        name: name.clone(),
                        member: *other,
                        seen,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Steps until [`check_converged`] holds (checked before each step): the ticks it took, or the
/// last mismatch if `max_ticks` run out.
pub fn wait_converged(
    c: &mut Cluster,
    expected: &BTreeSet<NodeId>,
    max_ticks: u64,
) -> Result<u64, ConvergenceMismatch> {
    let start = c.now();
    c.run_until(max_ticks, |c| check_converged(c, expected).is_ok());
    check_converged(c, expected).map(|()| c.now() - start)
}

// ---------------------------------------------------------------------- the plan

/// One kind of scheduled fault of a gossip run. Each seed enables a random subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GossipFault {
    /// A fresh empty node joins through gossip seeds.
    Join,
    /// A node leaves gracefully (leave, wait for removal, stop gossip, exit).
    Leave,
    /// A node crashes and is restarted later from its disk.
    Crash,
    /// A node loses its disk and comes back under a new Raft id (same name and address).
    Wipe,
    /// A node is paused for longer than the election timeout.
    Pause,
    /// One node, or half the cluster, is cut off: gossip only, Raft only, or everything.
    PartitionGossip,
    PartitionRaft,
    PartitionAll,
    /// A forger (gossip key, no node certificate) gossips a forged identity for a while
    /// ([`super::forgery`]). Enabled in half of the seeds, drawn from a stream of its own so
    /// that the other faults of a seed are drawn as without it.
    Forge,
}

/// The faults [`GossipPlan::draw`] draws from ([`GossipFault::Forge`] is drawn apart).
pub const ALL_GOSSIP_FAULTS: [GossipFault; 8] = [
    GossipFault::Join,
    GossipFault::Leave,
    GossipFault::Crash,
    GossipFault::Wipe,
    GossipFault::Pause,
    GossipFault::PartitionGossip,
    GossipFault::PartitionRaft,
    GossipFault::PartitionAll,
];

/// Everything one gossip run is drawn from.
#[derive(Debug, Clone)]
pub struct GossipPlan {
    /// Nodes at formation (node 1 bootstraps, the others join through gossip).
    pub initial: u64,
    /// Ticks between the starts of the initial joiners (their seeds may start after them).
    pub stagger_ticks: u64,
    pub params: GossipParams,
    pub net: NetFaults,
    pub persist_delay_ticks: u64,
    pub snapshot_threshold_entries: u64,
    pub log_keep_entries: u64,
    pub kinds: Vec<GossipFault>,
    pub fault_ticks: u64,
    pub mean_gap_ticks: u64,
    pub max_outage_ticks: u64,
    pub clients: u64,
    pub reply_loss_permille: u64,
    pub follower_read_permille: u64,
    pub client_timeout_ticks: u64,
    /// `Config::dead_member_timeout_ms` (0: off). A node removed by it that comes back
    /// gossips itself as leaving; the operator then wipes it and it rejoins under a new id.
    pub dead_member_timeout_ms: u64,
    /// `Config::max_in_memory_log_bytes` when small ([`super::small_log_budget`], not drawn
    /// from the plan's stream); `None`: the default.
    pub max_in_memory_log_bytes: Option<u64>,
}

impl GossipPlan {
    pub fn draw(rng: &mut Rng) -> Self {
        let mut kinds: Vec<GossipFault> =
            ALL_GOSSIP_FAULTS.iter().copied().filter(|_| rng.below(100) < 55).collect();
        if kinds.is_empty() {
            kinds.push(ALL_GOSSIP_FAULTS[rng.below(ALL_GOSSIP_FAULTS.len() as u64) as usize]);
        }
        let loss = match rng.below(4) {
            0 => 0,
            1 => rng.below(5),
            2 => rng.below(15),
            _ => rng.below(25),
        };
        let params = if rng.below(2) == 0 {
            GossipParams::default()
        } else {
            let probe = 300 + 100 * rng.below(8);
            GossipParams {
                probe_period_ms: probe,
                probe_rtt_ms: (probe / 2).max(200),
                suspect_to_down_ms: 1_000 + 500 * rng.below(8),
                cluster_size_hint: 5,
            }
        };
        GossipPlan {
            initial: 3 + rng.below(3),
            stagger_ticks: rng.below(30),
            params,
            net: NetFaults {
                loss_percent: loss,
                duplicate_percent: if rng.below(2) == 0 { 0 } else { rng.below(20) },
                delay_ticks_max: match rng.below(3) {
                    0 => 0,
                    1 => 1 + rng.below(3),
                    _ => 1 + rng.below(10),
                },
            },
            persist_delay_ticks: if rng.below(4) == 0 { 0 } else { 1 + rng.below(6) },
            snapshot_threshold_entries: 5 + rng.below(60),
            log_keep_entries: rng.below(10),
            kinds,
            fault_ticks: 500 + rng.below(700),
            mean_gap_ticks: 30 + rng.below(100),
            max_outage_ticks: 30 + rng.below(200),
            clients: 2 + rng.below(3),
            reply_loss_permille: if rng.below(2) == 0 { 0 } else { rng.below(250) },
            follower_read_permille: rng.below(700),
            client_timeout_ticks: 15 + rng.below(80),
            dead_member_timeout_ms: if rng.below(2) == 0 {
                0
            } else {
                4_000 + 1_000 * rng.below(12)
            },
            max_in_memory_log_bytes: None,
        }
    }
}

/// Where a graceful leave is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// `handle_leave` called at this tick; waiting for the removal.
    Asked(u64),
    /// Removed; gossip stopped at this tick, the process exits soon.
    Stopped(u64),
}

/// Ticks a leaving node keeps gossiping after its removal before its process exits.
const STOP_TO_EXIT_TICKS: u64 = 20;

/// Ticks the cluster runs after the heal before islands are looked for.
const RESEED_AFTER_TICKS: u64 = 100;

// ---------------------------------------------------------------------- the scenario

/// The gossip swarm (see the module doc).
#[derive(Debug)]
pub struct GossipScenario {
    plan: GossipPlan,
    /// The Raft id the next new node (joined or wiped) gets.
    next_id: NodeId,
    leaving: BTreeMap<NodeId, Leaving>,
    /// Raft ids whose node was wiped, until the leader's configuration no longer has them.
    wiped: BTreeSet<NodeId>,
    /// With [`GossipFault::Forge`] on: the forgers and the check that nothing follows them.
    forgeries: Option<Forgeries>,
}

/// Salt of the stream [`GossipFault::Forge`] is drawn from.
const FORGE_SALT: u64 = 0xf0f9_e500_f0f9_e500;

/// Whether gossip seed `seed` runs forgers ([`GossipFault::Forge`]): half of the seeds.
pub fn forging(seed: u64) -> bool {
    Rng::new(seed ^ FORGE_SALT).below(2) == 0
}

impl Scenario for GossipScenario {
    type Fault = GossipFault;
    const RNG_SALT: u64 = 0x6055_1900_6055_1900;
    const CONVERGE_TICKS: u64 = CONVERGE_TICKS;
    const REPLAY_TEST: &'static str = "--test gossip replay";

    fn draw(seed: u64, bugs: PlantedBugs, rng: &mut Rng) -> (Self, Setup) {
        let mut plan = GossipPlan::draw(rng);
        plan.max_in_memory_log_bytes = super::small_log_budget(seed);
        let forging = forging(seed);
        if forging {
            plan.kinds.push(GossipFault::Forge);
        }
        let mut base = Config::new(1, 0);
        base.snapshot_threshold_entries = plan.snapshot_threshold_entries;
        base.log_keep_entries = plan.log_keep_entries;
        base.dead_member_timeout_ms = plan.dead_member_timeout_ms;
        super::apply_log_budget(plan.max_in_memory_log_bytes, &mut base);
        base.planted_bugs = bugs;
        let request_timeout_ticks = base.request_timeout_ticks;
        let setup = Setup {
            cluster: Cluster::with_gossip(seed, base, plan.params),
            clients: plan.clients,
            knobs: WorkloadKnobs {
                reply_loss_permille: plan.reply_loss_permille,
                follower_read_permille: plan.follower_read_permille,
                client_timeout_ticks: plan.client_timeout_ticks,
                trace: false,
                coordination_ops: true,
            },
            timing: FaultTiming {
                fault_ticks: plan.fault_ticks,
                mean_gap_ticks: plan.mean_gap_ticks,
                max_outage_ticks: plan.max_outage_ticks,
            },
            request_timeout_ticks,
        };
        let next_id = plan.initial + 1;
        let forgeries = forging.then(Forgeries::default);
        let s = GossipScenario {
            plan,
            next_id,
            leaving: BTreeMap::new(),
            wiped: BTreeSet::new(),
            forgeries,
        };
        (s, setup)
    }

    fn plan(&self) -> &dyn fmt::Debug {
        &self.plan
    }

    fn faults(&self) -> &[GossipFault] {
        &self.plan.kinds
    }

    /// Every node that exists (leaving ones until they exit).
    fn nodes(&self, c: &Cluster) -> Vec<NodeId> {
        c.ids()
    }

    /// Node 1 bootstraps; the others join through one or two seeds each. The first seed of
    /// each is a node before it in a random order that starts with node 1 (so every node
    /// reaches node 1 through seeds), while nodes start in id order: some seeds start after
    /// the node that names them. The plan's network faults start once the cluster formed.
    fn form(&mut self, h: &mut Harness) -> Result<(), Violation> {
        let initial: Vec<NodeId> = (1..=self.plan.initial).collect();
        let mut order = vec![1];
        order.extend(h.shuffled(initial[1..].to_vec()));
        let mut starts = BTreeMap::new();
        for (pos, id) in order.iter().copied().enumerate().skip(1) {
            let mut seeds = vec![gossip_addr(h.random_of(&order[..pos]).unwrap_or(1))];
            if h.rng.below(2) == 0 {
                let others: Vec<NodeId> = initial.iter().copied().filter(|o| *o != id).collect();
                seeds.push(gossip_addr(h.random_of(&others).unwrap_or(1)));
            }
            seeds.dedup();
            starts.insert((h.c.now() + (id - 2) * self.plan.stagger_ticks, id), seeds);
        }
        for ((at, id), seeds) in starts {
            while h.c.now() < at {
                h.c.step();
            }
            h.note(format!("n{id} joins with seeds {seeds:?}"));
            h.c.join(id, seeds);
        }
        let expected: BTreeSet<NodeId> = initial.into_iter().collect();
        let ticks = wait_converged(&mut h.c, &expected, FORM_TICKS)
            .map_err(|mismatch| Violation::Formation { ticks: FORM_TICKS, mismatch })?;
        h.note(format!("formed in {ticks} ticks"));
        h.c.net = self.plan.net;
        h.c.persist_delay_ticks = self.plan.persist_delay_ticks;
        Ok(())
    }

    fn inject(&mut self, kind: GossipFault, h: &mut Harness) {
        let staying = self.staying(&h.c);
        let up: Vec<NodeId> =
            staying.iter().copied().filter(|id| h.c.is_up(*id) && !h.c.is_paused(*id)).collect();
        // Voters that stay: one that gossips itself as leaving (it applied its own removal,
        // and was added back before the leader heard) is about to be removed again.
        let voters = h.c.leader().and_then(|l| h.c.node(l)).map_or(0, |n| {
            n.status()
                .conf
                .voters
                .iter()
                .filter(|id| {
                    !h.c.node(**id).and_then(|v| v.gossip_identity()).is_some_and(|g| g.leaving)
                })
                .count()
        });
        match kind {
            GossipFault::Join => {
                if staying.len() >= 6 {
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let mut seeds = Vec::new();
                for _ in 0..1 + h.rng.below(2) {
                    if let Some(s) = h.random_of(&staying) {
                        let addr =
                            h.c.gossip_slot(s).map_or_else(|| gossip_addr(s), |g| g.addr.clone());
                        seeds.push(addr);
                    }
                }
                seeds.dedup();
                h.note(format!("n{id} joins with seeds {seeds:?}"));
                h.c.join(id, seeds);
                h.count("join");
            }
            GossipFault::Leave => {
                // Keep three staying nodes, one leave at a time, never while a wiped node's
                // old id is still a voter (its quorum might then be lost for good).
                if staying.len() <= 3 || !self.leaving.is_empty() || !self.wiped.is_empty() {
                    return;
                }
                // Nodes the leader's gossip knows (one that just started may be known only by
                // a datagram still in flight; see `poll_leaving`).
                let Some(leader) = h.c.leader() else { return };
                let view = h.c.gossip_members(leader);
                let known: Vec<NodeId> = up
                    .iter()
                    .copied()
                    .filter(|id| {
                        *id == leader
                            || view
                                .iter()
                                .any(|m| m.id.raft_id == *id && !is_forged_addr(&m.id.gossip_addr))
                    })
                    .collect();
                let target = if h.rng.below(3) == 0 && up.contains(&leader) {
                    Some(leader)
                } else {
                    h.random_of(&known)
                };
                if let Some(id) = target {
                    h.note(format!("n{id} leaves"));
                    h.c.leave(id);
                    self.leaving.insert(id, Leaving::Asked(h.c.now()));
                    if let Some(f) = &mut self.forgeries {
                        f.note_leave(id);
                    }
                    h.count(if Some(id) == h.c.leader() { "leave (leader)" } else { "leave" });
                }
            }
            GossipFault::Crash => {
                let target = match h.c.leader() {
                    Some(l) if h.rng.below(2) == 0 && up.contains(&l) => Some(l),
                    _ => h.random_of(&up),
                };
                if let Some(id) = target {
                    h.note(format!("crash n{id}"));
                    h.c.crash(id);
                    h.count("crash");
                    let mut d = h.outage();
                    if self.plan.dead_member_timeout_ms > 0 && h.rng.below(2) == 0 {
                        // Down for longer than the dead-member timeout (plus detection).
                        d += self.plan.dead_member_timeout_ms / MS_PER_TICK + 100;
                    }
                    h.schedule_undo(d, Undo::Restart(id));
                }
            }
            GossipFault::Wipe => {
                // One lost disk at a time, in a cluster of three voters or more, and not while
                // a node is leaving: the old id's removal needs the others' quorum.
                if voters < 3 || !self.wiped.is_empty() || !self.leaving.is_empty() {
                    return;
                }
                // With the dead-member timeout on, only while every other node is up and
                // reachable: a lost disk while another voter is out is two failures, and the
                // timeout may then commit the other's removal (proposed while the wiped one
                // still counted) and leave a configuration that needs the lost disk.
                let all_up = h.c.ids().iter().all(|id| h.c.is_up(*id) && !h.c.is_paused(*id));
                let partitioned = h.undo.contains(Undo::Heal);
                // Nor while the leader may still act on an earlier outage: it has a change in
                // flight, or sees a voter as not alive (it may be about to remove it as dead,
                // counting the disk about to be lost as live).
                let leader_settled = settled_leader_conf_ids(&h.c).is_some()
                    && h.c.leader().is_some_and(|l| {
                        let view = h.c.gossip_members(l);
                        h.c.node(l).is_some_and(|n| {
                            n.status().conf.voters.iter().all(|v| {
                                *v == l
                                    || view
                                        .iter()
                                        .any(|m| m.id.raft_id == *v && m.health == Health::Alive)
                            })
                        })
                    });
                if self.plan.dead_member_timeout_ms > 0
                    && (!all_up || partitioned || !leader_settled)
                {
                    return;
                }
                // Nor before every voter has applied the leader's configuration: raft-rs
                // campaigns with the applied one, so a voter still on the previous one (the
                // change committed by the leader and the lost disk alone) would need the lost
                // disk's vote — two failures for that configuration.
                if !voters_agree_on_conf(&h.c) {
                    return;
                }
                let Some(old) = h.random_of(&staying) else { return };
                let new = self.next_id;
                self.next_id += 1;
                h.note(format!("wipe n{old}: back as n{new}"));
                h.c.wipe(old, new);
                self.wiped.insert(old);
                if let Some(f) = &mut self.forgeries {
                    f.note_wipe(old);
                }
                h.count("wipe");
            }
            GossipFault::Pause => {
                if let Some(id) = h.random_of(&up) {
                    h.note(format!("pause n{id}"));
                    h.c.pause(id);
                    h.count("pause");
                    let d = 25 + h.rng.below(80);
                    h.schedule_undo(d, Undo::Resume(id));
                }
            }
            GossipFault::PartitionGossip
            | GossipFault::PartitionRaft
            | GossipFault::PartitionAll => {
                let traffic = match kind {
                    GossipFault::PartitionGossip => Traffic::Gossip,
                    GossipFault::PartitionRaft => Traffic::Raft,
                    _ => Traffic::All,
                };
                h.count(match traffic {
                    Traffic::Gossip => "partition (gossip)",
                    Traffic::Raft => "partition (raft)",
                    Traffic::All => "partition (all)",
                });
                let all = h.c.ids();
                if h.rng.below(2) == 0 {
                    let target = match h.c.leader() {
                        Some(l) if h.rng.below(2) == 0 => Some(l),
                        _ => h.random_of(&all),
                    };
                    if let Some(id) = target {
                        h.note(format!("isolate n{id} ({traffic:?})"));
                        h.c.isolate_traffic(id, traffic);
                    }
                } else {
                    let shuffled = h.shuffled(all);
                    let (a, b) = shuffled.split_at(shuffled.len() / 2);
                    h.note(format!("split {a:?} | {b:?} ({traffic:?})"));
                    h.c.split(a, b, traffic);
                }
                let d = h.outage();
                h.schedule_undo(d, Undo::Heal);
            }
            GossipFault::Forge => {
                if let Some(f) = &mut self.forgeries {
                    f.inject(h, &staying);
                }
            }
        }
    }

    /// The operator of a gossiping cluster: leaving nodes stop and exit once removed, nodes
    /// removed as dead are wiped and rejoin, and a wiped id is forgotten once the leader's
    /// configuration no longer has it.
    fn operate(&mut self, h: &mut Harness, _nodes: &[NodeId]) {
        if let Some(f) = &mut self.forgeries {
            f.stop_due(h, false);
            if let Some(v) = f.check(&h.c, self.plan.dead_member_timeout_ms) {
                h.note(format!("{v}"));
                h.observer.violations.push(v);
            }
        }
        self.poll_leaving(h);
        self.reprovision_removed(h);
        if let Some(ids) = leader_conf_ids(&h.c) {
            self.wiped.retain(|w| ids.contains(w));
        }
    }

    /// A node that joined through seeds which all left for good before it reached them (or
    /// only through nodes in the same position) forms a gossip group of its own: discovery
    /// by seed address cannot do better. After the heal the operator gives every node that
    /// knows no member of the configuration the leader's address as a seed, and restarts it.
    fn after_heal(&mut self, h: &mut Harness) {
        if let Some(f) = &mut self.forgeries {
            f.stop_due(h, true);
        }
        for _ in 0..RESEED_AFTER_TICKS {
            tick(h, self, Phase::Drain);
        }
        let Some(leader) = h.c.leader() else { return };
        let Some(conf) = leader_conf_ids(&h.c) else { return };
        let Some(addr) = h.c.gossip_slot(leader).map(|g| g.addr.clone()) else { return };
        for id in h.c.ids() {
            if conf.contains(&id) || self.leaving.contains_key(&id) {
                continue;
            }
            let knows_member =
                h.c.gossip_members(id)
                    .iter()
                    .any(|m| conf.contains(&m.id.raft_id) && !is_forged_addr(&m.id.gossip_addr));
            if !knows_member {
                h.note(format!("n{id} knows no member: reseeded with the leader's address"));
                h.count("island reseeded");
                let mut seeds = h.c.gossip_slot(id).map(|g| g.seeds.clone()).unwrap_or_default();
                seeds.push(addr.clone());
                h.c.reseed(id, seeds);
            }
        }
    }

    /// Leaving nodes gone, everyone else a voter, gossip agreeing ([`check_converged`]).
    fn converged(&self, h: &Harness) -> Result<(), ConvergenceMismatch> {
        if !self.leaving.is_empty() {
            return Err(ConvergenceMismatch::StillLeaving {
                nodes: self.leaving.keys().copied().collect(),
            });
        }
        let expected: BTreeSet<NodeId> = h.c.ids().into_iter().collect();
        check_converged(&h.c, &expected)
    }
}

/// The leader's configuration (voters and learners).
fn leader_conf_ids(c: &Cluster) -> Option<BTreeSet<NodeId>> {
    let l = c.leader()?;
    c.node(l).map(|n| n.status().conf.all_ids())
}

/// The leader's configuration, only when its log holds nothing unapplied (no conf change
/// in flight that could still add a node it does not list).
fn settled_leader_conf_ids(c: &Cluster) -> Option<BTreeSet<NodeId>> {
    let l = c.leader()?;
    let st = c.node(l)?.status();
    (st.applied_index == st.last_index).then(|| st.conf.all_ids())
}

/// Whether every voter of the leader's configuration has applied that same configuration.
fn voters_agree_on_conf(c: &Cluster) -> bool {
    let Some(conf) = c.leader().and_then(|l| c.node(l)).map(|n| n.status().conf) else {
        return false;
    };
    conf.voters.iter().all(|v| c.node(*v).is_some_and(|n| n.status().conf == conf))
}

impl GossipScenario {
    /// Nodes that are, or are becoming, members: present and not leaving.
    fn staying(&self, c: &Cluster) -> Vec<NodeId> {
        c.ids().into_iter().filter(|id| !self.leaving.contains_key(id)).collect()
    }

    /// Leaving nodes: stop gossip once the leader has removed them (and has no change in
    /// flight that could still add one: a node that joined and left at once may be added after
    /// it looked removed, and, gone from gossip, would stay a learner), then exit.
    fn poll_leaving(&mut self, h: &mut Harness) {
        let now = h.c.now();
        let conf = settled_leader_conf_ids(&h.c);
        let entries: Vec<(NodeId, Leaving)> = self.leaving.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, state) in entries {
            match state {
                Leaving::Asked(at) => {
                    // A forger's newer incarnation of the node can hide its gossiped leave
                    // from the leader; the shell's `Peer.Leave` calls carry it regardless. Only
                    // in runs with forgers: the others replay as they were recorded.
                    let still_member =
                        h.c.node(id).is_some_and(|n| n.status().conf.all_ids().contains(&id));
                    if self.forgeries.is_some() && still_member && (now - at).is_multiple_of(5) {
                        h.c.announce_leave(id);
                    }
                    // Removed, and the leader knows it is leaving: a node that stops before its
                    // leave reached the leader may still be added by a change already on its
                    // way (or by a datagram still in flight announcing it), and would then stay
                    // a learner, down, and not leaving as far as anyone knows.
                    let known_leaving = h.c.leader().is_some_and(|l| {
                        h.c.gossip_members(l).iter().any(|m| {
                            m.id.raft_id == id && m.id.leaving && !is_forged_addr(&m.id.gossip_addr)
                        })
                    });
                    let removed =
                        known_leaving && conf.as_ref().is_some_and(|ids| !ids.contains(&id));
                    if removed && !h.c.is_paused(id) && h.c.is_up(id) {
                        h.note(format!("n{id} stops gossip, removed after {} ticks", now - at));
                        h.c.gossip_stop(id);
                        self.leaving.insert(id, Leaving::Stopped(now));
                    }
                }
                Leaving::Stopped(at) => {
                    if now - at >= STOP_TO_EXIT_TICKS {
                        h.note(format!("n{id} exits"));
                        h.c.destroy(id);
                        self.leaving.remove(&id);
                    }
                }
            }
        }
    }

    /// A node that gossips itself as leaving without having been asked to leave was removed
    /// (by the dead-member timeout, while it was down or cut off) and applied its removal: the
    /// operator wipes it and it rejoins under a new Raft id.
    fn reprovision_removed(&mut self, h: &mut Harness) {
        for id in h.c.ids() {
            if self.leaving.contains_key(&id) || h.c.is_paused(id) {
                continue;
            }
            let removed = h.c.node(id).and_then(|n| n.gossip_identity()).is_some_and(|g| g.leaving);
            // Only once the leader has applied its removal: a node that applied its own removal
            // may be the only one, with the leader gone, that knows the removal committed;
            // wiping it (and a second one) then would leave the others, whose configuration
            // still counts them, without a quorum.
            let out = settled_leader_conf_ids(&h.c).is_some_and(|ids| !ids.contains(&id));
            if !removed || !out {
                continue;
            }
            let new = self.next_id;
            self.next_id += 1;
            h.note(format!("n{id} was removed: wiped, back as n{new}"));
            h.c.wipe(id, new);
            if let Some(f) = &mut self.forgeries {
                f.note_wipe(id);
            }
            h.count("removed as dead, wiped, rejoined");
        }
    }
}
