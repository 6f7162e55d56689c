//! Client sessions: at-most-once writes even when a client retries (Raft dissertation §6.3).
//!
//! Sessions are part of the replicated state and of snapshots: every replica must decide
//! "apply" or "return the stored result" identically, or a retried write could be applied
//! twice after a leader change. So nothing here reads a clock; time is the *cluster time*, the
//! largest `proposed_at_ms` applied so far, which every replica sees at the same log index.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, Reader, Writer};
use crate::command::{SessionRef, WriteOutcome};

/// Bounds on the memory sessions may take. Every replica must use the same limits (they are
/// carried in snapshots for that reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session not used for longer than this (in cluster time) is forgotten.
    pub session_ttl_ms: u64,
    /// Creating a session beyond this evicts the least recently active one. At least one
    /// session is always kept, whatever this says.
    pub max_sessions: usize,
    /// Results kept per session; beyond this the smallest seqs are dropped and later answer
    /// [`SessionError::ResultDiscarded`].
    pub max_results_per_session: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self { session_ttl_ms: 600_000, max_sessions: 100_000, max_results_per_session: 64 }
    }
}

/// Why a write in a session was not applied. Neither is retryable with the same seq: the
/// client cannot learn the outcome, and applying again could apply the write twice.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    #[error("client session expired; open a new session")]
    Expired,
    #[error("result of this request was already discarded")]
    ResultDiscarded,
}

/// What the cluster remembers about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Outcomes of applied seqs the client may not have seen yet.
    results: BTreeMap<u64, WriteOutcome>,
    /// Seqs below this may have been applied but their result is gone; they must never be
    /// applied (again). Only grows.
    discarded_below: u64,
    /// Cluster time of the last request in this session.
    last_active_ms: u64,
}

impl Session {
    #[cfg(test)]
    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms
    }

    /// Seqs below this answer [`SessionError::ResultDiscarded`].
    #[cfg(test)]
    pub fn discarded_below(&self) -> u64 {
        self.discarded_below
    }

    /// The stored outcome of `seq`, if it is still kept.
    pub fn result(&self, seq: u64) -> Option<WriteOutcome> {
        self.results.get(&seq).copied()
    }

    /// Forgets results below `bound` and raises the discard bound to it.
    fn discard_below(&mut self, bound: u64) {
        if bound > self.discarded_below {
            self.discarded_below = bound;
            self.results = self.results.split_off(&bound);
        }
    }
}

