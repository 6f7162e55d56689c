//! One outgoing link per peer: a task that delivers the core's transmits to that peer over
//! mTLS, batching Raft messages on ONE long-lived `Peer.Raft` client stream, and sending
//! snapshot messages in chunks on `Peer.Snapshot`.
//!
//! The link's queue is bounded, by messages and by bytes ([`MAX_QUEUED_BYTES`], from the
//! driver's hand-off until the stream hands the batch to HTTP/2, whose window bounds the rest):
//! when it is full the driver drops the message and tells the core the peer is unreachable
//! (raft-rs resends). When the stream breaks the link reports the
//! peer unreachable and opens a new stream for the next messages (at most one attempt per
//! [`REOPEN_INTERVAL`]; HTTP/2 keepalive notices dead connections).
//!
//! A node greets every peer when it starts ([`Links::greet`]: an empty batch on a new stream).
//! A peer that receives a greeting replaces its link to the greeter ([`Links::renew`]), whose
//! old connection died with the greeter's previous process, and a leader sends heartbeats at
//! once: a restarted node hears from its leader a round trip after it starts instead of at the
//! leader's next heartbeat after its link reopened.

use std::collections::BTreeMap;
use std::time::Duration;

use std::io::Read;
use std::sync::Arc;

use mokv_core::{NodeId, SnapshotRef, Transmit};
use mokv_proto::peer::peer_client::PeerClient;
use mokv_proto::peer::{RaftBatch, SnapshotChunk};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
// tokio's clock, not std's: the same in mokvd, and simulated time under a simulator.
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::net::transport::PeerConnector;
use crate::storage::SnapshotStore;

/// Transmits queued per peer.
const LINK_QUEUE: usize = 1024;
/// Batches queued on one stream (HTTP/2 flow control pushes back into it).
const STREAM_QUEUE: usize = 64;
/// Upper bound on the bytes of one `RaftBatch`.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Snapshot chunk size.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the stream (memory of a transfer: this many chunks plus HTTP/2's
/// window).
const SNAPSHOT_READ_AHEAD: usize = 4;
/// A broken stream is reopened at most this often.
const REOPEN_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline of one snapshot transfer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Limit on any one peer gRPC message (both directions).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;
/// Bytes of messages queued on one link, its stream's queue included: a peer that stops
/// reading holds at most this much of the sender's memory (the message counts alone allowed
/// gigabytes). As large as the largest message, so that any message fits in an empty queue.
pub const MAX_QUEUED_BYTES: usize = MAX_PEER_MESSAGE_BYTES;

/// What a link tells the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Unreachable(NodeId),
    Snapshot { to: NodeId, delivered: bool },
}

/// The driver's side of every link: at most one per peer, to the address the driver last
/// routed that peer's messages to, dialing with the connector in force when it was made.
///
/// The connector arrives through a channel wired by whoever started the node (reloaded peer
/// certificates in mokvd); a new one drops every link, so the next message to each peer makes
/// a new link with it.
#[derive(Debug)]
pub struct Links {
    from: NodeId,
    connector: watch::Receiver<PeerConnector>,
    feedback: mpsc::Sender<Feedback>,
    links: BTreeMap<NodeId, Link>,
    /// Where the snapshot files that snapshot messages name are read from.
    storage: Arc<dyn SnapshotStore>,
    /// The runtime the links run on: the one `new` was called on, even when the driver that
    /// owns them runs on a thread of its own (the links' TLS and HTTP/2 work stays off it).
    io: Handle,
}

impl Links {
    /// Links of node `from`, reporting to `feedback`, sending snapshot files from `storage`,
    /// run on the current runtime. Panics outside a runtime.
    pub fn new(
        from: NodeId,
        connector: watch::Receiver<PeerConnector>,
        feedback: mpsc::Sender<Feedback>,
        storage: Arc<dyn SnapshotStore>,
    ) -> Self {
        let io = Handle::current();
        Self { from, connector, feedback, links: BTreeMap::new(), storage, io }
    }

    /// Queues `t` on the link to `t.to` at `addr` without waiting, first making that link if
    /// there is none, its address changed or its task ended; `false` when the message was
    /// dropped (the queue is full).
    pub fn send(&mut self, addr: &str, t: Transmit) -> bool {
        let to = t.to;
        self.link_to(addr, to).try_send(t)
    }

