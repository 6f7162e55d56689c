//! Reads: serializable ones from local state, linearizable ones through ReadIndex rounds;
//! and the request timeouts.

use raft::StateRole;

use super::Node;
use crate::backup::BackupSource;
use crate::error::{Error, InvalidArgument, Unavailable};
use crate::read::{ReadKind, WaitingRead};
use crate::request::{Consistency, RequestId, Response};

impl Node {
    pub(super) fn read(&mut self, id: RequestId, kind: ReadKind, consistency: Consistency) {
        let local = consistency == Consistency::Serializable
            || (self.config.planted_bugs.stale_follower_reads()
                && self.raw.raft.state != StateRole::Leader);
        if local {
            let result = self.serve_read(&kind);
            self.reply(id, result);
            return;
        }
        if let Err(e) = self.check_capacity() {
            self.reply(id, Err(e));
            return;
        }
        let deadline_tick = self.tick + self.config.request_timeout_ticks;
        self.reads.push(WaitingRead { id, kind, deadline_tick });
    }

    fn serve_read(&mut self, kind: &ReadKind) -> Result<Response, Error> {
        match kind {
            ReadKind::LeaseKeepAlive { .. } | ReadKind::LeaseTimeToLive { .. } => {
                self.serve_lease_read(kind)
            }
            ReadKind::Get { key } => {
                Ok(Response::Get(self.sm.get(key).map(crate::kv::Entry::to_versioned)))
            }
            ReadKind::Range { query } => self
                .sm
                .range(query, self.config.max_page_bytes)
                .map(Response::Range)
                .map_err(|_| InvalidArgument::BadPageToken.into()),
            ReadKind::Backup => {
                Ok(Response::Backup(BackupSource::copy_of(&self.sm, self.meta.cluster_id)))
            }
        }
    }

    pub(super) fn start_read_round(&mut self) {
        if !self.read_index_is_taken() {
            return;
        }
        let term = self.raw.raft.term;
        if let Some(ctx) =
            self.reads.start_round(term, self.tick, self.config.max_read_rounds_in_flight)
        {
            self.stats.read_index_rounds_started += 1;
            self.raw.read_index(ctx);
        }
    }

    /// Whether raft-rs would act on a read index request now. It drops one silently on a node
    /// that knows no leader (a follower just restarted, a candidate) and on a leader that has
    /// not committed an entry of its term yet: a round issued then holds the round slot for
    /// `read_retry_ticks` with no chance of an answer, and every read behind it waits that
    /// long. Reads stay queued instead; the round starts with the Ready that makes this true
    /// (the first message from the leader, the commit of the leader's first entry).
    fn read_index_is_taken(&self) -> bool {
        let raft = &self.raw.raft;
        match raft.state {
            StateRole::Leader => raft.commit_to_current_term(),
            StateRole::Follower => raft.leader_id != raft::INVALID_ID,
            StateRole::Candidate | StateRole::PreCandidate => false,
        }
    }

    pub(super) fn serve_applied_reads(&mut self) {
        for read in self.reads.take_servable(self.sm.applied_index()) {
            if self.lease_read_waits_for_expiry(&read.kind) {
                // Answered once the expiry is applied (not found, its keys gone) or the
                // request times out: never "not found" while its keys can still be read.
                self.reads.push(read);
                continue;
            }
            let result = self.serve_read(&read.kind);
            self.reply(read.id, result);
        }
    }

    // ------------------------------------------------------------------ timeouts

    /// Fails the requests whose deadline passed (writes as indeterminate) and retries the
    /// read rounds that got no answer.
    pub(super) fn expire_requests(&mut self) {
        let now = self.tick;
        for w in self.writes.take_expired(now) {
            self.stats.proposals_dropped += 1;
            self.reply(w.id, Err(Error::Indeterminate));
        }
        let retry_ticks = if self.config.planted_bugs.skip_read_retry() {
            u64::MAX
        } else {
            self.config.read_retry_ticks
        };
        for id in self.reads.on_tick(now, retry_ticks) {
            self.reply(id, Err(Unavailable::ReadTimedOut.into()));
        }
    }
}
