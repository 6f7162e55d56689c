//! A graceful stop (SIGTERM) of the leader while long-lived streams are open on it: the other
//! nodes' Raft streams, a client's watch and a client's lease keep-alive. None of them ends on
//! its own; the stop must end each (the client streams with UNAVAILABLE "the node is shutting
//! down", which clients resume elsewhere on) and the server must drain without running into
//! its drain bound.

use std::time::Duration;

use mokv_proto::api::lease_client::LeaseClient;
use mokv_proto::api::watch_client::WatchClient;
use mokv_proto::api::{LeaseKeepAliveRequest, WatchRequest};
use mokv_tests::{Bins, Cluster, DEADLINE};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// The status a node's stop ends a client stream with (`status::shutting_down` in the shell).
const SHUTTING_DOWN: &str = "the node is shutting down";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_ends_open_streams_and_the_server_drains() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    let client = cluster.client();
    let lease = client.lease_grant(Duration::from_secs(30)).await.expect("lease grant");
    let leader = cluster.leader().await;
    let addr = cluster.nodes[leader].addr.clone();
    let channel = cluster.certs.channel(&addr, Some("root"));

    // A watch, open and live (its first answer came).
    let mut watch = WatchClient::new(channel.clone())
        .watch(WatchRequest { key: "w/".into(), prefix: true, ..WatchRequest::default() })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, watch.message()).await.expect("first answer");
    assert!(matches!(first, Ok(Some(_))), "the watch opened: {first:?}");

    // A keep-alive stream, answered once and left open (the test holds its request side).
    let (keep_tx, keep_rx) = mpsc::channel(1);
    keep_tx.send(LeaseKeepAliveRequest { id: lease.id }).await.unwrap();
    let mut keep = LeaseClient::new(channel)
        .keep_alive(ReceiverStream::new(keep_rx))
        .await
        .expect("keep-alive")
        .into_inner();
    let answer = tokio::time::timeout(DEADLINE, keep.message()).await.expect("keep-alive answer");
    assert!(matches!(answer, Ok(Some(ref a)) if a.id == lease.id), "kept alive: {answer:?}");

    cluster.nodes[leader].signal_term();

    let ended = tokio::time::timeout(DEADLINE, watch.message()).await.expect("the watch ended");
    match ended {
        Err(s) => assert_eq!((s.code(), s.message()), (Code::Unavailable, SHUTTING_DOWN)),
        other => panic!("the watch ended with {other:?}"),
    }
    let ended = tokio::time::timeout(DEADLINE, keep.message()).await.expect("keep-alive ended");
    match ended {
        Err(s) => assert_eq!((s.code(), s.message()), (Code::Unavailable, SHUTTING_DOWN)),
        other => panic!("the keep-alive ended with {other:?}"),
    }

    let status = cluster.nodes[leader].wait_exit(DEADLINE).await;
    assert!(status.success(), "the leader stopped cleanly: {status}");
    let node = &cluster.nodes[leader];
    assert!(node.output_contains("server drained"), "{}", node.log_tail(20));
    assert!(
        !node.output_contains("requests still open at the drain bound"),
        "{}",
        node.log_tail(20)
    );
    drop(keep_tx);
}
