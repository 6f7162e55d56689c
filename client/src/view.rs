//! The client's view of the cluster: the nodes it knows (from the seeds, from `GetServers`,
//! from leader hints), their roles and health, and which one each attempt goes to.
//!
//! Selection:
//! - writes go to the leader; while it is unknown or fails locally, to another usable node
//!   (which answers with a leader hint);
//! - reads go, per [`ReadFrom`], to usable followers (voters that are not the leader, or nodes
//!   of unknown role), the leader, or both; among those, to the node with the fewest attempts
//!   in flight, ties broken round robin. Learners serve reads only when nothing else can;
//! - a node is *usable* unless gossip reports it down or suspect, or it failed locally (a
//!   connection error or a timeout): then it gets no requests until a probe reaches it again
//!   ([`View::probes_due`]; the probes back off up to [`PROBE_MAX`]);
//! - when nothing is usable, the node failing for the shortest time is tried anyway, so a call
//!   is never stuck on an empty choice.
//!
//! Nothing here waits or does I/O; the order of nodes is the order in which they were learned,
//! so a seeded client replays.

use std::time::Duration;

use mokv_proto::api::kv_client::KvClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::transport::{addr_of, Dialer};
use crate::types::{Health, Member, NodeInfo, Role};
use crate::{ClientError, ReadFrom};

/// First probe of a node that failed, after this.
const PROBE_MIN: Duration = Duration::from_millis(100);
/// Probes of a node that keeps failing back off up to this.
const PROBE_MAX: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Node {
    uri: String,
    name: Option<String>,
    role: Role,
    health: Health,
    conns: Vec<Channel>,
    next_conn: usize,
    /// Bumped whenever the connections are replaced.
    generation: u64,
    in_flight: usize,
    answered: u64,
    /// Consecutive local failures (attempts and probes).
    failures: u32,
    /// `Some`: failing locally; probed at this time.
    probe_at: Option<Instant>,
}

impl Node {
    fn new(uri: String, conns: Vec<Channel>) -> Node {
        Node {
            uri,
            name: None,
            role: Role::Unknown,
            health: Health::Unknown,
            conns,
            next_conn: 0,
            generation: 0,
            in_flight: 0,
            answered: 0,
            failures: 0,
            probe_at: None,
        }
    }

    fn usable(&self) -> bool {
        self.probe_at.is_none() && !self.health.is_failed()
    }

    fn peek(&self) -> Target {
        Target::new(self.uri.clone(), self.conns[0].clone(), self.generation)
    }
}

/// Where one attempt goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub uri: String,
    pub kv: KvClient<Channel>,
    /// The connection `kv` uses, for the other services (`Watch`).
    pub channel: Channel,
    pub generation: u64,
}

impl Target {
    fn new(uri: String, channel: Channel, generation: u64) -> Target {
        Target { uri, kv: KvClient::new(channel.clone()), channel, generation }
    }
}

/// The nodes a client knows.
#[derive(Debug)]
pub(crate) struct View {
    dialer: Dialer,
    nodes: Vec<Node>,
    leader: Option<String>,
    /// Round-robin position among equally loaded candidates.
    rr: usize,
}

impl View {
    /// A view of the seed endpoints.
    pub(crate) fn new(dialer: Dialer, seeds: &[String]) -> Result<View, ClientError> {
        let mut view = View { dialer, nodes: Vec::new(), leader: None, rr: 0 };
        for s in seeds {
            view.ensure(s)?;
        }
        Ok(view)
    }

    pub(crate) fn uri(&self, addr: &str) -> String {
        self.dialer.uri(addr)
    }

    /// How this view opens connections.
    pub(crate) fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn contains(&self, uri: &str) -> bool {
        self.nodes.iter().any(|n| n.uri == uri)
    }

    /// The node at `addr` (with or without scheme), added if new; returns its uri.
    pub(crate) fn ensure(&mut self, addr: &str) -> Result<String, ClientError> {
        let uri = self.dialer.uri(addr);
        if !self.contains(&uri) {
            let conns = self.dialer.dial(&uri)?;
            self.nodes.push(Node::new(uri.clone(), conns));
        }
        Ok(uri)
    }