    /// Greets `to` at `addr`: the link opens a stream now unless it has one and sends an empty
    /// batch on it (nothing when its queue is full).
    pub fn greet(&mut self, addr: &str, to: NodeId) {
        let _ = self.link_to(addr, to).tx.try_send(Queued::Greeting);
    }

    /// Replaces the link to `to` with a new one to `addr`, on a new connection, whose first
    /// message opens a stream without waiting out the reopen interval. What the old link has
    /// queued still goes out on the old connection.
    pub fn renew(&mut self, addr: &str, to: NodeId) {
        self.links.remove(&to);
        self.link_to(addr, to);
    }

    /// The link to `to`, first made if there is none, its address changed, its task ended or
    /// the connector was replaced.
    fn link_to(&mut self, addr: &str, to: NodeId) -> &Link {
        if self.connector.has_changed().unwrap_or(false) {
            self.connector.mark_unchanged();
            self.links.clear();
        }
        // The address is copied only when a link is (re)made, not per message.
        let usable = self.links.get(&to).is_some_and(|l| l.addr == addr && !l.is_closed());
        if !usable {
            let peer = self.connector.borrow().clone();
            let link = Link::spawn(
                &self.io,
                self.from,
                to,
                addr.to_owned(),
                peer,
                self.feedback.clone(),
                self.storage.clone(),
            );
            self.links.insert(to, link);
        }
        &self.links[&to]
    }

    /// Drops the links to the peers `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(&NodeId) -> bool) {
        self.links.retain(|id, _| keep(id));
    }

    /// Drops every link.
    pub fn clear(&mut self) {
        self.links.clear();
    }

    /// Messages queued on each link (metrics).
    pub fn queue_depths(&self) -> impl Iterator<Item = (NodeId, usize)> + '_ {
        self.links.iter().map(|(id, l)| (*id, LINK_QUEUE - l.tx.capacity()))
    }
}

/// One link. Dropping it closes its queue; the task still sends what is queued, then ends (the
/// last messages to a member that was just removed carry the commit that tells it so).
#[derive(Debug)]
struct Link {
    addr: String,
    tx: mpsc::Sender<Queued>,
    /// One permit per queued byte ([`MAX_QUEUED_BYTES`] in all); each message holds its own
    /// until the stream hands it to HTTP/2 (or it is dropped).
    bytes: Arc<Semaphore>,
}

/// What a link's task is handed.
#[derive(Debug)]
enum Queued {
    /// A message on its way to the peer, holding its share of the link's byte budget.
    Message { transmit: Transmit, permit: OwnedSemaphorePermit },
    /// See [`Links::greet`].
    Greeting,
}

/// A batch on the stream's queue, holding its messages' bytes of the link's budget (a
/// greeting has none).
type QueuedBatch = (RaftBatch, Option<OwnedSemaphorePermit>);

impl Link {
    fn spawn(
        io: &Handle,
        from: NodeId,
        to: NodeId,
        addr: String,
        peer: PeerConnector,
        feedback: mpsc::Sender<Feedback>,
        storage: Arc<dyn SnapshotStore>,
    ) -> Link {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        io.spawn(run(from, to, addr.clone(), peer, rx, feedback, storage));
        Link { addr, tx, bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)) }
    }

    /// Queues without waiting; `false` when the queue is full, by count or by bytes (or the
    /// task ended).
    fn try_send(&self, transmit: Transmit) -> bool {
        let len = transmit.payload.0.len().clamp(1, MAX_QUEUED_BYTES);
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(len as u32) else {
            return false;
        };
        self.tx.try_send(Queued::Message { transmit, permit }).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// An endpoint to a peer's gRPC port with mTLS (or the embedding program's connector),
/// keepalive and short connect timeouts.
pub fn endpoint(addr: &str, peer: &PeerConnector) -> Result<Endpoint, tonic::transport::Error> {
    Ok(peer
        .secure(Endpoint::from_shared(format!("{}://{addr}", peer.scheme()))?)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(4))
        .keep_alive_while_idle(true))
}

pub fn client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

