//! # mokv-client
//!
//! A client for mokv clusters: it connects over mutual TLS to every endpoint it is given, sends
//! writes to the leader (following the leader hint that a follower returns with UNAVAILABLE),
//! spreads linearizable reads round-robin over all nodes (every node answers them through
//! ReadIndex, so they are never stale), and retries what is safe to retry. Writes carry a
//! session `(client_id, seq)`, so a write retried after a lost answer is applied once.
//!
//! It never panics on server errors: every failure is a [`ClientError`].

mod client;
mod error;
mod tls;
mod transport;

pub use client::{Client, ClientConfig, Entry, Member, ReadMode};
pub use error::ClientError;
pub use tls::{default_dev_dir, TlsFiles};
pub use transport::{ChannelFactory, Plaintext};
