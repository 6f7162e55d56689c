//! # mokv-shell: the tokio shell around `mokv-core` (bin `mokvd`)
//!
//! Moves bytes between sockets, RocksDB and the core, in the order the core asks; holds no
//! protocol decisions.
//!
//! ## What this crate owns
//! - the driver task that owns the core `Node` ([`driver`]) and the disk writer thread
//!   (group commit into RocksDB, [`disk`]);
//! - the gRPC services over mutual TLS: the client `KV` service ([`kv_service`]) and the
//!   node-to-node `Peer` service ([`peer_service`], outgoing side in [`peer_link`]), on ONE port
//!   (the peer service only admits node certificates), plus health and reflection;
//! - the one mapping from core errors to gRPC status codes ([`status`]) and the one
//!   authorization seam ([`authz`]);
//! - the gossip socket (UDP on `bind-addr`, datagrams sealed with the cluster key:
//!   [`gossip_net`], [`gossip_crypto`]); membership decisions stay in the core;
//! - configuration ([`config`]), certificates ([`certs`], [`tls`]), metrics ([`metrics`]);
//! - the seams a simulator uses to run the same node in one process ([`embedded`]): storage
//!   ([`storage`]: RocksDB or memory) and transport ([`transport`]: mTLS or the embedding
//!   program's plaintext connections, never selectable from `mokvd`'s configuration).
//!
//! ## What it must never do
//! - decide anything the core decides (what to persist, when to answer, what an error means);
//! - acknowledge a persist batch before RocksDB says it is durable;
//! - log or echo keys, values or private keys;
//! - queue without bound: every channel has a capacity and a policy when full.

pub mod authz;
pub mod certs;
pub mod config;
pub mod disk;
pub mod driver;
pub mod embedded;
pub mod gossip_crypto;
pub mod gossip_net;
pub mod kv_service;
pub mod metrics;
pub mod peer_link;
pub mod peer_service;
pub mod quota;
pub mod server;
pub mod status;
pub mod storage;
pub mod tls;
pub mod transport;

/// Upper bound for `max-value-bytes` (a value travels in one Raft message).
pub const MAX_VALUE_BYTES_LIMIT: usize = 16 << 20;
