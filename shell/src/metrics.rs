//! Prometheus metrics (`/metrics` on `metrics-port`). Without a port nothing is installed and
//! every recording below is a no-op.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use mokv_core::{Role, Status};
use tonic::Code;

/// Serves `/metrics` on `addr` from the current tokio runtime.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0],
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("metrics on {addr}: {e}"))
}

/// Raft progress of this node, after every driver step.
pub(crate) fn node_status(s: &Status) {
    metrics::gauge!("mokv_raft_term").set(s.term as f64);
    metrics::gauge!("mokv_raft_commit_index").set(s.commit_index as f64);
    metrics::gauge!("mokv_raft_applied_index").set(s.applied_index as f64);
    metrics::gauge!("mokv_raft_last_index").set(s.last_index as f64);
    metrics::gauge!("mokv_is_leader").set(if s.role == Role::Leader { 1.0 } else { 0.0 });
}

/// Bytes of the replicated data (`StateMachine::state_bytes`: what the state quota bounds).
pub fn state_bytes(bytes: u64) {
    metrics::gauge!("mokv_state_bytes").set(bytes as f64);
}

/// The configured state quota; not exported without one.
pub fn quota_state_bytes(quota: Option<u64>) {
    if let Some(q) = quota {
        metrics::gauge!("mokv_quota_state_bytes").set(q as f64);
    }
}

/// A write was refused by the state quota.
pub fn quota_refused() {
    metrics::counter!("mokv_quota_refused_writes_total").increment(1);
}

/// One client rpc answered with `code`.
pub(crate) fn request(rpc: &'static str, code: Code) {
    metrics::counter!("mokv_requests_total", "rpc" => rpc, "code" => code_label(code)).increment(1);
}

/// One group commit: how many batches it held and how long the synced write took.
pub(crate) fn persist_group(batches: usize, bytes: usize, seconds: f64) {
    metrics::histogram!("mokv_persist_group_batches").record(batches as f64);
    metrics::histogram!("mokv_persist_group_bytes").record(bytes as f64);
    metrics::histogram!("mokv_persist_write_seconds").record(seconds);
}

/// A message to a peer was dropped (queue full or no connection).
pub(crate) fn peer_dropped() {
    metrics::counter!("mokv_peer_messages_dropped_total").increment(1);
}

/// A gossip datagram was dropped, and why (`unauthenticated`, `inbound_full`, ...).
pub(crate) fn gossip_dropped(why: &'static str) {
    metrics::counter!("mokv_gossip_datagrams_dropped_total", "reason" => why).increment(1);
}

/// Gossip members by health, as this node sees them.
pub(crate) fn gossip_members(alive: usize, suspect: usize, down: usize) {
    metrics::gauge!("mokv_gossip_members", "health" => "alive").set(alive as f64);
    metrics::gauge!("mokv_gossip_members", "health" => "suspect").set(suspect as f64);
    metrics::gauge!("mokv_gossip_members", "health" => "down").set(down as f64);
}

/// Short label of a code, for metrics.
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Internal => "internal",
        _ => "other",
    }
}
