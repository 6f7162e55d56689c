//! The `Peer` gRPC service (node to node): Raft message streams and snapshot chunks.
//! (Members join through gossip; see `mokv_core::gossip`.) A Raft stream ends with
//! UNAVAILABLE when the server stops ([`ServerStop`]).
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
use crate::net::server_stop::ServerStop;
use crate::net::status;
use crate::node::driver::DriverHandle;
use crate::security::authz::authorize_peer;
use crate::security::identity::{identity_of, Identity};
use crate::storage::disk::DiskError;

/// Largest snapshot file accepted by default: received files go to disk one chunk at a time
/// (never held in memory), so the disk bounds them; this only refuses absurd sizes early.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 1 << 40;

#[derive(Debug, Clone)]
pub struct PeerService {
    handle: DriverHandle,
    /// Ends incoming `Raft` streams when the server stops (they never end on their own).
    stop: ServerStop,
    refusals: Arc<PeerRefusals>,
    max_snapshot_bytes: u64,
}

/// Runs `f` (snapshot file I/O) on a blocking thread when the store blocks, else here; its
/// error as a status that names no key or value.
async fn run_io<T: Send + 'static>(
    blocks: bool,
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, Status> {
    let result = if blocks {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| Status::internal("snapshot file task failed"))?
    } else {
        f()
    };
    result.map_err(|e| {
        tracing::warn!(error = %e, "received snapshot refused");
        match e {
            DiskError::SnapshotWrongFile { .. } | DiskError::SnapshotCorrupt { .. } => {
                Status::invalid_argument("snapshot file does not match its reference")
            }
            _ => Status::internal("storing the snapshot file failed"),
        }
    })
}

impl PeerService {
    pub fn new(handle: DriverHandle, stop: ServerStop) -> Self {
        Self {
            handle,
            stop,
            refusals: Arc::default(),
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
        }
    }

    /// Refuses snapshot files larger than `bytes` (`max-snapshot-bytes`).
    pub fn with_max_snapshot_bytes(mut self, bytes: u64) -> Self {
        self.max_snapshot_bytes = bytes;
        self
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
        let mut first = true;
        loop {
            let next = tokio::select! {
                biased;
                () = self.stop.stopped() => return Err(status::shutting_down()),
                next = stream.message() => next?,
            };
            let Some(batch) = next else { break };
            if batch.to != me {
                return Err(Status::failed_precondition("raft batch for another node"));
            }
            self.admit("raft", &caller, batch.from)?;
            if std::mem::take(&mut first) && batch.messages.is_empty() {
                // A greeting: the sender just started (see `net::peer_link`).
                self.handle.peer_started(batch.from);
            }
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
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("snapshot incomplete"));
        };
        if first.to != me {
            return Err(Status::failed_precondition("snapshot for another node"));
        }
        // Checked before a byte is written.
        let from = first.from;
        self.admit("snapshot", &caller, from)?;
        self.check_inner("snapshot", &caller, from, &first.message)?;
        let reference = PeerPayload::snapshot_ref(&first.message)
            .ok_or_else(|| Status::invalid_argument("not a snapshot message"))?;
        if reference.len_bytes > self.max_snapshot_bytes {
            return Err(Status::resource_exhausted("snapshot too large"));
        }
        let message = first.message.clone();
        let storage = self.handle.snapshot_files().clone();
        let blocks = storage.blocks();
        let mut sink = run_io(blocks, move || storage.receive_snapshot(&reference)).await?;
        let mut received = 0u64;
        let mut next = Some(first);
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match stream.message().await? {
                    Some(c) => c,
                    None => break,
                },
            };
            if chunk.to != me {
                return Err(Status::failed_precondition("snapshot for another node"));
            }
            if chunk.from != from {
                return Err(self.refusals.refuse("snapshot", &caller.name, Some(chunk.from)));
            }
            if chunk.total_bytes != reference.len_bytes {
                return Err(Status::invalid_argument("snapshot size changed between chunks"));
            }
            let len = chunk.data.len() as u64;
            if chunk.offset != received || received + len > reference.len_bytes {
                return Err(Status::invalid_argument("snapshot chunk out of order"));
            }
            received += len;
            if len > 0 {
                // One chunk in memory at a time: written (and checked, decoded) before the
                // next is read.
                sink = run_io(blocks, move || {
                    let mut sink = sink;
                    sink.write(&chunk.data).map(|()| sink)
                })
                .await?;
            }
        }
        if received != reference.len_bytes {
            return Err(Status::invalid_argument("snapshot incomplete"));
        }
        let image = run_io(blocks, move || sink.finish()).await?;
        let applied = self.handle.peer_snapshot(&caller.name, message, image).await?;
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
