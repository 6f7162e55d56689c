//! The swarm scenario: a cluster formed through operator requests suffers every network and
//! process fault (partitions of all kinds, one-way cuts, crashes losing unsynced writes, power
//! loss, pauses) while an operator changes its membership through requests.
//!
//! Each seed draws its own plan ([`FaultPlan`]): which faults, how often, how lossy the network,
//! so over many seeds rare combinations are tried without every run being a uniform soup of
//! everything.

use std::fmt;

use mokv_core::{Config, NodeId, PlantedBugs, Rng};

use crate::cluster::{Cluster, NetFaults};
use crate::harness::{FaultTiming, Harness, Undo};
use crate::runner::{Scenario, Setup};
use crate::violation::Violation;
use crate::workload::{Admin, Change, WorkloadKnobs};

/// One kind of scheduled fault. Each seed enables a random subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut every link of one node.
    Isolate,
    /// Split the nodes into two halves.
    SplitHalves,
    /// Each node on a random side.
    RandomSplit,
    /// One-way cuts of a few random directed links.
    OneWay,
    /// Crash one node (restarted later from its disk).
    Crash,
    /// Crash a majority or all nodes at once (power loss), restarted later.
    CrashMany,
    /// Pause one node for longer than the election timeout.
    Pause,
    /// Add a learner (auto-promoted), remove a voter, remove the leader, or replace a node.
    Membership,
}

pub const ALL_KINDS: [FaultKind; 8] = [
    FaultKind::Isolate,
    FaultKind::SplitHalves,
    FaultKind::RandomSplit,
    FaultKind::OneWay,
    FaultKind::Crash,
    FaultKind::CrashMany,
    FaultKind::Pause,
    FaultKind::Membership,
];

/// Everything one run's faults are drawn from.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub voters: u64,
    pub net: NetFaults,
    pub persist_delay_ticks: u64,
    pub snapshot_threshold_entries: u64,
    pub log_keep_entries: u64,
    pub kinds: Vec<FaultKind>,
    /// Ticks of the fault phase (workload runs, faults fire).
    pub fault_ticks: u64,
    /// Mean gap between fault events.
    pub mean_gap_ticks: u64,
    /// Ticks a crashed node stays down / a partition lasts, at most.
    pub max_outage_ticks: u64,
    /// Per-mille of successful write replies the client "does not receive" (it then retries
    /// the same session seq after its timeout).
    pub reply_loss_permille: u64,
    pub clients: u64,
    /// Per-mille of linearizable reads sent to a random node instead of the known leader.
    pub follower_read_permille: u64,
    /// Client-side timeout of one attempt, in ticks.
    pub client_timeout_ticks: u64,
    /// `Config::max_in_memory_log_bytes` when small ([`super::small_log_budget`], not drawn
    /// from the plan's stream); `None`: the default.
    pub max_in_memory_log_bytes: Option<u64>,
}

impl FaultPlan {
    /// Draws a plan from the run's RNG.
    pub fn draw(rng: &mut Rng) -> Self {
        let voters = 3 + rng.below(3);
        let loss = match rng.below(4) {
            0 => 0,
            1 => rng.below(5),
            2 => rng.below(15),
            _ => rng.below(31),
        };
        let net = NetFaults {
            loss_percent: loss,
            duplicate_percent: if rng.below(2) == 0 { 0 } else { rng.below(20) },
            delay_ticks_max: match rng.below(3) {
                0 => 0,
                1 => 1 + rng.below(3),
                _ => 1 + rng.below(15),
            },
        };
        let persist_delay_ticks = if rng.below(4) == 0 { 0 } else { 1 + rng.below(6) };
        let mut kinds: Vec<FaultKind> =
            ALL_KINDS.iter().copied().filter(|_| rng.below(100) < 55).collect();
        if kinds.is_empty() {
            kinds.push(ALL_KINDS[rng.below(ALL_KINDS.len() as u64) as usize]);
        }
        FaultPlan {
            voters,
            net,
            persist_delay_ticks,
            snapshot_threshold_entries: 5 + rng.below(60),
            log_keep_entries: rng.below(10),
            kinds,
            fault_ticks: 600 + rng.below(900),
            mean_gap_ticks: 20 + rng.below(120),
            max_outage_ticks: 30 + rng.below(250),
            reply_loss_permille: if rng.below(2) == 0 { 0 } else { rng.below(250) },
            clients: 3 + rng.below(3),
            follower_read_permille: rng.below(700),
            client_timeout_ticks: 15 + rng.below(80),
            max_in_memory_log_bytes: None,
        }
    }

