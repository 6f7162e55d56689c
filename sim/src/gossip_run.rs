//! Gossip runs: the cluster forms, grows, shrinks and heals through SWIM gossip (foca) and the
//! leader's reconciler rather than through operator requests, while clients run the usual
//! workload. After the faults stop and the network heals, the Raft configuration must converge
//! to what gossip says the cluster is, and every history checker must still pass.

use std::collections::{BTreeMap, BTreeSet};

use mokv_core::gossip::Health;
use mokv_core::{Config, NodeId, PlantedBugs, Rng, Role};

use crate::checker::{self, Observer};
use crate::cluster::{gossip_addr, Cluster, GossipParams, NetFaults, Traffic, MS_PER_TICK};
use crate::history::History;
use crate::run::{RunReport, LIVENESS_TICKS};
use crate::run_parts::{self, Undo, UndoQueue};
use crate::workload::{self, Client, Phase, Problems, WorkloadKnobs};

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
pub fn check_converged(c: &Cluster, expected: &BTreeSet<NodeId>) -> Result<(), String> {
    let leaders: Vec<NodeId> = c
        .ids()
        .into_iter()
        .filter(|id| c.node(*id).is_some_and(|n| n.status().role == Role::Leader))
        .collect();
    let [leader] = leaders[..] else { return Err(format!("leaders: {leaders:?}")) };
    let conf = c.node(leader).map(|n| n.status().conf).unwrap_or_default();
    if conf.voters != *expected || !conf.learners.is_empty() || !conf.voters_outgoing.is_empty() {
        return Err(format!("leader n{leader} conf {conf:?}, expected voters {expected:?}"));
    }
    for id in expected {
        let Some(n) = c.node(*id) else { return Err(format!("n{id} is down")) };
        let st = n.status();
        if st.conf != conf {
            return Err(format!("n{id} applied conf {:?}, leader {conf:?}", st.conf));
        }
        for m in n.gossip_members() {
            let wanted = expected.contains(&m.id.raft_id) && m.id.raft_id != *id;
            // Down identities of gone nodes may linger (foca keeps them, as down, for a day).
            if !wanted && m.health != Health::Down {
                return Err(format!(
                    "n{id} sees {} (raft id {}) {:?}, which is not a member",
                    m.id.name, m.id.raft_id, m.health
                ));
            }
        }
        for other in expected {
            if other == id {
                continue;
            }
            let name = &c.member_info(*other).name;
            match c.health_of(*id, name) {
                Some((rid, Health::Alive)) if rid == *other => {}
                seen => {
                    return Err(format!("n{id} sees {name} (n{other}) as {seen:?}"));
                }
            }
        }
    }
    Ok(())
}

/// Steps until [`check_converged`] holds; the last mismatch if `max_ticks` run out.
pub fn wait_converged(
    c: &mut Cluster,
    expected: &BTreeSet<NodeId>,
    max_ticks: u64,
) -> Result<u64, String> {
    let start = c.now();
    let mut last = String::new();
    let ok = c.run_until(max_ticks, |c| match check_converged(c, expected) {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    });
    if ok {
        Ok(c.now() - start)
    } else {
        Err(last)
    }
}

// ---------------------------------------------------------------------- the swarm

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
}

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
        }
    }
}

/// The one line a failed gossip run prints.
pub fn failure_line(r: &RunReport) -> Option<String> {
    let first = r.violations.first()?;
    Some(format!(
        "seed={} violation={first}; replay: MOKV_SIM_SEED={} cargo test -p sim --test gossip \
         replay -- --nocapture",
        r.seed, r.seed
    ))
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

struct GossipRun {
    c: Cluster,
    rng: Rng,
    plan: GossipPlan,
    history: History,
    clients: Vec<Client>,
    observer: Observer,
    problems: Problems,
    knobs: WorkloadKnobs,
    next_value: u64,
    next_id: NodeId,
    undo: UndoQueue,
    leaving: BTreeMap<NodeId, Leaving>,
    /// Raft ids whose node was wiped, until the leader's configuration no longer has them.
    wiped: BTreeSet<NodeId>,
    trace: bool,
    counters: BTreeMap<&'static str, u64>,
    request_timeout_ticks: u64,
}

/// Runs one gossip seed; a panic is reported as a violation.
pub fn run_gossip_seed(seed: u64, print_trace: bool) -> RunReport {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(seed, print_trace)));
    result.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        RunReport {
            seed,
            bugs: PlantedBugs::default(),
            trace_hash: 0,
            history_hash: 0,
            violations: vec![format!("panic: {}", msg.replace('\n', " "))],
            inconclusive: Vec::new(),
            ticks: 0,
            ops: 0,
            plan: String::new(),
            history: History::default(),
            counters: BTreeMap::new(),
        }
    })
}

