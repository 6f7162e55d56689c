//! SWIM gossip (foca) for discovery and failure detection, driven sans-io: datagrams in and
//! out as bytes, foca's timers kept here against the `now_ms` the node is given, randomness from
//! the node's seeded generator. The shell only moves datagrams (and encrypts them).

mod admission;
mod identity;
mod proof;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};

pub use identity::{newest, GossipId, Incarnation, MAX_IDENTITY_FIELD_BYTES};
pub(crate) use proof::Verifier;
pub use proof::{
    LeaveRefused, NodeClaim, Proof, VerifyRequest, MAX_IN_FLIGHT as MAX_VERIFICATIONS_IN_FLIGHT,
};

use crate::rng::Rng;

/// Largest gossip datagram foca produces (and accepts), before the shell's encryption.
pub const MAX_DATAGRAM_BYTES: usize = 1400;
/// Bound on datagrams waiting for the shell: gossip is lossy by design, so the oldest go first.
const MAX_QUEUED_DATAGRAMS: usize = 1024;
/// Bound on pending foca timers (each timer only schedules a bounded number of successors;
/// this guards against a storm of stale ones after identity changes). Beyond it the furthest
/// timer is dropped.
const MAX_PENDING_TIMERS: usize = 4096;
/// Announce retries to the seeds (and every member ever seen) while this node is not connected
/// to the cluster, with exponential backoff.
const FIRST_ANNOUNCE_BACKOFF_MS: u64 = 250;
const MAX_ANNOUNCE_BACKOFF_MS: u64 = 8_000;
/// While connected: how often seeds that are not active members are announced to again, so
/// that groups which formed apart (their seeds started late) merge.
const SEED_RECHECK_MS: u64 = 8_000;

/// Gossip settings of one node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GossipConfig {
    /// This node as gossiped. Its `raft_id` must equal the node's id.
    pub identity: GossipId,
    /// Gossip addresses to announce to until some member answers (`start-join-addrs`).
    pub seeds: Vec<String>,
    /// Expected cluster size: tunes foca's dissemination and suspicion timeouts.
    pub cluster_size_hint: u32,
    /// How often a member probes another (foca `probe_period`).
    pub probe_period_ms: u64,
    /// How long a probe waits for its direct ack before asking others (foca `probe_rtt`).
    pub probe_rtt_ms: u64,
    /// How long a suspected member has to refute before it is declared down.
    pub suspect_to_down_ms: u64,
    /// Most other members (gossip addresses, down ones included) foca keeps: identities
    /// beyond it are ignored (counted in [`Gossip::ignored_identities`]); members already
    /// known keep working.
    pub max_members: usize,
}

/// Default of [`GossipConfig::max_members`].
pub const DEFAULT_MAX_MEMBERS: usize = 1024;

impl GossipConfig {
    /// LAN defaults (memberlist's): probe every second, 500 ms round trip, suspicion 4 s.
    pub fn new(identity: GossipId, seeds: Vec<String>) -> Self {
        Self {
            identity,
            seeds,
            cluster_size_hint: 5,
            probe_period_ms: 1_000,
            probe_rtt_ms: 500,
            suspect_to_down_ms: 4_000,
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }

    fn foca_config(&self) -> foca::Config {
        let n = NonZeroU32::new(self.cluster_size_hint.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut c = foca::Config::new_lan(n);
        c.probe_period = Duration::from_millis(self.probe_period_ms.max(2));
        c.probe_rtt =
            Duration::from_millis(self.probe_rtt_ms.clamp(1, self.probe_period_ms.max(2) - 1));
        c.suspect_to_down_after = Duration::from_millis(self.suspect_to_down_ms.max(1));
        // Down members stay visible (as down) for a day: `GetServers` reports them and the
        // dead-member timeout measures from the first sighting.
        c.remove_down_after = Some(Duration::from_secs(24 * 3600));
        c.max_packet_size =
            std::num::NonZeroUsize::new(MAX_DATAGRAM_BYTES).unwrap_or(c.max_packet_size);
        // Membership updates ride on a bounded number of messages: a node that joined after
        // the news of another one stopped spreading (both met the cluster through other
        // seeds) only hears of it through a periodic announce, whose reply lists the members.
        // memberlist's 30 s left such a pair apart for that long (3% of 5-node formations in
        // the real-process tests); every three probe periods costs one small exchange.
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.probe_period_ms.max(2).saturating_mul(3)),
            num_members: std::num::NonZeroUsize::MIN,
        });
        c
    }
}

