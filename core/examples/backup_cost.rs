//! What a backup costs the node: the part on the driver (serving `Request::Backup`: the read
//! round and one clone of the key map) and the part off it (encoding the copy into 1 MiB
//! chunks). Run: `scripts/bench-backup.sh` (release build; KEYS, VALUE_BYTES, RUNS settable).

use std::num::NonZeroU64;
use std::time::Instant;

use mokv_core::persist::DurableState;
use mokv_core::{Config, MemberInfo, Node, Request, Response};

fn drain(node: &mut Node) -> Vec<mokv_core::Reply> {
    let mut replies = Vec::new();
    loop {
        let mut last = None;
        while let Some(b) = node.poll_persist() {
            last = Some(b.id);
        }
        while node.poll_transmit().is_some() {}
        while let Some(r) = node.poll_reply() {
            replies.push(r);
        }
        while node.poll_event().is_some() {}
        // Snapshot jobs are encoded at once (a shell does it off the driver).
        let mut jobs = false;
        while let Some(job) = node.poll_snapshot_job() {
            jobs = true;
            node.handle_snapshot_durable(job.into_image().reference());
        }
        match last {
            Some(id) => node.handle_persisted(id),
            None if jobs => {}
            None => return replies,
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let keys = env("KEYS", 100_000);
    let value_bytes = env("VALUE_BYTES", 256);
    let runs = env("RUNS", 5);
    let me = MemberInfo {
        id: 1,
        name: "bench".into(),
        peer_addr: String::new(),
        rpc_addr: String::new(),
        auto_promote: true,
    };
    let mut config = Config::new(1, 1);
    // No snapshot while loading: only the backup is measured.
    config.snapshot_threshold_entries = u64::MAX / 2;
    config.snapshot_threshold_bytes = u64::MAX / 2;
    let mut durable = DurableState::default();
    durable.apply(&Node::bootstrap(&me, &config, NonZeroU64::new(1).unwrap()));
    let mut node = Node::new(config, durable).expect("node");
    drain(&mut node);
    let mut id = 0;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        for i in chunk {
            id += 1;
            let key = format!("key-{i:011}"); // 16 bytes
            node.handle_request(
                id,
                Request::Set { key, value: vec![7; value_bytes], session: None },
            );
        }
        drain(&mut node);
    }
    assert_eq!(node.state().len(), keys);
    println!("keys {keys}, value_bytes {value_bytes}, state_bytes {}", node.state().state_bytes());
    for run in 0..runs {
        id += 1;
        node.handle_request(id, Request::Backup);
        let t = Instant::now();
        let replies = drain(&mut node);
        let on_driver = t.elapsed();
        let Some(Ok(Response::Backup(source))) = replies.into_iter().map(|r| r.result).next()
        else {
            panic!("no backup answer");
        };
        let t = Instant::now();
        let (mut chunks, mut bytes) = (0usize, 0usize);
        for c in source.encoder(1 << 20) {
            chunks += 1;
            bytes += c.len();
        }
        let encode = t.elapsed();
        println!(
            "run {run}: on the driver (read round + clone) {:.1} ms, encode off the driver {:.1} ms, \
             {chunks} chunks, {bytes} bytes",
            on_driver.as_secs_f64() * 1e3,
            encode.as_secs_f64() * 1e3,
        );
    }
}
