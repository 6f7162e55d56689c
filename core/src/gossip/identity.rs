//! Who a gossip member is: what the reconciler needs to turn a gossip member into a Raft member.

use serde::{Deserialize, Serialize};

use super::GossipMember;
use crate::members::{MemberInfo, NodeId};

/// Longest node name or address carried in gossip: a bound on datagram sizes (several
/// identities must fit in one 1,400-byte datagram).
pub const MAX_IDENTITY_FIELD_BYTES: usize = 128;

/// One incarnation of one node, as gossiped. foca keeps one identity per [`Self::gossip_addr`];
/// when two claim the same address the newer [`Incarnation`] wins (see `win_addr_conflict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipId {
    /// `host:port` of the node's gossip (UDP) socket: its address in the gossip layer.
    pub gossip_addr: String,
    /// `node-name`, also the CN of its certificate.
    pub name: String,
    pub raft_id: NodeId,
    /// `host:port` of its gRPC (KV + Peer) port.
    pub rpc_addr: String,
    /// The cluster its Raft data belongs to; 0 for a node with no data yet (it may be added to
    /// any cluster it gossips with; a node with data only to its own).
    pub cluster_id: u64,
    /// When this process incarnation started (the shell's clock, ms): a restarted or wiped node
    /// announcing on the same address replaces its previous incarnation.
    pub started_ms: u64,
    /// Bumped by foca's auto-rejoin and by every identity change of this incarnation.
    pub bump: u32,
    /// The node is leaving the cluster for good: the leader removes it from the Raft
    /// configuration.
    pub leaving: bool,
}

impl GossipId {
    /// The Raft member this gossip member becomes when the leader adds it.
    pub fn member_info(&self) -> MemberInfo {
        MemberInfo {
            id: self.raft_id,
            name: self.name.clone(),
            peer_addr: self.rpc_addr.clone(),
            rpc_addr: self.rpc_addr.clone(),
            auto_promote: true,
        }
    }

    /// The same incarnation after a change (leaving, cluster id learned): it must win over the
    /// previous identity on the same address.
    pub(crate) fn bumped(&self) -> Self {
        Self { bump: self.bump.wrapping_add(1), ..self.clone() }
    }

    /// Which version of its node this identity is (see [`Incarnation`]).
    pub fn incarnation(&self) -> Incarnation {
        Incarnation { started_ms: self.started_ms, bump: self.bump, leaving: self.leaving }
    }

    /// Which of two identities on one address wins: the newer incarnation, then (two nodes
    /// started in the same millisecond) the higher Raft id.
    fn precedence(&self) -> (Incarnation, NodeId) {
        (self.incarnation(), self.raft_id)
    }

    /// Within the size bounds the datagram budget assumes.
    pub fn is_well_formed(&self) -> bool {
        self.raft_id != 0
            && !self.name.is_empty()
            && [&self.name, &self.gossip_addr, &self.rpc_addr]
                .iter()
                .all(|f| f.len() <= MAX_IDENTITY_FIELD_BYTES)
    }
}

/// How new one gossip identity of a node is: THE "newest incarnation wins" order of mokv.
///
/// Ordered by process start (`started_ms`), then by the changes within that process (`bump`:
/// foca's rejoins, leaving, cluster id learned), then leaving after staying (a node's last
/// word is that it leaves). Every question "which of a node's identities counts" is answered
/// with this order and only with it: foca's address conflicts, the reconciler, the member
/// directory (`Node::directory`), the remembered gossip peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation {
    /// When the process started (the shell's clock, ms).
    pub started_ms: u64,
    /// Changes of the identity within that process.
    pub bump: u32,
    /// The identity announces that the node leaves for good.
    pub leaving: bool,
}

/// The newest incarnation ([`Incarnation`]'s order) among the gossip members that carry Raft
/// id `raft_id`. A node may briefly be seen under several identities: an old process and a
/// new one on another address, or a rejoin not yet spread. Among equal incarnations the last
/// one listed counts.
pub fn newest<'a>(
    members: impl IntoIterator<Item = &'a GossipMember>,
    raft_id: NodeId,
) -> Option<&'a GossipMember> {
    members.into_iter().filter(|m| m.id.raft_id == raft_id).max_by_key(|m| m.id.incarnation())
}

impl foca::Identity for GossipId {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        // Declared down while alive (a partition, a pause): come back at once as a newer
        // identity rather than waiting for the cluster to forget the old one.
        Some(self.bumped())
    }

    fn addr(&self) -> String {
        self.gossip_addr.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.precedence() > adversary.precedence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(started_ms: u64, raft_id: NodeId) -> GossipId {
        GossipId {
            gossip_addr: "10.0.0.1:8401".into(),
            name: "n1".into(),
            raft_id,
            rpc_addr: "10.0.0.1:8400".into(),
            cluster_id: 7,
            started_ms,
            bump: 0,
            leaving: false,
        }
    }

    #[test]
    fn newer_incarnation_wins_the_address() {
        let old = id(100, 5);
        let wiped = id(200, 9);
        assert!(wiped.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&wiped));
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        let leaving = GossipId { leaving: true, ..old.bumped() };
        assert!(leaving.win_addr_conflict(&old));
    }

    #[test]
    fn incarnations_order_by_start_then_bump_then_leaving() {
        let a = id(100, 5).incarnation();
        let renewed = id(100, 5).bumped().incarnation();
        let leaving = GossipId { leaving: true, ..id(100, 5).bumped() }.incarnation();
        let restarted = id(200, 5).incarnation();
        assert!(a < renewed && renewed < leaving && leaving < restarted);
    }

    #[test]
    fn newest_picks_the_newest_identity_of_that_raft_id_only() {
        use super::super::Health;
        let m = |id: GossipId, health| GossipMember { id, health };
        let old = GossipId { gossip_addr: "10.0.0.1:1".into(), ..id(100, 5) };
        let new = GossipId { gossip_addr: "10.0.0.1:2".into(), ..id(300, 5) };
        let other = id(900, 6);
        let view = [m(new.clone(), Health::Alive), m(old, Health::Down), m(other, Health::Alive)];
        assert_eq!(newest(&view, 5).map(|m| &m.id), Some(&new));
        assert_eq!(
            newest(view.iter().filter(|m| m.health == Health::Down), 5).map(|m| m.id.started_ms),
            Some(100)
        );
        assert!(newest(&view, 7).is_none());
    }

    #[test]
    fn bounds() {
        assert!(id(1, 1).is_well_formed());
        assert!(!id(1, 0).is_well_formed());
        let long = GossipId { name: "x".repeat(MAX_IDENTITY_FIELD_BYTES + 1), ..id(1, 1) };
        assert!(!long.is_well_formed());
    }
}
