//! The in-memory mirror of the durable Raft log that raft-rs reads through its `Storage` trait.
//!
//! The node writes here first (raft-rs must be able to read entries back before
//! `advance_append_async`), and in the same step queues the identical change for the shell to
//! make durable. At start-up it is rebuilt from what the shell read from disk.

use std::cell::Cell;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// Log entries after a compaction point, hard state, and the latest snapshot.
#[derive(Debug, Default)]
pub struct MemLog {
    hard_state: HardState,
    /// Configuration given to raft-rs at start-up (raft-rs reads it once).
    conf_state: ConfState,
    /// Index and term of the entry just before `entries[0]`.
    offset_index: u64,
    offset_term: u64,
    entries: Vec<Entry>,
    /// [`entry_bytes`] summed over `entries`.
    bytes: u64,
    /// The most recent snapshot (data included), sent to followers that are behind the log.
    snapshot: Snapshot,
    /// Set when raft-rs asked for a snapshot newer than the one we hold.
    snapshot_wanted: Cell<bool>,
}

/// What one entry costs in memory: its payload and context plus the `Entry` itself.
pub fn entry_bytes(e: &Entry) -> u64 {
    (e.data.len() + e.context.len() + std::mem::size_of::<Entry>()) as u64
}

impl MemLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held by the entries in memory ([`entry_bytes`] of each).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of the entries after `index` (all of them if `index` is before the first). Walks
    /// those entries: meant for the few not applied yet.
    pub fn bytes_after(&self, index: u64) -> u64 {
        let skip = index.saturating_sub(self.offset_index).min(self.entries.len() as u64);
        self.entries[skip as usize..].iter().map(entry_bytes).sum()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn first_index(&self) -> u64 {
        self.offset_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.offset_index + self.entries.len() as u64
    }

    /// Takes the flag raised when raft-rs wanted a snapshot we did not have.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Replaces the log with a snapshot received from the leader (or loaded at start-up).
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.offset_index = meta.index;
        self.offset_term = meta.term;
        self.entries.clear();
        self.bytes = 0;
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = snapshot;
    }

    /// Records a snapshot taken locally at an index already in the log (no log change).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
    }

    /// Makes room for `additional` more entries (a restart knows how many it will append).
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve_exact(additional);
    }

    /// Appends entries, first dropping any existing suffix they overwrite.
    ///
    /// # Panics
    /// If the entries would leave a gap or overwrite compacted entries: raft-rs never asks for
    /// that, so it would be a bug in the node.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index > self.offset_index && first.index <= self.last_index() + 1,
            "append at {} outside ({}, {}]",
            first.index,
            self.offset_index,
            self.last_index() + 1
        );
        let keep = (first.index - self.offset_index - 1) as usize;
        let dropped: u64 =
            self.entries.get(keep..).unwrap_or_default().iter().map(entry_bytes).sum();
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        self.bytes = self.bytes - dropped + ents.iter().map(entry_bytes).sum::<u64>();
    }

    /// Drops entries up to and including `index` (which must be applied).
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.offset_index {
            return;
        }
        let index = index.min(self.last_index());
        let term = self.term(index).unwrap_or(self.offset_term);
        let drop = (index - self.offset_index) as usize;
        let dropped: u64 = self.entries.drain(..drop).map(|e| entry_bytes(&e)).sum();
        self.bytes -= dropped;
        self.offset_index = index;
        self.offset_term = term;
    }

    /// Drops the oldest entries, none above `up_to`, until at most `budget` bytes are left.
    /// Returns the new compaction index when it moved.
    pub fn compact_to_fit(&mut self, budget: u64, up_to: u64) -> Option<u64> {
        let mut bytes = self.bytes;
        let mut to = self.offset_index;
        for e in &self.entries {
            if bytes <= budget || e.index > up_to {
                break;
            }
            bytes -= entry_bytes(e);
            to = e.index;
        }
        (to > self.offset_index).then(|| {
            self.compact_to(to);
            to
        })
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset_index {
            return None;
        }
        self.entries.get((index - self.offset_index - 1) as usize)
    }
}

