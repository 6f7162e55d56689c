//! The data map: every key with its value and revisions in ONE shared allocation.
//!
//! Memory per key is what bounds how large a state fits in RAM. A map of `String` keys to a
//! struct holding a `Vec<u8>` costs three allocations' worth of headers and 72 bytes inline in
//! the B-tree per key (which splits nodes in half when keys arrive in order, so the inline part
//! counts about twice): ~467 bytes per key for 16-byte keys and 256-byte values. One
//! reference-counted byte block per key behind a thin (8-byte) pointer, with the revisions as
//! varints, costs the key and value plus ~45 bytes: 317 bytes per key for 16-byte keys and
//! 256-byte values in the core's B+tree (331 in `imbl`'s, whose leaves filled in key order are
//! half empty), against 381 with `Arc<[u8]>` (a 16-byte pointer) and fixed-width revisions
//! (`scripts/bench-state-memory.sh`, glibc's allocator). The block's size matters to the byte:
//! glibc rounds each allocation up to 16 bytes with 8 of its own, so those keys' blocks take 304
//! bytes, not 336; jemalloc (`mokvd`'s allocator) has four size classes per doubling above 128
//! bytes and no header, so they take 320 there.
//! Cloning an entry is a reference-count increment, so the copy-on-write B-tree copies nodes,
//! never values, while a snapshot job holds an old version of the map.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;

use triomphe::ThinArc;

use super::tree::{IntoEntries, SortedBuilder, Tree};
use crate::kv::Versioned;

/// Appends `n` as an unsigned LEB128 varint (7 bits per byte, low bits first).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `delta` read as a signed (two's complement) number, mapped so that small magnitudes of
/// either sign are small: 0, -1, 1, -2 … → 0, 1, 2, 3 …
fn zigzag(delta: u64) -> u64 {
    (delta << 1) ^ ((delta as i64 >> 63) as u64)
}

/// The inverse of [`zigzag`].
fn unzigzag(n: u64) -> u64 {
    (n >> 1) ^ (n & 1).wrapping_neg()
}

/// The varint at the start of `bytes` and its length in bytes. Only reads blocks this module
/// wrote, so the varint is complete and at most 10 bytes long.
fn varint_at(bytes: &[u8]) -> (u64, usize) {
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (n, i + 1);
        }
    }
    unreachable!("entry blocks hold complete varints")
}

/// An entry's fields, borrowed from its block.
#[derive(Debug, Clone, Copy)]
pub struct EntryParts<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub create_index: u64,
    pub mod_index: u64,
    pub version: u64,
}

/// One key, its value and its revisions (etcd's `create_revision`, `mod_revision`, `version`),
/// immutable and cheap to clone (shared).
///
/// The block: the key's length (varint), the key, `create_index`, `mod_index - create_index`
/// (zigzag, so any pair of indices round-trips), `version` (varints; a delta because it is 0
/// until a key is rewritten, one byte instead of three or more), then the value to the end.
/// The key comes first so that comparisons, by far the most frequent access, decode one
/// varint.
///
/// Equality and order are those of the KEY alone (as `[u8]`), so the map can find an entry by
/// key bytes (`Borrow<[u8]>`); compare whole entries with [`Entry::same_contents`].
#[derive(Clone)]
pub struct Entry(ThinArc<(), u8>);

impl Entry {
    /// A block for `key` holding `value`.
    pub fn new(key: &str, value: &[u8], create_index: u64, mod_index: u64, version: u64) -> Self {
        Self::new_in(&mut Vec::new(), key, value, create_index, mod_index, version)
    }

    /// [`Entry::new`], putting the block together in `scratch` (whose contents are replaced)
    /// before copying it into the shared block: two memcpys beat one exact-size allocation
    /// filled byte by byte (chained iterators), measured on 1M keys, and a caller making many
    /// entries (a snapshot's decoder) reuses one buffer instead of allocating one per key.
    pub fn new_in(
        scratch: &mut Vec<u8>,
        key: &str,
        value: &[u8],
        create_index: u64,
        mod_index: u64,
        version: u64,
    ) -> Self {
        let block = scratch;
        block.clear();
        block.reserve(32 + key.len() + value.len());
        put_varint(block, key.len() as u64);
        block.extend_from_slice(key.as_bytes());
        put_varint(block, create_index);
        put_varint(block, zigzag(mod_index.wrapping_sub(create_index)));
        put_varint(block, version);
        block.extend_from_slice(value);
        Self(ThinArc::from_header_and_slice((), block))
    }

    #[inline]
    fn block(&self) -> &[u8] {
        &self.0.slice
    }

    /// Where the key starts and ends in the block.
    fn key_span(&self) -> (usize, usize) {
        let (len, at) = varint_at(self.block());
        (at, at + len as usize)
    }

