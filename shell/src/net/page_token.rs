//! Opaque `Range` page tokens. The core's token names the last key it scanned, before the
//! caller's authorization filter, so handing it out as is would tell a caller the names of keys
//! it may not read. The KV service seals it instead: ChaCha20-Poly1305 (ring) under a key
//! derived from the cluster key (SHA-256 of a context string and the secret, kept apart from
//! the gossip key by its context), with a random 96-bit nonce, the request's prefix as
//! associated data, and the plaintext padded to a multiple of [`PAD_BYTES`] (the token shows
//! only the length bucket of the key). Every node of a cluster derives the same key, so a token
//! continues on any node; a token that does not open is INVALID_ARGUMENT.
//!
//! Token: `"p1." || hex(nonce (12) || ciphertext || tag (16))`.
//!
//! An embedded node ([`crate::node::embedded`]: no OS randomness, no secret from its program)
//! uses [`PageTokens::embedded`]: a fixed key shared by every embedded node and nonces from a
//! per-node counter. Its tokens name no key in clear and are tamper-evident, but anyone with this
//! source can open them: there the embedding program is the trust boundary.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "p1.";
const KEY_CONTEXT: &[u8] = b"mokv page token key v1\0";
const AAD_CONTEXT: &[u8] = b"p1\0";
/// Plaintexts are padded to a multiple of this.
const PAD_BYTES: usize = 64;
const TAG_BYTES: usize = 16;

/// Seals and opens page tokens.
pub struct PageTokens {
    key: LessSafeKey,
    nonces: Nonces,
}

/// Where nonces come from: never twice the same under one key.
enum Nonces {
    /// Random 96-bit nonces (`mokvd`: nodes of a cluster share the key, so no counter).
    Os(SystemRandom),
    /// `node id (8) || counter (4)`: unique per embedded node for 2^32 tokens.
    Counter { node: u64, next: std::sync::atomic::AtomicU32 },
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

/// A token that did not open (another cluster, another prefix, tampered or malformed). Never
/// echoes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid page token")]
pub struct InvalidToken;

impl PageTokens {
    /// The key every node of a cluster derives from the cluster key.
    pub fn from_cluster_key(secret: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(KEY_CONTEXT);
        ctx.update(secret);
        Self::with_key(ctx.finish().as_ref())
    }

    /// The tokens of embedded node `node_id` (see the module doc): deterministic, a key shared
    /// by every embedded node.
    pub fn embedded(node_id: u64) -> Self {
        let mut t = Self::from_cluster_key(b"mokv embedded node");
        t.nonces = Nonces::Counter { node: node_id, next: std::sync::atomic::AtomicU32::new(0) };
        t
    }

    fn with_key(key: &[u8]) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .expect("a 32-byte key always fits ChaCha20-Poly1305");
        Self { key: LessSafeKey::new(unbound), nonces: Nonces::Os(SystemRandom::new()) }
    }

    fn nonce(&self) -> Option<[u8; NONCE_LEN]> {
        let mut nonce = [0u8; NONCE_LEN];
        match &self.nonces {
            Nonces::Os(rng) => rng.fill(&mut nonce).ok()?,
            Nonces::Counter { node, next } => {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n == u32::MAX {
                    return None; // exhausted: never reuse a nonce
                }
                nonce[..8].copy_from_slice(&node.to_be_bytes());
                nonce[8..].copy_from_slice(&n.to_be_bytes());
            }
        }
        Some(nonce)
    }

    fn aad(prefix: &str) -> Vec<u8> {
        let mut aad = AAD_CONTEXT.to_vec();
        aad.extend_from_slice(prefix.as_bytes());
        aad
    }

    /// Seals the core's token for a range over `prefix`; "" stays "" (no more pages). `None`
    /// only without a fresh nonce (no OS randomness, or an embedded node's counter exhausted).
    pub fn seal(&self, prefix: &str, core_token: &str) -> Option<String> {
        if core_token.is_empty() {
            return Some(String::new());
        }
        let len = u32::try_from(core_token.len()).ok()?;
        let mut body = Vec::with_capacity(4 + core_token.len() + PAD_BYTES + TAG_BYTES);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(core_token.as_bytes());
        body.resize(body.len().div_ceil(PAD_BYTES) * PAD_BYTES, 0);
        let nonce = self.nonce()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(prefix)),
                &mut body,
            )
            .ok()?;
        let mut out = String::with_capacity(PREFIX.len() + 2 * (NONCE_LEN + body.len()));
        out.push_str(PREFIX);
        for b in nonce.iter().chain(&body) {
            out.push_str(&format!("{b:02x}"));
        }
        Some(out)
    }

    /// Opens a token issued by [`seal`](Self::seal) for the same `prefix`; "" stays "".
    pub fn open(&self, prefix: &str, token: &str) -> Result<String, InvalidToken> {
        if token.is_empty() {
            return Ok(String::new());
        }
        let hex = token.strip_prefix(PREFIX).ok_or(InvalidToken)?.as_bytes();
        if hex.len() % 2 != 0 || hex.len() / 2 < NONCE_LEN + TAG_BYTES {
            return Err(InvalidToken);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(InvalidToken),
        };
        let mut bytes = hex
            .chunks_exact(2)
            .map(|p| Ok((nibble(p[0])? << 4) | nibble(p[1])?))
            .collect::<Result<Vec<u8>, InvalidToken>>()?;
        let mut body = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| InvalidToken)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(prefix)), &mut body)
            .map_err(|_| InvalidToken)?;
        let (len, rest) = plain.split_first_chunk::<4>().ok_or(InvalidToken)?;
        let len = u32::from_be_bytes(*len) as usize;
        let core = rest.get(..len).ok_or(InvalidToken)?;
        String::from_utf8(core.to_vec()).map_err(|_| InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hide_the_key_and_open_only_with_the_cluster_key_and_prefix() {
        let a = PageTokens::from_cluster_key(b"cluster secret one");
        let a2 = PageTokens::from_cluster_key(b"cluster secret one");
        let b = PageTokens::from_cluster_key(b"cluster secret two");
        let core = "v1.7365637265742f6b6579"; // the core's token naming "secret/key"
        let t = a.seal("", core).unwrap();
        assert!(!t.contains("7365637265742f6b6579") && !t.contains("secret"), "{t}");
        assert_ne!(t, a.seal("", core).unwrap(), "a fresh nonce each time");
        assert_eq!(a2.open("", &t).unwrap(), core, "another node of the cluster opens it");
        assert_eq!(b.open("", &t), Err(InvalidToken), "another cluster does not");
        assert_eq!(a.open("s", &t), Err(InvalidToken), "bound to its prefix");
        // Same length bucket for short keys of different lengths.
        assert_eq!(a.seal("", "v1.61").unwrap().len(), t.len());
        let mut tampered = t.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(a.open("", std::str::from_utf8(&tampered).unwrap()), Err(InvalidToken));
        for junk in ["x", "p1.", "p1.zz", "v1.61", "p1.00"] {
            assert_eq!(a.open("", junk), Err(InvalidToken), "{junk}");
        }
        let e1 = PageTokens::embedded(1);
        let e2 = PageTokens::embedded(2);
        let t1 = e1.seal("", core).unwrap();
        assert_ne!(t1, e1.seal("", core).unwrap());
        assert_eq!(e2.open("", &t1).unwrap(), core, "embedded nodes share their key");
        assert_eq!(a.seal("", "").unwrap(), "");
        assert_eq!(a.open("", "").unwrap(), "");
    }
}
