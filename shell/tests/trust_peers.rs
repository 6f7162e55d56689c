//! Peer authentication over real mTLS: a caller of the Peer service must be the member each
//! message claims to come from. A client certificate, a node certificate of a non-member
//! name, and a member's certificate speaking as another member (or as an unknown id) are each
//! refused with PERMISSION_DENIED, on the Raft and the Snapshot stream alike; a forged
//! higher-term snapshot (a real core's snapshot, re-addressed) from a non-leader identity does
//! not replace a follower's state.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mokv_core::persist::DurableState;
use mokv_core::{Config, MemberInfo, Node, Request, Role, SnapshotRef};
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{GetRequest, SetRequest};
use mokv_proto::peer::peer_client::PeerClient;
use mokv_proto::peer::{RaftBatch, SnapshotChunk};
use mokv_shell::config::{NodeConfig, Settings};
use mokv_shell::RunningNode;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Message, MessageType, Snapshot};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

mod common;
use common::{capture_logs, logged};

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
    fn channel(&self, addr: &str, who: &str) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .identity(Identity::from_pem(
                self.read(&format!("{who}.pem")),
                self.read(&format!("{who}-key.pem")),
            ));
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_lazy()
    }
    fn peer(&self, addr: &str, who: &str) -> PeerClient<Channel> {
        PeerClient::new(self.channel(addr, who))
    }
    fn kv(&self, addr: &str) -> KvClient<Channel> {
        KvClient::new(self.channel(addr, "root"))
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
        cluster_key: Some("trust-peers-cluster-key".to_owned()),
        gossip_probe_ms: Some(200),
        gossip_suspect_ms: Some(1_000),
        ..Settings::default()
    }
}

async fn start(s: Settings) -> RunningNode {
    capture_logs();
    mokv_shell::install_crypto_provider();
    let cfg = NodeConfig::resolve(s).unwrap();
    mokv_shell::start(&cfg).await.unwrap()
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three members n1 (bootstrapped: the leader), n2, n3 joined through gossip, and certificates
/// for them, for `mallory` (a node certificate of a name that is no member) and for `root`
/// (a client certificate).
struct Three {
    _tmp: tempfile::TempDir,
    certs: Certs,
    nodes: Vec<RunningNode>,
}

impl Three {
    async fn start() -> Three {
        let tmp = tempfile::tempdir().unwrap();
        let certs = Certs::new(&tmp.path().join("certs"), &["n1", "n2", "n3", "mallory"]);
        let data = tmp.path();
        let n1 = start(Settings { bootstrap: Some(true), ..settings(&certs, data, "n1") }).await;
        let join = Some(vec![n1.gossip_addr.clone()]);
        let n2 = start(Settings { start_join_addrs: join.clone(), ..settings(&certs, data, "n2") })
            .await;
        let n3 = start(Settings { start_join_addrs: join, ..settings(&certs, data, "n3") }).await;
        let h = n1.handle();
        eventually("three voters with n1 leading", || {
            let v = h.view();
            let ok = v.status.conf.voters.len() == 3 && v.status.leader == Some(n1.id);
            async move { ok.then_some(()) }
        })
        .await;
        Three { _tmp: tmp, certs, nodes: vec![n1, n2, n3] }
    }

    /// Writes `key` through the leader and waits until node `i` has applied it.
    async fn write_and_await(&self, i: usize, key: &str, value: &str) {
        let mut kv = self.certs.kv(&self.nodes[0].rpc_addr);
        let set = SetRequest {
            key: key.into(),
            value: value.into(),
            session: None,
            condition: None,
            lease: 0,
        };
        kv.set(set).await.unwrap();
        eventually("the write on the follower", || async move {
            (self.serializable_get(i, key).await.as_deref() == Some(value.as_bytes())).then_some(())
        })
        .await;
    }

    /// Node `i`'s own copy of `key` (a serializable read: no leader involved).
    async fn serializable_get(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        let mut kv = self.certs.kv(&self.nodes[i].rpc_addr);
        let get = GetRequest { key: key.into(), consistency: 1 };
        kv.get(get).await.ok().map(|r| r.into_inner().value)
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await.unwrap();
        }
    }
}

