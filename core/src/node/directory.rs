//! [`Directory`]: where every known node is and how it is, as this node sees it.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::LeaderHint;
use crate::gossip::{newest, GossipId, GossipMember, Health, Incarnation, Proof};
use crate::members::{MemberTable, NodeId};

/// One node in the [`Directory`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberEntry {
    pub id: NodeId,
    /// Its name: the member table's, else its newest gossip identity's.
    pub name: String,
    /// Where its rpc (client and peer) port is now: the last address where it proved itself
    /// with its node certificate (gossip announcing a new address only has it verified; a
    /// node restarted on another port is found again without a configuration change), else
    /// the member table's. `None` if neither names one.
    pub rpc_addr: Option<String>,
    /// Where to send it Raft messages: the proven rpc address as above, else the member
    /// table's peer address.
    pub peer_addr: Option<String>,
    /// Its gossip (UDP) address, from its newest incarnation.
    pub gossip_addr: Option<String>,
    /// Its health in this node's failure detector (this node itself is alive); `None` when
    /// gossip has not seen it (or does not run).
    pub health: Option<Health>,
    /// Its newest incarnation seen in gossip.
    pub incarnation: Option<Incarnation>,
    /// Its newest incarnation says it leaves the cluster for good.
    pub leaving: bool,
    /// It is in the replicated member table (else known from gossip only).
    pub in_member_table: bool,
}

/// Every node this node knows of, from the replicated member table and the gossip view, one
/// entry per Raft id, each built from the id's newest gossip incarnation (the one order:
/// [`Incarnation`]); plus where the leader is. Built by `Node::directory`; the shell and the
/// simulator read it rather than deciding among a node's gossip identities themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Directory {
    pub members: BTreeMap<NodeId, MemberEntry>,
    /// Where the leader is, if this node knows one.
    pub leader: Option<LeaderHint>,
}

impl Directory {
    pub fn get(&self, id: NodeId) -> Option<&MemberEntry> {
        self.members.get(&id)
    }

    /// Whether a peer whose certificate names `caller` may send Raft messages as node `from`:
    /// the name this directory knows for `from` must be `caller` — the member table's name,
    /// else (a node being added, or a member whose addition this node has not applied yet: a
    /// lagging follower must still hear a leader it does not know) its newest gossip
    /// identity's. An id known to neither is refused. Only a node that knows nobody at all (no
    /// member table and no gossip: an empty node that an embedding program adds as a learner)
    /// has nothing to check against and admits any node: it holds no data to protect.
    pub fn admits_sender(&self, caller: &str, from: NodeId) -> bool {
        match self.members.get(&from) {
            Some(e) => !e.name.is_empty() && e.name == caller,
            None => self.members.is_empty(),
        }
    }

    /// The node gossiping under `name` in the newest incarnation: a wiped node comes back
    /// under its old name with a new Raft id. `None` if gossip has seen no node of that name.
    pub fn newest_named(&self, name: &str) -> Option<&MemberEntry> {
        self.members
            .values()
            .filter(|e| e.name == name && e.incarnation.is_some())
            .max_by_key(|e| e.incarnation)
    }
}

/// What the directory is built from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sources<'a> {
    pub(super) self_id: NodeId,
    /// This node's gossip identity (`None` without gossip).
    pub(super) identity: Option<&'a GossipId>,
    pub(super) members: &'a MemberTable,
    /// Every other gossip member (empty without gossip).
    pub(super) view: &'a [GossipMember],
    pub(super) leader: Option<NodeId>,
    /// What nodes proved about themselves: the only source of an address gossip announces.
    pub(super) proofs: &'a BTreeMap<NodeId, Proof>,
}

