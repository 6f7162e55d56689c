//! Prometheus metrics (`/metrics` on `metrics-port`). Without a port nothing is installed and
//! every recording below is a no-op.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use mokv_core::{Role, Status};
use tonic::Code;

/// Longest request head read from a scraper; a longer one is refused.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Scrapes served at once; further connections wait in the listen backlog.
const MAX_CONCURRENT_SCRAPES: usize = 16;
/// A scraper must send its request head and take the answer within this.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often histograms are rolled over (the exporter needs this when it does not serve).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds `addr` (port 0: a free port), installs the Prometheus recorder and serves
/// `/metrics` there from the current tokio runtime; returns the bound address.
pub async fn install(addr: SocketAddr) -> Result<SocketAddr, String> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("metrics on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("metrics on {addr}: {e}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("metrics on {bound}: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SCRAPES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("metrics accept: {e}");
                    continue;
                }
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(SCRAPE_TIMEOUT, serve_one(stream, &handle)).await;
            });
        }
    });
    Ok(bound)
}

/// Answers one HTTP/1.x request: `GET /metrics` with the rendered text, anything else 404.
async fn serve_one(
    mut stream: tokio::net::TcpStream,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD_BYTES {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = if method == Some(b"GET") && path == Some(b"/metrics") {
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", String::new())
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Raft progress of this node, after every driver step.
pub(crate) fn node_status(s: &Status) {
    metrics::gauge!("mokv_raft_term").set(s.term as f64);
    metrics::gauge!("mokv_raft_commit_index").set(s.commit_index as f64);
    metrics::gauge!("mokv_raft_applied_index").set(s.applied_index as f64);
    metrics::gauge!("mokv_raft_last_index").set(s.last_index as f64);
    metrics::gauge!("mokv_is_leader").set(if s.role == Role::Leader { 1.0 } else { 0.0 });
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
        Code::Internal => "internal",
        _ => "other",
    }
}
