//! What every run has, whatever its scenario: the cluster, the run's RNG, the clients and their
//! history, the observer, and the queue of scheduled fault undos. Scenarios act on a run
//! through it.

use std::collections::BTreeMap;

use mokv_core::{NodeId, Rng};

use crate::check_lease::LeaseHolders;
use crate::check_watch::Watches;
use crate::checker::Observer;
use crate::cluster::Cluster;
use crate::history::History;
use crate::workload::{Client, Problems, WorkloadKnobs};

/// Ticks of a run's fault phase and how densely faults come, drawn per seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTiming {
    /// Ticks of the fault phase (the workload runs, faults fire).
    pub fault_ticks: u64,
    /// Mean gap between fault events.
    pub mean_gap_ticks: u64,
    /// Ticks a fault lasts at most, beyond a minimum of 10 (see [`Harness::outage`]).
    pub max_outage_ticks: u64,
}

/// A scheduled undo of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Undo {
    /// Every cut link restored.
    Heal,
    /// A crashed node started again from its disk.
    Restart(NodeId),
    /// A paused node running again.
    Resume(NodeId),
}

/// Undos by (due tick, scheduling order): fired in that order, so a seed replays exactly.
#[derive(Debug, Default)]
pub struct UndoQueue {
    due: BTreeMap<(u64, u64), Undo>,
    seq: u64,
}

impl UndoQueue {
    /// Schedules `u` at least one tick after `now`.
    pub fn schedule(&mut self, now: u64, after: u64, u: Undo) {
        self.seq += 1;
        self.due.insert((now + after.max(1), self.seq), u);
    }

    /// The next undo due at `now`, if any.
    pub fn pop_due(&mut self, now: u64) -> Option<Undo> {
        let (&key, &u) = self.due.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.due.remove(&key);
        Some(u)
    }

    /// True when `u` is scheduled.
    pub fn contains(&self, u: Undo) -> bool {
        self.due.values().any(|v| *v == u)
    }

    /// Everything still pending, in due order (the queue is left empty).
    pub fn take_all(&mut self) -> Vec<Undo> {
        std::mem::take(&mut self.due).into_values().collect()
    }
}

/// One run's shared state. Every random choice of the run (faults, the workload, the operator)
/// comes from [`Harness::rng`], in a fixed order, so a seed replays bit for bit.
#[derive(Debug)]
pub struct Harness {
    pub c: Cluster,
    pub rng: Rng,
    pub history: History,
    pub clients: Vec<Client>,
    pub observer: Observer,
    /// Watchers and the committed change log they are checked against.
    pub watches: Watches,
    /// Lease holders, checked as they go.
    pub leases: LeaseHolders,
    pub problems: Problems,
    pub knobs: WorkloadKnobs,
    /// The last value a write of this run carries (every written value is unique).
    pub next_value: u64,
    pub undo: UndoQueue,
    pub timing: FaultTiming,
    /// The core's request timeout: no node may hold a request longer (plus a margin).
    pub request_timeout_ticks: u64,
    /// Print the readable trace as the run goes.
    pub trace: bool,
    /// What happened, by kind (joins, leaves, wipes, ...), for summaries.
    pub counters: BTreeMap<&'static str, u64>,
}

impl Harness {
    /// Prints `s` at the current tick when the trace is on.
    pub fn note(&self, s: String) {
        if self.trace {
            println!("t={} {s}", self.c.now());
        }
    }

    /// Counts one event of kind `what`.
    pub fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    /// A uniformly drawn element of `ids`; no draw when it is empty.
    pub fn random_of(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize])
    }

    /// `v` in a uniformly drawn order (Fisher-Yates from the back).
    pub fn shuffled(&mut self, mut v: Vec<NodeId>) -> Vec<NodeId> {
        for i in (1..v.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }

    /// How long a fault lasts: at least 10 ticks, at most `10 + max_outage_ticks - 1`.
    pub fn outage(&mut self) -> u64 {
        10 + self.rng.below(self.timing.max_outage_ticks)
    }

    /// Schedules `u` `after` ticks from now.
    pub fn schedule_undo(&mut self, after: u64, u: Undo) {
        self.undo.schedule(self.c.now(), after, u);
    }

    /// With the trace on: every node's status and gossip view.
    pub fn dump_views(&self) {
        if !self.trace {
            return;
        }
        for id in self.c.ids() {
            let Some(n) = self.c.node(id) else {
                println!("n{id}: down");
                continue;
            };
            println!("n{id}: {:?}", n.status());
            if let Some(me) = n.gossip_identity() {
                println!("    me {me:?}");
            }
            for m in n.gossip_members() {
                println!("    {:?} {:?}", m.health, m.id);
            }
        }
    }
}