/// A raft message `from` → `to` that a follower ignores when it gets that far (a stray
/// heartbeat response in `term`).
fn harmless(from: u64, to: u64, term: u64) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeatResponse);
    m.from = from;
    m.to = to;
    m.term = term;
    m.write_to_bytes().unwrap()
}

/// One Raft stream of one batch, as `who`.
async fn raft_as(
    certs: &Certs,
    addr: &str,
    who: &str,
    batch: RaftBatch,
) -> Result<(), tonic::Status> {
    certs.peer(addr, who).raft(tokio_stream::iter(vec![batch])).await.map(|_| ())
}

/// One Snapshot stream carrying `message` and `file` (in two chunks), as `who`; whether the
/// core applied it.
async fn snapshot_as(
    certs: &Certs,
    addr: &str,
    who: &str,
    from: u64,
    to: u64,
    (message, file): (&[u8], &[u8]),
) -> Result<bool, tonic::Status> {
    let total_bytes = file.len() as u64;
    let half = file.len() / 2;
    let chunks = vec![
        SnapshotChunk {
            from,
            to,
            total_bytes,
            offset: 0,
            data: file[..half].to_vec(),
            message: message.to_vec(),
        },
        SnapshotChunk {
            from,
            to,
            total_bytes,
            offset: half as u64,
            data: file[half..].to_vec(),
            message: Vec::new(),
        },
    ];
    let ack = certs.peer(addr, who).snapshot(tokio_stream::iter(chunks)).await?;
    Ok(ack.into_inner().applied)
}

