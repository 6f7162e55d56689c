//! Reads a snapshot file fed chunk by chunk ([`SnapshotDecoder`]), so that a node restores a
//! snapshot from disk or from the network without holding its encoding: memory beyond the
//! decoded state is the one item (the head, one key, the leases) split across two chunks.
//!
//! Items are decoded straight from the fed chunk; only an item a chunk boundary cuts is
//! copied, into a buffer that grows by the piece it needs. Copying every chunk into the
//! buffer first cost a copy of the whole file (and a move per chunk) on a node's restart.

use crate::codec::{DecodeError, Reader};
use crate::kv::{KeyBatch, SnapshotKeys, StateBuilder, StateHead, KEY_MIN_BYTES};
use crate::snapshot::{frame_format, SnapshotImage, StateFormat, HEADER_LEN, TRAILER_LEN};

/// The most bytes a decoder buffers: one item (the state's head, one key with its value, or
/// the leases) plus one fed chunk. Values are at most 16 MiB (the shell's limit on
/// `max-value-bytes`); sessions and leases are bounded by their settings.
pub const MAX_BUFFERED_BYTES: usize = 256 << 20;

/// The first piece of a new chunk appended to a cut item: most items (keys with their values)
/// are far smaller, so completing one rarely copies more.
const FIRST_PIECE_BYTES: usize = 4 << 10;

/// Where a [`SnapshotDecoder`] stands.
#[derive(Debug)]
enum Stage {
    /// Waiting for the frame header.
    Header,
    /// Waiting for index, term and the state's head.
    Head,
    /// Decoding keys.
    Keys(StateBuilder),
    /// Every key is decoded: waiting for the rest of the payload (the leases).
    Tail(StateBuilder),
    /// Waiting for the checksum.
    Trailer(Decoded),
    /// Checked and complete.
    Done(Decoded),
    /// An error was returned; nothing more is accepted.
    Failed,
}

/// A decoded payload.
#[derive(Debug)]
enum Decoded {
    Image(SnapshotImage),
    /// The keys were handed out: the state is built by [`SnapshotDecoder::finish_with`], from
    /// the builder and the encoded rest of the payload (the leases, which name keys).
    KeysHandedOut {
        state: StateBuilder,
        tail: Vec<u8>,
    },
}

/// Decodes a snapshot (the frame [`SnapshotImage::decode`] reads) from chunks of any size.
///
/// [`SnapshotDecoder::feed`] takes the next bytes; [`SnapshotDecoder::finish`] returns the
/// image only once the whole frame arrived and its checksum matched, so a torn or corrupted
/// snapshot is never half-restored. The result equals [`SnapshotImage::decode`] of the
/// concatenated chunks, errors included in kind (a truncated input is
/// [`DecodeError::Truncated`] at `finish`).
///
/// A decoder made by [`SnapshotDecoder::handing_out_keys`] does not build the data map
/// itself: it hands the keys it decodes out in batches ([`SnapshotDecoder::take_keys`], after
/// each `feed`) for a [`SnapshotKeys`] to insert, possibly on another thread, and
/// [`SnapshotDecoder::finish_with`] puts the state together.
#[derive(Debug)]
pub struct SnapshotDecoder {
    /// The start of an item a chunk boundary cut (received, not consumed yet); empty
    /// between items.
    buf: Vec<u8>,
    stage: Stage,
    /// Whether keys are handed out rather than inserted.
    hands_out_keys: bool,
    format: StateFormat,
    index: u64,
    term: u64,
    /// Payload bytes not consumed yet.
    payload_left: u64,
    /// The payload's running checksum, unless the caller checks every byte itself
    /// ([`SnapshotDecoder::checked_by_caller`]).
    crc: Option<crc32fast::Hasher>,
}

