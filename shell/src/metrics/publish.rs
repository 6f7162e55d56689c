//! Publishes what the core knows about itself ([`mokv_core::NodeStats`]), the peer links'
//! queues and the gossip view, from the driver.

use std::collections::BTreeSet;
use std::time::Duration;

use mokv_core::gossip::{GossipMember, Health};
use mokv_core::{Node, NodeId, NodeStats, Replication};
use tokio::time::Instant;

/// The node's statistics are copied at most this often (the driver steps far more often).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// The driver's metrics state: when it last published, and what it must remember between
/// publications.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    last: Option<Instant>,
    /// Peers with per-peer series, so that a leader stepping down can zero them.
    peers: BTreeSet<NodeId>,
    /// Gossip addresses this node suspects now (a new one is a failed probe).
    suspects: BTreeSet<String>,
}

impl NodeMetrics {
    /// After a driver step: publishes the node's statistics and the links' queue depths if the
    /// last publication is older than [`PUBLISH_INTERVAL`].
    pub fn after_step(&mut self, node: &Node, queues: impl Iterator<Item = (NodeId, usize)>) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < PUBLISH_INTERVAL) {
            return;
        }
        self.last = Some(now);
        self.publish(&node.stats());
        for (peer, depth) in queues {
            let peer = peer.to_string();
            // Registered (at zero) with the link, so dashboards see the series before a drop.
            metrics::counter!("mokv_peer_messages_dropped_total", "peer" => peer.clone())
                .increment(0);
            metrics::gauge!("mokv_peer_queue_depth_messages", "peer" => peer).set(depth as f64);
        }
    }

    fn publish(&mut self, s: &NodeStats) {
        let counters: [(&'static str, u64); 13] = [
            ("mokv_raft_leader_changes_total", s.leader_changes),
            ("mokv_raft_elections_started_total", s.elections_started),
            ("mokv_proposals_committed_total", s.proposals_committed),
            ("mokv_proposals_failed_total", s.proposals_failed),
            ("mokv_proposals_dropped_total", s.proposals_dropped),
            ("mokv_read_index_rounds_started_total", s.read_index_rounds_started),
            ("mokv_read_index_rounds_confirmed_total", s.read_index_rounds_confirmed),
            ("mokv_snapshots_taken_total", s.snapshots_taken),
            ("mokv_snapshots_taken_bytes_total", s.snapshots_taken_bytes),
            ("mokv_snapshots_sent_total", s.snapshots_sent),
            ("mokv_snapshots_sent_bytes_total", s.snapshots_sent_bytes),
            ("mokv_snapshots_installed_total", s.snapshots_installed),
            ("mokv_snapshots_installed_bytes_total", s.snapshots_installed_bytes),
        ];
        for (name, value) in counters {
            metrics::counter!(name).absolute(value);
        }
        let gauges: [(&'static str, u64); 9] = [
            ("mokv_log_entries_in_memory", s.log_entries_in_memory),
            ("mokv_log_in_memory_bytes", s.log_bytes_in_memory),
            ("mokv_keys", s.keys),
            ("mokv_sessions", s.sessions),
            ("mokv_pending_writes", s.pending_writes),
            ("mokv_pending_reads", s.pending_reads),
            ("mokv_state_bytes", s.state_bytes),
            ("mokv_watch_history_events", s.watch_history_events),
            ("mokv_watch_history_bytes", s.watch_history_bytes),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name).set(value as f64);
        }
        for (peer, p) in &s.peers {
            let peer = peer.to_string();
            metrics::gauge!("mokv_peer_replication_lag_entries", "peer" => peer.clone())
                .set(p.lag_entries as f64);
            metrics::gauge!("mokv_peer_matched_index", "peer" => peer.clone())
                .set(p.matched_index as f64);
            metrics::gauge!("mokv_peer_recently_active", "peer" => peer.clone())
                .set(if p.recently_active { 1.0 } else { 0.0 });
            for (state, name) in [
                (Replication::Probe, "probe"),
                (Replication::Replicate, "replicate"),
                (Replication::Snapshot, "snapshot"),
            ] {
                let on = if p.state == state { 1.0 } else { 0.0 };
                metrics::gauge!("mokv_peer_replication_state", "peer" => peer.clone(), "state" => name)
                    .set(on);
            }
        }
        // A leader that stepped down (or a member that left) no longer tracks these peers.
        for gone in self.peers.iter().filter(|p| !s.peers.contains_key(p)) {
            let peer = gone.to_string();
            metrics::gauge!("mokv_peer_replication_lag_entries", "peer" => peer.clone()).set(0.0);
            metrics::gauge!("mokv_peer_recently_active", "peer" => peer).set(0.0);
        }
        self.peers = s.peers.keys().copied().collect();
    }

    /// The gossip view changed: members by health, and members newly suspected (a direct and
    /// an indirect probe of them failed).
    pub fn gossip_view(&mut self, view: &[GossipMember]) {
        let (mut alive, mut suspect, mut down) = (0, 0, 0);
        let mut suspects = BTreeSet::new();
        for m in view {
            match m.health {
                Health::Alive => alive += 1,
                Health::Suspect => {
                    suspect += 1;
                    suspects.insert(m.id.gossip_addr.clone());
                }
                Health::Down => down += 1,
            }
        }
        let new = suspects.difference(&self.suspects).count();
        if new > 0 {
            metrics::counter!("mokv_gossip_probe_failures_total").increment(new as u64);
        }
        self.suspects = suspects;
        super::gossip_members(alive, suspect, down);
    }
}
