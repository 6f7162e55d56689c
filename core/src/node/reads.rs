//! Reads: serializable ones from local state, linearizable ones through ReadIndex rounds;
//! and the request timeouts.

use super::*;

impl Node {
    pub(super) fn read(&mut self, id: RequestId, kind: ReadKind, consistency: Consistency) {
        let local = consistency == Consistency::Serializable
            || (self.config.planted_bugs.stale_follower_reads
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

    pub(super) fn serve_read(&self, kind: &ReadKind) -> Result<Response, Error> {
        match kind {
            ReadKind::Get { key } => Ok(Response::Get(self.sm.get(key).cloned())),
            ReadKind::Range { query } => self
                .sm
                .range(query)
                .map(Response::Range)
                .map_err(|_| InvalidArgument::BadPageToken.into()),
        }
    }

    pub(super) fn start_read_round(&mut self) {
        let term = self.raw.raft.term;
        if let Some(ctx) =
            self.reads.start_round(term, self.tick, self.config.max_read_rounds_in_flight)
        {
            self.raw.read_index(ctx);
        }
    }

    pub(super) fn serve_applied_reads(&mut self) {
        for read in self.reads.take_servable(self.sm.applied_index()) {
            let result = self.serve_read(&read.kind);
            self.reply(read.id, result);
        }
    }

    // ------------------------------------------------------------------ timeouts

    pub(super) fn expire_requests(&mut self) {
        let now = self.tick;
        let expired: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline_tick <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in expired {
            if let Some(w) = self.writes.remove(&index) {
                self.reply(w.id, Err(Error::Indeterminate));
            }
        }
        let retry_ticks = if self.config.planted_bugs.skip_read_retry {
            u64::MAX
        } else {
            self.config.read_retry_ticks
        };
        for id in self.reads.on_tick(now, retry_ticks) {
            self.reply(id, Err(Unavailable::ReadTimedOut.into()));
        }
    }
}
