//! A whole cluster of `mokv-core` nodes in one thread: a virtual clock, a network of packets
//! ordered by delivery tick, and an in-memory disk per node with the real batch semantics.
//!
//! Everything random is drawn from one seeded [`Rng`], and every collection that is iterated is
//! ordered, so a seed replays bit for bit. [`Cluster::trace_hash`] summarises a run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU64;

use mokv_core::gossip::{Gossip, GossipConfig, GossipId, GossipMember, Health};
use mokv_core::persist::{DurableState, NodeMeta, PersistBatch};
use mokv_core::{
    Config, Event, MemberInfo, Node, NodeId, Reply, Request, RequestId, Response, Rng, Role,
    SnapshotImage, SnapshotJob, SnapshotRef, Transmit,
};

use crate::trace::{encode_reply, TraceHash};

/// How the network misbehaves. All percentages are of packets; delays are in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetFaults {
    pub loss_percent: u64,
    pub duplicate_percent: u64,
    /// Each packet is delayed by a uniform draw in `0..=delay_ticks_max`, which also reorders.
    pub delay_ticks_max: u64,
}

/// Which traffic a cut applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Traffic {
    /// Raft (peer) messages and gossip datagrams.
    All,
    /// Raft peer messages only: gossip still flows.
    Raft,
    /// Gossip datagrams only: Raft still flows.
    Gossip,
}

/// Gossip timing of every gossiping node of a cluster (see `GossipConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipParams {
    pub probe_period_ms: u64,
    pub probe_rtt_ms: u64,
    pub suspect_to_down_ms: u64,
    pub cluster_size_hint: u32,
}

impl Default for GossipParams {
    /// The LAN defaults of `GossipConfig::new`.
    fn default() -> Self {
        Self {
            probe_period_ms: 1_000,
            probe_rtt_ms: 500,
            suspect_to_down_ms: 4_000,
            cluster_size_hint: 5,
        }
    }
}

/// Virtual milliseconds per tick: the `now_ms` a node gets is `tick * MS_PER_TICK`.
pub const MS_PER_TICK: u64 = 100;

/// The cluster id the bootstrapped node of a gossiping cluster carries.
pub const SIM_CLUSTER_ID: u64 = 0x6d6f_6b76;

/// Every address a forger gossips or claims starts with this: no node listens at one.
pub const FORGED_ADDR_PREFIX: &str = "sim-forged:";

/// Whether `addr` is a forger's (see [`FORGED_ADDR_PREFIX`]).
pub fn is_forged_addr(addr: &str) -> bool {
    addr.starts_with(FORGED_ADDR_PREFIX)
}

/// Network endpoints of forgers are numbered from here: no node has such a Raft id.
const FORGER_WIRE_BASE: NodeId = 1 << 48;

/// An attacker that holds the cluster's gossip key but no node certificate: a bare gossip
/// member ([`Gossip`], the core's own, so its datagrams are real foca packets every node
/// accepts) announcing one forged identity. It is no slot: it never runs a node, so the
/// identity proofs (see [`Cluster::drain`]) never find it.
#[derive(Debug)]
struct Forger {
    gossip: Gossip,
    /// Gone silent: it neither sends nor receives any more (its identity goes down in every
    /// view, as a crashed node's would).
    stopped: bool,
}

/// What a packet carries.
#[derive(Debug, Clone)]
enum Payload {
    Raft(Transmit),
    /// A gossip datagram for whoever owns `addr` when it arrives.
    Gossip {
        addr: String,
        bytes: Vec<u8>,
    },
}

/// A packet on the wire.
#[derive(Debug, Clone)]
struct Packet {
    from: NodeId,
    to: NodeId,
    payload: Payload,
}

impl Packet {
    fn traffic(&self) -> Traffic {
        match self.payload {
            Payload::Raft(_) => Traffic::Raft,
            Payload::Gossip { .. } => Traffic::Gossip,
        }
    }
}

/// A node's gossip identity as its command line gives it. The cluster id and the gossip peers
/// it remembers are on its disk, kept by the core (`NodeMeta`).
#[derive(Debug, Clone)]
pub struct GossipSlot {
    pub name: String,
    pub addr: String,
    pub seeds: Vec<String>,
}

/// An input held back from a paused node, handed over in order when it resumes.
#[derive(Debug, Clone)]
enum Held {
    Packet(Packet),
    Request(RequestId, Request),
    SnapshotStatus(NodeId, bool),
}

/// A node's snapshot files: the reference and the image the file holds.
type SnapshotFiles = BTreeMap<(u64, u64), (SnapshotRef, SnapshotImage)>;

/// Writes a job's file on a simulated disk: its reference (computed from the real encoding,
/// so that it pins the bytes a real shell would write) and image.
fn write_file(files: &mut SnapshotFiles, job: SnapshotJob) -> SnapshotRef {
    let image = job.into_image();
    let reference = image.reference();
    files.insert((reference.index, reference.term), (reference, image));
    reference
}

/// Applies a durable batch to a simulated disk; the files older than a snapshot it stores go.
fn apply_durable(disk: &mut DurableState, files: &mut SnapshotFiles, b: &PersistBatch) {
    if let Some(s) = &b.snapshot {
        if s.write_file {
            files.insert((s.reference.index, s.reference.term), (s.reference, s.image.clone()));
        }
        files.retain(|(index, _), _| *index >= s.reference.index);
    }
    disk.apply(b);
}

