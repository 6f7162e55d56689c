//! # sim: deterministic simulation of whole mokv clusters
//!
//! Level 1 runs `mokv-core` nodes in one thread on a virtual clock with a simulated network and
//! simulated disks ([`cluster::Cluster`]). Every random choice comes from the run's seed, so a
//! seed replays bit for bit.
//!
//! One runner ([`runner::run`]) drives every kind of run: a [`runner::Scenario`] draws its plan
//! from the seed (which faults, how often, how lossy the network: swarm probabilities per
//! seed), forms the cluster, injects faults and operates the cluster, and says what
//! "converged" means after the heal; the runner drives concurrent clients ([`workload`]) whose
//! operations are recorded ([`history`]), then checks the history and the cluster
//! ([`checker`], [`linearizability`]), the watchers ([`check_watch`]) and the lease holders
//! ([`check_lease`]). What is wrong comes back typed ([`violation`]); the
//! trace hash is taken over encoded bytes ([`trace`]).
//!
//! Scenarios ([`scenario`]): the swarm ([`scenario::FaultScenario`]: every network and process
//! fault, membership changed by an operator) and the gossip swarm ([`scenario::GossipScenario`]:
//! the cluster forms and changes through SWIM gossip and the leader's reconciler — joins by seed
//! address, graceful leaves, crashes, wiped disks, partitions of gossip or Raft traffic only —
//! and the Raft configuration must converge after the heal). [`swarm`] runs ranges of seeds.
//!
//! This crate never touches real sockets, disks or clocks.
//!
//! Level 2 (`tests/shell_turmoil.rs` with `tests/level2/`) runs the real shell and client over
//! turmoil's simulated network and checks its histories with the same [`checker`].

pub mod check_lease;
pub mod check_watch;
pub mod checker;
pub mod cluster;
pub mod harness;
pub mod history;
pub mod linearizability;
pub mod runner;
pub mod scenario;
pub mod swarm;
pub mod trace;
pub mod violation;
pub mod workload;

pub use cluster::{Cluster, NetFaults};
pub use runner::{first_seed_caught, run, RunReport, Scenario};
pub use violation::Violation;
