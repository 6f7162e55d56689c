//! End-to-end tests: real `mokvd` processes on ephemeral ports over mTLS, certificates from
//! `mokvd certs`, crashes by SIGKILL, waits by polling with deadlines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mokv_client::{ClientError, ReadMode};
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{DeleteRequest, GetRequest, RangeRequest, SetRequest};
use mokv_tests::{
    eventually, eventually_within, find_leader, original, read_all, Bins, Certs, Cluster, Mokvd,
    NodeSpec,
};
use tonic::Code;

/// Bound on electing a new leader after the old one died: 10 election ticks of 20 ms give a
/// randomized timeout of 200..400 ms; the rest is slack for a loaded 2-core CI machine.
const ELECTION_BOUND: Duration = Duration::from_secs(5);

async fn raw_set(
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
    value: Vec<u8>,
) -> Result<u64, tonic::Status> {
    let r = kv
        .set(SetRequest { key: key.into(), value, session: None, condition: None, lease: 0 })
        .await?;
    Ok(r.into_inner().revision)
}

async fn raw_get(
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
) -> Result<Vec<u8>, tonic::Status> {
    Ok(kv.get(GetRequest { key: key.into(), consistency: 0 }).await?.into_inner().value)
}

fn refused_code(r: Result<impl std::fmt::Debug, ClientError>) -> Code {
    match r {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A single bootstrapped node, ready to take writes.
async fn single_node(tmp: &std::path::Path) -> (Certs, Mokvd) {
    let bins = Bins::get();
    let certs = Certs::generate(&bins, &tmp.join("certs"), &["n1"], &["root", "nobody"]);
    let node = Mokvd::start(
        &bins.mokvd,
        NodeSpec::node(&certs, &tmp.join("data"), "n1").flag("--bootstrap"),
    );
    let mut kv = certs.kv(&node.addr);
    eventually("the single node takes a write", || {
        let mut kv = kv.clone();
        async move { raw_set(&mut kv, "ready", b"1".to_vec()).await.ok() }
    })
    .await;
    assert_eq!(raw_get(&mut kv, "ready").await.unwrap(), b"1");
    (certs, node)
}

/// Bootstrap + join; writes on the leader and on a follower; linearizable reads on every node
/// right after each write; Delete; List with keys and values; Range pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_read_linearizably_everywhere() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let leader_addr = cluster.nodes[leader].addr.clone();
    let follower_addr = cluster.nodes[follower].addr.clone();

    // GetServers lists the three members with their advertised addresses.
    let all = cluster.client();
    let members = all.members().await.unwrap();
    let mut listed: Vec<&str> = members.iter().map(|m| m.rpc_addr.as_str()).collect();
    listed.sort_unstable();
    let mut addrs = cluster.addrs();
    addrs.sort_unstable();
    assert_eq!(listed, addrs);
    assert_eq!(members.iter().filter(|m| m.is_leader).count(), 1);
    assert!(members.iter().all(|m| m.voter));

    // A raw write on a follower: UNAVAILABLE with the leader's address as a hint.
    let mut raw_follower = cluster.certs.kv(&follower_addr);
    let e = raw_set(&mut raw_follower, "k", b"x".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let hint = e.metadata().get(mokv_proto::LEADER_HINT_ADDR).expect("leader hint");
    assert_eq!(hint.to_str().unwrap(), leader_addr);

    // The library follows the hint: a client that knows only the follower can write.
    let mut via_follower = cluster.certs.client(&[&follower_addr]);
    let mut via_leader = cluster.certs.client(&[&leader_addr]);
    via_follower.set("k", b"from-follower").await.unwrap();
    let mut per_node: Vec<_> =
        cluster.nodes.iter().map(|n| cluster.certs.client(&[&n.addr])).collect();
    for (i, c) in per_node.iter_mut().enumerate() {
        let e = c.get("k", ReadMode::Linearizable).await.unwrap().expect("k exists");
        assert_eq!(e.value, b"from-follower", "node {i} is stale");
    }
    // Every node sees every write immediately after its acknowledgement: write through either
    // side, read on each single node with no wait in between.
    for round in 0..3 {
        for (i, c) in per_node.iter_mut().enumerate() {
            let v = format!("r{round}-n{i}");
            let writer = if (round + i) % 2 == 0 { &mut via_leader } else { &mut via_follower };
            let rev = writer.set("k", v.as_bytes()).await.unwrap();
            let e = c.get("k", ReadMode::Linearizable).await.unwrap().expect("k exists");
            assert_eq!(e.value, v.as_bytes(), "node {i} missed an acknowledged write");
            assert_eq!(e.mod_revision, rev);
        }
    }

    // Delete: true once, then false; the key is gone on every node.
    assert!(via_follower.delete("k").await.unwrap());
    assert!(!via_leader.delete("k").await.unwrap());
    for (i, c) in per_node.iter_mut().enumerate() {
        assert_eq!(c.get("k", ReadMode::Linearizable).await.unwrap(), None, "node {i}");
    }

    // List streams every key WITH its value, in key order, from a follower too.
    let mut model = BTreeMap::new();
    for (k, v) in [("b", "2"), ("a", "1"), ("p/3", "x3"), ("c/z", "zz")] {
        all.set(k, v.as_bytes()).await.unwrap();
        model.insert(k.to_owned(), v.as_bytes().to_vec());
    }
    for (i, p) in (0..7).map(|i| (i, format!("p/{i:02}"))) {
        all.set(&p, format!("v{i}").as_bytes()).await.unwrap();
        model.insert(p, format!("v{i}").into_bytes());
    }
    model.insert("ready-marker".into(), b"m".to_vec());
    all.set("ready-marker", b"m").await.unwrap();
    let mut stream = raw_follower.list(()).await.unwrap().into_inner();
    let mut listed = BTreeMap::new();
    let mut order = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        order.push(item.key.clone());
        listed.insert(item.key, item.value);
    }
    assert_eq!(listed, model);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "List is not in key order");

    // Range: prefix pages of 3 with tokens, on a follower.
    let expected: Vec<(String, Vec<u8>)> = model
        .iter()
        .filter(|(k, _)| k.starts_with("p/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(expected.len(), 8);
    let mut got = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let (entries, next) =
            per_node[follower].range("p/", 3, &token, false, ReadMode::Linearizable).await.unwrap();
        pages.push(entries.len());
        got.extend(entries.into_iter().map(|e| (e.key, e.value)));
        if next.is_empty() {
            break;
        }
        token = next;
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(pages, vec![3, 3, 2]);
    assert_eq!(got, expected);
    // keys_only pages carry keys without values.
    let (entries, _) = all.range("p/", 2, "", true, ReadMode::Linearizable).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["p/00", "p/01"]);
    assert!(entries.iter().all(|e| e.value.is_empty()));
}

/// kill -9 of the leader while four clients write: a new leader within the bound, no
/// acknowledged write lost, and the killed node restarts from its data dir and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    let old_leader = cluster.leader().await;

    const WRITERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client();
        let stop = stop.clone();
        let acked_total = acked_total.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0usize;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}/{i:06}");
                match client.set(&key, i.to_string().as_bytes()).await {
                    Ok(_) => {
                        acked.push((key, i));
                        acked_total.fetch_add(1, Ordering::Relaxed);
                    }
                    // Unavailable or indeterminate: not acknowledged, so not checked.
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            (acked, failed)
        }));
    }

    let acked_at = |n: usize| {
        let acked_total = acked_total.clone();
        move || {
            let ok = acked_total.load(Ordering::Relaxed) >= n;
            async move { ok.then_some(()) }
        }
    };
    eventually("writes before the crash", acked_at(100)).await;
    cluster.nodes[old_leader].kill();
    let killed_at = Instant::now();
    let before = acked_total.load(Ordering::Relaxed);

    // A new leader among the survivors, within the election bound.
    let live: Vec<(usize, String)> =
        (0..3).filter(|i| *i != old_leader).map(|i| (i, cluster.nodes[i].addr.clone())).collect();
    let certs = cluster.certs.clone();
    let new_leader = eventually_within("a new leader", ELECTION_BOUND, || {
        let live = live.clone();
        let certs = certs.clone();
        async move { find_leader(&certs, &live).await }
    })
    .await;
    let elected_in = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    // Writes resume.
    eventually("writes after the crash", acked_at(before + 100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (a, f) = t.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    eprintln!(
        "new leader after {elected_in:?}; {} acknowledged writes, {failed} failed",
        acked.len()
    );

    // Every acknowledged write is there (linearizable reads through the survivors).
    let mut client = cluster.client();
    let stored = read_all(&mut client, "w", ReadMode::Linearizable).await.unwrap();
    for (key, i) in &acked {
        assert_eq!(
            stored.get(key).map(Vec::as_slice),
            Some(i.to_string().as_bytes()),
            "{key} lost"
        );
    }

    // The killed node restarts from its data dir and catches up.
    client.set("last", b"after-the-crash").await.unwrap();
    cluster.nodes[old_leader].restart();
    let addr = cluster.nodes[old_leader].addr.clone();
    let mut on_restarted = cluster.certs.client(&[&addr]);
    eventually("the restarted node has the last write (serializable)", || {
        let c = cluster.certs.client(&[&addr]);
        async move {
            let e = c.get("last", ReadMode::Serializable).await.ok()??;
            (e.value == b"after-the-crash").then_some(())
        }
    })
    .await;
    // Applied in log order: everything acknowledged before `last` is there too, locally.
    let local = read_all(&mut on_restarted, "w", ReadMode::Serializable).await.unwrap();
    assert_eq!(local, stored, "the restarted node's state differs");
    // And it serves linearizable reads of new writes right away.
    client.set("last", b"newest").await.unwrap();
    let e = on_restarted.get("last", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!(e.value, b"newest");
}

/// A node that is down while more than snapshot-threshold entries are written catches up by
/// snapshot after its restart (the leader compacted its log past the node's last entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(Bins::get(), &[("--snapshot-threshold", "50")]).await;
    let leader = cluster.leader().await;
    let down = (leader + 1) % 3;
    let mut client = cluster.client();
    client.set("before", b"1").await.unwrap();
    cluster.nodes[down].kill();

    // 4 x 80 writes: far more than the threshold (50) and the kept log tail (50 entries).
    let mut tasks = Vec::new();
    for w in 0..4 {
        let c = cluster.client();
        tasks.push(tokio::spawn(async move {
            for i in 0..80u32 {
                let v = format!("{w}-{i}");
                c.set(&format!("s{w}/{i:03}"), v.as_bytes()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    client.delete("before").await.unwrap();
    let expected = read_all(&mut client, "", ReadMode::Linearizable).await.unwrap();
    assert_eq!(expected.len(), 320);

    let node = &mut cluster.nodes[down];
    // (A joiner already installs one when it is added: count.)
    let installed_before = node.output_count("snapshot installed");
    node.restart();
    let addr = node.addr.clone();
    let certs = cluster.certs.clone();
    let expected_ref = &expected;
    eventually("the restarted node has every write (serializable)", || {
        let mut c = certs.client(&[&addr]);
        async move {
            let local = read_all(&mut c, "", ReadMode::Serializable).await.ok()?;
            (&local == expected_ref).then_some(())
        }
    })
    .await;
    let node = &cluster.nodes[down];
    assert!(
        node.output_count("snapshot installed") > installed_before,
        "caught up without a snapshot:\n{}",
        node.log_tail(30)
    );
}

/// No client certificate, or one from another CA: refused. A node certificate is not a client
/// certificate for the peer service either way round: a client certificate may not call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = single_node(tmp.path()).await;
    let bins = Bins::get();

    let mut anon = KvClient::new(certs.channel(&node.addr, None));
    let e = raw_get(&mut anon, "ready").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = raw_set(&mut anon, "evil", b"1".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Another CA's client certificate, even with the right CN and trusting the right server.
    let other = Certs::generate(&bins, &tmp.path().join("other"), &["n1"], &["root"]);
    let foreign_id = (other.read("root.pem"), other.read("root-key.pem"));
    let mut foreign =
        KvClient::new(mokv_tests::channel(&node.addr, certs.read("ca.pem"), Some(foreign_id)));
    let e = raw_set(&mut foreign, "evil", b"1".to_vec()).await.unwrap_err();
    eprintln!("foreign certificate: {:?} {}", e.code(), e.message());
    assert!(raw_get(&mut foreign, "ready").await.is_err());
    // The library client with foreign files fails too (and does not panic).
    let lib = mokv_client::Client::connect(mokv_client::ClientConfig::new(
        vec![node.addr.clone()],
        mokv_client::TlsFiles { ca: certs.path("ca.pem"), ..other.tls("root") },
    ))
    .unwrap();
    assert!(lib.get("ready", ReadMode::Linearizable).await.is_err());

    // A client certificate on the peer service: PERMISSION_DENIED.
    let mut peer =
        mokv_proto::peer::peer_client::PeerClient::new(certs.channel(&node.addr, Some("root")));
    let chunk = mokv_proto::peer::SnapshotChunk {
        from: 99,
        to: node.raft_id,
        total_bytes: 1,
        offset: 0,
        data: vec![0],
        message: Vec::new(),
    };
    let e = peer.snapshot(tokio_stream::iter(vec![chunk])).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Nothing got written; proper clients are still served.
    let mut root = certs.kv(&node.addr);
    assert_eq!(raw_get(&mut root, "evil").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(raw_get(&mut root, "ready").await.unwrap(), b"1");
    // A valid certificate whose CN the default policy grants nothing: PERMISSION_DENIED.
    let mut nobody = KvClient::new(certs.channel(&node.addr, Some("nobody")));
    assert_eq!(raw_get(&mut nobody, "ready").await.unwrap_err().code(), Code::PermissionDenied);
    let e = raw_set(&mut nobody, "evil", b"1".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

/// A client generated from the original mökv proto text works unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_the_original_proto_works() {
    use original::kv_client::KvClient as OriginalKv;
    use original::{DeleteRequest, GetRequest, SetRequest};

    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = single_node(tmp.path()).await;
    let mut kv = OriginalKv::new(certs.channel(&node.addr, Some("root")));

    let r = kv.set(SetRequest { key: "k1".into(), value: b"v1".to_vec() }).await.unwrap();
    assert!(r.into_inner().ok);
    kv.set(SetRequest { key: "k2".into(), value: vec![0, 255, 7] }).await.unwrap();
    let g = kv.get(GetRequest { key: "k1".into() }).await.unwrap().into_inner();
    assert_eq!((g.key.as_str(), g.value.as_slice()), ("k1", &b"v1"[..]));
    let e = kv.get(GetRequest { key: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let mut stream = kv.list(()).await.unwrap().into_inner();
    let mut listed = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        listed.push((item.key, item.value));
    }
    assert_eq!(
        listed,
        vec![
            ("k1".to_owned(), b"v1".to_vec()),
            ("k2".to_owned(), vec![0, 255, 7]),
            ("ready".to_owned(), b"1".to_vec()),
        ]
    );

    assert!(kv.delete(DeleteRequest { key: "k1".into() }).await.unwrap().into_inner().ok);
    assert!(!kv.delete(DeleteRequest { key: "k1".into() }).await.unwrap().into_inner().ok);
    assert_eq!(kv.get(GetRequest { key: "k1".into() }).await.unwrap_err().code(), Code::NotFound);

    let servers = kv.get_servers(()).await.unwrap().into_inner().servers;
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].id, "n1");
    assert_eq!(servers[0].rpc_addr, node.addr);
    assert!(servers[0].is_leader);
}

/// Bad input is INVALID_ARGUMENT (never a transport error), a missing key NOT_FOUND, and the
/// node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = single_node(tmp.path()).await;
    let mut kv = certs.kv(&node.addr);
    let mut client = certs.client(&[&node.addr]);
    const MAX_KEY: usize = 4096;
    const MAX_VALUE: usize = 1 << 20;

    // Empty key.
    assert_eq!(
        raw_set(&mut kv, "", b"v".to_vec()).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(raw_get(&mut kv, "").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(refused_code(client.delete("").await), Code::InvalidArgument);
    assert_eq!(refused_code(client.set("", b"v").await), Code::InvalidArgument);

    // Keys: 4096 bytes are fine, 4097 are not; the error does not echo the key. (This is also
    // the library client's first successful write after refused ones: its session works.)
    let key_ok = "k".repeat(MAX_KEY);
    client.set(&key_ok, b"long key").await.unwrap();
    assert_eq!(
        client.get(&key_ok, ReadMode::Linearizable).await.unwrap().unwrap().value,
        b"long key"
    );
    let key_big = "q".repeat(MAX_KEY + 1);
    let e = raw_set(&mut kv, &key_big, b"v".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!e.message().contains("qqqq"), "the error echoes the key: {}", e.message());
    assert_eq!(raw_get(&mut kv, &key_big).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(refused_code(client.delete(&key_big).await), Code::InvalidArgument);

    // Values: 1 MiB is fine, 1 MiB + 1 is INVALID_ARGUMENT (not a message-size transport error).
    let value_ok = vec![b'v'; MAX_VALUE];
    client.set("big", &value_ok).await.unwrap();
    assert_eq!(client.get("big", ReadMode::Linearizable).await.unwrap().unwrap().value, value_ok);
    let e = raw_set(&mut kv, "too-big", vec![b'w'; MAX_VALUE + 1]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!e.message().contains("www"), "the error echoes the value");
    assert_eq!(
        refused_code(client.set("too-big", &vec![0u8; MAX_VALUE + 1]).await),
        Code::InvalidArgument
    );

    // Far over the limit, the request is refused by the gRPC decoder (its limit is about twice
    // max-value-bytes) with OUT_OF_RANGE before the core sees it: still an answer, not a
    // broken connection, and nothing is written. (DESIGN's table says INVALID_ARGUMENT.)
    let e = raw_set(&mut kv, "huge", vec![b'h'; 3 * MAX_VALUE]).await.unwrap_err();
    assert!(matches!(e.code(), Code::InvalidArgument | Code::OutOfRange), "{e:?}");

    // A bad page token.
    let r = kv
        .range(RangeRequest { page_token: "not a token".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::InvalidArgument, "{r:?}");

    // Missing keys.
    assert_eq!(raw_get(&mut kv, "missing").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.get("missing", ReadMode::Linearizable).await.unwrap(), None);
    let d = kv
        .delete(DeleteRequest { key: "missing".into(), session: None, condition: None })
        .await
        .unwrap();
    assert!(!d.into_inner().ok, "deleting a missing key is ok=false, not an error");

    // Still serving, with nothing of the refused writes applied.
    client.set("after", b"fine").await.unwrap();
    assert_eq!(raw_get(&mut kv, "after").await.unwrap(), b"fine");
    assert_eq!(raw_get(&mut kv, "too-big").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(raw_get(&mut kv, "huge").await.unwrap_err().code(), Code::NotFound);
    let all = read_all(&mut client, "", ReadMode::Linearizable).await.unwrap();
    assert_eq!(all.keys().map(String::len).collect::<Vec<_>>(), vec![5, 3, MAX_KEY, 5]);
}

/// `mokv` (the CLI) against `mokvd --dev`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_talks_to_a_dev_node() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let spec = NodeSpec {
        name: "dev".into(),
        data_dir: dir.clone(),
        args: vec![
            "--dev".into(),
            "--data-dir".into(),
            dir.clone().into(),
            "--log-level".into(),
            "warn".into(),
        ],
    };
    let node = Mokvd::start(&bins.mokvd, spec);
    let addr = node.addr.clone();
    let mokv = |args: &[&str]| {
        let out = std::process::Command::new(&bins.mokv)
            .args(["--endpoints", &addr, "--ca"])
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("root.pem"))
            .arg("--key")
            .arg(dir.join("root-key.pem"))
            .args(args)
            .env_remove("MOKV_ENDPOINTS")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The dev node prints how to reach it, with the files the CLI uses.
    eventually("the dev node's connection hints", || {
        let ok = node.output_contains("dev node ready") && node.output_contains("root-key.pem");
        async move { ok.then_some(()) }
    })
    .await;

    let first = eventually("the first CLI write", || {
        let r = mokv(&["set", "a", "1"]);
        async move { (r.0 == Some(0)).then_some(r) }
    })
    .await;
    assert!(first.1.starts_with("OK"), "{first:?}");
    assert_eq!(mokv(&["get", "a"]), (Some(0), "1\n".to_owned(), String::new()));
    let (code, out, _) = mokv(&["set", "b", "two words"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(mokv(&["list"]).1, "a\t1\nb\ttwo words\n");
    assert_eq!(mokv(&["list", "--keys-only", "--limit", "1", "--all"]).1, "a\nb\n");
    let (code, out, _) = mokv(&["members"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&addr) && out.contains("yes"), "{out}");
    assert_eq!(mokv(&["delete", "a"]).1, "deleted\n");
    let (code, _, err) = mokv(&["get", "a"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not found"), "{err}");
    // Through the library too, on the same files.
    let client = mokv_client::Client::connect(mokv_client::ClientConfig::new(
        vec![addr.clone()],
        mokv_client::TlsFiles::dev(&dir),
    ))
    .unwrap();
    assert_eq!(client.get("b", ReadMode::Linearizable).await.unwrap().unwrap().value, b"two words");
}
