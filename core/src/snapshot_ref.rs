//! What the core keeps of a snapshot: a small, checksummed reference to the snapshot file the
//! shell made durable. raft-rs's `Snapshot.data` and [`PersistBatch::snapshot`] hold this
//! encoding, never the snapshot itself; the bytes stay in the file, which the shell streams to
//! followers and reads back at start-up.
//!
//! [`PersistBatch::snapshot`]: crate::persist::PersistBatch::snapshot

use crate::codec::{DecodeError, Reader, Writer};

const MAGIC: &[u8; 8] = b"MOKVSREF";
const VERSION: u8 = 1;
/// Magic, version, index, term, length, file checksum, then the reference's own checksum.
const ENCODED_LEN: usize = 8 + 1 + 8 + 8 + 8 + 4 + 4;

/// Names one durable snapshot file and pins its content.
///
/// Encoding ([`SnapshotRef::encode`]): magic `b"MOKVSREF"`, version (u8, 1), `index`, `term`,
/// `len_bytes` (u64 each), `crc32` (u32), then the CRC-32 of everything before it. A stored
/// full snapshot (magic `b"MOKVSNAP"`, written before snapshots were files) is told apart by
/// its magic ([`is_full_snapshot`](crate::snapshot::is_full_snapshot)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotRef {
    /// Log index of the last entry the snapshot includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Length of the file in bytes.
    pub len_bytes: u64,
    /// CRC-32 (IEEE, as `crc32fast`) of the whole file.
    pub crc32: u32,
}

impl SnapshotRef {
    /// The reference's durable encoding (small: [`SnapshotRef::ENCODED_LEN`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(ENCODED_LEN);
        w.put_raw(MAGIC);
        w.put_u8(VERSION);
        w.put_u64(self.index);
        w.put_u64(self.term);
        w.put_u64(self.len_bytes);
        w.put_u32(self.crc32);
        let mut bytes = w.finish();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads [`SnapshotRef::encode`]'s output; anything else is an error (wrong magic or
    /// version, wrong length, bad checksum).
    pub fn decode(bytes: &[u8]) -> Result<SnapshotRef, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.get_raw(MAGIC.len())? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        match r.get_u8()? {
            VERSION => {}
            v => return Err(DecodeError::UnsupportedVersion(u32::from(v))),
        }
        let index = r.get_u64()?;
        let term = r.get_u64()?;
        let len_bytes = r.get_u64()?;
        let crc32 = r.get_u32()?;
        let check = r.get_u32()?;
        r.finish()?;
        if crc32fast::hash(&bytes[..ENCODED_LEN - 4]) != check {
            return Err(DecodeError::BadChecksum);
        }
        Ok(SnapshotRef { index, term, len_bytes, crc32 })
    }

    /// Length of [`SnapshotRef::encode`]'s output.
    pub const ENCODED_LEN: usize = ENCODED_LEN;

    /// The file name of the snapshot: `<index>-<term>.snap`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.snap", self.index, self.term)
    }

    /// The (index, term) of a file named by [`SnapshotRef::file_name`], `None` for any other
    /// name.
    pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
        let (index, term) = name.strip_suffix(".snap")?.split_once('-')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(index) || !all_digits(term) {
            return None;
        }
        Some((index.parse().ok()?, term.parse().ok()?))
    }

    /// The reference of the file holding exactly `bytes` as the snapshot at (`index`, `term`).
    pub fn of_bytes(index: u64, term: u64, bytes: &[u8]) -> SnapshotRef {
        SnapshotRef { index, term, len_bytes: bytes.len() as u64, crc32: crc32fast::hash(bytes) }
    }
}

/// Checks that a file's bytes, fed in order, are what a [`SnapshotRef`] names: its length and
/// checksum. Memory: none beyond the running checksum.
#[derive(Debug, Clone)]
pub struct SnapshotFileCheck {
    want: SnapshotRef,
    len_bytes: u64,
    crc: crc32fast::Hasher,
}

/// A snapshot file that is not the one its reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileMismatch {
    /// More bytes than the reference's length.
    #[error("snapshot file longer than its reference ({want_bytes} bytes)")]
    TooLong { want_bytes: u64 },
    /// Fewer bytes than the reference's length.
    #[error("snapshot file of {got_bytes} bytes, its reference says {want_bytes}")]
    TooShort { got_bytes: u64, want_bytes: u64 },
    /// The right length, but another checksum.
    #[error("snapshot file checksum differs from its reference")]
    Checksum,
}

