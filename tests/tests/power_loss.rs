//! Power loss of the whole cluster: every acknowledged write survives.
//!
//! A node keeps its write-ahead log records in RocksDB's own buffer until Raft asks for a sync
//! (`manual_wal_flush`, see `shell/src/storage/disk.rs`), so `kill -9` loses exactly what a
//! power cut may lose: every write the node did not sync. Killing all three nodes at once
//! while clients write is then a cluster-wide power loss; if any node acknowledged (or voted
//! for) an entry before syncing it, acknowledged writes go missing here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mokv_client::ReadMode;
use mokv_tests::{eventually, read_all, Bins, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_wide_power_loss_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    cluster.leader().await;

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
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("p{w}/{i:06}");
                // Errors (the cluster is gone) are not acknowledgements: not checked.
                if client.set(&key, i.to_string().as_bytes()).await.is_ok() {
                    acked.push((key, i));
                    acked_total.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            acked
        }));
    }
    eventually("acknowledged writes before the power loss", || {
        let n = acked_total.load(Ordering::Relaxed);
        async move { (n >= 300).then_some(()) }
    })
    .await;

    // The power cut: every node at once, writes in flight.
    for node in &mut cluster.nodes {
        node.kill();
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("writer task"));
    }
    eprintln!("{} writes acknowledged before the power loss", acked.len());

    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.leader().await;
    let client = cluster.client();
    let stored = eventually("a linearizable read of everything after the restart", || {
        let mut client = client.clone();
        async move { read_all(&mut client, "p", ReadMode::Linearizable).await.ok() }
    })
    .await;
    let lost: Vec<&str> = acked
        .iter()
        .filter(|(key, i)| stored.get(key).map(Vec::as_slice) != Some(i.to_string().as_bytes()))
        .map(|(key, _)| key.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // And the cluster takes writes again.
    client.set("after", b"power-loss").await.expect("a write after the restart");
}
