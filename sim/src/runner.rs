//! The one simulation runner. A seed draws its scenario's plan (which faults, how often, how
//! lossy the network, how many clients: swarm probabilities per seed), forms the cluster, runs
//! the workload while the scenario injects faults and operates the cluster, heals, requires
//! every outstanding request to finish and the scenario's convergence to hold, and checks
//! everything. What is wrong comes back as typed [`Violation`]s.
//!
//! The phases, in order:
//! 1. formation ([`Scenario::form`]);
//! 2. faults: for [`FaultTiming::fault_ticks`], clients start operations while
//!    [`Scenario::inject`] fires a fault every `2 * mean_gap_ticks` at most, and due undos
//!    (heal, restart, resume) fire;
//! 3. heal: every undo, every link healed, every node resumed and restarted; then
//!    [`Scenario::after_heal`];
//! 4. liveness: outstanding operations finish within [`LIVENESS_TICKS`], the scenario
//!    converges ([`Scenario::converged`]) within [`Scenario::CONVERGE_TICKS`], a fresh write and
//!    a linearizable read by every client succeed, no node holds a request past its timeout,
//!    and convergence still holds;
//! 5. final reads of every key from the leader join the history, and the history checkers run.

use std::collections::BTreeMap;
use std::fmt;

use mokv_core::{NodeId, PlantedBugs, Rng};

use crate::check_lease::LeaseHolders;
use crate::check_watch::Watches;
use crate::checker::{self, Observer};
use crate::cluster::{Cluster, NetFaults};
use crate::harness::{FaultTiming, Harness, Undo, UndoQueue};
use crate::history::{History, Observed, OpKind, Outcome};
use crate::violation::{ConvergenceMismatch, Undecided, Violation, WorkloadProblem};
use crate::workload::{self, Client, Phase, WorkloadKnobs, KEYS};

/// Ticks after the heal within which every outstanding request must complete.
pub const LIVENESS_TICKS: u64 = 2_000;

/// Ticks the cluster keeps running after the fresh round so every node applies everything.
const QUIESCE_TICKS: u64 = 100;

/// What a scenario's plan gives the runner.
#[derive(Debug)]
pub struct Setup {
    /// The cluster, built from the plan (formed or bootstrapped).
    pub cluster: Cluster,
    /// Concurrent clients (ids `1..=clients`).
    pub clients: u64,
    /// The workload's knobs (`trace` is set by the runner).
    pub knobs: WorkloadKnobs,
    pub timing: FaultTiming,
    /// The core's request timeout the nodes run with.
    pub request_timeout_ticks: u64,
}

/// One kind of simulated world: how a cluster forms, which faults it suffers, who operates it,
/// and what "converged" means after the heal. [`run`] drives any scenario the same way.
pub trait Scenario: Sized {
    /// One kind of fault; the plan enables a subset per seed.
    type Fault: Copy + fmt::Debug;
    /// Mixed into the seed for the run's RNG, so each scenario draws its own stream.
    const RNG_SALT: u64;
    /// Ticks after the heal (and the outstanding requests) within which [`Scenario::converged`]
    /// must hold.
    const CONVERGE_TICKS: u64;
    /// `cargo test -p sim <this> -- --nocapture` replays a seed (with `MOKV_SIM_SEED`).
    const REPLAY_TEST: &'static str;

