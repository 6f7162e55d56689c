//! End-to-end tests of the client library against real `mokvd` processes: discovery from one
//! seed address, load balancing (per-node counts from each node's `/metrics`), the seed node
//! killed with SIGKILL, a node added while the client runs, and 64 tasks sharing one client
//! across a leader failover with every acknowledged write applied exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mokv_client::{
    Client, ClientConfig, ClientError, Entry, RangeOptions, ReadFrom, ReadMode, Role, Stream,
};
use mokv_proto::api::Suffrage;
use mokv_tests::{eventually, find_leader, scrape_metrics, Bins, Certs, Mokvd, NodeSpec};

/// Nodes of one test, each with a metrics port (`Mokvd::metrics_port`): certificates for `names` (started on demand).
struct Net {
    bins: Bins,
    certs: Certs,
    data: PathBuf,
    names: Vec<String>,
    /// `--flag value` pairs every node gets.
    extra: Vec<(String, String)>,
    nodes: Vec<Mokvd>,
    // Dropped last: the processes are killed before their directories go.
    _tmp: tempfile::TempDir,
}

impl Net {
    /// Certificates for `certified` nodes `n1..`; starts the first `start` of them (`n1`
    /// bootstraps, the others join through its gossip address) and waits until they are all
    /// voters with a leader.
    async fn start(certified: usize, start: usize) -> Net {
        Self::start_with(certified, start, None).await
    }

    /// [`Net::start`] with the Casbin policy `policy` (identities `root`, `app`, `nobody`).
    async fn start_with(certified: usize, start: usize, policy: Option<&str>) -> Net {
        let bins = Bins::get();
        let tmp = tempfile::tempdir().expect("temp dir");
        let names: Vec<String> = (1..=certified).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let clients = ["root", "app", "nobody"];
        let certs = Certs::generate(&bins, &tmp.path().join("certs"), &refs, &clients);
        let data = tmp.path().join("data");
        let mut extra = Vec::new();
        if let Some(p) = policy {
            let path = tmp.path().join("policy.csv");
            std::fs::write(&path, p).expect("writing the policy");
            extra.push(("--acl-policy-file".to_owned(), path.display().to_string()));
        }
        let mut net = Net { bins, certs, data, names, extra, nodes: Vec::new(), _tmp: tmp };
        for _ in 0..start {
            net.add();
        }
        net.until_voters(start).await;
        net
    }

    /// Starts the next certified node (joining through a running node's gossip address).
    fn add(&mut self) -> usize {
        let i = self.nodes.len();
        let mut spec = NodeSpec::node(&self.certs, &self.data, &self.names[i])
            .with("--metrics-port", "0")
            .flag("--metrics-plain-http");
        for (k, v) in &self.extra {
            spec = spec.with(k, v);
        }
        spec =
            match self.nodes.iter_mut().find_map(|n| n.is_running().then(|| n.gossip_addr.clone()))
            {
                None => spec.flag("--bootstrap"),
                Some(join) => spec.with("--start-join-addrs", join),
            };
        self.nodes.push(Mokvd::start(&self.bins.mokvd, spec));
        i
    }

    /// Waits until a running node reports `voters` voters and a leader.
    async fn until_voters(&mut self, voters: usize) {
        let live: Vec<String> =
            self.nodes.iter_mut().filter_map(|n| n.is_running().then(|| n.addr.clone())).collect();
        let certs = self.certs.clone();
        eventually(&format!("{voters} voters and a leader"), || {
            let (certs, live) = (certs.clone(), live.clone());
            async move {
                for addr in &live {
                    let Some(s) = certs.servers(addr).await else { continue };
                    let v = s.iter().filter(|s| s.suffrage == Suffrage::Voter as i32).count();
                    if v == voters && s.iter().any(|s| s.is_leader) {
                        return Some(());
                    }
                }
                None
            }
        })
        .await;
    }

