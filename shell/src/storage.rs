//! Where a node keeps its durable state: the [`Storage`] seam between the driver and a disk.
//!
//! `mokvd` always uses RocksDB ([`Disk`]). [`MemoryStorage`] keeps the same state in memory for
//! programs that run whole clusters in one process (the simulator): no file, no OS thread, so a
//! simulated run stays on its runtime's one thread. Both follow the batch semantics documented
//! on [`PersistBatch`]; the memory store applies them with [`DurableState::apply`], the very
//! reference the RocksDB tests in `disk.rs` check `Disk` against.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mokv_core::persist::{DurableState, PersistBatch};
use mokv_core::{SnapshotImage, SnapshotJob, SnapshotRef, SnapshotRefBuilder};

use crate::storage::disk::{Disk, DiskError};
use crate::storage::snapshot_files::{Receiving, ReceivingFile, SnapshotDir};

pub mod disk;
pub mod restore;
pub mod snapshot_files;
pub mod snapshot_readers;
mod snapshot_remover;

/// A node's durable store: the core's persist batches plus a few metadata values the shell owns.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Everything written so far, exactly as written.
    fn load(&self) -> Result<DurableState, DiskError>;
    /// Applies `batches` (in id order) atomically; durable on return when any asks for a sync.
    fn write(&self, batches: &[PersistBatch]) -> Result<(), DiskError>;
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError>;
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DiskError>;
    /// Whether `write` blocks on I/O. A blocking store gets a dedicated writer thread; a
    /// non-blocking one is written from a task of the runtime.
    fn blocks(&self) -> bool;
    /// The store's snapshot files. They are a handle of their own so that what holds them
    /// (peer links, the peer service, a file being written on a blocking thread) never keeps
    /// the store itself (RocksDB and its lock) open after the node stopped.
    fn snapshot_files(&self) -> Arc<dyn SnapshotStore>;
}

/// A node's snapshot files.
pub trait SnapshotStore: Send + Sync + std::fmt::Debug + 'static {
    /// Whether these methods block on I/O (the shell then calls them on a blocking thread).
    fn blocks(&self) -> bool;
    /// Writes a snapshot job to its file, durably, and returns the file's reference.
    fn write_snapshot(&self, job: SnapshotJob) -> Result<SnapshotRef, DiskError>;
    /// The file `reference` names, to read from the start ([`DiskError::SnapshotMissing`]
    /// once a newer snapshot replaced it).
    fn read_snapshot(&self, reference: &SnapshotRef) -> Result<Box<dyn Read + Send>, DiskError>;
    /// Starts receiving the file `reference` names (from the leader).
    fn receive_snapshot(&self, reference: &SnapshotRef)
        -> Result<Box<dyn SnapshotSink>, DiskError>;
}

/// A snapshot file being received: its bytes in order, checked against the reference and
/// decoded as they arrive.
pub trait SnapshotSink: Send + std::fmt::Debug {
    /// The next bytes of the file.
    fn write(&mut self, bytes: &[u8]) -> Result<(), DiskError>;
    /// The whole file arrived: checks it, makes it durable and returns its image.
    fn finish(self: Box<Self>) -> Result<SnapshotImage, DiskError>;
}

impl SnapshotSink for ReceivingFile {
    fn write(&mut self, bytes: &[u8]) -> Result<(), DiskError> {
        ReceivingFile::write(self, bytes)
    }

    fn finish(self: Box<Self>) -> Result<SnapshotImage, DiskError> {
        ReceivingFile::finish(*self)
    }
}

impl Storage for Disk {
    fn load(&self) -> Result<DurableState, DiskError> {
        Disk::load(self)
    }

    fn write(&self, batches: &[PersistBatch]) -> Result<(), DiskError> {
        Disk::write(self, batches)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
        Disk::get_meta(self, key)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DiskError> {
        Disk::put_meta(self, key, value)
    }

    fn blocks(&self) -> bool {
        true
    }

    fn snapshot_files(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(self.snapshots().clone())
    }
}

impl SnapshotStore for SnapshotDir {
    fn blocks(&self) -> bool {
        true
    }

    fn write_snapshot(&self, job: SnapshotJob) -> Result<SnapshotRef, DiskError> {
        self.write_job(job)
    }

    fn read_snapshot(&self, reference: &SnapshotRef) -> Result<Box<dyn Read + Send>, DiskError> {
        Ok(Box::new(self.open_file(reference)?))
    }

    fn receive_snapshot(
        &self,
        reference: &SnapshotRef,
    ) -> Result<Box<dyn SnapshotSink>, DiskError> {
        Ok(Box::new(self.receive(*reference)?))
    }
}

/// A store in memory. Everything written is "durable" for as long as the value lives: a
/// simulated node that restarts with the same `MemoryStorage` sees what it wrote.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<DurableState>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Snapshot files by (index, term); those older than the stored snapshot go when a batch
    /// stores a newer one.
    files: MemorySnapshots,
}

