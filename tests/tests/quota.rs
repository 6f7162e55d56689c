//! The state quota end to end: a real `mokvd` with a small `--quota-state-bytes` refuses the
//! write that would take its data past the quota with RESOURCE_EXHAUSTED (one warning in its
//! log, the gauges on `/metrics`), and a delete still works and makes room for it.

use mokv_client::ClientError;
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{DeleteRequest, SetRequest};
use mokv_tests::{eventually, metric, Bins, Certs, Mokvd, NodeSpec};
use tonic::transport::Channel;
use tonic::Code;

const QUOTA_BYTES: u64 = 64 * 1024;
const VALUE_BYTES: usize = 4 * 1024;

async fn set(kv: &mut KvClient<Channel>, key: &str) -> Result<u64, tonic::Status> {
    let value = vec![b'v'; VALUE_BYTES];
    Ok(kv
        .set(SetRequest { key: key.into(), value, session: None, condition: None, lease: 0 })
        .await?
        .into_inner()
        .revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_quota_are_resource_exhausted_and_a_delete_makes_room() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = Bins::get();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1"], &["root"]);
    let spec = NodeSpec::node(&certs, &tmp.path().join("data"), "n1")
        .flag("--bootstrap")
        .with("--quota-state-bytes", QUOTA_BYTES.to_string())
        .with("--metrics-port", "0")
        .flag("--metrics-plain-http");
    let node = Mokvd::start(&bins.mokvd, spec);
    let metrics_port = node.metrics_port.expect("started with --metrics-port");
    let mut kv = certs.kv(&node.addr);
    eventually("the node takes a write", || {
        let mut kv = kv.clone();
        async move { set(&mut kv, "k0").await.ok() }
    })
    .await;

    // Fill up: every write is applied until one would pass the quota.
    let mut written = 1;
    let refused = loop {
        match set(&mut kv, &format!("k{written}")).await {
            Ok(_) => written += 1,
            Err(s) => break s,
        }
        assert!(written < 100, "no write was refused");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("state quota exceeded"), "{refused:?}");
    let full_key = format!("k{written}");
    assert!(!refused.message().contains(&full_key), "the message names no key: {refused:?}");
    // The operator sees it: one warning, and the gauges. The data (keys, values and 32 bytes
    // per key) fits the quota, and the refused key would not have.
    eventually("the refusal is logged", || async {
        node.output_contains("state quota reached").then_some(())
    })
    .await;
    let state_bytes =
        eventually("mokv_state_bytes", || metric(metrics_port, "mokv_state_bytes")).await as u64;
    let refused_bytes = (full_key.len() + VALUE_BYTES + 32) as u64;
    assert!(state_bytes <= QUOTA_BYTES && state_bytes + refused_bytes > QUOTA_BYTES);
    let written_bytes: u64 =
        (0..written).map(|i| (format!("k{i}").len() + VALUE_BYTES + 32) as u64).sum();
    assert_eq!(state_bytes, written_bytes);
    let quota = metric(metrics_port, "mokv_quota_state_bytes").await;
    assert_eq!(quota, Some(QUOTA_BYTES as f64));

    // The library reports it as a refusal with the code (it does not retry it).
    let client = certs.client(&[&node.addr]);
    let e = client.set(&full_key, &[b'v'; VALUE_BYTES]).await;
    assert!(matches!(e, Err(ClientError::Refused { code: Code::ResourceExhausted, .. })), "{e:?}");

    // A delete is still applied, and makes room for the write that was refused.
    let deleted = kv
        .delete(DeleteRequest { key: "k0".into(), session: None, condition: None })
        .await
        .unwrap();
    assert!(deleted.into_inner().ok);
    set(&mut kv, &full_key).await.unwrap();
    let e = set(&mut kv, "one-more").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "full again: {e:?}");
    assert_eq!(node.output_count("state quota reached"), 1, "at most one warning a minute");
}
