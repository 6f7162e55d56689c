//! Sealing gossip datagrams with the cluster key: ChaCha20-Poly1305 (ring), a random 96-bit
//! nonce per datagram. A node without the key can neither read gossip nor inject members: a
//! datagram that does not open is dropped before the core sees it.
//!
//! Wire format: `version (1) || nonce (12) || ciphertext || tag (16)`; the version byte is
//! authenticated as associated data.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: u8 = 1;
/// Bytes a sealed datagram adds to its payload.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;
/// Keeps keys of different purposes apart even if an operator reuses a secret.
const KEY_CONTEXT: &[u8] = b"mokv gossip key v1\0";

/// The key derived from the configured cluster secret.
pub struct ClusterKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// A datagram that did not open: wrong key, tampered, truncated or another format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gossip datagram of {len} bytes did not authenticate")]
pub struct OpenError {
    pub len: usize,
}

impl ClusterKey {
    /// Derives the 256-bit key as SHA-256(context || secret).
    pub fn new(secret: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(KEY_CONTEXT);
        ctx.update(secret);
        let digest = ctx.finish();
        // A 32-byte key always fits ChaCha20-Poly1305.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, digest.as_ref())
            .expect("SHA-256 output is a valid ChaCha20 key");
        Self { key: LessSafeKey::new(unbound), rng: SystemRandom::new() }
    }

    /// Encrypts and authenticates `payload`. `None` only if the OS has no randomness.
    pub fn seal(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = payload.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([VERSION]),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Checks and decrypts a sealed datagram.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        let err = OpenError { len: datagram.len() };
        if datagram.len() < OVERHEAD || datagram[0] != VERSION {
            return Err(err);
        }
        let nonce: [u8; NONCE_LEN] = datagram[1..1 + NONCE_LEN].try_into().map_err(|_| err)?;
        let mut body = datagram[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from([VERSION]), &mut body)
            .map_err(|_| err)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let k = ClusterKey::new(b"a cluster secret of some length");
        let sealed = k.seal(b"hello members").unwrap();
        assert_eq!(sealed.len(), 13 + OVERHEAD);
        assert_eq!(k.open(&sealed).unwrap(), b"hello members");
        // Two seals of one payload differ (fresh nonce).
        assert_ne!(k.seal(b"hello members").unwrap(), sealed);

        let other = ClusterKey::new(b"another cluster secret, longer");
        assert!(other.open(&sealed).is_err(), "wrong key");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(k.open(&t).is_err(), "bit flip at {i}");
        }
        for len in 0..sealed.len() {
            assert!(k.open(&sealed[..len]).is_err(), "truncated to {len}");
        }
        assert!(k.open(b"plain foca bytes, never sealed").is_err());
    }
}
