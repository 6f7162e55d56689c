//! One level-2 run: the simulation, the control host's common steps (wait for the cluster,
//! heal, let the workload finish, converge, final reads) and the verdict.

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use mokv_client::ReadMode;
use mokv_core::PlantedBugs;
use sim::checker::check_history;
use sim::history::Outcome;
use sim::workload::KEYS;
use turmoil::Sim;

use super::cluster::{self, Registry, NODE_HOSTS};
use super::workload::{HostAction, Recorder, Shared};

/// Bound on forming the cluster (bootstrap, two joins, promotions).
const FORM_WITHIN: Duration = Duration::from_secs(30);
/// Bound on the workload clients finishing their last operation after `stop`.
const STOP_WITHIN: Duration = Duration::from_secs(60);
/// Bound on every node applying everything after the last heal.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// The seed of a named test: `MOKV_SIM_SEED` if set, else the test's fixed one.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("MOKV_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A simulation seeded by `seed`: turmoil's RNG (message latencies, the order in which hosts
/// run within a step), the latency bound, and a fixed epoch.
pub fn sim<'a>(seed: u64) -> Sim<'a> {
    let max_latency_ms = 2 + mokv_core::Rng::new(seed ^ 0x6c61_7465).below(40);
    turmoil::Builder::new()
        .rng_seed(seed)
        .enable_random_order()
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(900))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(max_latency_ms))
        // Room for HTTP/2 bursts; a full buffer would reset connections that are healthy.
        .tcp_capacity(4096)
        .build()
}

/// Everything one run produced.
#[derive(Debug)]
pub struct Verdict {
    pub seed: u64,
    pub scenario: &'static str,
    pub violations: Vec<String>,
    pub inconclusive: usize,
    pub ops: usize,
    pub history_hash: u64,
    pub sim_ms: u64,
    pub trace: Vec<String>,
}

impl Verdict {
    /// The one line a failure prints. Swarm seeds replay with the `replay` test, the named
    /// scenarios with their own test.
    pub fn failure_line(&self) -> Option<String> {
        let first = self.violations.first()?;
        let test = if self.scenario == "swarm" { "replay" } else { self.scenario };
        Some(format!(
            "seed={} scenario={} violation={first}; replay: MOKV_SIM_SEED={} cargo test -p sim \
             --test shell_turmoil {test} -- --exact --nocapture",
            self.seed, self.scenario, self.seed
        ))
    }

    /// Panics with the failure line (and the run's notes) if anything was found.
    pub fn assert_clean(&self) {
        if let Some(line) = self.failure_line() {
            panic!(
                "{line}\nall findings:\n  {}\ntrace:\n  {}",
                self.violations.join("\n  "),
                self.trace.join("\n  ")
            );
        }
    }
}

