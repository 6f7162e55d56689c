//! The replicated key-value state machine.
//!
//! Every replica applies the same committed proposals in the same order and must end in the
//! same state, byte for byte: no clock, no randomness, ordered maps only. Revisions are Raft
//! log indices, so a revision names the write that produced it on every replica.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::codec::{DecodeError, Reader, Writer};
use crate::command::{Command, Condition, KeyRevisions, Proposal, WriteOutcome};
use crate::error::{Error, QuotaExceeded};
use crate::lease::{LeaseError, Leases};
use crate::members::{Conf, MemberInfo, MemberTable};
use crate::session::{SessionLimits, Sessions};
use crate::txn::TxnOpResult;

mod entry;
mod tree;
mod txn;
use crate::watch::WatchEvent;
pub use entry::DataMap;
pub use entry::{Entry, EntryParts};
pub(crate) use tree::{IntoEntries, SortedBuilder, WARM_GROUP_KEYS};

/// What a key costs towards [`StateMachine::state_bytes`] besides its key and value bytes: its
/// fixed part in the snapshot encoding (two length prefixes and three u64s).
const KEY_OVERHEAD_BYTES: u64 = 4 + 4 + 8 * 3;

/// What one [`RangeItem`] costs towards a page's byte bound besides its key and value: the
/// fixed part of its gRPC encoding (three varint revisions, field tags and lengths), rounded up.
const RANGE_ITEM_OVERHEAD_BYTES: usize = 48;

/// The bytes `key` holding `value` adds to [`StateMachine::state_bytes`].
fn key_state_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + KEY_OVERHEAD_BYTES
}

