//! # mokv-client
//!
//! The Rust client of mokv clusters: give it one or more seed endpoints and mutual-TLS files;
//! it learns the other members through `GetServers`, sends writes to the leader (following the
//! leader hint a follower returns, without an extra round trip), spreads reads over healthy
//! followers, and retries what is safe to retry within each call's deadline. Writes carry a
//! session `(client_id, seq)`, so a write retried after a lost answer is applied once — also
//! with many writes in flight.
//!
//! [`Client`] is `Clone + Send + Sync` and its methods take `&self`: one client serves a whole
//! program, every call multiplexed over one HTTP/2 connection per node.
//!
//! ```no_run
//! use mokv_client::{Client, ClientConfig, ReadFrom, ReadMode, ReadOptions, TlsFiles};
//!
//! # async fn demo() -> Result<(), mokv_client::ClientError> {
//! let tls = TlsFiles {
//!     ca: "certs/ca.pem".into(),
//!     cert: "certs/app.pem".into(),
//!     key: "certs/app-key.pem".into(),
//! };
//! // One address is enough: the other members are discovered.
//! let client = Client::connect(ClientConfig::new(vec!["10.0.0.1:8400".into()], tls))?;
//! client.set("app/greeting", b"hello").await?;
//! let entry = client.get("app/greeting", ReadMode::Linearizable).await?;
//! assert_eq!(entry.map(|e| e.value), Some(b"hello".to_vec()));
//! // Per call: read from the leader, serializable (local state, may be stale), ...
//! let opts = ReadOptions::new().from(ReadFrom::Leader).mode(ReadMode::Serializable);
//! let _ = client.get("app/greeting", opts).await?;
//! # Ok(()) }
//! ```
//!
//! Calls never panic on server or network errors: every failure is a [`ClientError`]. See
//! `examples/quickstart.rs` for a complete program (concurrent writers, streams).

#![warn(missing_docs)]

mod admin;
mod client;
mod config;
mod discovery;
mod error;
mod lease;
mod maintenance;
mod retry;
mod sessions;
mod stream;
mod tls;
mod transport;
mod txn;
mod types;
mod view;
mod watch;

pub use admin::{Admin, ClusterStatus, MemberEntry, MemberStatus, RaftRole};
pub use client::Client;
pub use config::{ClientConfig, RangeOptions, ReadFrom, ReadMode, ReadOptions};
pub use error::ClientError;
pub use futures_core::Stream;
pub use lease::{KeepAliveState, Lease, LeaseKeeper, LeaseTtl};
pub use maintenance::{SnapshotStream, SnapshotSummary};
pub use tls::{default_dev_dir, TlsFiles};
pub use transport::{ChannelFactory, Plaintext};
pub use txn::{Txn, TxnOp, TxnOutcome, TxnResult};
pub use types::{CasOutcome, Condition, Entry, Health, KeyRevisions, Member, NodeInfo, Role};
pub use watch::{EventKind, WatchEvent, WatchOptions};

/// Locks `m`, also when a panic elsewhere poisoned it (every critical section here leaves the
/// data consistent at each step).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
