//! The retained history of applied changes that watches are served from.
//!
//! Every replica (followers and learners included) records one [`WatchEvent`] per key a
//! committed write changed, when it applies the entry, in log order. The history is a window:
//! bounded by bytes and by revisions (log indices), oldest revisions evicted first, always
//! whole revisions (a transaction's events share one revision and are kept or dropped together),
//! so that "every event at or after [`WatchHistory::first_revision`]" stays exact.
//!
//! The history is not part of snapshots: a node that installs a snapshot at index `S` (or
//! starts from one) cannot know the changes before it, so its history restarts at `S + 1` and a
//! watch from an older revision is told [`Compacted`] with the oldest revision it can serve.

use std::collections::VecDeque;

use crate::kv::Entry;

/// What one event costs towards [`HistoryLimits::max_bytes`] besides its key and values: its
/// fixed fields, and the fixed part of its gRPC encoding, rounded up.
pub const EVENT_OVERHEAD_BYTES: usize = 48;

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    /// The key was created or overwritten.
    Put,
    /// The key existed and was deleted (a delete of an absent key changes nothing and has no
    /// event).
    Delete,
}

/// One change of one key, as applied at log index `revision`.
///
/// The key and values are the data map's own blocks ([`Entry`]), shared, not copied: an event
/// costs its fixed fields plus, once its key is written again, the old value it keeps alive.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    /// The log index of the write: the key's `mod_index` after a `Put`.
    pub revision: u64,
    /// A `Put`'s new block; a `Delete`'s removed one.
    entry: Entry,
    /// A `Put`'s replaced block, if the key existed.
    replaced: Option<Entry>,
}

impl WatchEvent {
    /// `entry` was written at `revision`, replacing `replaced`.
    pub fn put(revision: u64, entry: Entry, replaced: Option<Entry>) -> Self {
        WatchEvent { kind: WatchEventKind::Put, revision, entry, replaced }
    }

    /// `removed` was deleted at `revision`.
    pub fn delete(revision: u64, removed: Entry) -> Self {
        WatchEvent { kind: WatchEventKind::Delete, revision, entry: removed, replaced: None }
    }

    pub fn key(&self) -> &str {
        self.entry.key()
    }

    /// The new value of a `Put`; empty for a `Delete`.
    pub fn value(&self) -> &[u8] {
        match self.kind {
            WatchEventKind::Put => self.entry.value(),
            WatchEventKind::Delete => &[],
        }
    }

    /// The value before the change (`None`: the key did not exist).
    pub fn prev_value(&self) -> Option<&[u8]> {
        match self.kind {
            WatchEventKind::Put => self.replaced.as_ref().map(Entry::value),
            WatchEventKind::Delete => Some(self.entry.value()),
        }
    }

    /// What the event costs towards the history's byte bound (and a watcher's queue): the
    /// bytes its answer carries, as if key and values were its own.
    pub fn size_bytes(&self) -> usize {
        self.key().len()
            + self.value().len()
            + self.prev_value().map_or(0, <[u8]>::len)
            + EVENT_OVERHEAD_BYTES
    }
}

impl PartialEq for WatchEvent {
    /// Same change: kind, revision, key, value and previous value (not only the key, which is
    /// all an [`Entry`] compares).
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.revision, self.key(), self.value(), self.prev_value())
            == (other.kind, other.revision, other.key(), other.value(), other.prev_value())
    }
}

impl Eq for WatchEvent {}

/// Which keys a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFilter {
    /// Exactly this key.
    Key(String),
    /// Every key starting with this ("" = every key).
    Prefix(String),
}

impl KeyFilter {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyFilter::Key(k) => k == key,
            KeyFilter::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// How much history a replica keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Bytes of events ([`WatchEvent::size_bytes`]) kept at most.
    pub max_bytes: u64,
    /// Revisions (log indices) kept at most: events older than the newest recorded revision
    /// minus this are evicted.
    pub max_revisions: u64,
}

impl Default for HistoryLimits {
    /// 16 MiB: the events share the data map's blocks, so what the history really keeps alive
    /// is mostly the previous values of rewritten keys; at 1M keys of 256-byte values under
    /// rewrites, 64 MiB kept ≈ 35 MiB of them per node. 16 MiB are ≈ 28,000 such rewrites —
    /// seconds of history at full write load, hours at a few writes per second.
    fn default() -> Self {
        Self { max_bytes: 16 << 20, max_revisions: 100_000 }
    }
}

