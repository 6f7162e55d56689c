//! Registered write sessions end to end (issue 14): a real `mokvd` binds each session to the
//! certificate name that registered it. Two client certificates naming the same client id do
//! not interfere: the other identity's write is FAILED_PRECONDITION and not applied, the
//! owner's retry still gets its first answer; a session never registered is refused the same
//! way; the library registers on first use; writes without a session work as before.

use std::path::Path;

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{GetRequest, RegisterSessionRequest, Session, SetRequest};
use mokv_tests::{eventually, Bins, Certs, Mokvd, NodeSpec};
use tonic::transport::Channel;
use tonic::Code;

async fn set(
    kv: &mut KvClient<Channel>,
    key: &str,
    value: &str,
    session: Option<Session>,
) -> Result<u64, tonic::Status> {
    let req =
        SetRequest { key: key.into(), value: value.into(), session, condition: None, lease: 0 };
    Ok(kv.set(req).await?.into_inner().revision)
}

async fn get(kv: &mut KvClient<Channel>, key: &str) -> Vec<u8> {
    let req = GetRequest { key: key.into(), consistency: 0 };
    kv.get(req).await.expect("get").into_inner().value
}

async fn register(kv: &mut KvClient<Channel>) -> u64 {
    kv.register_session(RegisterSessionRequest {}).await.expect("register").into_inner().client_id
}

fn session(client_id: u64, seq: u64) -> Option<Session> {
    Some(Session { client_id, seq, first_unacked_seq: seq })
}

/// One node whose policy lets `alice` and `bob` do everything.
async fn node(tmp: &Path) -> (Certs, Mokvd) {
    let bins = Bins::get();
    let certs = Certs::generate(&bins, &tmp.join("certs"), &["n1"], &["alice", "bob"]);
    let policy = tmp.join("policy.csv");
    std::fs::write(&policy, "p, alice, *, *\np, bob, *, *\n").unwrap();
    let spec = NodeSpec::node(&certs, &tmp.join("data"), "n1")
        .flag("--bootstrap")
        .with("--acl-policy-file", &policy);
    let node = Mokvd::start(&bins.mokvd, spec);
    let mut kv = KvClient::new(certs.channel(&node.addr, Some("alice")));
    eventually("the node takes a write", || {
        let mut kv = kv.clone();
        async move { set(&mut kv, "ready", "1", None).await.ok() }
    })
    .await;
    assert_eq!(get(&mut kv, "ready").await, b"1");
    (certs, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_certificates_with_the_same_client_id_do_not_interfere() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = node(tmp.path()).await;
    let mut alice = KvClient::new(certs.channel(&node.addr, Some("alice")));
    let mut bob = KvClient::new(certs.channel(&node.addr, Some("bob")));

    let id = register(&mut alice).await;
    let first = set(&mut alice, "k", "alice", session(id, 1)).await.expect("alice's write");

    // Bob names alice's session id and seq: not alice's answer, not applied.
    let refused = set(&mut bob, "k", "bob", session(id, 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("register a new session"), "{refused:?}");
    let refused = set(&mut bob, "k", "bob", session(id, 2)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(get(&mut alice, "k").await, b"alice");

    // Alice's retry still gets its first answer: bob moved nothing in her session.
    assert_eq!(set(&mut alice, "k", "alice", session(id, 1)).await.unwrap(), first);
    let second = set(&mut alice, "k", "alice-2", session(id, 2)).await.unwrap();
    assert!(second > first);

    // Bob's own session works, under its own id.
    let bob_id = register(&mut bob).await;
    assert_ne!(bob_id, id);
    set(&mut bob, "j", "bob", session(bob_id, 1)).await.expect("bob's write");
    assert_eq!(get(&mut bob, "j").await, b"bob");

    // A session never registered, even as its first write: refused, not applied.
    let refused = set(&mut bob, "never", "x", session(id + 1_000_000, 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let missing = bob
        .get(GetRequest { key: "never".into(), consistency: 0 })
        .await
        .expect_err("never written");
    assert_eq!(missing.code(), Code::NotFound);

    // The library registers on first use, one session per client, each its own.
    let a = mokv_client::Client::connect(mokv_client::ClientConfig::new(
        vec![node.addr.clone()],
        certs.tls("alice"),
    ))
    .unwrap();
    let b = mokv_client::Client::connect(mokv_client::ClientConfig::new(
        vec![node.addr.clone()],
        certs.tls("bob"),
    ))
    .unwrap();
    for i in 0..5 {
        a.set(&format!("lib/a{i}"), b"a").await.expect("library write as alice");
        b.set(&format!("lib/b{i}"), b"b").await.expect("library write as bob");
    }
    assert_eq!(get(&mut alice, "lib/b4").await, b"b");
}
