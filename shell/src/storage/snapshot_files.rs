//! Snapshot files: `<raft dir>/snapshots/<index>-<term>.snap`, each a snapshot in the core's
//! format, named by a [`SnapshotRef`] that pins its length and checksum.
//!
//! A file is written under a temporary name (`….snap.tmp` for the node's own snapshot jobs,
//! `….snap.recv.tmp` for one received from the leader), synced, renamed, and the directory
//! synced, so a crash leaves either the whole file or a temporary one, which start-up removes
//! ([`SnapshotDir::remove_all_but`]). Only after that does the core see the reference, so the
//! persist batch that stores it (and compacts the log) never refers to a file that may not
//! be there. Files of older snapshots go once a newer reference is durable
//! ([`SnapshotDir::remove_older_than`]). Reading ([`SnapshotDir::read_image`]) streams the
//! file through the core's [`SnapshotDecoder`] and checks it against the reference: memory is
//! a few chunks plus the decoded state. Decoding a large state is most of a node's time to its
//! first answer at a start, so it runs on three threads: one reads the file and checks it
//! against the reference, the caller decodes the keys (allocating their blocks), a third
//! inserts them into the map (the B-tree). A snapshot received from the leader is decoded as it
//! arrives, checked and decoded on the receiving thread, inserted on a second.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use mokv_core::{
    KeyBatch, SnapshotDecoder, SnapshotFileCheck, SnapshotImage, SnapshotJob, SnapshotKeys,
    SnapshotRef, SnapshotRefBuilder,
};

use crate::storage::disk::DiskError;
use crate::storage::snapshot_readers::{SnapshotReader, SnapshotReaders};

/// Bytes per read or write of a snapshot file.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Bytes written to a snapshot file between two syncs of its data. Synced only at its end, a
/// file of hundreds of MiB reaches the disk in one burst, and the log's fsyncs, which every
/// write waits for, queue behind it; synced as it is written, each burst stays small.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A snapshot file being written: its data synced every [`SYNC_EVERY_BYTES`].
#[derive(Debug)]
struct SyncedFile {
    file: File,
    unsynced_bytes: u64,
}

impl SyncedFile {
    fn create(path: &Path) -> Result<SyncedFile, DiskError> {
        let file = File::create(path).map_err(io_error("create", path))?;
        Ok(SyncedFile { file, unsynced_bytes: 0 })
    }

    fn write_all(&mut self, bytes: &[u8], path: &Path) -> Result<(), DiskError> {
        self.file.write_all(bytes).map_err(io_error("write", path))?;
        self.unsynced_bytes += bytes.len() as u64;
        if self.unsynced_bytes >= SYNC_EVERY_BYTES {
            self.file.sync_data().map_err(io_error("sync", path))?;
            self.unsynced_bytes = 0;
        }
        Ok(())
    }
}

/// Batches of decoded keys on their way from the reading thread to the inserting one: each
/// holds the keys of one chunk (at most [`CHUNK_BYTES`] plus one key), so this bounds the
/// memory between the two.
const KEY_BATCHES_IN_FLIGHT: usize = 4;

/// Chunks read ahead of the decoder when a node reads its snapshot file at a start: bounds
/// the memory between the reading thread and the decoding one to this many [`CHUNK_BYTES`].
const CHUNKS_READ_AHEAD: usize = 4;

/// The directory of one node's snapshot files.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    readers: SnapshotReaders,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::SnapshotFile { op, path, source }
}

impl SnapshotDir {
    /// The directory `dir`, created if missing.
    pub fn open(dir: PathBuf) -> Result<SnapshotDir, DiskError> {
        std::fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        Ok(SnapshotDir { dir, readers: SnapshotReaders::default() })
    }

