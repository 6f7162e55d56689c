//! [`NodeStats`]: what the core knows about its own work, for a shell's metrics.
//!
//! The counters only grow (for the life of the [`Node`]: a restart starts them at zero, as
//! Prometheus counters expect); the gauges are read from the node's state when
//! [`Node::stats`] is called. Keeping them costs a few additions on paths that already run;
//! reading them copies a small struct and one entry per peer, so a shell may call it after
//! every step but need not.

use std::collections::BTreeMap;

use raft::{ProgressState, StateRole};

use super::Node;
use crate::members::NodeId;

/// Counters and gauges of one node (see [`Node::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Times this node saw the leader change to a known node (its own elections included).
    pub leader_changes: u64,
    /// Elections this node started as candidate (pre-votes that lost are not counted: they
    /// do not disturb the cluster).
    pub elections_started: u64,
    /// This node's proposals whose entry committed and was applied (a write refused by the
    /// state machine, e.g. by the quota, still committed).
    pub proposals_committed: u64,
    /// Proposals raft-rs refused before they reached the log (busy, leadership transfer).
    pub proposals_failed: u64,
    /// Proposals that reached the log and were lost or left indeterminate: replaced by another
    /// leader's entry, timed out, overtaken by a snapshot, or failed when this node was removed.
    pub proposals_dropped: u64,
    /// ReadIndex rounds this node started.
    pub read_index_rounds_started: u64,
    /// ReadIndex rounds confirmed by a quorum (the rest were retried or failed with their reads).
    pub read_index_rounds_confirmed: u64,
    /// Snapshots this node took (log compaction).
    pub snapshots_taken: u64,
    /// Bytes of the snapshots it took.
    pub snapshots_taken_bytes: u64,
    /// Snapshots this node handed to the shell to send to a follower behind the log.
    pub snapshots_sent: u64,
    /// Bytes of the snapshots it handed over to send.
    pub snapshots_sent_bytes: u64,
    /// Snapshots from a leader this node installed.
    pub snapshots_installed: u64,
    /// Bytes of the snapshots it installed.
    pub snapshots_installed_bytes: u64,
    /// Entries in the in-memory Raft log (after the last compaction).
    pub log_entries_in_memory: u64,
    /// Bytes of those entries (what `max_in_memory_log_bytes` bounds).
    pub log_bytes_in_memory: u64,
    /// Keys in the replicated state.
    pub keys: u64,
    /// Bytes of the replicated state (what the state quota bounds).
    pub state_bytes: u64,
    /// Client sessions the replicated state holds.
    pub sessions: u64,
    /// Changes the watch history retains (every node keeps one; see `HistoryLimits`).
    pub watch_history_events: u64,
    /// Their bytes as the history counts them (what `HistoryLimits::max_bytes` bounds).
    pub watch_history_bytes: u64,
    /// Writes proposed by this node and not answered yet.
    pub pending_writes: u64,
    /// Linearizable reads waiting for a ReadIndex round or for their index to be applied.
    pub pending_reads: u64,
    /// Replication to every other member, only while this node leads (empty otherwise).
    pub peers: BTreeMap<NodeId, PeerProgress>,
}

/// How far a follower or learner is, as the leader tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerProgress {
    /// The highest log index known to be on the peer.
    pub matched_index: u64,
    /// Entries the peer is behind the leader's last index.
    pub lag_entries: u64,
    pub state: Replication,
    /// The leader heard from the peer within the last election timeout.
    pub recently_active: bool,
}

/// How the leader replicates to a peer (raft-rs's progress state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Finding where the peer's log matches: one append at a time.
    Probe,
    /// Streaming appends.
    Replicate,
    /// Waiting for a snapshot to be delivered.
    Snapshot,
}

impl From<ProgressState> for Replication {
    fn from(s: ProgressState) -> Self {
        match s {
            ProgressState::Probe => Replication::Probe,
            ProgressState::Replicate => Replication::Replicate,
            ProgressState::Snapshot => Replication::Snapshot,
        }
    }
}