async fn run(
    from: NodeId,
    to: NodeId,
    addr: String,
    peer: PeerConnector,
    mut rx: mpsc::Receiver<Queued>,
    feedback: mpsc::Sender<Feedback>,
    storage: Arc<dyn SnapshotStore>,
) {
    let client = match endpoint(&addr, &peer) {
        Ok(e) => client(peer.connect_lazy(e)),
        Err(e) => {
            tracing::warn!(peer = to, %addr, error = %e, "bad peer address");
            // Keep reporting until the driver replaces the link (address change).
            while let Some(q) = rx.recv().await {
                if let Queued::Message { transmit, .. } = q {
                    report_failure(&feedback, to, transmit.is_snapshot).await;
                }
            }
            return;
        }
    };
    let mut stream: Option<mpsc::Sender<QueuedBatch>> = None;
    let mut last_open: Option<Instant> = None;
    let mut held: Option<Queued> = None;
    loop {
        let next = match held.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let (first, mut batch_permit) = match next {
            Queued::Message { transmit, permit } => (transmit, permit),
            Queued::Greeting => {
                if stream.as_ref().is_none_or(|s| s.is_closed()) {
                    last_open = Some(Instant::now());
                    let s = open_stream(&client, to);
                    let _ = s.try_send((RaftBatch { from, to, messages: Vec::new() }, None));
                    stream = Some(s);
                }
                continue;
            }
        };
        if first.is_snapshot {
            drop(batch_permit);
            let started = Instant::now();
            let delivered = match first.snapshot {
                Some(file) => {
                    let (c, s) = (client.clone(), storage.clone());
                    send_snapshot(c, from, to, first.payload.0, file, s).await
                }
                None => false,
            };
            crate::metrics::snapshot_transfer(delivered, started.elapsed().as_secs_f64());
            let _ = feedback.send(Feedback::Snapshot { to, delivered }).await;
            continue;
        }
        let mut bytes = first.payload.0.len();
        let mut messages = vec![first.payload.0];
        while bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(Queued::Message { transmit, permit }) if !transmit.is_snapshot => {
                    bytes += transmit.payload.0.len();
                    messages.push(transmit.payload.0);
                    batch_permit.merge(permit);
                }
                // A snapshot goes on a stream of its own; a greeting after this batch.
                Ok(q) => {
                    held = Some(q);
                    break;
                }
                Err(_) => break,
            }
        }
        let open = match &stream {
            Some(s) if !s.is_closed() => Some(s.clone()),
            _ => {
                stream = None;
                if last_open.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
                    None
                } else {
                    last_open = Some(Instant::now());
                    let tx = open_stream(&client, to);
                    stream = Some(tx.clone());
                    Some(tx)
                }
            }
        };
        let sent = match open {
            Some(s) => s.try_send((RaftBatch { from, to, messages }, Some(batch_permit))).is_ok(),
            None => false,
        };
        if !sent {
            crate::metrics::peer_dropped(to);
            let _ = feedback.try_send(Feedback::Unreachable(to));
        }
    }
}

/// Opens a `Peer.Raft` stream on `client` (connecting if needed) fed by the returned queue.
fn open_stream(client: &PeerClient<Channel>, to: NodeId) -> mpsc::Sender<QueuedBatch> {
    let (tx, srx) = mpsc::channel(STREAM_QUEUE);
    let mut c = client.clone();
    // A batch's bytes leave the budget as HTTP/2 takes the batch.
    let batches = ReceiverStream::new(srx).map(|(batch, _permit)| batch);
    tokio::spawn(async move {
        if let Err(e) = c.raft(batches).await {
            tracing::debug!(peer = to, error = %e, "raft stream ended");
        }
    });
    tx
}

async fn report_failure(feedback: &mpsc::Sender<Feedback>, to: NodeId, is_snapshot: bool) {
    if is_snapshot {
        let _ = feedback.send(Feedback::Snapshot { to, delivered: false }).await;
    } else {
        let _ = feedback.try_send(Feedback::Unreachable(to));
    }
}