    fn node_mut(&mut self, uri: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.uri == uri)
    }

    /// A target on `idx`, counted in flight.
    fn take(&mut self, idx: usize) -> Target {
        let n = &mut self.nodes[idx];
        n.in_flight += 1;
        let channel = n.conns[n.next_conn % n.conns.len()].clone();
        n.next_conn = n.next_conn.wrapping_add(1);
        Target::new(n.uri.clone(), channel, n.generation)
    }

    /// The node at `uri` whatever its state (a leader hint is fresher than a local failure).
    pub(crate) fn target(&mut self, uri: &str) -> Option<Target> {
        let idx = self.nodes.iter().position(|n| n.uri == uri)?;
        Some(self.take(idx))
    }

    /// The node at `uri`, not counted in flight (discovery and probes).
    pub(crate) fn peek(&self, uri: &str) -> Option<Target> {
        self.nodes.iter().find(|n| n.uri == uri).map(Node::peek)
    }

    /// The least loaded of `candidates` (indices), ties broken round robin.
    fn least_loaded(&mut self, candidates: &[usize]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let start = self.rr % candidates.len();
        self.rr = self.rr.wrapping_add(1);
        let mut best: Option<usize> = None;
        for k in 0..candidates.len() {
            let i = candidates[(start + k) % candidates.len()];
            if best.is_none_or(|b| self.nodes[i].in_flight < self.nodes[b].in_flight) {
                best = Some(i);
            }
        }
        best
    }

    /// When nothing is usable: the node whose probe is due first (nodes gossip reports down
    /// last), preferring those not in `avoid`.
    fn fallback(&self, avoid: &[String]) -> Option<usize> {
        let key = |i: usize| {
            let n = &self.nodes[i];
            (avoid.contains(&n.uri), n.health.is_failed(), n.probe_at, i)
        };
        (0..self.nodes.len()).min_by_key(|&i| key(i))
    }

    fn leader_idx(&self) -> Option<usize> {
        let l = self.leader.as_deref()?;
        self.nodes.iter().position(|n| n.uri == l)
    }

    /// Where a write goes.
    pub(crate) fn pick_write(&mut self, avoid: &[String]) -> Option<Target> {
        let leader = self.leader_idx().filter(|&i| self.nodes[i].usable());
        let idx = match leader {
            Some(i) => Some(i),
            None => {
                let others: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].usable() && !avoid.contains(&self.nodes[i].uri))
                    .collect();
                self.least_loaded(&others)
            }
        };
        let idx = idx.or_else(|| self.fallback(avoid))?;
        Some(self.take(idx))
    }

    /// Where a read goes.
    pub(crate) fn pick_read(&mut self, from: ReadFrom, avoid: &[String]) -> Option<Target> {
        let leader = self.leader_idx();
        let ok = |v: &View, i: usize| v.nodes[i].usable() && !avoid.contains(&v.nodes[i].uri);
        let all: Vec<usize> = (0..self.nodes.len()).filter(|&i| ok(self, i)).collect();
        let followers: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| {
                Some(i) != leader && matches!(self.nodes[i].role, Role::Follower | Role::Unknown)
            })
            .collect();
        let learners: Vec<usize> =
            all.iter().copied().filter(|&i| self.nodes[i].role == Role::Learner).collect();
        let lead: Vec<usize> = leader.filter(|&i| ok(self, i)).into_iter().collect();
        let mut both = followers.clone();
        both.extend(&lead);
        let order: [&[usize]; 3] = match from {
            ReadFrom::Followers => [&followers, &lead, &learners],
            ReadFrom::Leader => [&lead, &followers, &learners],
            ReadFrom::Any => [&both, &learners, &[]],
        };
        let mut idx = None;
        for group in order {
            idx = self.least_loaded(group);
            if idx.is_some() {
                break;
            }
        }
        let idx = idx.or_else(|| self.fallback(avoid))?;
        Some(self.take(idx))
    }

    /// The attempt on `uri` is over (answered, failed, or abandoned).
    pub(crate) fn finished(&mut self, uri: &str) {
        if let Some(n) = self.node_mut(uri) {
            n.in_flight = n.in_flight.saturating_sub(1);
        }
    }

    /// `uri` answered (success or a status of its own): it is reachable.
    pub(crate) fn answered(&mut self, uri: &str) {
        if let Some(n) = self.node_mut(uri) {
            n.answered += 1;
            n.failures = 0;
            n.probe_at = None;
        }
    }

    /// `uri` failed locally (no connection, broken connection, no answer in time): it gets no
    /// requests until a probe reaches it. With `reconnect`, its connections of `generation`
    /// are replaced (a connection that hangs silently is never used again).
    pub(crate) fn failed(&mut self, uri: &str, generation: u64, reconnect: bool, now: Instant) {
        if self.leader.as_deref() == Some(uri) {
            self.leader = None;
        }
        let dialer = self.dialer.clone();
        let Some(n) = self.node_mut(uri) else { return };
        n.failures = n.failures.saturating_add(1);
        n.probe_at = Some(now + probe_delay(n.failures));
        if reconnect && n.generation == generation {
            if let Ok(conns) = dialer.dial(uri) {
                n.conns = conns;
                n.generation += 1;
            }
        }
    }

    /// `uri` answered as the leader, or a node named it (a hint): writes go there.
    pub(crate) fn set_leader(&mut self, uri: &str) {
        if self.leader.as_deref() == Some(uri) || !self.contains(uri) {
            return;
        }
        for n in &mut self.nodes {
            if n.uri == uri {
                n.role = Role::Leader;
            } else if n.role == Role::Leader {
                n.role = Role::Follower;
            }
        }
        self.leader = Some(uri.to_owned());
    }

    pub(crate) fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// `uri` said it knows no leader: forget it as the leader if it was taken for one.
    pub(crate) fn not_leader(&mut self, uri: &str) {
        if self.leader.as_deref() == Some(uri) {
            self.leader = None;
            if let Some(n) = self.node_mut(uri) {
                n.role = Role::Unknown;
            }
        }
    }

    /// Replaces the node list with a `GetServers` answer: new members are added (connected on
    /// first use), members no longer listed are dropped, roles and health are updated. An
    /// empty answer changes nothing.
    pub(crate) fn apply_members(&mut self, members: &[Member]) {
        let mut listed = Vec::new();
        for m in members {
            if m.rpc_addr.is_empty() {
                continue;
            }
            let Ok(uri) = self.ensure(&m.rpc_addr) else { continue };
            if let Some(n) = self.node_mut(&uri) {
                n.name = Some(m.name.clone());
                n.health = m.health;
                n.role = if m.is_leader {
                    Role::Leader
                } else if m.voter {
                    Role::Follower
                } else {
                    Role::Learner
                };
            }
            listed.push(uri);
        }
        if listed.is_empty() {
            return;
        }
        self.nodes.retain(|n| listed.contains(&n.uri));
        self.leader = members
            .iter()
            .find(|m| m.is_leader && !m.rpc_addr.is_empty())
            .map(|m| self.dialer.uri(&m.rpc_addr));
    }

    /// Where to ask for the member list, best first: the leader, the other usable nodes, then
    /// the rest.
    pub(crate) fn discovery_order(&mut self) -> Vec<Target> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        let leader = self.leader_idx();
        let start = self.rr % order.len().max(1);
        order.rotate_left(start);
        order.sort_by_key(|&i| (Some(i) != leader, !self.nodes[i].usable()));
        order.into_iter().map(|i| self.nodes[i].peek()).collect()
    }

    /// The failing nodes whose probe is due.
    pub(crate) fn probes_due(&self, now: Instant) -> Vec<Target> {
        self.nodes.iter().filter(|n| n.probe_at.is_some_and(|t| t <= now)).map(Node::peek).collect()
    }

    /// When the next probe is due, if any node fails.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        self.nodes.iter().filter_map(|n| n.probe_at).min()
    }

    /// What [`crate::Client::nodes`] shows.
    pub(crate) fn snapshot(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                addr: addr_of(&n.uri).to_owned(),
                name: n.name.clone(),
                role: n.role,
                health: n.health,
                usable: n.usable(),
                in_flight: n.in_flight,
                answered: n.answered,
            })
            .collect()
    }
}

