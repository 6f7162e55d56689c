//! Little-endian binary encoding shared by every durable or replicated format of the core
//! (commands, snapshots, member records, request contexts).
//!
//! Decoding never panics and never pre-allocates from an untrusted length: every read is
//! bounds-checked against the remaining input, so corrupted or truncated bytes give a
//! [`DecodeError`].

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("input truncated")]
    Truncated,
    /// The input does not start with the expected magic bytes.
    #[error("bad magic bytes")]
    BadMagic,
    /// A format version this build does not understand.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// The checksum over the payload does not match.
    #[error("checksum mismatch")]
    BadChecksum,
    /// A string field is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// An enum tag this build does not know.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// Bytes left over after the value ended.
    #[error("trailing bytes after value")]
    TrailingBytes,
    /// A field holds a value outside its allowed range.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// Appends values to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity) }
    }

    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn put_bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Raw bytes with no length prefix.
    pub fn put_raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Length-prefixed (u32) bytes.
    ///
    /// # Panics
    /// If `v` is 4 GiB or longer; every caller bounds its inputs far below that.
    pub fn put_bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).expect("field shorter than 4 GiB");
        self.put_u32(len);
        self.buf.extend_from_slice(v);
    }

    /// Length-prefixed UTF-8.
    pub fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes());
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values written by [`Writer`] from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn get_raw(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    pub fn get_u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.get_raw(1)?[0])
    }

    pub fn get_bool(&mut self) -> Result<bool, DecodeError> {
        match self.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("bool")),
        }
    }

    pub fn get_u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.get_raw(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn get_u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.get_raw(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Length-prefixed bytes; the length is checked against the input before anything is read.
    pub fn get_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.get_u32()? as usize;
        self.get_raw(len)
    }

    pub fn get_str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.get_bytes()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A count of following items, each at least `min_item_bytes` long: rejects counts the
    /// remaining input cannot hold, so callers may use it as a capacity hint safely.
    pub fn get_count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.get_u64()?;
        let max = self.rest.len() / min_item_bytes.max(1);
        if n > max as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_all_kinds() {
        let mut w = Writer::new();
        w.put_u8(7);
        w.put_bool(true);
        w.put_u32(0xdead_beef);
        w.put_u64(u64::MAX);
        w.put_bytes(b"abc");
        w.put_str("ключ");
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.get_u8().unwrap(), 7);
        assert!(r.get_bool().unwrap());
        assert_eq!(r.get_u32().unwrap(), 0xdead_beef);
        assert_eq!(r.get_u64().unwrap(), u64::MAX);
        assert_eq!(r.get_bytes().unwrap(), b"abc");
        assert_eq!(r.get_str().unwrap(), "ключ");
        r.finish().unwrap();
    }

    #[test]
    fn huge_length_prefix_is_truncated_not_allocated() {
        let mut w = Writer::new();
        w.put_u32(u32::MAX);
        let bytes = w.finish();
        assert_eq!(Reader::new(&bytes).get_bytes(), Err(DecodeError::Truncated));
        let mut w = Writer::new();
        w.put_u64(u64::MAX);
        let bytes = w.finish();
        assert_eq!(Reader::new(&bytes).get_count(1), Err(DecodeError::Truncated));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.get_str();
            let _ = r.get_count(3);
            let _ = r.get_u64();
            let _ = r.get_bool();
        }
    }
}
