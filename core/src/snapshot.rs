//! The one snapshot format: written and read by this code only, so a snapshot that was taken
//! can always be restored (the original's could not).
//!
//! Frame: magic `b"MOKVSNAP"`, format version (u32), payload length (u64), payload, CRC-32 of
//! the payload. The frame is checked completely before the payload is parsed, so a torn or
//! corrupted file is reported as such and never half-restored.

use crate::codec::{DecodeError, Reader, Writer};
use crate::kv::StateMachine;

const MAGIC: &[u8; 8] = b"MOKVSNAP";
/// 3: sessions are registered, keyed by owner and id, with a cluster time step limit.
/// 2 (leases, sessions from before registration) and 1 (neither) are still read.
const FORMAT_VERSION: u32 = 3;
const FORMAT_VERSION_LEGACY_SESSIONS: u32 = 2;
const FORMAT_VERSION_WITHOUT_LEASES: u32 = 1;

/// What a snapshot format's state encoding holds (see [`StateMachine::decode_versioned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateFormat {
    /// The state ends with the leases (format 2 on).
    pub(crate) leases: bool,
    /// Sessions are keyed by owner and registration index (format 3 on); before, by client
    /// id only, and they decode as legacy sessions.
    pub(crate) registered_sessions: bool,
}

impl StateFormat {
    /// What [`StateMachine::encode_to`] writes.
    pub(crate) const CURRENT: StateFormat = StateFormat { leases: true, registered_sessions: true };
}
/// Magic, version and length before the payload, checksum after it.
pub(crate) const HEADER_LEN: usize = 8 + 4 + 8;
pub(crate) const TRAILER_LEN: usize = 4;

/// Whether `bytes` start like a full snapshot (magic `b"MOKVSNAP"`) rather than a
/// [`SnapshotRef`](crate::SnapshotRef): what a node stored before snapshots were files.
pub fn is_full_snapshot(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Reads the frame header: the state format of its version and the payload length.
pub(crate) fn frame_format(r: &mut Reader<'_>) -> Result<(StateFormat, u64), DecodeError> {
    if r.get_raw(MAGIC.len())? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let format = match r.get_u32()? {
        FORMAT_VERSION => StateFormat::CURRENT,
        FORMAT_VERSION_LEGACY_SESSIONS => StateFormat { leases: true, registered_sessions: false },
        FORMAT_VERSION_WITHOUT_LEASES => StateFormat { leases: false, registered_sessions: false },
        v => return Err(DecodeError::UnsupportedVersion(v)),
    };
    Ok((format, r.get_u64()?))
}

/// A state machine image at a log position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotImage {
    /// Log index of the last entry the image includes.
    pub index: u64,
    /// Term of that entry (Raft needs it to check log matching after restore).
    pub term: u64,
    /// Conf, members, sessions (with cluster time and limits), data and applied index.
    pub state: StateMachine,
}

