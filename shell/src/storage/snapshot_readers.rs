//! Which snapshot files are open for reading.
//!
//! A replaced snapshot file is freed gradually: unlinked, then shortened step by step through a
//! descriptor kept open (`snapshot_remover`). Shortening is only safe when no one reads the
//! file — a transfer to a follower keeps streaming the file it started with after a newer
//! snapshot replaced it, and must see every byte. So readers are counted here, and
//! [`SnapshotReaders::unlink`] hands a file out for shortening only when its count is zero.
//!
//! Invariant: opening for reading ([`SnapshotReaders::open`]) and the count check plus unlink
//! ([`SnapshotReaders::unlink`]) happen under one lock, so a file handed out for shortening
//! has no reader and can get none (its name is gone).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The readers of one node's snapshot files, shared by every clone.
#[derive(Debug, Default, Clone)]
pub(crate) struct SnapshotReaders {
    /// Open readers per path; a path is absent when it has none.
    open: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

impl SnapshotReaders {
    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens `path` for reading; it counts as read until the returned reader is dropped.
    pub(crate) fn open(&self, path: &Path) -> std::io::Result<SnapshotReader> {
        let mut open = self.lock();
        let file = File::open(path)?;
        *open.entry(path.to_path_buf()).or_default() += 1;
        Ok(SnapshotReader { file, path: path.to_path_buf(), readers: self.clone() })
    }

    /// Unlinks `path`. When no one reads it, returns it opened for writing, so the caller
    /// decides how its blocks are freed (they go when the returned file is dropped); when it is
    /// read, returns `None` and its blocks go when the last reader closes it.
    pub(crate) fn unlink(&self, path: &Path) -> std::io::Result<Option<File>> {
        let open = self.lock();
        // Not openable for writing (a directory under the name, say): unlinked as it is.
        let writable = if open.contains_key(path) {
            None
        } else {
            OpenOptions::new().write(true).open(path).ok()
        };
        std::fs::remove_file(path)?;
        Ok(writable)
    }
}

/// A snapshot file open for reading ([`SnapshotReaders::open`]).
#[derive(Debug)]
pub struct SnapshotReader {
    file: File,
    path: PathBuf,
    readers: SnapshotReaders,
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Drop for SnapshotReader {
    fn drop(&mut self) {
        let mut open = self.readers.lock();
        if let Some(count) = open.get_mut(&self.path) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file someone reads is unlinked but not handed out for shortening, so its reader
    /// still gets every byte; once the reader is gone, the next file is handed out.
    #[test]
    fn a_read_file_is_never_handed_out_for_shortening() {
        let dir = tempfile::tempdir().unwrap();
        let readers = SnapshotReaders::default();
        let (read, unread) = (dir.path().join("read"), dir.path().join("unread"));
        let bytes: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        std::fs::write(&read, &bytes).unwrap();
        std::fs::write(&unread, &bytes).unwrap();

        let mut reader = readers.open(&read).unwrap();
        let mut first = vec![0u8; 10];
        reader.read_exact(&mut first).unwrap();
        assert!(readers.unlink(&read).unwrap().is_none(), "handed out while read");
        assert!(!read.exists());
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        first.extend(rest);
        assert_eq!(first, bytes);
        drop(reader);
        assert!(readers.lock().is_empty(), "a dropped reader still counted");

        let handed = readers.unlink(&unread).unwrap().expect("no reader: handed out");
        assert!(!unread.exists());
        handed.set_len(10).unwrap();
        assert_eq!(handed.metadata().unwrap().len(), 10);
        assert!(readers.open(&unread).is_err(), "an unlinked file opened");
    }
}
