//! The "swarm" fault plan: each seed draws its own mix of faults and rates, so over many seeds
//! rare combinations are tried without every run being a uniform soup of everything.

use mokv_core::{Config, Rng};

use crate::cluster::NetFaults;

/// One kind of scheduled fault. Each seed enables a random subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut every link of one node.
    Isolate,
    /// Split the nodes into two halves.
    SplitHalves,
    /// Each node on a random side.
    RandomSplit,
    /// One-way cuts of a few random directed links.
    OneWay,
    /// Crash one node (restarted later from its disk).
    Crash,
    /// Crash a majority or all nodes at once (power loss), restarted later.
    CrashMany,
    /// Pause one node for longer than the election timeout.
    Pause,
    /// Add a learner (auto-promoted), remove a voter, remove the leader, or replace a node.
    Membership,
}

pub const ALL_KINDS: [FaultKind; 8] = [
    FaultKind::Isolate,
    FaultKind::SplitHalves,
    FaultKind::RandomSplit,
    FaultKind::OneWay,
    FaultKind::Crash,
    FaultKind::CrashMany,
    FaultKind::Pause,
    FaultKind::Membership,
];

/// Everything one run's faults are drawn from.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub voters: u64,
    pub net: NetFaults,
    pub persist_delay_ticks: u64,
    pub snapshot_threshold_entries: u64,
    pub log_keep_entries: u64,
    pub kinds: Vec<FaultKind>,
    /// Ticks of the fault phase (workload runs, faults fire).
    pub fault_ticks: u64,
    /// Mean gap between fault events.
    pub mean_gap_ticks: u64,
    /// Ticks a crashed node stays down / a partition lasts, at most.
    pub max_outage_ticks: u64,
    /// Per-mille of successful write replies the client "does not receive" (it then retries
    /// the same session seq after its timeout).
    pub reply_loss_permille: u64,
    pub clients: u64,
    /// Per-mille of linearizable reads sent to a random node instead of the known leader.
    pub follower_read_permille: u64,
    /// Client-side timeout of one attempt, in ticks.
    pub client_timeout_ticks: u64,
}

impl FaultPlan {
    /// Draws a plan from the run's RNG.
    pub fn draw(rng: &mut Rng) -> Self {
        let voters = 3 + rng.below(3);
        let loss = match rng.below(4) {
            0 => 0,
            1 => rng.below(5),
            2 => rng.below(15),
            _ => rng.below(31),
        };
        let net = NetFaults {
            loss_percent: loss,
            duplicate_percent: if rng.below(2) == 0 { 0 } else { rng.below(20) },
            delay_ticks_max: match rng.below(3) {
                0 => 0,
                1 => 1 + rng.below(3),
                _ => 1 + rng.below(15),
            },
        };
        let persist_delay_ticks = if rng.below(4) == 0 { 0 } else { 1 + rng.below(6) };
        let mut kinds: Vec<FaultKind> =
            ALL_KINDS.iter().copied().filter(|_| rng.below(100) < 55).collect();
        if kinds.is_empty() {
            kinds.push(ALL_KINDS[rng.below(ALL_KINDS.len() as u64) as usize]);
        }
        FaultPlan {
            voters,
            net,
            persist_delay_ticks,
            snapshot_threshold_entries: 5 + rng.below(60),
            log_keep_entries: rng.below(10),
            kinds,
            fault_ticks: 600 + rng.below(900),
            mean_gap_ticks: 20 + rng.below(120),
            max_outage_ticks: 30 + rng.below(250),
            reply_loss_permille: if rng.below(2) == 0 { 0 } else { rng.below(250) },
            clients: 3 + rng.below(3),
            follower_read_permille: rng.below(700),
            client_timeout_ticks: 15 + rng.below(80),
        }
    }

    /// Applies the plan's config tweaks (small snapshot thresholds) to the base config.
    pub fn tweak(&self, c: &mut Config) {
        c.snapshot_threshold_entries = self.snapshot_threshold_entries;
        c.log_keep_entries = self.log_keep_entries;
    }
}