/// One node's process and disk.
#[derive(Debug)]
struct Slot {
    /// `None` while crashed.
    node: Option<Node>,
    config: Config,
    /// What survives a crash.
    disk: DurableState,
    /// Batches written but not yet synced: lost by a crash. Synced after `persist_delay_ticks`.
    unsynced: VecDeque<(u64, PersistBatch)>,
    /// Snapshot jobs being written to their files (off the driver in a real shell), durable
    /// and handed back after `persist_delay_ticks`: lost by a crash, so the node restarts from
    /// its old snapshot and log.
    snapshot_jobs: VecDeque<(u64, SnapshotJob)>,
    /// The durable snapshot files on the node's disk, by (index, term): written by jobs and
    /// by received transfers, deleted once a newer reference is durable. A restart must find
    /// the one its disk references.
    files: SnapshotFiles,
    /// `Some` when the node gossips.
    gossip: Option<GossipSlot>,
}

/// A simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    tick: u64,
    rng: Rng,
    slots: BTreeMap<NodeId, Slot>,
    in_flight: BTreeMap<(u64, u64), Packet>,
    packet_seq: u64,
    /// Directed links that drop the given traffic.
    blocked: BTreeSet<(NodeId, NodeId, Traffic)>,
    pub net: NetFaults,
    /// Ticks between a batch being written and being durable (0 = at once).
    pub persist_delay_ticks: u64,
    /// Each reply with the tick it arrived and the incarnation of the node that gave it.
    replies: BTreeMap<RequestId, (u64, u64, Reply)>,
    /// How many times each node's process was started: its current incarnation.
    starts: BTreeMap<NodeId, u64>,
    /// Ticks between a snapshot's delivery and its sender learning of it (0: at once). A real
    /// sender learns when its stream ends, which can be after the receiver's answer arrives.
    pub snapshot_report_delay_ticks: u64,
    /// Requests handed to a live (or paused) process and not answered yet: id → (node, tick).
    /// A crash forgets the ones it held (the process that had them is gone).
    unanswered: BTreeMap<RequestId, (NodeId, u64)>,
    /// Snapshot reports waiting for their tick: (due tick, seq) → (from, to, delivered).
    delayed_reports: BTreeMap<(u64, u64), (NodeId, NodeId, bool)>,
    next_request: RequestId,
    events: Vec<(u64, NodeId, Event)>,
    trace: TraceHash,
    base_config: Config,
    refused: Vec<(u64, NodeId, String)>,
    /// Paused processes (a long GC or SIGSTOP): not ticked, inputs held until resumed.
    paused: BTreeMap<NodeId, Vec<Held>>,
    /// Gossip timing when nodes gossip.
    gossip: Option<GossipParams>,
    /// Forgers by network endpoint ([`Cluster::add_forger`]).
    forgers: BTreeMap<NodeId, Forger>,
    /// Which node currently owns each gossip address.
    gossip_owner: BTreeMap<String, NodeId>,
    /// Gossip datagrams a node refused (stale or for another incarnation): counted, not bugs.
    pub gossip_refused: u64,
    /// A restarted node rejoins gossip through the members it knew before too (the peers its
    /// core remembered on disk, `NodeMeta::gossip_peers`); without it only through its
    /// configured seeds, which may all be gone. On by default.
    pub remember_gossip_peers: bool,
    /// Hand every packet due at a tick to its node before draining that node (one drain per
    /// node per tick), as a shell that batches its inputs does (`Node`'s contract allows any
    /// number of inputs per drain). Off by default: seeds recorded without it replay as they
    /// did.
    pub batch_inputs: bool,
}

/// Per-node config tweaks applied by [`Cluster::with_config`].
pub type ConfigFn = fn(&mut Config);

