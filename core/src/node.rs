//! [`Node`]: one mokv replica as a sans-io state machine.

mod admin;
#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod budget_tests;
mod conf_change;
mod directory;
mod entry_blocks;
mod gossip;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod lease_tests;
mod leases;
mod log_trim;
#[cfg(test)]
mod lone_leader;
mod membership;
mod peer_auth;
mod pipeline;
mod reads;
mod ready;
mod recovery;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod snapshot_job_tests;
#[cfg(test)]
mod snapshot_trigger_tests;
mod stats;
#[cfg(test)]
mod tests;
mod verify;
#[cfg(test)]
mod verify_tests;
mod writes;

use std::collections::VecDeque;
use std::num::NonZeroU64;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, HardState, Message, MessageType, Snapshot};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole};

use crate::command::{Command, Condition, Proposal, ProposalSession};
use crate::config::Config;
use crate::error::{
    Error, InvalidArgument, LeaderHint, PeerMessageError, RecoveryError, Unavailable,
};
use crate::gossip::Gossip;
use crate::kv::StateMachine;
use crate::lease::LeaseClock;
use crate::log::MemLog;
use crate::members::{Conf, MemberInfo, MemberTable, NodeId};
use crate::node::entry_blocks::EntryBlocks;
use crate::persist::{
    DurableState, NodeMeta, PersistBatch, PersistId, SnapshotRecord, StoredSnapshot,
};
use crate::read::{ReadKind, ReadQueue, SeenReadContexts};
use crate::request::{Consistency, Reply, Request, RequestId, Response};
use crate::rng::Rng;
use crate::snapshot::{SnapshotImage, SnapshotJob};
use crate::snapshot_ref::SnapshotRef;
use crate::txn::{Txn, TxnOp};
use crate::watch::WatchHistory;

pub use admin::{ClusterReport, MemberReport};
use directory::Sources;
pub use directory::{Directory, MemberEntry};
use membership::Membership;
use pipeline::PersistPipeline;
pub use recovery::ForcedCluster;
pub use stats::{NodeStats, PeerProgress, Replication};
use writes::{PendingWrites, WriteKind};

/// Bound on queued events; the oldest are dropped first (they are advisory).
const MAX_QUEUED_EVENTS: usize = 1024;

/// A Raft message in raft-rs's own encoding, routed by the shell without being looked at.
/// The shell's clocks at a tick, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Since some fixed point of this process (`Instant`): never steps back, meaningless
    /// across processes. Drives every timer of the node.
    pub monotonic_ms: u64,
    /// Since the Unix epoch: may step either way (NTP). Used only where a timestamp is
    /// replicated and compared on other nodes (the proposal stamp that is session cluster time).
    pub wall_ms: u64,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PeerPayload(pub Vec<u8>);

impl std::fmt::Debug for PeerPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerPayload({} bytes)", self.0.len())
    }
}

/// What raft-rs assumes of an append without checking: entries numbered consecutively from
/// `m.index + 1`, terms non-zero, never decreasing, never above the message's term, and not
/// below the term of the entry they follow.
fn append_is_well_formed(m: &Message) -> bool {
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        let expected = m.index.checked_add(1 + i as u64);
        if Some(e.index) != expected || e.term == 0 || e.term < prev_term || e.term > m.term {
            return false;
        }
        prev_term = e.term;
    }
    // Every real entry has a term; raft-rs reads the term of an index beyond its log as 0,
    // so a claimed term 0 at a real index would "match" anything and commit past the log.
    (m.index == 0) == (m.log_term == 0) && m.log_term <= m.term
}

/// A message to deliver to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: NodeId,
    pub payload: PeerPayload,
    /// Carries a snapshot: the shell must report the outcome with
    /// [`Node::handle_snapshot_status`].
    pub is_snapshot: bool,
    /// With `is_snapshot`: the snapshot file the message names, which the shell sends along
    /// (the receiver hands it to [`Node::handle_snapshot_message`]). A file that is gone (a
    /// newer snapshot replaced it) is a failed transfer; raft-rs retries with the newer one.
    pub snapshot: Option<SnapshotRef>,
}

/// This node's part in the current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl From<StateRole> for Role {
    fn from(r: StateRole) -> Self {
        match r {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// Things the shell may want to react to (metrics, health, address book, shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    RoleChanged {
        role: Role,
        term: u64,
        leader: Option<NodeId>,
    },
    /// The Raft configuration or the member address table changed.
    MembershipChanged,
    /// This node was removed from the configuration; it should shut down.
    Removed,
    SnapshotInstalled {
        index: u64,
    },
    /// Gossip membership or health changed (see [`Node::gossip_members`],
    /// [`Node::directory`]).
    GossipChanged,
    /// A node that started without data was added to a cluster and learned its id. The node
    /// stores it itself (a [`PersistBatch::node_meta`]) and gossips it from now on; this is
    /// for the shell's logs.
    ClusterIdLearned {
        cluster_id: u64,
    },
}

/// A point-in-time view of the node, for health checks, metrics and `GetServers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: u64,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub conf: Conf,
}

impl Status {
    /// A node can answer linearizable requests: it knows a leader and has applied everything
    /// it knows to be committed.
    pub fn can_serve(&self) -> bool {
        self.leader.is_some() && self.applied_index >= self.commit_index
    }
}