    /// Draws the plan from the run's RNG (the first draws of a run) and builds the cluster.
    fn draw(seed: u64, bugs: PlantedBugs, rng: &mut Rng) -> (Self, Setup);
    /// The plan, for the replay output.
    fn plan(&self) -> &dyn fmt::Debug;
    /// The fault kinds this seed enabled (never empty).
    fn faults(&self) -> &[Self::Fault];
    /// Nodes clients may talk to (and the heal restarts).
    fn nodes(&self, c: &Cluster) -> Vec<NodeId>;
    /// Forms the cluster before the faults start.
    fn form(&mut self, h: &mut Harness) -> Result<(), Violation>;
    /// Injects one fault of kind `fault` (or nothing, when its preconditions do not hold).
    fn inject(&mut self, fault: Self::Fault, h: &mut Harness);
    /// Runs every tick after the clients and before the cluster steps: the operator.
    fn operate(&mut self, h: &mut Harness, nodes: &[NodeId]);
    /// Whether a scheduled restart of `id` still applies.
    fn may_restart(&self, _id: NodeId) -> bool {
        true
    }
    /// Runs once the faults are undone and every node restarted.
    fn after_heal(&mut self, _h: &mut Harness) {}
    /// Whether the cluster is where the scenario wants it after the heal.
    fn converged(&self, _h: &Harness) -> Result<(), ConvergenceMismatch> {
        Ok(())
    }
    /// Prints the scenario's own record when the trace is on (before the history).
    fn print_trace(&self) {}
}

/// Result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub bugs: PlantedBugs,
    pub trace_hash: u64,
    pub history_hash: u64,
    pub violations: Vec<Violation>,
    pub inconclusive: Vec<Undecided>,
    pub ticks: u64,
    pub ops: usize,
    pub plan: String,
    pub history: History,
    /// What happened, by kind (gossip runs: joins, leaves, wipes, ...), for swarm summaries.
    pub counters: BTreeMap<&'static str, u64>,
    /// The test that replays this run (see [`Scenario::REPLAY_TEST`]).
    pub replay_test: &'static str,
}

impl RunReport {
    /// The one line a failure prints, with the command that replays it.
    pub fn failure_line(&self) -> Option<String> {
        let first = self.violations.first()?;
        let bugs = bugs_env(self.bugs);
        let env = if bugs.is_empty() { String::new() } else { format!("MOKV_SIM_BUGS={bugs} ") };
        Some(format!(
            "seed={} violation={first}; replay: {env}MOKV_SIM_SEED={} cargo test -p sim {} -- \
             --nocapture",
            self.seed, self.seed, self.replay_test
        ))
    }
}

/// `PlantedBugs` as the comma list `MOKV_SIM_BUGS` takes.
pub fn bugs_env(b: PlantedBugs) -> String {
    let mut v = Vec::new();
    if b.stale_follower_reads {
        v.push("stale_follower_reads");
    }
    if b.ack_before_durable {
        v.push("ack_before_durable");
    }
    if b.skip_session_dedup {
        v.push("skip_session_dedup");
    }
    if b.skip_read_retry {
        v.push("skip_read_retry");
    }
    if b.answer_before_durable {
        v.push("answer_before_durable");
    }
    if b.cas_at_propose {
        v.push("cas_at_propose");
    }
    if b.txn_first_op_only {
        v.push("txn_first_op_only");
    }
    if b.watch_skips_snapshot_boundary {
        v.push("watch_skips_snapshot_boundary");
    }
    if b.lease_keepalive_not_renewed {
        v.push("lease_keepalive_not_renewed");
    }
    if b.gossip_leave_trusted {
        v.push("gossip_leave_trusted");
    }
    if b.unproven_claims_trusted {
        v.push("unproven_claims_trusted");
    }
    v.join(",")
}

/// Parses `MOKV_SIM_BUGS`.
pub fn parse_bugs(s: &str) -> PlantedBugs {
    let mut b = PlantedBugs::default();
    for part in s.split(',').map(str::trim) {
        match part {
            "stale_follower_reads" => b.stale_follower_reads = true,
            "ack_before_durable" => b.ack_before_durable = true,
            "skip_session_dedup" => b.skip_session_dedup = true,
            "skip_read_retry" => b.skip_read_retry = true,
            "answer_before_durable" => b.answer_before_durable = true,
            "cas_at_propose" => b.cas_at_propose = true,
            "txn_first_op_only" => b.txn_first_op_only = true,
            "watch_skips_snapshot_boundary" => b.watch_skips_snapshot_boundary = true,
            "lease_keepalive_not_renewed" => b.lease_keepalive_not_renewed = true,
            "gossip_leave_trusted" => b.gossip_leave_trusted = true,
            "unproven_claims_trusted" => b.unproven_claims_trusted = true,
            _ => {}
        }
    }
    b
}

