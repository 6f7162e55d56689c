//! End-to-end tests of gossip-based membership (SWIM via foca): real `mokvd` processes that
//! find each other only through `start-join-addrs` (gossip addresses), the leader's reconciler
//! turning what gossip says into Raft configuration changes, graceful leave on SIGTERM, crash
//! detection, the dead-member timeout, wiped nodes rejoining under a new raft id, and the
//! cluster key keeping strangers out. Every wait is a poll with a deadline; the only fixed
//! observation window is the negative one (a node with the wrong key never joins).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mokv_client::ReadMode;
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{Health, Server, Suffrage};
use mokv_tests::{gossip_sockets, metric, servers, Bins, Certs, Mokvd, NodeSpec, DEADLINE, POLL};
use tonic::transport::Channel;

/// Generous bound on failure detection: the test nodes probe every 200 ms and suspect for 1 s,
/// so about 1.2..2.5 s is expected; the rest is slack for a loaded 2-core machine.
const DETECTION_BOUND: Duration = Duration::from_secs(30);
/// Bound on a graceful stop: a leaving node waits at most 10 s for its removal, a leader up to
/// 3 s for its hand-over, the server up to 3 s to drain.
const EXIT_BOUND: Duration = Duration::from_secs(30);

/// Nodes `n1..` of one test: own temp dir, certificates, processes (killed on drop).
struct Net {
    bins: Bins,
    certs: Certs,
    data: PathBuf,
    /// `nodes[i]` is `n{i+1}`.
    nodes: Vec<Mokvd>,
    /// A raw KV client per node (one connection each, reconnecting after restarts).
    kvs: Vec<KvClient<Channel>>,
    // Dropped last: the processes are killed before their directories go.
    tmp: tempfile::TempDir,
}

fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

impl Net {
    /// Certificates for `n1..n{certified}` and the `root` client; no node started yet.
    fn new(certified: usize) -> Net {
        let bins = Bins::get();
        let tmp = tempfile::tempdir().expect("temp dir");
        let names: Vec<String> = (0..certified).map(name).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let certs = Certs::generate(&bins, &tmp.path().join("certs"), &names, &["root"]);
        let data = tmp.path().join("data");
        Net { bins, certs, data, nodes: Vec::new(), kvs: Vec::new(), tmp }
    }

    /// The test flags of node `name` plus `extra` (`--flag value` pairs).
    fn spec(&self, name: &str, extra: &[(&str, &str)]) -> NodeSpec {
        let mut s = NodeSpec::node(&self.certs, &self.data, name);
        for (k, v) in extra {
            s = s.with(k, *v);
        }
        s
    }