/// A member's health as this node's failure detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Alive,
    /// Missed probes; will be declared down unless it refutes.
    Suspect,
    Down,
}

/// One gossip member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMember {
    pub id: GossipId,
    pub health: Health,
}

/// A datagram for the shell to send to `to` (a gossip address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub to: String,
    pub payload: Vec<u8>,
}

/// A gossip datagram foca refused (malformed, too big, not for this identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gossip datagram of {len} bytes refused")]
pub struct GossipError {
    pub len: usize,
}

/// foca's randomness: the node's seeded SplitMix64 behind rand_core's trait.
struct GossipRng(Rng);

impl rand_core::TryRng for GossipRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.0.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let v = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// One gossip member: foca plus its timers and outbox, driven sans-io. A node runs one inside
/// `Node`; on its own it speaks gossip without a Raft node (tools and tests that probe the
/// gossip layer, such as the simulator's forger).
pub struct Gossip {
    foca: Foca<GossipId, PostcardCodec, GossipRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<GossipId>,
    /// Pending foca timers by (due time, arrival order): fired in that order.
    timers: BTreeMap<(u64, u64), Timer<GossipId>>,
    next_timer_seq: u64,
    now_ms: u64,
    outbox: VecDeque<Datagram>,
    seeds: Vec<String>,
    next_announce_ms: u64,
    announce_backoff_ms: u64,
    /// Membership or health changed since the node last looked.
    changed: bool,
    /// `leave_cluster` was called: this node gossips no more.
    left: bool,
    /// foca is connected (probing, periodic timers armed), as its notifications tell. foca 2.0
    /// leaves an instance disconnected after an identity change (its own rejoin included) until
    /// some member talks to it, so two members that rejoin at once would wait on each other
    /// forever: a disconnected node announces until it is connected again.
    connected: bool,
    /// Suspects in this node's view (identity, incarnation) and since when (ms, connected).
    suspects: Vec<(GossipId, foca::Incarnation, u64)>,
    /// A suspect this long is declared down here (see [`Gossip::expire_stale_suspects`]).
    stale_suspect_ms: u64,
    max_members: usize,
    ignored_identities: u64,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// A member with `config`'s identity; `seed` seeds its randomness.
    pub fn new(config: &GossipConfig, seed: u64) -> Self {
        let foca = Foca::new(
            config.identity.clone(),
            config.foca_config(),
            GossipRng(Rng::new(seed)),
            PostcardCodec,
        );
        Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            next_timer_seq: 0,
            now_ms: 0,
            outbox: VecDeque::new(),
            seeds: config.seeds.clone(),
            next_announce_ms: 0,
            announce_backoff_ms: FIRST_ANNOUNCE_BACKOFF_MS,
            changed: true,
            left: false,
            connected: false,
            suspects: Vec::new(),
            stale_suspect_ms: config
                .suspect_to_down_ms
                .max(1)
                .saturating_add(config.probe_period_ms.max(2).saturating_mul(2)),
            max_members: config.max_members,
            ignored_identities: 0,
        }
    }

    /// This member's identity.
    pub fn identity(&self) -> &GossipId {
        self.foca.identity()
    }

    /// Fires due timers and, while alone, re-announces to the seeds with backoff.
    pub fn handle_time(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.left {
            return;
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let timer = entry.remove();
            // Errors here are foca refusing a stale timer; nothing to undo.
            let _ = self.foca.handle_timer(timer, &mut self.runtime);
        }
        self.collect();
        self.expire_stale_suspects();
        self.maybe_announce();
        self.collect();
    }

    /// foca declares a suspect down by a timer tagged with its current timer token, and every
    /// identity change or loss of connection replaces the token: the suspicions of that moment
    /// then never time out, and a suspect that did not hear of its suspicion (dissemination is
    /// bounded) stays suspect in this view forever. So a suspect this node has seen for longer
    /// than the suspicion timeout (plus two probe periods) while connected is declared down
    /// here, which is what the lost timer would have done; if it is alive it hears it is down
    /// and rejoins under a renewed identity.
    fn expire_stale_suspects(&mut self) {
        if !self.connected {
            self.suspects.clear();
            return;
        }
        let current: Vec<(GossipId, foca::Incarnation)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        self.suspects.retain(|(id, inc, _)| current.iter().any(|(i, n)| i == id && n == inc));
        for (id, inc) in current {
            if !self.suspects.iter().any(|(i, n, _)| *i == id && *n == inc) {
                self.suspects.push((id, inc, self.now_ms));
            }
        }
        let now = self.now_ms;
        let stale: Vec<foca::Member<GossipId>> = self
            .suspects
            .iter()
            .filter(|(_, _, since)| now.saturating_sub(*since) >= self.stale_suspect_ms)
            .map(|(id, inc, _)| foca::Member::new(id.clone(), *inc, foca::State::Down))
            .collect();
        if !stale.is_empty() {
            let _ = self.foca.apply_many(stale.into_iter(), true, &mut self.runtime);
        }
    }

    /// Announces to the seeds and to every member ever seen (by address) while not connected,
    /// with backoff; while connected, every [`SEED_RECHECK_MS`] to the seeds that are not
    /// active members. An announce is accepted by whichever incarnation owns the address.
    fn maybe_announce(&mut self) {
        let alone = !self.connected || self.foca.num_members() == 0;
        if !alone {
            self.announce_backoff_ms = FIRST_ANNOUNCE_BACKOFF_MS;
        }
        if self.now_ms < self.next_announce_ms {
            return;
        }
        let me = self.foca.identity().gossip_addr.clone();
        let active: BTreeSet<String> =
            self.foca.iter_members().map(|m| m.id().gossip_addr.clone()).collect();
        let mut targets: BTreeSet<String> =
            self.seeds.iter().filter(|s| !active.contains(*s)).cloned().collect();
        if alone {
            targets.extend(self.foca.iter_membership_state().map(|m| m.id().gossip_addr.clone()));
        }
        targets.remove(&me);
        if targets.is_empty() {
            return;
        }
        for addr in targets {
            let _ = self.foca.announce(address_only(addr), &mut self.runtime);
        }
        if alone {
            self.next_announce_ms = self.now_ms + self.announce_backoff_ms;
            self.announce_backoff_ms = (self.announce_backoff_ms * 2).min(MAX_ANNOUNCE_BACKOFF_MS);
        } else {
            self.next_announce_ms = self.now_ms + SEED_RECHECK_MS;
        }
    }

    /// A datagram as received. Identities beyond [`GossipConfig::max_members`] are taken out
    /// first.
    pub fn handle_datagram(&mut self, bytes: &[u8]) -> Result<(), GossipError> {
        if self.left {
            return Ok(());
        }
        let mut known: BTreeSet<String> =
            self.foca.iter_membership_state().map(|m| m.id().gossip_addr.clone()).collect();
        known.insert(self.foca.identity().gossip_addr.clone());
        let (admitted, ignored) = admission::admit(bytes, &known, self.max_members);
        self.ignored_identities = self.ignored_identities.saturating_add(ignored);
        let r = match admitted {
            admission::Admitted::Unchanged => self.foca.handle_data(bytes, &mut self.runtime),
            admission::Admitted::Rewritten(b) => self.foca.handle_data(&b, &mut self.runtime),
            admission::Admitted::Refused => return Ok(()),
        };
        self.collect();
        r.map_err(|_| GossipError { len: bytes.len() })
    }

    /// Identities ignored because the member table was full ([`GossipConfig::max_members`]).
    pub fn ignored_identities(&self) -> u64 {
        self.ignored_identities
    }

    /// Replaces this node's identity (leaving, cluster id learned); the new one must win.
    pub fn change_identity(&mut self, new_id: GossipId) {
        if self.left {
            return;
        }
        let _ = self.foca.change_identity(new_id, &mut self.runtime);
        // foca is disconnected now until a member talks to it (see `connected`).
        self.connected = false;
        self.next_announce_ms = self.now_ms;
        // foca forgets the announce target set on a change; make sure members hear the new
        // identity even before the next periodic gossip.
        let known: Vec<GossipId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        for m in known {
            let _ = self.foca.announce(m, &mut self.runtime);
        }
        self.changed = true;
        self.collect();
    }

    /// Announces this node to the member listening at `addr` (a gossip address learned
    /// outside gossip: a member that proved where it gossips). Its reply lists the members
    /// it knows, and it learns this node.
    pub(crate) fn announce_to(&mut self, addr: &str) {
        if self.left || addr == self.foca.identity().gossip_addr {
            return;
        }
        let _ = self.foca.announce(address_only(addr.to_owned()), &mut self.runtime);
        self.collect();
    }

    /// Declares this node down to the cluster and stops gossiping.
    pub(crate) fn leave(&mut self) {
        if self.left {
            return;
        }
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.collect();
        self.left = true;
        self.timers.clear();
    }

    /// The next datagram to send.
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }

    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Every member foca knows (not this node), sorted by name then Raft id.
    pub fn members(&self) -> Vec<GossipMember> {
        let mut out: Vec<GossipMember> = self
            .foca
            .iter_membership_state()
            .map(|m| GossipMember {
                id: m.id().clone(),
                health: match m.state() {
                    foca::State::Alive => Health::Alive,
                    foca::State::Suspect => Health::Suspect,
                    foca::State::Down => Health::Down,
                },
            })
            .collect();
        out.sort_by(|a, b| (&a.id.name, a.id.raft_id).cmp(&(&b.id.name, b.id.raft_id)));
        out
    }

    fn collect(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            if self.outbox.len() >= MAX_QUEUED_DATAGRAMS {
                self.outbox.pop_front();
            }
            self.outbox.push_back(Datagram { to: to.gossip_addr, payload: data.to_vec() });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let due =
                self.now_ms.saturating_add(after.as_millis().min(u128::from(u64::MAX)) as u64);
            self.timers.insert((due, self.next_timer_seq), timer);
            self.next_timer_seq += 1;
            if self.timers.len() > MAX_PENDING_TIMERS {
                // The furthest goes: the near ones run the protocol (probes, suspicion,
                // periodic gossip), the far ones are cleanup (forgetting down members a day
                // later). Dropping the nearest once stopped the probe cycle for good.
                self.timers.pop_last();
            }
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::Active => self.connected = true,
                OwnedNotification::Idle
                | OwnedNotification::Defunct
                | OwnedNotification::Rejoin(_) => {
                    self.connected = false;
                    self.next_announce_ms = self.now_ms;
                }
                _ => {}
            }
            self.changed = true;
        }
    }
}

