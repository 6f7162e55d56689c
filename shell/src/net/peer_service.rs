//! The `Peer` gRPC service (node to node): Raft message streams and snapshot chunks.
//! (Members join through gossip; see `mokv_core::gossip`.)
//!
//! Only callers with a node certificate get in ([`crate::security::authz::authorize_peer`]): raft-rs's
//! decoder must only see bytes from authenticated peers, and every message is size-bounded.
//! A node certificate is not enough: the caller must be the node each message claims to come
//! from — the stream's `from` and every inner message's `from` (on the Raft and the Snapshot
//! stream alike) must be a Raft id whose name in this node's directory is the certificate's CN
//! ([`mokv_core::Directory::admits_sender`]: a member, or a node being added). Anything else
//! ends the stream with PERMISSION_DENIED ([`PeerRefusals`]); the core checks every message
//! again ([`mokv_core::Node::handle_peer_message_from`]).

use std::sync::Arc;

use mokv_core::{NodeId, PeerPayload};
use mokv_proto::peer::peer_server::Peer;
use mokv_proto::peer::{
    IdentifyRequest, IdentifyResponse, LeaveRequest, LeaveResponse, RaftAck, RaftBatch,
    SnapshotAck, SnapshotChunk,
};
use tonic::{Status, Streaming};

use crate::net::peer_refusals::PeerRefusals;
use crate::node::driver::DriverHandle;
use crate::security::authz::authorize_peer;
use crate::security::identity::{identity_of, Identity};

/// Largest snapshot accepted (reassembled in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct PeerService {
    handle: DriverHandle,
    refusals: Arc<PeerRefusals>,
}

impl PeerService {
    pub fn new(handle: DriverHandle) -> Self {
        Self { handle, refusals: Arc::default() }
    }

    /// `Ok` if `caller` may send as node `from` (see the module documentation).
    fn admit(&self, stream: &'static str, caller: &Identity, from: NodeId) -> Result<(), Status> {
        let admitted = self.handle.with_view(|v| v.directory.admits_sender(&caller.name, from));
        if admitted {
            Ok(())
        } else {
            Err(self.refusals.refuse(stream, &caller.name, Some(from)))
        }
    }

    /// `Ok` if the message claims to come from `from`, the stream's admitted sender.
    fn check_inner(
        &self,
        stream: &'static str,
        caller: &Identity,
        from: NodeId,
        message: &[u8],
    ) -> Result<(), Status> {
        match PeerPayload::sender(message) {
            Some(inner) if inner == from => Ok(()),
            inner => Err(self.refusals.refuse(stream, &caller.name, inner)),
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: tonic::Request<Streaming<RaftBatch>>,
    ) -> Result<tonic::Response<RaftAck>, Status> {
        let caller = authorize_peer(identity_of(&request))?;
        let me = self.handle.id();
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            if batch.to != me {
                return Err(Status::failed_precondition("raft batch for another node"));
            }
            self.admit("raft", &caller, batch.from)?;
            for m in &batch.messages {
                self.check_inner("raft", &caller, batch.from, m)?;
            }
            if batch.messages.is_empty() {
                continue;
            }
            // The whole batch is one input of the driver (one Ready for all its messages);
            // waits for room in the driver's queue: backpressure onto the sender.
            self.handle.peer_batch(&caller.name, batch.messages, false).await?;
        }
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        request: tonic::Request<Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<SnapshotAck>, Status> {
        let caller = authorize_peer(identity_of(&request))?;
        let me = self.handle.id();
        let mut stream = request.into_inner();
        let mut buf: Vec<u8> = Vec::new();
        let mut total: Option<u64> = None;
        let mut from: Option<NodeId> = None;
        while let Some(chunk) = stream.message().await? {
            if chunk.to != me {
                return Err(Status::failed_precondition("snapshot for another node"));
            }
            match from {
                // Checked before a byte is buffered.
                None => {
                    self.admit("snapshot", &caller, chunk.from)?;
                    from = Some(chunk.from);
                }
                Some(f) if f != chunk.from => {
                    return Err(self.refusals.refuse("snapshot", &caller.name, Some(chunk.from)))
                }
                Some(_) => {}
            }
            if chunk.total_bytes > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            match total {
                None => {
                    total = Some(chunk.total_bytes);
                    buf.reserve(chunk.total_bytes as usize);
                }
                Some(t) if t != chunk.total_bytes => {
                    return Err(Status::invalid_argument("snapshot size changed between chunks"))
                }
                Some(_) => {}
            }
            if chunk.offset != buf.len() as u64
                || buf.len() as u64 + chunk.data.len() as u64 > chunk.total_bytes
            {
                return Err(Status::invalid_argument("snapshot chunk out of order"));
            }
            buf.extend_from_slice(&chunk.data);
        }
        let (Some(from), true) = (from, total == Some(buf.len() as u64) && !buf.is_empty()) else {
            return Err(Status::invalid_argument("snapshot incomplete"));
        };
        self.check_inner("snapshot", &caller, from, &buf)?;
        let applied = self.handle.peer_message(&caller.name, buf, true).await?;
        Ok(tonic::Response::new(SnapshotAck { applied }))
    }

    /// Who this node is, for a node verifying what gossip says of it
    /// (`crate::net::identify`): only to callers with a node certificate.
    async fn identify(
        &self,
        request: tonic::Request<IdentifyRequest>,
    ) -> Result<tonic::Response<IdentifyResponse>, Status> {
        authorize_peer(identity_of(&request))?;
        let me = self.handle.id();
        let (name, claim) = self.handle.with_view(|v| {
            (v.directory.get(me).map(|e| e.name.clone()).unwrap_or_default(), v.own_claim.clone())
        });
        let claim = claim.ok_or_else(|| Status::unavailable("this node does not gossip"))?;
        Ok(tonic::Response::new(IdentifyResponse {
            name,
            raft_id: claim.raft_id,
            cluster_id: claim.cluster_id,
            started_ms: claim.started_ms,
            leaving: claim.leaving,
            gossip_addr: claim.gossip_addr,
        }))
    }

    /// The caller leaves the cluster for good (see `mokv_core::Node::handle_peer_leave`):
    /// PERMISSION_DENIED unless `raft_id` is the member named by the caller's certificate.
    async fn leave(
        &self,
        request: tonic::Request<LeaveRequest>,
    ) -> Result<tonic::Response<LeaveResponse>, Status> {
        let caller = authorize_peer(identity_of(&request))?;
        let id = request.get_ref().raft_id;
        match self.handle.peer_leave(&caller.name, id).await? {
            Ok(()) => {
                tracing::info!(name = %caller.name, raft_id = id, "member announced its leave");
                Ok(tonic::Response::new(LeaveResponse {}))
            }
            Err(_) => Err(self.refusals.refuse("leave", &caller.name, Some(id))),
        }
    }
}
