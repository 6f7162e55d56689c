//! Every series mokv exports, with its HELP text and unit: described to the exporter when it
//! is installed, and registered at zero (those without labels) so that a dashboard or alert
//! finds them before the first event.

use metrics::Unit;

/// The kind of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One series: name, kind, unit, help, and whether it carries labels (those appear with their
/// first labelled value) or exists only in some configurations.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    /// Registered at zero when the exporter starts (false: labelled, or only with a setting).
    pub eager: bool,
}

const fn s(name: &'static str, kind: Kind, unit: Unit, help: &'static str, eager: bool) -> Series {
    Series { name, kind, unit, help, eager }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};
use Unit::{Bytes as B, Count as N, Seconds as S};

/// The catalogue.
pub const SERIES: &[Series] = &[
    // Raft progress and leadership.
    s("mokv_raft_term", G, N, "Current Raft term.", true),
    s("mokv_raft_commit_index", G, N, "Highest log index known to be committed.", true),
    s("mokv_raft_applied_index", G, N, "Highest log index applied to the state machine.", true),
    s("mokv_raft_last_index", G, N, "Last index of this node's Raft log.", true),
    s(
        "mokv_raft_apply_lag_entries",
        G,
        N,
        "Committed entries not yet applied (commit - applied).",
        true,
    ),
    s("mokv_is_leader", G, N, "1 while this node is the Raft leader, else 0.", true),
    s(
        "mokv_raft_leader_changes_total",
        C,
        N,
        "Times this node saw the leader change to a known node.",
        true,
    ),
    s("mokv_raft_elections_started_total", C, N, "Elections this node started as candidate.", true),
    // Proposals and reads.
    s(
        "mokv_proposals_committed_total",
        C,
        N,
        "Proposals of this node that committed and were applied.",
        true,
    ),
    s(
        "mokv_proposals_failed_total",
        C,
        N,
        "Proposals refused before reaching the log (busy, leadership transfer).",
        true,
    ),
    s(
        "mokv_proposals_dropped_total",
        C,
        N,
        "Proposals that reached the log and were lost or left indeterminate.",
        true,
    ),
    s("mokv_pending_writes", G, N, "Writes proposed by this node and not answered yet.", true),
    s(
        "mokv_pending_reads",
        G,
        N,
        "Linearizable reads waiting for a ReadIndex round or for apply.",
        true,
    ),
    s("mokv_read_index_rounds_started_total", C, N, "ReadIndex rounds this node started.", true),
    s(
        "mokv_read_index_rounds_confirmed_total",
        C,
        N,
        "ReadIndex rounds confirmed by a quorum.",
        true,
    ),
    s(
        "mokv_read_index_seconds",
        H,
        S,
        "Linearizable reads: from arrival at the core to the answer (ReadIndex round and apply).",
        true,
    ),
    s(
        "mokv_write_commit_seconds",
        H,
        S,
        "Writes: from proposal to the answer after commit and apply.",
        true,
    ),
    // Snapshots.
    s("mokv_snapshots_taken_total", C, N, "Snapshots this node took (log compaction).", true),
    s("mokv_snapshots_taken_bytes_total", C, B, "Bytes of the snapshots this node took.", true),
    s(
        "mokv_snapshots_sent_total",
        C,
        N,
        "Snapshots this node sent to followers behind the log.",
        true,
    ),
    s("mokv_snapshots_sent_bytes_total", C, B, "Bytes of the snapshots this node sent.", true),
    s("mokv_snapshots_installed_total", C, N, "Snapshots from a leader this node installed.", true),
    s(
        "mokv_snapshots_installed_bytes_total",
        C,
        B,
        "Bytes of the snapshots this node installed.",
        true,
    ),
    s(
        "mokv_snapshot_transfer_seconds",
        H,
        S,
        "Duration of one snapshot transfer to a follower.",
        true,
    ),
    s(
        "mokv_snapshot_transfers_total",
        C,
        N,
        "Snapshot transfers to followers, by outcome (delivered, failed).",
        false,
    ),
    s(
        "mokv_snapshot_persist_seconds",
        H,
        S,
        "Duration of the synced disk writes that held a snapshot.",
        true,
    ),
    // Memory and data.
    s("mokv_log_entries_in_memory", G, N, "Raft log entries held in memory.", true),
    s("mokv_log_in_memory_bytes", G, B, "Bytes of the Raft log entries held in memory.", true),
    s("mokv_keys", G, N, "Keys in the replicated state.", true),
    s(
        "mokv_state_bytes",
        G,
        B,
        "Bytes of the replicated state (what the state quota bounds).",
        true,
    ),
    s("mokv_quota_state_bytes", G, B, "The configured state quota (absent without one).", false),
    s("mokv_watch_history_events", G, N, "Changes the watch history retains.", true),
    s(
        "mokv_watch_history_bytes",
        G,
        B,
        "Bytes of the changes the watch history retains, as watch-history-max-bytes counts them.",
        true,
    ),
    // Memory.
    s(
        "mokv_process_resident_bytes",
        G,
        B,
        "Resident memory of the node's process (RSS, from /proc/self/statm).",
        false,
    ),
    s(
        "mokv_allocator_allocated_bytes",
        G,
        B,
        "Bytes the program holds in allocations (jemalloc stats.allocated; mokvd only).",
        false,
    ),
    s(
        "mokv_allocator_resident_bytes",
        G,
        B,
        "Bytes of the allocator's pages that are resident, its own metadata and free pages \
         not yet returned included (jemalloc stats.resident; mokvd only).",
        false,
    ),
    s(
        "mokv_allocator_retained_bytes",
        G,
        B,
        "Address space the allocator returned to the OS but keeps mapped for reuse, not \
         resident (jemalloc stats.retained; mokvd only).",
        false,
    ),
    s("mokv_quota_refused_writes_total", C, N, "Writes refused by the state quota.", true),
    s("mokv_sessions", G, N, "Client sessions in the replicated state.", true),
    // Disk.
    s(
        "mokv_persist_write_seconds",
        H,
        S,
        "Duration of one group commit: one synced RocksDB write (fsync).",
        true,
    ),
    s("mokv_persist_group_batches", H, N, "Persist batches written by one group commit.", true),
    s(
        "mokv_driver_slow_passes_total",
        C,
        N,
        "Driver passes that kept the node busy for 100 ms or more (waits for the disk left \
         out): every request and Raft message of the node waited for each.",
        true,
    ),
    s(
        "mokv_persist_group_bytes",
        H,
        B,
        "Bytes of log entries and snapshots written by one group commit.",
        true,
    ),
    // Client rpcs.
    s("mokv_requests_total", C, N, "Client rpcs answered, by rpc and status code.", false),
    s(
        "mokv_rpc_duration_seconds",
        H,
        S,
        "Latency of every rpc on the rpc port, to the response head, by rpc.",
        false,
    ),
    s("mokv_rpc_in_flight", G, N, "Rpcs being served, by rpc.", false),
    s("mokv_authz_denials_total", C, N, "Client rpcs refused by authorization, by rpc.", false),
    // Peers.
    s(
        "mokv_peer_replication_lag_entries",
        G,
        N,
        "Leader only: entries a peer is behind the leader's last index (0 elsewhere).",
        false,
    ),
    s(
        "mokv_peer_matched_index",
        G,
        N,
        "Leader only: highest log index known to be on a peer.",
        false,
    ),
    s(
        "mokv_peer_recently_active",
        G,
        N,
        "Leader only: 1 if the peer answered within an election timeout.",
        false,
    ),
    s(
        "mokv_peer_replication_state",
        G,
        N,
        "Leader only: 1 for the peer's replication state (probe, replicate, snapshot).",
        false,
    ),
    s("mokv_peer_queue_depth_messages", G, N, "Messages queued on the link to a peer.", false),
    s(
        "mokv_peer_messages_dropped_total",
        C,
        N,
        "Messages to a peer dropped (queue full or no connection), by peer.",
        false,
    ),
    // Gossip.
    s("mokv_gossip_members", G, N, "Other gossip members by health (alive, suspect, down).", false),
    s(
        "mokv_gossip_probe_failures_total",
        C,
        N,
        "Members this node began to suspect (a direct and an indirect probe failed).",
        true,
    ),
    s("mokv_gossip_datagrams_dropped_total", C, N, "Gossip datagrams dropped, by reason.", false),
    // TLS.
    s(
        "mokv_tls_cert_expiry_seconds",
        G,
        S,
        "Time left before a certificate expires, by role (server, peer, ca).",
        false,
    ),
    s(
        "mokv_tls_handshake_failures_total",
        C,
        N,
        "Inbound TLS handshakes that failed, by reason.",
        false,
    ),
    s(
        "mokv_tls_connections_closed_untrusted_total",
        C,
        N,
        "Open connections closed because their certificate is no longer trusted.",
        false,
    ),
    s("mokv_tls_reload_failures_total", C, N, "Certificate reloads refused, by role.", false),
    // Connection bounds of the rpc port.
    s(
        "mokv_connections_open",
        G,
        N,
        "Open rpc connections by class (peer, client, anonymous) and handshakes in progress.",
        false,
    ),
    s(
        "mokv_connections_refused_total",
        C,
        N,
        "Rpc connections closed at once by a connection bound, by reason.",
        false,
    ),
];

