//! Where a node keeps its durable state: the [`Storage`] seam between the driver and a disk.
//!
//! `mokvd` always uses RocksDB ([`Disk`]). [`MemoryStorage`] keeps the same state in memory for
//! programs that run whole clusters in one process (the simulator): no file, no OS thread, so a
//! simulated run stays on its runtime's one thread. Both follow the batch semantics documented
//! on [`PersistBatch`]; the memory store applies them with [`DurableState::apply`], the very
//! reference the RocksDB tests in `disk.rs` check `Disk` against.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use mokv_core::persist::{DurableState, PersistBatch};

use crate::storage::disk::{Disk, DiskError};

pub mod disk;
pub mod restore;

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
}

/// A store in memory. Everything written is "durable" for as long as the value lives: a
/// simulated node that restarts with the same `MemoryStorage` sees what it wrote.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<DurableState>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
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
            state.apply(b);
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
