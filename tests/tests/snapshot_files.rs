//! Snapshots as files, end to end with real `mokvd` processes: a snapshot is written to
//! `<data-dir>/raft/snapshots/` (temporary file, sync, rename), streamed chunk by chunk to a
//! node that needs it, and read back at start-up; a kill -9 while one is written or received
//! leaves a node that restarts and serves its data.
//!
//! The limits are lowered by settings so that the same code paths run at a test-friendly size:
//! `--snapshot-threshold 32` (a snapshot every 32 applied entries) and 96 values of 128 KiB, so
//! that a snapshot file of the ~12 MiB state spans a dozen 1 MiB transfer chunks and takes long
//! enough to write and to send for the test to catch it under way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mokv_client::ReadMode;
use mokv_tests::{eventually, read_all, Bins, Cluster, Mokvd, DEADLINE};

const VALUE_BYTES: usize = 128 << 10;
const KEYS: u32 = 96;
const THRESHOLD: &str = "32";

fn snapshot_dir(node: &Mokvd) -> PathBuf {
    node.spec.data_dir.join("raft").join("snapshots")
}

/// The file names in the node's snapshot directory (none if it does not exist yet).
fn snapshot_files(node: &Mokvd) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(snapshot_dir(node)) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    names
}

fn value(key: u32, round: u32) -> Vec<u8> {
    let mut v = vec![(key % 251) as u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(u64::from(key) << 32 | u64::from(round)).to_le_bytes());
    v
}

/// Writes keys `k/000`.. (`KEYS` of them, 4 writers) with `round`'s values.
async fn load(cluster: &Cluster, round: u32) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let c = cluster.client();
        tasks.push(tokio::spawn(async move {
            for key in (w..KEYS).step_by(4) {
                c.set(&format!("k/{key:03}"), &value(key, round)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Polls (every millisecond, up to the deadline) until a file of `node`'s snapshot directory
/// ends with `suffix`, then kills the node at once. Returns the file's name.
async fn kill_when_file_appears(node: &mut Mokvd, suffix: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(name) = snapshot_files(node).into_iter().find(|n| n.ends_with(suffix)) {
            node.kill();
            return name;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no {suffix} file appeared in {:?}:\n{}",
            snapshot_dir(node),
            node.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until `node` holds exactly `expected` (its own copy: a serializable read).
async fn serves(cluster: &Cluster, node: usize, expected: &BTreeMap<String, Vec<u8>>) {
    let addr = cluster.nodes[node].addr.clone();
    let certs = cluster.certs.clone();
    eventually("the node holds every key", || {
        let mut c = certs.client(&[&addr]);
        async move {
            let local = read_all(&mut c, "k/", ReadMode::Serializable).await.ok()?;
            (&local == expected).then_some(())
        }
    })
    .await;
}

/// Waits until the node's snapshot directory holds one snapshot file and nothing temporary.
async fn one_clean_snapshot_file(node: &Mokvd) {
    eventually("one snapshot file and no temporary one", || {
        let files = snapshot_files(node);
        let snaps = files.iter().filter(|n| n.ends_with(".snap")).count();
        let tmps = files.iter().filter(|n| n.ends_with(".tmp")).count();
        async move { (snaps == 1 && tmps == 0).then_some(()) }
    })
    .await;
}

/// A follower wiped after compaction (new raft id, empty data dir) needs the leader's snapshot:
/// it is killed -9 while the file is being received, restarts, gets the snapshot streamed
/// again and serves every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_by_a_streamed_snapshot_even_when_killed_while_receiving() {
    let mut cluster = Cluster::start(Bins::get(), &[("--snapshot-threshold", THRESHOLD)]).await;
    load(&cluster, 1).await;
    let mut client = cluster.client();
    let expected = read_all(&mut client, "k/", ReadMode::Linearizable).await.unwrap();
    assert_eq!(expected.len(), KEYS as usize);
    let leader = cluster.leader().await;
    assert!(
        snapshot_files(&cluster.nodes[leader]).iter().any(|n| n.ends_with(".snap")),
        "the leader wrote a snapshot file"
    );

    let victim = (leader + 1) % 3;
    cluster.nodes[victim].wipe_and_start();
    let partial = kill_when_file_appears(&mut cluster.nodes[victim], ".snap.recv.tmp").await;
    eprintln!("killed while receiving {partial}");
    cluster.nodes[victim].restart();
    serves(&cluster, victim, &expected).await;
    let node = &cluster.nodes[victim];
    assert!(node.output_contains("snapshot installed"), "{}", node.log_tail(30));
    one_clean_snapshot_file(node).await;

    // The installed snapshot is what it restarts from.
    cluster.nodes[victim].restart();
    serves(&cluster, victim, &expected).await;
}

/// A follower killed -9 while it writes a snapshot file of its own restarts from its older
/// snapshot and log and serves every key; no temporary file stays (start-up removes torn
/// ones: `storage::disk` tests check that on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_writing_a_snapshot_file_restarts_with_its_data() {
    let mut cluster = Cluster::start(Bins::get(), &[("--snapshot-threshold", THRESHOLD)]).await;
    load(&cluster, 1).await;
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;

    // Rewrites keep snapshots coming while the test watches the victim's directory.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (cluster.client(), stop.clone());
        tokio::spawn(async move {
            let mut round = 2;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for key in 0..KEYS {
                    let _ = c.set(&format!("k/{key:03}"), &value(key, round)).await;
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
                round += 1;
            }
        })
    };
    let torn = kill_when_file_appears(&mut cluster.nodes[victim], ".snap.tmp").await;
    eprintln!("killed while writing {torn}");
    assert!(!torn.ends_with(".recv.tmp"), "{torn}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let mut client = cluster.client();
    let expected = read_all(&mut client, "k/", ReadMode::Linearizable).await.unwrap();

    cluster.nodes[victim].restart();
    serves(&cluster, victim, &expected).await;
    one_clean_snapshot_file(&cluster.nodes[victim]).await;
}