/// The first of `seeds` whose run of scenario `S` under `bugs` reports a violation that
/// `caught` accepts (its failure line printed): how a planted-bug test shows that a checker
/// notices the bug.
pub fn first_seed_caught<S: Scenario>(
    seeds: std::ops::Range<u64>,
    bugs: PlantedBugs,
    caught: impl Fn(&Violation) -> bool,
) -> Option<u64> {
    seeds.into_iter().find(|&seed| {
        let report = run::<S>(seed, bugs, false);
        let hit = report.violations.iter().any(&caught);
        if hit {
            println!("caught: {}", report.failure_line().unwrap_or_default());
        }
        hit
    })
}

/// Runs one seed of scenario `S`. A panic inside the run (a node's or raft-rs's) is reported
/// as a [`Violation::Panic`]. With `trace` the readable trace is printed as the run goes (so
/// it is there even when the run panics).
pub fn run<S: Scenario>(seed: u64, bugs: PlantedBugs, trace: bool) -> RunReport {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_inner::<S>(seed, bugs, trace)
    }));
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        RunReport {
            seed,
            bugs,
            trace_hash: 0,
            history_hash: 0,
            violations: vec![Violation::Panic { message }],
            inconclusive: Vec::new(),
            ticks: 0,
            ops: 0,
            plan: String::new(),
            history: History::default(),
            counters: BTreeMap::new(),
            replay_test: S::REPLAY_TEST,
        }
    })
}

fn run_inner<S: Scenario>(seed: u64, bugs: PlantedBugs, trace: bool) -> RunReport {
    let mut rng = Rng::new(seed ^ S::RNG_SALT);
    let (mut s, setup) = S::draw(seed, bugs, &mut rng);
    let plan_line = format!("{:?}", s.plan());
    let mut observer = Observer::default();
    observer.print_events = trace;
    let watch_nodes = s.nodes(&setup.cluster);
    let mut h = Harness {
        watches: Watches::new(seed, &watch_nodes),
        leases: LeaseHolders::new(seed),
        c: setup.cluster,
        rng,
        history: History::default(),
        clients: (1..=setup.clients).map(Client::new).collect(),
        observer,
        problems: Vec::new(),
        knobs: WorkloadKnobs { trace, ..setup.knobs },
        next_value: 0,
        undo: UndoQueue::default(),
        timing: setup.timing,
        request_timeout_ticks: setup.request_timeout_ticks,
        trace,
        counters: BTreeMap::new(),
    };
    h.note(format!("plan {plan_line}"));
    let mut violations = Vec::new();
    match s.form(&mut h) {
        Err(v) => violations.push(v),
        Ok(()) => {
            h.observer.observe(&h.c);
            fault_phase(&mut h, &mut s);
            if let Err(v) = heal_phase(&mut h, &mut s) {
                violations.push(v);
            }
            let ids = s.nodes(&h.c);
            final_reads(&h.c, &ids, &mut h.history, &mut h.problems);
        }
    }
    violations.append(&mut h.observer.violations);
    violations.extend(h.problems.drain(..).map(Violation::Workload));
    h.counters.insert("watch_events", h.watches.events_seen() as u64);
    h.counters.insert("watch_failovers", h.watches.failovers);
    h.counters.insert("watch_restarts", h.watches.restarts);
    h.counters.insert("leases_granted", h.leases.granted);
    h.counters.insert("lease_keepalives", h.leases.kept_alive);
    h.counters.insert("leases_revoked", h.leases.revoked);
    h.counters.insert("leases_expired", h.leases.expired);
    let leases = std::mem::replace(&mut h.leases, LeaseHolders::none());
    violations.extend(leases.into_violations().into_iter().map(Violation::Lease));
    let watches = std::mem::replace(&mut h.watches, Watches::new(seed, &[]));
    violations.extend(watches.check(&h.history).into_iter().map(Violation::Watch));
    let findings = checker::check_history(&h.history);
    violations.extend(findings.violations.into_iter().map(Violation::History));
    if trace {
        s.print_trace();
        for (i, op) in h.history.ops.iter().enumerate() {
            println!("op #{i} {op:?}");
        }
    }
    RunReport {
        seed,
        bugs,
        trace_hash: h.c.trace_hash(),
        history_hash: h.history.hash(),
        violations,
        inconclusive: findings.inconclusive,
        ticks: h.c.now(),
        ops: h.history.ops.len(),
        plan: plan_line,
        history: h.history,
        counters: h.counters,
        replay_test: S::REPLAY_TEST,
    }
}

