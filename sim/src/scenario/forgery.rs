//! Forged gossip identities in the gossip scenario. A forger holds the cluster's gossip key but
//! no node certificate ([`Cluster::add_forger`]): its datagrams are real foca packets every
//! node accepts, and it can gossip any identity. Gossip only suggests; membership acts on what
//! a node proved with its own certificate. So whatever forgers gossip:
//!
//! - a newer incarnation of a voter saying it leaves removes no voter;
//! - a newer incarnation of a member at another address moves no member: the member table,
//!   the directory (where Raft messages and `GetServers` go) and leader hints keep its real
//!   address;
//! - an identity nobody has (a new Raft id, under a new name or a member's) is never added.
//!
//! [`Forgeries::check`] raises [`Violation::ForgedMembership`] as soon as any node's applied
//! configuration, member table, directory or leader hint follows a forgery.

use std::collections::{BTreeMap, BTreeSet};

use mokv_core::gossip::GossipId;
use mokv_core::{Event, NodeId};

use crate::cluster::{is_forged_addr, Cluster, FORGED_ADDR_PREFIX, MS_PER_TICK, SIM_CLUSTER_ID};
use crate::harness::Harness;
use crate::violation::{Forgery, Violation};

/// Raft ids of identities only forgers announce start here (far above any node's).
pub const FORGED_ID_BASE: NodeId = 1_000_000;
/// Forgers one run starts at most.
const MAX_FORGERS: u64 = 6;
/// Ticks after a node was last down, paused or cut off within which the leader may still
/// commit its removal as a dead member (the removal was proposed while it was out).
const DEAD_REMOVAL_MARGIN_TICKS: u64 = 300;

/// The forgers of one run and what the check needs to tell a forged removal from a real one.
#[derive(Debug, Default)]
pub struct Forgeries {
    /// Forgers started so far.
    started: u64,
    /// Running forgers: network endpoint and the tick it goes silent.
    running: Vec<(NodeId, u64)>,
    /// Members a forger gossiped leaving, with the forged identity.
    leave_targets: BTreeMap<NodeId, String>,
    /// Raft ids only forgers announced, with the forged identity.
    forged_ids: BTreeMap<NodeId, String>,
    /// Nodes the scenario told to leave.
    told_to_leave: BTreeSet<NodeId>,
    /// Raft ids whose disk the scenario wiped (the old id is removed, rightly).
    wiped: BTreeSet<NodeId>,
    /// Nodes that gossiped their own leave (they applied their own removal).
    own_leave: BTreeSet<NodeId>,
    /// Last tick each node was down, paused or had any traffic cut.
    last_out_tick: BTreeMap<NodeId, u64>,
    /// Configuration ids (voters and learners) each node had applied when last looked at.
    confs: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Ids some node has applied the removal of: only the first removal is judged (a node that
    /// restarts from an older disk applies it again later).
    removals_seen: BTreeSet<NodeId>,
    events_seen: usize,
    /// A violation was raised (one per run is enough).
    raised: bool,
}

/// A forged identity, as the violation names it.
fn describe(g: &GossipId) -> String {
    format!(
        "{}#{} rpc {} started {} bump {}{}",
        g.name,
        g.raft_id,
        g.rpc_addr,
        g.started_ms,
        g.bump,
        if g.leaving { " leaving" } else { "" }
    )
}

impl Forgeries {
    /// The scenario told node `id` to leave.
    pub fn note_leave(&mut self, id: NodeId) {
        self.told_to_leave.insert(id);
    }

    /// The scenario wiped node `id`'s disk (it comes back under a new id).
    pub fn note_wipe(&mut self, id: NodeId) {
        self.wiped.insert(id);
    }

    /// Starts one forger (at most [`MAX_FORGERS`] per run): a newer incarnation of a live
    /// voter that leaves, of a live member at a forged address, or a new identity.
    pub fn inject(&mut self, h: &mut Harness, staying: &[NodeId]) {
        if self.started >= MAX_FORGERS {
            return;
        }
        let Some(conf) = h.c.leader().and_then(|l| h.c.node(l)).map(|n| n.status().conf) else {
            return;
        };
        let live = |ids: &BTreeSet<NodeId>, c: &Cluster| -> Vec<NodeId> {
            ids.iter()
                .copied()
                .filter(|id| c.node(*id).is_some_and(|n| n.gossip_identity().is_some()))
                .collect()
        };
        let k = self.started;
        let forged_rpc = format!("{FORGED_ADDR_PREFIX}rpc-{k}");
        let now_ms = h.c.now() * MS_PER_TICK;
        let (identity, what) = match h.rng.below(3) {
            0 => {
                let Some(voter) = h.random_of(&live(&conf.voters, &h.c)) else { return };
                let Some(real) = h.c.node(voter).and_then(|n| n.gossip_identity()).cloned() else {
                    return;
                };
                let rpc_addr = if h.rng.below(2) == 0 { real.rpc_addr.clone() } else { forged_rpc };
                let bump = real.bump.wrapping_add(1 + h.rng.below(3) as u32);
                let g = GossipId { rpc_addr, bump, leaving: true, ..real };
                self.leave_targets.insert(voter, describe(&g));
                (g, "forge (voter leaving)")
            }
            1 => {
                let Some(member) = h.random_of(&live(&conf.all_ids(), &h.c)) else { return };
                let Some(real) = h.c.node(member).and_then(|n| n.gossip_identity()).cloned() else {
                    return;
                };
                let bump = real.bump.wrapping_add(1 + h.rng.below(3) as u32);
                (GossipId { rpc_addr: forged_rpc, bump, ..real }, "forge (member moved)")
            }
            _ => {
                let members: Vec<NodeId> = conf.all_ids().into_iter().collect();
                let name = match h.random_of(&members) {
                    Some(m) if h.rng.below(2) == 0 => h.c.member_info(m).name,
                    _ => format!("forged{k}"),
                };
                let rpc_addr = match h.random_of(&members) {
                    Some(m) if h.rng.below(2) == 0 => h.c.member_info(m).rpc_addr,
                    _ => forged_rpc,
                };
                let g = GossipId {
                    gossip_addr: String::new(),
                    name,
                    raft_id: FORGED_ID_BASE + k,
                    rpc_addr,
                    cluster_id: if h.rng.below(2) == 0 { 0 } else { SIM_CLUSTER_ID },
                    started_ms: now_ms,
                    bump: 0,
                    leaving: false,
                };
                self.forged_ids.insert(g.raft_id, describe(&g));
                (g, "forge (new identity)")
            }
        };
        let mut seeds = Vec::new();
        for _ in 0..1 + h.rng.below(2) {
            if let Some(s) = h.random_of(staying) {
                if let Some(g) = h.c.gossip_slot(s) {
                    seeds.push(g.addr.clone());
                }
            }
        }
        seeds.dedup();
        let lifetime = 4 * h.outage();
        h.note(format!(
            "forger {k} gossips {} to {seeds:?} for {lifetime} ticks",
            describe(&identity)
        ));
        let wire = h.c.add_forger(identity, seeds);
        self.running.push((wire, h.c.now() + lifetime));
        self.started += 1;
        h.count(what);
    }

