//! Watchers in the fault swarm (`sim::check_watch`): their event streams are compared with the
//! committed changes (complete, in order, no duplicates) across crashes, partitions, leader
//! changes and failovers to other nodes; and a planted watch bug is caught.

use mokv_core::PlantedBugs;
use sim::scenario::FaultScenario;
use sim::Violation;

/// Seeds of the fault swarm from 0 on, until the watchers have done every kind of watching:
/// events, failovers to other nodes, and restarts after compaction (everyone compacted past a
/// watcher: the rarest). No watch violation on any of them; all three within `MAX_SEEDS`.
#[test]
fn watchers_follow_the_committed_changes_across_faults() {
    const MAX_SEEDS: u64 = 200;
    const KINDS: [&str; 3] = ["watch_events", "watch_failovers", "watch_restarts"];
    let mut totals = std::collections::BTreeMap::new();
    let mut seeds = 0;
    while seeds < MAX_SEEDS && !KINDS.iter().all(|k| totals.get(k).copied().unwrap_or(0) > 0) {
        let report = sim::run::<FaultScenario>(seeds, PlantedBugs::default(), false);
        assert!(report.violations.is_empty(), "{}", report.failure_line().unwrap_or_default());
        for (k, v) in &report.counters {
            if k.starts_with("watch_") {
                *totals.entry(*k).or_insert(0u64) += v;
            }
        }
        seeds += 1;
    }
    println!("{seeds} seeds: {totals:?}");
    for what in KINDS {
        assert!(
            totals.get(what).copied().unwrap_or(0) > 0,
            "no {what} in {seeds} seeds: {totals:?}"
        );
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