/// An announce target known by its address only: whichever identity owns it answers.
fn address_only(gossip_addr: String) -> GossipId {
    GossipId {
        gossip_addr,
        name: String::new(),
        raft_id: 0,
        rpc_addr: String::new(),
        cluster_id: 0,
        started_ms: 0,
        bump: 0,
        leaving: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(i: u64) -> GossipConfig {
        GossipConfig::new(
            GossipId {
                gossip_addr: format!("n{i}:1"),
                name: format!("n{i}"),
                raft_id: i,
                rpc_addr: format!("n{i}:2"),
                cluster_id: 0,
                started_ms: 0,
                bump: 0,
                leaving: false,
            },
            vec!["n1:1".into()],
        )
    }

    /// Three instances on a lossless in-memory network, 10 ms steps.
    fn run(nodes: &mut [Gossip], until_ms: u64, from_ms: u64, dead: &[usize]) {
        let mut t = from_ms;
        while t < until_ms {
            t += 10;
            let mut wire = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                if dead.contains(&i) {
                    continue;
                }
                n.handle_time(t);
                while let Some(d) = n.poll_datagram() {
                    wire.push(d);
                }
            }
            while let Some(d) = wire.pop() {
                let Some(i) = nodes.iter().position(|n| n.identity().gossip_addr == d.to) else {
                    continue;
                };
                if dead.contains(&i) {
                    continue;
                }
                let _ = nodes[i].handle_datagram(&d.payload);
                while let Some(d) = nodes[i].poll_datagram() {
                    wire.push(d);
                }
            }
        }
    }

    #[test]
    fn members_find_each_other_through_one_seed_and_see_a_crash() {
        let mut nodes: Vec<Gossip> = (1..=3).map(|i| Gossip::new(&config(i), i)).collect();
        run(&mut nodes, 5_000, 0, &[]);
        for n in &nodes {
            let m = n.members();
            assert_eq!(m.len(), 2, "{:?}", n.identity().name);
            assert!(m.iter().all(|m| m.health == Health::Alive));
        }
        run(&mut nodes, 20_000, 5_000, &[2]);
        let view = nodes[0].members();
        let n3 = view.iter().find(|m| m.id.raft_id == 3).unwrap();
        assert_eq!(n3.health, Health::Down);
    }

    /// The timer bound must not cost the protocol its own timers: with the table full of
    /// far-off ones (each member declared down schedules its removal a day later; a flapping
    /// cluster piles them up), probing and suspicion still run and a crash is still seen.
    #[test]
    fn a_full_timer_table_drops_far_off_timers_not_the_probe_cycle() {
        let mut nodes: Vec<Gossip> = (1..=3).map(|i| Gossip::new(&config(i), i)).collect();
        run(&mut nodes, 5_000, 0, &[]);
        for n in &mut nodes {
            for k in 0..MAX_PENDING_TIMERS as u64 {
                let id = GossipId { gossip_addr: format!("gone:{k}"), ..n.identity().clone() };
                n.timers.insert((86_400_000 + k, u64::MAX - k), Timer::RemoveDown(id));
            }
        }
        run(&mut nodes, 20_000, 5_000, &[2]);
        let view = nodes[0].members();
        let n3 = view.iter().find(|m| m.id.raft_id == 3).unwrap();
        assert_eq!(n3.health, Health::Down);
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let mut g = Gossip::new(&config(1), 1);
        for len in [0usize, 1, 7, 64, 1500] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let _ = g.handle_datagram(&bytes);
        }
    }

    /// Beyond `max_members`, new identities are ignored (and counted); the members already
    /// known keep working: one of them crashing is still seen.
    #[test]
    fn the_member_table_is_bounded_and_its_members_keep_working() {
        let mut nodes: Vec<Gossip> = (1..=5)
            .map(|i| {
                let mut c = config(i);
                if i == 1 {
                    c.max_members = 2;
                } else {
                    c.seeds.push("n2:1".into());
                }
                Gossip::new(&c, i)
            })
            .collect();
        run(&mut nodes, 8_000, 0, &[]);
        let view = nodes[0].members();
        assert_eq!(view.len(), 2, "{view:?}");
        assert!(nodes[0].ignored_identities() > 0);
        assert!(view.iter().all(|m| m.health == Health::Alive));
        assert!(nodes[1].members().len() >= 3, "others are not bounded");
        let kept = nodes.iter().position(|n| n.identity().raft_id == view[0].id.raft_id).unwrap();
        run(&mut nodes, 25_000, 8_000, &[kept]);
        let view = nodes[0].members();
        assert_eq!(view.len(), 2, "{view:?}");
        let m = view.iter().find(|m| m.id.raft_id == nodes[kept].identity().raft_id).unwrap();
        assert_eq!(m.health, Health::Down);
    }
}
