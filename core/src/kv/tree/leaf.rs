//! A leaf: up to [`LEAF_CAPACITY`] entries in key order, with a two-byte hint of each key kept
//! inline so that a search reads the entries' out-of-line blocks twice instead of at every
//! step of a binary search (one cache miss each: in a 1M-key map, the leaf's binary search
//! was a third of replaying the log at a restart, `perf record`).
//!
//! A search compares the key with the bytes all the leaf's keys share first; up to
//! [`INLINE_PREFIX_BYTES`] of them are kept inline too, so that it need not read the first
//! entry's block for them (another cache miss per lookup in a big map).
//!
//! Invariants: every key in the leaf is at least `shared` bytes long and all of them share
//! their first `shared` bytes; `hints[i]` is [`hint`] of entry `i` at `shared`. A key sharing
//! those bytes orders against entry `i` as its hint does against `hints[i]`, unless the hints
//! are equal. `shared` may be shorter than the keys' longest common prefix (a removal never
//! lengthens it), only ever not longer. If the leaf has entries, `prefix` starts with the first
//! `min(shared, INLINE_PREFIX_BYTES)` of those shared bytes.

use std::cmp::Ordering;

use smallvec::SmallVec;

use super::node::split_point;
use crate::kv::entry::compare_keys;
use crate::kv::Entry;

/// Entries per leaf at most. Leaves built from a sorted snapshot are full, so 1M keys take
/// ≈ 31,250 leaves of ≈ 350 bytes; a write to a leaf a snapshot job still shares copies
/// (reference-counts) this many entries.
pub(super) const LEAF_CAPACITY: usize = 32;
/// A leaf that is not the last of its level and has fewer entries is merged with or refilled
/// from a neighbour.
pub(super) const LEAF_MIN: usize = LEAF_CAPACITY / 2;
/// Shared key bytes a leaf keeps inline (see the module comment); a longer shared prefix is
/// read from the first entry.
const INLINE_PREFIX_BYTES: usize = 16;

#[derive(Clone, Default)]
pub(super) struct Leaf {
    entries: SmallVec<[Entry; LEAF_CAPACITY]>,
    hints: [u16; LEAF_CAPACITY],
    shared: usize,
    prefix: [u8; INLINE_PREFIX_BYTES],
}

/// The two bytes of `key` at `offset`, big-endian, zero past its end: among keys sharing
/// their first `offset` bytes, a key's hint never exceeds a greater key's.
fn hint(key: &[u8], offset: usize) -> u16 {
    let byte = |i: usize| key.get(offset + i).copied().unwrap_or(0);
    u16::from_be_bytes([byte(0), byte(1)])
}

