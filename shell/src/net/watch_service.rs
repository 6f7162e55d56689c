//! The `Watch` gRPC service (package `api`, proto/watch.proto): a stream of the changes of a
//! key or a prefix, served by any node (leader, follower or learner) from its own applied
//! history.
//!
//! Per watch, one task pages through the node's retained history from the start revision
//! (each page one request to the driver, sent on before the next is asked for: the client's
//! reading paces the catch-up), until a page reaches the end of the history; the driver then
//! registers the watch for live events ([`crate::node::watch_hub`]), with no gap and no
//! repeat between the two. A start revision the node has not applied yet waits for it (a
//! follower that is behind catches up first).
//!
//! Statuses: a start revision older than the node's retained history is OUT_OF_RANGE with the
//! oldest available revision in the `mokv-oldest-revision` metadata (another node may retain
//! more: a node that installed a snapshot keeps no history before it); a watcher whose live
//! queue passes `watch-queue-max-bytes` is cancelled with RESOURCE_EXHAUSTED "watcher too slow"
//! (resume from the last revision + 1); a node that stops ends its watches with UNAVAILABLE
//! (when its server stops, [`ServerStop`]: a watch does not hold the drain open).
//! Messages never carry keys or values.
//!
//! Authorization: a key watch needs `consume` on the key; a prefix watch `consume` on
//! `prefix*` (the object a `Range` of that prefix needs, see [`crate::security::authz`]). As
//! with `Range`, each event's key is also checked and events the caller may not consume are
//! left out (only models with rules other than plain prefixes ever drop one).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use mokv_core::{Compacted, KeyFilter, WatchEventKind};
use mokv_proto::api::watch_server::Watch;
use mokv_proto::api::{EventType, WatchEvent, WatchRequest, WatchResponse};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;

use crate::net::server_stop::ServerStop;
use crate::net::status;
use crate::node::driver::DriverHandle;
use crate::node::watch_hub::{
    live_channel, LiveHandle, LiveSide, PageAnswer, WatchEnd, WatchPageRequest,
};
use crate::security::authz::{range_object, Action, Authorizer, Policy};
use crate::security::identity::identity_of;

/// Metadata key of an OUT_OF_RANGE (compacted) answer: the oldest revision a watch can start
/// from on this node.
pub const OLDEST_REVISION_KEY: &str = "mokv-oldest-revision";
/// Default of `watch-queue-max-bytes`.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 4 << 20;
/// Responses queued between a watch's task and its gRPC stream.
const STREAM_BUFFER: usize = 2;

/// Bounds of one watch.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// Bytes of events one response carries at most during catch-up (a revision is never
    /// split, so one response may exceed it by one revision).
    pub page_max_bytes: usize,
    /// Bytes of live events queued for a watcher before it is cancelled as too slow.
    pub queue_max_bytes: usize,
    /// Keys longer than this are refused (the node's `max-key-bytes`).
    pub max_key_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct WatchService {
    handle: DriverHandle,
    stopping: Arc<AtomicBool>,
    /// Ends every watch (UNAVAILABLE) when the server stops.
    stop: ServerStop,
    authz: Authorizer,
    limits: WatchLimits,
}

impl WatchService {
    pub fn new(
        handle: DriverHandle,
        stopping: Arc<AtomicBool>,
        stop: ServerStop,
        authz: Authorizer,
        limits: WatchLimits,
    ) -> Self {
        Self { handle, stopping, stop, authz, limits }
    }
}

/// The status of a compacted start.
pub fn compacted(c: Compacted) -> Status {
    let mut s = Status::out_of_range(format!(
        "watch start revision is compacted; the oldest available revision is {}",
        c.oldest_revision
    ));
    if let Ok(v) = c.oldest_revision.to_string().parse() {
        s.metadata_mut().insert(OLDEST_REVISION_KEY, v);
    }
    s
}

fn too_slow() -> Status {
    Status::resource_exhausted("watcher too slow; resume from the last revision received + 1")
}

/// One page from the driver.
async fn page(
    handle: &DriverHandle,
    filter: &KeyFilter,
    from_revision: Option<u64>,
    limits: WatchLimits,
    live: &LiveHandle,
) -> Result<PageAnswer, Status> {
    let (reply, rx) = oneshot::channel();
    let request = WatchPageRequest {
        filter: filter.clone(),
        from_revision,
        page_max_bytes: limits.page_max_bytes,
        queue_max_bytes: limits.queue_max_bytes,
        live: live.clone(),
        reply,
    };
    handle.watch_page(request).await.map_err(|_| status::shutting_down())?;
    match rx.await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(c)) => Err(compacted(c)),
        Err(_) => Err(status::shutting_down()),
    }
}

