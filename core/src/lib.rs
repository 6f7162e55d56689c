//! # mokv-core: the sans-io heart of mokv
//!
//! One [`Node`] is one replica: raft-rs's `RawNode` driven through the async-persist Ready
//! protocol, the replicated key-value state machine with client sessions, ReadIndex reads,
//! snapshots with log compaction, membership changes on the Raft configuration, and SWIM gossip
//! (foca, sans-io: [`gossip`]) whose view the leader reconciles with the configuration, one
//! change at a time (`reconcile`).
//!
//! ## What this crate owns
//! - every protocol decision: what to persist and when, which messages may leave, when a
//!   client is answered, what an error means ([`ErrorClass`]: misuse, retryable, indeterminate);
//! - every replicated and durable format (proposals, snapshots, [`persist`]);
//! - input validation and limits, so that no path (gRPC, peer, simulator) can skip them.
//!
//! ## What it must never do
//! - I/O of any kind, read a clock, draw OS randomness, spawn threads or tasks. Time comes in
//!   as ticks and a caller-supplied `now_ms`; randomness from [`Config::seed`]. No tokio, tonic,
//!   rocksdb or rustls in its dependency tree.
//! - Iterate a randomly seeded hash map into an output: same inputs, same outputs, byte for
//!   byte (the simulator checks it).
//!
//! ## Using it
//! See [`Node`] for the inputs (`handle_*`), the outputs (`poll_*`) and the order in which a
//! shell must drain them.

// Modules are private; the types other crates use are re-exported below, each under one path
// (as quinn-proto does). `gossip` and `persist` stay public: each is a protocol of its own
// (datagrams in and out; the durable format the shell writes) that a shell uses as a unit;
// `codec` too: the byte encoding every durable record uses, which the simulator's trace hash
// also writes with; `backup` too: the backup file format, which the CLI reads and the shell
// streams.
pub mod backup;
pub mod codec;
mod command;
mod config;
mod error;
pub mod gossip;
mod kv;
mod lease;
mod log;
mod members;
mod node;
pub mod persist;
mod read;
mod reconcile;
mod request;
mod rng;
mod session;
mod snapshot;
mod snapshot_decoder;
mod snapshot_ref;
mod txn;
mod watch;

pub use command::{Condition, KeyRevisions, SessionRef};
pub use config::{Config, InvalidConfig, PlantedBugs};
pub use error::{
    Error, ErrorClass, InvalidArgument, LeaderHint, PeerMessageError, QuorumGuard, QuotaExceeded,
    RecoveryError, Unavailable,
};
pub use kv::{
    DataMap, Entry, EntryParts, KeyBatch, RangeItem, RangePage, RangeQuery, SnapshotKeys,
    StateMachine, Versioned,
};
pub use lease::{LeaseError, LeaseTtl};
pub use members::{Conf, MemberInfo, MemberTable, NodeId};
pub use node::{ClusterReport, MemberReport};
pub use node::{
    Directory, Event, ForcedCluster, MemberEntry, Node, Now, PeerPayload, Role, Status, Transmit,
};
pub use node::{NodeStats, PeerProgress, Replication};
pub use request::{Consistency, Reply, Request, RequestId, Response};
pub use rng::Rng;
pub use session::{SessionError, SessionLimits};
pub use snapshot::{is_full_snapshot, SnapshotEncoder, SnapshotImage, SnapshotJob};
pub use snapshot_decoder::SnapshotDecoder;
pub use snapshot_ref::{SnapshotFileCheck, SnapshotFileMismatch, SnapshotRef, SnapshotRefBuilder};
pub use txn::{Compare, Txn, TxnOp, TxnOpResult, TxnResponse, TXN_ITEM_OVERHEAD_BYTES};
pub use watch::{
    Compacted, HistoryLimits, KeyFilter, WatchEvent, WatchEventKind, WatchHistory, WatchPage,
};
