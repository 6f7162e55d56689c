//! Configuration of one core node. Every duration is in ticks (the shell calls
//! `Node::handle_tick` once per tick interval) or, for session expiry, in the milliseconds the
//! shell passes in.

use crate::gossip::GossipConfig;
use crate::members::NodeId;
use crate::session::SessionLimits;
use crate::watch::HistoryLimits;

/// Settings of one [`crate::Node`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// This node's Raft id (non-zero, never reused by another incarnation).
    pub id: NodeId,
    /// Seeds every random choice of the node (election jitter, read contexts). The shell draws it
    /// from the OS at start-up; the simulator derives it from the run's seed.
    pub seed: u64,
    /// Minimum election timeout. Each term a follower waits this plus a seeded jitter in
    /// `0..election_ticks` before campaigning.
    pub election_ticks: usize,
    /// Leader heartbeat interval; must be below `election_ticks`.
    pub heartbeat_ticks: usize,
    /// Longest key a request may carry (at least 1).
    pub max_key_bytes: usize,
    /// Largest value a request may carry.
    pub max_value_bytes: usize,
    /// Upper bound on one append message's entries (raft-rs `max_size_per_msg`).
    pub max_append_bytes: u64,
    /// Raft-rs `max_inflight_msgs`: unacknowledged appends per follower.
    pub max_inflight_appends: usize,
    /// Take a snapshot (and compact the log) after this many applied entries — once those
    /// entries also hold at least 1/`max_snapshot_bytes_per_log_byte` of the state's bytes.
    pub snapshot_threshold_entries: u64,
    /// A snapshot writes the whole state, so the entry-count trigger
    /// ([`snapshot_threshold_entries`](Self::snapshot_threshold_entries)) waits until the log
    /// since the last snapshot holds at least the state's bytes divided by this: snapshots then
    /// write at most this many bytes per byte of log, however large the state grows. (Without
    /// it, 1M keys of 272 bytes snapshotted every 10,000 small writes wrote 100 bytes of
    /// snapshot per byte of log.) The byte trigger, the in-memory log budget and a follower
    /// needing a newer snapshot still take one sooner. At least 1.
    pub max_snapshot_bytes_per_log_byte: u64,
    /// Take a snapshot (and compact the log) once the entries applied since the last one hold
    /// this many bytes, whatever their number. This bounds what a restart replays on top of
    /// the snapshot: 48 MiB by default, ≈ 140,000 small writes, ≈ 0.2 s of replay onto a
    /// 1M-key map on a 2-core machine (the snapshot's own load is ≈ 0.25 s more).
    pub snapshot_threshold_bytes: u64,
    /// Bound on the applied entries of the in-memory Raft log. Once they hold more, they are
    /// dropped from memory, oldest first, down to half of it — also past the last snapshot,
    /// without taking one: the disk keeps them for a restart, and a follower that needs one of
    /// them gets a new snapshot (see `node/log_trim.rs` for what stays: entries followers
    /// still need go last, those a snapshot being taken or sent connects to never). Entries
    /// not applied yet are never dropped and do not count here; they are bounded by
    /// [`max_uncommitted_log_bytes`](Self::max_uncommitted_log_bytes). At least
    /// `max_append_bytes`, so that one append message's worth stays for a follower.
    pub max_in_memory_log_bytes: u64,
    /// The leader refuses proposals as busy once its uncommitted entries hold this many bytes
    /// (raft-rs `max_uncommitted_size`): what a slow quorum can pile up in memory. At least
    /// `max_append_bytes` (raft-rs refuses less).
    pub max_uncommitted_log_bytes: u64,
    /// Entries kept in the log behind a snapshot so slightly lagging followers catch up from
    /// the log rather than by snapshot.
    pub log_keep_entries: u64,
    /// A write or read not answered within this many ticks fails (writes: indeterminate).
    pub request_timeout_ticks: u64,
    /// A ReadIndex round without an answer is retried with a fresh context after this many ticks.
    pub read_retry_ticks: u64,
    /// Bound on requests waiting inside the node (writes in flight plus reads waiting);
    /// beyond it requests are refused as busy.
    pub max_pending_requests: usize,
    /// Bound on ReadIndex rounds in flight at once; further reads wait for the next round.
    /// One (the default) makes every read that arrives during a round share the next one:
    /// one heartbeat broadcast per round trip however many reads there are.
    pub max_read_rounds_in_flight: usize,
    /// Page size used when a range request asks for 0.
    pub default_page_size: usize,
    /// The cap on any page.
    pub max_page_size: usize,
    /// The cap on the keys and values of one page, in bytes (a page always holds at least one
    /// item, so that paging makes progress). The default keeps a page of default-sized values
    /// under gRPC's 4 MiB default message limit.
    pub max_page_bytes: usize,
    /// Bound on the compares plus operations (both branches) of one transaction.
    pub max_txn_ops: usize,
    /// Bound on one transaction's keys, values and compared values, plus
    /// [`crate::TXN_ITEM_OVERHEAD_BYTES`] per compare and operation ([`crate::Txn::size_bytes`]).
    pub max_txn_bytes: usize,
    /// The state quota (like etcd's `quota-backend-bytes`): a write that would take the data
    /// ([`crate::StateMachine::state_bytes`]) past it is refused with
    /// [`crate::Error::QuotaExceeded`]; deletes and writes that do not grow the data are always
    /// applied. The leader stamps its quota into each proposal and every replica decides with
    /// that one, at apply time, so all replicas refuse the same writes. `None`: no quota.
    pub quota_state_bytes: Option<u64>,
    /// A learner marked auto-promote becomes a voter once it is at most this many entries
    /// behind the leader's last index.
    pub promote_lag_entries: u64,
    pub session_limits: SessionLimits,
    /// Sessions one identity (certificate CN) may hold; registering another evicts its least
    /// recently active one, never another identity's. Stamped into each registration by the
    /// leader, so every replica evicts alike. At least 1.
    pub max_sessions_per_identity: u64,
    /// SWIM gossip for discovery and failure detection; `None`: membership only by request.
    pub gossip: Option<GossipConfig>,
    /// With gossip: the leader removes a member that has been down this long (ms of the
    /// `now_ms` the shell passes in). 0: never (a down member stays and is reported).
    pub dead_member_timeout_ms: u64,
    /// How much applied history every replica keeps for watches (bytes and revisions).
    pub watch_history: HistoryLimits,
    /// Leases the cluster may hold at once; a grant beyond is refused
    /// ([`crate::Error::Lease`] `TooMany`). Travels in each grant, so the leader's applies.
    pub max_leases: u64,
    /// Shortest TTL a lease may be granted with, in milliseconds.
    pub lease_min_ttl_ms: u64,
    /// Longest TTL a lease may be granted with, in milliseconds.
    pub lease_max_ttl_ms: u64,
    /// Deliberate bugs for the simulator's self-test. Always off outside tests.
    pub planted_bugs: PlantedBugs,
}