/// One mokv replica: raft-rs `RawNode` plus the replicated KV state machine, client sessions,
/// ReadIndex reads, snapshots and membership — with no I/O, clock or OS randomness.
///
/// # Contract with the shell
///
/// Inputs are the `handle_*` methods. An input only records what happened (a proposal
/// appended to the in-memory log, a message stepped into raft-rs, a tick counted); the Raft
/// `Ready` that turns inputs into outputs runs once, at the first `poll_*` call after them.
/// So the shell may hand over **any number of inputs** and then drain once: many proposals
/// become one log append, one persist batch and one append message per follower, and every
/// linearizable read that arrived joins one ReadIndex round. Draining after every single
/// input is also correct (the simulator does), only slower.
///
/// To drain, the shell calls the outputs in this order:
///
/// 1. [`poll_persist`](Self::poll_persist) until `None`: write each batch (in order, each
///    atomically; group commit allowed) and, once durable, call
///    [`handle_persisted`](Self::handle_persisted) with the highest id written. The ack may come
///    later, as a separate input; nothing that depends on the batch leaves the node before it.
/// 2. [`poll_transmit`](Self::poll_transmit) until `None`: send each message to its peer. Only
///    messages that are safe to send are returned (a follower's replies wait for durability).
/// 3. [`poll_reply`](Self::poll_reply) until `None`: answer clients. A write is answered only
///    after its entry is committed and applied; a read after its read index is applied.
/// 4. [`poll_event`](Self::poll_event) until `None`.
/// 5. [`poll_datagram`](Self::poll_datagram) until `None`: send each gossip datagram (lossy:
///    the shell may drop one it cannot send at once).
/// 6. [`poll_verify`](Self::poll_verify) until `None`: prove who listens where (see
///    [`crate::gossip::VerifyRequest`]) and answer with
///    [`handle_verified`](Self::handle_verified), later, as a separate input.
///
/// A shell that batches inputs should bound how many it takes before draining (outputs and
/// the time clients wait grow with the batch). Query methods ([`status`](Self::status), ...)
/// reflect every input, except that applying committed entries waits for the drain.
///
/// [`handle_tick`](Self::handle_tick) must be called once per tick interval (all timeouts in
/// [`Config`] are in ticks). The node holds each queue's contents until drained, so draining
/// regularly keeps them bounded; client requests beyond [`Config::max_pending_requests`] are
/// refused as busy.
///
/// Linearizable reads: at most [`Config::max_read_rounds_in_flight`] ReadIndex rounds are in
/// flight per node (one by default, like etcd's read loop); reads arriving meanwhile queue
/// behind them and all go in the next round. The leader serves its own reads through the same
/// rounds.
pub struct Node {
    config: Config,
    raw: RawNode<MemLog>,
    sm: StateMachine,
    /// Changes applied here, for watches (not replicated, not in snapshots).
    history: WatchHistory,
    rng: Rng,
    tick: u64,
    /// The shell's monotonic clock (never steps back): gossip's and membership's timers.
    now_ms: u64,
    /// The shell's wall clock, kept monotonic: stamps proposals ("cluster time" for session
    /// expiry, which must mean the same on every replica, so it cannot be a per-process clock).
    wall_ms: u64,
    /// Election ticks still to swallow this term (randomised election timeout; see `observe`).
    jitter_ticks_left: u64,
    observed: (u64, Role, u64),
    reads: ReadQueue,
    writes: PendingWrites,
    persist: PersistPipeline,
    transmits: VecDeque<Transmit>,
    replies: VecDeque<Reply>,
    events: VecDeque<Event>,
    membership: Membership,
    gossip: Option<Gossip>,
    /// What nodes proved about themselves, and the verifications to ask the shell for.
    verifier: crate::gossip::Verifier,
    /// What this node keeps on disk besides its Raft state, as last handed to the shell.
    meta: NodeMeta,
    /// Read-index contexts other nodes asked about (duplicates are dropped).
    seen_read_contexts: SeenReadContexts,
    /// The bytes of the entries this node proposes.
    entry_blocks: EntryBlocks,
    /// Inputs arrived since the last Ready (see the contract on [`Node`]).
    ready_due: bool,
    /// Bytes of the entries applied since the last snapshot (taken or installed), for
    /// [`Config::snapshot_threshold_bytes`].
    applied_bytes_since_snapshot: u64,
    /// A snapshot job not yet taken by the shell ([`Node::poll_snapshot_job`]).
    snapshot_job: Option<SnapshotJob>,
    /// The image of the snapshot job handed out and not yet durable (a copy-on-write clone,
    /// handed to the disk with the reference once the file is durable): no
    /// second job while one is under way.
    snapshot_in_flight: Option<SnapshotImage>,
    /// The image the shell decoded from the file of the snapshot message being stepped
    /// ([`Node::handle_snapshot_message`]), taken by the install that follows.
    received_snapshot: Option<SnapshotImage>,
    /// The counters of [`Node::stats`] (its gauges are read when asked).
    stats: NodeStats,
    /// The leases' deadlines while this node leads (see `leases`).
    lease_clock: LeaseClock,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl Node {
    /// The durable state of a brand-new single-node cluster whose only voter is `info`:
    /// a snapshot at index 1 holding that configuration, and the new cluster's id (drawn by
    /// the shell). Write it as the node's first batch, then start the node with [`Node::new`]
    /// on the resulting [`DurableState`].
    pub fn bootstrap(info: &MemberInfo, config: &Config, cluster_id: NonZeroU64) -> PersistBatch {
        let mut sm = StateMachine::new(config.session_limits);
        let conf = Conf { voters: [info.id].into_iter().collect(), ..Conf::default() };
        sm.set_conf(conf);
        sm.members_mut().insert(info.id, info.clone());
        sm.skip(1);
        let image = SnapshotImage { index: 1, term: 1, state: sm };
        let mut hs = HardState::default();
        hs.term = 1;
        hs.commit = 1;
        PersistBatch {
            id: 0,
            snapshot: Some(SnapshotRecord::to_write(image)),
            hard_state: Some(hs.write_to_bytes().unwrap_or_default()),
            node_meta: Some(
                NodeMeta { cluster_id: Some(cluster_id.get()), ..NodeMeta::default() }.encode(),
            ),
            must_sync: true,
            ..PersistBatch::default()
        }
    }

    /// Starts a node from what the shell read from disk (empty for a node that will join an
    /// existing cluster). Committed entries in the log are replayed into the state machine
    /// before this returns.
    ///
    /// With gossip, the node gossips the cluster id it stored (give 0 in
    /// `GossipConfig::identity.cluster_id`; a non-zero one must equal the stored one, and is
    /// stored if none is) and announces to the peers it remembered as well as to the
    /// configured seeds.
    pub fn new(config: Config, mut durable: DurableState) -> Result<Node, RecoveryError> {
        config.validate()?;
        let mut log = MemLog::new();
        let mut sm = StateMachine::new(config.session_limits);
        if let Some(StoredSnapshot { reference, image }) = durable.snapshot.take() {
            if (image.index, image.term) != (reference.index, reference.term) {
                return Err(RecoveryError::Snapshot(crate::codec::DecodeError::Invalid(
                    "snapshot image is not the referenced one",
                )));
            }
            log.install_snapshot(raft_snapshot(&reference, image.state.conf()));
            sm = image.state;
        }
        if let Some(bytes) = &durable.hard_state {
            let hs = HardState::parse_from_bytes(bytes)
                .map_err(|_| RecoveryError::Corrupt("hard state"))?;
            let commit = hs.commit.max(log.hard_state().commit);
            let mut merged = hs;
            merged.commit = commit;
            log.set_hard_state(merged);
        }
        // Records are consumed one by one into a log sized once: at no point are the records,
        // their parsed entries and a grown copy of the log all held at the same time. An
        // entry's data is a slice of its record's buffer, not a copy: copying was most of
        // parsing, and a restart's log tail (≈ 40 MiB at 1M keys) then sat in the driver's
        // heap between the keys' blocks the replay allocates, leaving holes once trimmed.
        let records = std::mem::take(&mut durable.entries);
        log.reserve(records.len());
        for rec in records {
            let e = Entry::parse_from_carllerche_bytes(&bytes::Bytes::from(rec.bytes))
                .map_err(|_| RecoveryError::Corrupt("log entry"))?;
            if e.index != rec.index {
                return Err(RecoveryError::Corrupt("log entry index"));
            }
            if e.index <= log.last_index() && e.index < log.first_index() {
                continue; // covered by the snapshot
            }
            if e.index != log.last_index() + 1 {
                return Err(RecoveryError::Gap(e.index));
            }
            log.append(&[e]);
        }
        if log.hard_state().commit > log.last_index() {
            return Err(RecoveryError::Corrupt("commit index beyond the log"));
        }

        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            // raft-rs draws its timeout from thread_rng in [min, max): a one-value range makes
            // that draw constant; the jitter comes from our seeded RNG instead.
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks + 1,
            applied: sm.applied_index(),
            max_size_per_msg: config.max_append_bytes,
            max_inflight_msgs: config.max_inflight_appends,
            max_uncommitted_size: config.max_uncommitted_log_bytes,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            batch_append: true,
            // Followers learn a new commit index from the next append or heartbeat (a read
            // round's heartbeat included) instead of an extra append per commit advance.
            skip_bcast_commit: true,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let durable_commit = log.hard_state().commit;
        let raw = RawNode::new(&raft_config, log, &logger)?;

        let mut meta = match &durable.node_meta {
            Some(bytes) => {
                NodeMeta::decode(bytes).map_err(|_| RecoveryError::Corrupt("node metadata"))?
            }
            None => NodeMeta::default(),
        };
        let stored_meta = meta.clone();
        let gossip = match &config.gossip {
            None => None,
            Some(g) => {
                let mut g = g.clone();
                match (g.identity.cluster_id, meta.cluster_id) {
                    (0, stored) => g.identity.cluster_id = stored.unwrap_or(0),
                    (given, None) => meta.cluster_id = Some(given),
                    (given, Some(stored)) if given != stored => {
                        return Err(RecoveryError::ClusterIdMismatch);
                    }
                    _ => {}
                }
                for addr in meta.gossip_peers.values() {
                    if !g.seeds.contains(addr) && *addr != g.identity.gossip_addr {
                        g.seeds.push(addr.clone());
                    }
                }
                // Its own stream, so that turning gossip on leaves the node's other draws as
                // they were (recorded simulator seeds keep replaying).
                Some(Gossip::new(&g, config.seed ^ 0x6f73_7369_705f_6b76))
            }
        };
        let mut rng = Rng::new(config.seed);
        let first_round = rng.next_u64();
        let next_token = rng.next_u64();
        let reads = ReadQueue::new(config.id, first_round);
        let observed = (raw.raft.term, Role::from(raw.raft.state), raw.raft.leader_id);
        // The committed log tail is replayed below (`process_ready`); of its events the history
        // would keep only the last `max_revisions` revisions, so it starts there and the
        // entries before are replayed without recording events it would evict before the
        // replay ends (evicting one reads and frees blocks all over a big map's heap: a tenth
        // of replaying 180k entries onto 1M keys, `perf record`).
        let replay_window_start = durable_commit
            .saturating_sub(config.watch_history.max_revisions)
            .max(sm.applied_index());
        let history = WatchHistory::new(config.watch_history, replay_window_start);
        let mut node = Node {
            config,
            raw,
            sm,
            history,
            rng,
            tick: 0,
            now_ms: 0,
            wall_ms: 0,
            jitter_ticks_left: 0,
            observed,
            reads,
            writes: PendingWrites::new(next_token),
            persist: PersistPipeline::new(durable_commit),
            transmits: VecDeque::new(),
            replies: VecDeque::new(),
            events: VecDeque::new(),
            membership: Membership::default(),
            gossip,
            verifier: crate::gossip::Verifier::default(),
            meta,
            seen_read_contexts: SeenReadContexts::default(),
            entry_blocks: EntryBlocks::default(),
            ready_due: false,
            applied_bytes_since_snapshot: 0,
            snapshot_job: None,
            snapshot_in_flight: None,
            received_snapshot: None,
            stats: NodeStats::default(),
            lease_clock: LeaseClock::default(),
        };
        if node.meta != stored_meta {
            node.persist_meta(true);
        }
        node.jitter_ticks_left = node.rng.below(node.config.election_ticks as u64);
        node.process_ready();
        // A lone voter need not wait an election timeout to lead itself.
        let conf = node.sm.conf();
        if conf.voters.len() == 1 && conf.voters.contains(&node.config.id) {
            let _ = node.raw.campaign();
            node.after_input();
        }
        Ok(node)
    }

    // ------------------------------------------------------------------ inputs

    /// One tick of logical time, with the shell's two clocks ([`Now`]): timers (gossip
    /// probes and suspicion, how long a member has been down) run on the monotonic one, so a
    /// wall clock step never freezes or rushes them; the wall clock only stamps proposals.
    /// Both may repeat; the node keeps each monotonic.
    pub fn handle_tick(&mut self, now: Now) {
        self.now_ms = self.now_ms.max(now.monotonic_ms);
        self.wall_ms = self.wall_ms.max(now.wall_ms);
        self.tick += 1;
        if self.raw.raft.state != StateRole::Leader && self.jitter_ticks_left > 0 {
            self.jitter_ticks_left -= 1;
        } else {
            self.raw.tick();
        }
        self.expire_requests();
        self.expire_leases();
        self.maybe_promote_learner();
        self.tick_gossip();
        self.after_input();
    }

    /// A message from a peer, as produced by its [`Transmit::payload`], over a transport that
    /// vouches for the sender's Raft id itself (an in-process one). A shell whose callers
    /// authenticate with certificates uses [`Node::handle_peer_message_from`] instead; either
    /// way it must bound the message's size.
    pub fn handle_peer_message(&mut self, bytes: &[u8]) -> Result<(), PeerMessageError> {
        self.handle_peer_message_checked(bytes, None)
    }

    fn handle_peer_message_checked(
        &mut self,
        bytes: &[u8],
        caller: Option<&str>,
    ) -> Result<(), PeerMessageError> {
        let m = Message::parse_from_bytes(bytes)
            .map_err(|_| PeerMessageError::Malformed { len: bytes.len() })?;
        if m.to != self.config.id {
            return Err(PeerMessageError::WrongRecipient { to: m.to });
        }
        // Proposals and leadership transfers are never forwarded between our nodes (only a
        // leader proposes or starts a transfer), so they are refused like the local types
        // (raft-rs would also panic forwarding one that carries a term).
        if raft::raw_node::is_local_msg(m.get_msg_type())
            || matches!(m.get_msg_type(), MessageType::MsgPropose | MessageType::MsgTransferLeader)
        {
            return Err(PeerMessageError::LocalType);
        }
        // raft-rs reads term 0 as a local message and panics answering a vote that has none;
        // a follower's forwarded MsgReadIndex, and only it, carries no term (one with a term
        // would be forwarded again and trip raft-rs's own assertion).
        if (m.term == 0) != (m.get_msg_type() == MessageType::MsgReadIndex) {
            return Err(PeerMessageError::BadTerm);
        }
        if m.from == 0 || m.from == self.config.id {
            return Err(PeerMessageError::BadSender { from: m.from });
        }
        if caller.is_some_and(|name| !self.admits_sender(name, m.from)) {
            return Err(PeerMessageError::ImpersonatedSender { from: m.from });
        }
        if m.get_msg_type() == MessageType::MsgReadIndex && m.entries.len() != 1 {
            // The request context travels as the one entry; raft-rs indexes it unchecked.
            return Err(PeerMessageError::MalformedReadIndex);
        }
        if m.get_msg_type() == MessageType::MsgAppend && !append_is_well_formed(&m) {
            // raft-rs slices its log assuming consecutive entries right after `m.index`.
            return Err(PeerMessageError::MalformedAppend);
        }
        if m.get_msg_type() == MessageType::MsgHeartbeat
            && m.commit > self.raw.raft.raft_log.last_index()
        {
            // An honest leader never commits past what the follower has (it sends
            // min(matched, committed)); raft-rs would panic in `commit_to`.
            return Err(PeerMessageError::CommitBeyondLog { commit: m.commit });
        }
        if m.get_msg_type() == MessageType::MsgSnapshot {
            // Validate before raft-rs accepts it: once accepted it must be installable, so
            // the image the shell decoded from the referenced file must be at hand.
            let snap = m.get_snapshot();
            let reference =
                SnapshotRef::decode(&snap.data).map_err(PeerMessageError::BadSnapshot)?;
            let meta = snap.get_metadata();
            let matches = |i: &SnapshotImage| {
                (i.index, i.term) == (meta.index, meta.term)
                    && (reference.index, reference.term) == (meta.index, meta.term)
            };
            if !self.received_snapshot.as_ref().is_some_and(matches) {
                self.received_snapshot = None;
                return Err(PeerMessageError::BadSnapshot(crate::codec::DecodeError::Invalid(
                    "snapshot message without its image",
                )));
            }
        }
        if m.get_msg_type() == MessageType::MsgReadIndex
            && !self.seen_read_contexts.first_time(m.entries[0].get_data())
        {
            // A copy of a request already handled: see `SeenReadContexts`.
            return Ok(());
        }
        let from = m.from;
        let result = self.raw.step(m).map_err(PeerMessageError::Raft);
        if result.is_ok() && self.sm.conf().contains(from) {
            self.membership.heard_from(from, self.now_ms);
        }
        self.after_input();
        result
    }

    /// The shell made every batch up to and including `id` durable.
    pub fn handle_persisted(&mut self, id: PersistId) {
        self.ack_persisted(id);
        self.after_input();
    }

    /// Outcome of sending a [`Transmit`] with `is_snapshot`.
    pub fn handle_snapshot_status(&mut self, to: NodeId, delivered: bool) {
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to, status);
        self.after_input();
    }

