//! The `Peer` gRPC service (node to node): Raft message streams, snapshot chunks, join.
//!
//! Only callers with a node certificate get in ([`crate::authz::authorize_peer`]): raft-rs's
//! decoder must only see bytes from authenticated peers, and every message is size-bounded.

use mokv_core::{Error, MemberInfo, Request, Response};
use mokv_proto::peer::peer_server::Peer;
use mokv_proto::peer::{JoinRequest, JoinResponse, RaftAck, RaftBatch, SnapshotAck, SnapshotChunk};
use tonic::{Status, Streaming};

use crate::authz::authorize_peer;
use crate::driver::DriverHandle;
use crate::tls::identity_of;

/// Largest snapshot accepted (reassembled in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct PeerService {
    handle: DriverHandle,
    /// This node's advertised rpc (= peer) address, returned to joiners.
    self_addr: String,
    cluster_id: String,
}

impl PeerService {
    pub fn new(handle: DriverHandle, self_addr: String, cluster_id: String) -> Self {
        Self { handle, self_addr, cluster_id }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: tonic::Request<Streaming<RaftBatch>>,
    ) -> Result<tonic::Response<RaftAck>, Status> {
        authorize_peer(identity_of(&request))?;
        let me = self.handle.view().status.id;
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            if batch.to != me {
                return Err(Status::failed_precondition("raft batch for another node"));
            }
            for m in batch.messages {
                // Waits for room in the driver's queue: backpressure onto the sender.
                self.handle.peer_message(m, false).await?;
            }
        }
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        request: tonic::Request<Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<SnapshotAck>, Status> {
        authorize_peer(identity_of(&request))?;
        let me = self.handle.view().status.id;
        let mut stream = request.into_inner();
        let mut buf: Vec<u8> = Vec::new();
        let mut total: Option<u64> = None;
        while let Some(chunk) = stream.message().await? {
            if chunk.to != me {
                return Err(Status::failed_precondition("snapshot for another node"));
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
        if total != Some(buf.len() as u64) || buf.is_empty() {
            return Err(Status::invalid_argument("snapshot incomplete"));
        }
        let applied = self.handle.peer_message(buf, true).await?;
        Ok(tonic::Response::new(SnapshotAck { applied }))
    }

    async fn join(
        &self,
        request: tonic::Request<JoinRequest>,
    ) -> Result<tonic::Response<JoinResponse>, Status> {
        let caller = authorize_peer(identity_of(&request))?;
        let r = request.into_inner();
        // A node joins under the name its certificate proves.
        if caller.name != r.node_name {
            return Err(Status::permission_denied("node-name differs from the certificate's CN"));
        }
        if r.raft_id == 0 || r.rpc_addr.is_empty() || r.peer_addr.is_empty() {
            return Err(Status::invalid_argument("join needs a raft id and addresses"));
        }
        if !r.cluster_id.is_empty() && r.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(
                "the joining node already belongs to another cluster",
            ));
        }
        let view = self.handle.view();
        let accepted = |view: &crate::driver::View| JoinResponse {
            accepted: true,
            leader_id: view.status.leader.unwrap_or(0),
            leader_rpc_addr: view
                .leader_hint
                .as_ref()
                .map(|h| h.rpc_addr.clone())
                .unwrap_or_default(),
            cluster_id: self.cluster_id.clone(),
        };
        if view.members.contains_key(&r.raft_id) {
            // Already added (an earlier answer was lost): joining again is a no-op.
            return Ok(tonic::Response::new(accepted(&view)));
        }
        let info = MemberInfo {
            id: r.raft_id,
            name: r.node_name,
            peer_addr: r.peer_addr,
            rpc_addr: r.rpc_addr,
            auto_promote: true,
        };
        tracing::info!(id = info.id, name = %info.name, addr = %info.rpc_addr, "join request");
        match self.handle.call(Request::AddLearner { info }).await? {
            Ok(Response::Membership { .. }) | Ok(_) => {
                let mut resp = accepted(&self.handle.view());
                resp.leader_id = self.handle.view().status.id;
                resp.leader_rpc_addr = self.self_addr.clone();
                Ok(tonic::Response::new(resp))
            }
            Err(Error::NotLeader { leader: Some(h) }) => Ok(tonic::Response::new(JoinResponse {
                accepted: false,
                leader_id: h.id,
                leader_rpc_addr: h.rpc_addr,
                cluster_id: self.cluster_id.clone(),
            })),
            Err(e) => Err(crate::status::from_core(&e, view.leader_hint.as_ref())),
        }
    }
}