    /// Starts `n1..n{order.len()}` with gossip ports picked beforehand, in `order` (indexes),
    /// with no wait in between: `n1` bootstraps, node `i` joins through the gossip addresses of
    /// the nodes `seeds(i)` (started or not yet).
    fn start(
        &mut self,
        order: &[usize],
        extra: &[(&str, &str)],
        seeds: impl Fn(usize) -> Vec<usize>,
    ) {
        assert!(self.nodes.is_empty());
        let n = order.len();
        let mut sockets: Vec<Option<std::net::UdpSocket>> =
            gossip_sockets(n).into_iter().map(Some).collect();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.local_addr().ok()).expect("bound").port())
            .collect();
        let mut started: Vec<Option<Mokvd>> = (0..n).map(|_| None).collect();
        for &i in order {
            let mut spec = self.spec(&name(i), extra);
            if i == 0 {
                spec = spec.flag("--bootstrap");
            }
            let join: Vec<String> =
                seeds(i).iter().map(|j| format!("127.0.0.1:{}", ports[*j])).collect();
            if !join.is_empty() {
                spec = spec.with("--start-join-addrs", join.join(","));
            }
            let socket = sockets[i].take().expect("each node starts once");
            let node = Mokvd::start_with_gossip_socket(&self.bins.mokvd, spec, socket);
            assert_eq!(node.gossip_port, ports[i]);
            started[i] = Some(node);
        }
        for node in started {
            self.add(node.expect("every node started"));
        }
    }

    /// Takes `node` in as the next `n{i}`.
    fn add(&mut self, node: Mokvd) {
        self.kvs.push(self.certs.kv(&node.addr));
        self.nodes.push(node);
    }

    /// `n` nodes, `n1` bootstrapping, the others listing `n1` (and `n2`) as seeds; waits until
    /// they form.
    async fn formed(n: usize, extra: &[(&str, &str)]) -> Net {
        let mut net = Net::new(n);
        let order: Vec<usize> = (0..n).collect();
        net.start(&order, extra, seed_n1_n2);
        let all: Vec<usize> = (0..n).collect();
        let took = net
            .until_views(&all, &format!("{n} alive voters and a leader"), DEADLINE, |s| {
                formed(s, n)
            })
            .await;
        eprintln!("{n} nodes formed in {took:?}");
        net
    }

    /// SIGTERMs node `i` (started with `leave-on-shutdown`), waits until the nodes `rest` list
    /// it no more (and are `rest.len()` alive voters with a leader), then for its exit, which
    /// must be a success.
    async fn leave(&mut self, i: usize, rest: &[usize]) -> Left {
        let gone = name(i);
        let t0 = Instant::now();
        self.nodes[i].signal_term();
        let removed = self
            .until_views(rest, &format!("{gone} removed"), DEADLINE, |s| {
                formed_without(s, rest.len(), &gone)
            })
            .await;
        let status = self.nodes[i].wait_exit(EXIT_BOUND).await;
        let exited = t0.elapsed();
        assert!(status.success(), "{gone} exited with {status}");
        let saw_removal = !self.nodes[i].output_contains("removal not seen in time");
        eprintln!(
            "{gone} leaving: absent from the others' views {removed:?} after SIGTERM, exited \
             after {exited:?}, saw its removal: {saw_removal}"
        );
        Left { removed, exited, saw_removal }
    }

    fn addr(&self, i: usize) -> &str {
        &self.nodes[i].addr
    }

    /// Polls until `pred` holds for the `GetServers` answer of every node of `on` at once;
    /// returns how long that took. Panics after `bound`, showing the last answers.
    async fn until_views(
        &self,
        on: &[usize],
        what: &str,
        bound: Duration,
        pred: impl Fn(&[Server]) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let mut last = Vec::new();
            let mut ok = true;
            for &i in on {
                let view = servers(&self.kvs[i]).await;
                ok &= view.as_deref().is_some_and(&pred);
                last.push(format!(
                    "{}: {}",
                    name(i),
                    view.as_deref().map_or("no answer".into(), show)
                ));
            }
            if ok {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < bound,
                "timed out after {bound:?} waiting for {what}; last views:\n{}",
                last.join("\n")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The node of `among` that names itself leader in its own `GetServers` answer (polled).
    async fn leader(&self, among: &[usize]) -> usize {
        let start = Instant::now();
        loop {
            for &i in among {
                if let Some(view) = servers(&self.kvs[i]).await {
                    if view.iter().any(|s| s.is_leader && s.rpc_addr == self.nodes[i].addr) {
                        return i;
                    }
                }
            }
            assert!(start.elapsed() < DEADLINE, "no leader among {among:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes `key` through a library client knowing the nodes `via` (retried until
    /// acknowledged, within the deadline).
    async fn write(&self, via: &[usize], key: &str, value: &str) {
        let endpoints: Vec<&str> = via.iter().map(|i| self.addr(*i)).collect();
        let client = self.certs.client(&endpoints);
        let start = Instant::now();
        loop {
            match client.set(key, value.as_bytes()).await {
                Ok(_) => return,
                Err(e) => assert!(start.elapsed() < DEADLINE, "writing {key} via {via:?}: {e:?}"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads `key` on node `i` alone (retried on errors, not on answers).
    async fn read_on(&self, i: usize, key: &str, mode: ReadMode) -> Option<Vec<u8>> {
        let client = self.certs.client(&[self.addr(i)]);
        let start = Instant::now();
        loop {
            match client.get(key, mode).await {
                Ok(e) => return e.map(|e| e.value),
                Err(e) => {
                    assert!(start.elapsed() < DEADLINE, "reading {key} on {}: {e:?}", name(i));
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes `key` = `value` through `live` and reads it back linearizably on each of them.
    async fn write_and_read_everywhere(&self, live: &[usize], key: &str, value: &str) {
        self.write(live, key, value).await;
        for &i in live {
            let got = self.read_on(i, key, ReadMode::Linearizable).await;
            assert_eq!(got.as_deref(), Some(value.as_bytes()), "{} misses {key}", name(i));
        }
    }

    /// Polls until node `i`'s local state (a serializable read) has `key` = `value`.
    async fn until_local_value(&self, i: usize, key: &str, value: &str) {
        let start = Instant::now();
        while self.read_on(i, key, ReadMode::Serializable).await.as_deref()
            != Some(value.as_bytes())
        {
            assert!(start.elapsed() < DEADLINE, "{} never got {key} = {value}", name(i));
            tokio::time::sleep(POLL).await;
        }
    }
}

/// How a graceful leave went (times from the SIGTERM).
struct Left {
    removed: Duration,
    exited: Duration,
    saw_removal: bool,
}

/// One line per server of a `GetServers` answer, for failure messages.
fn show(view: &[Server]) -> String {
    let items: Vec<String> = view
        .iter()
        .map(|s| {
            let suffrage = Suffrage::try_from(s.suffrage).map_or("?", |x| x.as_str_name());
            let health = Health::try_from(s.health).map_or("?", |x| x.as_str_name());
            let leader = if s.is_leader { " LEADER" } else { "" };
            format!("{}#{}@{} {} {}{leader}", s.id, s.raft_id, s.rpc_addr, suffrage, health)
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn is_voter(s: &Server) -> bool {
    s.suffrage == Suffrage::Voter as i32
}

fn health(s: &Server) -> Health {
    Health::try_from(s.health).unwrap_or(Health::Unknown)
}

fn names(view: &[Server]) -> BTreeSet<&str> {
    view.iter().map(|s| s.id.as_str()).collect()
}

fn server<'a>(view: &'a [Server], name: &str) -> Option<&'a Server> {
    view.iter().find(|s| s.id == name)
}

fn leaders(view: &[Server]) -> usize {
    view.iter().filter(|s| s.is_leader).count()
}

/// Exactly `n` distinct members, all alive voters, one leader.
fn formed(view: &[Server], n: usize) -> bool {
    view.len() == n
        && names(view).len() == n
        && view.iter().all(|s| is_voter(s) && health(s) == Health::Alive)
        && leaders(view) == 1
}

/// `view` without `gone`: `n` alive voters and one leader.
fn formed_without(view: &[Server], n: usize, gone: &str) -> bool {
    formed(view, n) && server(view, gone).is_none()
}

/// Seeds of node `i`: `n1` and `n2`, never itself; none for `n1` (a bootstrapping node
/// cannot also join).
fn seed_n1_n2(i: usize) -> Vec<usize> {
    if i == 0 {
        return Vec::new();
    }
    [0, 1].into_iter().filter(|j| *j != i).collect()
}

fn except(all: &[usize], out: &[usize]) -> Vec<usize> {
    all.iter().copied().filter(|i| !out.contains(i)).collect()
}

/// Five nodes that know each other only through `start-join-addrs` (a ring of two seeds each,
/// seeds not started yet included), started with no waits in a scrambled order after `n1`
/// (which bootstraps and lists no one): they form one cluster of five voters, and a write is
/// readable linearizably on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_from_start_join_addrs_bootstrap_first() {
    five_nodes_from_a_ring(&[0, 3, 1, 4, 2], DEADLINE).await;
}

/// The same in any order: `n1` started fourth (n4, n2, n5, n1, n3), so gossip groups form
/// before the bootstrapping node is up. Repeated, as the failure it pins was intermittent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_from_start_join_addrs_in_any_order() {
    // A few rounds: the failure (two members never hearing of each other until a periodic
    // announce) was intermittent, ~3% of formations with a 30 s announce period.
    for round in 0..5 {
        let took = five_nodes_from_a_ring(&[3, 1, 4, 0, 2], Duration::from_secs(15)).await;
        eprintln!("round {round}: formed in {took:?}");
    }
}

/// Starts `n1..n5` in `order`, node `i` listing the gossip addresses of the next two in the
/// ring (`n5` lists `n1` and `n2`; `n1` bootstraps and lists no one); waits (at most `bound`)
/// until every node lists five alive voters and one leader, then writes on the leader and
/// reads linearizably on every node. Returns the formation time from the first start.
async fn five_nodes_from_a_ring(order: &[usize], bound: Duration) -> Duration {
    let mut net = Net::new(5);
    let started = Instant::now();
    net.start(order, &[], |i| if i == 0 { vec![] } else { vec![(i + 1) % 5, (i + 2) % 5] });
    let all: Vec<usize> = (0..5).collect();
    net.until_views(&all, "5 alive voters and one leader on every node", bound, |s| formed(s, 5))
        .await;
    let took = started.elapsed();
    eprintln!("five nodes started in order {order:?} formed {took:?} after the first start");
    let leader = net.leader(&all).await;
    net.write(&[leader], "formed", "five").await;
    for &i in &all {
        let got = net.read_on(i, "formed", ReadMode::Linearizable).await;
        assert_eq!(got.as_deref(), Some(&b"five"[..]), "{} misses the write", name(i));
    }
    took
}

/// The bootstrapping node started last, once the others (each listing only the next one, the
/// last one listing `n1`) have formed a gossip group of their own with no leader: `n1` is
/// found through the seed re-check of the node listing it, and all become voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_form_when_the_bootstrap_node_starts_after_the_others_met() {
    let mut net = Net::new(4);
    let mut sockets: Vec<Option<std::net::UdpSocket>> =
        gossip_sockets(4).into_iter().map(Some).collect();
    let ports: Vec<u16> = sockets
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.local_addr().ok()).expect("bound").port())
        .collect();
    let mut spawn = |i: usize| {
        let mut spec =
            net.spec(&name(i), &[("--metrics-port", "0"), ("--metrics-plain-http", "true")]);
        if i == 0 {
            spec = spec.flag("--bootstrap");
        } else {
            // n2 lists n3, n3 lists n4, n4 lists n1.
            spec = spec.with("--start-join-addrs", format!("127.0.0.1:{}", ports[(i + 1) % 4]));
        }
        let socket = sockets[i].take().expect("each node starts once");
        Mokvd::start_with_gossip_socket(&net.bins.mokvd, spec, socket)
    };
    let others: Vec<Mokvd> = (1..4).map(&mut spawn).collect();
    // Every one of n2..n4 sees the two others alive in gossip.
    let start = Instant::now();
    for node in &others {
        let port = node.metrics_port.expect("started with --metrics-port");
        mokv_tests::eventually("a gossip group of n2..n4", || async move {
            let alive = metric(port, "mokv_gossip_members{health=\"alive\"}").await?;
            (alive >= 2.0).then_some(())
        })
        .await;
    }
    eprintln!("n2..n4 met in gossip after {:?}", start.elapsed());
    let started = Instant::now();
    net.add(spawn(0));
    for node in others {
        net.add(node);
    }
    let all: Vec<usize> = (0..4).collect();
    net.until_views(&all, "4 alive voters and one leader on every node", DEADLINE, |s| {
        formed(s, 4)
    })
    .await;
    eprintln!("bootstrap node last: four nodes formed {:?} after its start", started.elapsed());
    net.write_and_read_everywhere(&all, "formed", "four").await;
}

/// `leave-on-shutdown`: SIGTERM makes a follower, then the leader, leave for good: each exits
/// 0, disappears from the others' `GetServers`, and the rest keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_leave_on_shutdown_leaves_the_cluster() {
    let (follower, leader) = leave_follower_then_leader().await;
    // Each saw its own removal (the commit reached it) instead of stopping after its whole
    // 10 s leave wait.
    for (who, left) in [("follower", &follower), ("leader", &leader)] {
        eprintln!(
            "leaving {who}: gone from the others' views after {:?}, exited after {:?}",
            left.removed, left.exited
        );
        assert!(left.saw_removal, "the leaving {who} did not see its removal");
    }
}

/// Four nodes with `leave-on-shutdown`; a follower, then the leader, is SIGTERMed; each exits
/// 0 and is removed (the leader after a hand-over), and the rest keep serving.
async fn leave_follower_then_leader() -> (Left, Left) {
    let mut net = Net::formed(4, &[("--leave-on-shutdown", "true")]).await;
    let all: Vec<usize> = (0..4).collect();
    net.write_and_read_everywhere(&all, "before", "4").await;

    let leader = net.leader(&all).await;
    let follower = except(&all, &[leader])[0];
    let rest = except(&all, &[follower]);
    let follower_left = net.leave(follower, &rest).await;
    net.write_and_read_everywhere(&rest, "after-follower", "3").await;

    let leader = net.leader(&rest).await;
    let rest = except(&rest, &[leader]);
    let leader_left = net.leave(leader, &rest).await;
    let new_leader = net.leader(&rest).await;
    assert_ne!(new_leader, leader);
    net.write_and_read_everywhere(&rest, "after-leader", "2").await;
    for &i in &rest {
        let got = net.read_on(i, "before", ReadMode::Linearizable).await;
        assert_eq!(got.as_deref(), Some(&b"4"[..]), "{} lost a write", name(i));
    }
    (follower_left, leader_left)
}

/// kill -9 of a follower: the others report it `down` (still a voter) within the detection
/// bound and keep serving; restarted, it is `alive` again and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_follower_is_reported_down_and_comes_back_alive() {
    let mut net = Net::formed(3, &[]).await;
    let all: Vec<usize> = (0..3).collect();
    let leader = net.leader(&all).await;
    let victim = except(&all, &[leader])[0];
    let gone = name(victim);

    let t0 = Instant::now();
    net.nodes[victim].kill();
    let down = |s: &[Server]| {
        s.len() == 3
            && s.iter().all(is_voter)
            && leaders(s) == 1
            && server(s, &gone).is_some_and(|v| health(v) == Health::Down)
    };
    net.until_views(&[leader], &format!("{gone} down on the leader"), DETECTION_BOUND, down).await;
    eprintln!("kill -9 of {gone}: reported down by the leader after {:?}", t0.elapsed());
    let live = except(&all, &[victim]);
    net.until_views(&live, &format!("{gone} down everywhere"), DETECTION_BOUND, down).await;
    eprintln!("kill -9 of {gone}: reported down by every live node after {:?}", t0.elapsed());

    net.write_and_read_everywhere(&live, "while-down", "x").await;
    for k in 0..20 {
        net.write(&live, &format!("down/{k:02}"), &k.to_string()).await;
    }
    // With no dead-member timeout it stays a member, reported down.
    net.until_views(&live, &format!("{gone} still a down voter"), DEADLINE, down).await;

    let t0 = Instant::now();
    net.nodes[victim].restart();
    net.until_views(&all, &format!("{gone} alive again"), DEADLINE, |s| formed(s, 3)).await;
    eprintln!("{gone} restarted: alive in every view after {:?}", t0.elapsed());
    net.until_local_value(victim, "down/19", "19").await;
    let got = net.read_on(victim, "while-down", ReadMode::Linearizable).await;
    assert_eq!(got.as_deref(), Some(&b"x"[..]));
    net.write_and_read_everywhere(&all, "after-restart", "y").await;
}

/// A follower restarted on another rpc port (same data and gossip port) is reachable again
/// without a configuration change: gossip carries its new address to its peers, it catches
/// up, and it serves on the new port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restarted_on_another_rpc_port_is_found_through_gossip() {
    let (net, _, _) = follower_on_a_new_rpc_port().await;
    let all: Vec<usize> = (0..3).collect();
    net.write_and_read_everywhere(&all, "after-move", "m").await;
}

/// `GetServers` (and so clients' discovery) should list a node that moved to another rpc port
/// under its new address, as its peers already reach it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_servers_lists_a_moved_node_at_its_new_address() {
    let (net, victim, t0) = follower_on_a_new_rpc_port().await;
    let (gone, new_addr) = (name(victim), net.addr(victim).to_owned());
    let all: Vec<usize> = (0..3).collect();
    net.until_views(&all, &format!("{gone} listed at {new_addr}"), DEADLINE, |s| {
        formed(s, 3) && server(s, &gone).is_some_and(|v| v.rpc_addr == new_addr)
    })
    .await;
    eprintln!("{gone} on a new rpc port: listed there everywhere after {:?}", t0.elapsed());
}

/// Three nodes; a follower killed, a write made without it, the follower restarted on a new
/// rpc port: returns once it has that write and every node sees 3 alive voters (with the
/// follower's index and the time of its restart).
async fn follower_on_a_new_rpc_port() -> (Net, usize, Instant) {
    let mut net = Net::formed(3, &[]).await;
    let all: Vec<usize> = (0..3).collect();
    let leader = net.leader(&all).await;
    let victim = except(&all, &[leader])[0];
    let gone = name(victim);
    let old_addr = net.nodes[victim].addr.clone();

    net.nodes[victim].kill();
    let live = except(&all, &[victim]);
    net.write(&live, "while-away", "w").await;
    let t0 = Instant::now();
    net.nodes[victim].restart_on_new_rpc_port();
    let new_addr = net.nodes[victim].addr.clone();
    assert_ne!(new_addr, old_addr);
    net.kvs[victim] = net.certs.kv(&new_addr);
    net.until_local_value(victim, "while-away", "w").await;
    net.until_views(&all, "3 alive voters", DEADLINE, |s| formed(s, 3)).await;
    eprintln!("{gone} moved from {old_addr} to {new_addr}: caught up after {:?}", t0.elapsed());
    (net, victim, t0)
}

/// `dead-member-timeout-ms`: a follower that stays down that long is removed. Restarted with
/// its disk, it learns of its removal and stays out (it would come back only wiped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_member_timeout_removes_a_killed_follower() {
    let mut net = Net::formed(3, &[("--dead-member-timeout-ms", "3000")]).await;
    let all: Vec<usize> = (0..3).collect();
    net.write_and_read_everywhere(&all, "before", "3").await;
    let leader = net.leader(&all).await;
    let victim = except(&all, &[leader])[0];
    let gone = name(victim);

    let t0 = Instant::now();
    net.nodes[victim].kill();
    let live = except(&all, &[victim]);
    net.until_views(&live, &format!("{gone} removed"), DEADLINE, |s| formed_without(s, 2, &gone))
        .await;
    eprintln!("kill -9 of {gone} with a 3 s dead-member timeout: removed after {:?}", t0.elapsed());
    net.write_and_read_everywhere(&live, "after-removal", "2").await;

    // Back with its disk (which still lists it as a voter): it catches up to its own removal.
    let t0 = Instant::now();
    net.nodes[victim].restart();
    net.until_views(&[victim], &format!("{gone} sees its removal"), DEADLINE, |s| {
        formed_without(s, 2, &gone)
    })
    .await;
    net.until_views(&live, &format!("{gone} still out"), DEADLINE, |s| formed_without(s, 2, &gone))
        .await;
    eprintln!("{gone} restarted after its removal: knows it is out after {:?}", t0.elapsed());
    net.write_and_read_everywhere(&live, "after-restart", "2").await;
    let views = [servers(&net.kvs[live[0]]).await, servers(&net.kvs[live[1]]).await];
    for view in views {
        let view = view.expect("a live node answers");
        assert!(formed_without(&view, 2, &gone), "{gone} is back: {}", show(&view));
    }
}

/// `dead-member-timeout-ms` with the leader killed: a new leader is elected, reports the old
/// one down, and removes it once the timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_member_timeout_removes_a_killed_leader() {
    let mut net = Net::formed(3, &[("--dead-member-timeout-ms", "3000")]).await;
    let all: Vec<usize> = (0..3).collect();
    net.write_and_read_everywhere(&all, "before", "3").await;
    let leader = net.leader(&all).await;
    let gone = name(leader);

    let t0 = Instant::now();
    net.nodes[leader].kill();
    let live = except(&all, &[leader]);
    let new_leader = net.leader(&live).await;
    eprintln!("kill -9 of leader {gone}: {} leads after {:?}", name(new_leader), t0.elapsed());
    net.until_views(&live, &format!("{gone} down or removed"), DETECTION_BOUND, |s| {
        leaders(s) == 1
            && server(s, &gone).is_none_or(|v| health(v) == Health::Down && !v.is_leader)
    })
    .await;
    eprintln!("kill -9 of leader {gone}: down after {:?}", t0.elapsed());
    net.until_views(&live, &format!("{gone} removed"), DEADLINE, |s| formed_without(s, 2, &gone))
        .await;
    eprintln!(
        "kill -9 of leader {gone} with a 3 s dead-member timeout: removed after {:?}",
        t0.elapsed()
    );
    net.write_and_read_everywhere(&live, "after-removal", "2").await;
    for &i in &live {
        let got = net.read_on(i, "before", ReadMode::Linearizable).await;
        assert_eq!(got.as_deref(), Some(&b"3"[..]), "{} lost a write", name(i));
    }
}

/// A follower wiped (kill -9, data dir deleted) and started again under its name and gossip
/// port rejoins under a new raft id: the old id is removed, the new one becomes a voter, and
/// it has the data written before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rejoins_under_a_new_raft_id() {
    let mut net = Net::formed(3, &[]).await;
    let all: Vec<usize> = (0..3).collect();
    for k in 0..20 {
        net.write(&all, &format!("old/{k:02}"), &k.to_string()).await;
    }
    let leader = net.leader(&all).await;
    // Not n1: n1 has no seeds and would bootstrap a cluster of its own from an empty dir.
    let victim = except(&all, &[leader, 0])[0];
    let gone = name(victim);
    let old_id = net.nodes[victim].raft_id;

    let t0 = Instant::now();
    net.nodes[victim].wipe_and_start();
    let new_id = net.nodes[victim].raft_id;
    assert_ne!(new_id, old_id, "{gone} kept its raft id after a wipe");
    net.until_views(&all, &format!("{gone} back as raft id {new_id}"), DEADLINE, |s| {
        formed(s, 3)
            && server(s, &gone).is_some_and(|v| v.raft_id == new_id)
            && s.iter().all(|v| v.raft_id != old_id)
    })
    .await;
    eprintln!("{gone} wiped: voter under raft id {new_id} (was {old_id}) after {:?}", t0.elapsed());
    net.until_local_value(victim, "old/19", "19").await;
    for k in 0..20 {
        let got = net.read_on(victim, &format!("old/{k:02}"), ReadMode::Linearizable).await;
        assert_eq!(got, Some(k.to_string().into_bytes()), "{gone} misses old/{k:02}");
    }
    net.write_and_read_everywhere(&all, "after-wipe", "z").await;
}

/// A node with a valid certificate but another cluster key, listing members' gossip addresses,
/// is never added while the cluster keeps serving; with the right key the same node joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_another_cluster_key_cannot_join() {
    let mut net = Net::new(4);
    let metrics = [("--metrics-port", "0"), ("--metrics-plain-http", "true")];
    net.start(&[0, 1, 2], &metrics, seed_n1_n2);
    let members: Vec<usize> = (0..3).collect();
    net.until_views(&members, "3 alive voters and a leader", DEADLINE, |s| formed(s, 3)).await;

    let other_key = net.tmp.path().join("other-cluster.key");
    std::fs::write(&other_key, "not the key of this cluster\n").expect("writing a key file");
    let mut spec = net.spec("n4", &[]);
    let at = spec
        .args
        .iter()
        .position(|a| a == "--cluster-key-file")
        .expect("the test spec names a cluster key file");
    spec.args[at + 1] = other_key.into();
    let seeds = format!("{},{}", net.nodes[0].gossip_addr, net.nodes[1].gossip_addr);
    let spec = spec.with("--start-join-addrs", seeds);
    let stranger = Mokvd::start(&net.bins.mokvd, spec);
    net.add(stranger);

    // n4 keeps trying to join through its seeds n1 and n2, which refuse its datagrams (they
    // do not open with the cluster key): views are checked until each seed has refused
    // REFUSALS of them, so the check spans n4's join attempts, not a guessed time window.
    const REFUSALS: f64 = 5.0;
    let refused = |i: usize| {
        let port = net.nodes[i].metrics_port.expect("members run with --metrics-port");
        async move {
            metric(port, "mokv_gossip_datagrams_dropped_total{reason=\"unauthenticated\"}")
                .await
                .unwrap_or(0.0)
        }
    };
    let start = Instant::now();
    let mut polls = 0;
    loop {
        for &i in &members {
            let view = servers(&net.kvs[i]).await;
            if let Some(view) = &view {
                assert!(server(view, "n4").is_none(), "n4 joined {}: {}", name(i), show(view));
                assert!(view.len() == 3 && view.iter().all(is_voter), "{}", show(view));
            }
        }
        if let Some(view) = servers(&net.kvs[3]).await {
            assert!(
                view.iter().all(|s| s.id == "n4"),
                "n4 (wrong key) knows the cluster: {}",
                show(&view)
            );
        }
        polls += 1;
        let (by_n1, by_n2) = (refused(0).await, refused(1).await);
        if by_n1 >= REFUSALS && by_n2 >= REFUSALS {
            eprintln!(
                "n4 with another cluster key: {by_n1} and {by_n2} datagrams refused by n1 and n2, \
                 absent from {polls} rounds of views over {:?}",
                start.elapsed()
            );
            break;
        }
        assert!(start.elapsed() < DEADLINE, "n1/n2 refused only {by_n1}/{by_n2} datagrams of n4");
        tokio::time::sleep(POLL).await;
    }
    net.write_and_read_everywhere(&members, "stranger-kept-out", "1").await;

    // The same node with the cluster's key joins: the key was the only obstacle.
    let key = net.certs.path("cluster.key");
    net.nodes[3].spec.args[at + 1] = key.into();
    let t0 = Instant::now();
    net.nodes[3].restart();
    let all: Vec<usize> = (0..4).collect();
    net.until_views(&all, "n4 joined with the right key", DEADLINE, |s| formed(s, 4)).await;
    eprintln!("n4 with the right key: a voter after {:?}", t0.elapsed());
    net.write_and_read_everywhere(&all, "joined", "4").await;
}