    /// A snapshot message whose file the shell received, checked against the message's
    /// [`SnapshotRef`] (length and checksum), made durable and decoded into `image`. Checked
    /// like [`Node::handle_peer_message_from`] (`caller` is the certificate's name, `None` over
    /// a transport that vouches for the sender itself); the install uses `image` instead of
    /// decoding anything on this task.
    pub fn handle_snapshot_message(
        &mut self,
        caller: Option<&str>,
        bytes: &[u8],
        image: SnapshotImage,
    ) -> Result<(), PeerMessageError> {
        let previous = self.received_snapshot.replace(image);
        let result = self.handle_peer_message_checked(bytes, caller);
        // Keep the image of the snapshot raft-rs will hand to the install, if any: this one
        // if it was accepted, else the one accepted before it and not installed yet.
        let pending = self.raw.raft.raft_log.unstable.snapshot.as_ref().map(|s| {
            let meta = s.get_metadata();
            (meta.index, meta.term)
        });
        let position = |i: &Option<SnapshotImage>| i.as_ref().map(|i| (i.index, i.term));
        if pending.is_none() || position(&self.received_snapshot) != pending {
            self.received_snapshot = previous.filter(|_| pending.is_some());
            if position(&self.received_snapshot) != pending {
                self.received_snapshot = None;
            }
        }
        result
    }

