//! The durable store of one node: the core's [`PersistBatch`]es in one RocksDB database.
//!
//! The shell never interprets what it stores: log records, the hard state, the snapshot and the
//! node's metadata are the core's opaque bytes, read back exactly as written ([`DurableState`]). The semantics of a
//! batch are the ones documented on [`PersistBatch`] and implemented by
//! [`DurableState::apply`], which the tests below use as the reference.
//!
//! # Key layout (default column family)
//!
//! | key                                  | value                        |
//! |--------------------------------------|------------------------------|
//! | `h`                                  | hard state                   |
//! | `l` + index as 8 big-endian bytes    | one log record               |
//! | `m/` + name                          | shell metadata ([`Disk::put_meta`]) |
//! | `n`                                  | the core's node metadata (replaced whole) |
//! | `s`                                  | snapshot (replaced whole)    |
//!
//! Big-endian indices make RocksDB's byte order the log's index order, so [`Disk::load`] is one
//! forward scan over `[l, m)`, and truncation (`[from, last]`) and compaction (`[0, to]`) are
//! one `delete_range` each. No other key starts with `l`, and `m` itself is never a key, so `m`
//! is an exclusive upper bound for the log.
//!
//! Truncation is issued only when something at or past `from` is stored: the core asks for it
//! with every append, and a range tombstone per append made RocksDB's memtable hold hundreds of
//! thousands of overlapping tombstones, whose fragmentation is quadratic — reopening such a
//! store after a busy hour took longer than five minutes. [`Disk`] keeps an upper bound of the
//! highest stored index for that.
//!
//! # Writes
//!
//! [`Disk::write`] is group commit: every batch the driver has queued goes into one RocksDB
//! `WriteBatch`, applied atomically, synced (WAL fdatasync) if any of them asks for it. WAL
//! files are recycled, so a sync does not also update file metadata; unsynced records wait
//! in RocksDB's WAL buffer (`manual_wal_flush`) until the next sync or a clean close, so a
//! killed process loses what a power cut would. Operations
//! inside a `WriteBatch` take effect in the order they were added, which gives each
//! `PersistBatch` its documented order (snapshot, truncate, compact, entries, hard state, node
//! metadata).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mokv_core::persist::{DurableState, LogRecord, PersistBatch, StoredSnapshot};
use mokv_core::{is_full_snapshot, SnapshotImage, SnapshotRef};

use crate::storage::snapshot_files::SnapshotDir;
use crate::storage::snapshot_remover::SnapshotRemover;
use rocksdb::{Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};

const HARD_STATE_KEY: &[u8] = b"h";
const NODE_META_KEY: &[u8] = b"n";
const SNAPSHOT_KEY: &[u8] = b"s";
const LOG_PREFIX: u8 = b'l';
/// Exclusive upper bound of the log's key range: the byte after [`LOG_PREFIX`].
const LOG_END: &[u8] = b"m";
const META_PREFIX: &str = "m/";
/// The largest value RocksDB accepts (its `WriteBatch::Put` refuses values of 4 GiB or more).
pub const MAX_VALUE_BYTES: usize = u32::MAX as usize;