/// Builds a run: the nodes, `setup` (clients, the control host), then runs it to the end and
/// checks the history.
pub fn run(
    seed: u64,
    scenario: &'static str,
    bugs: PlantedBugs,
    setup: impl FnOnce(&mut Sim<'_>, &Registry, &Rc<Shared>),
) -> Verdict {
    run_tuned(seed, scenario, bugs, |_| {}, setup)
}

/// [`run`] with every core's configuration changed by `tune` (see `cluster::add_nodes`).
pub fn run_tuned(
    seed: u64,
    scenario: &'static str,
    bugs: PlantedBugs,
    tune: fn(&mut mokv_core::Config),
    setup: impl FnOnce(&mut Sim<'_>, &Registry, &Rc<Shared>),
) -> Verdict {
    if let Ok(filter) = std::env::var("MOKV_SIM_LOG") {
        // The shell's own logs, e.g. MOKV_SIM_LOG=mokv_shell=info (turmoil names the host).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let mut sim = sim(seed);
    let registry = cluster::add_nodes(&mut sim, seed, bugs, tune);
    let shared = Shared::new();
    setup(&mut sim, &registry, &shared);
    let mut leaders = LeadersPerTerm::default();
    let result = loop {
        match sim.step() {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        leaders.observe(&registry, &shared, sim.elapsed().as_millis() as u64);
        let actions: Vec<HostAction> = shared.host_actions.borrow_mut().drain(..).collect();
        for a in actions {
            match a {
                HostAction::Crash(host) => {
                    // Its last view must not pass for a live node's.
                    registry.borrow_mut().remove(&host);
                    sim.crash(host.as_str());
                }
                HostAction::Restart(host) => sim.bounce(host.as_str()),
            }
        }
    };
    let sim_ms = sim.elapsed().as_millis() as u64;
    let mut violations = Vec::new();
    if let Err(e) = result {
        violations.push(format!("the simulation failed: {e}"));
    }
    violations.extend(shared.problems.borrow().iter().cloned());
    let history = shared.history.borrow();
    let findings = check_history(&history);
    violations.extend(findings.violations.iter().map(ToString::to_string));
    if std::env::var_os("MOKV_SIM_TRACE").is_some() {
        for n in shared.trace.borrow().iter() {
            println!("{n}");
        }
        for (i, op) in history.ops.iter().enumerate() {
            println!("#{i} {op:?}");
        }
    }
    let trace = shared.trace.borrow().clone();
    Verdict {
        seed,
        scenario,
        violations,
        inconclusive: findings.inconclusive.len(),
        ops: history.ops.len(),
        history_hash: history.hash(),
        sim_ms,
        trace,
    }
}

/// At most one leader per term, from the nodes' views after every simulation step (1 ms of
/// simulated time), as level 1 checks it from the core's events.
#[derive(Debug, Default)]
struct LeadersPerTerm {
    seen: std::collections::BTreeMap<u64, String>,
    reported: std::collections::BTreeSet<u64>,
}

impl LeadersPerTerm {
    fn observe(&mut self, registry: &Registry, shared: &Shared, now_ms: u64) {
        for (node, h) in registry.borrow().iter() {
            let s = h.view().status;
            if s.role != mokv_core::Role::Leader {
                continue;
            }
            match self.seen.get(&s.term) {
                Some(other) if other != node && self.reported.insert(s.term) => {
                    shared.problem(format!(
                        "two leaders in term {}: {other} and {node} (t={now_ms}ms)",
                        s.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.seen.insert(s.term, node.clone());
                }
            }
        }
    }
}

/// Polls `cond` every 20 ms of simulated time, for at most `within`.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits for the cluster to form (all nodes voters, one leader); a problem if it does not.
pub async fn formed(registry: &Registry, shared: &Shared) -> bool {
    let ok = wait_until(FORM_WITHIN, || {
        cluster::admit_joiners(registry);
        cluster::formed(registry)
    })
    .await;
    if ok {
        shared.note(format!("cluster formed, leader {:?}", cluster::leader(registry)));
    } else {
        shared.problem("liveness: the cluster did not form");
    }
    ok
}

/// Heals every link between every pair of the run's hosts (partitions and holds).
pub fn heal_all(hosts: &[&str]) {
    for (i, a) in hosts.iter().enumerate() {
        for b in &hosts[i + 1..] {
            turmoil::repair(*a, *b);
            turmoil::release(*a, *b);
        }
    }
}

/// The end of every run, after the last heal: the workload stops, every node applies
/// everything, and the final state joins the history as linearizable reads of every key
/// (acknowledged writes are never lost). Each node's local (serializable) view of the whole key
/// space must then be the same.
pub async fn finish(registry: &Registry, shared: &Rc<Shared>, seed: u64) {
    finish_on(registry, shared, seed, &NODE_HOSTS).await;
}

/// [`finish`] for a cluster whose members are `nodes` (after a membership change).
pub async fn finish_on(registry: &Registry, shared: &Rc<Shared>, seed: u64, nodes: &[&str]) {
    shared.stop.set(true);
    if !wait_until(STOP_WITHIN, || shared.running.get() == 0).await {
        shared.problem("liveness: a client did not finish its operation after the heal");
    }
    if !wait_until(CONVERGE_WITHIN, || cluster::converged(registry)).await {
        shared.problem("liveness: the nodes did not converge after the heal");
        return;
    }
    shared.note("converged");
    let mut r = Recorder::new(shared, 0, nodes, seed ^ 0xf1);
    for key in KEYS {
        if let Outcome::ReadFailed = r.get(key, ReadMode::Linearizable).await {
            shared.problem(format!("liveness: the final read of {key} failed after the heal"));
        }
    }
    let mut views = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut local = Recorder::new(shared, 100 + i as u64, &[node], seed ^ i as u64);
        views.push((node, local.range(ReadMode::Serializable).await));
    }
    if let Some((first, view)) = views.first() {
        for (node, other) in &views[1..] {
            if other != view {
                shared.problem(format!(
                    "after convergence {node} holds other data than {first}: {other:?} / {view:?}"
                ));
            }
        }
    }
}

/// Registers the control host `ctl` running `script`.
pub fn control<F>(sim: &mut Sim<'_>, script: F)
where
    F: Future<Output = ()> + 'static,
{
    sim.client("ctl", async move {
        script.await;
        Ok(())
    });
}
