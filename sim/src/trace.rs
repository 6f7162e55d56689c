//! The trace hash: one number that summarises everything that crossed a simulated cluster's
//! network and every reply it gave, in order. Two runs of a seed must give the same number.
//!
//! It hashes encoded bytes, never `Debug` text: peer messages as their protobuf encoding (the
//! bytes a node hands to its transport), gossip datagrams as sent, and replies in the stable
//! binary form of [`encode_reply`]. Renaming a field or deriving `Debug` differently therefore
//! leaves it unchanged; changing what goes over the wire or what a client is told changes it.

use mokv_core::codec::Writer;
use mokv_core::{Error, Reply, Response};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running FNV-1a hash over framed byte strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(FNV_OFFSET)
    }
}

impl TraceHash {
    /// Mixes in one event at `tick`: each part is followed by a separator byte, so the framing
    /// of the parts counts, and the tick is mixed in last.
    pub fn mix(&mut self, tick: u64, parts: &[&[u8]]) {
        for part in parts {
            for b in part.iter() {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(FNV_PRIME);
            }
            self.0 ^= 0xff;
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self.0 ^= tick;
    }

    /// The hash so far.
    pub fn value(self) -> u64 {
        self.0
    }
}

// Tags of the reply encoding. Fixed: changing one changes every trace hash.
const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_GET: u8 = 3;
const TAG_RANGE: u8 = 4;
const TAG_MEMBERSHIP: u8 = 5;
const TAG_TRANSFER_STARTED: u8 = 6;
const TAG_SESSION_REGISTERED: u8 = 7;
const TAG_ERR_INVALID_ARGUMENT: u8 = 0x81;
const TAG_ERR_NOT_LEADER: u8 = 0x82;
const TAG_ERR_UNAVAILABLE: u8 = 0x83;
const TAG_ERR_INDETERMINATE: u8 = 0x84;
const TAG_ERR_SESSION: u8 = 0x85;
/// A response or error variant added to the core after this encoding: give it its own tag.
const TAG_UNKNOWN: u8 = 0xff;

/// A reply's result in a stable binary form (the request id is hashed next to it).
///
/// Every field a client can see is encoded, little-endian, strings and bytes length-prefixed
/// ([`Writer`]). An error is its kind plus, for the kinds with a reason, the reason's message
/// (the text the gRPC status carries, a documented contract that never holds keys or values),
/// and for `NotLeader` the hint's fields.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut w = Writer::new();
    match &reply.result {
        Ok(response) => encode_response(&mut w, response),
        Err(e) => encode_error(&mut w, e),
    }
    w.finish()
}

fn encode_response(w: &mut Writer, response: &Response) {
    match response {
        Response::Set { revision } => {
            w.put_u8(TAG_SET);
            w.put_u64(*revision);
        }
        Response::Delete { existed, revision } => {
            w.put_u8(TAG_DELETE);
            w.put_bool(*existed);
            w.put_u64(*revision);
        }
        Response::Get(v) => {
            w.put_u8(TAG_GET);
            w.put_bool(v.is_some());
            if let Some(v) = v {
                w.put_bytes(&v.value);
                w.put_u64(v.create_index);
                w.put_u64(v.mod_index);
                w.put_u64(v.version);
            }
        }
        Response::Range(page) => {
            w.put_u8(TAG_RANGE);
            w.put_u64(page.items.len() as u64);
            for item in &page.items {
                w.put_str(&item.key);
                w.put_bytes(&item.value);
                w.put_u64(item.create_index);
                w.put_u64(item.mod_index);
                w.put_u64(item.version);
            }
            w.put_str(&page.next_page_token);
        }
        Response::Membership { index } => {
            w.put_u8(TAG_MEMBERSHIP);
            w.put_u64(*index);
        }
        Response::TransferStarted => w.put_u8(TAG_TRANSFER_STARTED),
        Response::SessionRegistered { client_id } => {
            w.put_u8(TAG_SESSION_REGISTERED);
            w.put_u64(*client_id);
        }
        _ => w.put_u8(TAG_UNKNOWN),
    }
}

fn encode_error(w: &mut Writer, e: &Error) {
    match e {
        Error::InvalidArgument(why) => {
            w.put_u8(TAG_ERR_INVALID_ARGUMENT);
            w.put_str(&why.to_string());
        }
        Error::NotLeader { leader } => {
            w.put_u8(TAG_ERR_NOT_LEADER);
            w.put_bool(leader.is_some());
            if let Some(hint) = leader {
                w.put_u64(hint.id);
                w.put_str(&hint.name);
                w.put_str(&hint.rpc_addr);
            }
        }
        Error::Unavailable(why) => {
            w.put_u8(TAG_ERR_UNAVAILABLE);
            w.put_str(&why.to_string());
        }
        Error::Indeterminate => w.put_u8(TAG_ERR_INDETERMINATE),
        Error::Session(why) => {
            w.put_u8(TAG_ERR_SESSION);
            w.put_str(&why.to_string());
        }
        other => {
            w.put_u8(TAG_UNKNOWN);
            w.put_str(&other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use mokv_core::Versioned;
    use mokv_core::{LeaderHint, Unavailable};

    use super::*;

    fn reply(result: Result<Response, Error>) -> Reply {
        Reply { id: 7, result }
    }

    #[test]
    fn replies_that_differ_encode_differently() {
        let v =
            |mod_index| Versioned { value: b"v1".to_vec(), create_index: 3, mod_index, version: 1 };
        let all = [
            reply(Ok(Response::Set { revision: 4 })),
            reply(Ok(Response::Set { revision: 5 })),
            reply(Ok(Response::Delete { existed: true, revision: 5 })),
            reply(Ok(Response::Delete { existed: false, revision: 5 })),
            reply(Ok(Response::Get(None))),
            reply(Ok(Response::Get(Some(v(4))))),
            reply(Ok(Response::Get(Some(v(5))))),
            reply(Ok(Response::TransferStarted)),
            reply(Err(Error::NotLeader { leader: None })),
            reply(Err(Error::NotLeader {
                leader: Some(LeaderHint { id: 2, name: "n2".into(), rpc_addr: "a".into() }),
            })),
            reply(Err(Error::Unavailable(Unavailable::Busy))),
            reply(Err(Error::Unavailable(Unavailable::Dropped))),
            reply(Err(Error::Indeterminate)),
        ];
        let encoded: std::collections::BTreeSet<Vec<u8>> = all.iter().map(encode_reply).collect();
        assert_eq!(encoded.len(), all.len(), "two different replies encode alike");
    }

    #[test]
    fn encoding_is_fixed() {
        // The bytes are part of every recorded trace hash: they must not drift.
        assert_eq!(
            encode_reply(&reply(Ok(Response::Set { revision: 0x0102 }))),
            [TAG_SET, 2, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(encode_reply(&reply(Err(Error::Indeterminate))), [TAG_ERR_INDETERMINATE]);
    }

    #[test]
    fn framing_counts() {
        let mut a = TraceHash::default();
        a.mix(1, &[b"ab", b"c"]);
        let mut b = TraceHash::default();
        b.mix(1, &[b"a", b"bc"]);
        assert_ne!(a.value(), b.value());
    }
}
