//! Client sessions: at-most-once writes even when a client retries (Raft dissertation §6.3).
//!
//! Sessions are part of the replicated state and of snapshots: every replica must decide
//! "apply" or "return the stored result" identically, or a retried write could be applied
//! twice after a leader change. So nothing here reads a clock; time is the *cluster time*,
//! advanced by the `proposed_at_ms` stamps of applied proposals, which every replica sees at the
//! same log index.
//!
//! A session is opened explicitly: a replicated `RegisterSession` entry, applied at log index
//! `i`, opens session `i` for the identity (certificate CN) that asked. Writes name the session
//! by that id and carry the caller's identity; a session is looked up by the pair, so one
//! identity can never write in (or read results of) another's session. A write naming a session
//! that is not open here (never registered, expired or evicted) is refused with
//! [`SessionError::Unknown`] and never applied: the cluster cannot tell a first attempt from
//! a retry of one it has forgotten.
//!
//! Bounds: each identity holds at most a quota of sessions (stamped into its registration by
//! the leader); registering beyond it evicts that identity's least recently active session,
//! never another identity's. The whole table holds at most [`SessionLimits::max_sessions`];
//! a registration beyond that is refused ([`SessionError::TooManySessions`]) rather than
//! evicting anyone.
//!
//! Cluster time moves by the *differences* between consecutive stamps, each capped at
//! [`SessionLimits::max_cluster_time_step_ms`] and never negative. A leader whose clock jumps
//! ahead (or a new leader whose clock is far from the last one's) therefore moves cluster time
//! by at most one step, instead of expiring every session at once; time between stamps further
//! apart than a step (an idle cluster) is undercounted, which only keeps sessions longer.
//!
//! Entries written by builds before registration carry a session keyed by client id alone
//! ([`ProposalSession::Legacy`]); they are applied by those builds' rules (an unknown session
//! with `first_unacked_seq <= 1` is opened implicitly, evicting the least recently active session
//! at the bound), so replicas replaying them from different snapshots agree. No build from
//! this one on proposes them.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, Reader, Writer};
use crate::command::{ProposalSession, WriteOutcome};

/// Bounds on the memory sessions may take and on how fast cluster time moves. Every replica
/// must use the same limits (they are carried in snapshots for that reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session not used for longer than this (in cluster time) is forgotten.
    pub session_ttl_ms: u64,
    /// Sessions held at most, over every identity. A registration beyond this is refused with
    /// [`SessionError::TooManySessions`]. At least one session is always allowed.
    pub max_sessions: usize,
    /// Results kept per session; beyond this the smallest seqs are dropped and later answer
    /// [`SessionError::ResultDiscarded`].
    pub max_results_per_session: usize,
    /// One applied proposal moves cluster time forward by at most this much, however far its
    /// stamp is from the previous one's: a leader's clock jumping ahead costs sessions at
    /// most this much of their TTL.
    pub max_cluster_time_step_ms: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            session_ttl_ms: 600_000,
            max_sessions: 100_000,
            max_results_per_session: 64,
            max_cluster_time_step_ms: 10_000,
        }
    }
}

/// Why a write in a session was not applied, or a session not opened.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// An implicit session of a build before registration is gone (only for log entries such
    /// builds wrote).
    #[error("client session expired; open a new session")]
    Expired,
    /// The result of this seq was dropped; the write may or may not have been applied.
    #[error("result of this request was already discarded")]
    ResultDiscarded,
    /// The write names a session this identity has not open: never registered, expired or
    /// evicted. The write was not applied; an earlier attempt of it may have been.
    #[error("session unknown or expired; register a new session")]
    Unknown,
    /// Registration refused: the cluster holds [`SessionLimits::max_sessions`] sessions.
    /// Nothing changed; retry once sessions expire.
    #[error("too many client sessions; retry later")]
    TooManySessions,
}

/// Who owns a session: `None` for an implicit session of a build before registration, else
/// the identity (certificate CN) that registered it.
type Owner = Option<String>;

