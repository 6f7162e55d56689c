//! The backup file format: the keys of a cluster at one applied index, for `mokv snapshot save`
//! and `mokvd restore`. Independent of Raft and of the node's own snapshot frame (it holds no
//! term, configuration, members or client sessions, only data), so that it stays readable when
//! those change.
//!
//! Layout (little-endian; strings and byte strings with a u32 length prefix):
//!
//! ```text
//! magic b"MOKVBKUP" | version u32 | cluster_id u64 (0: none) | applied_index u64
//! | max_mod_revision u64 | cluster_time_ms u64 | keys u64 | data_bytes u64
//! | keys × (key str | value bytes | create_revision u64 | mod_revision u64 | version u64)
//! | crc32 u32 over every byte before it
//! ```
//!
//! Keys are in ascending byte order. `data_bytes` is the length of the key records, so the
//! file length is known from the header: a short file is reported as [`BackupError::Truncated`]
//! before anything else is parsed. The checksum is CRC-32 (IEEE, `crc32fast`, as in the node's
//! snapshot frame): it detects torn or corrupted files, not tampering.
//!
//! Encoding is incremental ([`BackupEncoder`] yields chunks of a bounded size), so a node can
//! stream a backup without holding its whole encoding; decoding checks the whole file first.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::kv::{Entry, StateMachine, Versioned};

const MAGIC: &[u8; 8] = b"MOKVBKUP";
/// Format version written by this build (and the only one it reads).
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// Magic, version and six u64 fields.
const HEADER_BYTES: usize = 8 + 4 + 8 * 6;
const TRAILER_BYTES: usize = 4;
/// Fixed part of one key record: two length prefixes and three u64s.
const RECORD_OVERHEAD_BYTES: u64 = 4 + 4 + 8 * 3;

/// Why bytes are not a usable backup. Messages never contain keys or values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file does not start with the backup magic: not a mokv backup.
    #[error("not a mokv backup file (bad magic bytes)")]
    NotABackup,
    /// Written by a newer (or unknown) format version.
    #[error("unsupported backup format version {0}")]
    UnsupportedVersion(u32),
    /// The file is shorter than its header says: cut off while written or copied.
    #[error("backup file truncated: {actual_bytes} bytes, expected {expected_bytes}")]
    Truncated { expected_bytes: u64, actual_bytes: u64 },
    /// The file is longer than its header says.
    #[error("backup file has {extra_bytes} bytes after its end")]
    TrailingBytes { extra_bytes: u64 },
    /// The checksum does not match the contents: the file was corrupted.
    #[error("backup checksum mismatch: the file is corrupt")]
    ChecksumMismatch,
    /// The checksum matched but a field is impossible (a bug in the writer, or a forged file).
    #[error("backup content invalid: {0}")]
    Invalid(&'static str),
}

impl From<DecodeError> for BackupError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Invalid(what) => BackupError::Invalid(what),
            DecodeError::InvalidUtf8 => BackupError::Invalid("key is not UTF-8"),
            // The length was checked against the header before any record was read, so a
            // record running past the end is a header/records disagreement.
            _ => BackupError::Invalid("key records do not match the header"),
        }
    }
}

/// What a backup says about itself (its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackupInfo {
    /// The cluster it was taken from (`None` for a node that had none).
    pub cluster_id: Option<u64>,
    /// The log index the data is as of: the cluster's revision at that point.
    pub applied_index: u64,
    /// The highest `mod_revision` of any key (0 for no keys).
    pub max_mod_revision: u64,
    /// The state machine's clock (largest proposal stamp applied), in Unix milliseconds.
    pub cluster_time_ms: u64,
    /// Number of keys.
    pub keys: u64,
    /// Bytes of the key records (keys, values and their fixed per-key part).
    pub data_bytes: u64,
}

impl BackupInfo {
    /// Length of the whole file this header describes.
    pub fn file_bytes(&self) -> u64 {
        (HEADER_BYTES + TRAILER_BYTES) as u64 + self.data_bytes
    }