fn run_inner(seed: u64, trace: bool) -> RunReport {
    let mut rng = Rng::new(seed ^ 0x6055_1900_6055_1900);
    let plan = GossipPlan::draw(&mut rng);
    let mut base = Config::new(1, 0);
    base.snapshot_threshold_entries = plan.snapshot_threshold_entries;
    base.log_keep_entries = plan.log_keep_entries;
    base.dead_member_timeout_ms = plan.dead_member_timeout_ms;
    let request_timeout_ticks = base.request_timeout_ticks;
    let c = Cluster::with_gossip(seed, base, plan.params);
    let knobs = WorkloadKnobs {
        reply_loss_permille: plan.reply_loss_permille,
        follower_read_permille: plan.follower_read_permille,
        client_timeout_ticks: plan.client_timeout_ticks,
        trace,
    };
    let plan_line = format!("{plan:?}");
    let mut observer = Observer::default();
    observer.print_events = trace;
    let mut r = GossipRun {
        c,
        rng,
        clients: (1..=plan.clients).map(Client::new).collect(),
        next_id: plan.initial + 1,
        plan,
        history: History::default(),
        observer,
        problems: Vec::new(),
        knobs,
        next_value: 0,
        undo: UndoQueue::default(),
        leaving: BTreeMap::new(),
        wiped: BTreeSet::new(),
        trace,
        counters: BTreeMap::new(),
        request_timeout_ticks,
    };
    r.note(format!("plan {plan_line}"));
    let mut violations = Vec::new();
    match r.form() {
        Err(v) => violations.push(v),
        Ok(()) => {
            r.fault_phase();
            if let Err(v) = r.heal_phase() {
                violations.push(v);
            }
            r.final_reads();
        }
    }
    violations.append(&mut r.observer.violations);
    violations.extend(r.problems.iter().map(|p| format!("workload: {p}")));
    let findings = checker::check_history(&r.history);
    violations.extend(findings.violations);
    if trace {
        for (i, op) in r.history.ops.iter().enumerate() {
            println!("op #{i} {op:?}");
        }
    }
    RunReport {
        seed,
        bugs: PlantedBugs::default(),
        trace_hash: r.c.trace_hash(),
        history_hash: r.history.hash(),
        violations,
        inconclusive: findings.inconclusive,
        ticks: r.c.now(),
        ops: r.history.ops.len(),
        plan: plan_line,
        history: r.history,
        counters: r.counters,
    }
}

impl GossipRun {
    fn note(&self, s: String) {
        if self.trace {
            println!("t={} {s}", self.c.now());
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    fn leader_conf_ids(&self) -> Option<BTreeSet<NodeId>> {
        let l = self.c.leader()?;
        self.c.node(l).map(|n| n.status().conf.all_ids())
    }

    /// The leader's configuration, only when its log holds nothing unapplied (no conf change
    /// in flight that could still add a node it does not list).
    fn settled_leader_conf_ids(&self) -> Option<BTreeSet<NodeId>> {
        let l = self.c.leader()?;
        let st = self.c.node(l)?.status();
        (st.applied_index == st.last_index).then(|| st.conf.all_ids())
    }

    /// Nodes that are, or are becoming, members: present and not leaving.
    fn staying(&self) -> Vec<NodeId> {
        self.c.ids().into_iter().filter(|id| !self.leaving.contains_key(id)).collect()
    }

    fn random_of(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize])
    }

