//! Watchers in the fault swarm (`sim::check_watch`): their event streams are compared with the
//! committed changes (complete, in order, no duplicates) across crashes, partitions, leader
//! changes and failovers to other nodes; and a planted watch bug is caught.

use mokv_core::PlantedBugs;
use sim::scenario::FaultScenario;
use sim::Violation;

/// A few seeds of the fault swarm: no watch violation, and the watchers did watch: events,
/// failovers to other nodes, and restarts after compaction all happened.
#[test]
fn watchers_follow_the_committed_changes_across_faults() {
    let mut totals = std::collections::BTreeMap::new();
    for seed in 0..12 {
        let report = sim::run::<FaultScenario>(seed, PlantedBugs::default(), false);
        assert!(report.violations.is_empty(), "{}", report.failure_line().unwrap_or_default());
        for (k, v) in &report.counters {
            if k.starts_with("watch_") {
                *totals.entry(*k).or_insert(0u64) += v;
            }
        }
    }
    println!("{totals:?}");
    for what in ["watch_events", "watch_failovers", "watch_restarts"] {
        assert!(totals.get(what).copied().unwrap_or(0) > 0, "no {what} in 12 seeds: {totals:?}");
    }
}

/// A node that keeps its watch history across a snapshot install (as if the history were
/// still complete) serves a watcher that resumes there a stream with a gap: the watch checker
/// must say so.
#[test]
fn planted_watch_skips_snapshot_boundary_is_caught() {
    let mut bugs = PlantedBugs::default();
    bugs.watch_skips_snapshot_boundary = true;
    let caught =
        sim::first_seed_caught::<FaultScenario>(0..300, bugs, |v| matches!(v, Violation::Watch(_)));
    assert!(caught.is_some(), "a watch skipping a snapshot boundary went unnoticed");
}
