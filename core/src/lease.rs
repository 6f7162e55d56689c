//! Leases: the replicated part ([`Leases`], in the state machine and its snapshots) and the
//! leader's clock of them ([`LeaseClock`], in memory only).
//!
//! A lease is an id with a TTL and a set of attached keys. Granting, revoking and expiring are
//! replicated commands; revoking or expiring deletes every attached key at that one entry (so
//! watchers see one DELETE per key, all at that revision). Which lease has expired is decided by
//! the leader alone, from deadlines it keeps in memory: they are not replicated, and a new leader
//! restarts every lease's deadline at its own `now + TTL` (etcd's rule), so a failover can only
//! lengthen a lease, never shorten it.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, Reader, Writer};

/// Why a lease request was refused. Messages never contain keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// No lease has this id (never granted, revoked, or expired).
    #[error("lease not found")]
    NotFound,
    /// A grant asked for an id that is in use.
    #[error("lease id already in use")]
    AlreadyExists,
    /// The cluster holds as many leases as it may (`Config::max_leases`).
    #[error("too many leases (the limit is {max})")]
    TooMany { max: u64 },
}

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl_ms: u64,
    /// The keys attached to it, deleted with it.
    pub(crate) keys: BTreeSet<String>,
}

/// What [`crate::Node`] answers to a lease's time-to-live query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTtl {
    pub id: u64,
    /// The TTL the lease was granted with.
    pub granted_ttl_ms: u64,
    /// Until the leader expires it, unless it is kept alive.
    pub remaining_ms: u64,
    /// Attached keys in ascending order (when asked for), at most `Config::max_page_size`.
    pub keys: Vec<String>,
}

/// The granted leases and which key is attached to which. Replicated: every replica holds the
/// same, changed only by applied entries.
///
/// Invariant: `lease_of[k] == id` exactly when `by_id[id].keys` contains `k`, and every
/// attached key exists in the data (the key map detaches a key whenever it writes it without
/// a lease or deletes it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Leases {
    by_id: BTreeMap<u64, Lease>,
    lease_of: BTreeMap<String, u64>,
}

impl Leases {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Every lease's id and TTL, in id order.
    pub(crate) fn ttls(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_id.iter().map(|(id, l)| (*id, l.ttl_ms))
    }

    /// The lease `key` is attached to.
    pub(crate) fn lease_of(&self, key: &str) -> Option<u64> {
        self.lease_of.get(key).copied()
    }

    /// Grants a lease: `id` if given, else the lowest unused id from `index` up (the log
    /// index of the grant, so every replica picks the same).
    pub(crate) fn grant(
        &mut self,
        index: u64,
        id: Option<u64>,
        ttl_ms: u64,
        max_leases: u64,
    ) -> Result<u64, LeaseError> {
        if self.by_id.len() as u64 >= max_leases {
            return Err(LeaseError::TooMany { max: max_leases });
        }
        let id = match id {
            Some(id) if self.by_id.contains_key(&id) => return Err(LeaseError::AlreadyExists),
            Some(id) => id,
            None => {
                let mut id = index.max(1);
                while self.by_id.contains_key(&id) {
                    id = id.wrapping_add(1).max(1);
                }
                id
            }
        };
        self.by_id.insert(id, Lease { ttl_ms, keys: BTreeSet::new() });
        Ok(id)
    }

    /// Removes lease `id`, returning the keys that were attached (for the caller to delete).
    pub(crate) fn remove(&mut self, id: u64) -> Option<BTreeSet<String>> {
        let lease = self.by_id.remove(&id)?;
        for key in &lease.keys {
            self.lease_of.remove(key);
        }
        Some(lease.keys)
    }

    /// Attaches `key` to lease `id` (which must exist), detaching it from any other.
    pub(crate) fn attach(&mut self, key: &str, id: u64) {
        self.detach(key);
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.insert(key.to_owned());
            self.lease_of.insert(key.to_owned(), id);
        }
    }

    /// Detaches `key` from its lease, if any.
    pub(crate) fn detach(&mut self, key: &str) {
        if let Some(id) = self.lease_of.remove(key) {
            if let Some(lease) = self.by_id.get_mut(&id) {
                lease.keys.remove(key);
            }
        }
    }

    pub(crate) fn encode_to(&self, w: &mut Writer) {
        w.put_u64(self.by_id.len() as u64);
        for (id, lease) in &self.by_id {
            w.put_u64(*id);
            w.put_u64(lease.ttl_ms);
            w.put_u64(lease.keys.len() as u64);
            for key in &lease.keys {
                w.put_str(key);
            }
        }
    }

    /// Reads what [`Leases::encode_to`] wrote; `key_exists` says whether a key is in the data
    /// decoded before, so that only existing keys are attached.
    pub(crate) fn decode_from(
        r: &mut Reader<'_>,
        key_exists: impl Fn(&str) -> bool,
    ) -> Result<Self, DecodeError> {
        let mut leases = Leases::default();
        // id, ttl, key count.
        let n = r.get_count(8 * 3)?;
        for _ in 0..n {
            let id = r.get_u64()?;
            if leases.by_id.last_key_value().is_some_and(|(prev, _)| *prev >= id) {
                return Err(DecodeError::Invalid("lease ids not ascending"));
            }
            let ttl_ms = r.get_u64()?;
            let count = r.get_count(4)?;
            let mut keys = BTreeSet::new();
            for _ in 0..count {
                let key = r.get_str()?;
                if keys.last().is_some_and(|prev: &String| prev.as_str() >= key) {
                    return Err(DecodeError::Invalid("lease keys not ascending"));
                }
                if !key_exists(key) || leases.lease_of.contains_key(key) {
                    return Err(DecodeError::Invalid("lease key"));
                }
                leases.lease_of.insert(key.to_owned(), id);
                keys.insert(key.to_owned());
            }
            leases.by_id.insert(id, Lease { ttl_ms, keys });
        }
        Ok(leases)
    }
}

