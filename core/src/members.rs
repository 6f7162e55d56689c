//! Who is in the cluster: the Raft configuration plus, for every member, how to reach it.
//!
//! Both live in the replicated state (and so in snapshots): every node learns peer addresses
//! from the log, not from local configuration.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::ConfState;

use crate::codec::{DecodeError, Reader, Writer};

/// Raft id of a node. Never reused: a wiped node rejoins under a new id.
pub type NodeId = u64;

/// How to reach one member. Carried in the context of the conf change that adds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberInfo {
    pub id: NodeId,
    /// Human name (`node-name`), also the CN of its certificate.
    pub name: String,
    /// Address of its peer (node-to-node) service.
    pub peer_addr: String,
    /// Address of its client (`KV`) service.
    pub rpc_addr: String,
    /// Promote to voter automatically once caught up (false = stays a learner).
    pub auto_promote: bool,
}

impl MemberInfo {
    pub fn encode_to(&self, w: &mut Writer) {
        w.put_u64(self.id);
        w.put_str(&self.name);
        w.put_str(&self.peer_addr);
        w.put_str(&self.rpc_addr);
        w.put_bool(self.auto_promote);
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.get_u64()?,
            name: r.get_str()?.to_owned(),
            peer_addr: r.get_str()?.to_owned(),
            rpc_addr: r.get_str()?.to_owned(),
            auto_promote: r.get_bool()?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_u8(1); // version
        self.encode_to(&mut w);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.get_u8()? {
            1 => {}
            v => return Err(DecodeError::UnsupportedVersion(u32::from(v))),
        }
        let m = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(m)
    }
}

/// The Raft configuration in our own (BTreeSet, deterministic) form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conf {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub voters_outgoing: BTreeSet<NodeId>,
    pub learners_next: BTreeSet<NodeId>,
    pub auto_leave: bool,
}

impl Conf {
    pub fn from_raft(cs: &ConfState) -> Self {
        Self {
            voters: cs.voters.iter().copied().collect(),
            learners: cs.learners.iter().copied().collect(),
            voters_outgoing: cs.voters_outgoing.iter().copied().collect(),
            learners_next: cs.learners_next.iter().copied().collect(),
            auto_leave: cs.auto_leave,
        }
    }

    pub fn to_raft(&self) -> ConfState {
        let mut cs = ConfState::default();
        cs.voters = self.voters.iter().copied().collect();
        cs.learners = self.learners.iter().copied().collect();
        cs.voters_outgoing = self.voters_outgoing.iter().copied().collect();
        cs.learners_next = self.learners_next.iter().copied().collect();
        cs.auto_leave = self.auto_leave;
        cs
    }

    /// Every id that is a voter or learner, now or in a joint configuration.
    pub fn all_ids(&self) -> BTreeSet<NodeId> {
        let mut ids = self.voters.clone();
        ids.extend(&self.learners);
        ids.extend(&self.voters_outgoing);
        ids.extend(&self.learners_next);
        ids
    }

    /// `id` is in [`all_ids`](Self::all_ids) (without building the set).
    pub fn contains(&self, id: NodeId) -> bool {
        [&self.voters, &self.learners, &self.voters_outgoing, &self.learners_next]
            .iter()
            .any(|set| set.contains(&id))
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    pub fn encode_to(&self, w: &mut Writer) {
        for set in [&self.voters, &self.learners, &self.voters_outgoing, &self.learners_next] {
            w.put_u64(set.len() as u64);
            for id in set {
                w.put_u64(*id);
            }
        }
        w.put_bool(self.auto_leave);
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut sets: [BTreeSet<NodeId>; 4] = Default::default();
        for set in &mut sets {
            let n = r.get_count(8)?;
            for _ in 0..n {
                set.insert(r.get_u64()?);
            }
        }
        let [voters, learners, voters_outgoing, learners_next] = sets;
        Ok(Self { voters, learners, voters_outgoing, learners_next, auto_leave: r.get_bool()? })
    }
}

/// Addresses of every member, by id.
pub type MemberTable = BTreeMap<NodeId, MemberInfo>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn member_info_round_trips(id in any::<u64>(), name in ".{0,12}", peer in ".{0,12}",
                                   rpc in ".{0,12}", auto in any::<bool>()) {
            let m = MemberInfo { id, name, peer_addr: peer, rpc_addr: rpc, auto_promote: auto };
            prop_assert_eq!(MemberInfo::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn member_info_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = MemberInfo::decode(&bytes);
        }

        #[test]
        fn conf_round_trips(v in proptest::collection::btree_set(any::<u64>(), 0..5),
                            l in proptest::collection::btree_set(any::<u64>(), 0..5),
                            auto in any::<bool>()) {
            let c = Conf { voters: v, learners: l, auto_leave: auto, ..Conf::default() };
            let mut w = Writer::new();
            c.encode_to(&mut w);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(Conf::decode_from(&mut r).unwrap(), c.clone());
            prop_assert_eq!(Conf::from_raft(&c.to_raft()), c);
        }
    }
}
