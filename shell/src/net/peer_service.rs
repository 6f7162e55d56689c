//! The `Peer` gRPC service (node to node): Raft message streams and snapshot chunks.
//! (Members join through gossip; see `mokv_core::gossip`.)
//!
//! Only callers with a node certificate get in ([`crate::security::authz::authorize_peer`]): raft-rs's
//! decoder must only see bytes from authenticated peers, and every message is size-bounded.

use mokv_proto::peer::peer_server::Peer;
use mokv_proto::peer::{RaftAck, RaftBatch, SnapshotAck, SnapshotChunk};
use tonic::{Status, Streaming};

use crate::node::driver::DriverHandle;
use crate::security::authz::authorize_peer;
use crate::security::identity::identity_of;

/// Largest snapshot accepted (reassembled in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct PeerService {
    handle: DriverHandle,
}

impl PeerService {
    pub fn new(handle: DriverHandle) -> Self {
        Self { handle }
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
            // A known member speaks only with its own certificate (its name is its CN).
            let impostor = self
                .handle
                .with_view(|v| v.members.get(&batch.from).is_some_and(|m| m.name != caller.name));
            if impostor {
                return Err(Status::permission_denied("raft batch from another node's identity"));
            }
            if batch.messages.is_empty() {
                continue;
            }
            // The whole batch is one input of the driver (one Ready for all its messages);
            // waits for room in the driver's queue: backpressure onto the sender.
            self.handle.peer_batch(batch.messages, false).await?;
        }
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        request: tonic::Request<Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<SnapshotAck>, Status> {
        authorize_peer(identity_of(&request))?;
        let me = self.handle.id();
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
}