    fn shuffled(&mut self, mut v: Vec<NodeId>) -> Vec<NodeId> {
        for i in (1..v.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }

    /// Node 1 bootstraps; the others join through one or two seeds each. The first seed of
    /// each is a node before it in a random order that starts with node 1 (so every node
    /// reaches node 1 through seeds), while nodes start in id order: some seeds start after
    /// the node that names them.
    fn form(&mut self) -> Result<(), String> {
        let initial: Vec<NodeId> = (1..=self.plan.initial).collect();
        let mut order = vec![1];
        order.extend(self.shuffled(initial[1..].to_vec()));
        let mut starts = BTreeMap::new();
        for (pos, id) in order.iter().copied().enumerate().skip(1) {
            let mut seeds = vec![gossip_addr(self.random_of(&order[..pos]).unwrap_or(1))];
            if self.rng.below(2) == 0 {
                let others: Vec<NodeId> = initial.iter().copied().filter(|o| *o != id).collect();
                seeds.push(gossip_addr(self.random_of(&others).unwrap_or(1)));
            }
            seeds.dedup();
            starts.insert((self.c.now() + (id - 2) * self.plan.stagger_ticks, id), seeds);
        }
        for ((at, id), seeds) in starts {
            while self.c.now() < at {
                self.c.step();
            }
            self.note(format!("n{id} joins with seeds {seeds:?}"));
            self.c.join(id, seeds);
        }
        let expected: BTreeSet<NodeId> = initial.into_iter().collect();
        wait_converged(&mut self.c, &expected, FORM_TICKS)
            .map(|t| self.note(format!("formed in {t} ticks")))
            .map_err(|e| format!("formation: not converged within {FORM_TICKS} ticks: {e}"))?;
        self.observer.observe(&self.c);
        self.c.net = self.plan.net;
        self.c.persist_delay_ticks = self.plan.persist_delay_ticks;
        Ok(())
    }

    fn tick(&mut self, phase: Phase) {
        let nodes = self.c.ids();
        for cl in &mut self.clients {
            cl.poll(
                &mut self.c,
                &mut self.history,
                &mut self.rng,
                &self.knobs,
                &nodes,
                phase,
                &mut self.problems,
            );
        }
        if phase == Phase::Faults {
            for i in 0..self.clients.len() {
                if self.clients[i].is_idle() && self.rng.below(4) == 0 {
                    let kind = workload::draw_op(&mut self.rng, &mut self.next_value);
                    self.clients[i].start(kind, &self.c, &mut self.history);
                }
            }
        }
        self.poll_leaving();
        self.reprovision_removed();
        if let Some(ids) = self.leader_conf_ids() {
            self.wiped.retain(|w| ids.contains(w));
        }
        self.c.step();
        self.observer.observe(&self.c);
    }

    /// Leaving nodes: stop gossip once the leader has removed them (and has no change in
    /// flight that could still add one: a node that joined and left at once may be added after
    /// it looked removed, and, gone from gossip, would stay a learner), then exit.
    fn poll_leaving(&mut self) {
        let now = self.c.now();
        let conf = self.settled_leader_conf_ids();
        let entries: Vec<(NodeId, Leaving)> = self.leaving.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, state) in entries {
            match state {
                Leaving::Asked(at) => {
                    // Removed, and the leader knows it is leaving: a node that stops before its
                    // leave reached the leader may still be added by a change already on its
                    // way (or by a datagram still in flight announcing it), and would then stay
                    // a learner, down, and not leaving as far as anyone knows.
                    let known_leaving = self.c.leader().is_some_and(|l| {
                        self.c.gossip_members(l).iter().any(|m| m.id.raft_id == id && m.id.leaving)
                    });
                    let removed =
                        known_leaving && conf.as_ref().is_some_and(|ids| !ids.contains(&id));
                    if removed && !self.c.is_paused(id) && self.c.is_up(id) {
                        self.note(format!("n{id} stops gossip, removed after {} ticks", now - at));
                        self.c.gossip_stop(id);
                        self.leaving.insert(id, Leaving::Stopped(now));
                    }
                }
                Leaving::Stopped(at) => {
                    if now - at >= STOP_TO_EXIT_TICKS {
                        self.note(format!("n{id} exits"));
                        self.c.destroy(id);
                        self.leaving.remove(&id);
                    }
                }
            }
        }
    }