/// What one watch sends: its filter, whether previous values go out, and who may see what.
struct Sender {
    tx: mpsc::Sender<WatchResponse>,
    prev_value: bool,
    policy: Policy,
    caller: String,
}

impl Sender {
    /// Sends one response; `false` when the client is gone.
    async fn send(
        &self,
        events: Vec<mokv_core::WatchEvent>,
        next_revision: u64,
        start_revision: u64,
    ) -> bool {
        let events = events
            .into_iter()
            .filter(|e| self.policy.allows(&self.caller, e.key(), Action::Consume))
            .map(|e| {
                let (prev_value, has_prev_value) = match e.prev_value() {
                    Some(p) if self.prev_value => (p.to_vec(), true),
                    _ => (Vec::new(), false),
                };
                WatchEvent {
                    r#type: i32::from(match e.kind {
                        WatchEventKind::Put => EventType::Put,
                        WatchEventKind::Delete => EventType::Delete,
                    }),
                    key: e.key().to_owned(),
                    value: e.value().to_vec(),
                    revision: e.revision,
                    prev_value,
                    has_prev_value,
                }
            })
            .collect();
        let response = WatchResponse { events, next_revision, start_revision };
        self.tx.send(response).await.is_ok()
    }
}

/// Pages through the history, then forwards live events, until the client goes or the watch
/// ends; the ending status goes to `end`.
#[allow(clippy::too_many_arguments)]
async fn run(
    handle: DriverHandle,
    filter: KeyFilter,
    limits: WatchLimits,
    first: PageAnswer,
    (live, mut side): (LiveHandle, LiveSide),
    sender: Sender,
    end: Arc<OnceLock<Status>>,
) {
    let start = first.start_revision;
    let mut live_now = first.live;
    let mut answer = first;
    let mut first_response = true;
    loop {
        let PageAnswer { page, .. } = answer;
        let next = page.next_revision;
        if (first_response || !page.events.is_empty())
            && !sender.send(page.events, next, start).await
        {
            return;
        }
        first_response = false;
        if live_now {
            break;
        }
        answer = match self::page(&handle, &filter, Some(next), limits, &live).await {
            Ok(a) => a,
            Err(s) => {
                let _ = end.set(s);
                return;
            }
        };
        live_now = answer.live;
    }
    loop {
        let batch = tokio::select! {
            biased;
            () = side.ended.notified() => break,
            // The client went away while its keys were quiet: nothing else would notice.
            () = sender.tx.closed() => return,
            batch = side.queue.recv() => batch,
        };
        let Some(batch) = batch else {
            let _ = end.set(status::shutting_down());
            return;
        };
        side.queued_bytes.fetch_sub(batch.bytes, Ordering::AcqRel);
        let sent = tokio::select! {
            biased;
            () = side.ended.notified() => break,
            sent = sender.send(batch.events, batch.next_revision, start) => sent,
        };
        if !sent {
            return;
        }
    }
    let status = match side.end.get() {
        Some(WatchEnd::TooSlow) | None => too_slow(),
        Some(WatchEnd::Compacted(c)) => compacted(*c),
    };
    let _ = end.set(status);
}

/// The response stream: the task's responses, then its ending status if it set one.
pub struct WatchResponses {
    rx: mpsc::Receiver<WatchResponse>,
    end: Arc<OnceLock<Status>>,
    done: bool,
}

impl Stream for WatchResponses {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(Some(Ok(r))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.end.get().cloned().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: tonic::Request<WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let policy = self.authz.snapshot();
        let r = request.get_ref();
        let object = if r.prefix { range_object(&r.key) } else { r.key.clone() };
        let caller = policy.check(identity_of(&request), Action::Consume, &object)?;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(status::shutting_down());
        }
        let r = request.into_inner();
        if !r.prefix && r.key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        if r.key.len() > self.limits.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, the limit is {}",
                r.key.len(),
                self.limits.max_key_bytes
            )));
        }
        let filter = if r.prefix { KeyFilter::Prefix(r.key) } else { KeyFilter::Key(r.key) };
        let from = (r.start_revision != 0).then_some(r.start_revision);
        // The first page is asked here so that a compacted start is the rpc's own status.
        let (live, side) = live_channel();
        let first = page(&self.handle, &filter, from, self.limits, &live).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let end = Arc::new(OnceLock::new());
        let sender = Sender { tx, prev_value: r.prev_value, policy, caller: caller.name };
        let (handle, stop, ended, limits) =
            (self.handle.clone(), self.stop.clone(), end.clone(), self.limits);
        tokio::spawn(async move {
            tokio::select! {
                () = run(handle, filter, limits, first, (live, side), sender, ended.clone()) => {}
                () = stop.stopped() => {
                    let _ = ended.set(status::shutting_down());
                }
            }
        });
        Ok(tonic::Response::new(WatchResponses { rx, end, done: false }))
    }
}
