//! A tower layer around every gRPC service of the rpc port: per-rpc latency
//! (`mokv_rpc_duration_seconds{rpc}`) and requests in flight (`mokv_rpc_in_flight{rpc}`).
//!
//! The latency runs from the request's arrival to the response head (for a server-streaming
//! rpc such as `List`, the first message, not the end of the stream; for a client-streaming one
//! such as `Peer/Raft`, the whole stream). The `rpc` label takes its values from [`RPCS`] only,
//! anything else is `other`: a client choosing the path must not be able to create series.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

// tokio's clock, so that a simulated runtime's paused time drives it too.
use tokio::time::Instant;

/// Every rpc the port serves, as `package.Service/Method` (the path without its leading `/`).
pub const RPCS: &[&str] = &[
    "api.KV/Get",
    "api.KV/Set",
    "api.KV/Delete",
    "api.KV/List",
    "api.KV/GetServers",
    "api.KV/Range",
    "api.KV/Txn",
    "api.Cluster/MemberStatus",
    "api.Cluster/MemberList",
    "api.Cluster/MemberRemove",
    "api.Cluster/TransferLeader",
    "api.Maintenance/Snapshot",
    "api.Watch/Watch",
    "api.Lease/Grant",
    "api.Lease/Revoke",
    "api.Lease/KeepAlive",
    "api.Lease/TimeToLive",
    "peer.Peer/Raft",
    "peer.Peer/Snapshot",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The label of a request path: its entry in [`RPCS`], or `other`.
pub fn rpc_label(path: &str) -> &'static str {
    let name = path.strip_prefix('/').unwrap_or(path);
    RPCS.iter().copied().find(|r| *r == name).unwrap_or("other")
}

/// Wraps a service with [`RpcMetrics`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// Times every request of the service it wraps and counts those in flight.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let in_flight = InFlight::start(rpc_label(req.uri().path()));
        let response = self.inner.call(req);
        Box::pin(async move {
            let r = response.await;
            in_flight.finish();
            r
        })
    }
}

/// One request in flight: counted in the gauge until dropped (also when the caller gives up).
struct InFlight {
    rpc: &'static str,
    started: Instant,
}

impl InFlight {
    fn start(rpc: &'static str) -> Self {
        metrics::gauge!("mokv_rpc_in_flight", "rpc" => rpc).increment(1.0);
        Self { rpc, started: Instant::now() }
    }

    /// The response head is ready: records the latency (the gauge goes down on drop).
    fn finish(self) {
        let seconds = self.started.elapsed().as_secs_f64();
        metrics::histogram!("mokv_rpc_duration_seconds", "rpc" => self.rpc).record(seconds);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("mokv_rpc_in_flight", "rpc" => self.rpc).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_rpcs_become_labels() {
        assert_eq!(rpc_label("/api.KV/Get"), "api.KV/Get");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_eq!(rpc_label("/api.KV/NoSuchMethod"), "other");
        assert_eq!(rpc_label("/api.KV/Get/extra"), "other");
        assert_eq!(rpc_label(""), "other");
    }
}
