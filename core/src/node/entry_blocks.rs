//! Where the bytes of the entries this node proposes live: in blocks of
//! [`ENTRY_BLOCK_BYTES`] shared by the entries written into them, instead of one allocation
//! per entry.
//!
//! Why: an entry's bytes live until the in-memory log is trimmed, while the key it writes
//! lives on in the state machine. Allocated one by one on the same thread, the two alternate
//! in the heap, so every trimmed entry leaves a hole between live keys that the allocator can
//! neither merge nor return: ~32 MiB of entry-sized holes on a leader holding 1M keys of 256
//! bytes. Entries that share a block are freed a block at a time (entries leave the log in
//! order), and the keys stay packed.

use bytes::{Bytes, BytesMut};

/// Bytes per block. An entry larger than what is left of a block gets a block of its own
/// size.
pub(crate) const ENTRY_BLOCK_BYTES: usize = 256 << 10;

/// The block being filled. Invariant: nothing but `split` ever reads what it holds, so every
/// byte written is handed out exactly once.
#[derive(Debug, Default)]
pub(crate) struct EntryBlocks {
    block: BytesMut,
}

impl EntryBlocks {
    /// A copy of `bytes` in the current block (a new block when it does not fit).
    pub(crate) fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if self.block.capacity() - self.block.len() < bytes.len() {
            self.block = BytesMut::with_capacity(ENTRY_BLOCK_BYTES.max(bytes.len()));
        }
        self.block.extend_from_slice(bytes);
        self.block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_a_block_until_it_is_full() {
        let mut blocks = EntryBlocks::default();
        let a = blocks.copy(b"first");
        let b = blocks.copy(b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        // Adjacent in one block.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let big = vec![7u8; ENTRY_BLOCK_BYTES];
        let c = blocks.copy(&big);
        assert_eq!(&c[..], &big[..]);
        // Did not fit what was left: a block of its own, and the next copy a fresh one.
        let d = blocks.copy(b"next");
        assert_eq!(&d[..], b"next");
        assert_ne!(c.as_ptr().wrapping_add(c.len()), d.as_ptr());
        assert_eq!(&a[..], b"first", "earlier copies are untouched");
    }
}