impl Config {
    /// Defaults for node `id` with randomness seeded by `seed`.
    pub fn new(id: NodeId, seed: u64) -> Self {
        Self {
            id,
            seed,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_append_bytes: 1024 * 1024,
            max_inflight_appends: 256,
            snapshot_threshold_entries: 10_000,
            snapshot_threshold_bytes: 48 << 20,
            max_snapshot_bytes_per_log_byte: 4,
            max_in_memory_log_bytes: 8 << 20,
            max_uncommitted_log_bytes: 32 << 20,
            log_keep_entries: 1_000,
            request_timeout_ticks: 50,
            read_retry_ticks: 10,
            max_pending_requests: 10_000,
            max_read_rounds_in_flight: 1,
            default_page_size: 100,
            max_page_size: 1_000,
            max_page_bytes: 2 << 20,
            max_txn_ops: 128,
            max_txn_bytes: 2 << 20,
            quota_state_bytes: None,
            promote_lag_entries: 100,
            session_limits: SessionLimits::default(),
            max_sessions_per_identity: 64,
            gossip: None,
            dead_member_timeout_ms: 0,
            watch_history: HistoryLimits::default(),
            max_leases: 10_000,
            lease_min_ttl_ms: 1_000,
            lease_max_ttl_ms: 7 * 24 * 3_600 * 1_000,
            planted_bugs: PlantedBugs::default(),
        }
    }
}

/// A [`Config`] value the node cannot run with; `field` is the name of the `Config` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
#[non_exhaustive]
pub struct InvalidConfig {
    pub field: &'static str,
    pub reason: &'static str,
}

