//! Prometheus metrics (`/metrics` on `metrics-port`). Without a port nothing is installed and
//! every recording below is a no-op.
//!
//! The endpoint is HTTPS by default, with the node's server certificate (reloaded like the rpc
//! port's) and, with `metrics-client-auth`, only for scrapers that present a client certificate
//! from the cluster CA (Prometheus: `tls_config.cert_file`). Plain HTTP is served only when
//! `metrics-plain-http` asks for it. One request per connection (HTTP/1.x, `Connection:
//! close`), a bounded request head and time, and at most [`MAX_SCRAPES`] at once.
//!
//! What is exported: [`catalog::SERIES`] (each series with its HELP text and unit). The
//! recordings live next to what they measure: the driver publishes the core's
//! [`mokv_core::NodeStats`] ([`publish`]) and times requests ([`timing`]), a tower layer times
//! every rpc ([`rpc_layer`]), and the functions below are the one-line hooks of the rest.

pub mod catalog;
pub(crate) mod publish;
pub(crate) mod rpc_layer;
pub(crate) mod timing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mokv_core::{Role, Status};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tonic::Code;

use crate::security::tls::{self, ReloadableServerTls};

/// Scrapes served at once; more connections wait for a place.
const MAX_SCRAPES: usize = 16;
/// Longest request head read.
const MAX_REQUEST_HEAD_BYTES: usize = 8 << 10;
/// Bound on a whole scrape (handshake, request, answer).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histograms are drained into their summaries.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How `/metrics` is served.
#[derive(Debug, Clone)]
pub enum MetricsTransport {
    /// Plain HTTP (only when the configuration asks for it).
    PlainHttp,
    /// HTTPS with the node's server certificate; `client_auth`: a verified client certificate
    /// is required.
    Https { tls: Arc<ReloadableServerTls>, client_auth: bool },
}

/// Binds `addr` (port 0: a free port), installs the recorder and serves `/metrics` there from
/// the current tokio runtime; returns the bound address.
pub async fn install(addr: SocketAddr, transport: MetricsTransport) -> Result<SocketAddr, String> {
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
        .map_err(|e| format!("metrics recorder: {e}"))?;
    catalog::describe_all();
    let acceptor = match &transport {
        MetricsTransport::PlainHttp => None,
        MetricsTransport::Https { tls, .. } => {
            let mut config = tls.server_config().map_err(|e| format!("metrics TLS: {e}"))?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
    };
    let client_auth = matches!(transport, MetricsTransport::Https { client_auth: true, .. });
    let upkeep = handle.clone();
    process_resident_bytes();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_INTERVAL).await;
            upkeep.run_upkeep();
            process_resident_bytes();
        }
    });
    if let MetricsTransport::Https { tls: t, .. } = transport {
        tokio::spawn(tls::watch(t, tls::CERT_RELOAD_INTERVAL));
    }
    tokio::spawn(serve(listener, acceptor, client_auth, handle));
    Ok(bound)
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    client_auth: bool,
    handle: PrometheusHandle,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(place) = places.clone().acquire_owned().await else { return };
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let _place = place;
            let scrape = async {
                match acceptor {
                    None => answer(tcp, true, &handle).await,
                    Some(a) => {
                        let Ok(tls) = a.accept(tcp).await else { return };
                        let authorized =
                            !client_auth || tls.get_ref().1.peer_certificates().is_some();
                        answer(tls, authorized, &handle).await;
                    }
                }
            };
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, scrape).await;
        });
    }
}

/// Reads one request head and answers it: the metrics for `GET /metrics`, 403 for a scraper
/// without the required certificate, 404 otherwise.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    authorized: bool,
    handle: &PrometheusHandle,
) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST_HEAD_BYTES {
            return;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, body) = if !authorized {
        ("403 Forbidden", "a client certificate from the cluster CA is required\n".to_owned())
    } else if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?")) {
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "not found\n".to_owned())
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(reply.as_bytes()).await.is_ok() && s.write_all(body.as_bytes()).await.is_ok() {
        let _ = s.flush().await;
        let _ = s.shutdown().await;
    }
}

/// Raft progress of this node, after every driver step.
pub(crate) fn node_status(s: &Status) {
    metrics::gauge!("mokv_raft_term").set(s.term as f64);
    metrics::gauge!("mokv_raft_commit_index").set(s.commit_index as f64);
    metrics::gauge!("mokv_raft_applied_index").set(s.applied_index as f64);
    metrics::gauge!("mokv_raft_last_index").set(s.last_index as f64);
    metrics::gauge!("mokv_is_leader").set(if s.role == Role::Leader { 1.0 } else { 0.0 });
    let lag = s.commit_index.saturating_sub(s.applied_index);
    metrics::gauge!("mokv_raft_apply_lag_entries").set(lag as f64);
}

/// Bytes of the replicated data (`StateMachine::state_bytes`: what the state quota bounds).
pub fn state_bytes(bytes: u64) {
    metrics::gauge!("mokv_state_bytes").set(bytes as f64);
}

