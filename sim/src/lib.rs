//! # sim: deterministic simulation of whole mokv clusters
//!
//! Level 1 runs `mokv-core` nodes in one thread on a virtual clock with a simulated network and
//! simulated disks ([`cluster::Cluster`]). Every random choice comes from the run's seed, so a
//! seed replays bit for bit.
//!
//! This crate never touches real sockets, disks or clocks.

pub mod cluster;

pub use cluster::{Cluster, NetFaults};
