//! Linearizable reads through ReadIndex, on the leader and on followers.
//!
//! Reads queue up; a *round* takes every queued read and asks raft-rs for a read index with a
//! fresh context. When the index comes back (confirmed by a quorum of heartbeats at the
//! leader), the reads wait until this node has applied up to it and are then answered from
//! local state. A round answered in a different term than it was issued in is discarded and
//! its reads go back to the queue; a round with no answer after `read_retry_ticks` is retried
//! with a new context (raft-rs silently drops read requests when there is no leader, or when a
//! new leader has not yet committed an entry of its term).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::kv::RangeQuery;
use crate::members::NodeId;
use crate::request::RequestId;

/// What a waiting read will look up once it may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadKind {
    Get {
        key: String,
    },
    Range {
        query: RangeQuery,
    },
    /// A copy of the whole data for a backup.
    Backup,
    /// A lease keep-alive, served by the leader of `term` only.
    LeaseKeepAlive {
        id: u64,
        term: u64,
    },
    /// A lease's time to live, served by the leader of `term` only.
    LeaseTimeToLive {
        id: u64,
        keys: bool,
        term: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRead {
    pub id: RequestId,
    pub kind: ReadKind,
    pub deadline_tick: u64,
}

#[derive(Debug)]
struct Round {
    term: u64,
    issued_tick: u64,
    reads: Vec<WaitingRead>,
}

/// Reads between arrival and answer.
#[derive(Debug)]
pub struct ReadQueue {
    node_id: NodeId,
    next_round: u64,
    queued: VecDeque<WaitingRead>,
    rounds: BTreeMap<u64, Round>,
    /// Confirmed reads by the read index they must wait for.
    confirmed: BTreeMap<u64, Vec<WaitingRead>>,
    len: usize,
}

impl ReadQueue {
    /// `first_round` should be random per incarnation: a leader may still hold a round of a
    /// previous incarnation of this node, and contexts must never collide with it.
    pub fn new(node_id: NodeId, first_round: u64) -> Self {
        Self {
            node_id,
            next_round: first_round,
            queued: VecDeque::new(),
            rounds: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            len: 0,
        }
    }

    /// Reads waiting in any stage.
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, read: WaitingRead) {
        self.len += 1;
        self.queued.push_back(read);
    }

    /// Starts a round with every queued read if there are any and fewer than `max_rounds` are
    /// in flight; returns the context to hand to raft-rs `read_index`.
    pub fn start_round(&mut self, term: u64, now_tick: u64, max_rounds: usize) -> Option<Vec<u8>> {
        if self.queued.is_empty() || self.rounds.len() >= max_rounds {
            return None;
        }
        let round = self.next_round;
        self.next_round = self.next_round.wrapping_add(1);
        let reads = self.queued.drain(..).collect();
        self.rounds.insert(round, Round { term, issued_tick: now_tick, reads });
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.node_id.to_le_bytes());
        ctx.extend_from_slice(&round.to_le_bytes());
        Some(ctx)
    }

    /// A read state came back from raft-rs.
    pub fn on_read_state(&mut self, ctx: &[u8], index: u64, current_term: u64) {
        let Some(round_id) = self.parse_ctx(ctx) else { return };
        let Some(round) = self.rounds.remove(&round_id) else { return };
        if round.term == current_term {
            self.confirmed.entry(index).or_default().extend(round.reads);
        } else {
            self.requeue(round.reads);
        }
    }

    /// Rounds issued in another term can no longer be trusted to come back: retry them now.
    pub fn on_term_change(&mut self, term: u64) {
        let stale: Vec<u64> =
            self.rounds.iter().filter(|(_, r)| r.term != term).map(|(id, _)| *id).collect();
        for id in stale {
            if let Some(r) = self.rounds.remove(&id) {
                self.requeue(r.reads);
            }
        }
    }

    /// Confirmed reads whose read index is applied.
    pub fn take_servable(&mut self, applied: u64) -> Vec<WaitingRead> {
        let later = self.confirmed.split_off(&(applied + 1));
        let ready = std::mem::replace(&mut self.confirmed, later);
        let out: Vec<WaitingRead> = ready.into_values().flatten().collect();
        self.len -= out.len();
        out
    }

    /// Retries unanswered rounds and returns the reads whose deadline passed.
    pub fn on_tick(&mut self, now_tick: u64, retry_ticks: u64) -> Vec<RequestId> {
        let overdue: Vec<u64> = self
            .rounds
            .iter()
            .filter(|(_, r)| now_tick.saturating_sub(r.issued_tick) >= retry_ticks)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(r) = self.rounds.remove(&id) {
                self.requeue(r.reads);
            }
        }
        let mut expired = Vec::new();
        let mut keep = |r: &WaitingRead| {
            if r.deadline_tick <= now_tick {
                expired.push(r.id);
                false
            } else {
                true
            }
        };
        self.queued.retain(&mut keep);
        for reads in self.confirmed.values_mut() {
            reads.retain(&mut keep);
        }
        self.confirmed.retain(|_, reads| !reads.is_empty());
        self.len -= expired.len();
        expired
    }

    /// Every waiting read, removed (the node is shutting down or was removed).
    pub fn drain_all(&mut self) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self.queued.drain(..).map(|r| r.id).collect();
        for (_, r) in std::mem::take(&mut self.rounds) {
            ids.extend(r.reads.into_iter().map(|r| r.id));
        }
        for (_, reads) in std::mem::take(&mut self.confirmed) {
            ids.extend(reads.into_iter().map(|r| r.id));
        }
        self.len = 0;
        ids
    }

    fn requeue(&mut self, reads: Vec<WaitingRead>) {
        for r in reads.into_iter().rev() {
            self.queued.push_front(r);
        }
    }

    fn parse_ctx(&self, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != 16 {
            return None;
        }
        let mut node = [0u8; 8];
        node.copy_from_slice(&ctx[..8]);
        if u64::from_le_bytes(node) != self.node_id {
            return None;
        }
        let mut round = [0u8; 8];
        round.copy_from_slice(&ctx[8..]);
        Some(u64::from_le_bytes(round))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicated_read_context_is_seen_once_and_the_memory_is_bounded() {
        let mut seen = SeenReadContexts::default();
        assert!(seen.first_time(b"ctx-1"));
        assert!(!seen.first_time(b"ctx-1"), "a copy must be recognised");
        for i in 0..MAX_SEEN_READ_CONTEXTS as u64 {
            assert!(seen.first_time(&i.to_le_bytes()));
        }
        assert_eq!(seen.order.len(), MAX_SEEN_READ_CONTEXTS);
        assert_eq!(seen.seen.len(), MAX_SEEN_READ_CONTEXTS);
        // The oldest was forgotten to make room.
        assert!(seen.first_time(b"ctx-1"));
    }

    fn read(id: RequestId, deadline_tick: u64) -> WaitingRead {
        WaitingRead { id, kind: ReadKind::Get { key: "k".into() }, deadline_tick }
    }

    #[test]
    fn round_confirms_then_serves_after_apply() {
        let mut q = ReadQueue::new(7, 100);
        q.push(read(1, 50));
        q.push(read(2, 50));
        let ctx = q.start_round(3, 0, 4).unwrap();
        assert!(q.start_round(3, 0, 4).is_none(), "nothing queued");
        q.on_read_state(&ctx, 10, 3);
        assert!(q.take_servable(9).is_empty());
        let served: Vec<_> = q.take_servable(10).into_iter().map(|r| r.id).collect();
        assert_eq!(served, vec![1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn answer_from_another_term_requeues_with_fresh_context() {
        let mut q = ReadQueue::new(7, 0);
        q.push(read(1, 50));
        let ctx1 = q.start_round(3, 0, 4).unwrap();
        q.on_read_state(&ctx1, 10, 4);
        assert!(q.take_servable(100).is_empty());
        let ctx2 = q.start_round(4, 1, 4).unwrap();
        assert_ne!(ctx1, ctx2);
        q.on_read_state(&ctx1, 10, 4); // a late duplicate of the old round is ignored
        assert!(q.take_servable(100).is_empty());
        q.on_read_state(&ctx2, 11, 4);
        assert_eq!(q.take_servable(100).len(), 1);
    }

    #[test]
    fn unanswered_round_is_retried_and_deadline_expires() {
        let mut q = ReadQueue::new(1, 0);
        q.push(read(1, 30));
        let ctx1 = q.start_round(1, 0, 4).unwrap();
        assert!(q.on_tick(5, 10).is_empty());
        assert!(q.start_round(1, 5, 4).is_none(), "round still in flight");
        assert!(q.on_tick(10, 10).is_empty());
        let ctx2 = q.start_round(1, 10, 4).unwrap();
        assert_ne!(ctx1, ctx2);
        assert_eq!(q.on_tick(15, 10), Vec::<RequestId>::new());
        // The round is retried at tick 20 and the read, back in the queue, expires at 30.
        assert_eq!(q.on_tick(30, 10), vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn foreign_context_is_ignored() {
        let mut q = ReadQueue::new(1, 0);
        q.push(read(1, 30));
        let mut ctx = q.start_round(1, 0, 4).unwrap();
        ctx[0] = 2;
        q.on_read_state(&ctx, 1, 1);
        assert!(q.take_servable(10).is_empty());
        q.on_read_state(b"short", 1, 1);
    }
}

/// Bound on [`SeenReadContexts`].
const MAX_SEEN_READ_CONTEXTS: usize = 4096;

/// Read-index contexts this node has been asked about by other nodes, so that a duplicated
/// request is dropped.
///
/// raft-rs (ReadOnlySafe) answers a read request once a quorum acknowledged a heartbeat that
/// carries its context, and then also every request queued *before* it. Each context is fresh
/// (a node never sends one twice), so acknowledgements of it prove leadership after every
/// earlier request was queued. A copy of an old request (the network duplicated or replayed
/// it) breaks that: queued again behind newer requests, it is "confirmed" by acknowledgements
/// still in flight from the first copy, sent before the newer requests existed, and releases
/// them too. A leader deposed meanwhile then answers them with stale state (found by swarm
/// seed 2007288: a paused leader, duplicated messages). Bounded: the oldest go first.
#[derive(Debug, Default)]
pub(crate) struct SeenReadContexts {
    seen: BTreeSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

impl SeenReadContexts {
    /// Records `ctx`; false if it was seen before.
    pub(crate) fn first_time(&mut self, ctx: &[u8]) -> bool {
        if self.seen.contains(ctx) {
            return false;
        }
        self.seen.insert(ctx.to_vec());
        self.order.push_back(ctx.to_vec());
        while self.order.len() > MAX_SEEN_READ_CONTEXTS {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}
