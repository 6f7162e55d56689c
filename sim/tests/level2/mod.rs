//! Level 2 of the simulator: the real shell (gRPC services, driver, core) and the real client
//! over turmoil's simulated network, with the level-1 history checkers.
//!
//! Replaced, and only these: the network (turmoil TCP instead of the kernel's), the disk
//! (`MemoryStorage` instead of RocksDB) and TLS (plaintext; callers identified by host name).

#![allow(dead_code)] // each test file uses a part

pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod workload;
