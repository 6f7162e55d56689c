//! The client `Lease` gRPC service (lease.proto): grant, revoke, keep-alive, time-to-live.
//!
//! Each rpc: identity from the verified client certificate → authorization on the object
//! [`LEASE_OBJECT`] (`lease`) → one core request through the driver. Grant, Revoke and
//! KeepAlive need `produce` there (they create, end or extend leases), TimeToLive `consume`.
//! Attaching a key to a lease is a `Set` and needs `produce` on the key like any write. A
//! lease id is a capability: whoever may `produce` on `lease` and knows an id can revoke that
//! lease and so delete the keys attached to it.
//!
//! KeepAlive is a bidirectional stream: one answer per request, in order, each after the
//! leader confirmed it still leads (the core's ReadIndex round). The stream ends with the
//! status of the first refused keep-alive (UNAVAILABLE with the leader hint on a follower,
//! NOT_FOUND for a lease that is gone, UNAVAILABLE when the node's server stops); at most one
//! keep-alive per stream is in flight, so a client that sends faster than it reads is slowed
//! down rather than buffered.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mokv_core::{Request, Response, SessionRef};
use mokv_proto::api::lease_server::Lease;
use mokv_proto::api::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseSession, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::net::server_stop::ServerStop;
use crate::net::status;
use crate::node::driver::DriverHandle;
use crate::security::authz::{Action, Authorizer};
use crate::security::identity::{identity_of, Identity};

/// The authorization object of every lease rpc.
pub const LEASE_OBJECT: &str = "lease";

/// Answers queued on a keep-alive stream before the service waits for the client to read.
const KEEPALIVE_BUFFER: usize = 1;

#[derive(Debug, Clone)]
pub struct LeaseService {
    handle: DriverHandle,
    stopping: Arc<AtomicBool>,
    /// Ends every keep-alive stream (UNAVAILABLE) when the server stops.
    stop: ServerStop,
    authz: Authorizer,
}

impl LeaseService {
    pub fn new(
        handle: DriverHandle,
        stopping: Arc<AtomicBool>,
        stop: ServerStop,
        authz: Authorizer,
    ) -> Self {
        Self { handle, stopping, stop, authz }
    }

    /// Checks `action` on leases; returns the caller (whose name owns its sessions).
    fn admit<T>(&self, req: &tonic::Request<T>, action: Action) -> Result<Identity, Status> {
        let caller = self.authz.snapshot().check(identity_of(req), action, LEASE_OBJECT)?;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(status::shutting_down());
        }
        Ok(caller)
    }
}

/// The core's session of a lease write by `caller` (its own sessions only, as for KV writes).
fn session(s: Option<LeaseSession>, caller: &Identity) -> Option<SessionRef> {
    s.filter(|s| s.client_id != 0).map(|s| SessionRef {
        owner: caller.name.clone(),
        client_id: s.client_id,
        seq: s.seq,
        first_unacked_seq: s.first_unacked_seq,
    })
}

fn unexpected() -> Status {
    Status::internal("unexpected answer from the core")
}

fn counted<T>(rpc: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    crate::metrics::request(rpc, r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
    r
}

/// One keep-alive through the core.
async fn keep_alive(handle: &DriverHandle, id: u64) -> Result<LeaseKeepAliveResponse, Status> {
    match status::call(handle, Request::LeaseKeepAlive { id }).await? {
        Response::LeaseKeptAlive { id, ttl_ms } => Ok(LeaseKeepAliveResponse { id, ttl_ms }),
        _ => Err(unexpected()),
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn grant(
        &self,
        request: tonic::Request<LeaseGrantRequest>,
    ) -> Result<tonic::Response<LeaseGrantResponse>, Status> {
        let r = async {
            let caller = self.admit(&request, Action::Produce)?;
            let LeaseGrantRequest { ttl_ms, id, session: s } = request.into_inner();
            let session = session(s, &caller);
            let req = Request::LeaseGrant { id: (id != 0).then_some(id), ttl_ms, session };
            match status::call(&self.handle, req).await? {
                Response::LeaseGranted { id, ttl_ms, revision } => {
                    Ok(tonic::Response::new(LeaseGrantResponse { id, ttl_ms, revision }))
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("lease_grant", r)
    }

    async fn revoke(
        &self,
        request: tonic::Request<LeaseRevokeRequest>,
    ) -> Result<tonic::Response<LeaseRevokeResponse>, Status> {
        let r = async {
            let caller = self.admit(&request, Action::Produce)?;
            let LeaseRevokeRequest { id, session: s } = request.into_inner();
            let req = Request::LeaseRevoke { id, session: session(s, &caller) };
            match status::call(&self.handle, req).await? {
                Response::LeaseRevoked { revision } => {
                    Ok(tonic::Response::new(LeaseRevokeResponse { revision }))
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("lease_revoke", r)
    }

    type KeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn keep_alive(
        &self,
        request: tonic::Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::KeepAliveStream>, Status> {
        counted("lease_keep_alive", self.admit(&request, Action::Produce))?;
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let (handle, stop) = (self.handle.clone(), self.stop.clone());
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = stop.stopped() => {
                        // A full buffer means a client that does not read: it sees the end.
                        let _ = tx.try_send(Err(status::shutting_down()));
                        return;
                    }
                    next = requests.next() => next,
                };
                let Some(next) = next else { return };
                let answer = match next {
                    Ok(req) => keep_alive(&handle, req.id).await,
                    // The client's side broke; nobody is left to answer.
                    Err(_) => return,
                };
                let end = answer.is_err();
                if tx.send(counted("lease_keep_alive", answer)).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn time_to_live(
        &self,
        request: tonic::Request<LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<LeaseTimeToLiveResponse>, Status> {
        let r = async {
            self.admit(&request, Action::Consume)?;
            let LeaseTimeToLiveRequest { id, keys } = request.into_inner();
            match status::call(&self.handle, Request::LeaseTimeToLive { id, keys }).await? {
                Response::LeaseTimeToLive(t) => Ok(tonic::Response::new(LeaseTimeToLiveResponse {
                    id: t.id,
                    granted_ttl_ms: t.granted_ttl_ms,
                    remaining_ms: t.remaining_ms,
                    keys: t.keys,
                })),
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("lease_time_to_live", r)
    }
}
