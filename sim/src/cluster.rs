//! A whole cluster of `mokv-core` nodes in one thread: a virtual clock, a network of packets
//! ordered by delivery tick, and an in-memory disk per node with the real batch semantics.
//!
//! Everything random is drawn from one seeded [`Rng`], and every collection that is iterated is
//! ordered, so a seed replays bit for bit. [`Cluster::trace_hash`] summarises a run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mokv_core::persist::{DurableState, PersistBatch};
use mokv_core::{
    Config, Event, MemberInfo, Node, NodeId, Reply, Request, RequestId, Response, Rng, Role,
    Transmit,
};

/// How the network misbehaves. All percentages are of packets; delays are in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetFaults {
    pub loss_percent: u64,
    pub duplicate_percent: u64,
    /// Each packet is delayed by a uniform draw in `0..=delay_ticks_max`, which also reorders.
    pub delay_ticks_max: u64,
}

/// A packet on the wire.
#[derive(Debug, Clone)]
struct Packet {
    from: NodeId,
    to: NodeId,
    transmit: Transmit,
}

/// An input held back from a paused node, handed over in order when it resumes.
#[derive(Debug, Clone)]
enum Held {
    Packet(Packet),
    Request(RequestId, Request),
    SnapshotStatus(NodeId, bool),
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
}

/// A simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    tick: u64,
    rng: Rng,
    slots: BTreeMap<NodeId, Slot>,
    in_flight: BTreeMap<(u64, u64), Packet>,
    packet_seq: u64,
    /// Directed links that drop everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    pub net: NetFaults,
    /// Ticks between a batch being written and being durable (0 = at once).
    pub persist_delay_ticks: u64,
    replies: BTreeMap<RequestId, (u64, Reply)>,
    next_request: RequestId,
    events: Vec<(u64, NodeId, Event)>,
    trace: u64,
    base_config: Config,
    refused: Vec<(u64, NodeId, String)>,
    /// Paused processes (a long GC or SIGSTOP): not ticked, inputs held until resumed.
    paused: BTreeMap<NodeId, Vec<Held>>,
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
            trace: FNV_OFFSET,
            base_config,
            refused: Vec::new(),
            paused: BTreeMap::new(),
        };
        let info = c.member_info(1);
        let config = c.node_config(1);
        let mut disk = DurableState::default();
        disk.apply(&Node::bootstrap(&info, &config));
        c.slots.insert(1, Slot { node: None, config, disk, unsynced: VecDeque::new() });
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
            Slot { node: None, config, disk: DurableState::default(), unsynced: VecDeque::new() },
        );
        self.start(id);
    }

    pub fn member_info(&self, id: NodeId) -> MemberInfo {
        MemberInfo {
            id,
            name: format!("n{id}"),
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
        let seed = self.rng.next_u64();
        let slot = self.slots.get_mut(&id).expect("slot");
        let mut config = slot.config.clone();
        config.seed = seed;
        let node = Node::new(config, slot.disk.clone()).expect("node starts from its own disk");
        slot.node = Some(node);
        self.drain(id);
    }

    // ------------------------------------------------------------------ faults

    /// Kills a node: its process state and every unsynced write are lost.
    pub fn crash(&mut self, id: NodeId) {
        self.paused.remove(&id);
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.node = None;
            slot.unsynced.clear();
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
        self.slots.remove(&id);
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
        let ids: Vec<NodeId> = self.slots.keys().copied().collect();
        for other in ids {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    /// Cuts the directed link `from -> to` only.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
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
            return id;
        }
        if let Some(n) = self.slots.get_mut(&node).and_then(|s| s.node.as_mut()) {
            n.handle_request(id, request);
            self.drain(node);
        }
        id
    }

    pub fn reply(&self, id: RequestId) -> Option<&Reply> {
        self.replies.get(&id).map(|(_, r)| r)
    }

    /// Tick at which a reply arrived.
    pub fn reply_tick(&self, id: RequestId) -> Option<u64> {
        self.replies.get(&id).map(|(t, _)| *t)
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
        self.sync_due();
        let ids: Vec<NodeId> = self.slots.keys().copied().collect();
        let now_ms = self.tick * 100;
        for id in ids {
            if self.paused.contains_key(&id) {
                continue;
            }
            if let Some(n) = self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
                n.handle_tick(now_ms);
                self.drain(id);
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

    /// A hash of everything that crossed the network and every reply, in order.
    pub fn trace_hash(&self) -> u64 {
        self.trace
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
                    slot.disk.apply(&b);
                    synced = Some(b.id);
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
            for t in transmits {
                self.send(id, t);
            }
            for r in replies {
                self.trace_mix(&[
                    b"reply",
                    &r.id.to_le_bytes(),
                    format!("{:?}", r.result).as_bytes(),
                ]);
                self.replies.insert(r.id, (self.tick, r));
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
                None => return,
            }
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
                slot.disk.apply(&b);
                synced = Some(b.id);
            }
            if let (Some(batch_id), Some(n)) = (synced, slot.node.as_mut()) {
                n.handle_persisted(batch_id);
                self.drain(id);
            }
        }
    }

    fn send(&mut self, from: NodeId, transmit: Transmit) {
        let to = transmit.to;
        let lost = self.blocked.contains(&(from, to))
            || (self.net.loss_percent > 0 && self.rng.below(100) < self.net.loss_percent);
        if lost {
            if transmit.is_snapshot {
                self.report_snapshot(from, to, false);
            }
            return;
        }
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
            self.in_flight
                .insert((at, self.packet_seq), Packet { from, to, transmit: transmit.clone() });
        }
    }

    fn deliver_due(&mut self) {
        // Packets sent while delivering are due next tick at the earliest, so this ends.
        let due_keys: Vec<(u64, u64)> =
            self.in_flight.range(..=(self.tick, u64::MAX)).map(|(k, _)| *k).collect();
        for key in due_keys {
            let Some(p) = self.in_flight.remove(&key) else { continue };
            if let Some(held) = self.paused.get_mut(&p.to) {
                if !self.blocked.contains(&(p.from, p.to)) {
                    held.push(Held::Packet(p));
                    continue;
                }
            }
            let delivered = !self.blocked.contains(&(p.from, p.to)) && self.is_up(p.to);
            if delivered {
                self.trace_mix(&[
                    &p.from.to_le_bytes(),
                    &p.to.to_le_bytes(),
                    &p.transmit.payload.0,
                ]);
                if let Some(n) = self.slots.get_mut(&p.to).and_then(|s| s.node.as_mut()) {
                    if let Err(e) = n.handle_peer_message(&p.transmit.payload.0) {
                        self.refused.push((self.tick, p.to, e.to_string()));
                    }
                }
                self.drain(p.to);
            }
            if p.transmit.is_snapshot {
                self.report_snapshot(p.from, p.to, delivered);
            }
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
        for part in parts {
            for b in part.iter() {
                self.trace ^= u64::from(*b);
                self.trace = self.trace.wrapping_mul(FNV_PRIME);
            }
            self.trace ^= 0xff;
            self.trace = self.trace.wrapping_mul(FNV_PRIME);
        }
        self.trace ^= self.tick;
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

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