impl Config {
    /// The one check of a configuration; [`crate::Node::new`] refuses to start without it and
    /// the shell runs it on its settings before it opens anything.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field, reason| Err(InvalidConfig { field, reason });
        if self.id == 0 {
            return bad("id", "must be non-zero");
        }
        if self.election_ticks < 2 {
            return bad("election_ticks", "must be at least 2");
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks {
            return bad("heartbeat_ticks", "must be in 1..election_ticks");
        }
        if self.max_key_bytes == 0 {
            return bad("max_key_bytes", "must be positive");
        }
        if self.snapshot_threshold_entries == 0 {
            return bad("snapshot_threshold_entries", "must be positive");
        }
        if self.snapshot_threshold_bytes == 0 {
            return bad("snapshot_threshold_bytes", "must be positive");
        }
        if self.max_snapshot_bytes_per_log_byte == 0 {
            return bad("max_snapshot_bytes_per_log_byte", "must be positive");
        }
        if self.max_in_memory_log_bytes < self.max_append_bytes {
            return bad("max_in_memory_log_bytes", "must be at least max_append_bytes");
        }
        // raft-rs refuses an uncommitted-size limit below its message size.
        if self.max_uncommitted_log_bytes < self.max_append_bytes {
            return bad("max_uncommitted_log_bytes", "must be at least max_append_bytes");
        }
        if self.max_page_bytes == 0 {
            return bad("max_page_bytes", "must be positive");
        }
        if self.max_txn_ops == 0 {
            return bad("max_txn_ops", "must be positive");
        }
        if self.max_txn_bytes == 0 {
            return bad("max_txn_bytes", "must be positive");
        }
        if self.lease_min_ttl_ms == 0 || self.lease_min_ttl_ms > self.lease_max_ttl_ms {
            return bad("lease_min_ttl_ms", "must be positive and at most lease_max_ttl_ms");
        }
        if self.watch_history.max_revisions == 0 {
            return bad("watch_history", "must keep at least one revision");
        }
        if let Some(g) = &self.gossip {
            if g.identity.raft_id != self.id || !g.identity.is_well_formed() {
                return bad(
                    "gossip",
                    "identity must carry this node's id, a name and bounded fields",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod validate_tests;

/// Known bugs that can be switched on so the simulator can show that its checkers catch them.
///
/// The switches exist only with the `planted-bugs` feature (the simulator enables it; the shell
/// does not). Without it the struct is empty and every query is `const false`, so the bug
/// branches are compiled out of `mokvd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlantedBugs {
    /// Answer linearizable reads on followers from local state, without ReadIndex.
    #[cfg(feature = "planted-bugs")]
    pub stale_follower_reads: bool,
    /// Treat every persist batch as durable the moment it is emitted.
    #[cfg(feature = "planted-bugs")]
    pub ack_before_durable: bool,
    /// Apply retried session writes again instead of answering the first result.
    #[cfg(feature = "planted-bugs")]
    pub skip_session_dedup: bool,
    /// Never retry a ReadIndex round that got no answer (a liveness bug: its reads wait until
    /// the term changes, and once the rounds in flight are all lost, no read is served).
    #[cfg(feature = "planted-bugs")]
    pub skip_read_retry: bool,
    /// Answer a leader's `Set` as soon as its entry goes out in a persist batch, before it is
    /// durable or committed (a broken write pipeline).
    #[cfg(feature = "planted-bugs")]
    pub answer_before_durable: bool,
    /// Evaluate a `SetIf`/`DeleteIf` condition when the leader proposes it, against its
    /// applied state (which may lag the log), and replicate a plain write if it held.
    #[cfg(feature = "planted-bugs")]
    pub cas_at_propose: bool,
    /// Run only the first operation of a transaction's success branch.
    #[cfg(feature = "planted-bugs")]
    pub txn_first_op_only: bool,
    /// Keep the watch history across a snapshot install as if it were still complete: a watch
    /// from before the snapshot silently skips the changes the snapshot covered.
    #[cfg(feature = "planted-bugs")]
    pub watch_skips_snapshot_boundary: bool,
    /// Answer a lease keep-alive without restarting the lease's TTL: the lease expires its
    /// TTL after the grant (or the last failover) however often it is kept alive.
    #[cfg(feature = "planted-bugs")]
    pub lease_keepalive_not_renewed: bool,
    /// Take a member's gossip identity saying it leaves as proof of its leave (no proof from
    /// its own certificate): anyone holding the gossip key can then remove any voter.
    #[cfg(feature = "planted-bugs")]
    pub gossip_leave_trusted: bool,
    /// Take a verification that failed (no node answered with that name's certificate) as
    /// proof of what gossip says about the node: a forger's address or new identity passes.
    #[cfg(feature = "planted-bugs")]
    pub unproven_claims_trusted: bool,
}

/// One query per switch: the field with the feature, `false` (a constant) without it.
macro_rules! planted_bug_queries {
    ($($name:ident),* $(,)?) => {
        impl PlantedBugs {
            $(
                #[doc = concat!("Whether `", stringify!($name), "` is planted.")]
                #[cfg(feature = "planted-bugs")]
                #[inline]
                pub const fn $name(&self) -> bool {
                    self.$name
                }

                #[doc = concat!("Whether `", stringify!($name), "` is planted: never without the \
                                 `planted-bugs` feature.")]
                #[cfg(not(feature = "planted-bugs"))]
                #[inline]
                pub const fn $name(&self) -> bool {
                    false
                }
            )*
        }
    };
}

planted_bug_queries!(
    stale_follower_reads,
    ack_before_durable,
    skip_session_dedup,
    skip_read_retry,
    answer_before_durable,
    cas_at_propose,
    txn_first_op_only,
    watch_skips_snapshot_boundary,
    lease_keepalive_not_renewed,
    gossip_leave_trusted,
    unproven_claims_trusted,
);