/// Every live session plus the cluster time that expires them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    limits: SessionLimits,
    /// max(`proposed_at_ms`) over every applied proposal; monotonic whatever the leaders'
    /// clocks do.
    cluster_time_ms: u64,
    by_client: BTreeMap<u64, Session>,
    /// (last_active_ms, client_id) of every session, so expiry and eviction find the oldest
    /// sessions without scanning all of them on every apply.
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            cluster_time_ms: 0,
            by_client: BTreeMap::new(),
            by_activity: BTreeSet::new(),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub fn cluster_time_ms(&self) -> u64 {
        self.cluster_time_ms
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    #[cfg(test)]
    pub fn get(&self, client_id: u64) -> Option<&Session> {
        self.by_client.get(&client_id)
    }

    /// Runs one write under the session rules: advances cluster time to `proposed_at_ms` (and
    /// expires idle sessions), then either calls `apply` and remembers its outcome, returns
    /// the remembered outcome of an earlier identical request, or refuses.
    ///
    /// `apply` may refuse the write (`Err`: nothing was changed, such as a write over the state
    /// quota). A refusal is answered but not remembered, so the same seq may be applied by a
    /// later copy. That is safe: copies of one seq are applied in the order the client sent
    /// them, and the client only sends another after an answer that did not settle the write.
    ///
    /// Without a session, or with client id 0, `apply` always runs (no deduplication).
    pub fn execute<E: From<SessionError>>(
        &mut self,
        proposed_at_ms: u64,
        session: Option<&SessionRef>,
        apply: impl FnOnce() -> Result<WriteOutcome, E>,
    ) -> Result<WriteOutcome, E> {
        self.advance_time(proposed_at_ms);
        let Some(s) = session.filter(|s| s.client_id != 0) else {
            return apply();
        };
        let now = self.cluster_time_ms;
        if !self.by_client.contains_key(&s.client_id) {
            if s.first_unacked_seq > 1 {
                // The client has had answers in a session we no longer know: it expired (or
                // was evicted), and its earlier writes may be in flight again.
                return Err(SessionError::Expired.into());
            }
            self.make_room();
            self.by_client.insert(
                s.client_id,
                Session { results: BTreeMap::new(), discarded_below: 0, last_active_ms: now },
            );
            self.by_activity.insert((now, s.client_id));
        }
        self.touch(s.client_id, now);
        let max_results = self.limits.max_results_per_session;
        let session = self.by_client.get_mut(&s.client_id).expect("session exists: inserted above");
        session.discard_below(s.first_unacked_seq);
        if let Some(outcome) = session.result(s.seq) {
            return Ok(outcome);
        }
        if s.seq < session.discarded_below {
            return Err(SessionError::ResultDiscarded.into());
        }
        let outcome = apply()?;
        session.results.insert(s.seq, outcome);
        while session.results.len() > max_results {
            // Dropping a result also forbids every smaller seq: a pipelined request still in
            // flight below it will be refused rather than risk a second application.
            let Some((seq, _)) = session.results.pop_first() else {
                break;
            };
            session.discard_below(seq.saturating_add(1));
        }
        Ok(outcome)
    }

    /// Moves cluster time forward (never back) and drops sessions idle for longer than the
    /// TTL.
    fn advance_time(&mut self, proposed_at_ms: u64) {
        self.cluster_time_ms = self.cluster_time_ms.max(proposed_at_ms);
        while let Some(&(last_active_ms, client_id)) = self.by_activity.first() {
            if last_active_ms.saturating_add(self.limits.session_ttl_ms) >= self.cluster_time_ms {
                break;
            }
            self.remove(last_active_ms, client_id);
        }
    }

    /// Evicts least recently active sessions until one more fits.
    fn make_room(&mut self) {
        while !self.by_client.is_empty() && self.by_client.len() >= self.limits.max_sessions {
            let Some(&(last_active_ms, client_id)) = self.by_activity.first() else {
                break;
            };
            self.remove(last_active_ms, client_id);
        }
    }

    fn remove(&mut self, last_active_ms: u64, client_id: u64) {
        self.by_activity.remove(&(last_active_ms, client_id));
        self.by_client.remove(&client_id);
    }

    fn touch(&mut self, client_id: u64, now: u64) {
        if let Some(session) = self.by_client.get_mut(&client_id) {
            self.by_activity.remove(&(session.last_active_ms, client_id));
            session.last_active_ms = now;
            self.by_activity.insert((now, client_id));
        }
    }

    pub(crate) fn encode_to(&self, w: &mut Writer) {
        w.put_u64(self.limits.session_ttl_ms);
        w.put_u64(self.limits.max_sessions as u64);
        w.put_u64(self.limits.max_results_per_session as u64);
        w.put_u64(self.cluster_time_ms);
        w.put_u64(self.by_client.len() as u64);
        for (client_id, s) in &self.by_client {
            w.put_u64(*client_id);
            w.put_u64(s.last_active_ms);
            w.put_u64(s.discarded_below);
            w.put_u64(s.results.len() as u64);
            for (seq, outcome) in &s.results {
                w.put_u64(*seq);
                outcome.encode_to(w);
            }
        }
    }

    /// Reads what [`Sessions::encode_to`] wrote, rejecting anything that encoding could not
    /// have produced (unsorted or duplicate ids, results below the discard bound), so equal
    /// states always have equal bytes.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let limits = SessionLimits {
            session_ttl_ms: r.get_u64()?,
            max_sessions: get_usize(r, "max_sessions")?,
            max_results_per_session: get_usize(r, "max_results_per_session")?,
        };
        let mut sessions = Sessions::new(limits);
        sessions.cluster_time_ms = r.get_u64()?;
        let count = r.get_count(32)?;
        let mut prev_client = 0u64;
        for _ in 0..count {
            let client_id = r.get_u64()?;
            if client_id <= prev_client {
                return Err(DecodeError::Invalid("session client ids not ascending and non-zero"));
            }
            prev_client = client_id;
            let last_active_ms = r.get_u64()?;
            if last_active_ms > sessions.cluster_time_ms {
                return Err(DecodeError::Invalid("session active after cluster time"));
            }
            let discarded_below = r.get_u64()?;
            let n = r.get_count(17)?;
            let mut results = BTreeMap::new();
            let mut min_seq = discarded_below;
            for _ in 0..n {
                let seq = r.get_u64()?;
                if seq < min_seq {
                    return Err(DecodeError::Invalid("session result seqs"));
                }
                min_seq = seq.checked_add(1).ok_or(DecodeError::Invalid("session result seqs"))?;
                results.insert(seq, WriteOutcome::decode_from(r)?);
            }
            sessions.by_activity.insert((last_active_ms, client_id));
            sessions
                .by_client
                .insert(client_id, Session { results, discarded_below, last_active_ms });
        }
        Ok(sessions)
    }
}