/// Describes every series to the installed recorder and registers the eager ones at zero.
pub fn describe_all() {
    for series in SERIES {
        let (name, unit, help) = (series.name, series.unit, series.help);
        match series.kind {
            Kind::Counter => {
                metrics::describe_counter!(name, unit, help);
                if series.eager {
                    metrics::counter!(name).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(name, unit, help);
                if series.eager {
                    metrics::gauge!(name).increment(0.0);
                }
            }
            Kind::Histogram => {
                metrics::describe_histogram!(name, unit, help);
                if series.eager {
                    let _ = metrics::histogram!(name);
                }
            }
        }
    }
    for reason in super::HANDSHAKE_FAILURES {
        metrics::counter!("mokv_tls_handshake_failures_total", "reason" => *reason).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Names say what they count and in which unit (Prometheus conventions).
    #[test]
    fn names_carry_their_unit() {
        let mut seen = BTreeSet::new();
        for s in SERIES {
            assert!(seen.insert(s.name), "{} twice", s.name);
            assert!(s.name.starts_with("mokv_"), "{}", s.name);
            assert!(!s.help.is_empty(), "{}", s.name);
            assert_eq!(s.kind == Kind::Counter, s.name.ends_with("_total"), "{}", s.name);
            match s.unit {
                Unit::Seconds => assert!(s.name.ends_with("_seconds"), "{}", s.name),
                Unit::Bytes => {
                    assert!(s.name.contains("_bytes"), "{}", s.name);
                }
                _ => {
                    assert!(!s.name.contains("_seconds") && !s.name.contains("bytes"), "{}", s.name)
                }
            }
        }
    }
}