/// What can go wrong with the store. Messages name the operation and the RocksDB status, never
/// a stored value.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum DiskError {
    /// Opening the database failed (missing permissions, another process holds its lock, ...).
    #[error("opening the raft store at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// A RocksDB read or write failed.
    #[error("raft store {op}: {source}")]
    Rocks {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// A value larger than RocksDB stores ([`MAX_VALUE_BYTES`]): the whole group of batches
    /// is refused and nothing of it is written (the binding's `WriteBatch::put` would drop
    /// RocksDB's own error and leave the value out of an otherwise committed batch).
    #[error("raft store refuses a {what} of {bytes} bytes (at most {limit_bytes})")]
    ValueTooLarge { what: &'static str, bytes: usize, limit_bytes: usize },
    /// A key under the log prefix that is not `l` + 8 bytes: the store was not written by us.
    #[error("raft store holds a malformed log key of {len} bytes")]
    MalformedLogKey { len: usize },
    /// A snapshot file operation failed (the file system refused a write, a sync, a rename).
    #[error("snapshot file {op} at {}: {source}", path.display())]
    SnapshotFile {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The snapshot file a reference names is not there.
    #[error("snapshot file {} is missing", path.display())]
    SnapshotMissing { path: PathBuf },
    /// A snapshot file is not the one its reference names (torn, or replaced).
    #[error("snapshot file {}: {source}", path.display())]
    SnapshotWrongFile {
        path: PathBuf,
        #[source]
        source: mokv_core::SnapshotFileMismatch,
    },
    /// A snapshot (file, or the stored reference) does not decode.
    #[error("snapshot at {} does not decode: {source}", path.display())]
    SnapshotCorrupt {
        path: PathBuf,
        #[source]
        source: mokv_core::codec::DecodeError,
    },
    /// A snapshot file differs from what was expected of it.
    #[error("snapshot file {}: {what}", path.display())]
    SnapshotMismatch { path: PathBuf, what: &'static str },
    /// A thread the store needs could not be started.
    #[error("starting a thread to {what}: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> DiskError {
    move |source| DiskError::Rocks { op, source }
}

fn log_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = LOG_PREFIX;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(META_PREFIX.len() + name.len());
    key.extend_from_slice(META_PREFIX.as_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

fn sync_options() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// One node's RocksDB database (see the module documentation for its layout).
#[derive(Debug)]
pub struct Disk {
    db: DB,
    dir: PathBuf,
    /// No log key above this index is stored (0: none). Read and advanced by `write` only
    /// (one writer at a time: the disk writer).
    last_index_bound: AtomicU64,
    /// Values above this are refused ([`DiskError::ValueTooLarge`]); [`MAX_VALUE_BYTES`] but
    /// in tests.
    max_value_bytes: usize,
    /// The snapshot files (`<dir>/snapshots`).
    snapshots: SnapshotDir,
    /// Files of snapshots older than this index go after the next synced write (0: none):
    /// a newer reference was written, and is durable once a write is synced.
    remove_snapshots_below: AtomicU64,
    /// Removes them, off the disk writer.
    remover: SnapshotRemover,
}

impl Drop for Disk {
    fn drop(&mut self) {
        // A clean close writes out (and syncs) the records still in the WAL buffer.
        if let Err(e) = self.db.flush_wal(true) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "flushing the write-ahead log at close");
        }
    }
}

/// RocksDB memtable size (see [`Disk::open`]).
const WRITE_BUFFER_BYTES: usize = 4 << 20;

/// Level-0 files (flushed memtables) that start a compaction (RocksDB's default: 4). Writes
/// slow down at 5 times as many and stop at 9 times, RocksDB's default ratios.
const LEVEL0_COMPACTION_TRIGGER_FILES: i32 = 16;

impl Disk {
    /// Opens (creating if missing) the store under `dir` (e.g. `<data-dir>/raft`).
    pub fn open(dir: &Path) -> Result<Disk, DiskError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // RocksDB's own info LOG files: keep a few small ones, not one per restart forever.
        opts.set_keep_log_file_num(4);
        opts.set_max_log_file_size(8 << 20);
        // Write-ahead log files are reused rather than created anew: a batch then overwrites
        // blocks that are already allocated, and its fdatasync need not also write the file's
        // new size to the journal (a second disk write per sync on an appending file).
        opts.set_recycle_log_file_num(4);
        // Write-ahead log records stay in RocksDB's own buffer until a synced write (or a full
        // buffer) writes them out, so a crash of the process loses exactly what a power loss
        // may lose: everything not yet synced. Raft asks for a sync wherever it needs one
        // (`PersistBatch::must_sync`), so this is safe, and it is what lets the power-loss test
        // (`tests/tests/power_loss.rs`) see a missing sync with kill -9 alone.
        opts.set_manual_wal_flush(true);
        // The store holds the Raft log, which the node already keeps in memory and compacts
        // after each snapshot: memtables only need to absorb writes between flushes. A
        // memtable is resident memory (RocksDB allocates through glibc, which keeps what a
        // flushed one freed), up to two of them while one flushes: RocksDB's 64 MiB default
        // cost a node up to 128 MiB of RSS for entries it also holds itself, and 16 MiB ones
        // still left a 1M-key node ≈ 12 MiB above 4 MiB ones (`scripts/bench-scale.sh`).
        opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
        // Small memtables make four times the level-0 files, and each compaction rewrites the
        // log not yet deleted below it, though most of it is deleted by the next snapshot
        // anyway: at RocksDB's default trigger (4 files) a 1M-key load cost a node 0.86–0.95 s
        // of compaction CPU in 23 compactions; at 16 files, 0.33–0.43 s in 5–6, with the same
        // restart times (the log tail is read from a few more files). Reads of the log are
        // rare (a follower behind the in-memory log), so more level-0 files cost little.
        opts.set_level_zero_file_num_compaction_trigger(LEVEL0_COMPACTION_TRIGGER_FILES);
        opts.set_level_zero_slowdown_writes_trigger(5 * LEVEL0_COMPACTION_TRIGGER_FILES);
        opts.set_level_zero_stop_writes_trigger(9 * LEVEL0_COMPACTION_TRIGGER_FILES);
        // Opening replays the write-ahead log into a memtable; by default RocksDB then flushes
        // it to a new level-0 file, which (with the files already there) often starts a
        // compaction: on a node with a long log tail that was ≈ 20 ms of the open and ≈ 120 ms
        // of CPU taken from loading the snapshot, on a 2-core machine (`perf record` of a
        // restart). The memtable is flushed later like any other; the WAL stays until then.
        // (The Rust binding has no setter for this option; its string form is RocksDB's own.)
        let opts = opts
            .get_options_from_string("avoid_flush_during_recovery=true")
            .map_err(|source| DiskError::Open { path: dir.to_path_buf(), source })?;
        let db = DB::open(&opts, dir)
            .map_err(|source| DiskError::Open { path: dir.to_path_buf(), source })?;
        // The highest log key: the last key below `m` (the hard state `h` sorts before the log).
        let last = match db.iterator(IteratorMode::From(LOG_END, Direction::Reverse)).next() {
            Some(Ok((k, _))) if k.len() == 9 && k[0] == LOG_PREFIX => {
                k[1..].try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX)
            }
            Some(Err(source)) => {
                return Err(DiskError::Open { path: dir.to_path_buf(), source });
            }
            _ => 0,
        };
        tracing::debug!(dir = %dir.display(), last, "opened raft store");
        let snapshots = SnapshotDir::open(dir.join("snapshots"))?;
        let remover = SnapshotRemover::start(snapshots.clone());
        Ok(Disk {
            db,
            dir: dir.to_path_buf(),
            last_index_bound: AtomicU64::new(last),
            max_value_bytes: MAX_VALUE_BYTES,
            snapshots,
            remove_snapshots_below: AtomicU64::new(0),
            remover,
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot files.
    pub fn snapshots(&self) -> &SnapshotDir {
        &self.snapshots
    }

    /// Reads back everything, exactly as written: hard state, the snapshot (its file streamed
    /// and checked against the stored reference), log records ascending, node metadata. Files
    /// no reference names (temporary ones a crash left, older snapshots) are removed. The log
    /// is read on a thread of its own while the snapshot file is decoded.
    pub fn load(&self) -> Result<DurableState, DiskError> {
        let started = Instant::now();
        let hard_state = self.db.get(HARD_STATE_KEY).map_err(rocks("read hard state"))?;
        let node_meta = self.db.get(NODE_META_KEY).map_err(rocks("read node metadata"))?;
        let (snapshot, entries) = std::thread::scope(|scope| {
            let log = std::thread::Builder::new()
                .name("mokv-log-load".into())
                .spawn_scoped(scope, || self.load_log())
                .map_err(|source| DiskError::Thread { what: "load the raft log", source })?;
            let snapshot = self.load_snapshot().inspect(|snapshot| {
                // Files no reference names are never read: one that cannot go stays, and the
                // start goes on.
                if let Err(e) =
                    self.snapshots.remove_all_but(snapshot.as_ref().map(|s| &s.reference))
                {
                    tracing::warn!(error = %e, "removing snapshot files no reference names");
                }
            });
            let entries = log.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok::<_, DiskError>((snapshot?, entries?))
        })?;
        tracing::info!(
            keys = snapshot.as_ref().map(|s| s.image.state.len()),
            snapshot = snapshot.as_ref().map(|s| s.reference.index),
            log_entries = entries.len(),
            first = entries.first().map(|e| e.index),
            last = entries.last().map(|e| e.index),
            ms = started.elapsed().as_millis() as u64,
            "loaded raft store"
        );
        Ok(DurableState { hard_state, snapshot, entries, node_meta })
    }

    /// Every log record, ascending.
    fn load_log(&self) -> Result<Vec<LogRecord>, DiskError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(LOG_END);
        ro.fill_cache(false);
        let start = [LOG_PREFIX];
        let mut entries = Vec::new();
        for item in self.db.iterator_opt(IteratorMode::From(&start[..], Direction::Forward), ro) {
            let (key, value) = item.map_err(rocks("read log"))?;
            let index: [u8; 8] = key
                .get(1..)
                .and_then(|b| b.try_into().ok())
                .ok_or(DiskError::MalformedLogKey { len: key.len() })?;
            entries.push(LogRecord { index: u64::from_be_bytes(index), bytes: value.into_vec() });
        }
        Ok(entries)
    }

    /// The stored snapshot: a reference (its file read back), or a whole snapshot stored by
    /// a version from before snapshot files, which is moved to a file here.
    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, DiskError> {
        let Some(stored) = self.db.get(SNAPSHOT_KEY).map_err(rocks("read snapshot"))? else {
            return Ok(None);
        };
        let corrupt = |source| DiskError::SnapshotCorrupt { path: self.dir.clone(), source };
        if is_full_snapshot(&stored) {
            let image = SnapshotImage::decode(&stored).map_err(corrupt)?;
            let reference = image.reference();
            self.snapshots.write_image(&image, &reference)?;
            self.db
                .put_opt(SNAPSHOT_KEY, reference.encode(), &sync_options())
                .map_err(rocks("write snapshot reference"))?;
            tracing::info!(index = reference.index, "moved the stored snapshot to a file");
            return Ok(Some(StoredSnapshot { reference, image }));
        }
        let reference = SnapshotRef::decode(&stored).map_err(corrupt)?;
        let image = self.snapshots.read_image(&reference)?;
        Ok(Some(StoredSnapshot { reference, image }))
    }

    /// Applies several batches (already in id order) in ONE RocksDB `WriteBatch`, with the
    /// semantics documented on [`PersistBatch`], synced if any batch has `must_sync`.
    ///
    /// This is group commit: the driver gathers whatever batches are queued and writes them at
    /// once, then acknowledges the highest id. A snapshot file a batch asks for
    /// (`write_file`) is written and synced first.
    pub fn write(&self, batches: &[PersistBatch]) -> Result<(), DiskError> {
        let sync = batches.iter().any(|b| b.must_sync);
        let mut wb = WriteBatch::default();
        let mut last = self.last_index_bound.load(Ordering::Acquire);
        for b in batches {
            check_sizes(b, self.max_value_bytes)?;
        }
        for b in batches {
            if let Some(s) = b.snapshot.as_ref().filter(|s| s.write_file) {
                self.snapshots.write_image(&s.image, &s.reference)?;
            }
            last = add_to(&mut wb, b, last);
        }
        if wb.is_empty() {
            // Nothing to write, but the caller may still count on a sync: make every earlier
            // (unsynced) write durable.
            if sync {
                self.db.flush_wal(true).map_err(rocks("sync wal"))?;
                self.remove_old_snapshots();
            }
            return Ok(());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(rocks("write batch"))?;
        self.last_index_bound.store(last, Ordering::Release);
        if let Some(newest) = batches.iter().filter_map(|b| b.snapshot.as_ref()).next_back() {
            self.remove_snapshots_below.fetch_max(newest.reference.index, Ordering::AcqRel);
        }
        if sync {
            self.remove_old_snapshots();
        }
        Ok(())
    }

    /// Has the files older than the newest durable reference deleted, off this thread (see
    /// `snapshot_remover`).
    fn remove_old_snapshots(&self) {
        match self.remove_snapshots_below.swap(0, Ordering::AcqRel) {
            0 => {}
            below => self.remover.remove_older_than(below, &self.snapshots),
        }
    }

    /// Reads a small metadata value the shell owns (the node id).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.db.get(meta_key(key)).map_err(rocks("read meta"))
    }

    /// Writes a small metadata value the shell owns, synced.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DiskError> {
        self.db.put_opt(meta_key(key), value, &sync_options()).map_err(rocks("write meta"))
    }
}

/// Refuses a batch holding a value the store cannot hold, before anything is added.
fn check_sizes(b: &PersistBatch, limit_bytes: usize) -> Result<(), DiskError> {
    let values = b
        .snapshot
        .iter()
        .map(|_| ("snapshot reference", SnapshotRef::ENCODED_LEN))
        .chain(b.entries.iter().map(|e| ("log record", e.bytes.len())))
        .chain(b.hard_state.iter().map(|h| ("hard state", h.len())))
        .chain(b.node_meta.iter().map(|m| ("node metadata", m.len())));
    for (what, bytes) in values {
        if bytes > limit_bytes {
            return Err(DiskError::ValueTooLarge { what, bytes, limit_bytes });
        }
    }
    Ok(())
}

/// Adds one batch's operations to `wb`, in the order [`PersistBatch`] documents. `last` bounds
/// the stored log indices before the batch; returns the bound after it.
fn add_to(wb: &mut WriteBatch, b: &PersistBatch, mut last: u64) -> u64 {
    if let Some(s) = &b.snapshot {
        wb.put(SNAPSHOT_KEY, s.reference.encode());
    }
    if let Some(from) = b.truncate_from.filter(|from| *from <= last) {
        // [from, last]
        match last.checked_add(1) {
            Some(end) => wb.delete_range(log_key(from), log_key(end)),
            None => wb.delete_range(&log_key(from)[..], LOG_END),
        }
        last = from.saturating_sub(1);
    }
    if let Some(to) = b.compact_to {
        // [0, to]
        match to.checked_add(1) {
            Some(end) => wb.delete_range(log_key(0), log_key(end)),
            None => wb.delete_range(&log_key(0)[..], LOG_END),
        }
    }
    for e in &b.entries {
        wb.put(log_key(e.index), &e.bytes);
        last = last.max(e.index);
    }
    if let Some(hs) = &b.hard_state {
        wb.put(HARD_STATE_KEY, hs);
    }
    if let Some(meta) = &b.node_meta {
        wb.put(NODE_META_KEY, meta);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use mokv_core::persist::SnapshotRecord;
    use mokv_core::SnapshotImage;

    fn rec(index: u64, bytes: &[u8]) -> LogRecord {
        LogRecord { index, bytes: bytes.to_vec() }
    }

    /// A snapshot at `index` whose file the disk writes (told apart by `term`).
    fn snap(index: u64, term: u64) -> SnapshotRecord {
        let state = mokv_core::StateMachine::default();
        SnapshotRecord::to_write(SnapshotImage { index, term, state })
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<LogRecord> {
        range.map(|i| rec(i, format!("e{i}").as_bytes())).collect()
    }

    fn reference(batches: &[PersistBatch]) -> DurableState {
        let mut s = DurableState::default();
        for b in batches {
            s.apply(b);
        }
        s
    }

    /// Writes `groups` (each one `write` call), reopens, and checks `load` against the
    /// reference semantics before and after the reopen.
    fn check(groups: &[Vec<PersistBatch>]) -> DurableState {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path()).unwrap();
        for g in groups {
            disk.write(g).unwrap();
        }
        let all: Vec<PersistBatch> = groups.iter().flatten().cloned().collect();
        let want = reference(&all);
        assert_eq!(disk.load().unwrap(), want);
        drop(disk);
        let disk = Disk::open(dir.path()).unwrap();
        assert_eq!(disk.load().unwrap(), want);
        want
    }

    /// A value over the limit is an error, and none of its group is written: not the
    /// compaction that came with it, nor the other batches.
    #[test]
    fn a_value_over_the_limit_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = Disk::open(dir.path()).unwrap();
        disk.max_value_bytes = 64;
        let first =
            PersistBatch { id: 1, entries: entries(1..=5), must_sync: true, ..Default::default() };
        disk.write(std::slice::from_ref(&first)).unwrap();
        let too_big = PersistBatch {
            id: 3,
            compact_to: Some(4),
            entries: vec![rec(7, &[7; 65])],
            must_sync: true,
            ..Default::default()
        };
        let other = PersistBatch { id: 2, entries: entries(6..=6), ..Default::default() };
        let err = disk.write(&[other, too_big]).unwrap_err();
        assert!(
            matches!(
                err,
                DiskError::ValueTooLarge { what: "log record", bytes: 65, limit_bytes: 64 }
            ),
            "{err}"
        );
        assert_eq!(disk.load().unwrap(), reference(std::slice::from_ref(&first)));
        // At the limit it is stored.
        let fits = PersistBatch {
            id: 4,
            entries: vec![rec(7, &[7; 64])],
            compact_to: Some(4),
            must_sync: true,
            ..Default::default()
        };
        disk.write(std::slice::from_ref(&fits)).unwrap();
        assert_eq!(disk.load().unwrap(), reference(&[first, fits]));
    }

    #[test]
    fn fresh_store_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir.path().join("raft")).unwrap();
        assert!(disk.load().unwrap().is_empty());
        assert_eq!(disk.get_meta("node-id").unwrap(), None);
    }

    /// Table files RocksDB keeps under `dir`.
    fn table_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sst"))
            .count()
    }

    /// Opening replays the WAL into a memtable without flushing it to a table file
    /// (`avoid_flush_during_recovery`), so the WAL must keep those writes across further
    /// opens until a flush: several reopens with writes, truncation and compaction between
    /// them lose nothing.
    #[test]
    fn reopening_without_flushing_the_recovered_log_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let groups = [
            vec![PersistBatch {
                id: 1,
                entries: entries(1..=20),
                hard_state: Some(b"hs1".to_vec()),
                must_sync: true,
                ..Default::default()
            }],
            vec![PersistBatch {
                id: 2,
                truncate_from: Some(15),
                entries: entries(15..=30),
                must_sync: true,
                ..Default::default()
            }],
            vec![PersistBatch {
                id: 3,
                compact_to: Some(10),
                entries: entries(31..=40),
                hard_state: Some(b"hs3".to_vec()),
                node_meta: Some(b"meta".to_vec()),
                must_sync: true,
                ..Default::default()
            }],
        ];
        let mut written = Vec::new();
        for g in &groups {
            let disk = Disk::open(dir.path()).unwrap();
            assert_eq!(disk.load().unwrap(), reference(&written), "after a reopen");
            disk.write(g).unwrap();
            written.extend(g.iter().cloned());
        }
        let tables = table_files(dir.path());
        for _ in 0..3 {
            let disk = Disk::open(dir.path()).unwrap();
            assert_eq!(disk.load().unwrap(), reference(&written));
        }
        assert_eq!(table_files(dir.path()), tables, "opening flushed the recovered log");
    }

    #[test]
    fn entries_and_hard_state_survive_reopen() {
        let got = check(&[vec![PersistBatch {
            id: 1,
            entries: entries(1..=5),
            hard_state: Some(b"hs1".to_vec()),
            must_sync: true,
            ..Default::default()
        }]]);
        assert_eq!(got.entries.len(), 5);
        assert_eq!(got.hard_state.as_deref(), Some(&b"hs1"[..]));
    }

    #[test]
    fn indices_sort_numerically_not_lexically() {
        // 255 < 256 numerically; little-endian or decimal keys would misorder these.
        let got = check(&[vec![PersistBatch {
            id: 1,
            entries: entries(250..=260).into_iter().chain(entries(65_530..=65_540)).collect(),
            ..Default::default()
        }]]);
        let idx: Vec<u64> = got.entries.iter().map(|e| e.index).collect();
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        assert_eq!(idx, sorted);
    }

    #[test]
    fn truncate_then_append_replaces_the_tail() {
        let got = check(&[
            vec![PersistBatch { id: 1, entries: entries(1..=10), ..Default::default() }],
            vec![PersistBatch {
                id: 2,
                truncate_from: Some(6),
                entries: vec![rec(6, b"new6"), rec(7, b"new7")],
                must_sync: true,
                ..Default::default()
            }],
        ]);
        assert_eq!(got.entries.last().unwrap(), &rec(7, b"new7"));
        assert_eq!(got.entries.len(), 7);
    }

    #[test]
    fn compaction_removes_the_head_inclusive() {
        let got = check(&[
            vec![PersistBatch { id: 1, entries: entries(1..=10), ..Default::default() }],
            vec![PersistBatch {
                id: 2,
                snapshot: Some(snap(4, 1)),
                compact_to: Some(4),
                ..Default::default()
            }],
        ]);
        assert_eq!(got.entries.first().unwrap().index, 5);
        assert_eq!(got.snapshot.map(|s| s.reference), Some(snap(4, 1).reference));
    }

    #[test]
    fn snapshot_is_replaced_and_log_cleared_past_it() {
        // A follower installing a snapshot ahead of its log: everything goes, the log restarts
        // after the snapshot.
        let got = check(&[vec![
            PersistBatch {
                id: 1,
                snapshot: Some(snap(3, 1)),
                entries: entries(4..=8),
                ..Default::default()
            },
            PersistBatch {
                id: 2,
                snapshot: Some(snap(100, 2)),
                truncate_from: Some(0),
                compact_to: Some(100),
                entries: entries(101..=102),
                hard_state: Some(b"hs".to_vec()),
                node_meta: None,
                must_sync: true,
            },
        ]]);
        assert_eq!(got.snapshot.map(|s| s.reference), Some(snap(100, 2).reference));
        assert_eq!(got.entries, entries(101..=102));
    }

    #[test]
    fn extreme_bounds() {
        check(&[vec![
            PersistBatch {
                id: 1,
                entries: vec![rec(0, b"zero"), rec(1, b""), rec(u64::MAX - 1, b"big")],
                ..Default::default()
            },
            PersistBatch { id: 2, truncate_from: Some(u64::MAX), ..Default::default() },
        ]]);
        let got = check(&[vec![
            PersistBatch {
                id: 1,
                entries: vec![rec(0, b"zero"), rec(u64::MAX, b"max")],
                ..Default::default()
            },
            PersistBatch {
                id: 2,
                compact_to: Some(u64::MAX),
                hard_state: Some(Vec::new()),
                ..Default::default()
            },
        ]]);
        assert!(got.entries.is_empty());
        // An empty hard state is still a hard state.
        assert_eq!(got.hard_state, Some(Vec::new()));
    }

    #[test]
    fn empty_writes_are_fine() {
        let got = check(&[
            vec![],
            vec![PersistBatch { id: 1, must_sync: true, ..Default::default() }],
            vec![PersistBatch { id: 2, ..Default::default() }],
        ]);
        assert!(got.is_empty());
    }

    #[test]
    fn node_metadata_is_replaced_whole_and_stays_out_of_the_log() {
        let got = check(&[
            vec![PersistBatch {
                id: 1,
                entries: entries(1..=3),
                node_meta: Some(b"meta-1".to_vec()),
                ..Default::default()
            }],
            vec![
                PersistBatch {
                    id: 2,
                    node_meta: Some(b"meta-2".to_vec()),
                    must_sync: true,
                    ..Default::default()
                },
                PersistBatch { id: 3, truncate_from: Some(0), ..Default::default() },
            ],
        ]);
        assert_eq!(got.node_meta.as_deref(), Some(&b"meta-2"[..]));
        assert!(got.entries.is_empty(), "log truncation leaves the metadata alone");
        assert!(got.is_empty(), "metadata is not Raft state");
    }

    #[test]
    fn meta_round_trips_and_stays_out_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let disk = Disk::open(dir.path()).unwrap();
            disk.put_meta("node-id", b"7").unwrap();
            disk.put_meta("cluster-id", b"c-1").unwrap();
            disk.put_meta("node-id", b"8").unwrap();
            disk.write(&[PersistBatch {
                id: 1,
                entries: entries(1..=3),
                truncate_from: Some(0),
                ..Default::default()
            }])
            .unwrap();
            disk.write(&[PersistBatch { id: 2, truncate_from: Some(2), ..Default::default() }])
                .unwrap();
        }
        let disk = Disk::open(dir.path()).unwrap();
        assert_eq!(disk.get_meta("node-id").unwrap().as_deref(), Some(&b"8"[..]));
        assert_eq!(disk.get_meta("cluster-id").unwrap().as_deref(), Some(&b"c-1"[..]));
        assert_eq!(disk.get_meta("other").unwrap(), None);
        assert_eq!(disk.load().unwrap().entries, entries(1..=1));
    }

    fn snapshot_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Stores `newer`'s reference (compacting the log up to it) with a synced write: the
    /// files of older snapshots are then due for removal.
    fn store_newer_reference(
        disk: &Disk,
        id: u64,
        newer: &SnapshotRecord,
    ) -> Result<(), DiskError> {
        disk.write(&[PersistBatch {
            id,
            snapshot: Some(newer.clone()),
            compact_to: Some(newer.reference.index),
            must_sync: true,
            ..Default::default()
        }])
    }

    /// The snapshot reference a fresh open of `dir` loads.
    fn reopened_reference(dir: &Path) -> Option<SnapshotRef> {
        Disk::open(dir).unwrap().load().unwrap().snapshot.map(|s| s.reference)
    }

    /// Waits (up to 10 s) until the snapshot directory holds exactly `expected`: old files go
    /// on the removal thread, after the synced write that made a newer reference durable.
    fn await_snapshot_files(dir: &Path, expected: &[&str]) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let names = snapshot_files(dir);
            if names == expected {
                return;
            }
            assert!(Instant::now() < deadline, "snapshot files {names:?}, expected {expected:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn image_at(index: u64, term: u64) -> SnapshotImage {
        SnapshotImage { index, term, state: mokv_core::StateMachine::default() }
    }

    /// What a crash leaves behind (a temporary file, the file of a snapshot no reference
    /// names) is ignored and removed at start-up; the referenced file is read back and the
    /// files of older snapshots go once a newer reference is durable.
    #[test]
    fn snapshot_files_orphans_go_at_load_and_old_files_after_a_newer_reference() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path()).unwrap();
        let first = snap(4, 1);
        disk.write(&[PersistBatch {
            id: 1,
            snapshot: Some(first.clone()),
            must_sync: true,
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(snapshot_files(dir.path()), ["4-1.snap"]);
        // A job cut short, a transfer cut short, a file written but never referenced.
        let snaps = dir.path().join("snapshots");
        std::fs::write(snaps.join("9-1.snap.tmp"), b"torn").unwrap();
        std::fs::write(snaps.join("9-1.snap.recv.tmp"), b"torn").unwrap();
        let unreferenced = disk.snapshots().write_job(image_at(7, 1).to_job()).unwrap();
        std::fs::write(snaps.join("notes.txt"), b"not ours").unwrap();
        drop(disk);

        let disk = Disk::open(dir.path()).unwrap();
        let loaded = disk.load().unwrap();
        assert_eq!(loaded.snapshot.as_ref().map(|s| s.reference), Some(first.reference));
        assert_eq!(loaded.snapshot.map(|s| s.image), Some(first.image));
        assert_eq!(snapshot_files(dir.path()), ["4-1.snap", "notes.txt"]);
        assert!(unreferenced.index > 4);

        // A newer reference: the older file goes once it is durable (this write syncs).
        let newer = snap(12, 2);
        store_newer_reference(&disk, 2, &newer).unwrap();
        await_snapshot_files(dir.path(), &["12-2.snap", "notes.txt"]);
        drop(disk);
        assert_eq!(reopened_reference(dir.path()), Some(newer.reference));
    }

    /// A replaced file that cannot be removed (here a directory under an old file's name)
    /// does not fail the write that made a newer reference durable, nor keep the other
    /// replaced files, nor stop the next start: removal happens off the writer, and is
    /// retried at start-up.
    #[test]
    fn a_snapshot_file_that_cannot_be_removed_fails_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path()).unwrap();
        let first = snap(4, 1);
        disk.write(&[PersistBatch {
            id: 1,
            snapshot: Some(first),
            must_sync: true,
            ..Default::default()
        }])
        .unwrap();
        let stuck = dir.path().join("snapshots").join("2-1.snap");
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("inside"), b"x").unwrap();

        let newer = snap(12, 2);
        store_newer_reference(&disk, 2, &newer)
            .expect("a removal that fails is not the write's failure");
        await_snapshot_files(dir.path(), &["12-2.snap", "2-1.snap"]);
        drop(disk);
        assert_eq!(reopened_reference(dir.path()), Some(newer.reference));
    }

    /// The referenced file missing, torn or replaced by other bytes: a clear error at load,
    /// never a node started without its snapshot.
    #[test]
    fn a_missing_or_corrupt_referenced_file_is_an_error_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path()).unwrap();
        let s = snap(4, 1);
        disk.write(&[PersistBatch { id: 1, snapshot: Some(s.clone()), ..Default::default() }])
            .unwrap();
        drop(disk);
        let path = dir.path().join("snapshots").join("4-1.snap");
        let good = std::fs::read(&path).unwrap();

        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        let err = Disk::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, DiskError::SnapshotWrongFile { .. }), "{err}");

        let mut flipped = good.clone();
        flipped[30] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = Disk::open(dir.path()).unwrap().load().unwrap_err();
        // The frame's own checksum or the reference's: whichever sees it first.
        assert!(
            matches!(err, DiskError::SnapshotWrongFile { .. } | DiskError::SnapshotCorrupt { .. }),
            "{err}"
        );

        // The frame's own checksum is not computed on load (the reference's covers every
        // byte): a wrong one is still refused, by the reference.
        let mut wrong_frame_checksum = good.clone();
        *wrong_frame_checksum.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &wrong_frame_checksum).unwrap();
        let err = Disk::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, DiskError::SnapshotWrongFile { .. }), "{err}");

        std::fs::remove_file(&path).unwrap();
        let err = Disk::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, DiskError::SnapshotMissing { .. }), "{err}");
        assert!(err.to_string().contains("4-1.snap"), "{err}");

        // Put back, it loads again.
        std::fs::write(&path, &good).unwrap();
        let loaded = Disk::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.snapshot.map(|s| s.reference), Some(s.reference));
    }

    /// A data dir written before snapshots were files holds the whole snapshot under `s`: it
    /// still loads, and the snapshot moves to a file (the key then holds its reference).
    #[test]
    fn a_whole_snapshot_stored_by_an_older_version_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let image = image_at(9, 3);
        {
            let disk = Disk::open(dir.path()).unwrap();
            disk.db.put(SNAPSHOT_KEY, image.encode()).unwrap();
            disk.write(&[PersistBatch { id: 1, entries: entries(10..=12), ..Default::default() }])
                .unwrap();
        }
        let disk = Disk::open(dir.path()).unwrap();
        let loaded = disk.load().unwrap();
        let stored = loaded.snapshot.unwrap();
        assert_eq!(stored.image, image);
        assert_eq!(stored.reference, image.reference());
        assert_eq!(loaded.entries, entries(10..=12));
        assert_eq!(snapshot_files(dir.path()), ["9-3.snap"]);
        let key = disk.db.get(SNAPSHOT_KEY).unwrap().unwrap();
        assert_eq!(SnapshotRef::decode(&key), Ok(image.reference()));
        drop(disk);
        let again = Disk::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(again.snapshot.map(|s| s.image), Some(image));
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = Disk::open(&file.join("raft")).unwrap_err();
        assert!(matches!(err, DiskError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    /// splitmix64: a small deterministic PRNG, so failures replay from the printed seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn bytes(&mut self, tag: u64) -> Vec<u8> {
            let len = self.below(24) as usize;
            let mut v = tag.to_be_bytes().to_vec();
            v.extend((0..len).map(|_| self.next() as u8));
            v
        }
    }

    /// Random well-formed histories (appends continue the log; truncation, compaction and
    /// snapshots at random points), written in random groups with random reopens; after every
    /// write the store must equal the reference.
    #[test]
    fn appends_write_no_range_tombstone_unless_they_replace_entries() {
        let b = PersistBatch {
            id: 1,
            truncate_from: Some(6),
            entries: vec![rec(6, b"six"), rec(7, b"seven")],
            ..Default::default()
        };
        // Log up to 5: a plain append, two puts and no delete_range.
        let mut wb = WriteBatch::default();
        assert_eq!(add_to(&mut wb, &b, 5), 7);
        assert_eq!(wb.len(), 2);
        // Log up to 9: entries 6..=9 are replaced, one delete_range [6, 9].
        let mut wb = WriteBatch::default();
        assert_eq!(add_to(&mut wb, &b, 9), 7);
        assert_eq!(wb.len(), 3);
    }

    #[test]
    fn reopen_knows_the_last_index() {
        let dir = tempfile::tempdir().unwrap();
        {
            let disk = Disk::open(dir.path()).unwrap();
            disk.put_meta("x", b"y").unwrap();
            disk.write(&[PersistBatch {
                id: 1,
                entries: vec![rec(3, b"a"), rec(4, b"b")],
                hard_state: Some(b"hs".to_vec()),
                ..Default::default()
            }])
            .unwrap();
        }
        let disk = Disk::open(dir.path()).unwrap();
        assert_eq!(disk.last_index_bound.load(Ordering::Acquire), 4);
        // A truncation below it still takes effect after the reopen.
        disk.write(&[PersistBatch {
            id: 2,
            truncate_from: Some(4),
            entries: vec![rec(4, b"new")],
            ..Default::default()
        }])
        .unwrap();
        let got = disk.load().unwrap();
        assert_eq!(got.entries, vec![rec(3, b"a"), rec(4, b"new")]);
    }

    #[test]
    fn randomized_histories_match_the_reference() {
        for seed in 0..12u64 {
            let mut rng = Rng(seed);
            let dir = tempfile::tempdir().unwrap();
            let mut disk = Disk::open(dir.path()).unwrap();
            let mut want = DurableState::default();
            let mut id = 0u64;
            // Invariant: the log holds (floor, next) — indices above `floor`, below `next`.
            let mut floor = 0u64;
            let mut next = 1u64;
            for step in 0..60 {
                let mut group = Vec::new();
                for _ in 0..1 + rng.below(4) {
                    id += 1;
                    let mut b =
                        PersistBatch { id, must_sync: rng.chance(50), ..Default::default() };
                    if rng.chance(15) {
                        b.snapshot = Some(snap(floor, id));
                    }
                    if rng.chance(25) {
                        let t = floor + 1 + rng.below(next - floor + 2);
                        b.truncate_from = Some(t);
                        next = next.min(t);
                    }
                    if rng.chance(20) {
                        let c = floor + rng.below(next - floor + 6);
                        b.compact_to = Some(c);
                        floor = floor.max(c);
                        next = next.max(floor + 1);
                    }
                    for _ in 0..rng.below(7) {
                        b.entries.push(LogRecord { index: next, bytes: rng.bytes(next) });
                        next += 1;
                    }
                    if rng.chance(50) {
                        b.hard_state = Some(rng.bytes(id));
                    }
                    if rng.chance(10) {
                        b.node_meta = Some(rng.bytes(id));
                    }
                    want.apply(&b);
                    group.push(b);
                }
                disk.write(&group).unwrap();
                if rng.chance(10) {
                    drop(disk);
                    disk = Disk::open(dir.path()).unwrap();
                }
                assert_eq!(disk.load().unwrap(), want, "seed {seed} step {step}");
            }
            drop(disk);
            let disk = Disk::open(dir.path()).unwrap();
            assert_eq!(disk.load().unwrap(), want, "seed {seed} after reopen");
        }
    }
}
