//! The node's side of identity proofs (see [`crate::gossip::VerifyRequest`]): which
//! verifications it asks for, the answers, and what it answers about itself.

use std::collections::BTreeSet;

use raft::StateRole;

use super::{Event, Node};
use crate::gossip::{
    newest, Health, LeaveRefused, NodeClaim, VerifyRequest, MAX_IDENTITY_FIELD_BYTES,
};
use crate::members::NodeId;
use crate::reconcile;

impl Node {
    /// The next verification to carry out: dial `rpc_addr` over peer mTLS, require `name`'s
    /// node certificate, ask the node who it is, and answer with
    /// [`handle_verified`](Self::handle_verified). Bounded: at most a few are asked at once,
    /// each (name, address) with backoff.
    #[must_use]
    pub fn poll_verify(&mut self) -> Option<VerifyRequest> {
        self.verifier.poll()
    }

    /// The outcome of a verification from [`poll_verify`](Self::poll_verify): the claim of
    /// the node that answered with `request.name`'s node certificate, or `None` (unreachable,
    /// another certificate, not a node). Only now can gossip's suggestion take effect (a
    /// learner added, an address changed, a leaving member removed), at the next tick.
    ///
    /// A proven member absent from this node's gossip view is announced to at the gossip
    /// address it proved: gossip lost it, or it lost gossip (see
    /// `Node::request_verifications`).
    pub fn handle_verified(&mut self, request: VerifyRequest, claim: Option<NodeClaim>) {
        let claim = match claim {
            None if self.config.planted_bugs.unproven_claims_trusted() => {
                self.gossiped_claim(&request)
            }
            claim => claim,
        };
        let proven_gossip_addr = claim
            .as_ref()
            .filter(|c| self.verifier.is_asked(&request) && c.raft_id == request.raft_id)
            .map(|c| c.gossip_addr.clone())
            .filter(|a| !a.is_empty() && a.len() <= MAX_IDENTITY_FIELD_BYTES);
        if self.verifier.handle_answer(&request, claim, self.now_ms) {
            // A proven address changes where this node sends Raft messages and leader hints.
            self.push_event(Event::GossipChanged);
        }
        if let (Some(addr), Some(g)) = (proven_gossip_addr, &mut self.gossip) {
            if !g.members().iter().any(|m| m.id.raft_id == request.raft_id) {
                g.announce_to(&addr);
            }
        }
    }

    /// What gossip says about the node `request` names (the planted bug
    /// `unproven_claims_trusted` takes it as proven).
    fn gossiped_claim(&self, request: &VerifyRequest) -> Option<NodeClaim> {
        let view = self.gossip.as_ref()?.members();
        let g = view.iter().map(|m| &m.id).find(|g| {
            g.raft_id == request.raft_id && g.name == request.name && g.rpc_addr == request.rpc_addr
        })?;
        Some(NodeClaim {
            raft_id: g.raft_id,
            cluster_id: g.cluster_id,
            started_ms: g.started_ms,
            leaving: g.leaving,
            gossip_addr: g.gossip_addr.clone(),
        })
    }

    /// Node `caller` (the name in the caller's node certificate, checked by the shell) says
    /// over an authenticated `Peer.Leave` call that Raft node `id` leaves for good. Taken as
    /// proof only if `id`'s member-table name is `caller`; whichever node leads removes it.
    /// Returns whether `id` is a member of that name (an id that is no member is `Ok` too:
    /// already removed, nothing to do).
    pub fn handle_peer_leave(&mut self, caller: &str, id: NodeId) -> Result<(), LeaveRefused> {
        match self.sm.members().get(&id) {
            Some(m) if m.name == caller && self.sm.conf().all_ids().contains(&id) => {
                self.verifier.handle_leave(id);
                self.reconcile();
                self.after_input();
                Ok(())
            }
            Some(_) => Err(LeaveRefused),
            None => Ok(()),
        }
    }

