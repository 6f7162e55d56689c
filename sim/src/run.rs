//! One simulated run from a seed: form a cluster, run the workload under the seed's faults,
//! heal, require progress, and check everything.

use std::collections::BTreeMap;

use mokv_core::{Config, NodeId, PlantedBugs, Rng};

use crate::checker::{self, Observer};
use crate::cluster::{Cluster, NetFaults};
use crate::faults::{FaultKind, FaultPlan};
use crate::history::History;
use crate::run_parts::{self, Undo, UndoQueue};
use crate::workload::{self, Admin, Change, Client, Phase, Problems, WorkloadKnobs};

/// Ticks after the heal within which every outstanding request must complete.
pub const LIVENESS_TICKS: u64 = 2_000;

/// Result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub bugs: PlantedBugs,
    pub trace_hash: u64,
    pub history_hash: u64,
    pub violations: Vec<String>,
    pub inconclusive: Vec<String>,
    pub ticks: u64,
    pub ops: usize,
    pub plan: String,
    pub history: History,
    /// What happened, by kind (gossip runs: joins, leaves, wipes, ...), for swarm summaries.
    pub counters: BTreeMap<&'static str, u64>,
}

impl RunReport {
    /// The one line a failure prints.
    pub fn failure_line(&self) -> Option<String> {
        let first = self.violations.first()?;
        let bugs = bugs_env(self.bugs);
        let env = if bugs.is_empty() { String::new() } else { format!("MOKV_SIM_BUGS={bugs} ") };
        Some(format!(
            "seed={} violation={first}; replay: {env}MOKV_SIM_SEED={} cargo test -p sim replay -- \
             --nocapture",
            self.seed, self.seed
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
            _ => {}
        }
    }
    b
}

struct Run {
    c: Cluster,
    rng: Rng,
    plan: FaultPlan,
    history: History,
    clients: Vec<Client>,
    admin: Admin,
    observer: Observer,
    problems: Problems,
    next_value: u64,
    next_node_id: NodeId,
    undo: UndoQueue,
    trace: bool,
    knobs: WorkloadKnobs,
    request_timeout_ticks: u64,
}

/// Runs one seed. A panic inside the run (a node's or raft-rs's) is reported as a violation.
/// With `print_trace` the readable trace is printed as the run goes (so it is there even
/// when the run panics).
pub fn run_seed(seed: u64, bugs: PlantedBugs, print_trace: bool) -> RunReport {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_inner(seed, bugs, print_trace)
    }));
    result.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        RunReport {
            seed,
            bugs,
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

fn run_inner(seed: u64, bugs: PlantedBugs, keep_trace: bool) -> RunReport {
    let mut rng = Rng::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let plan = FaultPlan::draw(&mut rng);
    let mut base = Config::new(1, 0);
    plan.tweak(&mut base);
    base.planted_bugs = bugs;
    let request_timeout_ticks = base.request_timeout_ticks;
    let mut c = Cluster::form_with_config(seed, plan.voters, base);
    c.net = plan.net;
    c.persist_delay_ticks = plan.persist_delay_ticks;
    let knobs = WorkloadKnobs {
        reply_loss_permille: plan.reply_loss_permille,
        follower_read_permille: plan.follower_read_permille,
        client_timeout_ticks: plan.client_timeout_ticks,
        trace: keep_trace,
    };
    let clients = (1..=plan.clients).map(Client::new).collect();
    let plan_line = format!("{plan:?}");
    let mut observer = Observer::default();
    observer.print_events = keep_trace;
    observer.observe(&c);
    let mut r = Run {
        next_node_id: plan.voters + 1,
        c,
        rng,
        plan,
        history: History::default(),
        clients,
        admin: Admin::default(),
        observer,
        problems: Vec::new(),
        next_value: 0,
        undo: UndoQueue::default(),
        trace: keep_trace,
        knobs,
        request_timeout_ticks,
    };
    r.note(format!("plan {plan_line}"));
    let mut violations = Vec::new();
    r.fault_phase();
    if let Err(v) = r.liveness_phase() {
        violations.push(v);
    }
    r.final_reads();

    violations.append(&mut r.observer.violations);
    violations.extend(r.problems.iter().map(|p| format!("workload: {p}")));
    let findings = checker::check_history(&r.history);
    violations.extend(findings.violations);
    if keep_trace {
        for (t, s) in &r.admin.log {
            println!("t={t} admin {s}");
        }
        for (i, op) in r.history.ops.iter().enumerate() {
            println!("op #{i} {op:?}");
        }
    }
    RunReport {
        seed,
        bugs,
        trace_hash: r.c.trace_hash(),
        history_hash: r.history.hash(),
        violations,
        inconclusive: findings.inconclusive,
        ticks: r.c.now(),
        ops: r.history.ops.len(),
        plan: plan_line,
        history: r.history,
        counters: BTreeMap::new(),
    }
}

impl Run {
    fn note(&mut self, s: String) {
        if self.trace {
            println!("t={} {s}", self.c.now());
        }
    }

    /// Nodes clients know about: every node not retired.
    fn nodes(&self) -> Vec<NodeId> {
        self.c.ids().into_iter().filter(|id| !self.admin.retired.contains(id)).collect()
    }

    fn tick(&mut self, phase: Phase) {
        let nodes = self.nodes();
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
        self.admin.poll(&mut self.c, &mut self.rng, &nodes);
        self.c.step();
        self.observer.observe(&self.c);
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
            Undo::Restart(id) => {
                if !self.admin.retired.contains(&id) {
                    self.c.restart(id);
                }
            }
            Undo::Resume(id) => self.c.resume(id),
        }
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

    fn random_of(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize])
    }

    fn outage(&mut self) -> u64 {
        10 + self.rng.below(self.plan.max_outage_ticks)
    }

    fn inject(&mut self, kind: FaultKind) {
        let nodes = self.nodes();
        let up: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|id| self.c.is_up(*id) && !self.c.is_paused(*id))
            .collect();
        match kind {
            FaultKind::Isolate => {
                // Prefer the leader half the time: that is where it hurts.
                let target = match self.c.leader() {
                    Some(l) if self.rng.below(2) == 0 => Some(l),
                    _ => self.random_of(&nodes),
                };
                if let Some(id) = target {
                    self.note(format!("isolate n{id}"));
                    self.c.isolate(id);
                    let d = self.outage();
                    self.schedule_undo(d, Undo::Heal);
                }
            }
            FaultKind::SplitHalves | FaultKind::RandomSplit => {
                let mut side_a = Vec::new();
                let mut side_b = Vec::new();
                let mut shuffled = nodes.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                for (i, id) in shuffled.iter().enumerate() {
                    let a = if kind == FaultKind::SplitHalves {
                        i < shuffled.len() / 2
                    } else {
                        self.rng.below(2) == 0
                    };
                    if a {
                        side_a.push(*id);
                    } else {
                        side_b.push(*id);
                    }
                }
                self.note(format!("split {side_a:?} | {side_b:?}"));
                for a in &side_a {
                    for b in &side_b {
                        self.c.block(*a, *b);
                        self.c.block(*b, *a);
                    }
                }
                let d = self.outage();
                self.schedule_undo(d, Undo::Heal);
            }
            FaultKind::OneWay => {
                let links = 1 + self.rng.below(3);
                for _ in 0..links {
                    let (Some(a), Some(b)) = (self.random_of(&nodes), self.random_of(&nodes))
                    else {
                        continue;
                    };
                    if a != b {
                        self.note(format!("block n{a} -> n{b}"));
                        self.c.block(a, b);
                    }
                }
                let d = self.outage();
                self.schedule_undo(d, Undo::Heal);
            }
            FaultKind::Crash => {
                let target = match self.c.leader() {
                    Some(l) if self.rng.below(2) == 0 => Some(l),
                    _ => self.random_of(&up),
                };
                if let Some(id) = target {
                    self.note(format!("crash n{id}"));
                    self.c.crash(id);
                    let d = self.outage();
                    self.schedule_undo(d, Undo::Restart(id));
                }
            }
            FaultKind::CrashMany => {
                let all = self.rng.below(2) == 0;
                let count = if all { up.len() } else { up.len() / 2 + 1 };
                let mut victims = up.clone();
                for i in (1..victims.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    victims.swap(i, j);
                }
                victims.truncate(count);
                self.note(format!("crash {victims:?}"));
                for id in victims {
                    self.c.crash(id);
                    let d = 1 + self.rng.below(40);
                    self.schedule_undo(d, Undo::Restart(id));
                }
            }
            FaultKind::Pause => {
                let target = match self.c.leader() {
                    Some(l) if self.rng.below(2) == 0 => Some(l),
                    _ => self.random_of(&up),
                };
                if let Some(id) = target {
                    self.note(format!("pause n{id}"));
                    self.c.pause(id);
                    // Longer than the election timeout (10 + jitter < 20 ticks).
                    let d = 25 + self.rng.below(80);
                    self.schedule_undo(d, Undo::Resume(id));
                }
            }
            FaultKind::Membership => self.membership(),
        }
    }

    fn membership(&mut self) {
        if self.admin.busy() {
            return;
        }
        let Some(leader) = self.c.leader() else { return };
        let Some(conf) = self.c.node(leader).map(|n| n.status().conf) else { return };
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let members = conf.all_ids().len();
        let followers: Vec<NodeId> = voters.iter().copied().filter(|v| *v != leader).collect();
        let choice = self.rng.below(4);
        let change = match choice {
            0 if members < 5 => vec![Change::Add(self.fresh_id())],
            1 if voters.len() > 3 => {
                self.random_of(&followers).map(Change::Remove).into_iter().collect()
            }
            2 if voters.len() > 3 => vec![Change::Remove(leader)],
            3 if members < 5 => {
                let new = self.fresh_id();
                let old = self.random_of(&voters).unwrap_or(leader);
                vec![Change::Add(new), Change::Remove(old)]
            }
            _ => Vec::new(),
        };
        for ch in change {
            self.note(format!("membership {ch:?}"));
            self.admin.enqueue(ch);
        }
    }

    fn fresh_id(&mut self) -> NodeId {
        let id = self.next_node_id;
        self.next_node_id += 1;
        id
    }

    /// Faults stop: heal, restart, resume. Every outstanding request must then finish, and a
    /// fresh write and linearizable read must succeed, within [`LIVENESS_TICKS`].
    fn liveness_phase(&mut self) -> Result<(), String> {
        for u in self.undo.take_all() {
            self.apply_undo(u);
        }
        self.c.heal();
        self.c.net = NetFaults::default();
        for id in self.nodes() {
            self.c.resume(id);
            self.c.restart(id);
        }
        self.note("faults over: healed, restarted, resumed".into());
        let start = self.c.now();
        while self.c.now() - start < LIVENESS_TICKS {
            if self.clients.iter().all(Client::is_idle) {
                break;
            }
            self.tick(Phase::Drain);
        }
        if let Some(cl) = self.clients.iter().find(|c| !c.is_idle()) {
            if self.trace {
                for id in self.c.ids() {
                    match self.c.node(id) {
                        Some(n) => println!("n{id}: {:?}", n.status()),
                        None => println!("n{id}: down"),
                    }
                }
            }
            let op = cl.outstanding().map(|i| format!("#{i} {:?}", self.history.ops[i]));
            return Err(format!(
                "liveness: client {} still waiting {LIVENESS_TICKS} ticks after the heal: {}",
                cl.id,
                op.unwrap_or_default()
            ));
        }
        // A fresh write and a linearizable read by every client.
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
        // Quiesce: let every node apply everything.
        for _ in 0..100 {
            self.tick(Phase::Drain);
        }
        match run_parts::unanswered_request(&self.c, self.request_timeout_ticks) {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    /// Acknowledged writes are never lost (see [`run_parts::final_reads`]); every live member
    /// agrees (digests are compared at equal applied index on the way).
    fn final_reads(&mut self) {
        let ids = self.nodes();
        run_parts::final_reads(&self.c, &ids, &mut self.history, &mut self.problems);
    }
}
