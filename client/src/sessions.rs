//! Write sessions with many writes in flight.
//!
//! Every write carries `(client_id, seq, first_unacked_seq)`. The server applies a `(client_id,
//! seq)` once and answers repeats with the stored result; it keeps results from
//! `first_unacked_seq` on, at most a fixed number per session (64 by default), dropping the
//! smallest beyond that. The client therefore:
//!
//! - tracks the seqs in flight of each session, and sends the smallest of them as
//!   `first_unacked_seq` (a seq stops being in flight when its call returned, whatever the
//!   outcome: it is never sent again);
//! - opens a seq only while `seq - first_unacked_seq < window`. Every request the server applied
//!   carried a `first_unacked_seq` above `seq - window`, so the server never holds more than
//!   `window` results of a session and never drops one a retry may still ask for
//!   (`window` ≤ the server's limit);
//! - opens another session (up to `max_sessions`) when every open one is at its window, so one
//!   slow write does not hold up the others;
//! - until some write of a session has succeeded, sends `first_unacked_seq = 1`: the server may
//!   not know the session yet (a write refused before the log does not open it), and an
//!   unknown session with answered seqs is taken for an expired one;
//! - replaces a session the server forgot (FAILED_PRECONDITION) once its last write in flight
//!   has returned.

use std::collections::BTreeSet;

use mokv_proto::api::Session;

use crate::transport::Rng;

/// One write's place in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub client_id: u64,
    pub seq: u64,
}

#[derive(Debug)]
struct Slot {
    client_id: u64,
    next_seq: u64,
    in_flight: BTreeSet<u64>,
    /// Some write of this session succeeded: the server knows it.
    known: bool,
    /// The server forgot it: no new seqs; replaced once nothing is in flight.
    expired: bool,
}

impl Slot {
    fn new(client_id: u64) -> Slot {
        Slot { client_id, next_seq: 1, in_flight: BTreeSet::new(), known: false, expired: false }
    }

    fn first_unacked(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.next_seq)
    }

    fn has_room(&self, window: u64) -> bool {
        !self.expired && self.next_seq - self.first_unacked() < window
    }
}

/// The sessions of one client.
#[derive(Debug)]
pub(crate) struct Sessions {
    slots: Vec<Slot>,
    window: u64,
    max_sessions: usize,
}

impl Sessions {
    pub(crate) fn new(window: u32, max_sessions: usize) -> Sessions {
        Sessions {
            slots: Vec::new(),
            window: u64::from(window.max(1)),
            max_sessions: max_sessions.max(1),
        }
    }

    /// A seq for a new write, or `None` when every session is at its window (wait for a
    /// [`Sessions::release`]).
    pub(crate) fn acquire(&mut self, rng: &mut Rng) -> Option<Ticket> {
        // Expired sessions with nothing in flight start over under a new id.
        for slot in &mut self.slots {
            if slot.expired && slot.in_flight.is_empty() {
                *slot = Slot::new(rng.session_id());
            }
        }
        let window = self.window;
        let idx = match self.slots.iter().position(|s| s.has_room(window)) {
            Some(i) => i,
            None if self.slots.len() < self.max_sessions => {
                self.slots.push(Slot::new(rng.session_id()));
                self.slots.len() - 1
            }
            None => return None,
        };
        let slot = &mut self.slots[idx];
        let seq = slot.next_seq;
        slot.next_seq += 1;
        slot.in_flight.insert(seq);
        Some(Ticket { client_id: slot.client_id, seq })
    }

