//! When a snapshot is due: the entry count triggers one only once the log since the last
//! snapshot also holds a fair share of the state's bytes, so a large state is not rewritten
//! whole for every few small writes.

use protobuf::Message as _;
use raft::eraftpb::Entry;

use super::lone_leader::{call, lone_leader};
use super::Node;
use crate::config::Config;
use crate::log::entry_bytes;
use crate::persist::DurableState;
use crate::request::{Request, Response};

fn set(key: &str, len: usize) -> Request {
    Request::Set { key: key.into(), value: vec![b'v'; len], session: None }
}

/// Writes `request` and checks it was applied.
fn write(node: &mut Node, disk: &mut DurableState, id: u64, request: Request) {
    let reply = call(node, disk, id, request);
    assert!(matches!(reply.result, Ok(Response::Set { .. })), "{reply:?}");
}

fn config(every: u64) -> Config {
    let mut config = Config::new(1, 3);
    config.snapshot_threshold_entries = every;
    config.log_keep_entries = 0;
    config
}

/// With a state smaller than the log written, the entry count alone decides.
#[test]
fn a_small_state_is_snapshotted_every_threshold_entries() {
    let (mut node, mut disk) = lone_leader(config(10));
    let first = node.raw.store().snapshot_index();
    let mut id = 0;
    while node.raw.store().snapshot_index() == first {
        write(&mut node, &mut disk, id, set("k", 100));
        id += 1;
        assert!(id <= 10, "no snapshot after {id} entries");
    }
    let applied_since = node.raw.store().snapshot_index() - first;
    assert!(applied_since <= 10, "snapshot after {applied_since} entries");
}

/// A state of ~100 KB and small rewrites of one key: ten entries do not pay for rewriting the
/// whole state; the snapshot comes once the log since the last one holds a quarter of it.
#[test]
fn a_large_state_waits_for_log_bytes_in_proportion() {
    let mut c = config(10);
    c.snapshot_threshold_bytes = 1 << 30;
    c.max_in_memory_log_bytes = 1 << 30;
    let ratio = c.max_snapshot_bytes_per_log_byte;
    assert_eq!(ratio, 4, "the default this test describes");
    let (mut node, mut disk) = lone_leader(c);
    let mut id = 0;
    for k in 0..100 {
        write(&mut node, &mut disk, id, set(&format!("big{k}"), 1_000));
        id += 1;
    }
    // Start counting right after a snapshot.
    let mut last = node.raw.store().snapshot_index();
    while node.raw.store().snapshot_index() == last {
        write(&mut node, &mut disk, id, set("small", 10));
        id += 1;
    }
    last = node.raw.store().snapshot_index();
    let state_bytes = node.state().state_bytes();
    assert!(state_bytes > 100_000, "{state_bytes}");

    // The log written since `last` as the core counts it, measured before each write:
    // compaction removes it once the snapshot lands.
    let log_bytes = |disk: &DurableState| -> u64 {
        let since_last = disk.entries.iter().filter(|e| e.index > last);
        since_last.map(|e| entry_bytes(&Entry::parse_from_bytes(&e.bytes).unwrap())).sum()
    };
    let mut entries = 0u64;
    let mut log_before_last_write = 0;
    while node.raw.store().snapshot_index() == last {
        log_before_last_write = log_bytes(&disk);
        write(&mut node, &mut disk, id, set("small", 10));
        id += 1;
        entries += 1;
        assert!(entries < 100_000, "no snapshot at all");
    }
    assert!(entries > 10, "a snapshot of {state_bytes} bytes after only {entries} entries");
    // Not before the log since the last snapshot held a quarter of the state (the write that
    // triggered it adds one more entry of the same size).
    let entry_bytes = log_before_last_write / (entries - 1);
    assert!(
        (log_before_last_write + entry_bytes) * ratio >= state_bytes,
        "{entries} entries of {log_before_last_write} bytes paid for {state_bytes} bytes of snapshot"
    );
    // ... and not much after: the entry before the last did not pay yet.
    assert!(
        log_before_last_write * ratio < state_bytes + 2 * ratio * entry_bytes,
        "{entries} entries of {log_before_last_write} bytes before a snapshot of {state_bytes}"
    );
}