fn get_usize(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    usize::try_from(r.get_u64()?).map_err(|_| DecodeError::Invalid(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref(client_id: u64, seq: u64, first_unacked_seq: u64) -> SessionRef {
        SessionRef { client_id, seq, first_unacked_seq }
    }

    /// Runs a write that reports `revision` and counts how often it really ran.
    fn run(
        s: &mut Sessions,
        now: u64,
        r: SessionRef,
        revision: u64,
        applied: &mut u32,
    ) -> Result<WriteOutcome, SessionError> {
        s.execute(now, Some(&r), || {
            *applied += 1;
            Ok(WriteOutcome::Set { revision })
        })
    }

    /// A write without a session at cluster time `now`.
    fn set_alone(s: &mut Sessions, now: u64, revision: u64) {
        s.execute(now, None, || Ok::<_, SessionError>(WriteOutcome::Set { revision })).unwrap();
    }

    /// A refused write is answered, not remembered: a later copy of the seq may apply.
    #[test]
    fn a_refusal_is_not_remembered() {
        let mut s = Sessions::new(SessionLimits::default());
        let refused = s.execute(0, Some(&sref(1, 1, 1)), || Err(SessionError::Expired));
        assert_eq!(refused, Err(SessionError::Expired));
        let mut n = 0;
        assert_eq!(run(&mut s, 0, sref(1, 1, 1), 2, &mut n), Ok(WriteOutcome::Set { revision: 2 }));
        assert_eq!(run(&mut s, 0, sref(1, 1, 1), 3, &mut n), Ok(WriteOutcome::Set { revision: 2 }));
        assert_eq!(n, 1);
    }

    fn limits(ttl: u64, sessions: usize, results: usize) -> SessionLimits {
        SessionLimits {
            session_ttl_ms: ttl,
            max_sessions: sessions,
            max_results_per_session: results,
        }
    }

    #[test]
    fn client_zero_and_no_session_never_dedup() {
        let mut s = Sessions::new(SessionLimits::default());
        let mut n = 0;
        for rev in 1..=3 {
            run(&mut s, 0, sref(0, 1, 1), rev, &mut n).unwrap();
            s.execute(0, None, || {
                n += 1;
                Ok::<_, SessionError>(WriteOutcome::Set { revision: rev })
            })
            .unwrap();
        }
        assert_eq!(n, 6);
        assert!(s.is_empty());
    }

    #[test]
    fn retry_returns_first_result() {
        let mut s = Sessions::new(SessionLimits::default());
        let mut n = 0;
        assert_eq!(
            run(&mut s, 0, sref(5, 1, 1), 10, &mut n),
            Ok(WriteOutcome::Set { revision: 10 })
        );
        run(&mut s, 0, sref(5, 2, 1), 11, &mut n).unwrap();
        assert_eq!(
            run(&mut s, 0, sref(5, 1, 1), 12, &mut n),
            Ok(WriteOutcome::Set { revision: 10 })
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn acked_results_are_discarded() {
        let mut s = Sessions::new(SessionLimits::default());
        let mut n = 0;
        run(&mut s, 0, sref(5, 1, 1), 1, &mut n).unwrap();
        run(&mut s, 0, sref(5, 2, 2), 2, &mut n).unwrap();
        assert_eq!(run(&mut s, 0, sref(5, 1, 1), 3, &mut n), Err(SessionError::ResultDiscarded));
        // A stale retry cannot lower the bound again.
        assert_eq!(run(&mut s, 0, sref(5, 1, 1), 3, &mut n), Err(SessionError::ResultDiscarded));
        assert_eq!(s.get(5).unwrap().result(2), Some(WriteOutcome::Set { revision: 2 }));
        assert_eq!(n, 2);
    }

    #[test]
    fn result_limit_drops_smallest_seqs() {
        let mut s = Sessions::new(limits(1_000, 10, 2));
        let mut n = 0;
        for seq in 1..=4 {
            run(&mut s, 0, sref(5, seq, 1), seq, &mut n).unwrap();
        }
        assert_eq!(s.get(5).unwrap().discarded_below(), 3);
        assert_eq!(run(&mut s, 0, sref(5, 2, 1), 9, &mut n), Err(SessionError::ResultDiscarded));
        assert_eq!(run(&mut s, 0, sref(5, 3, 1), 9, &mut n), Ok(WriteOutcome::Set { revision: 3 }));
        assert_eq!(n, 4);
    }

    #[test]
    fn zero_result_limit_still_applies_once() {
        let mut s = Sessions::new(limits(1_000, 10, 0));
        let mut n = 0;
        assert_eq!(run(&mut s, 0, sref(5, 1, 1), 1, &mut n), Ok(WriteOutcome::Set { revision: 1 }));
        assert_eq!(run(&mut s, 0, sref(5, 1, 1), 1, &mut n), Err(SessionError::ResultDiscarded));
        assert_eq!(n, 1);
    }

    #[test]
    fn unknown_session_with_acked_seqs_is_expired() {
        let mut s = Sessions::new(SessionLimits::default());
        let mut n = 0;
        assert_eq!(run(&mut s, 0, sref(5, 3, 2), 1, &mut n), Err(SessionError::Expired));
        assert!(s.is_empty());
        // A client pipelining from the start (seq 2 before seq 1 is applied) is fine.
        assert!(run(&mut s, 0, sref(6, 2, 1), 1, &mut n).is_ok());
        assert_eq!(n, 1);
    }

    #[test]
    fn sessions_expire_by_cluster_time() {
        let mut s = Sessions::new(limits(100, 10, 8));
        let mut n = 0;
        run(&mut s, 1_000, sref(1, 1, 1), 1, &mut n).unwrap();
        run(&mut s, 1_050, sref(2, 1, 1), 2, &mut n).unwrap();
        // Exactly at the TTL the session lives.
        set_alone(&mut s, 1_100, 3);
        assert!(s.get(1).is_some());
        set_alone(&mut s, 1_101, 4);
        assert!(s.get(1).is_none());
        assert!(s.get(2).is_some());
        // A proposal stamped by a leader whose clock lags does not move time back.
        set_alone(&mut s, 10, 5);
        assert_eq!(s.cluster_time_ms(), 1_101);
        assert_eq!(run(&mut s, 10, sref(1, 2, 2), 6, &mut n), Err(SessionError::Expired));
        // Activity keeps a session alive.
        run(&mut s, 1_140, sref(2, 2, 2), 7, &mut n).unwrap();
        set_alone(&mut s, 1_200, 8);
        assert!(s.get(2).is_some());
        assert_eq!(s.get(2).unwrap().last_active_ms(), 1_140);
    }

    #[test]
    fn max_sessions_evicts_least_recently_active() {
        let mut s = Sessions::new(limits(1_000_000, 2, 8));
        let mut n = 0;
        run(&mut s, 1, sref(1, 1, 1), 1, &mut n).unwrap();
        run(&mut s, 2, sref(2, 1, 1), 2, &mut n).unwrap();
        run(&mut s, 3, sref(1, 2, 1), 3, &mut n).unwrap();
        run(&mut s, 4, sref(3, 1, 1), 4, &mut n).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.get(2).is_none());
        assert!(s.get(1).is_some() && s.get(3).is_some());
        assert_eq!(run(&mut s, 5, sref(2, 2, 2), 5, &mut n), Err(SessionError::Expired));
    }

    #[test]
    fn encoding_round_trips_and_rebuilds_index() {
        let mut s = Sessions::new(limits(500, 3, 2));
        let mut n = 0;
        for (i, c) in [4u64, 9, 4, 2, 9, 4].into_iter().enumerate() {
            let i = i as u64;
            run(&mut s, i * 10, sref(c, i + 1, 1), i, &mut n).unwrap();
        }
        let mut w = Writer::new();
        s.encode_to(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let back = Sessions::decode_from(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(back, s);
    }
}