    /// The shell wrote the snapshot job it took ([`Node::poll_snapshot_job`]) to the durable
    /// file `reference` names. Only now does the node use the snapshot (for followers behind
    /// the log) and compact the log it covers, in a persist batch that stores the reference:
    /// compaction never runs ahead of a durable snapshot. A reference for a job this node no
    /// longer waits for (a newer snapshot was installed meanwhile, or it was restarted) is
    /// dropped.
    pub fn handle_snapshot_durable(&mut self, reference: SnapshotRef) {
        if let Some(image) = self.snapshot_in_flight.take() {
            if (image.index, image.term) == (reference.index, reference.term) {
                self.finish_snapshot(reference, image);
            } else {
                self.snapshot_in_flight = Some(image);
            }
        }
        self.after_input();
    }

    /// A peer could not be reached; replication to it backs off to probing.
    pub fn handle_unreachable(&mut self, to: NodeId) {
        self.raw.report_unreachable(to);
        self.after_input();
    }

    /// Peer `from` just started (the shell heard its greeting): it learns who leads, and so
    /// can serve its first read, only from the leader's messages. A leader sends heartbeats at
    /// once instead of at its next heartbeat tick; any other node ignores it. A spurious call
    /// costs one round of heartbeats.
    pub fn handle_peer_started(&mut self, from: NodeId) {
        let leads = self.raw.raft.state == StateRole::Leader;
        if leads && from != self.config.id && self.raw.raft.prs().get(from).is_some() {
            self.raw.ping();
            self.after_input();
        }
    }