    /// Where the file `r` names lives.
    pub fn path_of(&self, r: &SnapshotRef) -> PathBuf {
        self.dir.join(r.file_name())
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("sync directory", &self.dir))
    }

    /// Writes `job` to its file, durably (temporary file, sync, rename, directory sync), and
    /// returns the file's reference. Blocks on I/O.
    pub fn write_job(&self, job: SnapshotJob) -> Result<SnapshotRef, DiskError> {
        let (index, term) = (job.index(), job.term());
        let name = SnapshotRef { index, term, len_bytes: 0, crc32: 0 }.file_name();
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = SyncedFile::create(&tmp)?;
        let mut reference = SnapshotRefBuilder::default();
        for chunk in job.encoder(CHUNK_BYTES) {
            file.write_all(&chunk, &tmp)?;
            reference.feed(&chunk);
        }
        let reference = reference.finish(index, term);
        self.commit(file.file, &tmp, &reference)?;
        Ok(reference)
    }

    /// Syncs `file` (at `tmp`), renames it to the name of `reference`, syncs the directory.
    fn commit(&self, file: File, tmp: &Path, reference: &SnapshotRef) -> Result<(), DiskError> {
        file.sync_all().map_err(io_error("sync", tmp))?;
        drop(file);
        let path = self.path_of(reference);
        std::fs::rename(tmp, &path).map_err(io_error("rename", tmp))?;
        self.sync_dir()
    }

    /// A file being received for `reference`: written under a temporary name, checked and
    /// decoded as it arrives ([`ReceivingFile`]).
    pub fn receive(&self, reference: SnapshotRef) -> Result<ReceivingFile, DiskError> {
        let tmp = self.dir.join(format!("{}.recv.tmp", reference.file_name()));
        let file = SyncedFile::create(&tmp)?;
        let check = Receiving::with_inserter(reference)?;
        Ok(ReceivingFile { dir: self.clone(), tmp, file, check })
    }

    /// Opens the file `r` names for reading ([`DiskError::SnapshotMissing`] if it is gone).
    pub fn open_file(&self, r: &SnapshotRef) -> Result<SnapshotReader, DiskError> {
        let path = self.path_of(r);
        match self.readers.open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(DiskError::SnapshotMissing { path })
            }
            Err(source) => Err(DiskError::SnapshotFile { op: "open", path, source }),
        }
    }

    /// Reads the file `r` names, streaming, checked against `r`, into its image, on three
    /// threads: one reads the file and checks it against `r`, the caller decodes the keys
    /// (allocating their blocks), a third inserts them into the map. A read chunk is a fresh
    /// buffer, handed over and freed once decoded: the blocks decoded next then reuse its
    /// pages, so the reading thread takes most of the page faults a restart's heap costs.
    pub fn read_image(&self, r: &SnapshotRef) -> Result<SnapshotImage, DiskError> {
        let path = self.path_of(r);
        let mut file = self.open_file(r)?;
        let mut decoding = Receiving::with_inserter(*r)?;
        let reference = *r;
        std::thread::scope(|scope| {
            let (chunks, inbox) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_READ_AHEAD);
            let reading_path = &path;
            let reader = std::thread::Builder::new()
                .name("mokv-snapshot-read".into())
                .spawn_scoped(scope, move || -> Result<SnapshotFileCheck, DiskError> {
                    let mut check = SnapshotFileCheck::new(reference);
                    loop {
                        let mut chunk = vec![0u8; CHUNK_BYTES];
                        let n = file.read(&mut chunk).map_err(io_error("read", reading_path))?;
                        if n == 0 {
                            return Ok(check);
                        }
                        chunk.truncate(n);
                        check
                            .feed(&chunk)
                            .map_err(|e| SnapshotBytesError::Mismatch(e).at(reading_path))?;
                        if chunks.send(chunk).is_err() {
                            // The decoder failed and stopped listening; its error is returned.
                            return Ok(check);
                        }
                    }
                })
                .map_err(|source| DiskError::Thread { what: "read a snapshot file", source })?;
            let mut decoded = Ok(());
            for chunk in &inbox {
                decoded = decoding.feed_unchecked(&chunk);
                if decoded.is_err() {
                    break;
                }
            }
            drop(inbox);
            let check = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            decoded.map_err(|e| e.at(&path))?;
            check.finish().map_err(|e| SnapshotBytesError::Mismatch(e).at(&path))?;
            decoding.finish_unchecked().map_err(|e| e.at(&path))
        })
    }

    /// Writes `image`'s file (a bootstrap's or a recovery's), durably; `Ok` if it is the file
    /// `want` names.
    pub fn write_image(&self, image: &SnapshotImage, want: &SnapshotRef) -> Result<(), DiskError> {
        let got = self.write_job(image.to_job())?;
        if got != *want {
            return Err(DiskError::SnapshotMismatch {
                path: self.path_of(want),
                what: "the written file is not the one referenced",
            });
        }
        Ok(())
    }

    /// Deletes the files of snapshots older than `index` (a newer reference is durable).
    /// Temporary files are left alone: one may be a job or a transfer under way.
    /// Each is unlinked at once: its blocks are freed in one go.
    pub fn remove_older_than(&self, index: u64) -> Result<(), DiskError> {
        self.remove_where(older_than(index), |path| std::fs::remove_file(path))
    }

    /// As [`Self::remove_older_than`], but each file no one reads is handed to `free` after
    /// it is unlinked, still open: its blocks are freed as `free` shortens it and when it
    /// drops it. A file being read is unlinked only (freed when its last reader closes it).
    pub(crate) fn remove_older_than_freeing(
        &self,
        index: u64,
        free: impl Fn(File),
    ) -> Result<(), DiskError> {
        self.remove_where(older_than(index), |path| {
            if let Some(file) = self.readers.unlink(path)? {
                free(file);
            }
            Ok(())
        })
    }

    /// At start-up: deletes every file but the one `keep` names (temporary files of writes a
    /// crash cut short, files no durable reference names).
    pub fn remove_all_but(&self, keep: Option<&SnapshotRef>) -> Result<(), DiskError> {
        let keep = keep.map(SnapshotRef::file_name);
        let doomed = |name: &str| {
            let ours = name.ends_with(".tmp") || SnapshotRef::parse_file_name(name).is_some();
            ours && Some(name) != keep.as_deref()
        };
        self.remove_where(doomed, |path| std::fs::remove_file(path))
    }

    /// Removes (with `remove`) every file `doomed` names; one that cannot go does not keep the
    /// others. The first failure is returned.
    fn remove_where(
        &self,
        doomed: impl Fn(&str) -> bool,
        remove: impl Fn(&Path) -> std::io::Result<()>,
    ) -> Result<(), DiskError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))?;
        let mut removed = false;
        let mut failed = None;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if doomed(name) {
                let path = entry.path();
                match remove(&path) {
                    Ok(()) => {
                        removed = true;
                        tracing::debug!(file = name, "removed snapshot file");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        failed.get_or_insert(DiskError::SnapshotFile {
                            op: "remove",
                            path,
                            source,
                        });
                    }
                }
            }
        }
        if removed {
            self.sync_dir()?;
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Names the files of snapshots older than `index`.
fn older_than(index: u64) -> impl Fn(&str) -> bool {
    move |name| SnapshotRef::parse_file_name(name).is_some_and(|(i, _)| i < index)
}

/// Why a snapshot file's bytes were refused, before the path is known.
#[derive(Debug)]
pub enum SnapshotBytesError {
    Mismatch(mokv_core::SnapshotFileMismatch),
    Decode(mokv_core::codec::DecodeError),
}

impl SnapshotBytesError {
    /// The error for the file at `path`.
    pub fn at(self, path: &Path) -> DiskError {
        let path = path.to_path_buf();
        match self {
            SnapshotBytesError::Mismatch(source) => DiskError::SnapshotWrongFile { path, source },
            SnapshotBytesError::Decode(source) => DiskError::SnapshotCorrupt { path, source },
        }
    }
}

/// A snapshot file's bytes checked against their reference and decoded as they arrive.
#[derive(Debug)]
pub struct Receiving {
    /// The file's length and checksum against the reference: checked before the image is
    /// returned, so the decoder does not compute the frame's own checksum as well.
    check: SnapshotFileCheck,
    decoder: SnapshotDecoder,
    /// The thread inserting the decoded keys into the map, if not this one.
    inserter: Option<KeyInserter>,
    reference: SnapshotRef,
}

impl Receiving {
    /// Decodes and inserts on the caller's thread.
    pub fn new(reference: SnapshotRef) -> Self {
        Self {
            check: SnapshotFileCheck::new(reference),
            decoder: SnapshotDecoder::new().checked_by_caller(),
            inserter: None,
            reference,
        }
    }

    /// Decodes on the caller's thread and puts the keys into the map's leaves on a thread of
    /// its own. Decoding (allocating each key's block, most of it faulting in fresh heap
    /// pages) is by far the larger part since the map is built bottom-up; the leaves still
    /// take ≈ 20 ms of 1M keys off the caller's thread, `perf record`.
    pub fn with_inserter(reference: SnapshotRef) -> Result<Self, DiskError> {
        Ok(Self {
            check: SnapshotFileCheck::new(reference),
            decoder: SnapshotDecoder::handing_out_keys().checked_by_caller(),
            inserter: Some(KeyInserter::start()?),
            reference,
        })
    }

    /// The next bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), SnapshotBytesError> {
        self.check.feed(bytes).map_err(SnapshotBytesError::Mismatch)?;
        self.feed_unchecked(bytes)
    }

    /// The next bytes, which the caller checks against the reference itself (with a
    /// [`SnapshotFileCheck`] of its own, before it uses the image).
    fn feed_unchecked(&mut self, bytes: &[u8]) -> Result<(), SnapshotBytesError> {
        self.decoder.feed(bytes).map_err(SnapshotBytesError::Decode)?;
        if let Some(inserter) = &self.inserter {
            while let Some(batch) = self.decoder.take_keys() {
                inserter.send(batch);
            }
        }
        Ok(())
    }

    /// The image, once the bytes are exactly the referenced file and decode completely.
    pub fn finish(self) -> Result<SnapshotImage, SnapshotBytesError> {
        let Receiving { check, decoder, inserter, reference } = self;
        check.finish().map_err(SnapshotBytesError::Mismatch)?;
        decoded_image(decoder, inserter, reference)
    }

    /// The image, once the bytes decode completely: for a caller that checked them against
    /// the reference itself.
    fn finish_unchecked(self) -> Result<SnapshotImage, SnapshotBytesError> {
        let Receiving { decoder, inserter, reference, .. } = self;
        decoded_image(decoder, inserter, reference)
    }
}