/// Sends a snapshot message and the file it names, read chunk by chunk (on a blocking thread
/// for a disk that blocks) a few chunks ahead of the stream. `false` when the file is gone (a
/// newer snapshot replaced it: raft-rs retries with that one), could not be read, or the
/// receiver refused it.
async fn send_snapshot(
    mut client: PeerClient<Channel>,
    from: NodeId,
    to: NodeId,
    message: Vec<u8>,
    file: SnapshotRef,
    storage: Arc<dyn SnapshotStore>,
) -> bool {
    let blocks = storage.blocks();
    let open = move || storage.read_snapshot(&file);
    let opened = if blocks {
        match tokio::task::spawn_blocking(open).await {
            Ok(r) => r,
            Err(_) => return false,
        }
    } else {
        open()
    };
    let reader = match opened {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(peer = to, error = %e, "snapshot file not sent");
            return false;
        }
    };
    let mut chunks =
        FileChunks { reader, from, to, file, message: Some(message), offset: 0, done: false };
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(SNAPSHOT_READ_AHEAD);
    if blocks {
        tokio::task::spawn_blocking(move || {
            for chunk in chunks.by_ref() {
                if tx.blocking_send(chunk).is_err() {
                    break;
                }
            }
        });
    } else {
        tokio::spawn(async move {
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
    }
    let call = client.snapshot(ReceiverStream::new(rx));
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, call).await {
        Ok(Ok(r)) => r.into_inner().applied,
        Ok(Err(e)) => {
            tracing::warn!(peer = to, error = %e, "snapshot transfer failed");
            false
        }
        Err(_) => {
            tracing::warn!(peer = to, "snapshot transfer timed out");
            false
        }
    }
}

/// The chunks of one snapshot transfer: the message in the first, the file's bytes in order.
/// A read error ends them early (the receiver then refuses the incomplete file).
struct FileChunks {
    reader: Box<dyn Read + Send>,
    from: NodeId,
    to: NodeId,
    file: SnapshotRef,
    message: Option<Vec<u8>>,
    offset: u64,
    done: bool,
}

impl Iterator for FileChunks {
    type Item = SnapshotChunk;

    fn next(&mut self) -> Option<SnapshotChunk> {
        if self.done {
            return None;
        }
        let mut data = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let n = match read_full(&mut *self.reader, &mut data) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(peer = self.to, error = %e, "reading a snapshot file failed");
                self.done = true;
                return None;
            }
        };
        data.truncate(n);
        self.done = n < SNAPSHOT_CHUNK_BYTES;
        if n == 0 && self.message.is_none() {
            return None;
        }
        let chunk = SnapshotChunk {
            from: self.from,
            to: self.to,
            total_bytes: self.file.len_bytes,
            offset: self.offset,
            data,
            message: self.message.take().unwrap_or_default(),
        };
        self.offset += n as u64;
        Some(chunk)
    }
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mokv_core::PeerPayload;
    use tonic::transport::ClientTlsConfig;

    use crate::storage::MemorySnapshots;

    /// A peer that never answers (its TLS handshake never completes) holds at most
    /// `MAX_QUEUED_BYTES` of the sender's memory: messages past that are refused, although the
    /// queue has room for many more by count.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stalled_peer_holds_at_most_the_queued_byte_budget() {
        crate::install_crypto_provider();
        // Connections complete in the kernel's backlog; nothing ever reads or answers them.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let tls = ClientTlsConfig::new().domain_name("localhost");
        let (_connector_tx, connector) = watch::channel(PeerConnector::Tls(tls));
        let (feedback, _feedback_rx) = mpsc::channel(16);
        let mut links = Links::new(1, connector, feedback, Arc::new(MemorySnapshots::default()));
        let message_bytes = 1 << 20;
        let fit = MAX_QUEUED_BYTES / message_bytes;
        assert!(fit + 16 < LINK_QUEUE, "the count bound alone would take every message");
        // No await between the sends: the link's task does not run, so every accepted
        // message is still queued when the next one is offered.
        let accepted: Vec<bool> = (0..fit + 16)
            .map(|_| {
                let payload = PeerPayload(vec![7; message_bytes]);
                links.send(&addr, Transmit { to: 2, payload, is_snapshot: false, snapshot: None })
            })
            .collect();
        assert!(accepted[..fit].iter().all(|a| *a), "messages within the budget are queued");
        assert!(accepted[fit..].iter().all(|a| !*a), "messages past the budget are refused");
    }
}
