//! `mokv-sim`: runs simulator seeds outside the test harness, on every core.
//!
//! ```text
//! cargo run -p sim --bin mokv-sim -- swarm  --first 2000000 --seeds 100000
//! cargo run -p sim --bin mokv-sim -- gossip --first 2000000 --seeds 20000
//! cargo run -p sim --bin mokv-sim -- swarm  --replay 1002870 [--trace] [--bugs stale_follower_reads]
//! cargo run -p sim --bin mokv-sim -- swarm  --first 0 --seeds 2000 --hashes > swarm-hashes.txt
//! ```
//! `--hashes` prints one line per seed, in seed order (`seed trace history ticks ops violations`):
//! the behaviour witness a refactor compares before and after.
//! Exits 1 when a seed fails; every failure prints one line with its replay command.

use mokv_core::PlantedBugs;
use sim::runner::parse_bugs;
use sim::swarm::{print_replay, run_range, SwarmKind};

fn usage() -> ! {
    eprintln!(
        "usage: mokv-sim swarm|gossip [--first N] [--seeds N] [--bugs LIST] | \
         swarm|gossip --replay SEED [--trace] [--bugs LIST] | \
         swarm|gossip [--first N] [--seeds N] --hashes"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("swarm") => SwarmKind::Faults,
        Some("gossip") => SwarmKind::Gossip,
        _ => usage(),
    };
    let (mut first, mut seeds, mut replay, mut trace, mut hashes) =
        (0u64, 1_000u64, None, false, false);
    let mut bugs = PlantedBugs::default();
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| usage());
        match a.as_str() {
            "--first" => first = num(),
            "--seeds" => seeds = num(),
            "--replay" => replay = Some(num()),
            "--trace" => trace = true,
            "--hashes" => hashes = true,
            "--bugs" => bugs = parse_bugs(&args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if let Some(seed) = replay {
        let report = kind.run(seed, bugs, trace);
        print_replay(&report);
        std::process::exit(i32::from(!report.violations.is_empty()));
    }
    if hashes {
        print_hashes(kind, first, seeds, bugs);
        return;
    }
    let summary = run_range(kind, first, seeds, bugs);
    std::process::exit(i32::from(!summary.failures.is_empty()));
}

/// One line per seed in seed order: what a behaviour-preserving change must leave identical.
fn print_hashes(kind: SwarmKind, first: u64, seeds: u64, bugs: PlantedBugs) {
    let lines = std::sync::Mutex::new(std::collections::BTreeMap::new());
    sim::swarm::run_parallel(kind.name(), first, seeds, |seed| {
        let r = kind.run(seed, bugs, false);
        let line = format!(
            "{seed} trace={:016x} history={:016x} ticks={} ops={} violations={}",
            r.trace_hash,
            r.history_hash,
            r.ticks,
            r.ops,
            r.violations.len()
        );
        lines.lock().unwrap_or_else(|e| e.into_inner()).insert(seed, line);
        sim::swarm::SeedOutcome::default()
    });
    for line in lines.into_inner().unwrap_or_else(|e| e.into_inner()).values() {
        println!("{line}");
    }
}