/// A stored value with the log indices that explain it (etcd's `create_revision`,
/// `mod_revision`, `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    /// Log index of the write that created the key (since its last delete).
    pub create_index: u64,
    /// Log index of the latest write to the key.
    pub mod_index: u64,
    /// Writes since creation; 1 on create.
    pub version: u64,
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeQuery {
    /// Only keys starting with this ("" = every key).
    pub prefix: String,
    /// Only keys at or after this.
    pub start_key: String,
    /// Page size; the caller caps it. 0 is read as 1 so a page always makes progress.
    pub limit: usize,
    /// `next_page_token` of the previous page, or "" for the first page.
    pub page_token: String,
    /// Leave values out (they may be large; listing keys is common).
    pub keys_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeItem {
    pub key: String,
    /// Empty when the query asked for keys only.
    pub value: Vec<u8>,
    pub create_index: u64,
    pub mod_index: u64,
    pub version: u64,
}

impl RangeItem {
    /// `e` as a listed item, its value left out unless `with_value`.
    pub(crate) fn of(e: &Entry, with_value: bool) -> Self {
        let p = e.parts();
        RangeItem {
            key: e.key().to_owned(),
            value: if with_value { p.value.to_vec() } else { Vec::new() },
            create_index: p.create_index,
            mod_index: p.mod_index,
            version: p.version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangePage {
    pub items: Vec<RangeItem>,
    /// Pass back as `page_token` for the next page; "" when no more keys match.
    pub next_page_token: String,
}

/// A page token that this build did not issue for this prefix. The message never echoes the
/// token: it may contain key bytes the caller is not allowed to see in logs.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("invalid page token")]
pub struct InvalidPageToken;

/// Version prefix of page tokens, so the format can change without misreading old tokens.
const PAGE_TOKEN_PREFIX: &str = "v1.";

fn encode_page_token(last_key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(PAGE_TOKEN_PREFIX.len() + 2 * last_key.len());
    s.push_str(PAGE_TOKEN_PREFIX);
    for b in last_key.bytes() {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn decode_page_token(token: &str) -> Result<String, InvalidPageToken> {
    fn nibble(c: u8) -> Result<u8, InvalidPageToken> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(InvalidPageToken),
        }
    }
    let hex = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or(InvalidPageToken)?.as_bytes();
    if hex.len() % 2 != 0 {
        return Err(InvalidPageToken);
    }
    let bytes = hex
        .chunks_exact(2)
        .map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect::<Result<Vec<u8>, InvalidPageToken>>()?;
    String::from_utf8(bytes).map_err(|_| InvalidPageToken)
}

/// The keys and their values, changed only through [`Keys::put`] and [`Keys::remove`], which
/// record one [`WatchEvent`] per change (a write path cannot change data without its event).
/// Reads go through `Deref` to the map.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keys {
    map: DataMap,
    /// [`key_state_bytes`] summed over `map`: kept by the same two methods that change the
    /// map (derived from it, so not encoded and not compared).
    state_bytes: u64,
    /// Changes applied since the node last took them ([`StateMachine::take_events`]); empty
    /// between entries, so not part of the state (not encoded, not compared).
    events: Vec<WatchEvent>,
    /// The leases and the keys attached to them. Here so that every write detaches its key:
    /// [`Keys::put`] without a lease and [`Keys::remove`] both do.
    leases: Leases,
}

impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map && self.leases == other.leases
    }
}

impl Eq for Keys {}

impl std::ops::Deref for Keys {
    type Target = DataMap;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Keys {
    /// `map`, whose [`key_state_bytes`] add up to `state_bytes`.
    fn from_map(map: DataMap, state_bytes: u64) -> Self {
        debug_assert_eq!(
            state_bytes,
            map.iter().map(|e| key_state_bytes(e.key(), e.value())).sum::<u64>()
        );
        Self { map, state_bytes, events: Vec::new(), leases: Leases::default() }
    }

    /// [`Keys::put`], then attaches `key` to lease `lease` (which must exist).
    pub(crate) fn put_leased(&mut self, index: u64, key: &str, value: &[u8], lease: u64) {
        self.put(index, key, value);
        self.leases.attach(key, lease);
    }

    /// Sets `key` to `value` at log index `index` (creating it at version 1), detached from any
    /// lease.
    pub(crate) fn put(&mut self, index: u64, key: &str, value: &[u8]) {
        self.leases.detach(key);
        let mut new_entry = None;
        let prev = self.map.upsert(key, |prev| {
            let (create_index, version) = match prev {
                Some(e) => (e.create_index(), e.version().saturating_add(1)),
                None => (index, 1),
            };
            new_entry.insert(Entry::new(key, value, create_index, index, version)).clone()
        });
        let entry = new_entry.expect("upsert makes the entry");
        let prev_bytes = prev.as_ref().map_or(0, |e| key_state_bytes(key, e.value()));
        self.state_bytes = self.state_bytes - prev_bytes + key_state_bytes(key, value);
        self.events.push(WatchEvent::put(index, entry, prev));
    }

    /// Deletes `key` at log index `index`; whether it existed. Deleting an absent key changes
    /// nothing and records no event.
    pub(crate) fn remove(&mut self, index: u64, key: &str) -> bool {
        let Some(prev) = self.map.remove(key) else { return false };
        self.state_bytes -= key_state_bytes(key, prev.value());
        self.leases.detach(key);
        self.events.push(WatchEvent::delete(index, prev));
        true
    }
}

/// The whole replicated state: data, client sessions, membership and how far the log has been
/// applied. A snapshot is exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMachine {
    data: Keys,
    sessions: Sessions,
    members: MemberTable,
    conf: Conf,
    applied_index: u64,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

impl StateMachine {
    pub(crate) fn new(limits: SessionLimits) -> Self {
        Self {
            data: Keys::default(),
            sessions: Sessions::new(limits),
            members: MemberTable::new(),
            conf: Conf::default(),
            applied_index: 0,
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.sessions.limits()
    }

    /// Applies one committed proposal at raft log `index`. Deterministic. Also advances
    /// applied_index.
    ///
    /// A session error or a write over the proposal's state quota is a normal outcome (the
    /// entry is still consumed): the client is told, and every replica refuses the same way.
    /// The quota is checked after deduplication, so a retry of a write that was applied gets
    /// its first answer even once the state is full.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, index: u64, proposal: &Proposal) -> Result<WriteOutcome, Error> {
        self.apply_with_reads(index, proposal, usize::MAX).0
    }

    /// Brings the map's paths to `keys` (the keys of the next few entries to apply) into the
    /// CPU's caches at once, so that applying them one by one finds them there.
    pub(crate) fn warm_keys(&self, keys: &[&[u8]]) {
        self.data.map.warm(keys);
    }

    /// [`StateMachine::apply`], also returning the per-operation results of a transaction
    /// when it was applied by this call (`None` for other commands, and for a retry answered
    /// from its session). `max_read_bytes` bounds the keys and values each range of a
    /// transaction reads (at least one item); reads do not change the state, so it need not
    /// be equal on every replica.
    pub(crate) fn apply_with_reads(
        &mut self,
        index: u64,
        proposal: &Proposal,
        max_read_bytes: usize,
    ) -> (Result<WriteOutcome, Error>, Option<Vec<TxnOpResult>>) {
        self.advance_applied(index);
        let data = &mut self.data;
        let command = &proposal.command;
        let mut reads = None;
        if let Command::RegisterSession { owner, max_sessions_per_identity } = command {
            let registered = self.sessions.register(
                index,
                proposal.proposed_at_ms,
                owner,
                *max_sessions_per_identity,
            );
            let outcome = registered
                .map(|client_id| WriteOutcome::SessionRegistered { client_id })
                .map_err(Error::from);
            return (outcome, None);
        }
        let outcome =
            self.sessions.execute(proposal.proposed_at_ms, proposal.session.as_ref(), || {
                match command {
                    Command::Txn(t) => {
                        let applied =
                            txn::apply(data, index, t, proposal.quota_state_bytes, max_read_bytes)?;
                        reads = Some(applied.results);
                        return Ok(applied.outcome);
                    }
                    Command::LeaseGrant { id, ttl_ms, max_leases } => {
                        let id = data.leases.grant(index, *id, *ttl_ms, *max_leases)?;
                        return Ok(WriteOutcome::LeaseGranted {
                            id,
                            ttl_ms: *ttl_ms,
                            revision: index,
                        });
                    }
                    Command::LeaseRevoke { id } | Command::LeaseExpire { id } => {
                        let Some(keys) = data.leases.remove(*id) else {
                            if matches!(command, Command::LeaseExpire { .. }) {
                                return Ok(WriteOutcome::LeaseRevoked {
                                    existed: false,
                                    revision: index,
                                });
                            }
                            return Err(LeaseError::NotFound.into());
                        };
                        // Every attached key goes at this one entry: one revision for all.
                        for key in &keys {
                            data.remove(index, key);
                        }
                        return Ok(WriteOutcome::LeaseRevoked { existed: true, revision: index });
                    }
                    Command::SetLeased { lease, .. } => {
                        if !data.leases.contains(*lease) {
                            return Err(LeaseError::NotFound.into());
                        }
                    }
                    Command::Set { .. }
                    | Command::Delete { .. }
                    | Command::SetIf { .. }
                    | Command::DeleteIf { .. } => {}
                    Command::RegisterSession { .. } => {
                        unreachable!("a registration is applied above")
                    }
                }
                if let Some(quota_bytes) = proposal.quota_state_bytes {
                    let growth_bytes = growth_bytes(data, command);
                    let state_bytes = data.state_bytes;
                    if growth_bytes > 0 && state_bytes.saturating_add(growth_bytes) > quota_bytes {
                        return Err(QuotaExceeded { state_bytes, growth_bytes, quota_bytes }.into());
                    }
                }
                Ok(apply_command(data, index, command))
            });
        (outcome, reads)
    }

    /// Advances applied_index for entries that are not proposals (empty entries, conf
    /// changes).
    pub(crate) fn skip(&mut self, index: u64) {
        self.advance_applied(index);
    }

    /// The changes applied since the last call, in order (one per key a write changed).
    pub(crate) fn take_events(&mut self) -> std::vec::Drain<'_, WatchEvent> {
        self.data.events.drain(..)
    }

    fn advance_applied(&mut self, index: u64) {
        debug_assert!(
            index > self.applied_index,
            "log index {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.data.get(key)
    }

    /// The granted leases and their attached keys.
    pub(crate) fn leases(&self) -> &Leases {
        &self.data.leases
    }

    /// How many leases are granted (metrics, the simulator's checkers).
    pub fn lease_count(&self) -> usize {
        self.data.leases.len()
    }

    /// The TTL lease `id` was granted with, if it exists.
    pub fn lease_ttl_ms(&self, id: u64) -> Option<u64> {
        self.data.leases.get(id).map(|l| l.ttl_ms)
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &str) -> Option<u64> {
        self.data.leases.lease_of(key)
    }

    /// Bytes of the data: every key and value plus a fixed cost per key (its size in a
    /// snapshot). What the state quota bounds.
    pub fn state_bytes(&self) -> u64 {
        self.data.state_bytes
    }

    /// One page of keys in ascending byte order: at most `q.limit` items and, past the first,
    /// at most `max_bytes` of keys and values (see `RANGE_ITEM_OVERHEAD_BYTES`).
    pub(crate) fn range(
        &self,
        q: &RangeQuery,
        max_bytes: usize,
    ) -> Result<RangePage, InvalidPageToken> {
        let first = q.prefix.as_str().max(q.start_key.as_str());
        let last = if q.page_token.is_empty() {
            None
        } else {
            let last = decode_page_token(&q.page_token)?;
            if !last.starts_with(&q.prefix) {
                return Err(InvalidPageToken);
            }
            Some(last)
        };
        // A token continues strictly after the previous page, unless the caller moved
        // `start_key` past it.
        let lower = match &last {
            Some(last) if last.as_str() >= first => Bound::Excluded(last.as_str()),
            _ => Bound::Included(first),
        };
        let limit = q.limit.max(1);
        let matching = self
            .data
            .starting_at(lower)
            .take_while(|e| e.key_bytes().starts_with(q.prefix.as_bytes()));
        let mut items: Vec<RangeItem> = Vec::new();
        let mut page_bytes = 0usize;
        let mut more = false;
        for e in matching {
            let value: &[u8] = if q.keys_only { &[] } else { e.value() };
            let item_bytes = e.key_bytes().len() + value.len() + RANGE_ITEM_OVERHEAD_BYTES;
            if items.len() == limit
                || (!items.is_empty() && page_bytes.saturating_add(item_bytes) > max_bytes)
            {
                more = true;
                break;
            }
            page_bytes += item_bytes;
            items.push(RangeItem::of(e, !q.keys_only));
        }
        let next_page_token = match items.last() {
            Some(last) if more => encode_page_token(&last.key),
            _ => String::new(),
        };
        Ok(RangePage { items, next_page_token })
    }

    /// The keys (for a backup copy).
    pub(crate) fn data(&self) -> &DataMap {
        &self.data
    }

    /// A state holding `data` as of log index `applied_index`, with no sessions, members or
    /// configuration yet (a restored backup). Every revision in `data` must be at most
    /// `applied_index` (a decoded backup guarantees it).
    pub(crate) fn from_data(
        limits: SessionLimits,
        data: BTreeMap<String, Versioned>,
        applied_index: u64,
    ) -> Self {
        debug_assert!(data.values().all(|v| v.mod_index <= applied_index));
        let state_bytes = data.iter().map(|(k, v)| key_state_bytes(k, &v.value)).sum();
        let data = Keys::from_map(
            data.iter()
                .map(|(k, v)| Entry::new(k, &v.value, v.create_index, v.mod_index, v.version))
                .collect(),
            state_bytes,
        );
        Self { data, applied_index, ..Self::new(limits) }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Client sessions held (metrics).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    #[cfg(test)]
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Largest `proposed_at_ms` applied so far: the state machine's only clock.
    pub fn cluster_time_ms(&self) -> u64 {
        self.sessions.cluster_time_ms()
    }

    pub fn members(&self) -> &MemberTable {
        &self.members
    }

    pub(crate) fn members_mut(&mut self) -> &mut MemberTable {
        &mut self.members
    }

    pub fn conf(&self) -> &Conf {
        &self.conf
    }

    pub(crate) fn set_conf(&mut self, conf: Conf) {
        self.conf = conf;
    }

    /// Deterministic digest of the whole state (data, sessions, members, conf, applied
    /// index) for the simulator's "equal state at equal applied index" check. FNV-1a 64 over
    /// the snapshot encoding, which is canonical, so equal digests mean equal states (up to
    /// hash collisions).
    pub fn digest(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut w = Writer::new();
        self.encode_to(&mut w);
        w.finish().iter().fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
    }

    /// The canonical encoding used by snapshots and [`StateMachine::digest`].
    pub(crate) fn encode_to(&self, w: &mut Writer) {
        self.encode_format_to(w, crate::snapshot::StateFormat::CURRENT);
    }

    /// [`StateMachine::encode_to`] in the state encoding of snapshot format `format` (older
    /// formats are written only to show they still decode; they leave out what they cannot
    /// hold: leases before format 2, registered sessions before format 3).
    pub(crate) fn encode_format_to(&self, w: &mut Writer, format: crate::snapshot::StateFormat) {
        self.encode_head_to(w, format);
        for e in self.data.iter() {
            encode_key_to(w, e);
        }
        self.encode_tail_to(w, format);
    }

    /// Everything [`StateMachine::encode_format_to`] writes before the keys: applied index,
    /// configuration, members, sessions and the key count. The keys that follow it are exactly
    /// [`StateMachine::state_bytes`] long; [`StateMachine::encode_tail_to`] comes after them.
    pub(crate) fn encode_head_to(&self, w: &mut Writer, format: crate::snapshot::StateFormat) {
        w.put_u64(self.applied_index);
        self.conf.encode_to(w);
        w.put_u64(self.members.len() as u64);
        for (id, info) in &self.members {
            w.put_u64(*id);
            info.encode_to(w);
        }
        if format.registered_sessions {
            self.sessions.encode_to(w);
        } else {
            self.sessions.encode_legacy_to(w);
        }
        w.put_u64(self.data.len() as u64);
    }

    /// Everything [`StateMachine::encode_format_to`] writes after the keys: the leases (from
    /// format 2 on).
    pub(crate) fn encode_tail_to(&self, w: &mut Writer, format: crate::snapshot::StateFormat) {
        if format.leases {
            self.data.leases.encode_to(w);
        }
    }

    /// Encodes keys in order ([`encode_key_to`]) into `w`, from the first key after `after`
    /// (from the first key when `None`), until `w` holds at least `until_bytes` bytes. Returns
    /// the last key written if it stopped because `w` is full, `None` once the keys ran out.
    /// Reads the shared map in place: a snapshot job's clone is never copied.
    pub(crate) fn encode_keys_after(
        &self,
        after: Option<&str>,
        w: &mut Writer,
        until_bytes: usize,
    ) -> Option<String> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        for e in self.data.starting_at(lower) {
            encode_key_to(w, e);
            if w.len() >= until_bytes {
                return Some(e.key().to_owned());
            }
        }
        None
    }

    /// Reads what [`StateMachine::encode_to`] wrote. Rejects encodings it could not have
    /// produced (unsorted keys, impossible versions) so a decoded state upholds the same
    /// invariants as an applied one.
    #[cfg(test)]
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_versioned(r, crate::snapshot::StateFormat::CURRENT)
    }

    /// [`StateMachine::decode_from`] for the state encoding of an older snapshot format:
    /// without leases (format 1) and with sessions from before registration (formats 1 and 2,
    /// see `Sessions::decode_from`).
    pub(crate) fn decode_versioned(
        r: &mut Reader<'_>,
        format: crate::snapshot::StateFormat,
    ) -> Result<Self, DecodeError> {
        let head = StateHead::decode_from(r, format)?;
        // Two length prefixes and three u64s per key: a count the input cannot hold is refused
        // before anything is allocated.
        if head.key_count > (r.remaining() / KEY_MIN_BYTES) as u64 {
            return Err(DecodeError::Truncated);
        }
        let mut state = StateBuilder::new(head);
        while state.keys_left() > 0 {
            state.decode_key(r)?;
        }
        state.finish(r, format)
    }
}

/// The least bytes one encoded key takes ([`encode_key_to`]).
pub(crate) const KEY_MIN_BYTES: usize = 4 + 4 + 8 * 3;

/// What [`StateMachine::encode_head_to`] writes: everything before the keys.
#[derive(Debug)]
pub(crate) struct StateHead {
    applied_index: u64,
    conf: Conf,
    members: MemberTable,
    sessions: Sessions,
    /// Keys that follow (not checked against the input: the caller does).
    pub(crate) key_count: u64,
}

impl StateHead {
    pub(crate) fn decode_from(
        r: &mut Reader<'_>,
        format: crate::snapshot::StateFormat,
    ) -> Result<Self, DecodeError> {
        let applied_index = r.get_u64()?;
        let conf = Conf::decode_from(r)?;
        // id + MemberInfo (id, three length prefixes, bool).
        let n = r.get_count(8 + 8 + 4 * 3 + 1)?;
        let mut members = MemberTable::new();
        for _ in 0..n {
            let id = r.get_u64()?;
            if members.last_key_value().is_some_and(|(prev, _)| *prev >= id) {
                return Err(DecodeError::Invalid("member ids not ascending"));
            }
            members.insert(id, MemberInfo::decode_from(r)?);
        }
        let sessions = Sessions::decode_from(r, format.registered_sessions)?;
        let key_count = r.get_u64()?;
        Ok(Self { applied_index, conf, members, sessions, key_count })
    }
}

/// A state decoded key by key after its [`StateHead`] (the streaming snapshot decoder feeds it
/// one key at a time): keys must ascend and have possible versions, so a decoded state upholds
/// the same invariants as an applied one.
#[derive(Debug)]
pub(crate) struct StateBuilder {
    head: StateHead,
    keys: KeySink,
    /// The last key decoded, once `keys_decoded > 0` (a copy, so that the decoding thread
    /// never touches the reference count of an entry another thread is inserting): the next
    /// one must sort after it.
    last_key: Vec<u8>,
    /// Where each entry's block is put together (one buffer for all, not one per key).
    scratch: Vec<u8>,
    keys_decoded: u64,
    state_bytes: u64,
}

/// Where a [`StateBuilder`] puts the keys it decodes.
#[derive(Debug)]
enum KeySink {
    /// Into the leaves of a map built bottom-up as they come.
    Sorted(SortedBuilder),
    /// Into a batch the caller takes ([`StateBuilder::take_batch`]) and inserts elsewhere
    /// (a [`SnapshotKeys`]), so that decoding and inserting can run on two threads.
    Batch(Vec<Entry>),
}

impl StateBuilder {
    pub(crate) fn new(head: StateHead) -> Self {
        Self::with_sink(head, KeySink::Sorted(SortedBuilder::default()))
    }

    /// A builder whose keys are handed out in batches ([`StateBuilder::take_batch`]) instead
    /// of inserted; finish it with [`StateBuilder::finish_with`].
    pub(crate) fn handing_out_keys(head: StateHead) -> Self {
        Self::with_sink(head, KeySink::Batch(Vec::new()))
    }

    fn with_sink(head: StateHead, keys: KeySink) -> Self {
        Self {
            head,
            keys,
            last_key: Vec::new(),
            scratch: Vec::new(),
            keys_decoded: 0,
            state_bytes: 0,
        }
    }

    /// Keys still to decode.
    pub(crate) fn keys_left(&self) -> u64 {
        self.head.key_count - self.keys_decoded
    }

    /// Decodes the next key. On an error nothing changed (a truncated key can be retried
    /// from the same position with more input).
    pub(crate) fn decode_key(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let key = r.get_str()?;
        let value = r.get_bytes()?;
        let (create_index, mod_index, version) = (r.get_u64()?, r.get_u64()?, r.get_u64()?);
        if self.keys_decoded > 0 && self.last_key.as_slice() >= key.as_bytes() {
            return Err(DecodeError::Invalid("keys not ascending"));
        }
        if version == 0 || create_index > mod_index || mod_index > self.head.applied_index {
            return Err(DecodeError::Invalid("key version"));
        }
        self.state_bytes += key_state_bytes(key, value);
        let entry = Entry::new_in(&mut self.scratch, key, value, create_index, mod_index, version);
        match &mut self.keys {
            KeySink::Sorted(builder) => builder.push(entry),
            KeySink::Batch(batch) => batch.push(entry),
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key.as_bytes());
        self.keys_decoded += 1;
        Ok(())
    }

    /// The keys decoded since the last call, in ascending order (none for a builder that
    /// inserts them itself).
    pub(crate) fn take_batch(&mut self) -> Option<KeyBatch> {
        match &mut self.keys {
            KeySink::Batch(batch) if !batch.is_empty() => Some(KeyBatch(std::mem::take(batch))),
            _ => None,
        }
    }

    /// Decodes what follows the keys ([`StateMachine::encode_tail_to`]) and returns the state.
    /// A builder handing out keys must be finished with [`StateBuilder::finish_with`].
    pub(crate) fn finish(
        self,
        r: &mut Reader<'_>,
        format: crate::snapshot::StateFormat,
    ) -> Result<StateMachine, DecodeError> {
        self.finish_with(SnapshotKeys::default(), r, format)
    }

    /// [`StateBuilder::finish`] for a builder handing out its keys: `keys` holds every batch
    /// taken from it (the batch not taken yet is added here).
    pub(crate) fn finish_with(
        self,
        keys: SnapshotKeys,
        r: &mut Reader<'_>,
        format: crate::snapshot::StateFormat,
    ) -> Result<StateMachine, DecodeError> {
        let StateBuilder { head, keys: sink, state_bytes, .. } = self;
        let mut builder = keys.builder;
        match sink {
            KeySink::Sorted(own) if builder.len() == 0 => builder = own,
            KeySink::Sorted(_) => return Err(DecodeError::Invalid("keys inserted twice")),
            KeySink::Batch(rest) => rest.into_iter().for_each(|e| builder.push(e)),
        }
        if builder.len() as u64 != head.key_count {
            return Err(DecodeError::Invalid("decoded keys missing from the map"));
        }
        let map = DataMap::from_sorted(builder);
        let mut data = Keys::from_map(map, state_bytes);
        if format.leases {
            data.leases = Leases::decode_from(r, |key| data.map.contains_key(key))?;
        }
        Ok(StateMachine {
            data,
            sessions: head.sessions,
            members: head.members,
            conf: head.conf,
            applied_index: head.applied_index,
        })
    }
}

/// Keys a [`crate::SnapshotDecoder`] handing out its keys decoded, in ascending order, for a
/// [`SnapshotKeys`].
#[derive(Debug)]
pub struct KeyBatch(Vec<Entry>);

impl KeyBatch {
    /// Never true for a batch a decoder handed out.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The data map of a snapshot being decoded, built from the [`KeyBatch`]es of ONE
/// [`crate::SnapshotDecoder`] in the order it handed them out, on any thread: the entries
/// fill the map's leaves as they come (hinting each leaf reads its keys), and the branches
/// over them are built when the decoder finishes.
#[derive(Debug, Default)]
pub struct SnapshotKeys {
    builder: SortedBuilder,
}

impl SnapshotKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts the next batch.
    pub fn insert(&mut self, batch: KeyBatch) {
        batch.0.into_iter().for_each(|e| self.builder.push(e));
    }
}

/// One key in the canonical encoding: [`key_state_bytes`] long.
pub(crate) fn encode_key_to(w: &mut Writer, e: &Entry) {
    let e = e.parts();
    w.put_bytes(e.key);
    w.put_bytes(e.value);
    w.put_u64(e.create_index);
    w.put_u64(e.mod_index);
    w.put_u64(e.version);
}

/// By how much applying `command` would grow [`StateMachine::state_bytes`] (0 if it would not;
/// a conditional write whose condition does not hold writes nothing).
fn growth_bytes(data: &DataMap, command: &Command) -> u64 {
    let set_growth = |key: &str, value: &[u8]| {
        let before = data.get(key).map_or(0, |v| key_state_bytes(key, v.value()));
        key_state_bytes(key, value).saturating_sub(before)
    };
    match command {
        Command::Set { key, value } => set_growth(key, value),
        Command::SetIf { key, value, condition } if condition.holds(data.get(key.as_str())) => {
            set_growth(key, value)
        }
        Command::SetLeased { key, value, condition, .. }
            if condition.as_ref().is_none_or(|c| c.holds(data.get(key.as_str()))) =>
        {
            set_growth(key, value)
        }
        Command::SetIf { .. }
        | Command::SetLeased { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. }
        | Command::LeaseExpire { .. }
        | Command::Delete { .. }
        | Command::DeleteIf { .. }
        | Command::Txn(_)
        | Command::RegisterSession { .. } => 0,
    }
}

fn apply_command(data: &mut Keys, index: u64, command: &Command) -> WriteOutcome {
    match command {
        Command::Set { key, value } => {
            data.put(index, key, value);
            WriteOutcome::Set { revision: index }
        }
        Command::Delete { key } => {
            WriteOutcome::Deleted { existed: data.remove(index, key), revision: index }
        }
        // A write whose condition holds is applied as the plain write, through the same path
        // (one place that changes data).
        Command::SetIf { key, value, condition } => match check(data, index, key, condition) {
            Ok(()) => {
                let set = Command::Set { key: key.clone(), value: value.clone() };
                apply_command(data, index, &set)
            }
            Err(failed) => failed,
        },
        Command::DeleteIf { key, condition } => match check(data, index, key, condition) {
            Ok(()) => apply_command(data, index, &Command::Delete { key: key.clone() }),
            Err(failed) => failed,
        },
        Command::SetLeased { key, value, lease, condition } => {
            if let Some(condition) = condition {
                if let Err(failed) = check(data, index, key, condition) {
                    return failed;
                }
            }
            data.put_leased(index, key, value, *lease);
            WriteOutcome::Set { revision: index }
        }
        // Applied by `txn::apply`, which writes through the `Set` and `Delete` arms above.
        Command::Txn(_) => unreachable!("a transaction is applied by txn::apply"),
        // Applied by `StateMachine::apply_with_reads` before it gets here.
        Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } | Command::LeaseExpire { .. } => {
            unreachable!("lease commands are applied by apply_with_reads")
        }
        Command::RegisterSession { .. } => unreachable!("a registration changes no data"),
    }
}