    /// A node that gossips itself as leaving without having been asked to leave was removed
    /// (by the dead-member timeout, while it was down or cut off) and applied its removal: the
    /// operator wipes it and it rejoins under a new Raft id.
    fn reprovision_removed(&mut self) {
        for id in self.c.ids() {
            if self.leaving.contains_key(&id) || self.c.is_paused(id) {
                continue;
            }
            let removed =
                self.c.node(id).and_then(|n| n.gossip_identity()).is_some_and(|g| g.leaving);
            // Only once the leader has applied its removal: a node that applied its own removal
            // may be the only one, with the leader gone, that knows the removal committed;
            // wiping it (and a second one) then would leave the others, whose configuration
            // still counts them, without a quorum.
            let out = self.settled_leader_conf_ids().is_some_and(|ids| !ids.contains(&id));
            if !removed || !out {
                continue;
            }
            let new = self.next_id;
            self.next_id += 1;
            self.note(format!("n{id} was removed: wiped, back as n{new}"));
            self.c.wipe(id, new);
            self.count("removed as dead, wiped, rejoined");
        }
    }

    fn schedule_undo(&mut self, after: u64, u: Undo) {
        self.undo.schedule(self.c.now(), after, u);
    }

    fn run_undos(&mut self) {
        let now = self.c.now();
        while let Some(u) = self.undo.pop_due(now) {
            self.apply_undo(u);
        }
    }

    fn apply_undo(&mut self, u: Undo) {
        self.note(format!("{u:?}"));
        match u {
            Undo::Heal => self.c.heal(),
            Undo::Restart(id) => self.c.restart(id),
            Undo::Resume(id) => self.c.resume(id),
        }
    }

    fn outage(&mut self) -> u64 {
        10 + self.rng.below(self.plan.max_outage_ticks)
    }

    fn fault_phase(&mut self) {
        let end = self.c.now() + self.plan.fault_ticks;
        let mut next_fault = self.c.now() + self.rng.below(self.plan.mean_gap_ticks * 2);
        while self.c.now() < end {
            self.run_undos();
            if self.c.now() >= next_fault {
                let kind = self.plan.kinds[self.rng.below(self.plan.kinds.len() as u64) as usize];
                self.inject(kind);
                next_fault = self.c.now() + 1 + self.rng.below(self.plan.mean_gap_ticks * 2);
            }
            self.tick(Phase::Faults);
        }
    }