/// The image `decoder` decoded (its keys inserted by `inserter`, if any), if it is the one
/// `reference` names.
fn decoded_image(
    decoder: SnapshotDecoder,
    inserter: Option<KeyInserter>,
    reference: SnapshotRef,
) -> Result<SnapshotImage, SnapshotBytesError> {
    let image = match inserter {
        Some(inserter) => decoder.finish_with(inserter.finish()),
        None => decoder.finish(),
    }
    .map_err(SnapshotBytesError::Decode)?;
    if (image.index, image.term) != (reference.index, reference.term) {
        return Err(SnapshotBytesError::Decode(mokv_core::codec::DecodeError::Invalid(
            "snapshot position differs from its reference",
        )));
    }
    Ok(image)
}

/// A thread inserting the keys a [`SnapshotDecoder`] hands out into a [`SnapshotKeys`], in
/// the order they are sent. Dropped unfinished (a failed read or transfer), it lets the
/// thread drop what it built and end.
#[derive(Debug)]
struct KeyInserter {
    batches: std::sync::mpsc::SyncSender<KeyBatch>,
    thread: std::thread::JoinHandle<SnapshotKeys>,
}

impl KeyInserter {
    fn start() -> Result<Self, DiskError> {
        let (batches, inbox) = std::sync::mpsc::sync_channel::<KeyBatch>(KEY_BATCHES_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("mokv-snapshot-keys".into())
            .spawn(move || {
                let mut keys = SnapshotKeys::new();
                for batch in inbox {
                    keys.insert(batch);
                }
                keys
            })
            .map_err(|source| DiskError::Thread { what: "insert snapshot keys", source })?;
        Ok(Self { batches, thread })
    }

    /// Hands `batch` over, waiting while [`KEY_BATCHES_IN_FLIGHT`] batches are queued.
    fn send(&self, batch: KeyBatch) {
        // Fails only if the thread panicked; `finish` resumes that panic.
        let _ = self.batches.send(batch);
    }

    /// Every key sent, in the map.
    fn finish(self) -> SnapshotKeys {
        drop(self.batches);
        self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// A snapshot file being received ([`SnapshotDir::receive`]).
#[derive(Debug)]
pub struct ReceivingFile {
    dir: SnapshotDir,
    tmp: PathBuf,
    file: SyncedFile,
    check: Receiving,
}

impl ReceivingFile {
    /// Writes and checks the next bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DiskError> {
        self.check.feed(bytes).map_err(|e| e.at(&self.tmp))?;
        self.file.write_all(bytes, &self.tmp)
    }

    /// Checks the whole file, makes it durable under its name and returns its image. On an
    /// error the temporary file is removed.
    pub fn finish(self) -> Result<SnapshotImage, DiskError> {
        let ReceivingFile { dir, tmp, file, check } = self;
        let reference = check.reference;
        let result = check
            .finish()
            .map_err(|e| e.at(&tmp))
            .and_then(|image| dir.commit(file.file, &tmp, &reference).map(|()| image));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_synced_every_sync_every_bytes_as_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = SyncedFile::create(&path).unwrap();
        let chunk = vec![1u8; CHUNK_BYTES];
        let per_sync = (SYNC_EVERY_BYTES / CHUNK_BYTES as u64) as usize;
        for written in 1..=2 * per_sync + 1 {
            file.write_all(&chunk, &path).unwrap();
            let unsynced_chunks = written % per_sync;
            assert_eq!(file.unsynced_bytes, (unsynced_chunks * CHUNK_BYTES) as u64);
        }
        drop(file);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, ((2 * per_sync + 1) * CHUNK_BYTES) as u64);
    }
}