/// Evaluates `condition` on `key` as of this entry (every replica holds the same state
/// here); the failed outcome carries the key's revisions for the caller to retry with.
fn check(data: &DataMap, index: u64, key: &str, condition: &Condition) -> Result<(), WriteOutcome> {
    let current = data.get(key);
    if condition.holds(current) {
        Ok(())
    } else {
        Err(WriteOutcome::ConditionFailed {
            revision: index,
            current: current.map(KeyRevisions::from),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::command::{ProposalSession, SessionRef};
    use crate::session::SessionError;
    use proptest::prelude::*;

    /// One random step against the state machine and the model.
    #[derive(Debug, Clone)]
    pub(crate) enum Op {
        Set(String, Vec<u8>),
        Delete(String),
        Get(String),
        Range {
            prefix: String,
            start_key: String,
            limit: usize,
            keys_only: bool,
        },
        /// A session write: (client, seq, first_unacked) drawn small so retries collide.
        SessionSet {
            client: u64,
            seq: u64,
            acked: u64,
            key: String,
        },
        /// Moves the clock; odd steps also apply a delete of a key no other op uses (so cluster
        /// time advances), even steps only skip a log index.
        Tick(u64),
    }

    /// Keys over a tiny alphabet (including a multi-byte char) so prefixes and collisions are
    /// common.
    pub(crate) fn arb_key() -> impl Strategy<Value = String> {
        "[ab\u{e9}]{0,3}"
    }

    pub(crate) fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (arb_key(), proptest::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(k, v)| Op::Set(k, v)),
            2 => arb_key().prop_map(Op::Delete),
            2 => arb_key().prop_map(Op::Get),
            2 => ("[ab]{0,2}", arb_key(), 0usize..5, any::<bool>()).prop_map(
                |(prefix, start_key, limit, keys_only)| Op::Range { prefix, start_key, limit, keys_only }
            ),
            2 => (1u64..4, 1u64..6, 0u64..4, arb_key())
                .prop_map(|(client, seq, acked, key)| Op::SessionSet { client, seq, acked, key }),
            1 => (0u64..300).prop_map(Op::Tick),
        ]
    }

    pub(crate) fn small_limits() -> SessionLimits {
        SessionLimits {
            session_ttl_ms: 500,
            max_sessions: 2,
            max_results_per_session: 3,
            ..SessionLimits::default()
        }
    }

    /// A state machine after the write ops of `ops` (reads are ignored), with log indices
    /// from 1 and a clock that moves on `Tick`.
    pub(crate) fn build(ops: &[Op]) -> StateMachine {
        let mut sm = StateMachine::new(small_limits());
        apply_ops(&mut sm, ops);
        sm
    }

    /// Applies the write ops of `ops` after what `sm` already holds, the clock continuing
    /// from its cluster time.
    pub(crate) fn apply_ops(sm: &mut StateMachine, ops: &[Op]) {
        let mut now = sm.cluster_time_ms();
        for op in ops {
            step(sm, &mut now, op);
        }
    }

    fn proposal(now: u64, session: Option<ProposalSession>, command: Command) -> Proposal {
        Proposal { session, proposed_at_ms: now, quota_state_bytes: None, command }
    }

    fn step(sm: &mut StateMachine, now: &mut u64, op: &Op) -> Option<Result<WriteOutcome, Error>> {
        let index = sm.applied_index() + 1;
        let p = match op {
            Op::Set(k, v) => {
                proposal(*now, None, Command::Set { key: k.clone(), value: v.clone() })
            }
            Op::Delete(k) => proposal(*now, None, Command::Delete { key: k.clone() }),
            Op::SessionSet { client, seq, acked, key } => proposal(
                *now,
                Some(ProposalSession::Legacy {
                    client_id: *client,
                    seq: *seq,
                    first_unacked_seq: *acked,
                }),
                Command::Set { key: key.clone(), value: seq.to_le_bytes().to_vec() },
            ),
            Op::Tick(dt) => {
                *now += dt;
                if dt % 2 == 0 {
                    sm.skip(index);
                    return None;
                }
                proposal(*now, None, Command::Delete { key: "unused".into() })
            }
            Op::Get(_) | Op::Range { .. } => return None,
        };
        Some(sm.apply(index, &p))
    }

    /// Every key of `sm` under `q`, by following page tokens to the end.
    fn page_through(sm: &StateMachine, mut q: RangeQuery, max_bytes: usize) -> Vec<RangeItem> {
        let mut all = Vec::new();
        for _ in 0..1_000 {
            let page = sm.range(&q, max_bytes).unwrap();
            assert!(page.items.len() <= q.limit.max(1));
            let bytes: usize = page
                .items
                .iter()
                .map(|i| i.key.len() + i.value.len() + RANGE_ITEM_OVERHEAD_BYTES)
                .sum();
            assert!(page.items.len() == 1 || bytes <= max_bytes, "{bytes} > {max_bytes}");
            all.extend(page.items);
            if page.next_page_token.is_empty() {
                return all;
            }
            q.page_token = page.next_page_token;
        }
        panic!("paging did not end");
    }

    proptest! {
        #[test]
        fn matches_btreemap_model(ops in proptest::collection::vec(arb_op(), 0..200)) {
            let mut sm = StateMachine::new(SessionLimits::default());
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut now = 0;
            for op in &ops {
                let index = sm.applied_index() + 1;
                let out = step(&mut sm, &mut now, op);
                match op {
                    Op::Set(k, v) => {
                        model.insert(k.clone(), v.clone());
                        prop_assert_eq!(out, Some(Ok(WriteOutcome::Set { revision: index })));
                    }
                    Op::Delete(k) => {
                        let existed = model.remove(k).is_some();
                        prop_assert_eq!(
                            out,
                            Some(Ok(WriteOutcome::Deleted { existed, revision: index }))
                        );
                    }
                    Op::SessionSet { key, seq, .. } => {
                        // Applied iff the outcome carries this entry's revision.
                        if out == Some(Ok(WriteOutcome::Set { revision: index })) {
                            model.insert(key.clone(), seq.to_le_bytes().to_vec());
                        }
                    }
                    Op::Tick(_) => {}
                    Op::Get(k) => {
                        prop_assert_eq!(sm.get(k).map(Entry::value), model.get(k).map(Vec::as_slice));
                    }
                    Op::Range { prefix, start_key, limit, keys_only } => {
                        let q = RangeQuery {
                            prefix: prefix.clone(),
                            start_key: start_key.clone(),
                            limit: *limit,
                            page_token: String::new(),
                            keys_only: *keys_only,
                        };
                        let expected: Vec<(&String, &Vec<u8>)> = model
                            .iter()
                            .filter(|(k, _)| k.starts_with(prefix.as_str()) && *k >= start_key)
                            .collect();
                        let first = sm.range(&q, usize::MAX).unwrap();
                        let n = (*limit).max(1).min(expected.len());
                        prop_assert_eq!(first.items.len(), n);
                        prop_assert_eq!(first.next_page_token.is_empty(), expected.len() <= n);
                        let all = page_through(&sm, q.clone(), usize::MAX);
                        // A byte bound changes the pages, never what they add up to.
                        prop_assert_eq!(&page_through(&sm, q, 2 * RANGE_ITEM_OVERHEAD_BYTES), &all);
                        let got: Vec<(&String, &Vec<u8>)> =
                            all.iter().map(|i| (&i.key, &i.value)).collect();
                        if *keys_only {
                            prop_assert!(all.iter().all(|i| i.value.is_empty()));
                            let keys: Vec<_> = got.iter().map(|(k, _)| *k).collect();
                            let want: Vec<_> = expected.iter().map(|(k, _)| *k).collect();
                            prop_assert_eq!(keys, want);
                        } else {
                            prop_assert_eq!(got, expected);
                        }
                    }
                }
                prop_assert_eq!(sm.len(), model.len());
                let state_bytes: u64 = model.iter().map(|(k, v)| key_state_bytes(k, v)).sum();
                prop_assert_eq!(sm.state_bytes(), state_bytes);
            }
        }

        #[test]
        fn digest_is_deterministic(ops in proptest::collection::vec(arb_op(), 0..100)) {
            let a = build(&ops);
            let b = build(&ops);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.digest(), b.digest());
        }

        #[test]
        fn digest_changes_after_a_differing_op(
            ops in proptest::collection::vec(arb_op(), 0..100),
            key in arb_key(),
        ) {
            let mut a = build(&ops);
            let mut b = a.clone();
            let index = a.applied_index() + 1;
            let now = a.cluster_time_ms();
            let set = |value: &[u8]| {
                proposal(now, None, Command::Set { key: key.clone(), value: value.to_vec() })
            };
            a.apply(index, &set(b"x")).unwrap();
            b.apply(index, &set(b"y")).unwrap();
            prop_assert_ne!(a.digest(), b.digest());
        }

        #[test]
        fn garbage_page_tokens_are_rejected_or_valid(token in ".{0,12}", prefix in "[ab]{0,2}") {
            let sm = build(&[Op::Set("a".into(), vec![1]), Op::Set("b".into(), vec![2])]);
            let q = RangeQuery { prefix, limit: 1, page_token: token, ..RangeQuery::default() };
            let _ = sm.range(&q, usize::MAX);
        }
    }

    fn set(
        sm: &mut StateMachine,
        now: u64,
        session: Option<ProposalSession>,
        key: &str,
        value: &[u8],
    ) -> Result<WriteOutcome, Error> {
        let index = sm.applied_index() + 1;
        sm.apply(
            index,
            &proposal(now, session, Command::Set { key: key.into(), value: value.into() }),
        )
    }

    /// A session of a build before registration (opened implicitly).
    fn sref(client_id: u64, seq: u64, first_unacked_seq: u64) -> Option<ProposalSession> {
        Some(ProposalSession::Legacy { client_id, seq, first_unacked_seq })
    }

    /// A registered session of `owner`.
    fn owned(owner: &str, client_id: u64, seq: u64, first_unacked: u64) -> Option<ProposalSession> {
        Some(ProposalSession::Registered(SessionRef {
            owner: owner.into(),
            client_id,
            seq,
            first_unacked_seq: first_unacked,
        }))
    }

    fn register(sm: &mut StateMachine, now: u64, owner: &str) -> Result<u64, Error> {
        let index = sm.applied_index() + 1;
        let command =
            Command::RegisterSession { owner: owner.into(), max_sessions_per_identity: 2 };
        match sm.apply(index, &proposal(now, None, command))? {
            WriteOutcome::SessionRegistered { client_id } => Ok(client_id),
            other => panic!("{other:?}"),
        }
    }

    /// The session id is the registration's log index; writes are deduplicated in it, and
    /// only its owner can use it; the quota evicts the owner's oldest session.
    #[test]
    fn registered_sessions_through_the_state_machine() {
        let mut sm = StateMachine::default();
        sm.skip(1);
        let id = register(&mut sm, 10, "alice").unwrap();
        assert_eq!(id, 2);
        let first = set(&mut sm, 10, owned("alice", id, 1, 1), "k", b"1");
        assert_eq!(first, Ok(WriteOutcome::Set { revision: 3 }));
        assert_eq!(set(&mut sm, 10, owned("alice", id, 1, 1), "k", b"1"), first);
        assert_eq!(
            set(&mut sm, 10, owned("bob", id, 1, 1), "k", b"2"),
            Err(SessionError::Unknown.into())
        );
        assert_eq!(sm.get("k").unwrap().value(), b"1");
        register(&mut sm, 11, "alice").unwrap();
        register(&mut sm, 12, "alice").unwrap();
        assert_eq!(sm.session_count(), 2);
        assert_eq!(
            set(&mut sm, 12, owned("alice", id, 2, 2), "k", b"3"),
            Err(SessionError::Unknown.into())
        );
        assert_eq!(sm.get("k").unwrap().value(), b"1");
    }

    #[test]
    fn versions_and_revisions_follow_log_indices() {
        let mut sm = StateMachine::default();
        sm.skip(1);
        assert_eq!(set(&mut sm, 0, None, "k", b"1"), Ok(WriteOutcome::Set { revision: 2 }));
        sm.skip(3);
        assert_eq!(set(&mut sm, 0, None, "k", b"2"), Ok(WriteOutcome::Set { revision: 4 }));
        assert_eq!(
            sm.get("k").map(Entry::to_versioned),
            Some(Versioned { value: b"2".to_vec(), create_index: 2, mod_index: 4, version: 2 })
        );
        let del = |sm: &mut StateMachine, i| {
            sm.apply(i, &proposal(0, None, Command::Delete { key: "k".into() }))
        };
        assert_eq!(del(&mut sm, 5), Ok(WriteOutcome::Deleted { existed: true, revision: 5 }));
        assert_eq!(del(&mut sm, 6), Ok(WriteOutcome::Deleted { existed: false, revision: 6 }));
        assert_eq!(set(&mut sm, 0, None, "k", b"3"), Ok(WriteOutcome::Set { revision: 7 }));
        assert_eq!(
            sm.get("k").map(Entry::to_versioned),
            Some(Versioned { value: b"3".to_vec(), create_index: 7, mod_index: 7, version: 1 })
        );
        assert_eq!(sm.applied_index(), 7);
    }

    #[test]
    fn retried_write_applies_once_and_returns_first_result() {
        let mut sm = StateMachine::default();
        assert_eq!(
            set(&mut sm, 0, sref(9, 1, 1), "k", b"first"),
            Ok(WriteOutcome::Set { revision: 1 })
        );
        set(&mut sm, 0, None, "k", b"other").unwrap();
        set(&mut sm, 0, sref(9, 2, 1), "j", b"x").unwrap();
        // The retry arrives after other writes: same answer, no effect.
        assert_eq!(
            set(&mut sm, 0, sref(9, 1, 1), "k", b"first"),
            Ok(WriteOutcome::Set { revision: 1 })
        );
        assert_eq!(sm.get("k").unwrap().value(), b"other");
        assert_eq!(sm.applied_index(), 4);
        // Deletes of a missing key are deduplicated too.
        let del = Proposal {
            session: sref(9, 3, 1),
            proposed_at_ms: 0,
            quota_state_bytes: None,
            command: Command::Delete { key: "missing".into() },
        };
        let first = sm.apply(5, &del);
        assert_eq!(first, Ok(WriteOutcome::Deleted { existed: false, revision: 5 }));
        assert_eq!(sm.apply(6, &del), first);
    }

    #[test]
    fn acked_results_give_result_discarded() {
        let mut sm = StateMachine::default();
        set(&mut sm, 0, sref(9, 1, 1), "k", b"1").unwrap();
        set(&mut sm, 0, sref(9, 2, 2), "k", b"2").unwrap();
        assert_eq!(
            set(&mut sm, 0, sref(9, 1, 1), "k", b"1"),
            Err(SessionError::ResultDiscarded.into())
        );
        assert_eq!(sm.get("k").unwrap().value(), b"2");
    }

    #[test]
    fn sessions_expire_by_cluster_time_and_evict() {
        let mut sm = StateMachine::new(SessionLimits {
            session_ttl_ms: 1_000,
            max_sessions: 2,
            max_results_per_session: 4,
            ..SessionLimits::default()
        });
        set(&mut sm, 100, sref(1, 1, 1), "a", b"").unwrap();
        set(&mut sm, 200, sref(2, 1, 1), "b", b"").unwrap();
        set(&mut sm, 300, sref(3, 1, 1), "c", b"").unwrap();
        // Client 1 was the least recently active.
        assert_eq!(set(&mut sm, 300, sref(1, 2, 2), "a", b""), Err(SessionError::Expired.into()));
        assert!(sm.sessions().get_legacy(2).is_some());
        set(&mut sm, 1_250, None, "z", b"").unwrap();
        assert_eq!(set(&mut sm, 1_250, sref(2, 2, 2), "b", b""), Err(SessionError::Expired.into()));
        assert_eq!(
            set(&mut sm, 0, sref(3, 2, 2), "c", b"x"),
            Ok(WriteOutcome::Set { revision: 7 })
        );
        assert_eq!(sm.cluster_time_ms(), 1_250);
    }

    #[test]
    fn unknown_session_with_acked_seqs_is_expired() {
        let mut sm = StateMachine::default();
        assert_eq!(set(&mut sm, 0, sref(4, 5, 3), "k", b"v"), Err(SessionError::Expired.into()));
        assert!(sm.get("k").is_none());
        assert_eq!(sm.applied_index(), 1);
    }

    fn quota_set(
        sm: &mut StateMachine,
        quota: u64,
        session: Option<ProposalSession>,
        key: &str,
        value_len: usize,
    ) -> Result<WriteOutcome, Error> {
        let index = sm.applied_index() + 1;
        let command = Command::Set { key: key.into(), value: vec![1; value_len] };
        let p = Proposal { session, proposed_at_ms: 0, quota_state_bytes: Some(quota), command };
        sm.apply(index, &p)
    }

    #[test]
    fn the_quota_refuses_growth_and_allows_deletes_and_shrinking() {
        let mut sm = StateMachine::default();
        let one = key_state_bytes("k0", &[0; 100]);
        let quota = 3 * one;
        for i in 0..3 {
            quota_set(&mut sm, quota, None, &format!("k{i}"), 100).unwrap();
        }
        assert_eq!(sm.state_bytes(), quota);
        let refused = quota_set(&mut sm, quota, None, "k3", 100);
        let expected = QuotaExceeded { state_bytes: quota, growth_bytes: one, quota_bytes: quota };
        assert_eq!(refused, Err(expected.into()));
        assert!(sm.get("k3").is_none());
        assert_eq!(sm.applied_index(), 4, "a refused write still consumes its entry");
        // Growing an existing key is refused too; rewriting it at its size or smaller is not.
        assert!(quota_set(&mut sm, quota, None, "k0", 101).is_err());
        assert_eq!(
            quota_set(&mut sm, quota, None, "k0", 100),
            Ok(WriteOutcome::Set { revision: 6 })
        );
        quota_set(&mut sm, quota, None, "k0", 10).unwrap();
        assert_eq!(sm.state_bytes(), quota - 90);
        // A delete is always applied and makes room.
        let del = Proposal {
            session: None,
            proposed_at_ms: 0,
            quota_state_bytes: Some(0),
            command: Command::Delete { key: "k1".into() },
        };
        sm.apply(8, &del).unwrap();
        assert_eq!(sm.state_bytes(), 2 * one - 90);
        quota_set(&mut sm, quota, None, "k3", 100).unwrap();
        // The quota travels in the proposal: without one, nothing is refused.
        set(&mut sm, 0, None, "k4", &[0; 1000]).unwrap();
        assert!(sm.state_bytes() > quota);
    }

    #[test]
    fn under_a_full_quota_a_retry_still_gets_its_first_answer() {
        let mut sm = StateMachine::default();
        let quota = key_state_bytes("a", &[0; 10]);
        let first = quota_set(&mut sm, quota, sref(5, 1, 1), "a", 10);
        assert_eq!(first, Ok(WriteOutcome::Set { revision: 1 }));
        assert_eq!(quota_set(&mut sm, quota, sref(5, 1, 1), "a", 10), first);
        // A refused seq is not remembered: once there is room, a copy of it applies.
        assert!(quota_set(&mut sm, quota, sref(5, 2, 1), "b", 10).is_err());
        assert!(quota_set(&mut sm, 2 * quota, sref(5, 2, 1), "b", 10).is_ok());
        assert!(sm.get("b").is_some());
    }

    #[test]
    fn pages_are_bounded_by_bytes_but_hold_at_least_one_item() {
        let sm = build(&[
            Op::Set("a".into(), vec![0; 100]),
            Op::Set("b".into(), vec![0; 100]),
            Op::Set("c".into(), vec![0; 10]),
        ]);
        let item = 1 + 100 + RANGE_ITEM_OVERHEAD_BYTES;
        let q = RangeQuery { limit: 10, ..RangeQuery::default() };
        let page = sm.range(&q, 2 * item - 1).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.next_page_token, encode_page_token("a"));
        let page = sm.range(&q, 1).unwrap();
        assert_eq!(page.items.len(), 1, "one item even over the bound");
        let q = RangeQuery { keys_only: true, ..q };
        assert_eq!(sm.range(&q, 3 * (1 + RANGE_ITEM_OVERHEAD_BYTES)).unwrap().items.len(), 3);
    }

    #[test]
    fn bad_page_tokens() {
        let sm = build(&[Op::Set("aa".into(), vec![]), Op::Set("ab".into(), vec![])]);
        let q = |prefix: &str, token: &str| RangeQuery {
            prefix: prefix.into(),
            limit: 1,
            page_token: token.into(),
            ..RangeQuery::default()
        };
        for token in ["x", "v1.6", "v1.zz", "v1.ff", "v2.61", "v1.6A"] {
            assert_eq!(sm.range(&q("", token), usize::MAX), Err(InvalidPageToken));
        }
        // A token from another prefix.
        assert_eq!(sm.range(&q("a", "v1.62"), usize::MAX), Err(InvalidPageToken));
        let page = sm.range(&q("a", ""), usize::MAX).unwrap();
        assert_eq!(page.next_page_token, encode_page_token("aa"));
        let page = sm.range(&q("a", &page.next_page_token), usize::MAX).unwrap();
        assert_eq!(page.items[0].key, "ab");
        assert_eq!(page.next_page_token, "");
        assert_eq!(InvalidPageToken.to_string(), "invalid page token");
    }
}

#[cfg(test)]
#[path = "kv_cas_tests.rs"]
mod cas_tests;

#[cfg(test)]
#[path = "kv_txn_tests.rs"]
mod txn_tests;

#[cfg(test)]
#[path = "kv_lease_tests.rs"]
mod lease_tests;