/// The snapshot of `state` at log position (`index`, `term`), encoded straight from the live
/// state: no copy of the state is made, and the frame is written around the payload in the one
/// buffer (its length patched in afterwards).
pub fn encode_state(index: u64, term: u64, state: &StateMachine) -> Vec<u8> {
    // The data dominates; sessions, members and the frame are small next to it.
    let estimate = usize::try_from(state.state_bytes()).unwrap_or(0).saturating_add(4096);
    let mut w = Writer::with_capacity(HEADER_LEN + estimate + TRAILER_LEN);
    w.put_raw(MAGIC);
    w.put_u32(FORMAT_VERSION);
    w.put_u64(0); // the payload length, patched below
    w.put_u64(index);
    w.put_u64(term);
    state.encode_to(&mut w);
    let mut bytes = w.finish();
    let payload_len = (bytes.len() - HEADER_LEN) as u64;
    bytes[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// A snapshot the core wants taken ([`Node::poll_snapshot_job`]): the state at log position
/// (`index`, `term`), held as a copy-on-write clone, so taking it cost the driver O(1). The shell
/// writes it to a file away from the driver ([`SnapshotJob::encoder`]) and, once the file is
/// durable, hands its reference back with [`Node::handle_snapshot_durable`].
///
/// [`Node::poll_snapshot_job`]: crate::Node::poll_snapshot_job
/// [`Node::handle_snapshot_durable`]: crate::Node::handle_snapshot_durable
#[must_use = "a snapshot job must be written and handed back, or the log is never compacted"]
pub struct SnapshotJob {
    index: u64,
    term: u64,
    state: StateMachine,
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys or values.
        f.debug_struct("SnapshotJob")
            .field("index", &self.index)
            .field("term", &self.term)
            .field("keys", &self.state.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotJob {
    pub(crate) fn new(index: u64, term: u64, state: StateMachine) -> Self {
        Self { index, term, state }
    }

    /// Log index of the last entry the snapshot includes.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Term of that entry.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The image the job's file will hold (a simulator keeps it in place of the file).
    pub fn into_image(self) -> SnapshotImage {
        SnapshotImage { index: self.index, term: self.term, state: self.state }
    }

    /// Length of the encoding, known before encoding (frame included).
    pub fn encoded_len(&self) -> u64 {
        let (head, tail) = self.head_and_tail();
        Self::len_around(&head, &tail, self.state.state_bytes())
    }

    /// The state's encoding before the keys (applied index, configuration, members, sessions,
    /// key count) and after them (leases), in the current format.
    fn head_and_tail(&self) -> (Vec<u8>, Vec<u8>) {
        let (mut head, mut tail) = (Writer::new(), Writer::new());
        self.state.encode_head_to(&mut head, StateFormat::CURRENT);
        self.state.encode_tail_to(&mut tail, StateFormat::CURRENT);
        (head.finish(), tail.finish())
    }

    /// The framed length of a state encoded as `head`, `keys_bytes` of keys, then `tail`.
    fn len_around(head: &[u8], tail: &[u8], keys_bytes: u64) -> u64 {
        (HEADER_LEN + 16 + head.len() + tail.len() + TRAILER_LEN) as u64 + keys_bytes
    }

    /// The snapshot file, as chunks of about `chunk_bytes` bytes (each at most one key larger;
    /// the last one also holds the leases), equal byte for byte to [`encode_state`] of the same
    /// state. Memory beyond the state is one chunk and the encoded leases.
    pub fn encoder(self, chunk_bytes: usize) -> SnapshotEncoder {
        let (head, tail) = self.head_and_tail();
        let total_bytes = Self::len_around(&head, &tail, self.state.state_bytes());
        let mut w = Writer::with_capacity(chunk_bytes.clamp(64, 1 << 24));
        w.put_raw(MAGIC);
        w.put_u32(FORMAT_VERSION);
        w.put_u64(total_bytes - (HEADER_LEN + TRAILER_LEN) as u64);
        w.put_u64(self.index);
        w.put_u64(self.term);
        w.put_raw(&head);
        SnapshotEncoder {
            state: self.state,
            cursor: Cursor::First,
            tail,
            total_bytes,
            chunk_bytes: chunk_bytes.max(1),
            pending: w,
            crc: crc32fast::Hasher::new(),
            checksummed_from: HEADER_LEN,
        }
    }

    /// The whole encoding in one buffer (tests, small states).
    pub fn encode(self) -> Vec<u8> {
        let encoder = self.encoder(1 << 20);
        let mut out = Vec::with_capacity(usize::try_from(encoder.total_bytes).unwrap_or(0));
        for chunk in encoder {
            out.extend_from_slice(&chunk);
        }
        out
    }
}

/// Where a [`SnapshotEncoder`] stands.
enum Cursor {
    /// No key written yet.
    First,
    /// Keys up to and including this one are written.
    After(String),
    /// The trailer is written.
    Done,
}

/// Yields a snapshot chunk by chunk ([`SnapshotJob::encoder`]).
pub struct SnapshotEncoder {
    state: StateMachine,
    /// Where the next chunk starts.
    cursor: Cursor,
    /// The state's encoding after the keys (the leases), written after the last key.
    tail: Vec<u8>,
    /// The length of the whole encoding, frame included.
    total_bytes: u64,
    chunk_bytes: usize,
    pending: Writer,
    crc: crc32fast::Hasher,
    /// The first byte of `pending` the checksum covers (the frame header is not covered).
    checksummed_from: usize,
}

impl std::fmt::Debug for SnapshotEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotEncoder")
            .field("chunk_bytes", &self.chunk_bytes)
            .finish_non_exhaustive()
    }
}

impl Iterator for SnapshotEncoder {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let after = match &self.cursor {
            Cursor::First => None,
            Cursor::After(key) => Some(key.as_str()),
            Cursor::Done => return None,
        };
        let last = self.state.encode_keys_after(after, &mut self.pending, self.chunk_bytes);
        let next_pending = match last {
            Some(key) => {
                self.cursor = Cursor::After(key);
                Writer::with_capacity(self.chunk_bytes.min(1 << 24) + 1024)
            }
            None => {
                self.pending.put_raw(&self.tail);
                self.cursor = Cursor::Done;
                Writer::new()
            }
        };
        let mut bytes = std::mem::replace(&mut self.pending, next_pending).finish();
        self.crc.update(&bytes[self.checksummed_from..]);
        self.checksummed_from = 0;
        if matches!(self.cursor, Cursor::Done) {
            let crc = std::mem::take(&mut self.crc).finalize();
            bytes.extend_from_slice(&crc.to_le_bytes());
        }
        Some(bytes)
    }
}

impl SnapshotImage {
    /// The job that writes this image's snapshot file (a copy-on-write clone of the state).
    pub fn to_job(&self) -> SnapshotJob {
        SnapshotJob::new(self.index, self.term, self.state.clone())
    }

    /// The reference of this image's snapshot file, computed chunk by chunk (the encoding is
    /// never held whole).
    pub fn reference(&self) -> crate::SnapshotRef {
        let mut r = crate::snapshot_ref::SnapshotRefBuilder::default();
        for chunk in self.to_job().encoder(1 << 20) {
            r.feed(&chunk);
        }
        r.finish(self.index, self.term)
    }

    /// The whole snapshot in one buffer (tests, small states).
    pub fn encode(&self) -> Vec<u8> {
        encode_state(self.index, self.term, &self.state)
    }

    /// Reads a whole snapshot held in one buffer (a [`SnapshotDecoder`] reads it in chunks).
    ///
    /// [`SnapshotDecoder`]: crate::SnapshotDecoder
    pub fn decode(bytes: &[u8]) -> Result<SnapshotImage, DecodeError> {
        let mut r = Reader::new(bytes);
        let (format, len) = frame_format(&mut r)?;
        // Checked against the input before anything is sliced or allocated.
        let available = r.remaining().saturating_sub(TRAILER_LEN) as u64;
        if len > available {
            return Err(DecodeError::Truncated);
        }
        let payload = r.get_raw(len as usize)?;
        let crc = r.get_u32()?;
        r.finish()?;
        if crc32fast::hash(payload) != crc {
            return Err(DecodeError::BadChecksum);
        }

        let mut p = Reader::new(payload);
        let index = p.get_u64()?;
        let term = p.get_u64()?;
        let state = StateMachine::decode_versioned(&mut p, format)?;
        p.finish()?;
        Ok(SnapshotImage { index, term, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::tests::{arb_op, build, Op};
    use crate::members::{Conf, MemberInfo};
    use proptest::prelude::*;

    fn arb_image() -> impl Strategy<Value = SnapshotImage> {
        (
            proptest::collection::vec(arb_op(), 0..60),
            proptest::collection::btree_set(1u64..8, 0..4),
            proptest::collection::btree_set(8u64..12, 0..2),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(ops, voters, learners, auto_promote, term)| {
                let mut state = build(&ops);
                for id in voters.iter().chain(&learners) {
                    state.members_mut().insert(
                        *id,
                        MemberInfo {
                            id: *id,
                            name: format!("node-{id}"),
                            peer_addr: format!("10.0.0.{id}:7001"),
                            rpc_addr: format!("10.0.0.{id}:7000"),
                            auto_promote,
                        },
                    );
                }
                state.set_conf(Conf { voters, learners, ..Conf::default() });
                SnapshotImage { index: state.applied_index(), term, state }
            })
    }

    /// A frame around arbitrary payload bytes with a valid checksum, to reach the payload
    /// parser with garbage.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_raw(MAGIC);
        w.put_u32(FORMAT_VERSION);
        w.put_u64(payload.len() as u64);
        w.put_raw(payload);
        w.put_u32(crc32fast::hash(payload));
        w.finish()
    }

    /// The frame built in one buffer is the frame around the separately encoded payload.
    #[test]
    fn encoding_in_one_buffer_gives_the_framed_payload() {
        let image =
            SnapshotImage { index: 7, term: 3, state: build(&[Op::Set("k".into(), vec![1; 9])]) };
        let mut payload = Writer::new();
        payload.put_u64(7);
        payload.put_u64(3);
        image.state.encode_to(&mut payload);
        assert_eq!(image.encode(), frame(&payload.finish()));
    }

    #[test]
    fn empty_state_round_trips() {
        let image = SnapshotImage { index: 0, term: 0, state: StateMachine::default() };
        assert_eq!(SnapshotImage::decode(&image.encode()).unwrap(), image);
    }

    /// A snapshot written before session registration (frame version 1: sessions keyed by
    /// client id alone) still restores; its sessions become legacy ones.
    #[test]
    fn a_version_1_snapshot_still_decodes() {
        let mut p = Writer::new();
        p.put_u64(9); // index
        p.put_u64(2); // term
        p.put_u64(9); // applied index
        Conf::default().encode_to(&mut p);
        p.put_u64(0); // members
        for v in [600_000u64, 100_000, 64, 5_000, 1] {
            p.put_u64(v); // ttl, max sessions, results, cluster time, one session
        }
        for v in [77u64, 4_000, 0, 0] {
            p.put_u64(v); // client id, last active, discarded below, no results
        }
        p.put_u64(1); // one key
        p.put_str("k");
        p.put_bytes(b"v");
        for v in [3u64, 3, 1] {
            p.put_u64(v);
        }
        let payload = p.finish();
        let mut w = Writer::new();
        w.put_raw(MAGIC);
        w.put_u32(1);
        w.put_u64(payload.len() as u64);
        w.put_raw(&payload);
        w.put_u32(crc32fast::hash(&payload));
        let image = SnapshotImage::decode(&w.finish()).unwrap();
        assert_eq!((image.index, image.term), (9, 2));
        assert_eq!(image.state.get("k").unwrap().value(), b"v");
        assert_eq!(image.state.session_count(), 1);
        assert!(image.state.sessions().get_legacy(77).is_some());
        assert_eq!(image.state.cluster_time_ms(), 5_000);
        // Re-encoded, it is a format 3 snapshot of the same state.
        let again = image.encode();
        assert_eq!(again[8], 3);
        assert_eq!(SnapshotImage::decode(&again).unwrap(), image);
    }

    #[test]
    fn frame_errors_are_specific() {
        let image = SnapshotImage { index: 3, term: 2, state: StateMachine::default() };
        let good = image.encode();

        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(SnapshotImage::decode(&bad), Err(DecodeError::BadMagic));

        let mut bad = good.clone();
        bad[8] = 4;
        assert_eq!(SnapshotImage::decode(&bad), Err(DecodeError::UnsupportedVersion(4)));

        let mut bad = good.clone();
        bad[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(SnapshotImage::decode(&bad), Err(DecodeError::Truncated));

        let mut bad = good.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(SnapshotImage::decode(&bad), Err(DecodeError::BadChecksum));

        let mut bad = good.clone();
        bad.push(0);
        assert_eq!(SnapshotImage::decode(&bad), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn valid_frame_with_trailing_payload_is_rejected() {
        let image = SnapshotImage { index: 3, term: 2, state: StateMachine::default() };
        let good = image.encode();
        let mut payload = good[HEADER_LEN..good.len() - TRAILER_LEN].to_vec();
        payload.push(0);
        assert_eq!(SnapshotImage::decode(&frame(&payload)), Err(DecodeError::TrailingBytes));
    }

    /// Chunked encoding of a job gives exactly the one-buffer encoding, for any chunk size.
    #[test]
    fn job_encoder_gives_the_one_buffer_encoding() {
        let state = build(
            &(0..50).map(|i| Op::Set(format!("k{i}"), vec![i as u8; i % 7])).collect::<Vec<_>>(),
        );
        let want = encode_state(state.applied_index(), 4, &state);
        for chunk_bytes in [1, 7, 64, 1000, 1 << 20] {
            let job = SnapshotJob::new(state.applied_index(), 4, state.clone());
            assert_eq!(job.encoded_len(), want.len() as u64);
            let chunks: Vec<Vec<u8>> = job.encoder(chunk_bytes).collect();
            assert_eq!(chunks.concat(), want, "chunk_bytes {chunk_bytes}");
        }
        let empty = StateMachine::default();
        assert_eq!(SnapshotJob::new(0, 0, empty.clone()).encode(), encode_state(0, 0, &empty));
    }

    proptest! {
        #[test]
        fn job_encoding_round_trips(image in arb_image(), chunk_bytes in 1usize..300) {
            let job = SnapshotJob::new(image.index, image.term, image.state.clone());
            let bytes: Vec<u8> = job.encoder(chunk_bytes).flatten().collect();
            prop_assert_eq!(&bytes, &image.encode());
        }

        #[test]
        fn round_trips(image in arb_image()) {
            let bytes = image.encode();
            let back = SnapshotImage::decode(&bytes).unwrap();
            prop_assert_eq!(back.state.digest(), image.state.digest());
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back, image);
        }

        #[test]
        fn restored_state_behaves_the_same(
            image in arb_image(),
            more in proptest::collection::vec(arb_op(), 0..30),
        ) {
            // Both copies must keep deciding identically after restore (session index
            // rebuilt, cluster time and limits kept).
            let mut restored = SnapshotImage::decode(&image.encode()).unwrap().state;
            let mut original = image.state;
            crate::kv::tests::apply_ops(&mut original, &more);
            crate::kv::tests::apply_ops(&mut restored, &more);
            prop_assert_eq!(original, restored);
        }

        #[test]
        fn any_flipped_byte_is_an_error(image in arb_image(), at in any::<usize>(), x in 1u8..) {
            let mut bytes = image.encode();
            let i = at % bytes.len();
            bytes[i] ^= x;
            prop_assert!(SnapshotImage::decode(&bytes).is_err());
        }

        #[test]
        fn every_truncation_is_an_error(image in arb_image()) {
            let bytes = image.encode();
            for len in 0..bytes.len() {
                prop_assert!(SnapshotImage::decode(&bytes[..len]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = SnapshotImage::decode(&bytes);
        }

        #[test]
        fn garbage_payload_in_valid_frame_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = SnapshotImage::decode(&frame(&payload));
        }

        #[test]
        fn mutated_payload_in_valid_frame_never_panics(
            image in arb_image(),
            at in any::<usize>(),
            x in 1u8..,
        ) {
            // Re-checksummed, so the payload parser itself sees the corruption.
            let bytes = image.encode();
            let mut payload = bytes[HEADER_LEN..bytes.len() - TRAILER_LEN].to_vec();
            let i = at % payload.len();
            payload[i] ^= x;
            let _ = SnapshotImage::decode(&frame(&payload));
        }
    }
}
