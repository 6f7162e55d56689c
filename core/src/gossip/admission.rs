//! The bound on foca's member table: a datagram's sender and updates that would add a member
//! (a new gossip address) beyond the bound are taken out before foca sees them. Members
//! already in the table keep working; anyone holding the cluster key can otherwise announce
//! identities without end, and foca keeps each one (down ones for a day).

use std::collections::BTreeSet;

use foca::{Codec, Header, Member, Message, PostcardCodec};

use super::GossipId;

/// What to hand foca for one datagram.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admitted {
    /// The datagram as received.
    Unchanged,
    /// The datagram with the updates about refused identities taken out.
    Rewritten(Vec<u8>),
    /// Its sender is a new identity beyond the bound: nothing of it is used.
    Refused,
}

/// Admits `bytes` against the member table `known` (gossip addresses, this node's included)
/// holding at most `max_members` others. Returns what to hand foca and how many identities
/// were refused. Bytes that do not decode are handed on unchanged (foca refuses them).
pub(super) fn admit(bytes: &[u8], known: &BTreeSet<String>, max_members: usize) -> (Admitted, u64) {
    let mut codec = PostcardCodec;
    let mut data = bytes;
    let Ok(header) = Codec::<GossipId>::decode_header(&mut codec, &mut data) else {
        return (Admitted::Unchanged, 0);
    };
    // `known` includes this node.
    let room = |known: &BTreeSet<String>, added: &BTreeSet<String>| {
        known.len().saturating_sub(1) + added.len() < max_members
    };
    let mut added: BTreeSet<String> = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let src = header.src.gossip_addr.clone();
    if !known.contains(&src) {
        if !room(known, &added) {
            return (Admitted::Refused, 1);
        }
        added.insert(src);
    }
    if data.len() < 2 || header.message == Message::Broadcast || header.message == Message::Announce
    {
        return (Admitted::Unchanged, 0);
    }
    let count = u16::from_be_bytes([data[0], data[1]]);
    data = &data[2..];
    let mut updates: Vec<Member<GossipId>> = Vec::with_capacity(usize::from(count.min(64)));
    for _ in 0..count {
        let Ok(m) = Codec::<GossipId>::decode_member(&mut codec, &mut data) else {
            return (Admitted::Unchanged, 0);
        };
        updates.push(m);
    }
    let total = updates.len();
    updates.retain(|m| {
        let addr = &m.id().gossip_addr;
        if known.contains(addr) || added.contains(addr) {
            return true;
        }
        if room(known, &added) {
            added.insert(addr.clone());
            true
        } else {
            refused.insert(addr.clone());
            false
        }
    });
    if updates.len() == total {
        return (Admitted::Unchanged, 0);
    }
    (Admitted::Rewritten(encode(&header, &updates, data)), refused.len() as u64)
}

/// Header, update count and updates as foca writes them, then whatever followed the updates.
fn encode(header: &Header<GossipId>, updates: &[Member<GossipId>], rest: &[u8]) -> Vec<u8> {
    let mut codec = PostcardCodec;
    let mut out: Vec<u8> = Vec::with_capacity(super::MAX_DATAGRAM_BYTES);
    let _ = Codec::<GossipId>::encode_header(&mut codec, header, &mut out);
    out.extend_from_slice(&(updates.len() as u16).to_be_bytes());
    for m in updates {
        let _ = Codec::<GossipId>::encode_member(&mut codec, m, &mut out);
    }
    out.extend_from_slice(rest);
    out
}