    /// A client request; its answer comes out of [`poll_reply`](Self::poll_reply) with `id`.
    pub fn handle_request(&mut self, id: RequestId, request: Request) {
        if self.membership.is_removed() {
            self.reply(id, Err(Unavailable::Removed.into()));
            return;
        }
        match request {
            Request::Set { key, value, session } => {
                let checked = self.check_key(&key).and_then(|()| self.check_value(&value));
                let proposal = Proposal {
                    session: session.map(ProposalSession::Registered),
                    proposed_at_ms: self.wall_ms,
                    quota_state_bytes: self.config.quota_state_bytes,
                    command: Command::Set { key, value },
                };
                self.propose_write(id, checked.map(|()| proposal));
            }
            Request::Delete { key, session } => {
                let checked = self.check_key(&key);
                let proposal = Proposal {
                    session: session.map(ProposalSession::Registered),
                    proposed_at_ms: self.wall_ms,
                    quota_state_bytes: self.config.quota_state_bytes,
                    command: Command::Delete { key },
                };
                self.propose_write(id, checked.map(|()| proposal));
            }
            Request::SetIf { key, value, condition, session } => {
                let checked = self
                    .check_key(&key)
                    .and_then(|()| self.check_value(&value))
                    .and_then(|()| self.check_condition(&condition));
                let command = Command::SetIf { key, value, condition };
                if let Some(command) = self.cas_at_propose(id, command) {
                    let proposal = Proposal {
                        session: session.map(ProposalSession::Registered),
                        proposed_at_ms: self.wall_ms,
                        quota_state_bytes: self.config.quota_state_bytes,
                        command,
                    };
                    self.propose_write(id, checked.map(|()| proposal));
                }
            }
            Request::DeleteIf { key, condition, session } => {
                let checked = self.check_key(&key).and_then(|()| self.check_condition(&condition));
                let command = Command::DeleteIf { key, condition };
                if let Some(command) = self.cas_at_propose(id, command) {
                    let proposal = Proposal {
                        session: session.map(ProposalSession::Registered),
                        proposed_at_ms: self.wall_ms,
                        quota_state_bytes: self.config.quota_state_bytes,
                        command,
                    };
                    self.propose_write(id, checked.map(|()| proposal));
                }
            }
            Request::Txn { mut txn, session } => {
                let checked = self.check_txn(&mut txn);
                if self.config.planted_bugs.txn_first_op_only() {
                    txn.success.truncate(1);
                }
                let proposal = Proposal {
                    session: session.map(ProposalSession::Registered),
                    proposed_at_ms: self.wall_ms,
                    quota_state_bytes: self.config.quota_state_bytes,
                    command: Command::Txn(txn),
                };
                self.propose_write(id, checked.map(|()| proposal));
            }
            Request::SetWithLease { key, value, lease, condition, session } => {
                self.set_with_lease(id, (key, value, lease), condition, session);
            }
            Request::LeaseGrant { id: lease, ttl_ms, session } => {
                self.lease_grant(id, lease, ttl_ms, session);
            }
            Request::LeaseRevoke { id: lease, session } => self.lease_revoke(id, lease, session),
            Request::LeaseKeepAlive { id: lease } => self.lease_read(id, lease, None),
            Request::LeaseTimeToLive { id: lease, keys } => self.lease_read(id, lease, Some(keys)),
            Request::RegisterSession { owner } => {
                let max = self.config.max_key_bytes;
                let checked = if owner.len() > max {
                    Err(InvalidArgument::SessionOwnerTooLarge { len: owner.len(), max }.into())
                } else {
                    Ok(())
                };
                let proposal = Proposal {
                    session: None,
                    proposed_at_ms: self.wall_ms,
                    quota_state_bytes: None,
                    command: Command::RegisterSession {
                        owner,
                        max_sessions_per_identity: self.config.max_sessions_per_identity,
                    },
                };
                self.propose_write(id, checked.map(|()| proposal));
            }
            Request::Get { key, consistency } => match self.check_key(&key) {
                Ok(()) => self.read(id, ReadKind::Get { key }, consistency),
                Err(e) => self.reply(id, Err(e)),
            },
            Request::Range { mut query, consistency } => {
                query.limit = match query.limit {
                    0 => self.config.default_page_size,
                    n => n.min(self.config.max_page_size),
                };
                self.read(id, ReadKind::Range { query }, consistency);
            }
            Request::Backup => self.read(id, ReadKind::Backup, Consistency::Linearizable),
            Request::AddLearner { info } => self.add_learner(id, info),
            Request::Promote { id: node } => self.promote(id, node),
            Request::Remove { id: node } => self.remove(id, node),
            Request::TransferLeader { to } => self.transfer_leader(id, to),
            Request::RemoveMember { id: node, force } => self.remove_member(id, node, force),
            Request::ClusterReport => {
                let report = self.cluster_report();
                self.reply(id, Ok(Response::ClusterReport(Box::new(report))));
            }
        }
        self.after_input();
    }