/// The process's resident memory (`/proc/self/statm`; not exported where that file is
/// missing): what the sizing guide and the per-node RSS figures are about.
fn process_resident_bytes() {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return };
    // Fields: size resident shared text lib data dt, in pages.
    let Some(Ok(pages)) = statm.split_whitespace().nth(1).map(str::parse::<u64>) else { return };
    let bytes = pages.saturating_mul(rustix::param::page_size() as u64);
    metrics::gauge!("mokv_process_resident_bytes").set(bytes as f64);
}

/// The allocator's own accounting (`mokvd`: jemalloc's `stats.allocated`, `stats.resident`,
/// `stats.retained`), published by the program that chose the allocator.
pub fn allocator_bytes(allocated: u64, resident: u64, retained: u64) {
    metrics::gauge!("mokv_allocator_allocated_bytes").set(allocated as f64);
    metrics::gauge!("mokv_allocator_resident_bytes").set(resident as f64);
    metrics::gauge!("mokv_allocator_retained_bytes").set(retained as f64);
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

/// One client rpc answered with `code` (a refusal by authorization is also counted as a
/// denial of that rpc).
pub(crate) fn request(rpc: &'static str, code: Code) {
    metrics::counter!("mokv_requests_total", "rpc" => rpc, "code" => code_label(code)).increment(1);
    if code == Code::PermissionDenied {
        metrics::counter!("mokv_authz_denials_total", "rpc" => rpc).increment(1);
    }
}

/// One group commit: how many batches it held, how long the synced write took, and whether it
/// held a snapshot.
pub(crate) fn persist_group(batches: usize, bytes: usize, seconds: f64, has_snapshot: bool) {
    metrics::histogram!("mokv_persist_group_batches").record(batches as f64);
    metrics::histogram!("mokv_persist_group_bytes").record(bytes as f64);
    metrics::histogram!("mokv_persist_write_seconds").record(seconds);
    if has_snapshot {
        metrics::histogram!("mokv_snapshot_persist_seconds").record(seconds);
    }
}

/// A driver pass kept the node's driver busy past `node::slow_pass::SLOW_PASS`.
pub(crate) fn slow_driver_pass() {
    metrics::counter!("mokv_driver_slow_passes_total").increment(1);
}

/// A message to peer `to` was dropped (queue full or no connection).
pub(crate) fn peer_dropped(to: mokv_core::NodeId) {
    metrics::counter!("mokv_peer_messages_dropped_total", "peer" => to.to_string()).increment(1);
}

/// One snapshot transfer to a follower ended, `delivered` or not, after `seconds`.
pub(crate) fn snapshot_transfer(delivered: bool, seconds: f64) {
    let outcome = if delivered { "delivered" } else { "failed" };
    metrics::counter!("mokv_snapshot_transfers_total", "outcome" => outcome).increment(1);
    metrics::histogram!("mokv_snapshot_transfer_seconds").record(seconds);
}

/// The `reason` labels of `mokv_tls_handshake_failures_total`.
pub(crate) const HANDSHAKE_FAILURES: &[&str] =
    &["timeout", "no_certificate", "bad_certificate", "protocol", "io"];

/// An inbound TLS handshake failed: `None` when it timed out, else with its error.
pub(crate) fn tls_handshake_failed(error: Option<&std::io::Error>) {
    let reason = match error {
        None => "timeout",
        Some(e) => handshake_reason(e),
    };
    metrics::counter!("mokv_tls_handshake_failures_total", "reason" => reason).increment(1);
}

/// The label of a failed handshake: which side of the certificate check, or the protocol.
fn handshake_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
        | rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)
        | rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired)
        | rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)
        | rustls::Error::AlertReceived(rustls::AlertDescription::CertificateUnknown) => {
            "bad_certificate"
        }
        _ => "protocol",
    }
}

/// A peer stream was refused: its caller is not the member it claims to be (`stream`: `raft` or
/// `snapshot`).
pub(crate) fn peer_refused(stream: &'static str) {
    metrics::counter!("mokv_peer_refused_total", "stream" => stream).increment(1);
}

/// A gossip datagram was dropped, and why (`unauthenticated`, `inbound_full`, ...).
/// A verification of a gossiped identity (see `mokv_core::gossip::VerifyRequest`).
pub(crate) fn gossip_verification(proven: bool) {
    let result = if proven { "proven" } else { "refused" };
    metrics::counter!("mokv_gossip_verifications_total", "result" => result).increment(1);
}

/// Identities ignored because gossip's member table was full (`gossip-max-members`).
pub(crate) fn gossip_identities_ignored(total: u64) {
    metrics::counter!("mokv_gossip_identities_ignored_total").absolute(total);
}

pub(crate) fn gossip_dropped(why: &'static str) {
    metrics::counter!("mokv_gossip_datagrams_dropped_total", "reason" => why).increment(1);
}

/// Gossip members by health, as this node sees them (see [`publish::NodeMetrics::gossip_view`]).
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
