//! Byte budgets on one single-node cluster: the in-memory log, the state quota and range
//! pages.

use super::lone_leader::{call, drain, lone_leader};
use super::Node;
use crate::config::Config;
use crate::error::{Error, QuotaExceeded, Unavailable};
use crate::kv::RangeQuery;
use crate::persist::DurableState;
use crate::request::{Consistency, Request, Response};

const MIB: usize = 1 << 20;

fn set(key: &str, len: usize) -> Request {
    Request::Set { key: key.into(), value: vec![b'v'; len], session: None }
}

fn disk_log_bytes(disk: &DurableState) -> usize {
    disk.entries.iter().map(|e| e.bytes.len()).sum()
}

/// The case: 10,000 writes of 1 MiB to one key (a 1 MiB data set, 10 GiB through the
/// log). The in-memory log stays under its byte budget after every write, whatever the entry
/// count thresholds say, the log on disk stays as small, and a restart finds the last value.
#[test]
fn max_log_bytes_in_memory_holds_for_10_000_writes_of_1_mib_to_one_key() {
    let budget = 64 * MIB as u64;
    let mut config = Config::new(1, 3);
    config.max_in_memory_log_bytes = budget;
    config.snapshot_threshold_entries = 1_000_000;
    config.log_keep_entries = 1_000_000;
    let (mut node, mut disk) = lone_leader(config.clone());
    let mut peak = 0;
    let mut peak_disk = 0;
    for i in 0..10_000u64 {
        let mut value = vec![b'v'; MIB];
        value[..8].copy_from_slice(&i.to_le_bytes());
        let request = Request::Set { key: "k".into(), value, session: None };
        let reply = call(&mut node, &mut disk, i, request);
        assert!(matches!(reply.result, Ok(Response::Set { .. })), "{reply:?}");
        peak = peak.max(node.raw.store().bytes());
        peak_disk = peak_disk.max(disk_log_bytes(&disk));
    }
    assert!(peak <= budget, "in-memory log peaked at {peak} bytes, budget {budget}");
    assert!(peak > budget / 2, "the budget, not another bound, kept the log small: {peak}");
    assert!(peak_disk as u64 <= budget, "log on disk peaked at {peak_disk} bytes");
    assert!(node.raw.store().snapshot_index() > 9_000, "snapshots taken as the log filled");

    let restarted = Node::new(config, disk).unwrap();
    let v = restarted.state().get("k").unwrap();
    assert_eq!(v.value()[..8], 9_999u64.to_le_bytes());
    assert_eq!(v.version(), 10_000);
}

/// Entries not applied yet count against `max_uncommitted_log_bytes`, not against the
/// in-memory log's budget (applied entries only): with a 1 MiB log budget and a 4 MiB
/// uncommitted limit, a leader whose disk has not acknowledged anything takes four writes of
/// 900 KiB, refuses the next ones as busy, and answers the four once they are durable.
#[test]
fn uncommitted_writes_are_bounded_by_their_own_limit_not_the_log_budget() {
    let mut config = Config::new(1, 3);
    config.max_in_memory_log_bytes = MIB as u64;
    config.max_uncommitted_log_bytes = 4 * MIB as u64;
    let (mut node, mut disk) = lone_leader(config);
    for id in 0..6 {
        node.handle_request(id, set(&format!("k{id}"), 900 << 10));
    }
    let mut refused = Vec::new();
    while let Some(reply) = node.poll_reply() {
        assert!(matches!(reply.result, Err(Error::Unavailable(Unavailable::Busy))), "{reply:?}");
        refused.push(reply.id);
    }
    assert_eq!(refused, [4, 5], "only writes past the uncommitted limit are refused");
    let mut answered: Vec<_> = drain(&mut node, &mut disk)
        .into_iter()
        .map(|r| {
            assert!(matches!(r.result, Ok(Response::Set { .. })), "{r:?}");
            r.id
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, [0, 1, 2, 3]);
    let bytes = node.raw.store().bytes();
    assert!(bytes <= MIB as u64, "applied, the log is trimmed to its budget: {bytes} bytes");
}

#[test]
fn snapshots_are_taken_by_applied_bytes() {
    let mut config = Config::new(1, 3);
    config.snapshot_threshold_bytes = 4 * MIB as u64;
    let (mut node, mut disk) = lone_leader(config);
    let first = node.raw.store().snapshot_index();
    for i in 0..3 {
        call(&mut node, &mut disk, i, set("k", MIB));
    }
    assert_eq!(node.raw.store().snapshot_index(), first, "3 MiB applied: no snapshot yet");
    call(&mut node, &mut disk, 3, set("k", MIB));
    let snapshot = node.raw.store().snapshot_index();
    assert_eq!(snapshot, node.state().applied_index(), "4 MiB applied: a snapshot");
    assert!(
        disk.snapshot.as_ref().is_some_and(|s| s.reference.len_bytes > MIB as u64),
        "the snapshot holds the value"
    );
}

/// Writes until the quota refuses one; a delete is still applied and makes room for it.
#[test]
fn the_state_quota_refuses_growth_until_a_delete_makes_room() {
    let mut config = Config::new(1, 3);
    config.quota_state_bytes = Some(10_000);
    let (mut node, mut disk) = lone_leader(config);
    let mut written = 0;
    let refused = loop {
        let reply = call(&mut node, &mut disk, written, set(&format!("k{written}"), 1_000));
        match reply.result {
            Ok(Response::Set { .. }) => written += 1,
            Err(e) => break e,
            Ok(other) => panic!("{other:?}"),
        }
        assert!(written < 100, "the quota never refused a write");
    };
    assert_eq!(written, 9);
    let state_bytes = node.state().state_bytes();
    assert!(state_bytes <= 10_000);
    assert!(
        matches!(refused, Error::QuotaExceeded(QuotaExceeded { quota_bytes: 10_000, .. })),
        "{refused:?}"
    );
    assert!(!refused.to_string().contains("k9"), "no key in the message: {refused}");
    assert!(node.state().get("k9").is_none());

    let reply =
        call(&mut node, &mut disk, 100, Request::Delete { key: "k0".into(), session: None });
    assert!(matches!(reply.result, Ok(Response::Delete { existed: true, .. })), "{reply:?}");
    assert!(node.state().state_bytes() < state_bytes);
    let reply = call(&mut node, &mut disk, 101, set("k9", 1_000));
    assert!(matches!(reply.result, Ok(Response::Set { .. })), "{reply:?}");
}

#[test]
fn range_pages_are_bounded_by_max_page_bytes() {
    let mut config = Config::new(1, 3);
    config.max_page_bytes = 3 * 1_000;
    let (mut node, mut disk) = lone_leader(config);
    for i in 0..10 {
        call(&mut node, &mut disk, i, set(&format!("k{i}"), 900));
    }
    let mut query = RangeQuery { limit: 100, ..RangeQuery::default() };
    let mut pages = Vec::new();
    for id in 100.. {
        let request =
            Request::Range { query: query.clone(), consistency: Consistency::Linearizable };
        let Ok(Response::Range(page)) = call(&mut node, &mut disk, id, request).result else {
            panic!("range failed");
        };
        pages.push(page.items.len());
        if page.next_page_token.is_empty() {
            break;
        }
        query.page_token = page.next_page_token;
    }
    assert_eq!(pages, vec![3, 3, 3, 1]);
}