    // ------------------------------------------------------------------ outputs

    /// The next batch to make durable (see the drain order on [`Node`]).
    #[must_use]
    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        self.run_due_ready();
        self.persist.poll()
    }

    /// The next message to send to a peer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.run_due_ready();
        self.transmits.pop_front()
    }

    /// A snapshot to take: write it to a durable file away from the task that drives the node
    /// and hand its reference back with [`Node::handle_snapshot_durable`]. At most one is under
    /// way at a time; until it is handed back, the log it would compact stays.
    #[must_use]
    pub fn poll_snapshot_job(&mut self) -> Option<SnapshotJob> {
        self.run_due_ready();
        self.snapshot_job.take()
    }

    /// The next answer to a client request.
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.run_due_ready();
        self.replies.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.run_due_ready();
        self.events.pop_front()
    }

    // ------------------------------------------------------------------ queries

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn status(&self) -> Status {
        let raft = &self.raw.raft;
        Status {
            id: self.config.id,
            term: raft.term,
            role: raft.state.into(),
            leader: (raft.leader_id != 0).then_some(raft.leader_id),
            commit_index: raft.raft_log.committed,
            applied_index: self.sm.applied_index(),
            last_index: raft.raft_log.last_index(),
            conf: self.sm.conf().clone(),
        }
    }

    /// Addresses of every member, from the replicated state.
    pub fn members(&self) -> &MemberTable {
        self.sm.members()
    }

    /// The replicated state machine (read-only), e.g. for the simulator's checkers.
    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    /// The changes this node applied and still retains, for watches: query pages with
    /// [`WatchHistory::page`] (up to [`Status::applied_index`]); after a drain, the events from
    /// the last revision the shell saw on are what was applied since
    /// ([`WatchHistory::events_from`]). A shell that saw revision `r` and finds
    /// [`WatchHistory::first_revision`] above `r + 1` lost events (a snapshot was installed):
    /// its watchers must be told [`crate::Compacted`].
    pub fn watch_history(&self) -> &WatchHistory {
        &self.history
    }

    /// Every node this one knows of (the member table joined with the gossip view, each by
    /// its newest incarnation) and where the leader is.
    pub fn directory(&self) -> Directory {
        let view = self.gossip_members();
        self.directory_sources(&view).directory()
    }

    /// Where the leader is, if known (the same as [`Node::directory`]'s).
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        if self.raw.raft.leader_id == 0 {
            return None;
        }
        let view = self.gossip_members();
        self.directory_sources(&view).leader_hint()
    }

    /// The cluster this node's data belongs to, as stored (`None`: not added to one yet).
    pub fn cluster_id(&self) -> Option<u64> {
        self.meta.cluster_id
    }

    fn directory_sources<'a>(&'a self, view: &'a [crate::gossip::GossipMember]) -> Sources<'a> {
        let leader = self.raw.raft.leader_id;
        Sources {
            self_id: self.config.id,
            identity: self.gossip.as_ref().map(Gossip::identity),
            members: self.sm.members(),
            view,
            leader: (leader != 0).then_some(leader),
            proofs: self.verifier.proofs(),
        }
    }

    fn reply(&mut self, id: RequestId, result: Result<Response, Error>) {
        self.replies.push_back(Reply { id, result });
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Hands the node's metadata to the shell to store (see [`NodeMeta`]).
    fn persist_meta(&mut self, must_sync: bool) {
        self.persist.push_meta(self.meta.encode(), must_sync);
    }

    // ------------------------------------------------------------------ writes

    fn check_key(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() {
            return Err(InvalidArgument::EmptyKey.into());
        }
        if key.len() > self.config.max_key_bytes {
            return Err(InvalidArgument::KeyTooLarge {
                len: key.len(),
                max: self.config.max_key_bytes,
            }
            .into());
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.config.max_value_bytes {
            return Err(InvalidArgument::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_bytes,
            }
            .into());
        }
        Ok(())
    }

    /// A compared value is bounded like a stored one (a larger one could never match).
    fn check_condition(&self, condition: &Condition) -> Result<(), Error> {
        match condition {
            Condition::ValueEquals(value) => self.check_value(value),
            _ => Ok(()),
        }
    }

    /// Bounds a transaction (count, then bytes, then each key and value like a plain request)
    /// and caps each range's limit like a range page.
    fn check_txn(&self, txn: &mut Txn) -> Result<(), Error> {
        let count = txn.op_count();
        if count > self.config.max_txn_ops {
            return Err(
                InvalidArgument::TooManyTxnOps { count, max: self.config.max_txn_ops }.into()
            );
        }
        let len = txn.size_bytes();
        if len > self.config.max_txn_bytes {
            return Err(InvalidArgument::TxnTooLarge { len, max: self.config.max_txn_bytes }.into());
        }
        for c in &txn.compares {
            self.check_key(&c.key)?;
            self.check_condition(&c.condition)?;
        }
        for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
            match op {
                TxnOp::Set { key, value } => {
                    self.check_key(key)?;
                    self.check_value(value)?;
                }
                TxnOp::Delete { key } | TxnOp::Get { key } => self.check_key(key)?,
                TxnOp::Range { limit, .. } => {
                    let cap = u32::try_from(self.config.max_page_size).unwrap_or(u32::MAX);
                    *limit = match *limit {
                        0 => u32::try_from(self.config.default_page_size).unwrap_or(cap),
                        n => n,
                    }
                    .min(cap);
                }
            }
        }
        Ok(())
    }

    /// The `cas_at_propose` planted bug: decides a conditional write on this node's applied
    /// state when it is proposed. Returns the command to propose, or `None` when it already
    /// answered. Without the bug, `command` unchanged.
    fn cas_at_propose(&mut self, id: RequestId, command: Command) -> Option<Command> {
        if !self.config.planted_bugs.cas_at_propose() || self.check_leader().is_err() {
            return Some(command);
        }
        let (Command::SetIf { key, condition, .. } | Command::DeleteIf { key, condition }) =
            &command
        else {
            return Some(command);
        };
        let current = self.sm.get(key);
        if !condition.holds(current) {
            let current = current.map(crate::command::KeyRevisions::from);
            let revision = self.sm.applied_index();
            self.reply(id, Ok(Response::ConditionFailed { revision, current }));
            return None;
        }
        Some(match command {
            Command::SetIf { key, value, .. } => Command::Set { key, value },
            Command::DeleteIf { key, .. } => Command::Delete { key },
            other => other,
        })
    }

    fn check_leader(&self) -> Result<(), Error> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(Error::NotLeader { leader: self.leader_hint() });
        }
        if self.raw.raft.lead_transferee.is_some() {
            return Err(Unavailable::LeadershipTransfer.into());
        }
        Ok(())
    }

    fn check_capacity(&self) -> Result<(), Error> {
        if self.writes.len() + self.reads.len() >= self.config.max_pending_requests {
            return Err(Unavailable::Busy.into());
        }
        Ok(())
    }

    fn propose_write(&mut self, id: RequestId, proposal: Result<Proposal, Error>) {
        let result = proposal.and_then(|p| {
            self.check_leader()?;
            self.check_capacity()?;
            Ok(p)
        });
        match result {
            Ok(p) => {
                let data = p.encode();
                self.propose(Some(id), WriteKind::Kv, |raw, blocks, ctx| {
                    propose_data(raw, blocks, &ctx, &data)
                });
            }
            Err(e) => self.reply(id, Err(e)),
        }
    }

    /// Hands an entry to raft-rs and remembers (term, index, token) to recognise it on apply.
    /// `id == None` for the node's own proposals (learner promotion), which nobody awaits.
    fn propose(
        &mut self,
        id: Option<RequestId>,
        kind: WriteKind,
        f: impl FnOnce(&mut RawNode<MemLog>, &mut EntryBlocks, Vec<u8>) -> raft::Result<()>,
    ) {
        let token = self.writes.next_token();
        let before = self.raw.raft.raft_log.last_index();
        let result = f(&mut self.raw, &mut self.entry_blocks, token.to_le_bytes().to_vec());
        let index = self.raw.raft.raft_log.last_index();
        let Some(id) = id else { return };
        match result {
            Ok(()) if index > before => {
                let term = self.raw.raft.term;
                let deadline_tick = self.tick + self.config.request_timeout_ticks;
                if let Some(old) = self.writes.insert(index, id, term, token, deadline_tick, kind) {
                    // Our own older entry at this index was truncated by another leader and
                    // this node is appending anew there: the old one can never be applied.
                    self.stats.proposals_dropped += 1;
                    self.reply(old.id, Err(Unavailable::Dropped.into()));
                }
            }
            Ok(()) | Err(_) => {
                self.stats.proposals_failed += 1;
                let e = if self.raw.raft.lead_transferee.is_some() {
                    Unavailable::LeadershipTransfer
                } else {
                    Unavailable::Busy
                };
                self.reply(id, Err(e.into()));
            }
        }
    }
}

/// [`RawNode::propose`], with the entry's context and data copied into `blocks` (see
/// `entry_blocks`).
fn propose_data(
    raw: &mut RawNode<MemLog>,
    blocks: &mut EntryBlocks,
    context: &[u8],
    data: &[u8],
) -> raft::Result<()> {
    let mut entry = Entry::default();
    entry.context = blocks.copy(context);
    entry.data = blocks.copy(data);
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = raw.raft.id;
    m.set_entries(vec![entry].into());
    raw.raft.step(m)
}

fn promote_change(node: NodeId) -> ConfChange {
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = node;
    cc
}

fn encode_pb(m: &impl protobuf::Message) -> Vec<u8> {
    // Encoding an in-memory raft-rs message cannot fail (no required fields, sizes < 4 GiB).
    m.write_to_bytes().unwrap_or_default()
}

/// raft-rs's snapshot for the file `reference` names: its data is the reference alone.
fn raft_snapshot(reference: &SnapshotRef, conf: &Conf) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.data = reference.encode().into();
    let meta = snap.mut_metadata();
    meta.index = reference.index;
    meta.term = reference.term;
    meta.set_conf_state(conf.to_raft());
    snap
}