fn probe_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(10);
    (PROBE_MIN * (1u32 << shift)).min(PROBE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;
    use std::sync::Arc;
    use tonic::transport::Endpoint;

    fn view(seeds: &[&str]) -> View {
        // Lazily connecting channels that are never used: nothing is dialed.
        let factory: crate::ChannelFactory = Arc::new(|e: Endpoint| e.connect_lazy());
        let dialer = Dialer {
            transport: Transport::Plaintext(factory),
            connect_timeout: Duration::from_secs(1),
            pool: 1,
        };
        let seeds: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
        View::new(dialer, &seeds).unwrap()
    }

    fn member(addr: &str, leader: bool, voter: bool, health: Health) -> Member {
        Member {
            name: addr.to_owned(),
            rpc_addr: addr.to_owned(),
            is_leader: leader,
            raft_id: 1,
            voter,
            health,
        }
    }

    fn reads(v: &mut View, from: ReadFrom, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let t = v.pick_read(from, &[]).unwrap();
                v.finished(&t.uri);
                addr_of(&t.uri).to_owned()
            })
            .collect()
    }

    fn count(picks: &[String], addr: &str) -> usize {
        picks.iter().filter(|p| *p == addr).count()
    }

    #[tokio::test]
    async fn discovery_replaces_the_seeds_and_reads_spread_over_followers() {
        let mut v = view(&["b:1"]);
        v.apply_members(&[
            member("a:1", true, true, Health::Alive),
            member("b:1", false, true, Health::Alive),
            member("c:1", false, true, Health::Alive),
        ]);
        assert_eq!(v.len(), 3);
        assert_eq!(v.leader(), Some("http://a:1"));
        let picks = reads(&mut v, ReadFrom::Followers, 100);
        assert_eq!((count(&picks, "a:1"), count(&picks, "b:1"), count(&picks, "c:1")), (0, 50, 50));
        let picks = reads(&mut v, ReadFrom::Leader, 10);
        assert_eq!(count(&picks, "a:1"), 10);
        let picks = reads(&mut v, ReadFrom::Any, 99);
        assert_eq!((count(&picks, "a:1"), count(&picks, "b:1")), (33, 33));
        let w = v.pick_write(&[]).unwrap();
        assert_eq!(w.uri, "http://a:1");
        // A member removed is dropped, a new one is added.
        v.apply_members(&[
            member("a:1", true, true, Health::Alive),
            member("c:1", false, true, Health::Alive),
            member("d:1", false, true, Health::Alive),
        ]);
        let picks = reads(&mut v, ReadFrom::Followers, 10);
        assert_eq!((count(&picks, "b:1"), count(&picks, "c:1"), count(&picks, "d:1")), (0, 5, 5));
    }

    #[tokio::test]
    async fn least_outstanding_wins() {
        let mut v = view(&["b:1", "c:1"]);
        let first = v.pick_read(ReadFrom::Followers, &[]).unwrap();
        // `first` is still in flight: the next two go to the other node, then alternate.
        let second = v.pick_read(ReadFrom::Followers, &[]).unwrap();
        assert_ne!(first.uri, second.uri);
        v.finished(&second.uri);
        let third = v.pick_read(ReadFrom::Followers, &[]).unwrap();
        assert_eq!(third.uri, second.uri);
    }

    #[tokio::test]
    async fn down_suspect_and_failing_nodes_are_skipped_then_probed_back() {
        let mut v = view(&[]);
        v.apply_members(&[
            member("a:1", true, true, Health::Alive),
            member("b:1", false, true, Health::Down),
            member("c:1", false, true, Health::Suspect),
            member("d:1", false, true, Health::Alive),
            member("e:1", false, false, Health::Alive),
        ]);
        assert_eq!(count(&reads(&mut v, ReadFrom::Followers, 10), "d:1"), 10);
        let now = Instant::now();
        v.failed("http://d:1", 0, true, now);
        // No healthy follower: the leader serves reads.
        assert_eq!(count(&reads(&mut v, ReadFrom::Followers, 4), "a:1"), 4);
        // The leader fails too: the learner, then nothing usable: the first probe due.
        v.failed("http://a:1", 0, false, now + Duration::from_millis(1));
        assert_eq!(v.leader(), None);
        assert_eq!(count(&reads(&mut v, ReadFrom::Followers, 3), "e:1"), 3);
        v.failed("http://e:1", 0, false, now + Duration::from_millis(2));
        assert_eq!(count(&reads(&mut v, ReadFrom::Followers, 1), "d:1"), 1);
        // Probes: d first.
        assert!(v.probes_due(now).is_empty());
        let due = v.probes_due(now + PROBE_MIN);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].uri, "http://d:1");
        v.answered("http://d:1");
        assert_eq!(count(&reads(&mut v, ReadFrom::Followers, 5), "d:1"), 5);
        // A node that keeps failing is probed less and less often.
        assert!(probe_delay(1) < probe_delay(3));
        assert_eq!(probe_delay(30), PROBE_MAX);
    }

    #[tokio::test]
    async fn writes_go_to_the_leader_or_any_usable_node() {
        let mut v = view(&["a:1", "b:1"]);
        let w = v.pick_write(&[]).unwrap();
        v.finished(&w.uri);
        let hinted = v.ensure("c:1").unwrap();
        v.set_leader(&hinted);
        assert_eq!(v.pick_write(&[]).unwrap().uri, "http://c:1");
        // The leader fails locally: writes go elsewhere (to be told where it went).
        v.failed("http://c:1", 0, false, Instant::now());
        let w = v.pick_write(&["http://a:1".to_owned()]).unwrap();
        assert_eq!(w.uri, "http://b:1");
        // A hint still reaches the failing node.
        assert_eq!(v.target("http://c:1").unwrap().uri, "http://c:1");
    }
}
