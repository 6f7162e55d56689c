//! Deletes the files of replaced snapshots on a thread of its own.
//!
//! A replaced file is as large as the state (hundreds of MiB at 1M keys). Unlinking it frees
//! its blocks and page cache, and the directory sync after it commits the file system's
//! journal: tens to hundreds of ms that, on the disk writer, every write of the node would
//! wait for (README, Performance: stalls while loading). Nothing waits for the removal: a file left behind by a crash or a failed removal is removed by the next removal
//! or at start-up ([`SnapshotDir::remove_all_but`]).
//!
//! Invariant: only files older than a reference that is already durable are ever requested
//! ([`Disk::write`](super::disk::Disk::write) asks after a synced write), so no reference on
//! disk can name a file this thread removes.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::snapshot_files::SnapshotDir;

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
        if let Err(e) = dir.remove_older_than(below) {
            tracing::warn!(error = %e, "removing old snapshot files; retried at the next snapshot or start-up");
        }
    }
}