    fn encode_to(&self, w: &mut Writer) {
        w.put_raw(MAGIC);
        w.put_u32(BACKUP_FORMAT_VERSION);
        w.put_u64(self.cluster_id.unwrap_or(0));
        w.put_u64(self.applied_index);
        w.put_u64(self.max_mod_revision);
        w.put_u64(self.cluster_time_ms);
        w.put_u64(self.keys);
        w.put_u64(self.data_bytes);
    }

    /// Reads the header; `bytes` may be just its first [`HEADER_BYTES`].
    fn decode(bytes: &[u8]) -> Result<BackupInfo, BackupError> {
        let short = |_| BackupError::Truncated {
            expected_bytes: (HEADER_BYTES + TRAILER_BYTES) as u64,
            actual_bytes: bytes.len() as u64,
        };
        let mut r = Reader::new(bytes);
        let magic = r.get_raw(MAGIC.len()).map_err(|_| {
            // A short file that could still be the start of a backup is truncated;
            // anything else is not a backup.
            if MAGIC.starts_with(bytes) {
                short(())
            } else {
                BackupError::NotABackup
            }
        })?;
        if magic != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let version = r.get_u32().map_err(|_| short(()))?;
        if version != BACKUP_FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion(version));
        }
        let mut field = || r.get_u64().map_err(|_| short(()));
        Ok(BackupInfo {
            cluster_id: Some(field()?).filter(|id| *id != 0),
            applied_index: field()?,
            max_mod_revision: field()?,
            cluster_time_ms: field()?,
            keys: field()?,
            data_bytes: field()?,
        })
    }
}

/// The data of a state machine at its applied index, copied for a backup: what a node answers
/// a backup request with (see `Request::Backup`). Encode it with [`BackupSource::encoder`], away
/// from the task that drives the node.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupSource {
    info: BackupInfo,
    data: crate::kv::DataMap,
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys or values.
        f.debug_struct("BackupSource").field("info", &self.info).finish_non_exhaustive()
    }
}

impl BackupSource {
    /// A copy of `state`'s data (one clone of the map), labelled with `cluster_id`.
    pub(crate) fn copy_of(state: &StateMachine, cluster_id: Option<u64>) -> BackupSource {
        let data = state.data().clone();
        BackupSource { info: info_of(&data, state, cluster_id), data }
    }

    /// The header the encoding will carry.
    pub fn info(&self) -> &BackupInfo {
        &self.info
    }

    /// The file, as chunks of exactly `chunk_bytes` bytes (the last one shorter); their
    /// concatenation is the backup file. At most one record plus one chunk is held at a time.
    pub fn encoder(self, chunk_bytes: usize) -> BackupEncoder {
        let mut header = Writer::with_capacity(HEADER_BYTES);
        self.info.encode_to(&mut header);
        let buf = header.finish();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&buf);
        BackupEncoder {
            items: self.data.into_entries(),
            chunk_bytes: chunk_bytes.max(1),
            buf,
            pos: 0,
            crc,
            done: false,
        }
    }
}

fn info_of(data: &crate::kv::DataMap, state: &StateMachine, cluster_id: Option<u64>) -> BackupInfo {
    BackupInfo {
        cluster_id,
        applied_index: state.applied_index(),
        max_mod_revision: data.iter().map(Entry::mod_index).max().unwrap_or(0),
        cluster_time_ms: state.cluster_time_ms(),
        keys: data.len() as u64,
        data_bytes: data.iter().map(|e| record_bytes(e.key_bytes(), e.value())).sum(),
    }
}

fn record_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + RECORD_OVERHEAD_BYTES
}

/// Yields a backup file chunk by chunk (see [`BackupSource::encoder`]).
pub struct BackupEncoder {
    items: crate::kv::IntoEntries,
    chunk_bytes: usize,
    /// Encoded bytes not handed out yet start at `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// Over every byte put into `buf` so far.
    crc: crc32fast::Hasher,
    /// The trailer is in `buf`.
    done: bool,
}

