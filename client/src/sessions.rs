//! Write sessions with many writes in flight.
//!
//! A session is opened by a `RegisterSession` call, which answers its id; the server knows it
//! by (this client's certificate name, id), so no other identity can use it. Every write then
//! carries `(client_id, seq, first_unacked_seq)`. The server applies a `(client_id, seq)` once
//! and answers repeats with the stored result; it keeps results from `first_unacked_seq` on,
//! at most a fixed number per session (64 by default), dropping the smallest beyond that. The
//! client therefore:
//!
//! - registers a session on first use (one registration at a time per session: the other
//!   writes of the session wait for it);
//! - tracks the seqs in flight of each session, and sends the smallest of them as
//!   `first_unacked_seq` (a seq stops being in flight when its call returned, whatever the
//!   outcome: it is never sent again);
//! - opens a seq only while `seq - first_unacked_seq < window`. Every request the server applied
//!   carried a `first_unacked_seq` above `seq - window`, so the server never holds more than
//!   `window` results of a session and never drops one a retry may still ask for
//!   (`window` ≤ the server's limit);
//! - opens another session (up to `max_sessions`) when every open one is at its window, so one
//!   slow write does not hold up the others;
//! - replaces a session the server forgot (FAILED_PRECONDITION: expired or evicted) by a newly
//!   registered one once its last write in flight has returned.

use std::collections::BTreeSet;

use mokv_proto::api::Session;

use crate::transport::Rng;

/// One write's place in a session: the session's local key (not the server's id, which it
/// may not have yet) and the seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub slot: u64,
    pub seq: u64,
}

/// What a write must do about its session before it can be sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Registration {
    /// The session is registered: send with these fields.
    Ready(Session),
    /// Register it now (this write's task is the one registering), then call
    /// [`Sessions::registered`] or [`Sessions::registration_failed`].
    Register,
    /// Another write is registering it: wait for a change.
    Wait,
}

#[derive(Debug)]
struct Slot {
    key: u64,
    /// The server's id of the session, once registered.
    client_id: Option<u64>,
    /// The seq whose write is registering the session now. Cleared when that registration
    /// ends, or when that write's call returns (also when its caller dropped it), so a
    /// cancelled registration never blocks the session.
    registering: Option<u64>,
    next_seq: u64,
    in_flight: BTreeSet<u64>,
    /// The server forgot it: no new seqs; replaced once nothing is in flight.
    expired: bool,
}

impl Slot {
    fn new(key: u64) -> Slot {
        Slot {
            key,
            client_id: None,
            registering: None,
            next_seq: 1,
            in_flight: BTreeSet::new(),
            expired: false,
        }
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
        // Expired sessions with nothing in flight start over, to be registered anew.
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
        Some(Ticket { slot: slot.key, seq })
    }

    fn slot_mut(&mut self, t: &Ticket) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.key == t.slot)
    }

    /// The session fields to send for `t` now, or what to do first.
    pub(crate) fn wire(&mut self, t: &Ticket) -> Registration {
        let Some(s) = self.slot_mut(t) else {
            // Not reachable while `t` is in flight (its slot is kept); register anew.
            return Registration::Register;
        };
        match s.client_id {
            Some(client_id) => Registration::Ready(Session {
                client_id,
                seq: t.seq,
                first_unacked_seq: s.first_unacked().min(t.seq),
            }),
            None if s.registering.is_some() => Registration::Wait,
            None => {
                s.registering = Some(t.seq);
                Registration::Register
            }
        }
    }

    /// The server opened session `client_id` for `t`'s slot.
    pub(crate) fn registered(&mut self, t: &Ticket, client_id: u64) {
        if let Some(s) = self.slot_mut(t) {
            s.registering = None;
            s.client_id = Some(client_id);
        }
    }

    /// The registration for `t`'s slot failed; another write may try.
    pub(crate) fn registration_failed(&mut self, t: &Ticket) {
        if let Some(s) = self.slot_mut(t) {
            s.registering = None;
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
            if s.registering == Some(t.seq) {
                s.registering = None;
            }
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

    /// Registers `t`'s slot as session `id` and returns the wire fields.
    fn ready(s: &mut Sessions, t: &Ticket, id: u64) -> Session {
        if s.wire(t) == Registration::Register {
            s.registered(t, id);
        }
        match s.wire(t) {
            Registration::Ready(w) => w,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_session_is_registered_once_before_its_first_write() {
        let mut rng = Rng::seeded(1);
        let mut s = Sessions::new(4, 2);
        let a = s.acquire(&mut rng).unwrap();
        let b = s.acquire(&mut rng).unwrap();
        assert_eq!(a.slot, b.slot);
        assert_eq!(s.wire(&a), Registration::Register);
        // One registration at a time: b waits for a's.
        assert_eq!(s.wire(&b), Registration::Wait);
        s.registration_failed(&a);
        assert_eq!(s.wire(&b), Registration::Register);
        // b's call is dropped mid-registration: a may register instead.
        s.release(&b);
        assert_eq!(s.wire(&a), Registration::Register);
        s.registered(&a, 17);
        let w = ready(&mut s, &a, 99);
        assert_eq!((w.client_id, w.seq, w.first_unacked_seq), (17, 1, 1));
    }

    #[test]
    fn first_unacked_is_the_oldest_write_in_flight() {
        let mut rng = Rng::seeded(1);
        let mut s = Sessions::new(4, 2);
        let a = s.acquire(&mut rng).unwrap();
        let b = s.acquire(&mut rng).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(ready(&mut s, &b, 5).first_unacked_seq, 1);
        s.release(&b);
        // Seq 1 is still in flight.
        let c = s.acquire(&mut rng).unwrap();
        assert_eq!(ready(&mut s, &c, 5).first_unacked_seq, 1);
        s.release(&a);
        assert_eq!(ready(&mut s, &c, 5).first_unacked_seq, 3);
        s.release(&c);
        let d = s.acquire(&mut rng).unwrap();
        assert_eq!((d.seq, ready(&mut s, &d, 5).first_unacked_seq), (4, 4));
    }

    #[test]
    fn a_full_window_opens_another_session_then_waits() {
        let mut rng = Rng::seeded(2);
        let mut s = Sessions::new(2, 2);
        let t: Vec<Ticket> = (0..4).map(|_| s.acquire(&mut rng).unwrap()).collect();
        assert_eq!(s.open(), 2);
        assert_eq!(t[0].slot, t[1].slot);
        assert_eq!(t[2].slot, t[3].slot);
        assert_ne!(t[0].slot, t[2].slot);
        assert_eq!(s.acquire(&mut rng), None);
        // The oldest write of the first session returns: one more fits there.
        s.release(&t[0]);
        let n = s.acquire(&mut rng).unwrap();
        assert_eq!((n.slot, n.seq), (t[0].slot, 3));
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
    fn an_expired_session_is_registered_anew_when_its_writes_returned() {
        let mut rng = Rng::seeded(4);
        let mut s = Sessions::new(8, 1);
        let a = s.acquire(&mut rng).unwrap();
        let b = s.acquire(&mut rng).unwrap();
        ready(&mut s, &a, 7);
        s.expired(&a);
        s.release(&a);
        // b still in flight on the expired session: nothing new may start.
        assert_eq!(s.acquire(&mut rng), None);
        s.release(&b);
        let c = s.acquire(&mut rng).unwrap();
        assert_ne!(c.slot, a.slot);
        assert_eq!(c.seq, 1);
        assert_eq!(s.wire(&c), Registration::Register);
        s.registered(&c, 8);
        assert_eq!(ready(&mut s, &c, 0).client_id, 8);
    }
}
