//! `mokv-sim`: runs simulator seeds outside the test harness, on every core.
//!
//! ```text
//! cargo run -p sim --bin mokv-sim -- swarm  --first 2000000 --seeds 100000
//! cargo run -p sim --bin mokv-sim -- gossip --first 2000000 --seeds 20000
//! cargo run -p sim --bin mokv-sim -- swarm  --replay 1002870 [--trace] [--bugs stale_follower_reads]
//! ```
//! Exits 1 when a seed fails; every failure prints one line with its replay command.

use mokv_core::PlantedBugs;
use sim::run::parse_bugs;
use sim::swarm::{print_replay, run_range, SwarmKind};

fn usage() -> ! {
    eprintln!(
        "usage: mokv-sim swarm|gossip [--first N] [--seeds N] [--bugs LIST] | \
         swarm|gossip --replay SEED [--trace] [--bugs LIST]"
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
    let (mut first, mut seeds, mut replay, mut trace) = (0u64, 1_000u64, None, false);
    let mut bugs = PlantedBugs::default();
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| usage());
        match a.as_str() {
            "--first" => first = num(),
            "--seeds" => seeds = num(),
            "--replay" => replay = Some(num()),
            "--trace" => trace = true,
            "--bugs" => bugs = parse_bugs(&args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if let Some(seed) = replay {
        let report = kind.run(seed, bugs, trace);
        print_replay(&report);
        std::process::exit(i32::from(!report.violations.is_empty()));
    }
    let summary = run_range(kind, first, seeds, bugs);
    std::process::exit(i32::from(!summary.failures.is_empty()));
}
