//! The watch history across a restart: the replayed log tail refills it, and a tail longer
//! than the history's revision window refills only that window.

use super::lone_leader::{call, lone_leader};
use super::Node;
use crate::config::Config;
use crate::request::{Request, Response};
use crate::watch::{HistoryLimits, WatchEvent};

/// A lone leader whose history keeps `max_revisions`, that never snapshots (its restart
/// replays every write), after `writes` puts to keys `k0..k9` in turn.
fn written(max_revisions: u64, writes: u64) -> (Node, crate::persist::DurableState, Config) {
    let mut config = Config::new(1, 3);
    config.watch_history = HistoryLimits { max_bytes: 1 << 30, max_revisions };
    config.snapshot_threshold_entries = u64::MAX;
    config.snapshot_threshold_bytes = u64::MAX;
    let (mut node, mut disk) = lone_leader(config.clone());
    for i in 0..writes {
        let request = Request::Set {
            key: format!("k{}", i % 10),
            value: i.to_be_bytes().to_vec(),
            session: None,
        };
        let reply = call(&mut node, &mut disk, i, request);
        assert!(matches!(reply.result, Ok(Response::Set { .. })), "{reply:?}");
    }
    (node, disk, config)
}

fn events(node: &Node) -> Vec<WatchEvent> {
    node.watch_history().events_from(0).cloned().collect()
}

#[test]
fn a_restart_refills_the_history_from_the_replayed_tail() {
    let (node, disk, config) = written(1_000, 40);
    let restarted = Node::new(config, disk).unwrap();
    let before = node.watch_history();
    assert_eq!(restarted.watch_history().first_revision(), before.first_revision());
    assert_eq!(events(&restarted), events(&node));
    assert_eq!(events(&restarted).len(), 40);
}

#[test]
fn a_tail_longer_than_the_window_refills_the_window_the_running_node_kept() {
    let (node, disk, config) = written(25, 100);
    assert!(disk.entries.len() > 100, "the whole tail is replayed: no snapshot");
    let restarted = Node::new(config, disk).unwrap();
    let history = restarted.watch_history();
    // The running node evicted all but the last 25 revisions; the restarted one never
    // recorded the rest.
    assert_eq!(history.first_revision(), node.watch_history().first_revision());
    assert_eq!(events(&restarted), events(&node));
    assert_eq!(history.len(), 25);
    assert_eq!(history.bytes(), node.watch_history().bytes());
}