impl Node {
    /// Counters and gauges of this node, for metrics (see [`NodeStats`]).
    pub fn stats(&self) -> NodeStats {
        let mut s = self.stats.clone();
        let store = self.raw.store();
        s.log_entries_in_memory = store.last_index().saturating_sub(store.first_index() - 1);
        s.log_bytes_in_memory = store.bytes();
        s.keys = self.sm.len() as u64;
        s.state_bytes = self.sm.state_bytes();
        s.sessions = self.sm.session_count() as u64;
        s.watch_history_events = self.history.len() as u64;
        s.watch_history_bytes = self.history.bytes();
        s.pending_writes = self.writes.len() as u64;
        s.pending_reads = self.reads.len() as u64;
        if self.raw.raft.state == StateRole::Leader {
            let last = self.raw.raft.raft_log.last_index();
            s.peers = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != self.config.id)
                .map(|(id, p)| {
                    let progress = PeerProgress {
                        matched_index: p.matched,
                        lag_entries: last.saturating_sub(p.matched),
                        state: p.state.into(),
                        recently_active: p.recent_active,
                    };
                    (*id, progress)
                })
                .collect();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use crate::config::Config;
    use crate::members::MemberInfo;
    use crate::persist::DurableState;
    use crate::request::{Consistency, Request, Response};
    use crate::Node;

    /// A lone voter with `config`, leading itself, with every output drained.
    fn lone_leader(config: Config) -> Node {
        let me = MemberInfo {
            id: 1,
            name: "n1".into(),
            peer_addr: "peer:1".into(),
            rpc_addr: "rpc:1".into(),
            auto_promote: false,
        };
        let first = Node::bootstrap(&me, &config, NonZeroU64::new(5).unwrap());
        let durable = DurableState {
            snapshot: first
                .snapshot
                .map(|s| crate::persist::StoredSnapshot { reference: s.reference, image: s.image }),
            hard_state: first.hard_state,
            entries: Vec::new(),
            node_meta: first.node_meta,
        };
        let mut node = Node::new(config, durable).unwrap();
        drain(&mut node);
        node
    }

    /// Drains every output, acknowledging persist batches at once; returns the replies.
    fn drain(node: &mut Node) -> Vec<Result<Response, crate::Error>> {
        let mut replies = Vec::new();
        loop {
            let mut last = None;
            while let Some(b) = node.poll_persist() {
                last = Some(b.id);
            }
            while node.poll_transmit().is_some() {}
            while let Some(r) = node.poll_reply() {
                replies.push(r.result);
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

    #[test]
    fn counters_follow_elections_proposals_reads_and_snapshots() {
        let mut node = lone_leader(Config::new(1, 3));
        let s = node.stats();
        assert_eq!((s.leader_changes, s.elections_started), (1, 1), "{s:?}");
        assert_eq!(s.proposals_committed, 0);

        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            let set = Request::Set { key: key.into(), value: vec![7; 10], session: None };
            node.handle_request(i as u64, set);
        }
        let replies = drain(&mut node);
        assert_eq!(replies.len(), 3);
        assert!(replies.iter().all(Result::is_ok), "{replies:?}");
        node.handle_request(
            9,
            Request::Get { key: "a".into(), consistency: Consistency::Linearizable },
        );
        let replies = drain(&mut node);
        assert!(matches!(replies[..], [Ok(Response::Get(Some(_)))]), "{replies:?}");

        let s = node.stats();
        assert_eq!(s.proposals_committed, 3);
        assert_eq!((s.proposals_failed, s.proposals_dropped), (0, 0));
        assert_eq!((s.read_index_rounds_started, s.read_index_rounds_confirmed), (1, 1));
        assert_eq!(s.keys, 3);
        assert_eq!(s.state_bytes, node.state().state_bytes());
        assert!(s.log_entries_in_memory >= 3, "{s:?}");
        assert!(s.log_bytes_in_memory > 30, "{s:?}");
        assert!(s.peers.is_empty(), "a lone voter has no peers: {s:?}");
        assert_eq!((s.pending_writes, s.pending_reads), (0, 0));
        // Three puts of 10-byte values to new keys, each counted with its 48 bytes.
        assert_eq!(s.watch_history_events, 3, "{s:?}");
        assert_eq!(s.watch_history_bytes, 3 * (1 + 10 + 48), "{s:?}");
        assert_eq!(s.watch_history_bytes, node.watch_history().bytes());
    }

    #[test]
    fn a_snapshot_taken_is_counted_with_its_bytes() {
        let mut config = Config::new(1, 3);
        config.snapshot_threshold_entries = 5;
        let mut node = lone_leader(config);
        for i in 0..10u64 {
            let set = Request::Set { key: format!("k{i}"), value: vec![1; 100], session: None };
            node.handle_request(i, set);
            drain(&mut node);
        }
        let s = node.stats();
        assert!(s.snapshots_taken >= 1, "{s:?}");
        assert!(s.snapshots_taken_bytes > 400, "at least four values of 100 bytes: {s:?}");
        assert_eq!(s.snapshots_installed, 0);
    }
}