/// Table key: owner and session id (the registration's log index, or a legacy client id).
type Key = (Owner, u64);

/// What the cluster remembers about one client session.
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
    fn new(now: u64) -> Self {
        Session { results: BTreeMap::new(), discarded_below: 0, last_active_ms: now }
    }

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
    /// Advanced by every applied proposal (see the module docs); monotonic whatever the
    /// leaders' clocks do.
    cluster_time_ms: u64,
    /// The stamp of the last applied proposal, from which the next one's step is measured;
    /// `None` before the first (which then sets cluster time to its stamp).
    last_stamp_ms: Option<u64>,
    by_key: BTreeMap<Key, Session>,
    /// (last_active_ms, key) of every session, so expiry finds the oldest sessions without
    /// scanning all of them on every apply.
    by_activity: BTreeSet<(u64, Key)>,
    /// (last_active_ms, id) of every registered session, per owner: the per-identity quota
    /// and its evictions.
    by_owner: BTreeMap<String, BTreeSet<(u64, u64)>>,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            cluster_time_ms: 0,
            last_stamp_ms: None,
            by_key: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            by_owner: BTreeMap::new(),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub fn cluster_time_ms(&self) -> u64 {
        self.cluster_time_ms
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The registered session `id` of `owner`.
    #[cfg(test)]
    pub fn get(&self, owner: &str, id: u64) -> Option<&Session> {
        self.by_key.get(&(Some(owner.to_owned()), id))
    }

    /// The implicit session `client_id` of a build before registration.
    #[cfg(test)]
    pub fn get_legacy(&self, client_id: u64) -> Option<&Session> {
        self.by_key.get(&(None, client_id))
    }

    /// Sessions `owner` holds.
    #[cfg(test)]
    pub fn count_of(&self, owner: &str) -> usize {
        self.by_owner.get(owner).map_or(0, BTreeSet::len)
    }

    /// Opens session `id` (the registration's log index) for `owner`, after advancing cluster
    /// time to `proposed_at_ms`. At `max_per_identity` (at least 1) sessions of `owner`, its
    /// least recently active one is evicted first; at [`SessionLimits::max_sessions`] in all,
    /// the registration is refused.
    pub fn register(
        &mut self,
        id: u64,
        proposed_at_ms: u64,
        owner: &str,
        max_per_identity: u64,
    ) -> Result<u64, SessionError> {
        self.advance_time(proposed_at_ms);
        let max_per_identity = usize::try_from(max_per_identity.max(1)).unwrap_or(usize::MAX);
        while self.by_owner.get(owner).is_some_and(|s| s.len() >= max_per_identity) {
            let Some(&(last_active_ms, oldest)) =
                self.by_owner.get(owner).and_then(BTreeSet::first)
            else {
                break;
            };
            self.remove(last_active_ms, &(Some(owner.to_owned()), oldest));
        }
        if self.by_key.len() >= self.limits.max_sessions.max(1) {
            return Err(SessionError::TooManySessions);
        }
        let key = (Some(owner.to_owned()), id);
        if self.by_key.contains_key(&key) {
            // Ids are log indices: never registered twice.
            return Ok(id);
        }
        let now = self.cluster_time_ms;
        self.by_key.insert(key.clone(), Session::new(now));
        self.index(now, key);
        Ok(id)
    }

    /// Runs one write under the session rules: advances cluster time by `proposed_at_ms` (and
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
        session: Option<&ProposalSession>,
        apply: impl FnOnce() -> Result<WriteOutcome, E>,
    ) -> Result<WriteOutcome, E> {
        self.advance_time(proposed_at_ms);
        let Some(s) = session.filter(|s| s.client_id() != 0) else {
            return apply();
        };
        let now = self.cluster_time_ms;
        let (key, seq, first_unacked_seq) = match s {
            ProposalSession::Registered(r) => {
                let key = (Some(r.owner.clone()), r.client_id);
                if !self.by_key.contains_key(&key) {
                    return Err(SessionError::Unknown.into());
                }
                (key, r.seq, r.first_unacked_seq)
            }
            ProposalSession::Legacy { client_id, seq, first_unacked_seq } => {
                let key = (None, *client_id);
                if !self.by_key.contains_key(&key) {
                    if *first_unacked_seq > 1 {
                        return Err(SessionError::Expired.into());
                    }
                    self.make_room_legacy();
                    self.by_key.insert(key.clone(), Session::new(now));
                    self.index(now, key.clone());
                }
                (key, *seq, *first_unacked_seq)
            }
        };
        self.touch(&key, now);
        let max_results = self.limits.max_results_per_session;
        let session = self.by_key.get_mut(&key).expect("session exists: checked above");
        session.discard_below(first_unacked_seq);
        if let Some(outcome) = session.result(seq) {
            return Ok(outcome);
        }
        if seq < session.discarded_below {
            return Err(SessionError::ResultDiscarded.into());
        }
        let outcome = apply()?;
        session.results.insert(seq, outcome);
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

    /// Moves cluster time forward by the step from the previous stamp to `proposed_at_ms`
    /// (capped, never back) and drops sessions idle for longer than the TTL.
    fn advance_time(&mut self, proposed_at_ms: u64) {
        let step_ms = match self.last_stamp_ms {
            Some(prev) => {
                proposed_at_ms.saturating_sub(prev).min(self.limits.max_cluster_time_step_ms)
            }
            // The first stamp ever: nothing to measure a step from.
            None => proposed_at_ms.saturating_sub(self.cluster_time_ms),
        };
        self.last_stamp_ms = Some(proposed_at_ms);
        self.cluster_time_ms = self.cluster_time_ms.saturating_add(step_ms);
        while let Some((last_active_ms, key)) = self.by_activity.first().cloned() {
            if last_active_ms.saturating_add(self.limits.session_ttl_ms) >= self.cluster_time_ms {
                break;
            }
            self.remove(last_active_ms, &key);
        }
    }

    /// The rule of builds before registration: evicts least recently active sessions (of
    /// anyone) until one more fits.
    fn make_room_legacy(&mut self) {
        while !self.by_key.is_empty() && self.by_key.len() >= self.limits.max_sessions {
            let Some((last_active_ms, key)) = self.by_activity.first().cloned() else {
                break;
            };
            self.remove(last_active_ms, &key);
        }
    }

    fn index(&mut self, now: u64, key: Key) {
        if let (Some(owner), id) = &key {
            self.by_owner.entry(owner.clone()).or_default().insert((now, *id));
        }
        self.by_activity.insert((now, key));
    }

    fn unindex(&mut self, last_active_ms: u64, key: &Key) {
        self.by_activity.remove(&(last_active_ms, key.clone()));
        if let (Some(owner), id) = key {
            if let Some(set) = self.by_owner.get_mut(owner) {
                set.remove(&(last_active_ms, *id));
                if set.is_empty() {
                    self.by_owner.remove(owner);
                }
            }
        }
    }

    fn remove(&mut self, last_active_ms: u64, key: &Key) {
        self.unindex(last_active_ms, key);
        self.by_key.remove(key);
    }

    fn touch(&mut self, key: &Key, now: u64) {
        let Some(last_active_ms) = self.by_key.get(key).map(|s| s.last_active_ms) else {
            return;
        };
        self.unindex(last_active_ms, key);
        if let Some(session) = self.by_key.get_mut(key) {
            session.last_active_ms = now;
        }
        self.index(now, key.clone());
    }

    /// Writes the current encoding (registered sessions: snapshot format 3 on).
    pub(crate) fn encode_to(&self, w: &mut Writer) {
        w.put_u64(self.limits.session_ttl_ms);
        w.put_u64(self.limits.max_sessions as u64);
        w.put_u64(self.limits.max_results_per_session as u64);
        w.put_u64(self.limits.max_cluster_time_step_ms);
        w.put_u64(self.cluster_time_ms);
        match self.last_stamp_ms {
            None => w.put_bool(false),
            Some(stamp) => {
                w.put_bool(true);
                w.put_u64(stamp);
            }
        }
        w.put_u64(self.by_key.len() as u64);
        for ((owner, id), s) in &self.by_key {
            match owner {
                None => w.put_bool(false),
                Some(owner) => {
                    w.put_bool(true);
                    w.put_str(owner);
                }
            }
            w.put_u64(*id);
            w.put_u64(s.last_active_ms);
            w.put_u64(s.discarded_below);
            w.put_u64(s.results.len() as u64);
            for (seq, outcome) in &s.results {
                w.put_u64(*seq);
                outcome.encode_to(w);
            }
        }
    }

    /// The encoding of builds before registration (snapshot formats 1 and 2), which holds
    /// legacy sessions only: registered ones are left out.
    pub(crate) fn encode_legacy_to(&self, w: &mut Writer) {
        w.put_u64(self.limits.session_ttl_ms);
        w.put_u64(self.limits.max_sessions as u64);
        w.put_u64(self.limits.max_results_per_session as u64);
        w.put_u64(self.cluster_time_ms);
        let legacy = || self.by_key.iter().filter(|((owner, _), _)| owner.is_none());
        w.put_u64(legacy().count() as u64);
        for ((_, id), s) in legacy() {
            w.put_u64(*id);
            w.put_u64(s.last_active_ms);
            w.put_u64(s.discarded_below);
            w.put_u64(s.results.len() as u64);
            for (seq, outcome) in &s.results {
                w.put_u64(*seq);
                outcome.encode_to(w);
            }
        }
    }

    /// Reads what [`Sessions::encode_to`] wrote (`registered`), or the encoding of builds
    /// before registration (snapshot formats 1 and 2: client ids only, no step limit, no last
    /// stamp),
    /// rejecting anything that encoding could not have produced (unsorted or duplicate keys,
    /// results below the discard bound), so equal states always have equal bytes.
    pub(crate) fn decode_from(r: &mut Reader<'_>, registered: bool) -> Result<Self, DecodeError> {
        let current = registered;
        let mut limits = SessionLimits {
            session_ttl_ms: r.get_u64()?,
            max_sessions: get_usize(r, "max_sessions")?,
            max_results_per_session: get_usize(r, "max_results_per_session")?,
            ..SessionLimits::default()
        };
        if current {
            limits.max_cluster_time_step_ms = r.get_u64()?;
        }
        let mut sessions = Sessions::new(limits);
        sessions.cluster_time_ms = r.get_u64()?;
        sessions.last_stamp_ms = if current {
            if r.get_bool()? {
                Some(r.get_u64()?)
            } else {
                None
            }
        } else {
            // Builds before this one kept cluster time at the largest stamp applied.
            (sessions.cluster_time_ms > 0).then_some(sessions.cluster_time_ms)
        };
        let count = r.get_count(if current { 33 } else { 32 })?;
        let mut prev: Option<Key> = None;
        for _ in 0..count {
            let owner = if current && r.get_bool()? { Some(r.get_str()?.to_owned()) } else { None };
            let id = r.get_u64()?;
            let key = (owner, id);
            if id == 0 || prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(DecodeError::Invalid("session keys not ascending and non-zero"));
            }
            prev = Some(key.clone());
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
            sessions.index(last_active_ms, key.clone());
            sessions.by_key.insert(key, Session { results, discarded_below, last_active_ms });
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
    use crate::command::SessionRef;

    const DAY_MS: u64 = 86_400_000;

    fn sref(owner: &str, client_id: u64, seq: u64, first_unacked_seq: u64) -> ProposalSession {
        ProposalSession::Registered(SessionRef {
            owner: owner.into(),
            client_id,
            seq,
            first_unacked_seq,
        })
    }

    fn legacy(client_id: u64, seq: u64, first_unacked_seq: u64) -> ProposalSession {
        ProposalSession::Legacy { client_id, seq, first_unacked_seq }
    }

    /// Runs a write that reports `revision` and counts how often it really ran.
    fn run(
        s: &mut Sessions,
        now: u64,
        r: ProposalSession,
        revision: u64,
        applied: &mut u32,
    ) -> Result<WriteOutcome, SessionError> {
        s.execute(now, Some(&r), || {
            *applied += 1;
            Ok(WriteOutcome::Set { revision })
        })
    }

    /// A write without a session at stamp `now`.
    fn set_alone(s: &mut Sessions, now: u64, revision: u64) {
        s.execute(now, None, || Ok::<_, SessionError>(WriteOutcome::Set { revision })).unwrap();
    }

    /// Registers session `id` of `owner` with a generous per-identity quota.
    fn reg(s: &mut Sessions, now: u64, owner: &str, id: u64) {
        assert_eq!(s.register(id, now, owner, 1_000_000), Ok(id));
    }

    fn limits(ttl: u64, sessions: usize, results: usize) -> SessionLimits {
        SessionLimits {
            session_ttl_ms: ttl,
            max_sessions: sessions,
            max_results_per_session: results,
            ..SessionLimits::default()
        }
    }

    /// A refused write is answered, not remembered: a later copy of the seq may apply.
    #[test]
    fn a_refusal_is_not_remembered() {
        let mut s = Sessions::new(SessionLimits::default());
        reg(&mut s, 0, "a", 1);
        let refused = s.execute(0, Some(&sref("a", 1, 1, 1)), || Err(SessionError::Expired));
        assert_eq!(refused, Err(SessionError::Expired));
        let mut n = 0;
        assert_eq!(
            run(&mut s, 0, sref("a", 1, 1, 1), 2, &mut n),
            Ok(WriteOutcome::Set { revision: 2 })
        );
        assert_eq!(
            run(&mut s, 0, sref("a", 1, 1, 1), 3, &mut n),
            Ok(WriteOutcome::Set { revision: 2 })
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn client_zero_and_no_session_never_dedup() {
        let mut s = Sessions::new(SessionLimits::default());
        let mut n = 0;
        for rev in 1..=3 {
            run(&mut s, 0, sref("a", 0, 1, 1), rev, &mut n).unwrap();
            run(&mut s, 0, legacy(0, 1, 1), rev, &mut n).unwrap();
            s.execute(0, None, || {
                n += 1;
                Ok::<_, SessionError>(WriteOutcome::Set { revision: rev })
            })
            .unwrap();
        }
        assert_eq!(n, 9);
        assert!(s.is_empty());
    }

    #[test]
    fn retry_returns_first_result() {
        let mut s = Sessions::new(SessionLimits::default());
        reg(&mut s, 0, "a", 5);
        let mut n = 0;
        let first = run(&mut s, 0, sref("a", 5, 1, 1), 10, &mut n);
        assert_eq!(first, Ok(WriteOutcome::Set { revision: 10 }));
        run(&mut s, 0, sref("a", 5, 2, 1), 11, &mut n).unwrap();
        assert_eq!(run(&mut s, 0, sref("a", 5, 1, 1), 12, &mut n), first);
        assert_eq!(n, 2);
    }

    #[test]
    fn acked_results_are_discarded() {
        let mut s = Sessions::new(SessionLimits::default());
        reg(&mut s, 0, "a", 5);
        let mut n = 0;
        run(&mut s, 0, sref("a", 5, 1, 1), 1, &mut n).unwrap();
        run(&mut s, 0, sref("a", 5, 2, 2), 2, &mut n).unwrap();
        let stale = sref("a", 5, 1, 1);
        assert_eq!(run(&mut s, 0, stale.clone(), 3, &mut n), Err(SessionError::ResultDiscarded));
        // A stale retry cannot lower the bound again.
        assert_eq!(run(&mut s, 0, stale, 3, &mut n), Err(SessionError::ResultDiscarded));
        assert_eq!(s.get("a", 5).unwrap().result(2), Some(WriteOutcome::Set { revision: 2 }));
        assert_eq!(n, 2);
    }

    #[test]
    fn result_limit_drops_smallest_seqs() {
        let mut s = Sessions::new(limits(1_000, 10, 2));
        reg(&mut s, 0, "a", 5);
        let mut n = 0;
        for seq in 1..=4 {
            run(&mut s, 0, sref("a", 5, seq, 1), seq, &mut n).unwrap();
        }
        assert_eq!(s.get("a", 5).unwrap().discarded_below(), 3);
        assert_eq!(
            run(&mut s, 0, sref("a", 5, 2, 1), 9, &mut n),
            Err(SessionError::ResultDiscarded)
        );
        assert_eq!(
            run(&mut s, 0, sref("a", 5, 3, 1), 9, &mut n),
            Ok(WriteOutcome::Set { revision: 3 })
        );
        assert_eq!(n, 4);
    }

    #[test]
    fn zero_result_limit_still_applies_once() {
        let mut s = Sessions::new(limits(1_000, 10, 0));
        reg(&mut s, 0, "a", 5);
        let mut n = 0;
        assert_eq!(
            run(&mut s, 0, sref("a", 5, 1, 1), 1, &mut n),
            Ok(WriteOutcome::Set { revision: 1 })
        );
        assert_eq!(
            run(&mut s, 0, sref("a", 5, 1, 1), 1, &mut n),
            Err(SessionError::ResultDiscarded)
        );
        assert_eq!(n, 1);
    }

    /// Issue 14: an unregistered session is refused whatever its seqs say, and opens nothing.
    #[test]
    fn an_unregistered_session_is_refused_and_never_applied() {
        let mut s = Sessions::new(SessionLimits::default());
        let mut n = 0;
        assert_eq!(run(&mut s, 0, sref("a", 6, 1, 1), 1, &mut n), Err(SessionError::Unknown));
        assert_eq!(run(&mut s, 0, sref("a", 6, 2, 1), 1, &mut n), Err(SessionError::Unknown));
        assert_eq!(n, 0);
        assert!(s.is_empty());
    }

    /// Issue 14: the write retried after its session was forgotten (here: expired) is
    /// refused, not applied a second time, even as the session's first write.
    #[test]
    fn a_retried_first_write_after_the_session_was_forgotten_is_not_reapplied() {
        let mut s = Sessions::new(limits(100, 10, 8));
        reg(&mut s, 1_000, "a", 5);
        let mut n = 0;
        run(&mut s, 1_000, sref("a", 5, 1, 1), 1, &mut n).unwrap();
        set_alone(&mut s, 1_101, 2);
        assert!(s.get("a", 5).is_none(), "expired");
        assert_eq!(run(&mut s, 1_101, sref("a", 5, 1, 1), 3, &mut n), Err(SessionError::Unknown));
        assert_eq!(n, 1);
        // Evicted by the owner's own quota: the same.
        reg(&mut s, 1_101, "a", 6);
        run(&mut s, 1_101, sref("a", 6, 1, 1), 4, &mut n).unwrap();
        assert_eq!(s.register(7, 1_101, "a", 1), Ok(7));
        assert_eq!(run(&mut s, 1_101, sref("a", 6, 1, 1), 5, &mut n), Err(SessionError::Unknown));
        assert_eq!(n, 2);
    }

    /// Issue 14: session ids are per identity; another identity naming the same id neither
    /// reads the owner's results nor moves its seqs.
    #[test]
    fn another_identity_cannot_use_a_client_id() {
        let mut s = Sessions::new(SessionLimits::default());
        reg(&mut s, 0, "b", 7);
        let (mut a, mut b) = (0, 0);
        run(&mut s, 0, sref("b", 7, 1, 1), 1, &mut b).unwrap();
        assert_eq!(run(&mut s, 0, sref("a", 7, 1, 1), 2, &mut a), Err(SessionError::Unknown));
        assert_eq!(run(&mut s, 0, sref("a", 7, 3, 3), 2, &mut a), Err(SessionError::Unknown));
        assert_eq!(a, 0);
        // B's session is untouched: its retry still gets its first answer.
        assert_eq!(
            run(&mut s, 0, sref("b", 7, 1, 1), 9, &mut b),
            Ok(WriteOutcome::Set { revision: 1 })
        );
        // A registering gets a session of its own, even under the same id.
        reg(&mut s, 0, "a", 7);
        assert_eq!(
            run(&mut s, 0, sref("a", 7, 1, 1), 3, &mut a),
            Ok(WriteOutcome::Set { revision: 3 })
        );
        assert_eq!(
            run(&mut s, 0, sref("b", 7, 1, 1), 9, &mut b),
            Ok(WriteOutcome::Set { revision: 1 })
        );
        assert_eq!((a, b), (1, 1));
    }

    /// Issue 14: one identity registering 100k sessions evicts only its own.
    #[test]
    fn one_identity_registering_100k_sessions_does_not_evict_anothers() {
        let mut s = Sessions::new(SessionLimits::default());
        reg(&mut s, 0, "b", 1);
        let mut n = 0;
        run(&mut s, 0, sref("b", 1, 1, 1), 1, &mut n).unwrap();
        for id in 2..=100_001u64 {
            assert_eq!(s.register(id, 1, "a", 64), Ok(id));
        }
        assert_eq!(s.count_of("a"), 64);
        assert!(s.get("a", 100_001).is_some() && s.get("a", 100_001 - 64).is_none());
        assert_eq!(
            run(&mut s, 2, sref("b", 1, 2, 2), 2, &mut n),
            Ok(WriteOutcome::Set { revision: 2 })
        );
    }

    /// The global bound refuses a registration rather than evict another identity's session.
    #[test]
    fn the_global_bound_refuses_registration() {
        let mut s = Sessions::new(limits(1_000_000, 2, 8));
        reg(&mut s, 0, "a", 1);
        reg(&mut s, 0, "b", 2);
        assert_eq!(s.register(3, 0, "c", 64), Err(SessionError::TooManySessions));
        assert_eq!(s.len(), 2);
        // An identity at its own quota may still replace its own session.
        assert_eq!(s.register(4, 0, "a", 1), Ok(4));
        assert!(s.get("a", 1).is_none() && s.get("b", 2).is_some());
    }

    /// Issue 14: a leader clock jump of a day moves cluster time by one step only.
    #[test]
    fn a_leader_clock_jump_of_a_day_does_not_expire_sessions() {
        let mut s = Sessions::new(SessionLimits::default());
        let t0 = 1_700_000_000_000;
        reg(&mut s, t0, "a", 1);
        let mut n = 0;
        run(&mut s, t0, sref("a", 1, 1, 1), 1, &mut n).unwrap();
        set_alone(&mut s, t0 + DAY_MS, 2);
        set_alone(&mut s, t0 + DAY_MS + 5, 3);
        assert_eq!(s.cluster_time_ms(), t0 + 10_000 + 5);
        assert!(s.get("a", 1).is_some(), "a +1 day jump expired the session");
        // Back to a leader with a right clock: time does not go back, nor jump again.
        set_alone(&mut s, t0 + 20, 4);
        assert_eq!(s.cluster_time_ms(), t0 + 10_005);
        assert_eq!(
            run(&mut s, t0 + 40, sref("a", 1, 2, 2), 5, &mut n),
            Ok(WriteOutcome::Set { revision: 5 })
        );
        assert_eq!(s.cluster_time_ms(), t0 + 10_025);
    }

    #[test]
    fn sessions_expire_by_cluster_time() {
        let mut s = Sessions::new(limits(100, 10, 8));
        let mut n = 0;
        reg(&mut s, 1_000, "a", 1);
        reg(&mut s, 1_050, "a", 2);
        // Exactly at the TTL the session lives.
        set_alone(&mut s, 1_100, 3);
        assert!(s.get("a", 1).is_some());
        set_alone(&mut s, 1_101, 4);
        assert!(s.get("a", 1).is_none());
        assert!(s.get("a", 2).is_some());
        // Activity keeps a session alive.
        run(&mut s, 1_140, sref("a", 2, 1, 1), 7, &mut n).unwrap();
        set_alone(&mut s, 1_200, 8);
        assert_eq!(s.get("a", 2).unwrap().last_active_ms(), 1_140);
        set_alone(&mut s, 1_241, 9);
        assert!(s.is_empty());
    }

    /// Entries of builds before registration keep their rules.
    #[test]
    fn legacy_sessions_open_implicitly_and_evict_at_the_bound() {
        let mut s = Sessions::new(limits(1_000_000, 2, 8));
        let mut n = 0;
        assert_eq!(run(&mut s, 0, legacy(5, 3, 2), 1, &mut n), Err(SessionError::Expired));
        assert!(s.is_empty());
        run(&mut s, 1, legacy(1, 1, 1), 1, &mut n).unwrap();
        run(&mut s, 2, legacy(2, 2, 1), 2, &mut n).unwrap();
        assert_eq!(
            run(&mut s, 3, legacy(1, 1, 1), 9, &mut n),
            Ok(WriteOutcome::Set { revision: 1 })
        );
        run(&mut s, 4, legacy(3, 1, 1), 4, &mut n).unwrap();
        assert!(s.get_legacy(2).is_none());
        assert!(s.get_legacy(1).is_some() && s.get_legacy(3).is_some());
        assert_eq!(n, 3);
    }

    fn round_trip(s: &Sessions) -> Sessions {
        let mut w = Writer::new();
        s.encode_to(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let back = Sessions::decode_from(&mut r, true).unwrap();
        r.finish().unwrap();
        back
    }

    #[test]
    fn encoding_round_trips_and_rebuilds_indexes() {
        let mut s = Sessions::new(limits(500, 10, 2));
        let mut n = 0;
        for (i, owner) in ["x", "y", "x"].into_iter().enumerate() {
            reg(&mut s, i as u64, owner, i as u64 + 1);
        }
        run(&mut s, 10, legacy(99, 1, 1), 1, &mut n).unwrap();
        for (i, c) in [1u64, 3, 1, 2].into_iter().enumerate() {
            let owner = if c == 2 { "y" } else { "x" };
            let i = i as u64;
            run(&mut s, 20 + i * 10, sref(owner, c, i + 1, 1), i, &mut n).unwrap();
        }
        let back = round_trip(&s);
        assert_eq!(back, s);
        assert_eq!(back.count_of("x"), 2);
        // The rebuilt indexes work: expiry and quotas behave alike on both.
        let (mut a, mut b) = (s, back);
        for t in [a.cluster_time_ms() + 400, a.cluster_time_ms() + 800] {
            set_alone(&mut a, t, 0);
            set_alone(&mut b, t, 0);
            assert_eq!(a, b);
        }
    }

    /// A state written by a build before registration (formats 1 and 2) still decodes: its sessions
    /// become legacy ones and cluster time goes on from its largest stamp.
    #[test]
    fn version_1_sessions_decode_as_legacy() {
        let mut w = Writer::new();
        for v in [500u64, 10, 2, 1_000] {
            w.put_u64(v); // ttl, max sessions, results per session, cluster time
        }
        w.put_u64(1);
        for v in [42u64, 900, 0, 1, 1] {
            w.put_u64(v); // client id, last active, discarded below, one result: seq 1
        }
        WriteOutcome::Set { revision: 7 }.encode_to(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let mut s = Sessions::decode_from(&mut r, false).unwrap();
        r.finish().unwrap();
        assert_eq!(
            s.limits().max_cluster_time_step_ms,
            SessionLimits::default().max_cluster_time_step_ms
        );
        let mut n = 0;
        assert_eq!(
            run(&mut s, 1_001, legacy(42, 1, 1), 8, &mut n),
            Ok(WriteOutcome::Set { revision: 7 })
        );
        assert_eq!(s.cluster_time_ms(), 1_001);
        assert_eq!(round_trip(&s), s);
    }
}
