//! Deletes the files of replaced snapshots on a thread of its own.
//!
//! A replaced file is as large as the state (hundreds of MiB at 1M keys). Unlinking it frees
//! its blocks and page cache, and the directory sync after it writes the file system's
//! metadata: tens to hundreds of ms that, on the disk writer, every write of the node would
//! wait for (README, Performance: stalls while loading). Nothing waits for the removal: a file
//! left behind by a crash or a failed removal is removed by the next removal or at start-up
//! ([`SnapshotDir::remove_all_but`]).
//!
//! Off the writer is not enough: freeing a file's blocks in one go is one long operation for
//! the disk (on a file system mounted with `discard`, as ext4 here, every freed block is
//! trimmed as it is freed), and the log's fsyncs of every node sharing the disk wait behind
//! it — measured at 1M keys: unlinks of 190–270 MB files took 80–160 ms, and synced log
//! writes of all three nodes finished the moment an unlink did. So a file no one reads is
//! unlinked and then shortened through a descriptor kept open, [`FREE_STEP_BYTES`] at a time,
//! [`FREE_STEP_PAUSE`] apart: an fsync waits for one step at most. A file being read (a
//! transfer to a follower) is only unlinked; its blocks go when the transfer closes it
//! (`snapshot_readers`).
//!
//! Invariant: only files older than a reference that is already durable are ever requested
//! ([`Disk::write`](super::disk::Disk::write) asks after a synced write), so no reference on
//! disk can name a file this thread removes.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::snapshot_files::SnapshotDir;

/// Bytes a replaced file is shortened by in one step: what an fsync may have to wait for
/// (about 3 ms of freeing and trimming on the machine measured).
const FREE_STEP_BYTES: u64 = 8 << 20;

/// Pause between two steps: lets the log's fsyncs through. A 270 MB file is freed in about
/// half a second, well within the seconds between two snapshots.
const FREE_STEP_PAUSE: Duration = Duration::from_millis(10);

/// What the disk writer asked for and the thread has not done yet.
#[derive(Debug, Default)]
struct Pending {
    /// Remove the files of snapshots older than this index.
    below: Option<u64>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The removal thread of one store; stopped and joined when dropped (after the removal under
/// way, if any).
#[derive(Debug)]
pub(crate) struct SnapshotRemover {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotRemover {
    /// Starts the thread. If the OS refuses a thread, removals run on the caller instead.
    pub(crate) fn start(dir: SnapshotDir) -> SnapshotRemover {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mokv-snapshot-rm".into())
            .spawn(move || run(&dir, &theirs))
            .map_err(|e| tracing::warn!(error = %e, "no thread for removing old snapshot files"))
            .ok();
        SnapshotRemover { shared, thread }
    }

    /// Asks for the files of snapshots older than `below` to go. Requests not yet taken
    /// merge into one (the highest index), so this holds one request at most.
    pub(crate) fn remove_older_than(&self, below: u64, dir: &SnapshotDir) {
        if self.thread.is_none() {
            if let Err(e) = dir.remove_older_than(below) {
                tracing::warn!(error = %e, "removing old snapshot files");
            }
            return;
        }
        let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.below = Some(pending.below.map_or(below, |b| b.max(below)));
        self.shared.wake.notify_one();
    }
}

impl Drop for SnapshotRemover {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
            self.shared.wake.notify_one();
            let _ = thread.join();
        }
    }
}

fn run(dir: &SnapshotDir, shared: &Shared) {
    loop {
        let below = {
            let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            while pending.below.is_none() && !pending.stop {
                pending = shared.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            match pending.below.take() {
                Some(below) => below,
                None => return, // stopped, nothing left to do
            }
        };
        let free = |file: File| free_in_steps(&file, shared);
        if let Err(e) = dir.remove_older_than_freeing(below, free) {
            tracing::warn!(error = %e, "removing old snapshot files; retried at the next snapshot or start-up");
        }
    }
}

/// Shortens an unlinked `file` [`FREE_STEP_BYTES`] at a time, [`FREE_STEP_PAUSE`] apart; the
/// rest is freed when the caller drops it. A stop cuts the pauses short (the rest goes at
/// once), so shutting down never waits for a large file.
fn free_in_steps(file: &File, shared: &Shared) {
    let mut len = match file.metadata() {
        Ok(meta) => meta.len(),
        Err(_) => return,
    };
    while len > FREE_STEP_BYTES {
        len -= FREE_STEP_BYTES;
        if let Err(e) = file.set_len(len) {
            tracing::debug!(error = %e, "shortening a replaced snapshot file; freed at once");
            return;
        }
        let pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (pending, _) = shared
            .wake
            .wait_timeout_while(pending, FREE_STEP_PAUSE, |p| !p.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if pending.stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, Instant};

    use mokv_core::SnapshotRef;

    use super::*;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// An unlinked file is shortened step by step down to less than a step (the rest goes when
    /// it is dropped); a stop ends the shortening after the step under way.
    #[test]
    fn a_file_is_shortened_in_steps_until_a_stop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("replaced");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(3 * FREE_STEP_BYTES + 5).unwrap();
        free_in_steps(&file, &Shared::default());
        assert_eq!(file.metadata().unwrap().len(), 5);

        file.set_len(3 * FREE_STEP_BYTES + 5).unwrap();
        let stopped = Shared::default();
        stopped.pending.lock().unwrap().stop = true;
        free_in_steps(&file, &stopped);
        assert_eq!(file.metadata().unwrap().len(), 2 * FREE_STEP_BYTES + 5);
    }

    /// Replaced files larger than a step go, freed in steps, except that one a transfer
    /// reads is only unlinked: the transfer still reads every byte of it.
    #[test]
    fn replaced_files_go_and_one_being_read_is_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snapshots")).unwrap();
        let len_bytes = 3 * FREE_STEP_BYTES + 5;
        let bytes: Vec<u8> = (0..len_bytes).map(|i| (i % 251) as u8).collect();
        let read = SnapshotRef { index: 3, term: 1, len_bytes, crc32: 0 };
        std::fs::write(dir.path_of(&read), &bytes).unwrap();
        std::fs::write(tmp.path().join("snapshots/4-1.snap"), &bytes).unwrap();
        std::fs::write(tmp.path().join("snapshots/9-2.snap"), b"newest").unwrap();
        let mut transfer = dir.open_file(&read).unwrap();
        let mut got = vec![0u8; 10];
        transfer.read_exact(&mut got).unwrap();

        let remover = SnapshotRemover::start(dir.clone());
        remover.remove_older_than(9, &dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while names(&tmp.path().join("snapshots")) != ["9-2.snap"] {
            assert!(Instant::now() < deadline, "{:?}", names(&tmp.path().join("snapshots")));
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(remover); // joined: whatever it freed, it is done

        transfer.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), bytes.len());
        assert!(got == bytes, "the transfer read other bytes");
    }
}