    fn slot_mut(&mut self, t: &Ticket) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.client_id == t.client_id)
    }

    /// The session fields to send for `t` now.
    pub(crate) fn wire(&self, t: &Ticket) -> Session {
        let first_unacked_seq = match self.slots.iter().find(|s| s.client_id == t.client_id) {
            Some(s) if s.known => s.first_unacked().min(t.seq),
            _ => 1,
        };
        Session { client_id: t.client_id, seq: t.seq, first_unacked_seq }
    }

    /// The server applied (or had applied) a write of this session.
    pub(crate) fn succeeded(&mut self, t: &Ticket) {
        if let Some(s) = self.slot_mut(t) {
            s.known = true;
        }
    }

    /// The server no longer knows this session: no new writes go to it.
    pub(crate) fn expired(&mut self, t: &Ticket) {
        if let Some(s) = self.slot_mut(t) {
            s.expired = true;
        }
    }

    /// The write's call returned: its seq is never sent again.
    pub(crate) fn release(&mut self, t: &Ticket) {
        if let Some(s) = self.slot_mut(t) {
            s.in_flight.remove(&t.seq);
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_unacked_is_the_oldest_write_in_flight_once_known() {
        let mut rng = Rng::seeded(1);
        let mut s = Sessions::new(4, 2);
        let a = s.acquire(&mut rng).unwrap();
        let b = s.acquire(&mut rng).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.client_id, b.client_id);
        // Not known yet: claim nothing answered.
        assert_eq!(s.wire(&b).first_unacked_seq, 1);
        s.succeeded(&b);
        s.release(&b);
        // Seq 1 is still in flight.
        let c = s.acquire(&mut rng).unwrap();
        assert_eq!(s.wire(&c).first_unacked_seq, 1);
        s.release(&a);
        assert_eq!(s.wire(&c).first_unacked_seq, 3);
        s.release(&c);
        let d = s.acquire(&mut rng).unwrap();
        assert_eq!((d.seq, s.wire(&d).first_unacked_seq), (4, 4));
    }

    #[test]
    fn a_full_window_opens_another_session_then_waits() {
        let mut rng = Rng::seeded(2);
        let mut s = Sessions::new(2, 2);
        let t: Vec<Ticket> = (0..4).map(|_| s.acquire(&mut rng).unwrap()).collect();
        assert_eq!(s.open(), 2);
        assert_eq!(t[0].client_id, t[1].client_id);
        assert_eq!(t[2].client_id, t[3].client_id);
        assert_ne!(t[0].client_id, t[2].client_id);
        assert_eq!(s.acquire(&mut rng), None);
        // The oldest write of the first session returns: one more fits there.
        s.release(&t[0]);
        let n = s.acquire(&mut rng).unwrap();
        assert_eq!((n.client_id, n.seq), (t[0].client_id, 3));
        // Seq 2, still in flight, keeps the window from moving past 3.
        s.release(&n);
        assert_eq!(s.acquire(&mut rng), None);
        s.release(&t[1]);
        assert_eq!(s.acquire(&mut rng).map(|x| x.seq), Some(4));
    }

    #[test]
    fn window_bounds_the_distance_to_the_oldest_write_in_flight() {
        let mut rng = Rng::seeded(3);
        let mut s = Sessions::new(3, 1);
        let slow = s.acquire(&mut rng).unwrap();
        let mut last = slow;
        for _ in 0..2 {
            last = s.acquire(&mut rng).unwrap();
            s.release(&last);
        }
        // Seqs 1 (slow), 2, 3 opened; 4 would be 3 past the oldest in flight.
        assert_eq!(last.seq, 3);
        assert_eq!(s.acquire(&mut rng), None);
        s.release(&slow);
        assert_eq!(s.acquire(&mut rng).map(|t| t.seq), Some(4));
    }

    #[test]
    fn an_expired_session_is_replaced_when_its_writes_returned() {
        let mut rng = Rng::seeded(4);
        let mut s = Sessions::new(8, 1);
        let a = s.acquire(&mut rng).unwrap();
        let b = s.acquire(&mut rng).unwrap();
        s.succeeded(&a);
        s.expired(&a);
        s.release(&a);
        // b still in flight on the expired session: nothing new may start.
        assert_eq!(s.acquire(&mut rng), None);
        s.release(&b);
        let c = s.acquire(&mut rng).unwrap();
        assert_ne!(c.client_id, a.client_id);
        assert_eq!(c.seq, 1);
        assert_eq!(s.wire(&c).first_unacked_seq, 1);
    }
}
