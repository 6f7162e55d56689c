//! Running a node inside another program, over that program's network: the simulator's entry
//! point (level 2 runs the real services, driver and core over turmoil's simulated TCP).
//!
//! [`start`] takes from the embedding program what `mokvd` takes from the operating system and
//! its configuration ([`EmbeddedConfig`]): the accepted connections (plaintext; the program
//! vouches for each caller with a [`VouchedIdentity`]), the outgoing connector
//! ([`ChannelFactory`]), the [`Storage`] ([`MemoryStorage`], or RocksDB: [`Disk`]), the node id, the seed of the
//! core's randomness and the wall clock. It returns the same [`RunningNode`](crate::RunningNode)
//! as [`crate::start`], whose [`NodeHandle`](crate::NodeHandle) reads the node's view and sends
//! its core requests (how the program adds members: there is no gossip).
//!
//! Nothing here is reachable from `mokvd`'s configuration, flags or environment.

pub use crate::net::transport::ChannelFactory;
pub use crate::node::embedded::{start, EmbeddedConfig};
pub use crate::security::identity::{Identity, VouchedIdentity};
pub use crate::storage::disk::Disk;
pub use crate::storage::{MemoryStorage, Storage};