impl Storage for MemLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.offset_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.offset_index - 1) as usize;
        let hi = (high - self.offset_index - 1) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.offset_index {
            return Ok(self.offset_term);
        }
        if idx < self.offset_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entry(idx) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(MemLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(MemLog::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot.get_metadata();
        let cs = meta.get_conf_state();
        // raft-rs refuses to restore a snapshot whose configuration does not contain the
        // receiver (a learner added after it was taken): such a receiver needs a newer one.
        let includes_receiver = [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next]
            .iter()
            .any(|ids| ids.contains(&to));
        // Memory may have dropped entries past the snapshot (see `node::log_trim`): the
        // receiver would need the entries after it at once, so it needs a newer one.
        let connects = meta.index >= self.offset_index;
        if meta.index == 0 || meta.index < request_index || !includes_receiver || !connects {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    #[test]
    fn append_overwrites_suffix_and_compaction_keeps_term() {
        let mut log = MemLog::new();
        log.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        log.append(&[ent(2, 2)]);
        assert_eq!(log.last_index(), 2);
        assert_eq!(Storage::term(&log, 2).unwrap(), 2);
        log.compact_to(1);
        assert_eq!(MemLog::first_index(&log), 2);
        assert_eq!(Storage::term(&log, 1).unwrap(), 1);
        assert!(Storage::term(&log, 0).is_err());
        assert!(log.entries(1, 3, None, GetEntriesContext::empty(false)).is_err());
        assert_eq!(log.entries(2, 3, None, GetEntriesContext::empty(false)).unwrap().len(), 1);
    }

    fn big(index: u64, len: usize) -> Entry {
        let mut e = ent(index, 1);
        e.data = vec![7; len].into();
        e
    }

    #[test]
    fn bytes_follow_appends_truncations_and_compactions() {
        let mut log = MemLog::new();
        let size = |len| entry_bytes(&big(0, len));
        log.append(&[big(1, 10), big(2, 20), big(3, 30)]);
        assert_eq!(log.bytes(), size(10) + size(20) + size(30));
        log.append(&[big(3, 5), big(4, 1)]);
        assert_eq!(log.bytes(), size(10) + size(20) + size(5) + size(1));
        log.compact_to(1);
        assert_eq!(log.bytes(), size(20) + size(5) + size(1));
        // Over budget, but only entries up to 2 may go.
        assert_eq!(log.compact_to_fit(0, 2), Some(2));
        assert_eq!(log.bytes(), size(5) + size(1));
        assert_eq!(log.compact_to_fit(size(5) + size(1), 4), None, "already fits");
        assert_eq!(log.compact_to_fit(size(1), 4), Some(3));
        assert_eq!(MemLog::first_index(&log), 4);
        log.install_snapshot(Snapshot::default());
        assert_eq!(log.bytes(), 0);
    }

    #[test]
    fn missing_snapshot_is_temporarily_unavailable_and_flags_want() {
        let mut log = MemLog::new();
        assert!(Storage::snapshot(&log, 0, 2).is_err());
        assert!(log.take_snapshot_wanted());
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 5;
        snap.mut_metadata().mut_conf_state().voters = vec![1];
        log.install_snapshot(snap);
        assert!(Storage::snapshot(&log, 0, 1).is_ok());
        assert!(!log.take_snapshot_wanted());
        // Node 2 is not in the snapshot's configuration: it needs a newer snapshot.
        assert!(Storage::snapshot(&log, 0, 2).is_err());
        assert!(log.take_snapshot_wanted());
        assert!(!log.take_snapshot_wanted());
    }

    #[test]
    fn a_snapshot_behind_the_in_memory_log_is_not_sent() {
        let mut log = MemLog::new();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 5;
        snap.mut_metadata().term = 1;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
        log.install_snapshot(snap);
        log.append(&[ent(6, 1), ent(7, 1), ent(8, 1)]);
        log.compact_to(5);
        assert!(Storage::snapshot(&log, 0, 2).is_ok(), "entry 6 follows the snapshot");
        log.compact_to(6);
        assert!(Storage::snapshot(&log, 0, 2).is_err(), "entry 6 is gone");
        assert!(log.take_snapshot_wanted());
    }
}