/// A watch asked for revisions this replica no longer (or never) retained.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("the requested revision is compacted; the oldest available revision is {oldest_revision}")]
#[non_exhaustive]
pub struct Compacted {
    /// The oldest revision a watch can start from on this replica now.
    pub oldest_revision: u64,
}

impl Compacted {
    pub const fn new(oldest_revision: u64) -> Self {
        Self { oldest_revision }
    }
}

/// Events for one watch, from a start revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchPage {
    /// Matching events in revision order (several may share a revision).
    pub events: Vec<WatchEvent>,
    /// Where the next page starts: every change before it was considered. One past the applied
    /// index when the page reached the end of the history.
    pub next_revision: u64,
}

/// The retained window of applied changes (see the module documentation).
#[derive(Debug, Clone)]
pub struct WatchHistory {
    events: VecDeque<WatchEvent>,
    /// [`WatchEvent::size_bytes`] summed over `events`.
    bytes: u64,
    /// Every change at or after this revision (and applied here) is in `events`.
    first_revision: u64,
    limits: HistoryLimits,
}

impl WatchHistory {
    /// An empty history on a replica that has applied up to `applied_index`.
    pub(crate) fn new(limits: HistoryLimits, applied_index: u64) -> Self {
        Self { events: VecDeque::new(), bytes: 0, first_revision: applied_index + 1, limits }
    }

    /// The oldest revision a watch can start from.
    pub fn first_revision(&self) -> u64 {
        self.first_revision
    }

    /// Events retained now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes retained now ([`WatchEvent::size_bytes`] summed).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every retained event at or after `revision`, in order (the shell's live fan-out).
    pub fn events_from(&self, revision: u64) -> impl Iterator<Item = &WatchEvent> + '_ {
        let start = self.events.partition_point(|e| e.revision < revision);
        self.events.range(start..)
    }

    /// Matching events from `from_revision` on, up to about `max_bytes`: a page ends at a
    /// revision boundary (a revision's events are never split between pages, so resuming at
    /// `next_revision` neither repeats nor skips one) and holds at least one revision's
    /// events. `applied_index` is the replica's: a page that reaches the end of the history
    /// continues at `applied_index + 1` (or at `from_revision` if that is later: a replica
    /// behind the watch has nothing for it yet).
    pub fn page(
        &self,
        filter: &KeyFilter,
        from_revision: u64,
        max_bytes: usize,
        applied_index: u64,
    ) -> Result<WatchPage, Compacted> {
        if from_revision < self.first_revision {
            return Err(Compacted { oldest_revision: self.first_revision });
        }
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut last_revision = None;
        for e in self.events_from(from_revision) {
            if last_revision != Some(e.revision) && bytes >= max_bytes && !events.is_empty() {
                return Ok(WatchPage { events, next_revision: e.revision });
            }
            last_revision = Some(e.revision);
            if filter.matches(e.key()) {
                bytes = bytes.saturating_add(e.size_bytes());
                events.push(e.clone());
            }
        }
        Ok(WatchPage { events, next_revision: from_revision.max(applied_index + 1) })
    }

    /// Appends the events one applied entry produced (all at its revision) and evicts whole
    /// old revisions beyond the bounds. Events before [`WatchHistory::first_revision`] are
    /// dropped: a restarting node replays entries older than its history's window (see
    /// `Node::new`).
    pub(crate) fn record(&mut self, events: impl IntoIterator<Item = WatchEvent>) {
        let mut newest = None;
        for e in events {
            if e.revision < self.first_revision {
                continue;
            }
            debug_assert!(self.events.back().is_none_or(|b| b.revision <= e.revision));
            newest = Some(e.revision);
            self.bytes += e.size_bytes() as u64;
            self.events.push_back(e);
        }
        let Some(newest) = newest else { return };
        let keep_from = newest.saturating_sub(self.limits.max_revisions.saturating_sub(1));
        while let Some(oldest) = self.events.front().map(|e| e.revision) {
            if oldest >= keep_from && self.bytes <= self.limits.max_bytes {
                break;
            }
            while self.events.front().is_some_and(|e| e.revision == oldest) {
                if let Some(e) = self.events.pop_front() {
                    self.bytes -= e.size_bytes() as u64;
                }
            }
            self.first_revision = self.first_revision.max(oldest + 1);
        }
        self.first_revision = self.first_revision.max(keep_from);
    }

    /// The replica's state was replaced by a snapshot at `index`: the changes up to it are
    /// unknown here.
    pub(crate) fn restart_at(&mut self, index: u64) {
        self.events.clear();
        self.bytes = 0;
        self.first_revision = index + 1;
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