/// The leader's deadlines of the leases, in its monotonic milliseconds. Not replicated: only
/// meaningful on the node that leads now, and rebuilt in full when a node becomes leader.
#[derive(Debug, Default)]
pub(crate) struct LeaseClock {
    deadline_ms: BTreeMap<u64, u64>,
    /// Leases whose expiry this leader proposed, with the tick it did (proposed again if not
    /// applied after a request timeout).
    expiring: BTreeMap<u64, u64>,
}

impl LeaseClock {
    /// Forgets everything (this node no longer leads).
    pub(crate) fn clear(&mut self) {
        self.deadline_ms.clear();
        self.expiring.clear();
    }

    /// Every lease's deadline restarts at `now_ms + TTL` (this node just became leader).
    pub(crate) fn restart(&mut self, leases: &Leases, now_ms: u64) {
        self.clear();
        for (id, ttl_ms) in leases.ttls() {
            self.deadline_ms.insert(id, now_ms.saturating_add(ttl_ms));
        }
    }

    /// Lease `id` gets a full TTL from `now_ms` (granted, or kept alive).
    pub(crate) fn renew(&mut self, id: u64, ttl_ms: u64, now_ms: u64) {
        self.deadline_ms.insert(id, now_ms.saturating_add(ttl_ms));
    }

    /// Lease `id` is gone (revoked or expired).
    pub(crate) fn remove(&mut self, id: u64) {
        self.deadline_ms.remove(&id);
        self.expiring.remove(&id);
    }

    /// Whether this leader already proposed `id`'s expiry.
    pub(crate) fn is_expiring(&self, id: u64) -> bool {
        self.expiring.contains_key(&id)
    }

    /// Milliseconds until `id` expires (0 once due).
    pub(crate) fn remaining_ms(&self, id: u64, now_ms: u64) -> Option<u64> {
        self.deadline_ms.get(&id).map(|d| d.saturating_sub(now_ms))
    }

    /// At most `max` leases due at `now_ms` whose expiry is not in flight (or was proposed
    /// before `retry_before_tick`), marked as proposed at `tick`.
    pub(crate) fn take_due(
        &mut self,
        now_ms: u64,
        tick: u64,
        retry_before_tick: u64,
        max: usize,
    ) -> Vec<u64> {
        let due: Vec<u64> = self
            .deadline_ms
            .iter()
            .filter(|(id, deadline)| {
                **deadline <= now_ms
                    && self.expiring.get(id).is_none_or(|proposed| *proposed < retry_before_tick)
            })
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        for id in &due {
            self.expiring.insert(*id, tick);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_chosen_or_derived_and_bounded() {
        let mut l = Leases::default();
        assert_eq!(l.grant(5, None, 1_000, 3), Ok(5));
        assert_eq!(l.grant(6, Some(6), 1_000, 3), Ok(6));
        assert_eq!(l.grant(7, Some(6), 1_000, 3), Err(LeaseError::AlreadyExists));
        // Derived ids skip the ones in use.
        assert_eq!(l.grant(5, None, 1_000, 3), Ok(7));
        assert_eq!(l.grant(9, None, 1_000, 3), Err(LeaseError::TooMany { max: 3 }));
    }

    #[test]
    fn attach_moves_a_key_and_remove_returns_its_keys() {
        let mut l = Leases::default();
        l.grant(1, None, 1_000, 10).unwrap();
        l.grant(2, None, 1_000, 10).unwrap();
        l.attach("a", 1);
        l.attach("b", 1);
        l.attach("a", 2);
        assert_eq!(l.lease_of("a"), Some(2));
        l.detach("b");
        assert_eq!(l.remove(1), Some(BTreeSet::new()));
        assert_eq!(l.remove(2), Some(["a".to_owned()].into_iter().collect()));
        assert_eq!(l.lease_of("a"), None);
    }

    #[test]
    fn encoding_round_trips_and_rejects_unknown_keys() {
        let mut l = Leases::default();
        l.grant(3, None, 2_000, 10).unwrap();
        l.grant(4, None, 5_000, 10).unwrap();
        l.attach("x", 3);
        l.attach("y", 3);
        let mut w = Writer::new();
        l.encode_to(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(Leases::decode_from(&mut r, |_| true).unwrap(), l);
        r.finish().unwrap();
        let mut r = Reader::new(&bytes);
        assert!(Leases::decode_from(&mut r, |k| k == "x").is_err());
    }

    #[test]
    fn clock_expires_each_due_lease_once_until_retry() {
        let mut l = Leases::default();
        l.grant(1, None, 100, 10).unwrap();
        l.grant(2, None, 300, 10).unwrap();
        let mut c = LeaseClock::default();
        c.restart(&l, 1_000);
        assert!(c.take_due(1_099, 1, 0, 10).is_empty());
        assert_eq!(c.take_due(1_100, 2, 0, 10), vec![1]);
        assert!(c.take_due(1_200, 3, 0, 10).is_empty(), "in flight");
        assert_eq!(c.take_due(1_200, 9, 5, 10), vec![1], "retried");
        c.renew(2, 300, 1_250);
        assert_eq!(c.remaining_ms(2, 1_300), Some(250));
        c.remove(1);
        assert!(!c.is_expiring(1));
    }
}