    /// Silences the forgers whose time is up (all of them with `all`).
    pub fn stop_due(&mut self, h: &mut Harness, all: bool) {
        let now = h.c.now();
        let (due, keep): (Vec<_>, Vec<_>) =
            self.running.iter().partition(|(_, until)| all || *until <= now);
        for (wire, _) in due {
            h.note(format!("forger at endpoint {wire} goes silent"));
            h.c.stop_forger(wire);
        }
        self.running = keep;
    }

    /// Looks at the nodes that had events since the last call (and at who is out or gossips
    /// its own leave, every call). The first forgery some node follows, if any.
    pub fn check(&mut self, c: &Cluster, dead_member_timeout_ms: u64) -> Option<Violation> {
        let now = c.now();
        for id in c.ids() {
            if !c.is_up(id) || c.is_paused(id) || c.is_cut(id) {
                self.last_out_tick.insert(id, now);
            }
            if c.node(id).and_then(|n| n.gossip_identity()).is_some_and(|g| g.leaving) {
                self.own_leave.insert(id);
            }
        }
        let events = c.events();
        let touched: BTreeSet<NodeId> = events[self.events_seen..]
            .iter()
            .filter(|(_, _, e)| {
                matches!(
                    e,
                    Event::MembershipChanged
                        | Event::GossipChanged
                        | Event::RoleChanged { .. }
                        | Event::SnapshotInstalled { .. }
                )
            })
            .map(|(_, node, _)| *node)
            .collect();
        self.events_seen = events.len();
        let mut found = None;
        for node in touched {
            let Some(n) = c.node(node) else { continue };
            let conf = n.status().conf.all_ids();
            let prev = self.confs.insert(node, conf.clone()).unwrap_or_default();
            for gone in prev.difference(&conf) {
                if !self.removals_seen.insert(*gone) {
                    continue;
                }
                let Some(identity) = self.leave_targets.get(gone) else { continue };
                let out_recently = dead_member_timeout_ms > 0
                    && self
                        .last_out_tick
                        .get(gone)
                        .is_some_and(|t| now - t <= DEAD_REMOVAL_MARGIN_TICKS);
                let explained = self.told_to_leave.contains(gone)
                    || self.wiped.contains(gone)
                    || self.own_leave.contains(gone)
                    || out_recently;
                if !explained {
                    found.get_or_insert(Forgery::VoterRemoved {
                        voter: *gone,
                        identity: identity.clone(),
                    });
                }
            }
            if found.is_none() {
                found = self.follows_forgery(n, &conf);
            }
            if let Some(what) = found.take() {
                if !self.raised && c.has_forgers() {
                    self.raised = true;
                    return Some(Violation::ForgedMembership { tick: now, node, what });
                }
            }
        }
        None
    }

    /// A forged id in `n`'s configuration (`conf`) or member table, or a forged address in
    /// its member table, or (once it has a member table) its directory or leader hint.
    fn follows_forgery(&self, n: &mokv_core::Node, conf: &BTreeSet<NodeId>) -> Option<Forgery> {
        let members = n.members();
        for id in conf.iter().chain(members.keys()) {
            if let Some(identity) = self.forged_ids.get(id) {
                return Some(Forgery::ForgedIdAdded { id: *id, identity: identity.clone() });
            }
        }
        for (id, info) in members {
            for addr in [&info.rpc_addr, &info.peer_addr] {
                if is_forged_addr(addr) {
                    return Some(Forgery::AddressFollowed { member: *id, addr: addr.clone() });
                }
            }
        }
        // A node with no member table yet (joining) goes by gossip's addresses by design: it
        // holds nothing to protect and has no other way to reach the leader.
        if self.started == 0 || members.is_empty() {
            return None;
        }
        let directory = n.directory();
        for e in directory.members.values() {
            for addr in [&e.rpc_addr, &e.peer_addr].into_iter().flatten() {
                if is_forged_addr(addr) {
                    return Some(Forgery::AddressFollowed { member: e.id, addr: addr.clone() });
                }
            }
        }
        directory
            .leader
            .filter(|hint| is_forged_addr(&hint.rpc_addr))
            .map(|hint| Forgery::AddressFollowed { member: hint.id, addr: hint.rpc_addr })
    }
}
