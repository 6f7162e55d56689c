//! Memory per key of a node's state, and what taking a snapshot costs the task that drives
//! the node. Loads KEYS keys (default 1,000,000; 16-byte keys, VALUE_BYTES-byte values, default
//! 256) into a single-voter node through its public API, in batches of 1,000 writes, with the
//! node's default snapshot settings, then reports:
//! - the growth of the process RSS per key (every byte the node holds: the data, the log kept
//!   in memory and any retained snapshot; the workspace forbids `unsafe`, so no counting
//!   allocator), and the state's own `state_bytes` per key for comparison;
//! - the time of the slowest batch (the one that took a snapshot on the driver, if any) and the
//!   median batch;
//! - the time of one `StateMachine::clone()` (what a snapshot job costs the driver).
//!
//! Run: `scripts/bench-state-memory.sh` (release build).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use mokv_core::persist::DurableState;
use mokv_core::{Config, MemberInfo, Node, Request};

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn drain(node: &mut Node) {
    loop {
        let mut last = None;
        while let Some(b) = node.poll_persist() {
            last = Some(b.id);
        }
        while node.poll_transmit().is_some() {}
        while node.poll_reply().is_some() {}
        while node.poll_event().is_some() {}
        // Snapshot jobs are encoded at once (a shell does it off the driver).
        let mut jobs = false;
        while let Some(job) = node.poll_snapshot_job() {
            jobs = true;
            node.handle_snapshot_encoded(job.index(), job.encode());
        }
        match last {
            Some(id) => node.handle_persisted(id),
            None if jobs => {}
            None => return,
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let keys = env("KEYS", 1_000_000);
    let value_bytes = env("VALUE_BYTES", 256);
    let me = MemberInfo {
        id: 1,
        name: "bench".into(),
        peer_addr: String::new(),
        rpc_addr: String::new(),
        auto_promote: true,
    };
    let config = Config::new(1, 1);
    let mut durable = DurableState::default();
    durable.apply(&Node::bootstrap(&me, &config, NonZeroU64::new(1).unwrap()));
    let mut node = Node::new(config, durable).expect("node");
    drain(&mut node);
    let rss_before = rss_bytes().unwrap_or(0);
    let mut id = 0;
    let mut batch_times: Vec<(Duration, u64)> = Vec::new();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let t = Instant::now();
        let taken_before = node.stats().snapshots_taken;
        for i in chunk {
            id += 1;
            let key = format!("key-{i:011}"); // 16 bytes
            node.handle_request(
                id,
                Request::Set { key, value: vec![7; value_bytes], session: None },
            );
        }
        drain(&mut node);
        batch_times.push((t.elapsed(), node.stats().snapshots_taken - taken_before));
    }
    assert_eq!(node.state().len(), keys);
    let rss = rss_bytes().unwrap_or(0);
    let per_key = |b: u64| b as f64 / keys as f64;
    println!("keys {keys}, value_bytes {value_bytes}");
    println!("state_bytes/key {:.1}", per_key(node.state().state_bytes()));
    println!(
        "rss {} MiB, rss growth while loading/key {:.1}",
        rss >> 20,
        per_key(rss.saturating_sub(rss_before))
    );
    let stats = node.stats();
    println!("snapshots taken {}", stats.snapshots_taken);
    let mut sorted: Vec<Duration> = batch_times.iter().map(|(d, _)| *d).collect();
    sorted.sort();
    let with_snapshot = batch_times.iter().filter(|(_, n)| *n > 0).map(|(d, _)| *d).max();
    println!(
        "batch of 1000 writes: median {:.2} ms, max {:.2} ms, slowest with a snapshot {}",
        sorted[sorted.len() / 2].as_secs_f64() * 1e3,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        with_snapshot.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3)),
    );
    let t = Instant::now();
    let copy = node.state().clone();
    let clone_time = t.elapsed();
    let rss_with_clone = rss_bytes().unwrap_or(0);
    println!(
        "state clone: {:.3} ms, +{} MiB rss",
        clone_time.as_secs_f64() * 1e3,
        rss_with_clone.saturating_sub(rss) >> 20
    );
    drop(copy);
}
