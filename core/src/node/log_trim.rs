//! Keeping the in-memory Raft log within its byte budget.
//!
//! Memory and disk hold different spans of the log. The disk keeps every entry after the
//! durable snapshot (a restart replays them onto it), plus `log_keep_entries` behind it. Memory
//! only needs what raft-rs reads: entries not applied yet, entries followers still need, and
//! entries a snapshot being taken or sent must connect to. So memory drops applied entries,
//! oldest first, down to half of [`Config::max_in_memory_log_bytes`] once they hold more than
//! it — also past the snapshot, without taking one — and the disk drops only what memory
//! dropped up to the snapshot. Entries not applied yet do not count against that budget (a
//! slow quorum would otherwise make memory drop what followers still need); raft-rs bounds
//! them with the uncommitted-size limit.
//!
//! Invariants:
//! - the disk's first kept index is `min(memory's first index, snapshot index + 1)`;
//! - memory never drops an unapplied entry, nor one after the index of a snapshot job in
//!   flight or of a snapshot being sent to an active follower (raft-rs moves that follower on
//!   to the entry after it), so a snapshot taken or sent always connects to the log;
//! - [`MemLog`](crate::log::MemLog) refuses to hand raft-rs a snapshot that no longer connects
//!   (and asks for a new one), so a follower is never sent one it would need again at once.
//!
//! A follower behind memory's first entry catches up by snapshot; to keep that rare, the
//! first pass only drops entries every active follower already has.
//!
//! [`Config::max_in_memory_log_bytes`]: crate::Config::max_in_memory_log_bytes

use raft::{ProgressState, StateRole};

use super::Node;
use crate::persist::PersistBatch;

impl Node {
    /// Trims the in-memory log once its applied entries hold more than its budget (see the
    /// module comment).
    pub(super) fn trim_log(&mut self) {
        if self.raw.store().bytes() <= self.config.max_in_memory_log_bytes {
            return;
        }
        let (budget, low_water) = self.log_budget_with_unapplied();
        if self.raw.store().bytes() <= budget {
            return;
        }
        let (needed, wanted_by_followers) = self.log_trim_limits();
        let snapshot = self.raw.store().snapshot_index();
        let disk_before = self.raw.store().first_index().saturating_sub(1).min(snapshot);
        let store = self.raw.mut_store();
        store.compact_to_fit(low_water, wanted_by_followers);
        if store.bytes() > budget {
            store.compact_to_fit(low_water, needed);
        }
        let disk_to = store.first_index().saturating_sub(1).min(snapshot);
        if disk_to > disk_before {
            let batch = PersistBatch { compact_to: Some(disk_to), ..PersistBatch::default() };
            self.enqueue_persist(None, batch, Vec::new());
        }
    }

    /// The in-memory log's budget and low-water mark in bytes of the whole log: those of the
    /// applied entries ([`Config::max_in_memory_log_bytes`] and half of it) plus the entries not
    /// applied yet, which memory keeps whatever their size (raft-rs bounds them:
    /// [`Config::max_uncommitted_log_bytes`]).
    ///
    /// [`Config::max_uncommitted_log_bytes`]: crate::Config::max_uncommitted_log_bytes
    pub(super) fn log_budget_with_unapplied(&self) -> (u64, u64) {
        let budget = self.config.max_in_memory_log_bytes;
        let unapplied = self.raw.store().bytes_after(self.sm.applied_index());
        (budget + unapplied, budget / 2 + unapplied)
    }

    /// The last index memory may drop, and the lower one that also keeps every entry an
    /// active follower does not have yet (on a follower the two are the same).
    fn log_trim_limits(&self) -> (u64, u64) {
        let mut needed = self.sm.applied_index();
        if let Some(image) = &self.snapshot_in_flight {
            needed = needed.min(image.index);
        }
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return (needed, needed);
        }
        let store = self.raw.store();
        let (dropped_to, snapshot) = (store.first_index() - 1, store.snapshot_index());
        let mut wanted = needed;
        for (&id, pr) in raft.prs().iter() {
            // A follower silent for an election timeout pins nothing: when it is back, it
            // gets a new snapshot if memory moved past it.
            if id == raft.id || !pr.recent_active {
                continue;
            }
            if pr.state == ProgressState::Snapshot {
                needed = needed.min(pr.pending_snapshot);
            } else if pr.matched < dropped_to {
                // It needs a snapshot: keep the one we have connected until it is sent.
                if snapshot >= dropped_to {
                    needed = needed.min(snapshot);
                }
            } else {
                wanted = wanted.min(pr.matched);
            }
        }
        (needed, wanted.min(needed))
    }
}
