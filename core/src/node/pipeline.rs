//! [`PersistPipeline`]: the persist batches handed to the shell and what waits for them.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::eraftpb::{HardState, Message};

use crate::error::Error;
use crate::persist::{PersistBatch, PersistId};
use crate::request::{RequestId, Response};

/// A persist batch handed out and not yet acknowledged, with what waits for it.
#[derive(Debug)]
struct Unacked {
    batch_id: PersistId,
    /// The raft-rs Ready whose writes the batch holds, to report persisted once it is durable.
    ready_number: Option<u64>,
    /// Messages that may only leave once the batch is durable (a follower's replies).
    held: Vec<Message>,
    /// The commit index of the hard state the batch writes, if it writes one.
    commit: Option<u64>,
}

/// What became free to go: because batches are durable, or because a Ready needed no write.
#[derive(Debug, Default)]
pub(super) struct Released {
    /// To send, in this order, before anything else.
    pub(super) messages: Vec<Message>,
    /// Answers to membership changes, to give after the messages.
    pub(super) replies: Vec<(RequestId, Result<Response, Error>)>,
    /// The newest raft-rs Ready now persisted, to report last.
    pub(super) ready_number: Option<u64>,
}

/// What [`PersistPipeline::push`] did with a batch.
#[derive(Debug)]
pub(super) enum Pushed {
    /// Handed out under this id.
    Queued(PersistId),
    /// Nothing to write and nothing in flight: what it held is free at once.
    Released(Released),
}

/// The persist protocol's state: batches for the shell to write, those in flight, and what
/// waits for them.
///
/// Invariants:
/// - ids are handed out in increasing order, one per batch, and batches leave ([`poll`]) in
///   that order; an acknowledgement of id `n` covers every batch up to `n`;
/// - a held message or Ready number is released only once every batch handed out before it
///   (and the one that carries its writes) is acknowledged: nothing that depends on a write
///   leaves before the write is durable;
/// - [`durable_commit`](Self::durable_commit) only grows, and a held membership answer is
///   released once it covers the answer's entry;
/// - a batch that carries only node metadata ([`push_meta`](Self::push_meta)) holds nothing
///   and is not waited for.
///
/// [`poll`]: Self::poll
#[derive(Debug)]
pub(super) struct PersistPipeline {
    next_id: PersistId,
    out: VecDeque<PersistBatch>,
    unacked: VecDeque<Unacked>,
    /// The highest commit index known to be on disk.
    durable_commit: u64,
    /// Answers to applied membership changes by entry index, held until `durable_commit`
    /// covers it (see `Node::finish_write`).
    held_replies: Vec<(u64, RequestId, Result<Response, Error>)>,
}

impl PersistPipeline {
    /// Nothing in flight; `durable_commit` is the commit index read from disk.
    pub(super) fn new(durable_commit: u64) -> Self {
        Self {
            next_id: 1,
            out: VecDeque::new(),
            unacked: VecDeque::new(),
            durable_commit,
            held_replies: Vec::new(),
        }
    }

    /// The highest commit index known to be on disk here.
    pub(super) fn durable_commit(&self) -> u64 {
        self.durable_commit
    }

    /// Whether membership answers wait for the durable commit index to move.
    pub(super) fn holds_replies(&self) -> bool {
        !self.held_replies.is_empty()
    }

    /// The next batch for the shell to write.
    pub(super) fn poll(&mut self) -> Option<PersistBatch> {
        self.out.pop_front()
    }

    /// Queues the writes of Ready `ready_number` (or of a snapshot taken outside a Ready)
    /// with the messages that must wait for them. A batch with nothing to write queues
    /// nothing: its messages and Ready wait for the last batch in flight, or are released at
    /// once when there is none.
    pub(super) fn push(
        &mut self,
        ready_number: Option<u64>,
        mut batch: PersistBatch,
        held: Vec<Message>,
    ) -> Pushed {
        if batch.is_empty() {
            return match self.unacked.back_mut() {
                Some(last) => {
                    if ready_number.is_some() {
                        last.ready_number = ready_number;
                    }
                    last.held.extend(held);
                    Pushed::Released(Released::default())
                }
                None => {
                    Pushed::Released(Released { messages: held, replies: Vec::new(), ready_number })
                }
            };
        }
        let id = self.take_id();
        batch.id = id;
        let commit = batch
            .hard_state
            .as_deref()
            .and_then(|b| HardState::parse_from_bytes(b).ok())
            .map(|hs| hs.commit);
        self.out.push_back(batch);
        self.unacked.push_back(Unacked { batch_id: id, ready_number, held, commit });
        Pushed::Queued(id)
    }

    /// Queues a batch that writes only the node's metadata: nothing waits for it.
    pub(super) fn push_meta(&mut self, node_meta: Vec<u8>, must_sync: bool) -> PersistId {
        let id = self.take_id();
        self.out.push_back(PersistBatch {
            id,
            node_meta: Some(node_meta),
            must_sync,
            ..PersistBatch::default()
        });
        id
    }