    /// Applies the plan's config tweaks (small snapshot thresholds) to the base config.
    pub fn tweak(&self, c: &mut Config) {
        c.snapshot_threshold_entries = self.snapshot_threshold_entries;
        c.log_keep_entries = self.log_keep_entries;
        // A short watch history (not drawn: the plan's draws stay as they were), so watchers
        // page through evictions and get `Compacted` after failovers.
        c.watch_history = mokv_core::HistoryLimits { max_bytes: 8 << 10, max_revisions: 80 };
    }
}

/// The operator-driven swarm (see the module doc).
#[derive(Debug)]
pub struct FaultScenario {
    plan: FaultPlan,
    /// The operator: membership changes one at a time, and the nodes it shut down.
    admin: Admin,
    /// The id the next added node gets.
    next_node_id: NodeId,
}

impl Scenario for FaultScenario {
    type Fault = FaultKind;
    const RNG_SALT: u64 = 0x5eed_5eed_5eed_5eed;
    /// Nothing to converge on beyond liveness: the operator's changes finish or are abandoned.
    const CONVERGE_TICKS: u64 = 0;
    const REPLAY_TEST: &'static str = "replay";

    fn draw(seed: u64, bugs: PlantedBugs, rng: &mut Rng) -> (Self, Setup) {
        let mut plan = FaultPlan::draw(rng);
        plan.max_in_memory_log_bytes = super::small_log_budget(seed);
        let mut base = Config::new(1, 0);
        plan.tweak(&mut base);
        super::apply_log_budget(plan.max_in_memory_log_bytes, &mut base);
        base.planted_bugs = bugs;
        let request_timeout_ticks = base.request_timeout_ticks;
        let mut cluster = Cluster::form_with_config(seed, plan.voters, base);
        cluster.net = plan.net;
        cluster.persist_delay_ticks = plan.persist_delay_ticks;
        let setup = Setup {
            cluster,
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
        let next_node_id = plan.voters + 1;
        (FaultScenario { plan, admin: Admin::default(), next_node_id }, setup)
    }

    fn plan(&self) -> &dyn fmt::Debug {
        &self.plan
    }

    fn faults(&self) -> &[FaultKind] {
        &self.plan.kinds
    }

    /// Every node the operator has not retired.
    fn nodes(&self, c: &Cluster) -> Vec<NodeId> {
        c.ids().into_iter().filter(|id| !self.admin.retired.contains(id)).collect()
    }

    /// The cluster was formed when it was built.
    fn form(&mut self, _h: &mut Harness) -> Result<(), Violation> {
        Ok(())
    }

    fn inject(&mut self, kind: FaultKind, h: &mut Harness) {
        let nodes = self.nodes(&h.c);
        let up: Vec<NodeId> =
            nodes.iter().copied().filter(|id| h.c.is_up(*id) && !h.c.is_paused(*id)).collect();
        match kind {
            FaultKind::Isolate => {
                // Prefer the leader half the time: that is where it hurts.
                let target = match h.c.leader() {
                    Some(l) if h.rng.below(2) == 0 => Some(l),
                    _ => h.random_of(&nodes),
                };
                if let Some(id) = target {
                    h.note(format!("isolate n{id}"));
                    h.c.isolate(id);
                    let d = h.outage();
                    h.schedule_undo(d, Undo::Heal);
                }
            }
            FaultKind::SplitHalves | FaultKind::RandomSplit => {
                let mut side_a = Vec::new();
                let mut side_b = Vec::new();
                let shuffled = h.shuffled(nodes.clone());
                for (i, id) in shuffled.iter().enumerate() {
                    let a = if kind == FaultKind::SplitHalves {
                        i < shuffled.len() / 2
                    } else {
                        h.rng.below(2) == 0
                    };
                    if a {
                        side_a.push(*id);
                    } else {
                        side_b.push(*id);
                    }
                }
                h.note(format!("split {side_a:?} | {side_b:?}"));
                for a in &side_a {
                    for b in &side_b {
                        h.c.block(*a, *b);
                        h.c.block(*b, *a);
                    }
                }
                let d = h.outage();
                h.schedule_undo(d, Undo::Heal);
            }
            FaultKind::OneWay => {
                let links = 1 + h.rng.below(3);
                for _ in 0..links {
                    let (Some(a), Some(b)) = (h.random_of(&nodes), h.random_of(&nodes)) else {
                        continue;
                    };
                    if a != b {
                        h.note(format!("block n{a} -> n{b}"));
                        h.c.block(a, b);
                    }
                }
                let d = h.outage();
                h.schedule_undo(d, Undo::Heal);
            }
            FaultKind::Crash => {
                let target = match h.c.leader() {
                    Some(l) if h.rng.below(2) == 0 => Some(l),
                    _ => h.random_of(&up),
                };
                if let Some(id) = target {
                    h.note(format!("crash n{id}"));
                    h.c.crash(id);
                    let d = h.outage();
                    h.schedule_undo(d, Undo::Restart(id));
                }
            }
            FaultKind::CrashMany => {
                let all = h.rng.below(2) == 0;
                let count = if all { up.len() } else { up.len() / 2 + 1 };
                let mut victims = h.shuffled(up.clone());
                victims.truncate(count);
                h.note(format!("crash {victims:?}"));
                for id in victims {
                    h.c.crash(id);
                    let d = 1 + h.rng.below(40);
                    h.schedule_undo(d, Undo::Restart(id));
                }
            }
            FaultKind::Pause => {
                let target = match h.c.leader() {
                    Some(l) if h.rng.below(2) == 0 => Some(l),
                    _ => h.random_of(&up),
                };
                if let Some(id) = target {
                    h.note(format!("pause n{id}"));
                    h.c.pause(id);
                    // Longer than the election timeout (10 + jitter < 20 ticks).
                    let d = 25 + h.rng.below(80);
                    h.schedule_undo(d, Undo::Resume(id));
                }
            }
            FaultKind::Membership => self.membership(h),
        }
    }

    fn operate(&mut self, h: &mut Harness, nodes: &[NodeId]) {
        self.admin.poll(&mut h.c, &mut h.rng, nodes);
    }

    /// A node the operator retired stays down.
    fn may_restart(&self, id: NodeId) -> bool {
        !self.admin.retired.contains(&id)
    }

    fn print_trace(&self) {
        for (t, s) in &self.admin.log {
            println!("t={t} admin {s}");
        }
    }
}

impl FaultScenario {
    /// Queues one membership change for the operator: add a node, remove a follower, remove
    /// the leader, or replace a node; nothing while a change is under way.
    fn membership(&mut self, h: &mut Harness) {
        if self.admin.busy() {
            return;
        }
        let Some(leader) = h.c.leader() else { return };
        let Some(conf) = h.c.node(leader).map(|n| n.status().conf) else { return };
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let members = conf.all_ids().len();
        let followers: Vec<NodeId> = voters.iter().copied().filter(|v| *v != leader).collect();
        let choice = h.rng.below(4);
        let change = match choice {
            0 if members < 5 => vec![Change::Add(self.fresh_id())],
            1 if voters.len() > 3 => {
                h.random_of(&followers).map(Change::Remove).into_iter().collect()
            }
            2 if voters.len() > 3 => vec![Change::Remove(leader)],
            3 if members < 5 => {
                let new = self.fresh_id();
                let old = h.random_of(&voters).unwrap_or(leader);
                vec![Change::Add(new), Change::Remove(old)]
            }
            _ => Vec::new(),
        };
        for ch in change {
            h.note(format!("membership {ch:?}"));
            self.admin.enqueue(ch);
        }
    }

    fn fresh_id(&mut self) -> NodeId {
        let id = self.next_node_id;
        self.next_node_id += 1;
        id
    }
}
