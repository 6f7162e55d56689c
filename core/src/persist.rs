//! What the core asks the shell to make durable, and what the shell hands back at start-up.
//!
//! The shell stores these records as they are (opaque bytes keyed by log index) and never
//! interprets them: the core owns every durable format.

/// Identifies a [`PersistBatch`]. Ids increase by one per batch; acknowledging id `n` says
/// every batch up to and including `n` is durable.
pub type PersistId = u64;

/// One Raft log entry in its durable encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub index: u64,
    pub bytes: Vec<u8>,
}

/// A snapshot in its durable encoding (framed, versioned, checksummed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub index: u64,
    pub bytes: Vec<u8>,
}

/// One atomic unit of durable work.
///
/// The shell applies batches in id order, each one atomically and in this field order:
/// 1. if `snapshot` is set: store it, replacing the previous one;
/// 2. delete log records with index `>= truncate_from`;
/// 3. delete log records with index `<= compact_to`;
/// 4. write `entries`;
/// 5. write `hard_state` if set.
///
/// It then calls `Node::handle_persisted(id)`. When `must_sync` is true the write must be on
/// stable storage (fsync) before that call; several batches may share one sync (group commit),
/// acknowledged with the highest id. A batch with `must_sync == false` only changes the commit
/// index and may be written without a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistBatch {
    pub id: PersistId,
    pub snapshot: Option<SnapshotRecord>,
    pub truncate_from: Option<u64>,
    pub compact_to: Option<u64>,
    pub entries: Vec<LogRecord>,
    pub hard_state: Option<Vec<u8>>,
    pub must_sync: bool,
}

impl PersistBatch {
    /// True when the batch changes nothing on disk.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.compact_to.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
    }
}

/// Everything the shell read back from disk at start-up, exactly as it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    pub hard_state: Option<Vec<u8>>,
    pub snapshot: Option<Vec<u8>>,
    /// Log records in ascending index order, without gaps.
    pub entries: Vec<LogRecord>,
}

impl DurableState {
    /// True for a node that has never written anything (a fresh data dir).
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }

    /// Applies one batch the way the shell's disk does. Used by in-memory disks (tests, the
    /// simulator) so that they and the real disk share one definition of the batch semantics.
    pub fn apply(&mut self, batch: &PersistBatch) {
        if let Some(s) = &batch.snapshot {
            self.snapshot = Some(s.bytes.clone());
        }
        if let Some(from) = batch.truncate_from {
            self.entries.retain(|e| e.index < from);
        }
        if let Some(to) = batch.compact_to {
            self.entries.retain(|e| e.index > to);
        }
        self.entries.extend(batch.entries.iter().cloned());
        if let Some(hs) = &batch.hard_state {
            self.hard_state = Some(hs.clone());
        }
    }
}
