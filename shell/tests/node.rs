//! Real nodes on ephemeral ports over mTLS: a single node in-process, `mokvd --dev` as a
//! process, and a 3-node cluster formed by bootstrap + gossip join. Waits poll with deadlines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{DeleteRequest, GetRequest, RangeRequest, SetRequest};
use mokv_proto::peer::peer_client::PeerClient;
use mokv_proto::peer::SnapshotChunk;
use mokv_shell::config::{NodeConfig, Settings};
use mokv_shell::RunningNode;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

mod common;
use common::{capture_logs, logged};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(30);

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(dir: &Path, nodes: &[&str]) -> Certs {
        let ca = mokv_shell::certs::load_or_create_ca(dir).unwrap();
        for n in nodes {
            mokv_shell::certs::write_node_cert(&ca, dir, n, &[]).unwrap();
        }
        mokv_shell::certs::write_client_cert(&ca, dir, "root").unwrap();
        Certs { dir: dir.to_path_buf() }
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

fn settings(certs: &Certs, data: &Path, name: &str) -> Settings {
    Settings {
        data_dir: Some(data.join(name)),
        node_name: Some(name.to_owned()),
        bind_addr: Some("127.0.0.1:0".to_owned()),
        rpc_port: Some(0),
        server_tls_cert_file: Some(certs.dir.join(format!("{name}.pem"))),
        server_tls_key_file: Some(certs.dir.join(format!("{name}-key.pem"))),
        server_tls_ca_file: Some(certs.dir.join("ca.pem")),
        tick_ms: Some(20),
        log_level: Some("warn".to_owned()),
        cluster_key: Some("node-tests-cluster-key".to_owned()),
        gossip_probe_ms: Some(200),
        gossip_suspect_ms: Some(1_000),
        ..Settings::default()
    }
}

async fn channel(addr: &str, ca: Vec<u8>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

async fn kv(certs: &Certs, addr: &str, who: &str) -> KvClient<Channel> {
    let id = (certs.read(&format!("{who}.pem")), certs.read(&format!("{who}-key.pem")));
    KvClient::new(channel(addr, certs.read("ca.pem"), Some(id)).await)
}

/// Retries `f` until it returns `Some`, or panics at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn set(c: &mut KvClient<Channel>, key: &str, value: &str) -> Result<u64, tonic::Status> {
    let r = c
        .set(SetRequest {
            key: key.into(),
            value: value.into(),
            session: None,
            condition: None,
            lease: 0,
        })
        .await?
        .into_inner();
    Ok(r.revision)
}

async fn get(c: &mut KvClient<Channel>, key: &str) -> Result<Vec<u8>, tonic::Status> {
    Ok(c.get(GetRequest { key: key.into(), consistency: 0 }).await?.into_inner().value)
}

async fn start(s: Settings) -> RunningNode {
    capture_logs();
    mokv_shell::install_crypto_provider();
    let cfg = NodeConfig::resolve(s).unwrap();
    mokv_shell::start(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_serves_kv_over_mtls() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"), &["n1"]);
    let node =
        start(Settings { bootstrap: Some(true), ..settings(&certs, tmp.path(), "n1") }).await;
    let addr = node.rpc_addr.clone();
    let mut c = kv(&certs, &addr, "root").await;

    eventually("the first write", || {
        let mut c = c.clone();
        async move { set(&mut c, "a", "1").await.ok() }
    })
    .await;
    assert_eq!(get(&mut c, "a").await.unwrap(), b"1");
    set(&mut c, "b/1", "x").await.unwrap();
    set(&mut c, "b/2", "y").await.unwrap();

    // Errors map per DESIGN's table.
    assert_eq!(get(&mut c, "missing").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(set(&mut c, "", "v").await.unwrap_err().code(), Code::InvalidArgument);
    let big = "k".repeat(5000);
    let e = set(&mut c, &big, "v").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(!e.message().contains("kkkk"), "error echoes the key: {}", e.message());

    // List streams keys with values.
    let mut stream = c.list(()).await.unwrap().into_inner();
    let mut listed = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        listed.push((item.key, item.value));
    }
    assert_eq!(
        listed,
        vec![
            ("a".into(), b"1".to_vec()),
            ("b/1".into(), b"x".to_vec()),
            ("b/2".into(), b"y".to_vec())
        ]
    );
    let page = c
        .range(RangeRequest { prefix: "b/".into(), limit: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.kvs.len(), 1);
    assert_eq!(page.kvs[0].key, "b/1");
    assert!(!page.next_page_token.is_empty());

    let d = c
        .delete(DeleteRequest { key: "a".into(), session: None, condition: None })
        .await
        .unwrap()
        .into_inner();
    assert!(d.ok);
    let d = c
        .delete(DeleteRequest { key: "a".into(), session: None, condition: None })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.ok, "deleting a missing key succeeds with ok=false");
    assert_eq!(get(&mut c, "a").await.unwrap_err().code(), Code::NotFound);

    let servers = c.get_servers(()).await.unwrap().into_inner().servers;
    assert_eq!(servers.len(), 1);
    assert!(servers[0].is_leader);
    assert_eq!(servers[0].rpc_addr, addr);

    // No client certificate: refused.
    let mut anon = KvClient::new(channel(&addr, certs.read("ca.pem"), None).await);
    let e = get(&mut anon, "b/1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "a client without a certificate: {e:?}");
    // ... on the peer service too.
    let mut anon_peer = PeerClient::new(channel(&addr, certs.read("ca.pem"), None).await);
    let chunk = SnapshotChunk {
        from: 99,
        to: node.id,
        total_bytes: 1,
        data: vec![0],
        ..Default::default()
    };
    let e = anon_peer.snapshot(tokio_stream::iter(vec![chunk])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // A certificate of another CA: refused.
    let other = Certs::new(&tmp.path().join("other"), &[]);
    let id = (other.read("root.pem"), other.read("root-key.pem"));
    let mut foreign = KvClient::new(channel(&addr, certs.read("ca.pem"), Some(id)).await);
    assert!(get(&mut foreign, "b/1").await.is_err(), "a foreign certificate got in");

    // A client certificate may not use the peer service.
    let id = (certs.read("root.pem"), certs.read("root-key.pem"));
    let mut peer = PeerClient::new(channel(&addr, certs.read("ca.pem"), Some(id)).await);
    let chunk = SnapshotChunk {
        from: 99,
        to: node.id,
        total_bytes: 1,
        data: vec![0],
        ..Default::default()
    };
    let e = peer.snapshot(tokio_stream::iter(vec![chunk])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The node still serves, then restarts from RocksDB with its data.
    assert_eq!(get(&mut c, "b/2").await.unwrap(), b"y");
    node.shutdown().await.unwrap();
    let node =
        start(Settings { bootstrap: Some(true), ..settings(&certs, tmp.path(), "n1") }).await;
    let mut c = kv(&certs, &node.rpc_addr, "root").await;
    let v = eventually("a read after restart", || {
        let mut c = c.clone();
        async move { get(&mut c, "b/1").await.ok() }
    })
    .await;
    assert_eq!(v, b"x");
    assert_eq!(get(&mut c, "a").await.unwrap_err().code(), Code::NotFound);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_through_bootstrap_and_join() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"), &["n1", "n2", "n3"]);
    let n1 = start(Settings { bootstrap: Some(true), ..settings(&certs, tmp.path(), "n1") }).await;
    // Joining through gossip: n2 knows n1's gossip address, n3 knows n2's.
    let join = vec![n1.gossip_addr.clone()];
    let n2 = start(Settings {
        start_join_addrs: Some(join.clone()),
        ..settings(&certs, tmp.path(), "n2")
    })
    .await;
    let join3 = vec![n2.gossip_addr.clone()];
    let n3 =
        start(Settings { start_join_addrs: Some(join3), ..settings(&certs, tmp.path(), "n3") })
            .await;

    let h = n1.handle();
    eventually("three voters", || {
        let v = h.view();
        async move { (v.status.conf.voters.len() == 3).then_some(()) }
    })
    .await;

    let mut c1 = kv(&certs, &n1.rpc_addr, "root").await;
    set(&mut c1, "k", "v1").await.unwrap();
    for n in [&n1, &n2, &n3] {
        let mut c = kv(&certs, &n.rpc_addr, "root").await;
        let v = eventually("a linearizable read", || {
            let mut c = c.clone();
            async move { get(&mut c, "k").await.ok() }
        })
        .await;
        assert_eq!(v, b"v1", "node {} is stale", n.rpc_addr);
        // Reads right after a write see it (no waiting for replication).
        set(&mut c1, "k", &format!("after-{}", n.id)).await.unwrap();
        assert_eq!(get(&mut c, "k").await.unwrap(), format!("after-{}", n.id).as_bytes());
        set(&mut c1, "k", "v1").await.unwrap();
    }

    // A write on a follower: UNAVAILABLE with the leader hint.
    let leader = n1.handle().view().status.leader.unwrap();
    let follower = [&n1, &n2, &n3].into_iter().find(|n| n.id != leader).unwrap();
    let mut cf = kv(&certs, &follower.rpc_addr, "root").await;
    let e = set(&mut cf, "k", "x").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.metadata().get(mokv_proto::LEADER_HINT_ADDR).is_some());

    let servers = c1.get_servers(()).await.unwrap().into_inner().servers;
    assert_eq!(servers.len(), 3);
    assert_eq!(servers.iter().filter(|s| s.is_leader).count(), 1);
    let alive = mokv_proto::api::Health::Alive as i32;
    assert!(servers.iter().all(|s| s.health == alive), "{servers:?}");

    // Graceful stop of the leader hands leadership over; the others keep serving.
    let (leader_node, rest): (Vec<_>, Vec<_>) =
        [n1, n2, n3].into_iter().partition(|n| n.id == leader);
    for n in leader_node {
        n.shutdown().await.unwrap();
    }
    let mut c = kv(&certs, &rest[0].rpc_addr, "root").await;
    eventually("a write after the leader left", || {
        let mut cs = [c.clone(), kv_blocking(&certs, &rest[1].rpc_addr)];
        async move {
            for c in &mut cs {
                if set(c, "k", "v2").await.is_ok() {
                    return Some(());
                }
            }
            None
        }
    })
    .await;
    let v = eventually("the new value", || {
        let mut c = c.clone();
        async move { get(&mut c, "k").await.ok() }
    })
    .await;
    assert_eq!(v, b"v2");
    let _ = get(&mut c, "k").await;
    for n in rest {
        n.shutdown().await.unwrap();
    }
}

fn kv_blocking(certs: &Certs, addr: &str) -> KvClient<Channel> {
    let id = (certs.read("root.pem"), certs.read("root-key.pem"));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certs.read("ca.pem")))
        .identity(Identity::from_pem(id.0, id.1));
    KvClient::new(
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mokvd_dev_runs_reloads_on_sighup_and_stops_on_sigterm() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mokvd"))
        .args(["--dev", "--rpc-port", "0", "--data-dir"])
        .arg(&dir)
        .args(["--log-level", "warn,mokv_shell::security::tls=info"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(DEADLINE).expect("mokvd printed no address");
    let addr = line
        .strip_prefix("mokvd listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    let certs = Certs { dir: dir.clone() };
    let mut c = kv(&certs, &addr, "root").await;
    eventually("the first write", || {
        let mut c = c.clone();
        async move { set(&mut c, "hello", "world").await.ok() }
    })
    .await;
    assert_eq!(get(&mut c, "hello").await.unwrap(), b"world");

    // SIGHUP reloads the certificates (here unchanged) instead of killing the process; new
    // connections are still served.
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    // The observed event: the reload's log line (the process handled the signal).
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = log_rx.recv_timeout(left).expect("no reload logged after SIGHUP");
        if line.contains("server certificates reloaded") {
            break;
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "mokvd died on SIGHUP");
    let mut fresh = kv(&certs, &addr, "root").await;
    assert_eq!(get(&mut fresh, "hello").await.unwrap(), b"world");

    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "mokvd did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(status.success(), "mokvd exited with {status}");
}

/// The outgoing (peer) certificate is reloaded without a restart: n2's peer certificate is
/// rotated to a new CA and n1 is made to trust only that CA; n1 restarts (so n2 must dial it
/// anew) and the two-voter cluster can only elect a leader if n2 now presents the new
/// certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_certificate_reloads_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let old = Certs::new(&tmp.path().join("old"), &["n1", "n2"]);
    let new = Certs::new(&tmp.path().join("new"), &["n2"]);
    // Files the test rotates: n1's trusted client CA, n2's outgoing identity.
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        let tmp_file = live.join(format!("{name}.tmp"));
        std::fs::write(&tmp_file, bytes).unwrap();
        std::fs::rename(tmp_file, live.join(name)).unwrap();
    };
    put("n1-client-ca.pem", old.read("ca.pem"));
    put("n2-peer.pem", old.read("n2.pem"));
    put("n2-peer-key.pem", old.read("n2-key.pem"));

    let n1_settings = |bind: String| Settings {
        bootstrap: Some(true),
        bind_addr: Some(bind),
        server_tls_ca_file: Some(live.join("n1-client-ca.pem")),
        // n1 dials n2 with its own (old CA) certificate, which n2 trusts throughout.
        peer_tls_ca_file: Some(old.dir.join("ca.pem")),
        ..settings(&old, tmp.path(), "n1")
    };
    let n1 = start(n1_settings("127.0.0.1:0".into())).await;
    let n1_gossip = n1.gossip_addr.clone();
    let n2 = start(Settings {
        start_join_addrs: Some(vec![n1_gossip.clone()]),
        peer_tls_cert_file: Some(live.join("n2-peer.pem")),
        peer_tls_key_file: Some(live.join("n2-peer-key.pem")),
        peer_tls_ca_file: Some(old.dir.join("ca.pem")),
        ..settings(&old, tmp.path(), "n2")
    })
    .await;
    let h = n1.handle();
    eventually("two voters", || {
        let v = h.view();
        async move { (v.status.conf.voters.len() == 2).then_some(()) }
    })
    .await;

    // Rotate: n2 presents a certificate of the new CA; n1 accepts only the new CA.
    let peer_cert = live.join("n2-peer.pem").display().to_string();
    let n1_cert = old.dir.join("n1.pem").display().to_string();
    let peer_reloaded = ["peer certificates reloaded", peer_cert.as_str()];
    let n1_reloaded = ["server certificates reloaded", n1_cert.as_str()];
    let before = (logged(&peer_reloaded), logged(&n1_reloaded));
    put("n2-peer-key.pem", new.read("n2-key.pem"));
    put("n2-peer.pem", new.read("n2.pem"));
    put("n1-client-ca.pem", new.read("ca.pem"));
    // Both watchers log each reload that took effect (a half-rotated pair is refused and
    // retried on the next poll, so the last logged reload holds both new files).
    eventually("both reloads", || {
        let done = logged(&peer_reloaded) > before.0 && logged(&n1_reloaded) > before.1;
        async move { done.then_some(()) }
    })
    .await;

    n1.shutdown().await.unwrap();
    let n1 = start(n1_settings(n1_gossip)).await;
    // A leader needs n2's vote, which only reaches n1 over a new connection.
    // A leader needs the votes of both; n2's messages reach n1 only over a new connection.
    let (h1, h2) = (n1.handle(), n2.handle());
    let leader = eventually("a leader both nodes know", || {
        let (v1, v2) = (h1.view().status, h2.view().status);
        async move { v1.leader.filter(|l| v2.leader == Some(*l)) }
    })
    .await;
    // Clients: n1 now accepts only new-CA clients; n2 still the old CA's. Both servers keep
    // their old-CA certificates.
    let new_root = (new.read("root.pem"), new.read("root-key.pem"));
    let old_root = (old.read("root.pem"), old.read("root-key.pem"));
    let (leader_addr, leader_root) =
        if leader == n1.id { (&n1.rpc_addr, new_root.clone()) } else { (&n2.rpc_addr, old_root) };
    let c = KvClient::new(channel(leader_addr, old.read("ca.pem"), Some(leader_root)).await);
    eventually("a write on the leader", || {
        let mut c = c.clone();
        async move { set(&mut c, "rotated", "yes").await.ok() }
    })
    .await;
    // A linearizable read on n1 needs n1 <-> n2 both ways.
    let mut c1 = KvClient::new(channel(&n1.rpc_addr, old.read("ca.pem"), Some(new_root)).await);
    assert_eq!(get(&mut c1, "rotated").await.unwrap(), b"yes");
    n2.shutdown().await.unwrap();
    n1.shutdown().await.unwrap();
}
