//! The watch fan-out, owned by the driver: the core's retained history
//! ([`mokv_core::WatchHistory`]) is read here, in the driver task, between drains, so a page
//! and the registration for live events that follows it see the same applied index (no change
//! can fall between catching up and going live).
//!
//! A watcher first pages through the history ([`WatchHub::on_page`], one request per page, paced
//! by its gRPC stream); the page that reaches the end of the history registers it for live
//! events from there. After every drain, [`WatchHub::publish`] takes the changes applied since
//! the last one, once, and queues each live watcher its matching events. A live queue is
//! bounded in bytes ([`WatchPageRequest::queue_max_bytes`]): a watcher whose queue would go
//! over is cancelled as too slow (it may resume from its last revision); an empty queue takes
//! any one drain's changes, so memory per watcher stays under the bound plus one drain's
//! changes. When a snapshot
//! install replaced the history, watchers still expecting the lost revisions are ended with
//! [`Compacted`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mokv_core::{Compacted, KeyFilter, Node, WatchEvent, WatchPage};
use tokio::sync::{mpsc, oneshot, Notify};

/// Why the driver ended a live watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// Its queue would have gone over its byte bound.
    TooSlow,
    /// A snapshot install replaced the history it still needed.
    Compacted(Compacted),
}

/// What the driver hands a live watcher: events of whole revisions, then where to resume.
#[derive(Debug)]
pub struct LiveBatch {
    pub events: Vec<WatchEvent>,
    pub next_revision: u64,
    /// [`WatchEvent::size_bytes`] summed: what the receiver gives back to the queue bound.
    pub bytes: usize,
}

/// The receiving side's share of a live watcher: the queue, its byte count, and how it ended.
#[derive(Debug)]
pub struct LiveSide {
    pub queue: mpsc::UnboundedReceiver<LiveBatch>,
    pub queued_bytes: Arc<AtomicUsize>,
    /// Notified once when the driver ends the watcher; `end` then says why.
    pub ended: Arc<Notify>,
    pub end: Arc<std::sync::OnceLock<WatchEnd>>,
}

/// The driver's share of a live watcher.
#[derive(Debug, Clone)]
pub struct LiveHandle {
    queue: mpsc::UnboundedSender<LiveBatch>,
    queued_bytes: Arc<AtomicUsize>,
    ended: Arc<Notify>,
    end: Arc<std::sync::OnceLock<WatchEnd>>,
}

/// A new live watcher's two ends.
pub fn live_channel() -> (LiveHandle, LiveSide) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(Notify::new());
    let end = Arc::new(std::sync::OnceLock::new());
    let handle = LiveHandle {
        queue: tx,
        queued_bytes: queued_bytes.clone(),
        ended: ended.clone(),
        end: end.clone(),
    };
    (handle, LiveSide { queue: rx, queued_bytes, ended, end })
}

impl LiveHandle {
    fn finish(&self, why: WatchEnd) {
        let _ = self.end.set(why);
        self.ended.notify_one();
    }
}

/// One page request of a watcher (see the module documentation).
#[derive(Debug)]
pub struct WatchPageRequest {
    pub filter: KeyFilter,
    /// `None`: from now (one past what this node applied).
    pub from_revision: Option<u64>,
    pub page_max_bytes: usize,
    /// The live queue's bound; also what a registration counts against.
    pub queue_max_bytes: usize,
    /// Registered for live events when this page reaches the end of the history.
    pub live: LiveHandle,
    pub reply: oneshot::Sender<Result<PageAnswer, Compacted>>,
}

/// A page, and whether the watcher is now live (its next events come through its queue).
#[derive(Debug)]
pub struct PageAnswer {
    pub page: WatchPage,
    /// The revision the page started at (resolves "from now").
    pub start_revision: u64,
    pub live: bool,
}

#[derive(Debug)]
struct Live {
    filter: KeyFilter,
    next_revision: u64,
    queue_max_bytes: usize,
    handle: LiveHandle,
}

/// The driver's live watchers and how far it has published (see the module documentation).
#[derive(Debug)]
pub struct WatchHub {
    live: BTreeMap<u64, Live>,
    next_id: u64,
    /// Changes up to this revision were handed to live watchers: the applied index at the last
    /// publish.
    published: u64,
}

impl WatchHub {
    pub fn new(node: &Node) -> Self {
        Self { live: BTreeMap::new(), next_id: 0, published: node.status().applied_index }
    }

    /// Answers one page request from the history as of the last drain.
    pub fn on_page(&mut self, node: &Node, r: WatchPageRequest) {
        let history = node.watch_history();
        let from = r.from_revision.unwrap_or(self.published + 1);
        let answer = history.page(&r.filter, from, r.page_max_bytes, self.published);
        let answer = answer.map(|page| {
            let live = page.next_revision > self.published;
            if live {
                self.next_id += 1;
                self.live.insert(
                    self.next_id,
                    Live {
                        filter: r.filter,
                        next_revision: page.next_revision,
                        queue_max_bytes: r.queue_max_bytes,
                        handle: r.live,
                    },
                );
            }
            PageAnswer { page, start_revision: from, live }
        });
        let _ = r.reply.send(answer);
    }

    /// Hands every live watcher the changes applied since the last call (after a drain).
    pub fn publish(&mut self, node: &Node) {
        let applied = node.status().applied_index;
        if applied <= self.published {
            return;
        }
        let history = node.watch_history();
        let first = history.first_revision();
        // Gone: cancelled watchers (their receiver dropped) and those that lost revisions.
        let mut gone = Vec::new();
        let mut batches: BTreeMap<u64, LiveBatch> = BTreeMap::new();
        for (id, w) in &self.live {
            if w.handle.queue.is_closed() {
                gone.push(*id);
            } else if w.next_revision < first {
                w.handle.finish(WatchEnd::Compacted(Compacted::new(first)));
                gone.push(*id);
            }
        }
        for e in history.events_from(self.published + 1) {
            for (id, w) in &self.live {
                if e.revision >= w.next_revision && w.filter.matches(e.key()) {
                    let b = batches.entry(*id).or_insert_with(|| LiveBatch {
                        events: Vec::new(),
                        next_revision: applied + 1,
                        bytes: 0,
                    });
                    b.bytes += e.size_bytes();
                    b.events.push(e.clone());
                }
            }
        }
        for (id, batch) in batches {
            let Some(w) = self.live.get(&id) else { continue };
            if gone.contains(&id) {
                continue;
            }
            // An empty queue takes any batch (one drain's changes), so a reader that keeps up
            // is never cancelled for a large commit; a queue that still holds some is bounded.
            let queued = w.handle.queued_bytes.fetch_add(batch.bytes, Ordering::AcqRel);
            if queued > 0 && queued + batch.bytes > w.queue_max_bytes {
                w.handle.finish(WatchEnd::TooSlow);
                gone.push(id);
            } else if w.handle.queue.send(batch).is_err() {
                gone.push(id);
            }
        }
        for id in gone {
            self.live.remove(&id);
        }
        for w in self.live.values_mut() {
            w.next_revision = w.next_revision.max(applied + 1);
        }
        self.published = applied;
    }
}