    fn inject(&mut self, kind: GossipFault) {
        let staying = self.staying();
        let up: Vec<NodeId> = staying
            .iter()
            .copied()
            .filter(|id| self.c.is_up(*id) && !self.c.is_paused(*id))
            .collect();
        // Voters that stay: one that gossips itself as leaving (it applied its own removal,
        // and was added back before the leader heard) is about to be removed again.
        let voters = self.c.leader().and_then(|l| self.c.node(l)).map_or(0, |n| {
            n.status()
                .conf
                .voters
                .iter()
                .filter(|id| {
                    !self.c.node(**id).and_then(|v| v.gossip_identity()).is_some_and(|g| g.leaving)
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
                for _ in 0..1 + self.rng.below(2) {
                    if let Some(s) = self.random_of(&staying) {
                        let addr = self
                            .c
                            .gossip_slot(s)
                            .map_or_else(|| gossip_addr(s), |g| g.addr.clone());
                        seeds.push(addr);
                    }
                }
                seeds.dedup();
                self.note(format!("n{id} joins with seeds {seeds:?}"));
                self.c.join(id, seeds);
                self.count("join");
            }
            GossipFault::Leave => {
                // Keep three staying nodes, one leave at a time, never while a wiped node's
                // old id is still a voter (its quorum might then be lost for good).
                if staying.len() <= 3 || !self.leaving.is_empty() || !self.wiped.is_empty() {
                    return;
                }
                // Nodes the leader's gossip knows (one that just started may be known only by
                // a datagram still in flight; see `poll_leaving`).
                let Some(leader) = self.c.leader() else { return };
                let view = self.c.gossip_members(leader);
                let known: Vec<NodeId> = up
                    .iter()
                    .copied()
                    .filter(|id| *id == leader || view.iter().any(|m| m.id.raft_id == *id))
                    .collect();
                let target = if self.rng.below(3) == 0 && up.contains(&leader) {
                    Some(leader)
                } else {
                    self.random_of(&known)
                };
                if let Some(id) = target {
                    self.note(format!("n{id} leaves"));
                    self.c.leave(id);
                    self.leaving.insert(id, Leaving::Asked(self.c.now()));
                    self.count(if Some(id) == self.c.leader() {
                        "leave (leader)"
                    } else {
                        "leave"
                    });
                }
            }
            GossipFault::Crash => {
                let target = match self.c.leader() {
                    Some(l) if self.rng.below(2) == 0 && up.contains(&l) => Some(l),
                    _ => self.random_of(&up),
                };
                if let Some(id) = target {
                    self.note(format!("crash n{id}"));
                    self.c.crash(id);
                    self.count("crash");
                    let mut d = self.outage();
                    if self.plan.dead_member_timeout_ms > 0 && self.rng.below(2) == 0 {
                        // Down for longer than the dead-member timeout (plus detection).
                        d += self.plan.dead_member_timeout_ms / MS_PER_TICK + 100;
                    }
                    self.schedule_undo(d, Undo::Restart(id));
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
                let all_up =
                    self.c.ids().iter().all(|id| self.c.is_up(*id) && !self.c.is_paused(*id));
                let partitioned = self.undo.contains(Undo::Heal);
                // Nor while the leader may still act on an earlier outage: it has a change in
                // flight, or sees a voter as not alive (it may be about to remove it as dead,
                // counting the disk about to be lost as live).
                let leader_settled = self.settled_leader_conf_ids().is_some()
                    && self.c.leader().is_some_and(|l| {
                        let view = self.c.gossip_members(l);
                        self.c.node(l).is_some_and(|n| {
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
                let Some(old) = self.random_of(&staying) else { return };
                let new = self.next_id;
                self.next_id += 1;
                self.note(format!("wipe n{old}: back as n{new}"));
                self.c.wipe(old, new);
                self.wiped.insert(old);
                self.count("wipe");
            }
            GossipFault::Pause => {
                if let Some(id) = self.random_of(&up) {
                    self.note(format!("pause n{id}"));
                    self.c.pause(id);
                    self.count("pause");
                    let d = 25 + self.rng.below(80);
                    self.schedule_undo(d, Undo::Resume(id));
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
                self.count(match traffic {
                    Traffic::Gossip => "partition (gossip)",
                    Traffic::Raft => "partition (raft)",
                    Traffic::All => "partition (all)",
                });
                let all = self.c.ids();
                if self.rng.below(2) == 0 {
                    let target = match self.c.leader() {
                        Some(l) if self.rng.below(2) == 0 => Some(l),
                        _ => self.random_of(&all),
                    };
                    if let Some(id) = target {
                        self.note(format!("isolate n{id} ({traffic:?})"));
                        self.c.isolate_traffic(id, traffic);
                    }
                } else {
                    let shuffled = self.shuffled(all);
                    let (a, b) = shuffled.split_at(shuffled.len() / 2);
                    self.note(format!("split {a:?} | {b:?} ({traffic:?})"));
                    self.c.split(a, b, traffic);
                }
                let d = self.outage();
                self.schedule_undo(d, Undo::Heal);
            }
        }
    }

    /// A node that joined through seeds which all left for good before it reached them (or
    /// only through nodes in the same position) forms a gossip group of its own: discovery
    /// by seed address cannot do better. After the heal the operator gives every node that
    /// knows no member of the configuration the leader's address as a seed, and restarts it.
    fn reseed_islands(&mut self) {
        for _ in 0..100 {
            self.tick(Phase::Drain);
        }
        let Some(leader) = self.c.leader() else { return };
        let Some(conf) = self.leader_conf_ids() else { return };
        let Some(addr) = self.c.gossip_slot(leader).map(|g| g.addr.clone()) else { return };
        for id in self.c.ids() {
            if conf.contains(&id) || self.leaving.contains_key(&id) {
                continue;
            }
            let knows_member =
                self.c.gossip_members(id).iter().any(|m| conf.contains(&m.id.raft_id));
            if !knows_member {
                self.note(format!("n{id} knows no member: reseeded with the leader's address"));
                self.count("island reseeded");
                let mut seeds = self.c.gossip_slot(id).map(|g| g.seeds.clone()).unwrap_or_default();
                seeds.push(addr.clone());
                self.c.reseed(id, seeds);
            }
        }
    }

    /// Faults stop. Every outstanding request must finish, pending leaves complete, the
    /// configuration converge, and a fresh write and read by every client succeed.
    fn heal_phase(&mut self) -> Result<(), String> {
        for u in self.undo.take_all() {
            self.apply_undo(u);
        }
        self.c.heal();
        self.c.net = NetFaults::default();
        for id in self.c.ids() {
            self.c.resume(id);
            self.c.restart(id);
        }
        self.note("faults over: healed, restarted, resumed".into());
        self.reseed_islands();
        let start = self.c.now();
        while self.c.now() - start < LIVENESS_TICKS {
            if self.clients.iter().all(Client::is_idle) {
                break;
            }
            self.tick(Phase::Drain);
        }
        if let Some(cl) = self.clients.iter().find(|c| !c.is_idle()) {
            self.dump_views();
            let op = cl.outstanding().map(|i| format!("#{i} {:?}", self.history.ops[i]));
            return Err(format!(
                "liveness: client {} still waiting {LIVENESS_TICKS} ticks after the heal: {}",
                cl.id,
                op.unwrap_or_default()
            ));
        }
        // Convergence: leaving nodes gone, everyone else a voter, gossip agreeing.
        let start = self.c.now();
        let mut last;
        loop {
            if self.leaving.is_empty() {
                let expected: BTreeSet<NodeId> = self.c.ids().into_iter().collect();
                match check_converged(&self.c, &expected) {
                    Ok(()) => break,
                    Err(e) => last = e,
                }
            } else {
                last = format!("still leaving: {:?}", self.leaving);
            }
            if self.c.now() - start >= CONVERGE_TICKS {
                self.dump_views();
                return Err(format!(
                    "convergence: not converged {CONVERGE_TICKS} ticks after the heal: {last}"
                ));
            }
            self.tick(Phase::Drain);
        }
        self.note(format!("converged {} ticks after the heal", self.c.now() - start));
        for write in [true, false] {
            run_parts::start_fresh_round(
                write,
                &mut self.clients,
                &self.c,
                &mut self.history,
                &mut self.next_value,
            );
            let start = self.c.now();
            while self.c.now() - start < LIVENESS_TICKS && !self.clients.iter().all(Client::is_idle)
            {
                self.tick(Phase::Drain);
            }
            if let Some(e) = run_parts::fresh_round_unfinished(write, &self.clients, LIVENESS_TICKS)
            {
                return Err(e);
            }
        }
        for _ in 0..100 {
            self.tick(Phase::Drain);
        }
        if let Some(v) = run_parts::unanswered_request(&self.c, self.request_timeout_ticks) {
            return Err(v);
        }
        let expected: BTreeSet<NodeId> = self.c.ids().into_iter().collect();
        check_converged(&self.c, &expected)
            .map_err(|e| format!("convergence: lost after the fresh writes: {e}"))
    }

    /// With the trace on: every node's status and gossip view.
    fn dump_views(&self) {
        if !self.trace {
            return;
        }
        for id in self.c.ids() {
            let Some(n) = self.c.node(id) else {
                println!("n{id}: down");
                continue;
            };
            let st = n.status();
            println!(
                "n{id}: {:?} term {} leader {:?} conf {:?}/{:?} me {:?}",
                st.role,
                st.term,
                st.leader,
                st.conf.voters,
                st.conf.learners,
                n.gossip_identity()
            );
            for m in n.gossip_members() {
                println!("    {:?} {:?}", m.health, m.id);
            }
        }
    }

    /// Acknowledged writes are never lost: the final state of each key joins the history as a
    /// last linearizable read; every member has applied about as far as the leader.
    fn final_reads(&mut self) {
        let ids = self.c.ids();
        run_parts::final_reads(&self.c, &ids, &mut self.history, &mut self.problems);
    }
}
