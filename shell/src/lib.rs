//! # mokv-shell: the tokio shell around `mokv-core` (bin `mokvd`)
//!
//! Moves bytes between sockets, RocksDB and the core, in the order the core asks; holds no
//! protocol decisions.
//!
//! ## What this crate owns
//! - the node (`node`): the driver task that owns the core `Node` and
//!   the disk writer thread (group commit into RocksDB), and starting and stopping a node
//!   ([`start`], [`RunningNode`]);
//! - the network (`net`): the gRPC services over mutual TLS, the client `KV` service and the
//!   node-to-node `Peer` service on ONE port (the peer service only admits node certificates),
//!   plus health and reflection; the one mapping from core errors to gRPC status codes (driven
//!   by `mokv_core::ErrorClass`); the outgoing peer links; the gossip socket (UDP on
//!   `bind-addr`; membership decisions stay in the core);
//! - security (`security`): TLS and the caller's identity, the one authorization seam, the
//!   certificates of `mokvd certs` ([`certs`]), the cluster key that seals gossip datagrams;
//! - storage (`storage`): RocksDB, or memory for an embedding program;
//! - configuration ([`config`]) and metrics ([`metrics`]);
//! - the API a program uses to run the same node in one process over its own network
//!   ([`embed`]: the simulator's level 2); `mokvd` never takes that path.
//!
//! Only what `mokvd`, the tests and the simulator use is public: `node`, `net`, `security` and
//! `storage` are private modules, and the items other crates need are re-exported here, each
//! under one path.
//!
//! ## What it must never do
//! - decide anything the core decides (what to persist, when to answer, what an error means);
//! - acknowledge a persist batch before RocksDB says it is durable;
//! - log or echo keys, values or private keys;
//! - queue without bound: every channel has a capacity and a policy when full.

pub mod config;
pub mod embed;
pub mod metrics;
mod net;
mod node;
mod security;
mod storage;

pub use node::driver::{CallError, DriverError, View};
pub use node::handle::NodeHandle;
pub use node::server::{start, RunningNode, StartError};
pub use security::authz::{
    AuthzError, DEFAULT_MODEL as DEFAULT_ACL_MODEL, DEFAULT_POLICY as DEFAULT_ACL_POLICY,
    RELOAD_INTERVAL as ACL_RELOAD_INTERVAL,
};
pub use security::certs;
pub use security::tls::{
    install_crypto_provider, ReloadableServerTls, TlsError, CERT_RELOAD_INTERVAL,
};
pub use storage::disk::DiskError;
pub use storage::restore;

/// Upper bound for `max-value-bytes` (a value travels in one Raft message).
pub const MAX_VALUE_BYTES_LIMIT: usize = 16 << 20;
