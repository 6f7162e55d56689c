//! # sim: deterministic simulation of whole mokv clusters
//!
//! Level 1 runs `mokv-core` nodes in one thread on a virtual clock with a simulated network and
//! simulated disks ([`cluster::Cluster`]). Every random choice comes from the run's seed, so a
//! seed replays bit for bit.
//!
//! A run ([`run::run_seed`]) draws a swarm fault plan ([`faults`]), drives concurrent clients
//! ([`workload`]) whose operations are recorded ([`history`]), then checks the history and the
//! cluster ([`checker`], [`linearizability`]).
//!
//! Gossip runs ([`gossip_run::run_gossip_seed`]) let the cluster form and change through SWIM
//! gossip and the leader's reconciler instead (joins by seed address, graceful leaves, crashes,
//! wiped disks, partitions of gossip or Raft traffic only) and check that the Raft
//! configuration converges after the heal, besides every history checker.
//!
//! This crate never touches real sockets, disks or clocks.
//!
//! Level 2 (`tests/shell_turmoil.rs` with `tests/level2/`) runs the real shell and client over
//! turmoil's simulated network and checks its histories with the same [`checker`].

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod gossip_run;
pub mod history;
pub mod linearizability;
pub mod run;
mod run_parts;
pub mod swarm;
pub mod workload;

pub use cluster::{Cluster, NetFaults};
pub use run::{run_seed, RunReport};