/// A [`MemoryStorage`]'s snapshot files (a handle to the shared map).
#[derive(Debug, Default, Clone)]
pub struct MemorySnapshots {
    files: MemoryFiles,
}

/// A [`MemoryStorage`]'s snapshot files by (index, term), shared with the files being received.
type MemoryFiles = Arc<Mutex<BTreeMap<(u64, u64), Arc<Vec<u8>>>>>;

/// A file received into a [`MemoryStorage`].
#[derive(Debug)]
struct MemorySink {
    files: MemoryFiles,
    reference: SnapshotRef,
    bytes: Vec<u8>,
    check: Receiving,
}

impl SnapshotSink for MemorySink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), DiskError> {
        self.check.feed(bytes).map_err(|e| e.at(std::path::Path::new("memory")))?;
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<SnapshotImage, DiskError> {
        let image = self.check.finish().map_err(|e| e.at(std::path::Path::new("memory")))?;
        let key = (self.reference.index, self.reference.term);
        lock(&self.files).insert(key, Arc::new(self.bytes));
        Ok(image)
    }
}

/// Reads a shared file from the start.
struct SharedReader {
    bytes: Arc<Vec<u8>>,
    at: usize,
}

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

/// A panic while holding the lock cannot leave a half-applied batch behind (`apply` only
/// pushes and retains), so a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Storage for MemoryStorage {
    fn load(&self) -> Result<DurableState, DiskError> {
        Ok(lock(&self.state).clone())
    }

    fn write(&self, batches: &[PersistBatch]) -> Result<(), DiskError> {
        let mut state = lock(&self.state);
        for b in batches {
            if let Some(s) = b.snapshot.as_ref().filter(|s| s.write_file) {
                let bytes = s.image.encode();
                lock(&self.files.files).insert((s.image.index, s.image.term), Arc::new(bytes));
            }
            state.apply(b);
        }
        if let Some(s) = &state.snapshot {
            let keep = (s.reference.index, s.reference.term);
            lock(&self.files.files).retain(|k, _| k.0 >= keep.0);
        }
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
        Ok(lock(&self.meta).get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DiskError> {
        lock(&self.meta).insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn blocks(&self) -> bool {
        false
    }

    fn snapshot_files(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(self.files.clone())
    }
}

impl SnapshotStore for MemorySnapshots {
    fn blocks(&self) -> bool {
        false
    }

    fn write_snapshot(&self, job: SnapshotJob) -> Result<SnapshotRef, DiskError> {
        let (index, term) = (job.index(), job.term());
        let bytes = job.encode();
        let mut r = SnapshotRefBuilder::default();
        r.feed(&bytes);
        lock(&self.files).insert((index, term), Arc::new(bytes));
        Ok(r.finish(index, term))
    }

    fn read_snapshot(&self, reference: &SnapshotRef) -> Result<Box<dyn Read + Send>, DiskError> {
        match lock(&self.files).get(&(reference.index, reference.term)) {
            Some(bytes) => Ok(Box::new(SharedReader { bytes: bytes.clone(), at: 0 })),
            None => Err(DiskError::SnapshotMissing { path: reference.file_name().into() }),
        }
    }

    fn receive_snapshot(
        &self,
        reference: &SnapshotRef,
    ) -> Result<Box<dyn SnapshotSink>, DiskError> {
        Ok(Box::new(MemorySink {
            files: self.files.clone(),
            reference: *reference,
            bytes: Vec::new(),
            check: Receiving::new(*reference),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mokv_core::persist::LogRecord;

    #[test]
    fn memory_store_follows_the_reference_and_keeps_meta_apart() {
        let m = MemoryStorage::new();
        assert!(m.load().unwrap().is_empty());
        let b1 = PersistBatch {
            id: 1,
            entries: (1..=4).map(|i| LogRecord { index: i, bytes: vec![i as u8] }).collect(),
            hard_state: Some(b"hs".to_vec()),
            must_sync: true,
            ..Default::default()
        };
        let b2 = PersistBatch {
            id: 2,
            truncate_from: Some(3),
            entries: vec![LogRecord { index: 3, bytes: b"new".to_vec() }],
            ..Default::default()
        };
        m.write(std::slice::from_ref(&b1)).unwrap();
        m.write(std::slice::from_ref(&b2)).unwrap();
        let mut want = DurableState::default();
        want.apply(&b1);
        want.apply(&b2);
        assert_eq!(m.load().unwrap(), want);
        m.put_meta("node-id", b"7").unwrap();
        assert_eq!(m.get_meta("node-id").unwrap().as_deref(), Some(&b"7"[..]));
        assert_eq!(m.get_meta("other").unwrap(), None);
        assert_eq!(m.load().unwrap(), want);
        assert!(!m.blocks());
    }
}