    /// Every field, decoded once (the single accessors each decode the block's head).
    pub fn parts(&self) -> EntryParts<'_> {
        let block = self.block();
        let (key_start, key_end) = self.key_span();
        let mut at = key_end;
        let mut read = || {
            let (n, len) = varint_at(&block[at..]);
            at += len;
            n
        };
        let create_index = read();
        let mod_index = create_index.wrapping_add(unzigzag(read()));
        let version = read();
        EntryParts {
            key: &block[key_start..key_end],
            value: &block[at..],
            create_index,
            mod_index,
            version,
        }
    }

    /// Inlined, as is every step of a comparison: a search compares keys at every level of
    /// the map, and a call per step once cost the thread building a 1M-key map from a
    /// snapshot a third of its time (`perf`, release build).
    #[inline]
    pub fn key_bytes(&self) -> &[u8] {
        let block = self.block();
        // A key under 128 bytes (nearly every one) has a one-byte length: no varint loop on
        // the path of every comparison.
        if let Some(&len) = block.first() {
            if len < 0x80 {
                return &block[1..1 + usize::from(len)];
            }
        }
        let (start, end) = self.key_span();
        &block[start..end]
    }

    /// The key. Entries are only built from `&str` keys, so the bytes are UTF-8.
    pub fn key(&self) -> &str {
        std::str::from_utf8(self.key_bytes()).expect("entry keys are built from str")
    }

    pub fn value(&self) -> &[u8] {
        self.parts().value
    }

    /// Log index of the write that created the key (since its last delete).
    pub fn create_index(&self) -> u64 {
        self.parts().create_index
    }

    /// Log index of the latest write to the key.
    pub fn mod_index(&self) -> u64 {
        self.parts().mod_index
    }

    /// Writes since creation; 1 on create.
    pub fn version(&self) -> u64 {
        self.parts().version
    }

    /// An owned copy of the value and revisions (for answers that leave the state machine).
    pub fn to_versioned(&self) -> Versioned {
        let p = self.parts();
        Versioned {
            value: p.value.to_vec(),
            create_index: p.create_index,
            mod_index: p.mod_index,
            version: p.version,
        }
    }

    /// Whether both hold the same key, value and revisions.
    pub fn same_contents(&self, other: &Entry) -> bool {
        self.block() == other.block()
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key_bytes()))
            .field("value_bytes", &self.value().len())
            .field("create_index", &self.create_index())
            .field("mod_index", &self.mod_index())
            .field("version", &self.version())
            .finish()
    }
}

impl PartialEq for Entry {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.key_bytes() == other.key_bytes()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        compare_keys(self.key_bytes(), other.key_bytes())
    }
}

/// Byte order of `a` and `b` (exactly `<[u8]>::cmp`), eight bytes at a time for short keys:
/// inserting and looking up entries compares keys a few dozen times per operation, and for
/// keys this short a call into `memcmp` costs more than the comparison (building a 1M-key map
/// from a snapshot spent half its time in `Entry::cmp` and `memcmp`).
#[inline]
pub(super) fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    const INLINE_BYTES: usize = 64;
    let common = a.len().min(b.len());
    if common > INLINE_BYTES {
        return a.cmp(b);
    }
    let (mut a_rest, mut b_rest) = (&a[..common], &b[..common]);
    while let (Some((x, a_next)), Some((y, b_next))) =
        (a_rest.split_first_chunk::<8>(), b_rest.split_first_chunk::<8>())
    {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
        (a_rest, b_rest) = (a_next, b_next);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl Borrow<[u8]> for Entry {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.key_bytes()
    }
}

/// The data: a persistent B+tree of entries in key (byte) order ([`super::tree`]), so cloning
/// the state (a snapshot job) is O(1) and later writes copy only the nodes they change while
/// the clone is alive. `str` order is byte order, so lookups by `&str` go through the key's
/// bytes. Public for the benchmarks of its memory (`examples/state_memory.rs`); the state
/// machine owns the one a node serves from.
#[derive(Clone, Default)]
pub struct DataMap(Tree);

impl DataMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.0.get(key.as_bytes())
    }

    /// Brings the paths to a few keys (`WARM_GROUP_KEYS` at most) into the CPU's caches at once,
    /// before they are looked up or written one by one (`tree/warm.rs`).
    pub(crate) fn warm(&self, keys: &[&[u8]]) {
        self.0.warm(keys);
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.0.get(key.as_bytes()).is_some()
    }

    /// Inserts `entry`, replacing (and returning) the entry with the same key.
    pub fn insert(&mut self, entry: Entry) -> Option<Entry> {
        self.0.insert(entry)
    }

    /// Puts `make(the entry of key, if any)` in the place of `key` with one descent of the
    /// tree, returning the entry it replaces. `make` must return an entry of `key`.
    pub(crate) fn upsert(
        &mut self,
        key: &str,
        make: impl FnOnce(Option<&Entry>) -> Entry,
    ) -> Option<Entry> {
        self.0.upsert(key.as_bytes(), make)
    }

    /// The map of the entries a builder was given (in ascending key order).
    pub(crate) fn from_sorted(builder: SortedBuilder) -> Self {
        Self(builder.finish())
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry> {
        self.0.remove(key.as_bytes())
    }

    /// Every entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.0.iter()
    }

    /// The entries from `lower` on, in key order.
    pub(crate) fn starting_at<'a>(&'a self, lower: Bound<&str>) -> impl Iterator<Item = &'a Entry> {
        let lower: Bound<&[u8]> = match lower {
            Bound::Included(k) => Bound::Included(k.as_bytes()),
            Bound::Excluded(k) => Bound::Excluded(k.as_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.0.starting_at(lower)
    }

    /// The entries in key order, taking the map.
    pub(crate) fn into_entries(self) -> IntoEntries {
        self.0.into_entries()
    }
}