fn denied(what: &str, r: Result<impl std::fmt::Debug, tonic::Status>) {
    match r {
        Err(s) if s.code() == Code::PermissionDenied => {}
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_streams_admit_only_the_member_each_message_claims_to_be() {
    let c = Three::start().await;
    let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let (addr, to) = (n2.rpc_addr.as_str(), n2.id);
    let term = n2.handle().view().status.term;
    let batch = |from: u64, inner_from: u64| RaftBatch {
        from,
        to,
        messages: vec![harmless(inner_from, to, term)],
    };

    // The member itself, as itself: admitted (the stream ends normally).
    raft_as(&c.certs, addr, "n3", batch(n3.id, n3.id)).await.unwrap();

    // A client certificate.
    denied("a client certificate", raft_as(&c.certs, addr, "root", batch(n3.id, n3.id)).await);
    // A node certificate of a name that is no member, as an id nobody knows and as a member.
    denied(
        "a non-member node, unknown id",
        raft_as(&c.certs, addr, "mallory", batch(777, 777)).await,
    );
    denied(
        "a non-member node as n1",
        raft_as(&c.certs, addr, "mallory", batch(n1.id, n1.id)).await,
    );
    // A member as an id nobody knows.
    denied("n3 as an unknown id", raft_as(&c.certs, addr, "n3", batch(4242, 4242)).await);
    // A member whose batch is its own but whose messages claim to come from the leader.
    denied("n3 with n1's messages", raft_as(&c.certs, addr, "n3", batch(n3.id, n1.id)).await);
    // The Snapshot stream checks the same, before and after reassembly.
    let snap = harmless(n1.id, to, term);
    let snap = (&snap[..], &b"file"[..]);
    denied("mallory's snapshot", snapshot_as(&c.certs, addr, "mallory", n1.id, to, snap).await);
    denied("n3 snapshot as n1", snapshot_as(&c.certs, addr, "n3", n1.id, to, snap).await);
    denied("n3 snapshot, n1 inside", snapshot_as(&c.certs, addr, "n3", n3.id, to, snap).await);

    // Observed on the node: the refusal is logged (rate-limited; the first one at least).
    assert!(logged(&["peer stream refused", "caller"]) >= 1);
    // The cluster is unharmed: a write reaches the follower that was attacked.
    c.write_and_await(1, "after", "ok").await;
    c.shutdown().await;
}

/// A snapshot a real core (a one-node cluster whose only member claims `leader`'s id and name)
/// took after `writes` writes of `key` = `value`, as the Raft message that would install it on
/// node `to` in `term`, the snapshot file it names, and the snapshot's log index.
fn forged_snapshot(
    leader: &MemberInfo,
    to: u64,
    term: u64,
    writes: u64,
) -> (Vec<u8>, Vec<u8>, u64) {
    let mut config = Config::new(leader.id, 7);
    config.snapshot_threshold_entries = writes;
    let mut disk = DurableState::default();
    disk.apply(&Node::bootstrap(leader, &config, NonZeroU64::MIN));
    let mut node = Node::new(config, disk.clone()).unwrap();
    let mut drain = |node: &mut Node| loop {
        let mut progressed = false;
        while let Some(b) = node.poll_persist() {
            disk.apply(&b);
            node.handle_persisted(b.id);
            progressed = true;
        }
        while node.poll_transmit().is_some() || node.poll_reply().is_some() {
            progressed = true;
        }
        while node.poll_event().is_some() {
            progressed = true;
        }
        while let Some(job) = node.poll_snapshot_job() {
            node.handle_snapshot_durable(job.into_image().reference());
            progressed = true;
        }
        if !progressed {
            break;
        }
    };
    drain(&mut node);
    assert_eq!(node.status().role, Role::Leader, "a lone voter leads at once");
    for i in 0..writes + 1 {
        let set = Request::Set { key: "k".into(), value: b"forged".to_vec(), session: None };
        node.handle_request(i, set);
        drain(&mut node);
    }
    let stored = disk.snapshot.expect("the forger took a snapshot");
    let (index, image_term) = (stored.image.index, stored.image.term);
    let file = stored.image.encode();
    assert_eq!(SnapshotRef::of_bytes(index, image_term, &file), stored.reference);
    assert!(index > writes, "the snapshot covers the writes");
    let mut snap = Snapshot::default();
    snap.data = stored.reference.encode().into();
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = image_term;
    meta.set_conf_state(ConfState { voters: vec![leader.id, to], ..ConfState::default() });
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = leader.id;
    m.to = to;
    m.term = term;
    m.set_snapshot(snap);
    (m.write_to_bytes().unwrap(), file, index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_higher_term_snapshot_does_not_replace_a_followers_state() {
    let c = Three::start().await;
    let [n1, n2] = [&c.nodes[0], &c.nodes[1]];
    c.write_and_await(1, "k", "real").await;
    let before = n2.handle().view().status;
    let leader = MemberInfo {
        id: n1.id,
        name: "n1".into(),
        peer_addr: n1.rpc_addr.clone(),
        rpc_addr: n1.rpc_addr.clone(),
        auto_promote: true,
    };
    // Ahead of the follower in both term and log: raft-rs would install it.
    let (forged, file, index) = forged_snapshot(&leader, n2.id, before.term + 10, 200);
    assert!(index > before.commit_index, "{index} vs {}", before.commit_index);

    // From a member that is not the leader, claiming to be it; from a non-member node.
    for who in ["n3", "mallory"] {
        let r = snapshot_as(&c.certs, &n2.rpc_addr, who, n1.id, n2.id, (&forged, &file)).await;
        denied(who, r);
    }
    // The follower's state is intact: its own copy still holds the real value, its term did
    // not move, and replication from the real leader goes on.
    assert_eq!(c.serializable_get(1, "k").await.as_deref(), Some(&b"real"[..]));
    assert_eq!(n2.handle().view().status.term, before.term);
    c.write_and_await(1, "k", "real-2").await;
    c.shutdown().await;
}