impl Sources<'_> {
    /// Node `id`'s entry, if either the member table or gossip knows it.
    pub(super) fn entry(&self, id: NodeId) -> Option<MemberEntry> {
        let info = self.members.get(&id);
        let (newest_id, health) = if id == self.self_id {
            (self.identity, Some(Health::Alive))
        } else {
            let m = newest(self.view, id);
            (m.map(|m| &m.id), m.map(|m| m.health))
        };
        if info.is_none() && newest_id.is_none() {
            return None;
        }
        let name = info.map_or_else(
            || newest_id.map(|g| g.name.clone()).unwrap_or_default(),
            |m| m.name.clone(),
        );
        let gossiped_rpc = if id == self.self_id {
            self.identity.map(|g| g.rpc_addr.as_str())
        } else {
            let proven =
                self.proofs.get(&id).filter(|p| p.name == name).map(|p| p.rpc_addr.as_str());
            // A node with no member table yet (joining, its configuration not received) has
            // nothing to protect and no other way to answer the leader: it goes by gossip.
            // Once it has a member table, addresses move only by proof.
            let suggested = || {
                newest(self.view.iter().filter(|m| m.health != Health::Down), id)
                    .map(|m| m.id.rpc_addr.as_str())
            };
            if self.members.is_empty() {
                proven.or_else(suggested)
            } else {
                proven
            }
        }
        .filter(|a| !a.is_empty());
        let non_empty = |a: &str| Some(a.to_owned()).filter(|a| !a.is_empty());
        Some(MemberEntry {
            id,
            name,
            rpc_addr: gossiped_rpc
                .map(str::to_owned)
                .or_else(|| info.and_then(|m| non_empty(&m.rpc_addr))),
            peer_addr: gossiped_rpc
                .map(str::to_owned)
                .or_else(|| info.and_then(|m| non_empty(&m.peer_addr))),
            gossip_addr: newest_id.and_then(|g| non_empty(&g.gossip_addr)),
            health,
            incarnation: newest_id.map(GossipId::incarnation),
            leaving: newest_id.is_some_and(|g| g.leaving),
            in_member_table: info.is_some(),
        })
    }

    /// Where the leader is: its id, the member table's name for it, and its rpc address as
    /// in its entry.
    pub(super) fn leader_hint(&self) -> Option<LeaderHint> {
        let leader = self.leader?;
        let name = self.members.get(&leader).map(|m| m.name.clone()).unwrap_or_default();
        let rpc_addr = self.entry(leader).and_then(|e| e.rpc_addr).unwrap_or_default();
        Some(LeaderHint { id: leader, name, rpc_addr })
    }

    pub(super) fn directory(&self) -> Directory {
        let mut ids: BTreeSet<NodeId> = self.members.keys().copied().collect();
        ids.extend(self.view.iter().map(|m| m.id.raft_id).filter(|id| *id != 0));
        if self.identity.is_some() {
            ids.insert(self.self_id);
        }
        Directory {
            members: ids.into_iter().filter_map(|id| self.entry(id).map(|e| (id, e))).collect(),
            leader: self.leader_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::NodeClaim;
    use crate::members::MemberInfo;

    fn proof(name: &str, rpc_addr: &str, raft_id: NodeId) -> Proof {
        Proof {
            name: name.into(),
            rpc_addr: rpc_addr.into(),
            claim: NodeClaim {
                raft_id,
                cluster_id: 0,
                started_ms: 0,
                leaving: false,
                gossip_addr: String::new(),
            },
        }
    }

    fn gid(raft_id: NodeId, name: &str, port: u16, started_ms: u64) -> GossipId {
        GossipId {
            gossip_addr: format!("{name}:{port}"),
            name: name.into(),
            raft_id,
            rpc_addr: format!("{name}:{}", port + 1),
            cluster_id: 0,
            started_ms,
            bump: 0,
            leaving: false,
        }
    }

    fn info(id: NodeId, name: &str) -> MemberInfo {
        MemberInfo {
            id,
            name: name.into(),
            peer_addr: format!("{name}:table-peer"),
            rpc_addr: format!("{name}:table-rpc"),
            auto_promote: true,
        }
    }

    #[test]
    fn each_node_is_its_newest_incarnation_and_addresses_come_from_a_live_one() {
        let me = gid(1, "a", 10, 1);
        let members: MemberTable = [(1, info(1, "a")), (2, info(2, "b")), (3, info(3, "c"))].into();
        let view = vec![
            // b restarted on another port; its old process is down.
            GossipMember { id: gid(2, "b", 20, 5), health: Health::Down },
            GossipMember { id: gid(2, "b", 30, 9), health: Health::Suspect },
            // c's newest incarnation is down: its address falls back to the member table.
            GossipMember { id: gid(3, "c", 40, 7), health: Health::Down },
            // d is known from gossip only, and leaving.
            GossipMember {
                id: GossipId { leaving: true, ..gid(4, "d", 50, 3) },
                health: Health::Alive,
            },
        ];
        // b proved itself at its new address.
        let proofs: BTreeMap<NodeId, Proof> = [(2, proof("b", "b:31", 2))].into();
        let s = Sources {
            self_id: 1,
            identity: Some(&me),
            members: &members,
            view: &view,
            leader: Some(2),
            proofs: &proofs,
        };
        let d = s.directory();
        assert_eq!(d.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let a = d.get(1).unwrap();
        assert_eq!((a.health, a.rpc_addr.as_deref()), (Some(Health::Alive), Some("a:11")));
        let b = d.get(2).unwrap();
        assert_eq!(b.health, Some(Health::Suspect));
        assert_eq!(b.incarnation.map(|i| i.started_ms), Some(9));
        assert_eq!((b.rpc_addr.as_deref(), b.peer_addr.as_deref()), (Some("b:31"), Some("b:31")));
        assert_eq!(b.gossip_addr.as_deref(), Some("b:30"));
        let c = d.get(3).unwrap();
        assert_eq!(c.health, Some(Health::Down));
        assert_eq!(
            (c.rpc_addr.as_deref(), c.peer_addr.as_deref()),
            (Some("c:table-rpc"), Some("c:table-peer"))
        );
        let dd = d.get(4).unwrap();
        assert!(dd.leaving && !dd.in_member_table);
        assert_eq!(dd.name, "d");
        assert_eq!(d.leader, Some(LeaderHint { id: 2, name: "b".into(), rpc_addr: "b:31".into() }));
    }

    #[test]
    fn a_sender_is_admitted_only_under_the_name_the_directory_knows_for_it() {
        let members: MemberTable = [(1, info(1, "a")), (2, info(2, "b"))].into();
        let view = vec![
            // c is being added (gossip only); b's gossip identity claims another name, which
            // the member table's name overrides.
            GossipMember { id: gid(3, "c", 40, 7), health: Health::Alive },
            GossipMember { id: gid(2, "mallory", 20, 9), health: Health::Alive },
        ];
        let me = gid(1, "a", 10, 1);
        let s = Sources {
            self_id: 1,
            identity: Some(&me),
            members: &members,
            view: &view,
            leader: None,
            proofs: &BTreeMap::new(),
        };
        let d = s.directory();
        assert!(d.admits_sender("b", 2));
        assert!(!d.admits_sender("mallory", 2), "gossip cannot rename a member");
        assert!(!d.admits_sender("c", 2), "a member speaking as another");
        assert!(d.admits_sender("c", 3), "a node being added, known from gossip");
        assert!(!d.admits_sender("c", 4) && !d.admits_sender("d", 4), "an unknown id");
        assert!(Directory::default().admits_sender("anyone", 9), "an empty node knows nobody");
        let no_gossip = Sources {
            self_id: 1,
            identity: None,
            members: &members,
            view: &[],
            leader: None,
            proofs: &BTreeMap::new(),
        };
        assert!(!no_gossip.directory().admits_sender("c", 3));
    }

    #[test]
    fn without_gossip_the_member_table_is_the_directory() {
        let members: MemberTable = [(1, info(1, "a")), (2, info(2, "b"))].into();
        let s = Sources {
            self_id: 1,
            identity: None,
            members: &members,
            view: &[],
            leader: None,
            proofs: &BTreeMap::new(),
        };
        let d = s.directory();
        assert_eq!(d.members.len(), 2);
        assert_eq!(d.get(1).unwrap().health, Some(Health::Alive), "a node is alive to itself");
        assert_eq!(d.get(2).unwrap().health, None, "unseen");
        assert_eq!(d.get(2).unwrap().rpc_addr.as_deref(), Some("b:table-rpc"));
        assert!(d.leader.is_none());
        assert!(d.newest_named("b").is_none(), "gossip has seen no b");
    }

    #[test]
    fn a_wiped_node_is_found_under_its_name_by_its_newest_incarnation() {
        let members = MemberTable::new();
        let view = vec![
            GossipMember { id: gid(3, "c", 40, 7), health: Health::Down },
            GossipMember { id: gid(9, "c", 41, 70), health: Health::Alive },
        ];
        let s = Sources {
            self_id: 1,
            identity: None,
            members: &members,
            view: &view,
            leader: None,
            proofs: &BTreeMap::new(),
        };
        let d = s.directory();
        let c = d.newest_named("c").unwrap();
        assert_eq!((c.id, c.health), (9, Some(Health::Alive)));
    }

    /// A forger (cluster key, no certificate) gossips a newer incarnation of b at its own
    /// address: b's address stays where b proved itself, else the member table's.
    #[test]
    fn a_gossiped_address_counts_only_once_proven() {
        let members: MemberTable = [(1, info(1, "a")), (2, info(2, "b"))].into();
        let forged = GossipId { rpc_addr: "forger:9".into(), ..gid(2, "b", 90, 99) };
        let view = vec![
            GossipMember { id: gid(2, "b", 20, 5), health: Health::Alive },
            GossipMember { id: forged, health: Health::Alive },
        ];
        let no_proofs = BTreeMap::new();
        let s = Sources {
            self_id: 1,
            identity: None,
            members: &members,
            view: &view,
            leader: Some(2),
            proofs: &no_proofs,
        };
        let d = s.directory();
        let b = d.get(2).unwrap();
        assert_eq!(
            (b.rpc_addr.as_deref(), b.peer_addr.as_deref()),
            (Some("b:table-rpc"), Some("b:table-peer"))
        );
        assert_eq!(d.leader.unwrap().rpc_addr, "b:table-rpc", "leader hints follow no forgery");
        // A proof under another name (not b's certificate) is ignored.
        let proofs: BTreeMap<NodeId, Proof> = [(2, proof("mallory", "forger:9", 2))].into();
        let d = Sources { proofs: &proofs, ..s }.directory();
        assert_eq!(d.get(2).unwrap().rpc_addr.as_deref(), Some("b:table-rpc"));
        let proofs: BTreeMap<NodeId, Proof> = [(2, proof("b", "b:21", 2))].into();
        let d = Sources { proofs: &proofs, ..s }.directory();
        assert_eq!(d.get(2).unwrap().rpc_addr.as_deref(), Some("b:21"));
        // A gossiped stranger gets no address from gossip here...
        let view = vec![GossipMember { id: gid(7, "g", 70, 1), health: Health::Alive }];
        let d = Sources { view: &view, proofs: &no_proofs, ..s }.directory();
        assert_eq!(d.get(7).unwrap().peer_addr, None);
        // ...but a joining node (no member table yet) reaches the leader where it gossips.
        let empty = MemberTable::new();
        let d = Sources { view: &view, proofs: &no_proofs, members: &empty, ..s }.directory();
        assert_eq!(d.get(7).unwrap().peer_addr.as_deref(), Some("g:71"));
    }
}