impl FromIterator<Entry> for DataMap {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> Self {
        let mut map = Self::new();
        for entry in entries {
            map.insert(entry);
        }
        map
    }
}

impl PartialEq for DataMap {
    /// Equal keys with equal values and revisions (not only equal keys, which is what the
    /// entries' own equality compares).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a.same_contents(b))
    }
}

impl Eq for DataMap {}

impl std::fmt::Debug for DataMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_entry_gives_back_what_it_was_built_from() {
        let e = Entry::new("k€y", b"value", 3, 7, 2);
        assert_eq!(e.key(), "k€y");
        assert_eq!(e.value(), b"value");
        assert_eq!((e.create_index(), e.mod_index(), e.version()), (3, 7, 2));
        let empty = Entry::new("", b"", 0, 0, 1);
        assert_eq!((empty.key(), empty.value()), ("", &b""[..]));
    }

    #[test]
    fn revisions_round_trip_at_the_extremes() {
        for (create, modified, version) in [
            (0, 0, 0),
            (u64::MAX, u64::MAX, u64::MAX),
            (u64::MAX, 0, 1),
            (5, u64::MAX, 2),
            (9, 3, 1),
        ] {
            let e = Entry::new("k", b"v", create, modified, version);
            assert_eq!((e.create_index(), e.mod_index(), e.version()), (create, modified, version));
            assert_eq!((e.key(), e.value()), ("k", &b"v"[..]));
        }
    }

    #[test]
    fn map_equality_compares_values_and_revisions_not_only_keys() {
        let a: DataMap = [Entry::new("a", b"1", 1, 1, 1)].into_iter().collect();
        let b: DataMap = [Entry::new("a", b"2", 1, 1, 1)].into_iter().collect();
        let c: DataMap = [Entry::new("a", b"1", 1, 2, 1)].into_iter().collect();
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    proptest! {
        #[test]
        fn keys_compare_in_byte_order(
            prefix in proptest::collection::vec(any::<u8>(), 0..80),
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            // A shared prefix of any length (under, at and over the inline bound), then
            // anything: every length and first difference.
            let a = [prefix.as_slice(), &a].concat();
            let b = [prefix.as_slice(), &b].concat();
            prop_assert_eq!(compare_keys(&a, &b), a.cmp(&b));
            prop_assert_eq!(compare_keys(&b, &a), b.cmp(&a));
            prop_assert_eq!(compare_keys(&a, &a), std::cmp::Ordering::Equal);
        }

        /// Any key, value and revisions come back as they went in.
        #[test]
        fn entries_round_trip(
            key in ".{0,200}",
            value in proptest::collection::vec(any::<u8>(), 0..300),
            create in any::<u64>(),
            modified in any::<u64>(),
            version in any::<u64>(),
        ) {
            let e = Entry::new(&key, &value, create, modified, version);
            prop_assert_eq!(e.key(), key.as_str());
            prop_assert_eq!(e.value(), value.as_slice());
            let v = e.to_versioned();
            prop_assert_eq!(
                (v.create_index, v.mod_index, v.version, v.value.as_slice()),
                (create, modified, version, value.as_slice())
            );
        }

        /// The map orders and finds entries as a `BTreeMap<String, _>` does.
        #[test]
        fn map_agrees_with_a_btreemap(
            ops in proptest::collection::vec(("[a-c€]{0,3}", proptest::option::of(any::<u8>())), 0..64),
            probe in "[a-c€]{0,3}",
        ) {
            let mut map = DataMap::new();
            let mut model = std::collections::BTreeMap::new();
            for (i, (key, value)) in ops.iter().enumerate() {
                match value {
                    Some(v) => {
                        map.insert(Entry::new(key, &[*v], 1, i as u64 + 1, 1));
                        model.insert(key.clone(), *v);
                    }
                    None => {
                        prop_assert_eq!(map.remove(key).is_some(), model.remove(key).is_some());
                    }
                }
            }
            let got: Vec<(String, u8)> =
                map.iter().map(|e| (e.key().to_owned(), e.value()[0])).collect();
            let want: Vec<(String, u8)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            prop_assert_eq!(got, want);
            let from: Vec<&str> = map.starting_at(Bound::Excluded(&probe)).map(Entry::key).collect();
            let want_from: Vec<&str> = model
                .range::<str, _>((Bound::Excluded(probe.as_str()), Bound::Unbounded))
                .map(|(k, _)| k.as_str())
                .collect();
            prop_assert_eq!(from, want_from);
            prop_assert_eq!(map.get(&probe).map(|e| e.value()[0]), model.get(&probe).copied());
        }
    }
}
