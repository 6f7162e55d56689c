//! Operator calls on the `Maintenance` service: [`Client::snapshot`] streams a backup file.

use mokv_proto::api::maintenance_client::MaintenanceClient;
use mokv_proto::api::{SnapshotChunk, SnapshotRequest};
use tokio::time::Instant;
use tonic::{Code, Streaming};

use crate::retry::backoff;
use crate::{lock, Client, ClientError, ReadFrom};

/// What a node said about the backup it streams (from its first chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The log index the data is as of (mokv revisions are log indices).
    pub applied_index: u64,
    /// Number of keys.
    pub keys: u64,
    /// Length of the whole file.
    pub file_bytes: u64,
    /// The cluster's id (0 if the node had none).
    pub cluster_id: u64,
}

/// A backup file arriving chunk by chunk from one node ([`Client::snapshot`]).
#[derive(Debug)]
pub struct SnapshotStream {
    /// The node's summary of the file.
    pub summary: SnapshotSummary,
    /// The node it comes from.
    pub node: String,
    first: Option<Vec<u8>>,
    rest: Streaming<SnapshotChunk>,
    chunk_timeout: std::time::Duration,
}

impl SnapshotStream {
    /// The next bytes of the file, `None` at its end. Each chunk must arrive within the
    /// client's request timeout.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let lost = || ClientError::Unavailable {
            attempts: 1,
            last: "the snapshot stream stopped before its end".into(),
        };
        match tokio::time::timeout(self.chunk_timeout, self.rest.message()).await {
            Ok(Ok(Some(chunk))) => Ok(Some(chunk.data)),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::Unknown) => Err(lost()),
            Ok(Err(s)) => Err(ClientError::from_status(&s)),
            Err(_) => Err(lost()),
        }
    }
}

impl Client {
    /// Starts streaming a backup of every key (the `Maintenance.Snapshot` rpc; needs the
    /// `admin` action on `cluster`). The answering node confirms a linearizable read point
    /// first, so the file holds every write acknowledged before this call. The leader is asked
    /// first; opening the stream is retried on other nodes within the call timeout, the
    /// stream itself is not (start again on failure).
    pub async fn snapshot(&self) -> Result<SnapshotStream, ClientError> {
        self.start();
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.call_timeout;
        let mut avoid: Vec<String> = Vec::new();
        let mut last = String::from("no attempt was made");
        let mut attempts = 0u32;
        while Instant::now() < deadline {
            attempts += 1;
            let picked = {
                let mut view = lock(&inner.view);
                view.pick_read(ReadFrom::Leader, &avoid).map(|t| {
                    view.finished(&t.uri);
                    (t.uri.clone(), view.dialer().channel(&t.uri))
                })
            };
            let Some((uri, channel)) = picked else { break };
            let mut client = MaintenanceClient::new(channel?);
            let until = (Instant::now() + inner.request_timeout).min(deadline);
            let opened = tokio::time::timeout_at(until, async {
                let mut rest = client.snapshot(SnapshotRequest {}).await?.into_inner();
                let first = rest.message().await?;
                Ok::<_, tonic::Status>((rest, first))
            })
            .await;
            let addr = crate::transport::addr_of(&uri).to_owned();
            match opened {
                Ok(Ok((rest, Some(first)))) => {
                    let s = first.summary.unwrap_or_default();
                    let summary = SnapshotSummary {
                        applied_index: s.applied_index,
                        keys: s.keys,
                        file_bytes: s.file_bytes,
                        cluster_id: s.cluster_id,
                    };
                    return Ok(SnapshotStream {
                        summary,
                        node: addr,
                        first: Some(first.data),
                        rest,
                        chunk_timeout: inner.request_timeout,
                    });
                }
                Ok(Ok((_, None))) => last = format!("{addr}: empty snapshot stream"),
                Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                    last = format!("{addr}: {:?}: {}", s.code(), s.message());
                }
                Ok(Err(s)) => return Err(ClientError::from_status(&s)),
                Err(_) => last = format!("{addr}: no answer in time"),
            }
            avoid.push(uri);
            if avoid.len() >= lock(&inner.view).len() {
                avoid.clear();
                backoff(attempts, &inner.rng, deadline).await;
            }
        }
        Err(ClientError::Unavailable { attempts, last })
    }
}