impl Cluster {
    /// Node 1 bootstrapped as a one-voter cluster; nothing else yet.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, |_| {})
    }

    /// Like [`Cluster::new`], with every node's [`Config`] adjusted by `tweak`.
    pub fn with_config(seed: u64, tweak: ConfigFn) -> Self {
        let mut base_config = Config::new(1, 0);
        tweak(&mut base_config);
        Self::with_base_config(seed, base_config)
    }

    /// Like [`Cluster::new`], with `base_config` (id and seed are overridden per node) for
    /// every node.
    pub fn with_base_config(seed: u64, base_config: Config) -> Self {
        Self::build(seed, base_config, None)
    }

    /// Node 1 bootstrapped with gossip on (cluster id [`SIM_CLUSTER_ID`]); others join with
    /// [`Cluster::join`].
    pub fn with_gossip(seed: u64, base_config: Config, params: GossipParams) -> Self {
        Self::build(seed, base_config, Some(params))
    }

    fn build(seed: u64, base_config: Config, gossip: Option<GossipParams>) -> Self {
        let mut c = Cluster {
            tick: 0,
            rng: Rng::new(seed),
            slots: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            packet_seq: 0,
            blocked: BTreeSet::new(),
            net: NetFaults::default(),
            persist_delay_ticks: 0,
            replies: BTreeMap::new(),
            next_request: 1,
            events: Vec::new(),
            trace: TraceHash::default(),
            base_config,
            refused: Vec::new(),
            starts: BTreeMap::new(),
            snapshot_report_delay_ticks: 0,
            unanswered: BTreeMap::new(),
            delayed_reports: BTreeMap::new(),
            paused: BTreeMap::new(),
            gossip,
            forgers: BTreeMap::new(),
            gossip_owner: BTreeMap::new(),
            gossip_refused: 0,
            remember_gossip_peers: true,
            batch_inputs: false,
        };
        let info = c.member_info(1);
        let config = c.node_config(1);
        let mut disk = DurableState::default();
        let cluster_id = NonZeroU64::new(SIM_CLUSTER_ID).expect("a non-zero cluster id");
        let mut files = SnapshotFiles::new();
        apply_durable(&mut disk, &mut files, &Node::bootstrap(&info, &config, cluster_id));
        let gossip = c.gossip.map(|_| GossipSlot {
            name: "n1".into(),
            addr: gossip_addr(1),
            seeds: Vec::new(),
        });
        c.slots.insert(
            1,
            Slot {
                node: None,
                config,
                disk,
                unsynced: VecDeque::new(),
                snapshot_jobs: VecDeque::new(),
                files,
                gossip,
            },
        );
        c.start(1);
        c
    }

    /// A cluster of `voters` voters (ids 1..=voters), formed by bootstrap + add learner +
    /// automatic promotion, exactly as a real cluster forms.
    ///
    /// # Panics
    /// If the cluster does not form within a generous bound (a bug).
    pub fn form(seed: u64, voters: u64, tweak: ConfigFn) -> Self {
        let mut base = Config::new(1, 0);
        tweak(&mut base);
        Self::form_with_config(seed, voters, base)
    }

    /// [`Cluster::form`] with a base [`Config`] given by value (id and seed set per node).
    ///
    /// # Panics
    /// If the cluster does not form within a generous bound (a bug).
    pub fn form_with_config(seed: u64, voters: u64, base: Config) -> Self {
        let mut c = Self::with_base_config(seed, base);
        assert!(c.run_until(200, |c| c.leader().is_some()), "node 1 never led");
        for id in 2..=voters {
            c.add_node(id);
            let info = c.member_info(id);
            let leader = c.leader().expect("leader");
            let reply = c.call(leader, Request::AddLearner { info }, 500);
            assert!(
                matches!(reply, Some(Reply { result: Ok(_), .. })),
                "adding node {id}: {reply:?}"
            );
            assert!(
                c.run_until(1000, |c| c.voters_seen_by_all().contains(&id)),
                "node {id} never became a voter"
            );
        }
        c
    }

    /// Creates an empty node (not yet a member) and starts it.
    pub fn add_node(&mut self, id: NodeId) {
        let config = self.node_config(id);
        self.slots.insert(
            id,
            Slot {
                node: None,
                config,
                disk: DurableState::default(),
                unsynced: VecDeque::new(),
                snapshot_jobs: VecDeque::new(),
                files: BTreeMap::new(),
                gossip: None,
            },
        );
        self.start(id);
    }

    /// Starts an empty gossiping node `id` (name `n<id>`, address [`gossip_addr`]) that knows
    /// only `seeds` (gossip addresses, possibly of nodes not started yet): the leader adds it.
    ///
    /// # Panics
    /// If the cluster does not gossip, or `id` exists.
    pub fn join(&mut self, id: NodeId, seeds: Vec<String>) {
        let name = format!("n{id}");
        self.join_as(id, name, gossip_addr(id), seeds);
    }

    fn join_as(&mut self, id: NodeId, name: String, addr: String, seeds: Vec<String>) {
        assert!(self.gossip.is_some(), "join needs a gossiping cluster");
        assert!(!self.slots.contains_key(&id), "node id {id} is taken");
        let config = self.node_config(id);
        let gossip = Some(GossipSlot { name, addr, seeds });
        self.slots.insert(
            id,
            Slot {
                node: None,
                config,
                disk: DurableState::default(),
                unsynced: VecDeque::new(),
                snapshot_jobs: VecDeque::new(),
                files: BTreeMap::new(),
                gossip,
            },
        );
        self.start(id);
    }

    /// A disk failure: node `old` is gone with its data and comes back empty as `new` under
    /// the same name and gossip address (cluster id 0), as a real wiped node would.
    ///
    /// # Panics
    /// If `old` does not gossip or `new` exists.
    pub fn wipe(&mut self, old: NodeId, new: NodeId) {
        let g = self.slots.get(&old).and_then(|s| s.gossip.clone()).expect("a gossiping node");
        self.destroy(old);
        self.join_as(new, g.name, g.addr, g.seeds);
    }

    /// The node leaves for good (`Node::handle_leave`).
    pub fn leave(&mut self, id: NodeId) {
        if self.paused.contains_key(&id) {
            return;
        }
        if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
            n.handle_leave();
            self.drain(id);
        }
    }

    /// A leaving node tells every other member of its configuration that it leaves, over an
    /// authenticated call (the shell's `Peer.Leave`: `Node::handle_peer_leave` under the
    /// leaving node's certificate name), as the shell does until it sees its removal. Members
    /// that are down, paused or cut off from it (Raft traffic) miss the call.
    pub fn announce_leave(&mut self, id: NodeId) {
        if self.paused.contains_key(&id) {
            return;
        }
        let Some(n) = self.node(id) else { return };
        let name = self.member_info(id).name;
        let others: Vec<NodeId> =
            n.status().conf.all_ids().into_iter().filter(|m| *m != id).collect();
        for m in others {
            if self.paused.contains_key(&m)
                || self.is_blocked(id, m, Traffic::Raft)
                || self.is_blocked(m, id, Traffic::Raft)
            {
                continue;
            }
            if let Some(other) = self.slots.get_mut(&m).and_then(|s| s.node.as_mut()) {
                // A refusal (another node's name) cannot happen: the caller is the member.
                let _ = other.handle_peer_leave(&name, id);
                self.drain(m);
            }
        }
    }

    /// The last step of a graceful shutdown (`Node::handle_gossip_stop`).
    pub fn gossip_stop(&mut self, id: NodeId) {
        if self.paused.contains_key(&id) {
            return;
        }
        if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
            n.handle_gossip_stop();
            self.drain(id);
        }
    }

    /// The operator fixes a node's gossip seeds (all it knew were gone) and restarts it.
    pub fn reseed(&mut self, id: NodeId, seeds: Vec<String>) {
        let Some(g) = self.slots.get_mut(&id).and_then(|s| s.gossip.as_mut()) else { return };
        g.seeds = seeds;
        self.crash(id);
        self.restart(id);
    }

    /// Starts a forger ([`Forger`]) gossiping `identity` (its gossip address replaced by a
    /// forged one of its own) to `seeds`, with the cluster's gossip timing. Its datagrams cross
    /// the same network as the nodes' (loss, delay, duplication; an isolated node is cut off
    /// from forgers too). Returns its network endpoint, for [`Cluster::stop_forger`].
    ///
    /// # Panics
    /// If the cluster does not gossip.
    pub fn add_forger(&mut self, mut identity: GossipId, seeds: Vec<String>) -> NodeId {
        let p = self.gossip.expect("forgers need a gossiping cluster");
        let wire = FORGER_WIRE_BASE + self.forgers.len() as NodeId;
        identity.gossip_addr = format!("{FORGED_ADDR_PREFIX}gossip-{}", self.forgers.len());
        self.gossip_owner.insert(identity.gossip_addr.clone(), wire);
        let mut gc = GossipConfig::new(identity, seeds);
        gc.probe_period_ms = p.probe_period_ms;
        gc.probe_rtt_ms = p.probe_rtt_ms;
        gc.suspect_to_down_ms = p.suspect_to_down_ms;
        gc.cluster_size_hint = p.cluster_size_hint;
        let mut gossip = Gossip::new(&gc, self.rng.next_u64());
        gossip.handle_time(self.tick * MS_PER_TICK);
        self.forgers.insert(wire, Forger { gossip, stopped: false });
        self.drain_forger(wire);
        wire
    }

    /// The forger goes silent for good.
    pub fn stop_forger(&mut self, wire: NodeId) {
        if let Some(f) = self.forgers.get_mut(&wire) {
            f.stopped = true;
        }
    }

    /// Every forger's identity (its forged gossip address filled in), stopped ones too.
    pub fn forged_identities(&self) -> Vec<GossipId> {
        self.forgers.values().map(|f| f.gossip.identity().clone()).collect()
    }

    /// Whether a forger ever ran in this cluster.
    pub fn has_forgers(&self) -> bool {
        !self.forgers.is_empty()
    }

    /// Any traffic to or from `id` is cut.
    pub fn is_cut(&self, id: NodeId) -> bool {
        self.blocked.iter().any(|(a, b, _)| *a == id || *b == id)
    }

    /// Like [`Cluster::health_of`], among the identities at real (not forged) gossip
    /// addresses: the real node's health, however new an incarnation a forger claimed.
    pub fn real_health_of(&self, viewer: NodeId, name: &str) -> Option<(NodeId, Health)> {
        self.gossip_members(viewer)
            .into_iter()
            .filter(|m| m.id.name == name && !is_forged_addr(&m.id.gossip_addr))
            .max_by_key(|m| (m.id.incarnation(), m.id.raft_id))
            .map(|m| (m.id.raft_id, m.health))
    }

    /// The node's gossip identity as kept across restarts.
    pub fn gossip_slot(&self, id: NodeId) -> Option<&GossipSlot> {
        self.slots.get(&id).and_then(|s| s.gossip.as_ref())
    }

    /// The node that owns gossip address `addr` now.
    pub fn gossip_owner(&self, addr: &str) -> Option<NodeId> {
        self.gossip_owner.get(addr).copied()
    }

    /// `id`'s view of every other gossip member.
    pub fn gossip_members(&self, id: NodeId) -> Vec<GossipMember> {
        self.node(id).map(Node::gossip_members).unwrap_or_default()
    }

    /// Health of the newest incarnation of `name` in `viewer`'s gossip view.
    pub fn health_of(&self, viewer: NodeId, name: &str) -> Option<(NodeId, Health)> {
        let directory = self.node(viewer)?.directory();
        let entry = directory.newest_named(name)?;
        Some((entry.id, entry.health?))
    }

    pub fn member_info(&self, id: NodeId) -> MemberInfo {
        let name = self
            .slots
            .get(&id)
            .and_then(|s| s.gossip.as_ref())
            .map_or_else(|| format!("n{id}"), |g| g.name.clone());
        MemberInfo {
            id,
            name,
            peer_addr: format!("sim-peer:{id}"),
            rpc_addr: format!("sim-rpc:{id}"),
            auto_promote: true,
        }
    }

    fn node_config(&mut self, id: NodeId) -> Config {
        let mut config = self.base_config.clone();
        config.id = id;
        config
    }

    fn start(&mut self, id: NodeId) {
        *self.starts.entry(id).or_default() += 1;
        let seed = self.rng.next_u64();
        let now_ms = self.tick * MS_PER_TICK;
        let slot = self.slots.get_mut(&id).expect("slot");
        let mut config = slot.config.clone();
        config.seed = seed;
        let mut disk = slot.disk.clone();
        if let (Some(p), Some(g)) = (self.gossip, &slot.gossip) {
            let identity = GossipId {
                gossip_addr: g.addr.clone(),
                name: g.name.clone(),
                raft_id: id,
                rpc_addr: format!("sim-rpc:{id}"),
                // The core gossips the cluster id stored on its disk.
                cluster_id: 0,
                started_ms: now_ms,
                bump: 0,
                leaving: false,
            };
            if !self.remember_gossip_peers {
                if let Some(bytes) = &disk.node_meta {
                    let mut meta = NodeMeta::decode(bytes).expect("the core's own metadata");
                    meta.gossip_peers.clear();
                    disk.node_meta = Some(meta.encode());
                }
            }
            let mut gc = GossipConfig::new(identity, g.seeds.clone());
            gc.probe_period_ms = p.probe_period_ms;
            gc.probe_rtt_ms = p.probe_rtt_ms;
            gc.suspect_to_down_ms = p.suspect_to_down_ms;
            gc.cluster_size_hint = p.cluster_size_hint;
            config.gossip = Some(gc);
            self.gossip_owner.insert(g.addr.clone(), id);
        }
        if let Some(s) = &disk.snapshot {
            // A real shell reads the referenced file back: it must still be on the disk.
            assert!(
                slot.files.get(&(s.reference.index, s.reference.term)).map(|f| f.0)
                    == Some(s.reference),
                "node {id}: the snapshot file its disk references is gone"
            );
        }
        let node = Node::new(config, disk).expect("node starts from its own disk");
        slot.node = Some(node);
        self.drain(id);
    }

    // ------------------------------------------------------------------ faults

    /// Kills a node: its process state and every unsynced write are lost.
    pub fn crash(&mut self, id: NodeId) {
        self.paused.remove(&id);
        self.unanswered.retain(|_, (node, _)| *node != id);
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.node = None;
            slot.unsynced.clear();
            slot.snapshot_jobs.clear();
        }
    }

    /// Starts a crashed node again from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if self.slots.get(&id).is_some_and(|s| s.node.is_none()) {
            self.start(id);
        }
    }

    /// Drops the node's process and its disk: it comes back empty under the same id only if
    /// [`Cluster::add_node`] is called again (tests should use a fresh id, as a real wiped node
    /// would).
    pub fn destroy(&mut self, id: NodeId) {
        self.paused.remove(&id);
        self.unanswered.retain(|_, (node, _)| *node != id);
        if let Some(g) = self.slots.remove(&id).and_then(|s| s.gossip) {
            if self.gossip_owner.get(&g.addr) == Some(&id) {
                self.gossip_owner.remove(&g.addr);
            }
        }
    }

    /// Freezes a live node's process: it is not ticked and every input to it (packets, client
    /// requests, snapshot reports) waits until [`Cluster::resume`]. Its disk keeps what was
    /// already synced; pending syncs wait too.
    pub fn pause(&mut self, id: NodeId) {
        if self.is_up(id) {
            self.paused.entry(id).or_default();
        }
    }

    /// Lets a paused node run again: held packets arrive next tick (in order), held requests
    /// and snapshot reports are handed over now.
    pub fn resume(&mut self, id: NodeId) {
        let Some(held) = self.paused.remove(&id) else { return };
        for h in held {
            match h {
                Held::Packet(p) => {
                    self.packet_seq += 1;
                    self.in_flight.insert((self.tick + 1, self.packet_seq), p);
                }
                Held::Request(rid, request) => {
                    if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
                        n.handle_request(rid, request);
                        self.drain(id);
                    }
                }
                Held::SnapshotStatus(to, delivered) => self.report_snapshot(id, to, delivered),
            }
        }
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.paused.contains_key(&id)
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.slots.get(&id).is_some_and(|s| s.node.is_some())
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        self.isolate_traffic(id, Traffic::All);
    }

    /// Cuts `traffic` on every link to and from `id`.
    pub fn isolate_traffic(&mut self, id: NodeId, traffic: Traffic) {
        let ids: Vec<NodeId> = self.slots.keys().chain(self.forgers.keys()).copied().collect();
        for other in ids {
            if other != id {
                self.blocked.insert((id, other, traffic));
                self.blocked.insert((other, id, traffic));
            }
        }
    }

    /// Cuts the directed link `from -> to` only.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.block_traffic(from, to, Traffic::All);
    }

    /// Cuts `traffic` on the directed link `from -> to` only.
    pub fn block_traffic(&mut self, from: NodeId, to: NodeId, traffic: Traffic) {
        self.blocked.insert((from, to, traffic));
    }

    /// Splits the cluster: `traffic` between the two sides is cut both ways.
    pub fn split(&mut self, side_a: &[NodeId], side_b: &[NodeId], traffic: Traffic) {
        for a in side_a {
            for b in side_b {
                self.block_traffic(*a, *b, traffic);
                self.block_traffic(*b, *a, traffic);
            }
        }
    }

    fn is_blocked(&self, from: NodeId, to: NodeId, traffic: Traffic) -> bool {
        self.blocked.contains(&(from, to, Traffic::All))
            || self.blocked.contains(&(from, to, traffic))
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    // ------------------------------------------------------------------ clients

    /// Hands a request to a node; the reply shows up in [`Cluster::reply`].
    pub fn submit(&mut self, node: NodeId, request: Request) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        if let Some(held) = self.paused.get_mut(&node) {
            held.push(Held::Request(id, request));
            self.unanswered.insert(id, (node, self.tick));
            return id;
        }
        if let Some(n) = self.slots.get_mut(&node).and_then(|s| s.node.as_mut()) {
            self.unanswered.insert(id, (node, self.tick));
            n.handle_request(id, request);
            self.drain(node);
        }
        id
    }

    /// The oldest request a process has held for more than `ticks` without answering it.
    /// Every request gets an answer (an error at worst) within the core's request timeout:
    /// anything older is a liveness bug, even if the client gave up on it long ago.
    pub fn unanswered_for(&self, ticks: u64) -> Option<(RequestId, NodeId, u64)> {
        self.unanswered
            .iter()
            .filter(|(_, (_, at))| self.tick.saturating_sub(*at) > ticks)
            .map(|(id, (node, at))| (*id, *node, *at))
            .next()
    }

    /// Hands several requests to a node as ONE batch of inputs (one drain after the last), the
    /// way a batching shell does; replies show up in [`Cluster::reply`].
    pub fn submit_batch(&mut self, node: NodeId, requests: Vec<Request>) -> Vec<RequestId> {
        let mut ids = Vec::with_capacity(requests.len());
        for request in requests {
            let id = self.next_request;
            self.next_request += 1;
            ids.push(id);
            if let Some(held) = self.paused.get_mut(&node) {
                held.push(Held::Request(id, request));
                self.unanswered.insert(id, (node, self.tick));
            } else if let Some(n) = self.slots.get_mut(&node).and_then(|s| s.node.as_mut()) {
                self.unanswered.insert(id, (node, self.tick));
                n.handle_request(id, request);
            }
        }
        if !self.paused.contains_key(&node) {
            self.drain(node);
        }
        ids
    }

    pub fn reply(&self, id: RequestId) -> Option<&Reply> {
        self.replies.get(&id).map(|(_, _, r)| r)
    }

    /// Tick at which a reply arrived.
    pub fn reply_tick(&self, id: RequestId) -> Option<u64> {
        self.replies.get(&id).map(|(t, _, _)| *t)
    }

    /// Incarnation (process start count) of the node that gave a reply: a node's state only
    /// moves forward within one incarnation.
    pub fn reply_incarnation(&self, id: RequestId) -> Option<u64> {
        self.replies.get(&id).map(|(_, i, _)| *i)
    }

    /// Submits and runs until the reply arrives or `max_ticks` pass.
    pub fn call(&mut self, node: NodeId, request: Request, max_ticks: u64) -> Option<Reply> {
        let id = self.submit(node, request);
        self.run_until(max_ticks, |c| c.reply(id).is_some());
        self.reply(id).cloned()
    }

    /// Hands raw bytes to a node as if a peer sent them (malformed-input tests).
    pub fn inject(&mut self, to: NodeId, bytes: &[u8]) -> Result<(), String> {
        let n = self.slots.get_mut(&to).and_then(|s| s.node.as_mut()).ok_or("node is down")?;
        let result = n.handle_peer_message(bytes).map_err(|e| e.to_string());
        self.drain(to);
        result
    }

    // ------------------------------------------------------------------ time

    pub fn now(&self) -> u64 {
        self.tick
    }

    /// One tick: deliver due packets, sync due writes, tick every live node.
    pub fn step(&mut self) {
        self.tick += 1;
        self.deliver_due();
        while let Some(entry) = self.delayed_reports.first_entry() {
            if entry.key().0 > self.tick {
                break;
            }
            let (from, to, delivered) = entry.remove();
            self.report_snapshot(from, to, delivered);
        }
        self.sync_due();
        let ids: Vec<NodeId> = self.slots.keys().copied().collect();
        let now_ms = self.tick * MS_PER_TICK;
        for id in ids {
            if self.paused.contains_key(&id) {
                continue;
            }
            if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
                // One virtual clock: it never steps, so it serves as both.
                n.handle_tick(mokv_core::Now { monotonic_ms: now_ms, wall_ms: now_ms });
                self.drain(id);
            }
        }
        let wires: Vec<NodeId> = self.forgers.keys().copied().collect();
        for wire in wires {
            if let Some(f) = self.forgers.get_mut(&wire).filter(|f| !f.stopped) {
                f.gossip.handle_time(now_ms);
                self.drain_forger(wire);
            }
        }
    }

    pub fn run_ticks(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Steps until `done` holds (checked before each step); false if `max_ticks` ran out.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    // ------------------------------------------------------------------ observation

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.slots.get(&id).and_then(|s| s.node.as_ref())
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.slots.keys().copied().collect()
    }

    /// The live leader of the highest term, if exactly one node of that term leads.
    pub fn leader(&self) -> Option<NodeId> {
        let live = self.slots.values().filter_map(|s| s.node.as_ref());
        let leaders: Vec<(u64, NodeId)> = live
            .filter(|n| n.status().role == Role::Leader)
            .map(|n| (n.status().term, n.id()))
            .collect();
        leaders.iter().max().map(|(_, id)| *id)
    }

    /// Voters in the configuration as applied by every live node (intersection).
    pub fn voters_seen_by_all(&self) -> BTreeSet<NodeId> {
        let mut sets =
            self.slots.values().filter_map(|s| s.node.as_ref()).map(|n| n.status().conf.voters);
        let Some(first) = sets.next() else { return BTreeSet::new() };
        sets.fold(first, |acc, s| acc.intersection(&s).copied().collect())
    }

    /// Peer messages a node refused: (tick, receiver, reason).
    pub fn refused(&self) -> &[(u64, NodeId, String)] {
        &self.refused
    }

    pub fn events(&self) -> &[(u64, NodeId, Event)] {
        &self.events
    }

    pub fn disk(&self, id: NodeId) -> Option<&DurableState> {
        self.slots.get(&id).map(|s| &s.disk)
    }

    /// A hash of everything that crossed the network and every reply, in order, over their
    /// encoded bytes (see [`crate::trace`]).
    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }

    // ------------------------------------------------------------------ plumbing

    /// Drains a node's outputs in the order its contract asks for.
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(slot) = self.slots.get_mut(&id) else { return };
            let Some(node) = slot.node.as_mut() else { return };
            while let Some(batch) = node.poll_persist() {
                slot.unsynced.push_back((self.tick + self.persist_delay_ticks, batch));
            }
            let mut synced = None;
            if self.persist_delay_ticks == 0 {
                while let Some((_, b)) = slot.unsynced.pop_front() {
                    apply_durable(&mut slot.disk, &mut slot.files, &b);
                    synced = Some(b.id);
                }
            }
            let mut encoded = false;
            while let Some(job) = node.poll_snapshot_job() {
                if self.persist_delay_ticks == 0 {
                    node.handle_snapshot_durable(write_file(&mut slot.files, job));
                    encoded = true;
                } else {
                    slot.snapshot_jobs.push_back((self.tick + self.persist_delay_ticks, job));
                }
            }
            let mut transmits = Vec::new();
            while let Some(t) = node.poll_transmit() {
                transmits.push(t);
            }
            let mut replies = Vec::new();
            while let Some(r) = node.poll_reply() {
                replies.push(r);
            }
            let mut events = Vec::new();
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            let mut datagrams = Vec::new();
            while let Some(d) = node.poll_datagram() {
                datagrams.push(d);
            }
            let mut verifications = Vec::new();
            while let Some(v) = node.poll_verify() {
                verifications.push(v);
            }
            // The shell's proof: only a real, running node answers, under its own name, at
            // the address it really listens on (a forger holds no node certificate).
            for v in verifications {
                let claim = self
                    .slots
                    .values()
                    .filter_map(|s| s.node.as_ref())
                    .find(|n| {
                        n.gossip_identity()
                            .is_some_and(|g| g.name == v.name && g.rpc_addr == v.rpc_addr)
                    })
                    .and_then(|n| n.own_claim());
                if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
                    n.handle_verified(v, claim);
                }
            }
            for t in transmits {
                self.send(id, t);
            }
            for d in datagrams {
                self.send_gossip(id, d.to, d.payload);
            }
            for r in replies {
                self.trace_mix(&[b"reply", &r.id.to_le_bytes(), &encode_reply(&r)]);
                self.unanswered.remove(&r.id);
                let incarnation = self.starts.get(&id).copied().unwrap_or_default();
                self.replies.insert(r.id, (self.tick, incarnation, r));
            }
            for e in events {
                self.events.push((self.tick, id, e));
            }
            match synced {
                Some(batch_id) => {
                    if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
                        n.handle_persisted(batch_id);
                    }
                }
                None if encoded => {}
                None => return,
            }
        }
    }

    /// Sends what a running forger has to send.
    fn drain_forger(&mut self, wire: NodeId) {
        let Some(f) = self.forgers.get_mut(&wire).filter(|f| !f.stopped) else { return };
        let datagrams: Vec<_> = std::iter::from_fn(|| f.gossip.poll_datagram()).collect();
        for d in datagrams {
            self.send_gossip(wire, d.to, d.payload);
        }
    }

    /// Makes due writes durable and acknowledges them.
    fn sync_due(&mut self) {
        let ids: Vec<NodeId> = self.slots.keys().copied().collect();
        for id in ids {
            if self.paused.contains_key(&id) {
                continue;
            }
            let Some(slot) = self.slots.get_mut(&id) else { continue };
            let mut synced = None;
            while slot.unsynced.front().is_some_and(|(due, _)| *due <= self.tick) {
                let Some((_, b)) = slot.unsynced.pop_front() else { break };
                apply_durable(&mut slot.disk, &mut slot.files, &b);
                synced = Some(b.id);
            }
            let mut progressed = false;
            if let (Some(batch_id), Some(n)) = (synced, slot.node.as_mut()) {
                n.handle_persisted(batch_id);
                progressed = true;
            }
            while slot.snapshot_jobs.front().is_some_and(|(due, _)| *due <= self.tick) {
                let Some((_, job)) = slot.snapshot_jobs.pop_front() else { break };
                if let Some(n) = slot.node.as_mut() {
                    n.handle_snapshot_durable(write_file(&mut slot.files, job));
                    progressed = true;
                }
            }
            if progressed {
                self.drain(id);
            }
        }
    }

    fn send(&mut self, from: NodeId, transmit: Transmit) {
        let to = transmit.to;
        let lost = self.is_blocked(from, to, Traffic::Raft)
            || (self.net.loss_percent > 0 && self.rng.below(100) < self.net.loss_percent);
        if lost {
            if transmit.is_snapshot {
                self.report_snapshot(from, to, false);
            }
            return;
        }
        self.put_on_wire(Packet { from, to, payload: Payload::Raft(transmit) });
    }

    /// A gossip datagram to whoever owns `addr` (cut, lost, duplicated, delayed like Raft).
    fn send_gossip(&mut self, from: NodeId, addr: String, bytes: Vec<u8>) {
        let Some(&to) = self.gossip_owner.get(&addr) else { return };
        let lost = self.is_blocked(from, to, Traffic::Gossip)
            || (self.net.loss_percent > 0 && self.rng.below(100) < self.net.loss_percent);
        if lost {
            return;
        }
        self.put_on_wire(Packet { from, to, payload: Payload::Gossip { addr, bytes } });
    }

    fn put_on_wire(&mut self, packet: Packet) {
        let copies =
            if self.net.duplicate_percent > 0 && self.rng.below(100) < self.net.duplicate_percent {
                2
            } else {
                1
            };
        for _ in 0..copies {
            let delay = if self.net.delay_ticks_max > 0 {
                self.rng.below(self.net.delay_ticks_max + 1)
            } else {
                0
            };
            // Delay 0 still waits for the next tick's delivery: a tick is the network's unit.
            let at = self.tick + delay.max(1);
            self.packet_seq += 1;
            self.in_flight.insert((at, self.packet_seq), packet.clone());
        }
    }

    fn deliver_due(&mut self) {
        // Packets sent while delivering are due next tick at the earliest, so this ends.
        let due_keys: Vec<(u64, u64)> =
            self.in_flight.range(..=(self.tick, u64::MAX)).map(|(k, _)| *k).collect();
        // With `batch_inputs`: nodes that got packets and are drained after the last one.
        let mut undrained = BTreeSet::new();
        for key in due_keys {
            let Some(mut p) = self.in_flight.remove(&key) else { continue };
            if let Payload::Gossip { addr, .. } = &p.payload {
                // Whoever owns the address now gets it (a wiped node took it over).
                match self.gossip_owner.get(addr) {
                    Some(owner) => p.to = *owner,
                    None => continue,
                }
            }
            let blocked = self.is_blocked(p.from, p.to, p.traffic());
            if let (Some(f), Payload::Gossip { bytes, .. }) =
                (self.forgers.get_mut(&p.to), &p.payload)
            {
                if !blocked && !f.stopped {
                    self.trace
                        .mix(self.tick, &[b"g", &p.from.to_le_bytes(), &p.to.to_le_bytes(), bytes]);
                    // A forger takes whatever foca accepts; what it refuses is its problem.
                    let _ = f.gossip.handle_datagram(bytes);
                    self.drain_forger(p.to);
                }
                continue;
            }
            if let Some(held) = self.paused.get_mut(&p.to) {
                if !blocked {
                    held.push(Held::Packet(p));
                    continue;
                }
            }
            let mut delivered = !blocked && self.is_up(p.to);
            match &p.payload {
                Payload::Raft(transmit) => {
                    // A snapshot message travels with the sender's file: the one its
                    // reference names, if the sender still has it (a newer snapshot may have
                    // replaced it: the transfer fails).
                    let file = transmit.snapshot.and_then(|r| {
                        let files = &self.slots.get(&p.from)?.files;
                        files.get(&(r.index, r.term)).filter(|f| f.0 == r).cloned()
                    });
                    if transmit.is_snapshot && file.is_none() {
                        delivered = false;
                    }
                    if delivered {
                        self.trace_mix(&[
                            &p.from.to_le_bytes(),
                            &p.to.to_le_bytes(),
                            &transmit.payload.0,
                        ]);
                        if let Some(slot) = self.slots.get_mut(&p.to) {
                            if let Some(n) = slot.node.as_mut() {
                                let result = match file {
                                    Some((reference, image)) => {
                                        // The receiver's shell wrote the file durably first.
                                        slot.files.insert(
                                            (reference.index, reference.term),
                                            (reference, image.clone()),
                                        );
                                        n.handle_snapshot_message(None, &transmit.payload.0, image)
                                    }
                                    None => n.handle_peer_message(&transmit.payload.0),
                                };
                                if let Err(e) = result {
                                    self.refused.push((self.tick, p.to, e.to_string()));
                                }
                            }
                        }
                        if self.batch_inputs {
                            undrained.insert(p.to);
                        } else {
                            self.drain(p.to);
                        }
                    }
                    if transmit.is_snapshot {
                        if self.snapshot_report_delay_ticks == 0 {
                            self.report_snapshot(p.from, p.to, delivered);
                        } else {
                            self.packet_seq += 1;
                            let due = self.tick + self.snapshot_report_delay_ticks;
                            self.delayed_reports
                                .insert((due, self.packet_seq), (p.from, p.to, delivered));
                        }
                    }
                }
                Payload::Gossip { bytes, .. } => {
                    if delivered {
                        self.trace_mix(&[b"g", &p.from.to_le_bytes(), &p.to.to_le_bytes(), bytes]);
                        if let Some(n) = self.slots.get_mut(&p.to).and_then(|s| s.node.as_mut()) {
                            if n.handle_gossip(bytes).is_err() {
                                self.gossip_refused += 1;
                            }
                        }
                        if self.batch_inputs {
                            undrained.insert(p.to);
                        } else {
                            self.drain(p.to);
                        }
                    }
                }
            }
        }
        for id in undrained {
            self.drain(id);
        }
    }

    fn report_snapshot(&mut self, from: NodeId, to: NodeId, delivered: bool) {
        if let Some(held) = self.paused.get_mut(&from) {
            held.push(Held::SnapshotStatus(to, delivered));
            return;
        }
        if let Some(n) = self.slots.get_mut(&from).and_then(|s| s.node.as_mut()) {
            n.handle_snapshot_status(to, delivered);
            self.drain(from);
        }
    }

    fn trace_mix(&mut self, parts: &[&[u8]]) {
        self.trace.mix(self.tick, parts);
    }
}

/// The gossip address node `id` is started with by [`Cluster::join`] (and node 1).
pub fn gossip_addr(id: NodeId) -> String {
    format!("sim-gossip:n{id}")
}

/// True when the reply is a success.
pub fn is_ok(reply: &Option<Reply>) -> bool {
    matches!(reply, Some(Reply { result: Ok(_), .. }))
}

/// The value a Get reply carries, if it is a successful Get of an existing key.
pub fn get_value(reply: &Option<Reply>) -> Option<Vec<u8>> {
    match reply {
        Some(Reply { result: Ok(Response::Get(Some(v))), .. }) => Some(v.value.clone()),
        _ => None,
    }
}