/// One tick of the run: clients act (and, while faults last, idle ones start operations), the
/// scenario operates, the cluster steps, the observer looks.
pub fn tick<S: Scenario>(h: &mut Harness, s: &mut S, phase: Phase) {
    let nodes = s.nodes(&h.c);
    for cl in &mut h.clients {
        cl.poll(&mut h.c, &mut h.history, &mut h.rng, &h.knobs, &nodes, phase, &mut h.problems);
    }
    if phase == Phase::Faults {
        for cl in &mut h.clients {
            if cl.is_idle() && h.rng.below(4) == 0 {
                let kind =
                    workload::draw_op(&mut h.rng, &mut h.next_value, h.knobs.coordination_ops);
                cl.start(kind, &h.c, &mut h.history);
            }
        }
    }
    h.leases.poll(&mut h.c, &nodes, phase, h.trace);
    s.operate(h, &nodes);
    h.c.step();
    h.observer.observe(&h.c);
    h.watches.poll(&h.c, &nodes);
}

fn apply_undo<S: Scenario>(h: &mut Harness, s: &S, u: Undo) {
    h.note(format!("{u:?}"));
    match u {
        Undo::Heal => h.c.heal(),
        Undo::Restart(id) => {
            if s.may_restart(id) {
                h.c.restart(id);
            }
        }
        Undo::Resume(id) => h.c.resume(id),
    }
}

fn fault_phase<S: Scenario>(h: &mut Harness, s: &mut S) {
    let end = h.c.now() + h.timing.fault_ticks;
    let mut next_fault = h.c.now() + h.rng.below(h.timing.mean_gap_ticks * 2);
    while h.c.now() < end {
        while let Some(u) = h.undo.pop_due(h.c.now()) {
            apply_undo(h, s, u);
        }
        if h.c.now() >= next_fault {
            let kinds = s.faults();
            let kind = kinds[h.rng.below(kinds.len() as u64) as usize];
            s.inject(kind, h);
            next_fault = h.c.now() + 1 + h.rng.below(h.timing.mean_gap_ticks * 2);
        }
        tick(h, s, Phase::Faults);
    }
}