impl Default for SnapshotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotDecoder {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            stage: Stage::Header,
            hands_out_keys: false,
            format: StateFormat::CURRENT,
            index: 0,
            term: 0,
            payload_left: 0,
            crc: Some(crc32fast::Hasher::new()),
        }
    }

    /// This decoder without its own checksum of the payload, for a caller that checks the
    /// whole file against its reference ([`crate::SnapshotFileCheck`], whose checksum covers
    /// every byte the frame's does) and uses the image only if that check passes. The frame's
    /// checksum is then still read but not computed: on a node's restart the two checksums
    /// cost a tenth of the decoding thread's time.
    pub fn checked_by_caller(self) -> Self {
        Self { crc: None, ..self }
    }

    /// A decoder that hands the keys out ([`SnapshotDecoder::take_keys`]) instead of
    /// building the map.
    pub fn handing_out_keys() -> Self {
        Self { hands_out_keys: true, ..Self::new() }
    }

    /// The keys decoded since the last call, in ascending order, if this decoder hands keys
    /// out and decoded any. Take them after every [`SnapshotDecoder::feed`]: they are what
    /// the decoder holds beyond one chunk.
    pub fn take_keys(&mut self) -> Option<KeyBatch> {
        match &mut self.stage {
            Stage::Keys(state)
            | Stage::Tail(state)
            | Stage::Trailer(Decoded::KeysHandedOut { state, .. })
            | Stage::Done(Decoded::KeysHandedOut { state, .. }) => state.take_batch(),
            _ => None,
        }
    }

    /// The next bytes of the snapshot. An error is final: the input is not a snapshot this
    /// code wrote (or a decoded item would exceed [`MAX_BUFFERED_BYTES`]).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if matches!(self.stage, Stage::Failed) {
            return Err(DecodeError::Invalid("snapshot decoder failed before"));
        }
        let result = self.feed_inner(bytes);
        let result = if result.is_ok() && self.buf.len() > MAX_BUFFERED_BYTES {
            Err(DecodeError::Invalid("snapshot item too large"))
        } else {
            result
        };
        if result.is_err() {
            self.stage = Stage::Failed;
            self.buf = Vec::new();
        }
        result
    }

    fn feed_inner(&mut self, mut bytes: &[u8]) -> Result<(), DecodeError> {
        // First complete the cut item: append the new bytes piece by piece (each piece twice
        // the last, so an item of n bytes costs O(n) copying) until decoding gets past it.
        let mut piece_bytes = FIRST_PIECE_BYTES;
        while !self.buf.is_empty() && !bytes.is_empty() {
            let held = self.buf.len();
            let (piece, rest) = bytes.split_at(piece_bytes.min(bytes.len()));
            self.buf.extend_from_slice(piece);
            let buf = std::mem::take(&mut self.buf);
            let (used, result) = self.advance(&buf);
            self.buf = buf;
            result?;
            if used >= held {
                // Past the cut item: go on from the new bytes themselves.
                bytes = &bytes[used - held..];
                self.buf.clear();
                break;
            }
            self.buf.drain(..used);
            bytes = rest;
            piece_bytes = piece_bytes.saturating_mul(2);
        }
        if self.buf.is_empty() {
            let (used, result) = self.advance(bytes);
            result?;
            self.buf.extend_from_slice(&bytes[used..]);
        }
        Ok(())
    }

    /// The image, once every byte was fed and checked.
    pub fn finish(self) -> Result<SnapshotImage, DecodeError> {
        match self.stage {
            Stage::Done(Decoded::Image(image)) => Ok(image),
            Stage::Done(Decoded::KeysHandedOut { .. }) => {
                Err(DecodeError::Invalid("the keys were handed out: finish_with builds the state"))
            }
            Stage::Failed => Err(DecodeError::Invalid("snapshot decoder failed before")),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// The image of a decoder handing out keys, once every byte was fed and checked: `keys`
    /// holds every batch [`SnapshotDecoder::take_keys`] returned, inserted in order (a batch
    /// not taken yet is added here).
    pub fn finish_with(self, keys: SnapshotKeys) -> Result<SnapshotImage, DecodeError> {
        match self.stage {
            Stage::Done(Decoded::KeysHandedOut { state, tail }) => {
                let mut r = Reader::new(&tail);
                let state = state.finish_with(keys, &mut r, self.format)?;
                r.finish()?;
                Ok(SnapshotImage { index: self.index, term: self.term, state })
            }
            Stage::Done(Decoded::Image(_)) => {
                Err(DecodeError::Invalid("the decoder built the state: finish returns it"))
            }
            Stage::Failed => Err(DecodeError::Invalid("snapshot decoder failed before")),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// The unconsumed payload bytes of `input` from `pos`, at most the rest of the payload.
    fn payload_at_hand<'a>(&self, input: &'a [u8], pos: usize) -> &'a [u8] {
        let rest = &input[pos..];
        let n = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(rest.len());
        &rest[..n]
    }

    /// Whether the whole rest of the payload is in `input` from `pos`.
    fn whole_payload_at_hand(&self, input: &[u8], pos: usize) -> bool {
        (input.len() - pos) as u64 >= self.payload_left
    }

    /// Marks the `n` payload bytes of `input` at `*pos` consumed.
    fn consume_payload(&mut self, input: &[u8], pos: &mut usize, n: usize) {
        if let Some(crc) = &mut self.crc {
            crc.update(&input[*pos..*pos + n]);
        }
        *pos += n;
        self.payload_left -= n as u64;
    }

    /// Decodes `input` as far as it goes: how many bytes it consumed (whole items only; the
    /// rest starts an item `input` does not hold whole) and whether it failed.
    fn advance(&mut self, input: &[u8]) -> (usize, Result<(), DecodeError>) {
        let mut pos = 0;
        let result = self.advance_from(input, &mut pos);
        (pos, result)
    }

    fn advance_from(&mut self, input: &[u8], pos: &mut usize) -> Result<(), DecodeError> {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Failed) {
                Stage::Header => {
                    let rest = &input[*pos..];
                    if rest.len() < HEADER_LEN {
                        self.stage = Stage::Header;
                        return Ok(());
                    }
                    let mut r = Reader::new(&rest[..HEADER_LEN]);
                    let (format, payload_len) = frame_format(&mut r)?;
                    self.format = format;
                    self.payload_left = payload_len;
                    *pos += HEADER_LEN;
                    self.stage = Stage::Head;
                }
                Stage::Head => {
                    let at_hand = self.payload_at_hand(input, *pos);
                    let mut r = Reader::new(at_hand);
                    let parsed = (|| {
                        let index = r.get_u64()?;
                        let term = r.get_u64()?;
                        Ok((index, term, StateHead::decode_from(&mut r, self.format)?))
                    })();
                    let (index, term, head) = match parsed {
                        Ok(v) => v,
                        Err(DecodeError::Truncated) if !self.whole_payload_at_hand(input, *pos) => {
                            self.stage = Stage::Head;
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    };
                    let used = at_hand.len() - r.remaining();
                    self.consume_payload(input, pos, used);
                    if head.key_count > self.payload_left / KEY_MIN_BYTES as u64 {
                        return Err(DecodeError::Truncated);
                    }
                    (self.index, self.term) = (index, term);
                    self.stage = Stage::Keys(if self.hands_out_keys {
                        StateBuilder::handing_out_keys(head)
                    } else {
                        StateBuilder::new(head)
                    });
                }
                Stage::Keys(mut state) => {
                    while state.keys_left() > 0 {
                        let at_hand = self.payload_at_hand(input, *pos);
                        let mut r = Reader::new(at_hand);
                        match state.decode_key(&mut r) {
                            Ok(()) => {
                                let used = at_hand.len() - r.remaining();
                                self.consume_payload(input, pos, used);
                            }
                            Err(DecodeError::Truncated)
                                if !self.whole_payload_at_hand(input, *pos) =>
                            {
                                self.stage = Stage::Keys(state);
                                return Ok(());
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    self.stage = Stage::Tail(state);
                }
                Stage::Tail(state) => {
                    if !self.whole_payload_at_hand(input, *pos) {
                        self.stage = Stage::Tail(state);
                        return Ok(());
                    }
                    let at_hand = self.payload_at_hand(input, *pos);
                    let used = at_hand.len();
                    let decoded = if self.hands_out_keys {
                        Decoded::KeysHandedOut { state, tail: at_hand.to_vec() }
                    } else {
                        let mut r = Reader::new(at_hand);
                        let sm = state.finish(&mut r, self.format)?;
                        r.finish()?;
                        Decoded::Image(SnapshotImage {
                            index: self.index,
                            term: self.term,
                            state: sm,
                        })
                    };
                    self.consume_payload(input, pos, used);
                    self.stage = Stage::Trailer(decoded);
                }
                Stage::Trailer(decoded) => {
                    let rest = &input[*pos..];
                    if rest.len() < TRAILER_LEN {
                        self.stage = Stage::Trailer(decoded);
                        return Ok(());
                    }
                    let crc = Reader::new(&rest[..TRAILER_LEN]).get_u32()?;
                    if self.crc.take().is_some_and(|ours| ours.finalize() != crc) {
                        return Err(DecodeError::BadChecksum);
                    }
                    *pos += TRAILER_LEN;
                    self.stage = Stage::Done(decoded);
                }
                Stage::Done(decoded) => {
                    if *pos < input.len() {
                        return Err(DecodeError::TrailingBytes);
                    }
                    self.stage = Stage::Done(decoded);
                    return Ok(());
                }
                Stage::Failed => return Err(DecodeError::Invalid("snapshot decoder failed")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::tests::{build, Op};
    use proptest::prelude::*;

    fn decode_in_chunks(bytes: &[u8], chunk: usize) -> Result<SnapshotImage, DecodeError> {
        let mut d = SnapshotDecoder::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.feed(c)?;
        }
        d.finish()
    }

    /// Decodes with the keys handed out and inserted as they come (what a second thread does).
    fn decode_handing_out_keys(bytes: &[u8], chunk: usize) -> Result<SnapshotImage, DecodeError> {
        let mut d = SnapshotDecoder::handing_out_keys();
        let mut keys = SnapshotKeys::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.feed(c)?;
            while let Some(batch) = d.take_keys() {
                assert!(!batch.is_empty());
                keys.insert(batch);
            }
        }
        d.finish_with(keys)
    }

    fn sample() -> SnapshotImage {
        let ops: Vec<Op> =
            (0..40).map(|i| Op::Set(format!("key{i:03}"), vec![i as u8; (i * 37) % 300])).collect();
        let state = build(&ops);
        SnapshotImage { index: state.applied_index(), term: 5, state }
    }

    #[test]
    fn odd_chunk_sizes_give_the_one_buffer_decode() {
        let image = sample();
        let bytes = image.encode();
        for chunk in [1, 2, 3, 7, 19, 64, 333, 4096, bytes.len(), bytes.len() + 5] {
            assert_eq!(decode_in_chunks(&bytes, chunk).unwrap(), image, "chunk {chunk}");
            assert_eq!(decode_handing_out_keys(&bytes, chunk).unwrap(), image, "chunk {chunk}");
        }
        let empty = SnapshotImage { index: 0, term: 0, state: Default::default() };
        assert_eq!(decode_in_chunks(&empty.encode(), 3).unwrap(), empty);
    }

    #[test]
    fn items_cut_by_chunks_far_smaller_than_them_are_put_together() {
        // Values several times the first piece appended to a cut item, between small ones: a
        // cut item takes several growing pieces of one chunk, or several chunks.
        let sizes = [0, 5_000, 3, 70_000, 4_096, 1, 300_000, 17];
        let ops: Vec<Op> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Op::Set(format!("big{i}"), vec![i as u8 + 1; n]))
            .collect();
        let state = build(&ops);
        let image = SnapshotImage { index: state.applied_index(), term: 3, state };
        let bytes = image.encode();
        for chunk in [1, 100, 4_095, 4_096, 4_097, 9_000, 70_001, 1 << 20] {
            assert_eq!(decode_in_chunks(&bytes, chunk).unwrap(), image, "chunk {chunk}");
            assert_eq!(decode_handing_out_keys(&bytes, chunk).unwrap(), image, "chunk {chunk}");
        }
    }

    #[test]
    fn torn_and_corrupt_snapshots_are_refused() {
        let bytes = sample().encode();
        // Torn anywhere: never an image.
        for len in [0, 5, HEADER_LEN, HEADER_LEN + 40, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(decode_in_chunks(&bytes[..len], 7), Err(DecodeError::Truncated), "{len}");
        }
        // A flipped bit in a value: the checksum catches it at the end.
        let mut bad = bytes.clone();
        let at = bytes.len() - 200;
        bad[at] ^= 0x40;
        assert!(decode_in_chunks(&bad, 13).is_err());
        // A wrong checksum.
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode_in_chunks(&bad, 64), Err(DecodeError::BadChecksum));
        // Bytes after the frame.
        let mut long = bytes.clone();
        long.extend_from_slice(b"xx");
        assert_eq!(decode_in_chunks(&long, 5), Err(DecodeError::TrailingBytes));
        // Not a snapshot at all.
        assert_eq!(
            decode_in_chunks(b"MOKVSREFxxxxxxxxxxxxxxxxxxxx", 4),
            Err(DecodeError::BadMagic)
        );
        // Fed after an error: still an error.
        let mut d = SnapshotDecoder::new();
        assert!(d.feed(b"XXXXXXXXXXXXXXXXXXXXXXXXXX").is_err());
        assert!(d.feed(&bytes).is_err());
    }

    #[test]
    fn a_decoder_checked_by_its_caller_leaves_the_checksum_to_it() {
        let image = sample();
        let bytes = image.encode();
        let decode = |bytes: &[u8], checked_by_caller: bool| {
            let mut d = SnapshotDecoder::new();
            if checked_by_caller {
                d = d.checked_by_caller();
            }
            d.feed(bytes)?;
            d.finish()
        };
        assert_eq!(decode(&bytes, true).unwrap(), image);
        let mut wrong = bytes.clone();
        *wrong.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&wrong, false), Err(DecodeError::BadChecksum));
        assert_eq!(decode(&wrong, true).unwrap(), image);
        // Everything else is still checked.
        assert_eq!(decode(&bytes[..bytes.len() - 1], true), Err(DecodeError::Truncated));
        assert_eq!(decode(&[&bytes[..], b"x"].concat(), true), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn every_handed_out_key_must_reach_the_map() {
        let image = sample();
        let bytes = image.encode();
        // A batch lost on the way: refused, not a state with keys missing.
        let mut d = SnapshotDecoder::handing_out_keys();
        let mut keys = SnapshotKeys::new();
        let mut lost = false;
        for c in bytes.chunks(100) {
            d.feed(c).unwrap();
            while let Some(batch) = d.take_keys() {
                if lost {
                    keys.insert(batch);
                } else {
                    lost = true;
                }
            }
        }
        assert!(lost);
        assert_eq!(
            d.finish_with(keys).unwrap_err(),
            DecodeError::Invalid("decoded keys missing from the map")
        );
        // Batches never taken are inserted by finish_with itself.
        let mut d = SnapshotDecoder::handing_out_keys();
        d.feed(&bytes).unwrap();
        assert_eq!(d.finish_with(SnapshotKeys::new()).unwrap(), image);
        // Each kind of decoder is finished its own way.
        let mut d = SnapshotDecoder::handing_out_keys();
        d.feed(&bytes).unwrap();
        assert!(d.finish().is_err());
        let mut d = SnapshotDecoder::new();
        d.feed(&bytes).unwrap();
        assert!(d.take_keys().is_none());
        assert!(d.finish_with(SnapshotKeys::new()).is_err());
    }

    proptest! {
        #[test]
        fn streaming_decode_equals_one_buffer_decode(
            ops in proptest::collection::vec(crate::kv::tests::arb_op(), 0..40),
            chunk in 1usize..200,
            flip in proptest::option::of((any::<usize>(), 1u8..)),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let state = build(&ops);
            let mut bytes = SnapshotImage { index: state.applied_index(), term: 2, state }.encode();
            if let Some((at, x)) = flip {
                let i = at % bytes.len();
                bytes[i] ^= x;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            let want = SnapshotImage::decode(&bytes);
            let got = decode_in_chunks(&bytes, chunk);
            let handed_out = decode_handing_out_keys(&bytes, chunk);
            match (want, got, handed_out) {
                (Ok(w), Ok(g), Ok(h)) => {
                    prop_assert_eq!(&w, &g);
                    prop_assert_eq!(&w, &h);
                }
                (Err(_), Err(_), Err(_)) => {}
                (w, g, h) => prop_assert!(
                    false,
                    "one buffer {:?}, streaming {:?}, keys handed out {:?}",
                    w.is_ok(),
                    g.is_ok(),
                    h.is_ok()
                ),
            }
        }
    }
}