impl std::fmt::Debug for BackupEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys or values.
        f.debug_struct("BackupEncoder")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Iterator for BackupEncoder {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        // Refill only when less than a chunk is left, after moving that rest (less than a
        // chunk) to the front: the buffer never holds more than one chunk plus one record.
        while self.buf.len() - self.pos < self.chunk_bytes && !self.done {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let start = self.buf.len();
            match self.items.next() {
                Some(e) => {
                    // A record is a key in the snapshot's encoding.
                    let mut w = Writer::with_capacity(e.key_bytes().len() + e.value().len() + 32);
                    crate::kv::encode_key_to(&mut w, &e);
                    self.buf.extend_from_slice(&w.finish());
                    self.crc.update(&self.buf[start..]);
                }
                None => {
                    let crc = std::mem::take(&mut self.crc).finalize();
                    self.buf.extend_from_slice(&crc.to_le_bytes());
                    self.done = true;
                }
            }
        }
        if self.pos == self.buf.len() {
            return None;
        }
        let end = (self.pos + self.chunk_bytes).min(self.buf.len());
        let chunk = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Some(chunk)
    }
}

/// A decoded backup file: its header and its keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Backup {
    info: BackupInfo,
    pub(crate) data: BTreeMap<String, Versioned>,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Backup {
    /// Checks and reads a whole backup file: its length against the header, then the
    /// checksum, then every record (ascending keys, possible revisions). Nothing of a file that
    /// fails any check is returned.
    pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
        let info = check(bytes)?;
        let records = &bytes[HEADER_BYTES..bytes.len() - TRAILER_BYTES];
        let mut r = Reader::new(records);
        let mut data = BTreeMap::new();
        for _ in 0..info.keys {
            let key = r.get_str()?;
            if data.last_key_value().is_some_and(|(prev, _): (&String, _)| prev.as_str() >= key) {
                return Err(BackupError::Invalid("keys not in ascending order"));
            }
            let key = key.to_owned();
            let v = Versioned {
                value: r.get_bytes()?.to_vec(),
                create_index: r.get_u64()?,
                mod_index: r.get_u64()?,
                version: r.get_u64()?,
            };
            if v.version == 0
                || v.create_index == 0
                || v.create_index > v.mod_index
                || v.mod_index > info.max_mod_revision
            {
                return Err(BackupError::Invalid("key revisions"));
            }
            data.insert(key, v);
        }
        r.finish()?;
        let max_mod = data.values().map(|v| v.mod_index).max().unwrap_or(0);
        if max_mod != info.max_mod_revision || info.max_mod_revision > info.applied_index {
            return Err(BackupError::Invalid("revisions do not match the header"));
        }
        Ok(Backup { info, data })
    }

    /// Checks a whole backup file exactly as [`Backup::decode`] does (length, checksum, every
    /// record) and returns its header: what `mokv snapshot status` shows.
    pub fn verify(bytes: &[u8]) -> Result<BackupInfo, BackupError> {
        Backup::decode(bytes).map(|b| b.info)
    }

    /// The file's header.
    pub fn info(&self) -> &BackupInfo {
        &self.info
    }

    /// Every key in ascending order with its value and revisions.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Versioned)> {
        self.data.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Header, length and checksum checks of a whole file.
fn check(bytes: &[u8]) -> Result<BackupInfo, BackupError> {
    let info = BackupInfo::decode(bytes)?;
    let expected_bytes = info.file_bytes();
    let actual_bytes = bytes.len() as u64;
    if actual_bytes < expected_bytes {
        return Err(BackupError::Truncated { expected_bytes, actual_bytes });
    }
    if actual_bytes > expected_bytes {
        return Err(BackupError::TrailingBytes { extra_bytes: actual_bytes - expected_bytes });
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    let stored = u32::from_le_bytes(trailer.try_into().map_err(|_| BackupError::ChecksumMismatch)?);
    if crc32fast::hash(body) != stored {
        return Err(BackupError::ChecksumMismatch);
    }
    Ok(info)
}

#[cfg(test)]
mod tests;