    async fn leader(&mut self) -> usize {
        let live: Vec<(usize, String)> = self
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| n.is_running().then(|| (i, n.addr.clone())))
            .collect();
        let certs = self.certs.clone();
        eventually("a leader", || {
            let (certs, live) = (certs.clone(), live.clone());
            async move { find_leader(&certs, &live).await }
        })
        .await
    }

    /// A `root` client seeded with `endpoints` only, refreshing its view every 300 ms.
    fn client(&self, endpoints: &[&str]) -> Client {
        self.client_as("root", endpoints)
    }

    /// [`Net::client`] as identity `who`.
    fn client_as(&self, who: &str, endpoints: &[&str]) -> Client {
        let mut config = ClientConfig::new(
            endpoints.iter().map(|e| (*e).to_owned()).collect(),
            self.certs.tls(who),
        );
        config.refresh_interval = Duration::from_millis(300);
        Client::connect(config).expect("client config")
    }

    /// `mokv_requests_total{rpc, code="ok"}` of node `i` (0 before its first such rpc).
    async fn ok_requests(&self, i: usize, rpc: &str) -> u64 {
        let port = self.nodes[i].metrics_port.expect("started with --metrics-port");
        let text = scrape(port).await.unwrap_or_else(|| panic!("no metrics from n{}", i + 1));
        let rpc = format!("rpc=\"{rpc}\"");
        text.lines()
            .filter(|l| l.starts_with("mokv_requests_total{") && l.contains(&rpc))
            .filter(|l| l.contains("code=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Successful `get` and `set` rpcs per node (running nodes only; `None` for the others).
    async fn counts(&mut self) -> Vec<Option<(u64, u64)>> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                out.push(Some((
                    self.ok_requests(i, "get").await,
                    self.ok_requests(i, "set").await,
                )));
            } else {
                out.push(None);
            }
        }
        out
    }
}