    /// What this node says about itself when another node verifies it (`None` without
    /// gossip).
    pub fn own_claim(&self) -> Option<NodeClaim> {
        let g = self.gossip.as_ref()?.identity();
        Some(NodeClaim {
            raft_id: self.config.id,
            cluster_id: g.cluster_id,
            started_ms: g.started_ms,
            leaving: self.membership.is_leaving() || g.leaving,
            gossip_addr: g.gossip_addr.clone(),
        })
    }

    /// Gossip identities ignored because the member table was full
    /// ([`crate::gossip::GossipConfig::max_members`]).
    pub fn gossip_identities_ignored(&self) -> u64 {
        self.gossip.as_ref().map_or(0, |g| g.ignored_identities())
    }

    /// Verifications failed so far (forged or unreachable identities).
    pub fn verifications_refused(&self) -> u64 {
        self.verifier.refused()
    }

    /// Once per tick: the verifications gossip's suggestions call for. Every node verifies
    /// a member's new gossiped address (it sends Raft messages and leader hints there); the
    /// leader also verifies joins and leaves (it alone changes the configuration).
    pub(super) fn request_verifications(&mut self) {
        let Some(g) = &self.gossip else { return };
        let view = g.members();
        let conf = self.sm.conf();
        let mut known: BTreeSet<NodeId> = conf.all_ids();
        known.extend(view.iter().map(|m| m.id.raft_id));
        let mut wanted = Vec::new();
        for (id, info) in self.sm.members() {
            if *id == self.config.id || !known.contains(id) {
                continue;
            }
            let Some(live) = newest(view.iter().filter(|m| m.health != Health::Down), *id) else {
                continue;
            };
            if live.id.name != info.name || live.id.rpc_addr.is_empty() {
                continue;
            }
            let current = self
                .verifier
                .proofs()
                .get(id)
                .filter(|p| p.name == info.name)
                .map_or(info.rpc_addr.as_str(), |p| p.rpc_addr.as_str());
            if live.id.rpc_addr != current {
                wanted.push(VerifyRequest {
                    name: info.name.clone(),
                    raft_id: *id,
                    rpc_addr: live.id.rpc_addr.clone(),
                });
            }
        }
        if self.raw.raft.state == StateRole::Leader && !self.membership.is_removed() {
            let removed = self.membership.removed_ids();
            wanted.extend(reconcile::proofs_wanted(&self.reconcile_inputs(g, &view, &removed)));
            wanted.extend(self.lost_members(&view));
        }
        self.verifier.handle_time(self.now_ms, &known);
        for r in wanted {
            self.verifier.want(r, self.now_ms);
        }
    }

    /// The leader asks every configuration member that has no identity at all in its gossip
    /// view where it gossips, at its proven (else member-table) rpc address: a member that
    /// joined through a single seed which then left, and restarted, knows no live gossip
    /// member and none knows it, yet Raft still counts on it. The proven answer's gossip
    /// address is announced to (`handle_verified`), which joins the two views. Backed off per
    /// (name, address) like every verification.
    fn lost_members(&self, view: &[crate::gossip::GossipMember]) -> Vec<VerifyRequest> {
        let mut lost = Vec::new();
        for id in self.sm.conf().all_ids() {
            if id == self.config.id || view.iter().any(|m| m.id.raft_id == id) {
                continue;
            }
            let Some(info) = self.sm.members().get(&id) else { continue };
            let rpc_addr = self
                .verifier
                .proofs()
                .get(&id)
                .filter(|p| p.name == info.name)
                .map_or(info.rpc_addr.as_str(), |p| p.rpc_addr.as_str());
            if info.name.is_empty() || rpc_addr.is_empty() {
                continue;
            }
            lost.push(VerifyRequest {
                name: info.name.clone(),
                raft_id: id,
                rpc_addr: rpc_addr.to_owned(),
            });
        }
        lost
    }
}
