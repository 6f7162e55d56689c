//! The `Maintenance` gRPC service (package `api`): cluster operations for the operator.
//!
//! `Snapshot` streams a backup file (mokv-core's `backup` format). Authorization: the `admin`
//! action on the `cluster` object. The node confirms a linearizable read point and copies the
//! key map once on its driver when the read is served (the core's `Request::Backup`); the copy
//! is then encoded on a blocking thread, chunk by chunk, into a channel of
//! [`SNAPSHOT_BUFFER_CHUNKS`] chunks, so the driver never encodes and a slow reader holds at
//! most the copy plus a few chunks (never the whole encoding).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mokv_core::{Request, Response};
use mokv_proto::api::maintenance_server::Maintenance;
use mokv_proto::api::{SnapshotChunk, SnapshotRequest, SnapshotSummary};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

use crate::net::status;
use crate::node::driver::DriverHandle;
use crate::security::authz::{Action, Authorizer, CLUSTER_OBJECT};
use crate::security::identity::identity_of;

/// Bytes of file per streamed chunk (well under gRPC's 4 MiB default message limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks queued between the encoder thread and the gRPC stream.
const SNAPSHOT_BUFFER_CHUNKS: usize = 2;

#[derive(Debug, Clone)]
pub struct MaintenanceService {
    handle: DriverHandle,
    stopping: Arc<AtomicBool>,
    authz: Authorizer,
}

impl MaintenanceService {
    /// `stopping` turns every new request away during shutdown; `authz` decides who may.
    pub fn new(handle: DriverHandle, stopping: Arc<AtomicBool>, authz: Authorizer) -> Self {
        Self { handle, stopping, authz }
    }

    fn admit<T>(&self, req: &tonic::Request<T>) -> Result<(), Status> {
        self.authz.snapshot().check(identity_of(req), Action::Admin, CLUSTER_OBJECT)?;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(status::shutting_down());
        }
        Ok(())
    }
}

fn counted<T>(rpc: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    crate::metrics::request(rpc, r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
    r
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

    async fn snapshot(
        &self,
        request: tonic::Request<SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        let r = async {
            self.admit(&request)?;
            match status::call(&self.handle, Request::Backup).await? {
                Response::Backup(source) => Ok(source),
                _ => Err(Status::internal("unexpected answer from the core")),
            }
        }
        .await;
        let source = counted("snapshot", r)?;
        let info = *source.info();
        tracing::info!(
            applied_index = info.applied_index,
            keys = info.keys,
            file_bytes = info.file_bytes(),
            "streaming a backup"
        );
        let (tx, rx) = mpsc::channel(SNAPSHOT_BUFFER_CHUNKS);
        tokio::task::spawn_blocking(move || {
            let mut summary = Some(SnapshotSummary {
                applied_index: info.applied_index,
                keys: info.keys,
                file_bytes: info.file_bytes(),
                cluster_id: info.cluster_id.unwrap_or(0),
            });
            for data in source.encoder(SNAPSHOT_CHUNK_BYTES) {
                let chunk = SnapshotChunk { data, summary: summary.take() };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return; // the client went away: stop encoding, drop the copy
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