/// Faults stop: undo everything, heal, resume, restart. Every outstanding request must then
/// finish, the scenario converge, and a fresh write and linearizable read by every client
/// succeed.
fn heal_phase<S: Scenario>(h: &mut Harness, s: &mut S) -> Result<(), Violation> {
    for u in h.undo.take_all() {
        apply_undo(h, s, u);
    }
    h.c.heal();
    h.c.net = NetFaults::default();
    for id in s.nodes(&h.c) {
        h.c.resume(id);
        h.c.restart(id);
    }
    h.note("faults over: healed, restarted, resumed".into());
    s.after_heal(h);
    let start = h.c.now();
    while h.c.now() - start < LIVENESS_TICKS {
        if h.clients.iter().all(Client::is_idle) && h.leases.is_idle() {
            break;
        }
        tick(h, s, Phase::Drain);
    }
    if !h.leases.is_idle() {
        h.dump_views();
        return Err(Violation::LeaseHolderStuck { ticks: LIVENESS_TICKS });
    }
    if let Some(cl) = h.clients.iter().find(|c| !c.is_idle()) {
        h.dump_views();
        return Err(Violation::ClientStuck {
            client: cl.id,
            ticks: LIVENESS_TICKS,
            op: cl.outstanding().map(|i| (i, Box::new(h.history.ops[i].clone()))),
        });
    }
    let start = h.c.now();
    loop {
        match s.converged(h) {
            Ok(()) => break,
            Err(mismatch) if h.c.now() - start >= S::CONVERGE_TICKS => {
                h.dump_views();
                return Err(Violation::NotConverged { ticks: S::CONVERGE_TICKS, mismatch });
            }
            Err(_) => tick(h, s, Phase::Drain),
        }
    }
    h.note(format!("converged {} ticks after the heal", h.c.now() - start));
    for write in [true, false] {
        start_fresh_round(write, h);
        let start = h.c.now();
        while h.c.now() - start < LIVENESS_TICKS && !h.clients.iter().all(Client::is_idle) {
            tick(h, s, Phase::Drain);
        }
        if let Some(cl) = h.clients.iter().find(|c| !c.is_idle()) {
            return Err(Violation::FreshOpUnfinished {
                write,
                client: cl.id,
                ticks: LIVENESS_TICKS,
            });
        }
    }
    for _ in 0..QUIESCE_TICKS {
        tick(h, s, Phase::Drain);
    }
    // The core answers everything within its request timeout, with an error at worst; the
    // margin covers the tick the timeout is noticed on.
    if let Some((request, node, at)) = h.c.unanswered_for(h.request_timeout_ticks + 20) {
        return Err(Violation::Unanswered {
            node,
            request,
            handed_at_tick: at,
            now_tick: h.c.now(),
        });
    }
    s.converged(h).map_err(|mismatch| Violation::ConvergenceLost { mismatch })
}

/// Starts one op per client: a fresh write (`write`) or a linearizable read of its key.
fn start_fresh_round(write: bool, h: &mut Harness) {
    for (i, client) in h.clients.iter_mut().enumerate() {
        let key = KEYS[i % KEYS.len()].into();
        let kind = if write {
            h.next_value += 1;
            OpKind::Set { key, value: h.next_value }
        } else {
            OpKind::Get { key, linearizable: true }
        };
        client.start(kind, &h.c, &mut h.history);
    }
}

/// Acknowledged writes are never lost: the final state of each key (read from the leader after
/// quiescence) joins the history as a last linearizable read; and every node of `ids` in the
/// leader's configuration has applied (nearly) as far as the most advanced one.
///
/// The leader's configuration, not a node's own, says who must catch up: the leader stops
/// replicating to a node the moment it appends that node's removal, so a removed node learns of
/// its removal only if it received and durably committed that entry. Cut off during the
/// removal, or restarted after losing its commit index, it still lists itself as a member and
/// never advances; Raft expects that (pre-vote and check-quorum keep it from disrupting), and
/// whoever removed it is the one to shut it down.
fn final_reads(
    c: &Cluster,
    ids: &[NodeId],
    history: &mut History,
    problems: &mut Vec<WorkloadProblem>,
) {
    let Some(leader) = c.leader() else { return };
    let now = c.now();
    for key in KEYS {
        let observed = c.node(leader).and_then(|n| {
            n.state().get(key).map(|v| Observed {
                value: crate::history::decode_value(v.value()).unwrap_or(u64::MAX),
                mod_index: v.mod_index(),
            })
        });
        let op = history.invoke(0, OpKind::Get { key: key.into(), linearizable: true }, now);
        history.complete(op, Outcome::Read(observed), now, Some(leader));
    }
    let Some(conf) = c.node(leader).map(|n| n.status().conf) else { return };
    let members = conf.all_ids();
    let applied: Vec<(NodeId, u64)> = ids
        .iter()
        .filter(|id| members.contains(id))
        .filter_map(|&id| Some((id, c.node(id)?.status().applied_index)))
        .collect();
    if let Some(max) = applied.iter().map(|(_, a)| *a).max() {
        for (id, a) in &applied {
            if *a + 2 < max {
                problems.push(WorkloadProblem::Lagging {
                    node: *id,
                    applied_index: *a,
                    most_advanced: max,
                });
            }
        }
    }
}