/// Nodes remember their peers' gossip addresses: after a full restart in which the only seed
/// they were started with (`n1`) stays down, `n2` and `n3` still find each other in gossip
/// (each alive in the other's view), elect a leader and serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_without_the_seed_reforms_gossip_from_remembered_peers() {
    let mut net = Net::new(3);
    net.start(&[0, 1, 2], &[], |i| if i == 0 { Vec::new() } else { vec![0] });
    let all: Vec<usize> = (0..3).collect();
    net.until_views(&all, "3 alive voters and a leader", DEADLINE, |s| formed(s, 3)).await;
    net.write_and_read_everywhere(&all, "before", "1").await;
    for node in &mut net.nodes {
        node.kill();
    }
    let rest = [1, 2];
    for &i in &rest {
        net.nodes[i].restart();
    }
    let t0 = Instant::now();
    let reformed = |s: &[Server]| {
        s.len() == 3
            && leaders(s) == 1
            && ["n2", "n3"].iter().all(|n| server(s, n).is_some_and(|v| health(v) == Health::Alive))
    };
    net.until_views(&rest, "n2 and n3 alive to each other, with a leader", DEADLINE, reformed)
        .await;
    eprintln!("n2, n3 re-formed gossip without their seed after {:?}", t0.elapsed());
    let got = net.read_on(1, "before", ReadMode::Linearizable).await;
    assert_eq!(got.as_deref(), Some(&b"1"[..]));
    net.write_and_read_everywhere(&rest, "after", "2").await;
}

/// `--gossip-socket-on-stdin` with something other than a UDP socket on stdin (here a TCP
/// listener's socket) stops the start with a clear error instead of gossiping on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_socket_on_stdin_must_be_udp() {
    let net = Net::new(1);
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a TCP port");
    let out = std::process::Command::new(&net.bins.mokvd)
        .args(&net.spec(&name(0), &[]).args)
        .args(["--bootstrap", "--gossip-socket-on-stdin", "--rpc-port", "0"])
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(tcp)))
        .output()
        .expect("running mokvd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mokvd started on a TCP socket: {stderr}");
    assert!(stderr.contains("stdin is not a UDP socket"), "unexpected error: {stderr}");
}