    fn take_id(&mut self) -> PersistId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Holds the answer to the membership change applied at `index` until the durable commit
    /// index covers it.
    pub(super) fn hold_reply(
        &mut self,
        index: u64,
        id: RequestId,
        result: Result<Response, Error>,
    ) {
        self.held_replies.push((index, id, result));
    }

    /// Every batch up to and including `id` is durable.
    pub(super) fn ack(&mut self, id: PersistId) -> Released {
        let mut released = Released::default();
        while self.unacked.front().is_some_and(|u| u.batch_id <= id) {
            let Some(u) = self.unacked.pop_front() else { break };
            released.ready_number = u.ready_number.or(released.ready_number);
            released.messages.extend(u.held);
            self.durable_commit = self.durable_commit.max(u.commit.unwrap_or(0));
        }
        let durable = self.durable_commit;
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held_replies).into_iter().partition(|(i, _, _)| *i <= durable);
        self.held_replies = later;
        released.replies = due.into_iter().map(|(_, id, result)| (id, result)).collect();
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: u64) -> Message {
        let mut m = Message::default();
        m.to = to;
        m
    }

    fn hard_state(commit: u64) -> Vec<u8> {
        let mut hs = HardState::default();
        hs.term = 1;
        hs.commit = commit;
        hs.write_to_bytes().unwrap()
    }

    fn writes(commit: u64) -> PersistBatch {
        PersistBatch { hard_state: Some(hard_state(commit)), ..PersistBatch::default() }
    }

    fn tos(r: &Released) -> Vec<u64> {
        r.messages.iter().map(|m| m.to).collect()
    }

    #[test]
    fn nothing_to_write_and_nothing_in_flight_releases_at_once() {
        let mut p = PersistPipeline::new(0);
        let Pushed::Released(r) = p.push(Some(7), PersistBatch::default(), vec![msg(2)]) else {
            panic!("an empty batch is not queued");
        };
        assert_eq!((tos(&r), r.ready_number), (vec![2], Some(7)));
        assert!(p.poll().is_none());
    }

    #[test]
    fn held_messages_wait_for_every_earlier_batch() {
        let mut p = PersistPipeline::new(0);
        let Pushed::Queued(a) = p.push(Some(1), writes(1), vec![msg(2)]) else { panic!() };
        let Pushed::Queued(b) = p.push(Some(2), writes(2), vec![msg(3)]) else { panic!() };
        // Nothing to write, but it must not overtake batch b.
        let Pushed::Released(r) = p.push(Some(3), PersistBatch::default(), vec![msg(4)]) else {
            panic!()
        };
        assert!(r.messages.is_empty() && r.ready_number.is_none());
        assert_eq!((p.poll().map(|b| b.id), p.poll().map(|b| b.id)), (Some(a), Some(b)));
        let r = p.ack(a);
        assert_eq!((tos(&r), r.ready_number, p.durable_commit()), (vec![2], Some(1), 1));
        let r = p.ack(b);
        assert_eq!((tos(&r), r.ready_number, p.durable_commit()), (vec![3, 4], Some(3), 2));
    }

    #[test]
    fn one_ack_covers_every_batch_up_to_it_and_metadata_holds_nothing() {
        let mut p = PersistPipeline::new(5);
        let Pushed::Queued(a) = p.push(Some(1), writes(6), vec![msg(2)]) else { panic!() };
        let m = p.push_meta(vec![1], true);
        let Pushed::Queued(b) = p.push(None, writes(4), Vec::new()) else { panic!() };
        assert!(a < m && m < b, "ids increase in hand-out order");
        // An ack of the metadata batch alone covers batch a before it.
        let r = p.ack(m);
        assert_eq!((tos(&r), r.ready_number), (vec![2], Some(1)));
        let r = p.ack(b);
        assert_eq!(r.ready_number, None, "a snapshot batch reports no Ready of its own");
        assert_eq!(p.durable_commit(), 6, "the durable commit index never goes back");
        let batches: Vec<PersistBatch> = std::iter::from_fn(|| p.poll()).collect();
        assert_eq!(batches[1].node_meta.as_deref(), Some(&[1u8][..]));
        assert!(batches[1].must_sync);
    }

    #[test]
    fn membership_answers_wait_for_the_durable_commit_index() {
        let mut p = PersistPipeline::new(3);
        p.hold_reply(5, 10, Ok(Response::Membership { index: 5 }));
        p.hold_reply(8, 11, Ok(Response::Membership { index: 8 }));
        assert!(p.holds_replies());
        let Pushed::Queued(a) = p.push(None, writes(6), Vec::new()) else { panic!() };
        let r = p.ack(a);
        assert_eq!(r.replies.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![10]);
        assert!(p.holds_replies());
        let Pushed::Queued(b) = p.push(None, writes(9), Vec::new()) else { panic!() };
        assert_eq!(p.ack(b).replies.len(), 1);
        assert!(!p.holds_replies());
    }
}
