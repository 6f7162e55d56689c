//! Running a range of seeds on every core: the swarm tests and the `mokv-sim` binary both come
//! through here, so a range prints the same lines wherever it runs (on stderr, past the test
//! harness's capture).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mokv_core::PlantedBugs;

use crate::runner::{self, RunReport};
use crate::scenario::{FaultScenario, GossipScenario};

/// Which scenario a swarm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmKind {
    /// Operator-driven membership, every network fault ([`FaultScenario`]).
    Faults,
    /// Gossip-driven membership ([`GossipScenario`]).
    Gossip,
}

impl SwarmKind {
    pub fn name(self) -> &'static str {
        match self {
            SwarmKind::Faults => "swarm",
            SwarmKind::Gossip => "gossip swarm",
        }
    }

    /// Runs one seed of this kind (see [`runner::run`]).
    pub fn run(self, seed: u64, bugs: PlantedBugs, trace: bool) -> RunReport {
        match self {
            SwarmKind::Faults => runner::run::<FaultScenario>(seed, bugs, trace),
            SwarmKind::Gossip => runner::run::<GossipScenario>(seed, bugs, trace),
        }
    }
}

/// What a range of seeds gave.
#[derive(Debug, Clone)]
pub struct SwarmSummary {
    /// What ran: "swarm", "gossip swarm", "level-2 swarm".
    pub name: &'static str,
    pub first_seed: u64,
    pub seeds: u64,
    /// Failure lines in seed order.
    pub failures: Vec<(u64, String)>,
    pub inconclusive: usize,
    pub seconds: f64,
    pub threads: usize,
}

impl SwarmSummary {
    /// `seeds <first>..<last>`: the half-open range that ran.
    pub fn range(&self) -> String {
        format!("seeds {}..{}", self.first_seed, self.first_seed + self.seeds)
    }

    /// One line: what ran, how fast, what failed.
    pub fn line(&self) -> String {
        format!(
            "{}: {} ({} seeds) on {} threads in {:.1} s: {:.1} seeds/s, {} failed, {} \
             linearizability checks inconclusive",
            self.name,
            self.range(),
            self.seeds,
            self.threads,
            self.seconds,
            self.seeds as f64 / self.seconds.max(1e-9),
            self.failures.len(),
            self.inconclusive
        )
    }

    /// Prints the summary and fails the calling test if any seed failed.
    pub fn assert_clean(&self) {
        println!("{}", self.line());
        let lines: Vec<&str> = self.failures.iter().map(|(_, l)| l.as_str()).collect();
        assert!(lines.is_empty(), "{} seeds failed:\n{}", lines.len(), lines.join("\n"));
    }
}

/// A seed count from the environment variable `var`, else `default`.
pub fn seeds_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// The first seed of every swarm: `MOKV_SIM_FIRST_SEED`, else 0. Any start works, so a range
/// nobody has run before is one variable away, and every failure still prints its own seed.
pub fn first_seed() -> u64 {
    seeds_from_env("MOKV_SIM_FIRST_SEED", 0)
}

/// Threads to run seeds on: `MOKV_SIM_THREADS`, else every core.
pub fn threads() -> usize {
    std::env::var("MOKV_SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What one seed gave: its failure line, if it failed, and its inconclusive checks.
#[derive(Debug, Clone, Default)]
pub struct SeedOutcome {
    pub failure: Option<String>,
    pub inconclusive: usize,
}

/// Runs `run` for seeds `first_seed .. first_seed + seeds` on [`threads`] threads, each thread
/// taking the next seed when it is done with one. Each failure line is printed as it is
/// found; the range goes to stderr first and the summary line last.
pub fn run_parallel<F>(name: &'static str, first_seed: u64, seeds: u64, run: F) -> SwarmSummary
where
    F: Fn(u64) -> SeedOutcome + Sync,
{
    let threads = threads().min(seeds.max(1) as usize);
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let inconclusive = AtomicU64::new(0);
    let started = Instant::now();
    log_line(&format!(
        "{name}: running seeds {first_seed}..{} on {threads} threads",
        first_seed + seeds
    ));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= seeds {
                    break;
                }
                let seed = first_seed + i;
                let outcome = run(seed);
                inconclusive.fetch_add(outcome.inconclusive as u64, Ordering::Relaxed);
                if let Some(line) = outcome.failure {
                    println!("{line}");
                    failures.lock().unwrap_or_else(|e| e.into_inner()).push((seed, line));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    let summary = SwarmSummary {
        name,
        first_seed,
        seeds,
        failures,
        inconclusive: inconclusive.into_inner() as usize,
        seconds: started.elapsed().as_secs_f64(),
        threads,
    };
    log_line(&summary.line());
    summary
}

/// Writes a line to stderr past the test harness's output capture (which only takes the
/// `print!` family), so a CI log shows which seeds ran and how fast even when all passed.
fn log_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs seeds `first_seed .. first_seed + seeds` of `kind` with `bugs` on every core.
pub fn run_range(kind: SwarmKind, first_seed: u64, seeds: u64, bugs: PlantedBugs) -> SwarmSummary {
    run_parallel(kind.name(), first_seed, seeds, |seed| {
        let report = kind.run(seed, bugs, false);
        SeedOutcome { failure: report.failure_line(), inconclusive: report.inconclusive.len() }
    })
}

/// Prints what a replayed seed gave: its plan, hashes and violations.
pub fn print_replay(report: &RunReport) {
    let seed = report.seed;
    println!("seed={seed} plan: {}", report.plan);
    println!(
        "seed={seed} trace_hash={:016x} history_hash={:016x} ticks={} ops={}",
        report.trace_hash, report.history_hash, report.ticks, report.ops
    );
    for i in &report.inconclusive {
        println!("inconclusive: {i}");
    }
    for v in &report.violations {
        println!("violation: {v}");
    }
}