impl SnapshotFileCheck {
    /// A check of the file `want` names.
    pub fn new(want: SnapshotRef) -> Self {
        Self { want, len_bytes: 0, crc: crc32fast::Hasher::new() }
    }

    /// The next bytes of the file; an error as soon as they go past the length.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), SnapshotFileMismatch> {
        self.len_bytes += bytes.len() as u64;
        if self.len_bytes > self.want.len_bytes {
            return Err(SnapshotFileMismatch::TooLong { want_bytes: self.want.len_bytes });
        }
        self.crc.update(bytes);
        Ok(())
    }

    /// Bytes fed so far.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// `Ok` if the bytes fed are exactly the file the reference names.
    pub fn finish(self) -> Result<SnapshotRef, SnapshotFileMismatch> {
        if self.len_bytes != self.want.len_bytes {
            return Err(SnapshotFileMismatch::TooShort {
                got_bytes: self.len_bytes,
                want_bytes: self.want.len_bytes,
            });
        }
        if self.crc.finalize() != self.want.crc32 {
            return Err(SnapshotFileMismatch::Checksum);
        }
        Ok(self.want)
    }
}

/// Computes the reference of a file while it is written, chunk by chunk.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRefBuilder {
    len_bytes: u64,
    crc: crc32fast::Hasher,
}

impl SnapshotRefBuilder {
    /// The next bytes of the file.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.len_bytes += bytes.len() as u64;
        self.crc.update(bytes);
    }

    /// The reference of the file fed, as the snapshot at (`index`, `term`).
    pub fn finish(self, index: u64, term: u64) -> SnapshotRef {
        SnapshotRef { index, term, len_bytes: self.len_bytes, crc32: self.crc.finalize() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refs_round_trip_and_garbage_is_refused() {
        let r = SnapshotRef { index: 7, term: 3, len_bytes: 1 << 40, crc32: 0xdead_beef };
        let bytes = r.encode();
        assert_eq!(bytes.len(), SnapshotRef::ENCODED_LEN);
        assert_eq!(SnapshotRef::decode(&bytes), Ok(r));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(SnapshotRef::decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert_eq!(SnapshotRef::decode(&bad), Err(DecodeError::UnsupportedVersion(2)));
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert_eq!(SnapshotRef::decode(&bad), Err(DecodeError::BadChecksum));
        assert_eq!(SnapshotRef::decode(&bytes[..40]), Err(DecodeError::Truncated));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(SnapshotRef::decode(&long), Err(DecodeError::TrailingBytes));
        // A full snapshot is not a reference.
        let full = crate::snapshot::encode_state(1, 1, &crate::kv::StateMachine::default());
        assert_eq!(SnapshotRef::decode(&full), Err(DecodeError::BadMagic));
    }

    #[test]
    fn file_names_round_trip_and_others_are_not_snapshots() {
        let r = SnapshotRef { index: 120, term: 4, len_bytes: 9, crc32: 1 };
        assert_eq!(r.file_name(), "120-4.snap");
        assert_eq!(SnapshotRef::parse_file_name(&r.file_name()), Some((120, 4)));
        for name in ["120-4.snap.tmp", "x-4.snap", "120-.snap", "1204.snap", "-1-4.snap", "LOCK"] {
            assert_eq!(SnapshotRef::parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn a_file_check_wants_the_exact_bytes() {
        let bytes = b"0123456789".to_vec();
        let r = SnapshotRef::of_bytes(5, 2, &bytes);
        let mut b = SnapshotRefBuilder::default();
        b.feed(&bytes[..3]);
        b.feed(&bytes[3..]);
        assert_eq!(b.finish(5, 2), r);
        let mut c = SnapshotFileCheck::new(r);
        c.feed(&bytes[..4]).unwrap();
        c.feed(&bytes[4..]).unwrap();
        assert_eq!(c.finish(), Ok(r));
        let mut c = SnapshotFileCheck::new(r);
        c.feed(&bytes[..4]).unwrap();
        assert!(matches!(c.finish(), Err(SnapshotFileMismatch::TooShort { got_bytes: 4, .. })));
        let mut c = SnapshotFileCheck::new(r);
        assert!(c.feed(&[0; 11]).is_err());
        let mut c = SnapshotFileCheck::new(r);
        c.feed(b"0123456780").unwrap();
        assert_eq!(c.finish(), Err(SnapshotFileMismatch::Checksum));
    }

    proptest! {
        #[test]
        fn ref_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = SnapshotRef::decode(&bytes);
        }
    }
}
