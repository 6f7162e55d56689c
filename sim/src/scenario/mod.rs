//! The scenarios the [runner](crate::runner) drives:
//!
//! - [`faults::FaultScenario`]: a formed cluster under every network and process fault, its
//!   membership changed by an operator through requests (the "swarm");
//! - [`gossip::GossipScenario`]: a cluster that forms, grows, shrinks and heals through SWIM
//!   gossip and the leader's reconciler, and must converge after the heal (the "gossip swarm"),
//!   with forgers gossiping identities no node proves ([`forgery`]) in half of its seeds.

pub mod faults;
pub mod forgery;
pub mod gossip;

pub use faults::FaultScenario;
pub use gossip::GossipScenario;

use mokv_core::{Config, Rng};

/// Salt of the stream [`small_log_budget`] is drawn from (its own stream, so that the plans'
/// draws stay what they were).
const LOG_BUDGET_SALT: u64 = 0x109b_0d6e_109b_0d6e;

/// Half of the seeds run with an in-memory log budget of 2–16 KiB (a few dozen of the
/// simulator's entries), so that memory drops entries past the last snapshot, followers fall
/// behind it and snapshots are taken on demand; the others keep the default.
pub fn small_log_budget(seed: u64) -> Option<u64> {
    let mut rng = Rng::new(seed ^ LOG_BUDGET_SALT);
    (rng.below(2) == 0).then(|| (2 << 10) + rng.below(14 << 10))
}

/// Applies a plan's [`small_log_budget`] to the in-memory log and to the uncommitted bytes (so
/// that leaders also refuse proposals as busy), with append messages that fit in it.
fn apply_log_budget(budget: Option<u64>, c: &mut Config) {
    if let Some(budget) = budget {
        c.max_in_memory_log_bytes = budget;
        c.max_uncommitted_log_bytes = budget;
        c.max_append_bytes = c.max_append_bytes.min(budget);
    }
}