/// The whole `/metrics` text of the node whose metrics listen on `port` (retried: the
/// exporter starts with the node).
async fn scrape(port: u16) -> Option<String> {
    for _ in 0..50 {
        if let Some(text) = scrape_metrics(port, Duration::from_secs(2)).await {
            return Some(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// Every entry of a stream (panics on an error).
async fn collect(stream: impl Stream<Item = Result<Entry, ClientError>>) -> Vec<Entry> {
    let mut stream = Box::pin(stream);
    let mut out = Vec::new();
    while let Some(e) = next(&mut stream).await {
        out.push(e.expect("stream item"));
    }
    out
}

/// Waits until the client's view lists `n` nodes, one of them the leader.
async fn until_discovered(client: &Client, n: usize) {
    eventually(&format!("the client discovering {n} nodes"), || {
        let nodes = client.nodes();
        let ok = nodes.len() == n && nodes.iter().filter(|x| x.role == Role::Leader).count() == 1;
        async move { ok.then_some(()) }
    })
    .await;
}

/// A client given ONE follower's address discovers the others; reads spread over both
/// followers, writes go to the leader (per-node counts from each node's metrics); the CLI
/// with that one address works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_follower_address_is_enough_reads_spread_over_followers_writes_go_to_the_leader() {
    let mut net = Net::start(3, 3).await;
    let leader = net.leader().await;
    let follower = (leader + 1) % 3;
    let seed = net.nodes[follower].addr.clone();
    let client = net.client(&[&seed]);
    // Writes and reads through the one address, before discovery has necessarily run.
    let rev = client.set("lb/first", b"1").await.unwrap();
    let e = client.get("lb/first", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.mod_revision), (&b"1"[..], rev));
    until_discovered(&client, 3).await;
    let view = client.nodes();
    let leader_addr = net.nodes[leader].addr.clone();
    assert!(
        view.iter().any(|n| n.addr == leader_addr && n.role == Role::Leader),
        "the client's view has the wrong leader: {view:?}"
    );

    let before = net.counts().await;
    const WRITES: u64 = 60;
    const TASKS: u64 = 8;
    const READS_PER_TASK: u64 = 75;
    for i in 0..WRITES {
        client.set(&format!("lb/{i}"), b"v").await.unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..READS_PER_TASK {
                let key = format!("lb/{}", (t * READS_PER_TASK + i) % WRITES);
                let got = client.get(&key, ReadMode::Linearizable).await.unwrap();
                assert_eq!(got.map(|e| e.value), Some(b"v".to_vec()), "{key}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = net.counts().await;
    let reads = TASKS * READS_PER_TASK;
    let mut served = Vec::new();
    for i in 0..3 {
        let (b, a) = (before[i].unwrap(), after[i].unwrap());
        let (gets, sets) = (a.0 - b.0, a.1 - b.1);
        let role = if i == leader { "leader" } else { "follower" };
        println!("per-node counts: {} ({role}): {gets} reads, {sets} writes", net.names[i]);
        served.push((gets, sets));
    }
    println!("total: {reads} reads, {WRITES} writes issued");
    assert_eq!(served.iter().map(|s| s.0).sum::<u64>(), reads, "every read counted once");
    assert_eq!(served[leader].1, WRITES, "the leader served every write");
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(served[i].1, 0, "a follower served a write");
        assert!(served[i].0 >= reads / 4, "follower n{} served too few reads: {served:?}", i + 1);
    }
    assert!(served[leader].0 <= reads / 10, "the leader served reads: {served:?}");

    // The CLI, given the same one address, finds the leader for writes and the others.
    let dir = net.certs.dir.clone();
    let mokv = |args: &[&str]| {
        let out = std::process::Command::new(&net.bins.mokv)
            .args(["--endpoints", &seed, "--ca"])
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("root.pem"))
            .arg("--key")
            .arg(dir.join("root-key.pem"))
            .args(args)
            .env_remove("MOKV_ENDPOINTS")
            .output()
            .unwrap();
        assert!(out.status.success(), "mokv {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(mokv(&["set", "lb/cli", "from the CLI"]).starts_with("OK"));
    assert_eq!(mokv(&["--read-from", "any", "get", "lb/cli"]), "from the CLI\n");
    let members = mokv(&["members"]);
    for n in &net.nodes {
        assert!(members.contains(&n.addr), "{members}");
    }
    let listed = mokv(&["list", "--prefix", "lb/", "--keys-only", "--limit", "7", "--all"]);
    assert_eq!(listed.lines().count() as u64, WRITES + 2, "{listed}");
}

/// The node the client was seeded with dies (SIGKILL): the client keeps writing and reading
/// through the nodes it discovered. A node added afterwards starts receiving reads without a
/// client restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_outlives_its_seed_and_sends_reads_to_a_node_added_later() {
    let mut net = Net::start(4, 3).await;
    let leader = net.leader().await;
    let seed_idx = (leader + 1) % 3;
    let seed = net.nodes[seed_idx].addr.clone();
    let client = net.client(&[&seed]);
    client.set("seed/before", b"1").await.unwrap();
    until_discovered(&client, 3).await;

    net.nodes[seed_idx].kill();
    // Every call succeeds: reads that went to the dead seed are retried on the others.
    for i in 0..100 {
        let key = format!("seed/{i}");
        client.set(&key, b"after").await.unwrap_or_else(|e| panic!("write {i}: {e}"));
        let got = client.get(&key, ReadMode::Linearizable).await;
        assert_eq!(got.unwrap().map(|e| e.value), Some(b"after".to_vec()), "read {i}");
    }
    let dead = client.nodes().into_iter().find(|n| n.addr == seed);
    assert!(dead.as_ref().is_none_or(|n| !n.usable), "the dead seed is still used: {dead:?}");

    // n4 joins (through a live node's gossip); the running client discovers it and sends it
    // reads.
    let added = net.add();
    let new_addr = net.nodes[added].addr.clone();
    eventually("the client to discover n4", || {
        let ok = client.nodes().iter().any(|n| n.addr == new_addr && n.role == Role::Follower);
        async move { ok.then_some(()) }
    })
    .await;
    let before = net.ok_requests(added, "get").await;
    for i in 0..60 {
        let key = format!("seed/{}", i % 100);
        assert!(client.get(&key, ReadMode::Linearizable).await.unwrap().is_some());
    }
    let served = net.ok_requests(added, "get").await - before;
    println!("n4 served {served} of 60 reads after it joined");
    assert!(served >= 10, "the added node served {served} of 60 reads");
    // Explicit placement still works: the leader serves reads asked of it.
    let leader_now = net.leader().await;
    let on_leader = net.ok_requests(leader_now, "get").await;
    for _ in 0..5 {
        let opts = mokv_client::ReadOptions::new().from(ReadFrom::Leader);
        assert!(client.get("seed/1", opts).await.unwrap().is_some());
    }
    assert_eq!(net.ok_requests(leader_now, "get").await - on_leader, 5);
}

/// 64 tasks share ONE client and write concurrently with sessions while the leader is killed
/// (SIGKILL): every acknowledged write is applied exactly once (version 1, at the revision
/// acknowledged), and no write is applied twice (no key past version 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_share_one_client_across_a_leader_failover() {
    const TASKS: usize = 64;
    const WRITES_PER_TASK: usize = 40;
    let mut net = Net::start(3, 3).await;
    let addrs: Vec<String> = net.nodes.iter().map(|n| n.addr.clone()).collect();
    let client = net.client(&[&addrs[0]]);
    until_discovered(&client, 3).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (client, acked) = (client.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..WRITES_PER_TASK {
                let key = format!("ff/{t:02}/{i:02}");
                let r = client.set(&key, format!("{t}.{i}").as_bytes()).await;
                if r.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                outcomes.push((key, r));
            }
            outcomes
        }));
    }
    // Kill the leader once a third of the writes are acknowledged.
    eventually("a third of the writes", || {
        let n = acked.load(Ordering::Relaxed);
        async move { (n >= TASKS * WRITES_PER_TASK / 3).then_some(()) }
    })
    .await;
    let old = net.leader().await;
    net.nodes[old].kill();
    let at_kill = acked.load(Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    let new = net.leader().await;
    assert_ne!(new, old);

    let all: BTreeMap<String, Entry> = collect(client.range_stream("ff/", RangeOptions::default()))
        .await
        .into_iter()
        .map(|e| (e.key.clone(), e))
        .collect();
    let (mut ok, mut indeterminate) = (0, 0);
    for (key, r) in &outcomes {
        match r {
            Ok(revision) => {
                ok += 1;
                let e = all.get(key).unwrap_or_else(|| panic!("acknowledged {key} is lost"));
                assert_eq!(
                    (e.version, e.create_revision, e.mod_revision),
                    (1, *revision, *revision),
                    "{key} was not applied exactly once at its acknowledged revision"
                );
            }
            Err(ClientError::Indeterminate) => indeterminate += 1,
            Err(e) => panic!("{key}: {e}"),
        }
    }
    for e in all.values() {
        assert_eq!(e.version, 1, "{} was applied more than once", e.key);
    }
    println!(
        "{} writes: {ok} acknowledged ({at_kill} before the kill), {indeterminate} \
         indeterminate, {} keys stored; leader n{} killed, n{} took over",
        outcomes.len(),
        all.len(),
        old + 1,
        new + 1
    );
    assert!(ok > at_kill, "no write was acknowledged after the failover");
    assert!(all.len() >= ok);
    // The List stream (the original's) sees the same keys.
    let listed: Vec<String> = collect(client.list(None))
        .await
        .into_iter()
        .map(|e| e.key)
        .filter(|k| k.starts_with("ff/"))
        .collect();
    assert_eq!(listed, all.keys().cloned().collect::<Vec<_>>());
}

/// An application identity limited to its prefix discovers the members with the default model
/// (`GetServers` is `(cluster, discover)`, granted to every identity holding a permission) and
/// its reads spread over the followers; `nobody` (no rule) is refused discovery and stays on
/// its seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_identity_discovers_and_nobody_does_not() {
    let policy = "p, root, *, *\np, app, app/*, produce\np, app, app/*, consume\n";
    let mut net = Net::start_with(3, 3, Some(policy)).await;
    let leader = net.leader().await;
    let seed = net.nodes[(leader + 1) % 3].addr.clone();
    let app = net.client_as("app", &[&seed]);
    app.set("app/x", b"1").await.unwrap();
    until_discovered(&app, 3).await;
    let members = app.members().await.unwrap();
    assert_eq!(members.len(), 3);
    let before = net.counts().await;
    for _ in 0..40 {
        assert!(app.get("app/x", ReadMode::Linearizable).await.unwrap().is_some());
    }
    let after = net.counts().await;
    for i in (0..3).filter(|&i| i != leader) {
        let served = after[i].unwrap().0 - before[i].unwrap().0;
        assert!(served >= 10, "follower n{} served {served} of 40 reads", i + 1);
    }
    let refused = app.get("other", ReadMode::Linearizable).await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Refused { code: tonic::Code::PermissionDenied, .. }),
        "{refused:?}"
    );

    let nobody = net.client_as("nobody", &[&seed]);
    match nobody.members().await {
        Err(ClientError::Refused { code: tonic::Code::PermissionDenied, .. }) => {}
        other => panic!("nobody discovered the members: {other:?}"),
    }
    match nobody.refresh().await {
        Err(ClientError::Refused { code: tonic::Code::PermissionDenied, .. }) => {}
        other => panic!("nobody's discovery was not refused: {other:?}"),
    }
    let view: Vec<String> = nobody.nodes().into_iter().map(|n| n.addr).collect();
    assert_eq!(view, vec![seed], "nobody's client learned members it may not see");
    let e = nobody.get("app/x", ReadMode::Linearizable).await.unwrap_err();
    assert!(matches!(e, ClientError::Refused { code: tonic::Code::PermissionDenied, .. }));
}