/// The first `min(shared, INLINE_PREFIX_BYTES)` bytes of `key`, zero-padded.
fn inline_prefix(key: &[u8], shared: usize) -> [u8; INLINE_PREFIX_BYTES] {
    let n = shared.min(INLINE_PREFIX_BYTES);
    let mut prefix = [0; INLINE_PREFIX_BYTES];
    prefix[..n].copy_from_slice(&key[..n]);
    prefix
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Leaf {
    /// A leaf of `entries`, in ascending key order and at most [`LEAF_CAPACITY`] of them.
    pub(super) fn from_entries(entries: SmallVec<[Entry; LEAF_CAPACITY]>) -> Self {
        debug_assert!(entries.len() <= LEAF_CAPACITY);
        let shared = match (entries.first(), entries.last()) {
            // Sorted keys: the first and last share what all of them share.
            (Some(first), Some(last)) => common_prefix(first.key_bytes(), last.key_bytes()),
            _ => 0,
        };
        let mut leaf =
            Leaf { entries, hints: [0; LEAF_CAPACITY], shared, prefix: [0; INLINE_PREFIX_BYTES] };
        if let Some(first) = leaf.entries.first() {
            leaf.prefix = inline_prefix(first.key_bytes(), shared);
        }
        leaf.rehint();
        leaf
    }

    fn rehint(&mut self) {
        for (h, e) in self.hints.iter_mut().zip(&self.entries) {
            *h = hint(e.key_bytes(), self.shared);
        }
    }

    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where `key` is (`Ok`) or would go (`Err`).
    pub(super) fn find(&self, key: &[u8]) -> Result<usize, usize> {
        let Some(first) = self.entries.first() else {
            return Err(0);
        };
        let shared = self.shared;
        let prefix = match self.prefix.get(..shared) {
            Some(inline) => inline,
            None => &first.key_bytes()[..shared],
        };
        match compare_keys(&key[..shared.min(key.len())], prefix) {
            Ordering::Less => return Err(0),
            Ordering::Greater => return Err(self.len()),
            // Equal: `key` is at least `shared` bytes long (a shorter one, a proper prefix of
            // every key, compared `Less`).
            Ordering::Equal => {}
        }
        let h = hint(key, shared);
        let hints = &self.hints[..self.len()];
        let start = hints.partition_point(|&x| x < h);
        let end = start + hints[start..].partition_point(|&x| x == h);
        for i in start..end {
            match compare_keys(self.entries[i].key_bytes(), key) {
                Ordering::Less => {}
                Ordering::Equal => return Ok(i),
                Ordering::Greater => return Err(i),
            }
        }
        Err(end)
    }

    /// Where `key` probably is, judged by the inline prefix and the hints alone (no entry's
    /// block is read): the first entry whose hint equals `key`'s. `None` if the hints say
    /// it is not here, or the keys' shared prefix is longer than the inline one.
    pub(super) fn candidate(&self, key: &[u8]) -> Option<usize> {
        let shared = self.shared;
        let prefix = self.prefix.get(..shared)?;
        if key.get(..shared)? != prefix {
            return None;
        }
        let h = hint(key, shared);
        let hints = &self.hints[..self.len()];
        let i = hints.partition_point(|&x| x < h);
        (hints.get(i) == Some(&h)).then_some(i)
    }

    /// Loads the fields a search reads before any entry's block (see `tree/warm.rs`).
    pub(super) fn touch(&self) {
        std::hint::black_box((self.entries.len(), self.shared, self.prefix[0], self.hints[0]));
    }

    /// The first position whose key is at least (`inclusive`) or greater than `key`.
    pub(super) fn position_from(&self, key: &[u8], inclusive: bool) -> usize {
        match self.find(key) {
            Ok(i) if inclusive => i,
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Puts `entry` in place of entry `at`, which has the same key (and so the same hint).
    pub(super) fn replace(&mut self, at: usize, entry: Entry) -> Entry {
        debug_assert!(self.entries[at] == entry);
        std::mem::replace(&mut self.entries[at], entry)
    }

    pub(super) fn remove(&mut self, at: usize) -> Entry {
        let n = self.len();
        self.hints.copy_within(at + 1..n, at);
        self.entries.remove(at)
    }

    /// Inserts `entry` at `at`, where [`Leaf::find`] said it goes. A full leaf splits first
    /// ([`split_point`], for a leaf that is the last of its level if `last_at_level`): the
    /// right part is returned.
    pub(super) fn insert(&mut self, at: usize, entry: Entry, last_at_level: bool) -> Option<Leaf> {
        if self.len() < LEAF_CAPACITY {
            self.insert_with_room(at, entry);
            return None;
        }
        // The split point among the `LEAF_CAPACITY + 1` entries there would be.
        let split = split_point(at, LEAF_CAPACITY, last_at_level);
        if at < split {
            let right = self.split_off(split - 1);
            self.insert_with_room(at, entry);
            Some(right)
        } else {
            let mut right = self.split_off(split);
            right.insert_with_room(at - split, entry);
            Some(right)
        }
    }

    fn insert_with_room(&mut self, at: usize, entry: Entry) {
        let key = entry.key_bytes();
        let shared = match self.entries.first() {
            None => key.len(),
            Some(first) => self.shared.min(common_prefix(first.key_bytes(), key)),
        };
        if self.entries.is_empty() {
            self.prefix = inline_prefix(key, shared);
        }
        let h = hint(key, shared);
        let n = self.len();
        self.entries.insert(at, entry);
        if shared != self.shared {
            self.shared = shared;
            self.rehint();
        } else {
            self.hints.copy_within(at..n, at + 1);
            self.hints[at] = h;
        }
    }

    /// Keeps entries `..at` and returns a leaf of the rest.
    pub(super) fn split_off(&mut self, at: usize) -> Leaf {
        let entries: SmallVec<[Entry; LEAF_CAPACITY]> = self.entries.drain(at..).collect();
        let mut hints = [0; LEAF_CAPACITY];
        hints[..entries.len()].copy_from_slice(&self.hints[at..at + entries.len()]);
        Leaf { entries, hints, shared: self.shared, prefix: self.prefix }
    }

    /// This leaf's entries followed by `right`'s, which all sort after them, if they fit one
    /// leaf; else two leaves of about equal size.
    pub(super) fn join(&self, right: &Leaf) -> (Leaf, Option<Leaf>) {
        let mut entries = self.entries.clone();
        let mut rest: SmallVec<[Entry; LEAF_CAPACITY]> = right.entries.iter().cloned().collect();
        let total = entries.len() + rest.len();
        if total <= LEAF_CAPACITY {
            entries.extend(rest);
            return (Leaf::from_entries(entries), None);
        }
        // Move entries across so that the left holds half (rounded down).
        let half = total / 2;
        match entries.len().cmp(&half) {
            Ordering::Less => {
                let moved = half - entries.len();
                entries.extend(rest.drain(..moved));
            }
            Ordering::Greater => {
                let moved: SmallVec<[Entry; LEAF_CAPACITY]> = entries.drain(half..).collect();
                rest.insert_many(0, moved);
            }
            Ordering::Equal => {}
        }
        (Leaf::from_entries(entries), Some(Leaf::from_entries(rest)))
    }
}

#[cfg(test)]
impl Leaf {
    /// Asserts this module's invariants.
    pub(super) fn check_hints(&self) {
        let Some(first) = self.entries.first() else { return };
        let prefix = &first.key_bytes()[..self.shared];
        let inline = self.shared.min(INLINE_PREFIX_BYTES);
        assert_eq!(self.prefix[..inline], prefix[..inline], "the inline prefix is the keys'");
        for (e, &h) in self.entries.iter().zip(&self.hints) {
            assert!(e.key_bytes().starts_with(prefix), "keys share the leaf's prefix");
            assert_eq!(h, hint(e.key_bytes(), self.shared));
        }
        for (i, e) in self.entries.iter().enumerate() {
            let candidate = self.candidate(e.key_bytes());
            if self.shared > INLINE_PREFIX_BYTES {
                assert_eq!(candidate, None, "no guess past the inline prefix");
                continue;
            }
            let j = candidate.expect("a key the leaf holds has a candidate");
            assert!(j <= i && self.hints[j] == self.hints[i], "the candidate has the key's hint");
            assert!(j == 0 || self.hints[j - 1] < self.hints[i], "the first with that hint");
        }
    }
}
