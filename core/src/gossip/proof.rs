//! Proof of identity: gossip only *suggests* who a node is and where it listens; membership
//! acts on what a node proved with its own node certificate.
//!
//! The core asks ([`VerifyRequest`], `Node::poll_verify`): "does node `name` listen at
//! `rpc_addr`?". The shell dials `rpc_addr` over peer mTLS, requires the server certificate to
//! be `name`'s node certificate, asks the node who it is, and answers
//! (`Node::handle_verified`) with the node's [`NodeClaim`], or `None`. Only a proven claim
//! adds a learner, moves a member's address, or removes a member that leaves.
//!
//! Attempts are bounded: at most [`MAX_IN_FLIGHT`] at once, and each (name, address) is
//! retried with exponential backoff, in a table of at most [`MAX_BACKOFF_ENTRIES`], so forged
//! identities cannot make a node dial without bound.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::members::NodeId;

/// Verifications asked and not answered yet.
pub const MAX_IN_FLIGHT: usize = 4;
/// An unanswered verification counts as failed after this long (the shell's answer was lost).
pub const IN_FLIGHT_EXPIRY_MS: u64 = 15_000;
/// First wait before asking again about the same (name, address); doubled after every answer
/// that taught nothing new, up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: u64 = 1_000;
/// Longest wait between two attempts on one (name, address).
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// (name, address) pairs whose backoff is remembered; beyond it, new pairs wait until an entry
/// expires.
pub const MAX_BACKOFF_ENTRIES: usize = 1024;

/// "Prove that node `name` (its node certificate's name) listens at `rpc_addr` and is Raft
/// node `raft_id`." Emitted by `Node::poll_verify`; answered with `Node::handle_verified`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerifyRequest {
    pub name: String,
    pub raft_id: NodeId,
    /// `host:port` of the gRPC port to dial.
    pub rpc_addr: String,
}

/// What a node says about itself over an authenticated connection (`Peer.Identify`):
/// trusted only because the server certificate was the node's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClaim {
    pub raft_id: NodeId,
    /// The cluster its data belongs to; 0 if none yet.
    pub cluster_id: u64,
    /// When its process started (its gossip incarnation's `started_ms`).
    pub started_ms: u64,
    /// It is leaving the cluster for good.
    pub leaving: bool,
    /// Where it gossips (UDP `host:port`); empty if unknown. Lets a leader reach a member
    /// that gossip lost track of (see `Node::request_verifications`).
    pub gossip_addr: String,
}

/// A `Peer.Leave` call naming a member whose name is not the caller's certificate name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the caller is not the member it says leaves")]
#[non_exhaustive]
pub struct LeaveRefused;

/// A verified [`NodeClaim`]: node `name` answered it at `rpc_addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub name: String,
    pub rpc_addr: String,
    pub claim: NodeClaim,
}

/// Proofs gathered so far (newest per Raft id) and the bounded, rate-limited queue of
/// verifications to ask for.
#[derive(Debug, Default)]
pub(crate) struct Verifier {
    proofs: BTreeMap<NodeId, Proof>,
    outbox: VecDeque<VerifyRequest>,
    /// Asked (queued or handed to the shell), by when it was asked.
    in_flight: BTreeMap<VerifyRequest, u64>,
    /// Per (name, address): earliest next attempt and the current backoff.
    backoff: BTreeMap<(String, String), (u64, u64)>,
    refused: u64,
    /// Members that announced their leave over an authenticated `Peer.Leave` call (the
    /// caller's certificate name was the member's): as good as a leaving proof. At most one
    /// entry per member (forgotten with the member).
    leaves: BTreeSet<NodeId>,
}

impl Verifier {
    pub(crate) fn proofs(&self) -> &BTreeMap<NodeId, Proof> {
        &self.proofs
    }

    /// Members that announced their leave themselves (see [`Self::handle_leave`]).
    pub(crate) fn leaves(&self) -> &BTreeSet<NodeId> {
        &self.leaves
    }

    /// Member `id` said, over a connection authenticated by its own node certificate, that it
    /// leaves for good.
    pub(crate) fn handle_leave(&mut self, id: NodeId) {
        self.leaves.insert(id);
    }

    /// Verifications that failed (no answer, wrong certificate, another node there).
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Asks for `req` unless it is already asked, backing off, or too many are in flight.
    pub(crate) fn want(&mut self, req: VerifyRequest, now_ms: u64) {
        if self.in_flight.contains_key(&req) || self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let key = (req.name.clone(), req.rpc_addr.clone());
        match self.backoff.get(&key) {
            Some((next_ms, _)) if *next_ms > now_ms => return,
            Some(_) => {}
            None => {
                if self.backoff.len() >= MAX_BACKOFF_ENTRIES {
                    self.backoff.retain(|_, (next_ms, _)| *next_ms > now_ms);
                }
                if self.backoff.len() >= MAX_BACKOFF_ENTRIES {
                    return;
                }
                self.backoff.insert(key, (now_ms, FIRST_BACKOFF_MS));
            }
        }
        self.in_flight.insert(req.clone(), now_ms);
        self.outbox.push_back(req);
    }

    /// Whether `req` was asked and not answered yet.
    pub(crate) fn is_asked(&self, req: &VerifyRequest) -> bool {
        self.in_flight.contains_key(req)
    }

    pub(crate) fn poll(&mut self) -> Option<VerifyRequest> {
        self.outbox.pop_front()
    }

    /// The shell's answer to `req`: the claim the node proved, or `None`. Returns whether
    /// the proofs changed (a new address or claim proven).
    pub(crate) fn handle_answer(
        &mut self,
        req: &VerifyRequest,
        claim: Option<NodeClaim>,
        now_ms: u64,
    ) -> bool {
        if self.in_flight.remove(req).is_none() {
            return false;
        }
        let proof = claim.filter(|c| c.raft_id == req.raft_id).map(|claim| Proof {
            name: req.name.clone(),
            rpc_addr: req.rpc_addr.clone(),
            claim,
        });
        let learned = match proof {
            Some(p) => {
                let new = self.proofs.get(&req.raft_id) != Some(&p);
                self.proofs.insert(req.raft_id, p);
                new
            }
            None => {
                self.refused += 1;
                false
            }
        };
        if let Some((next_ms, backoff_ms)) =
            self.backoff.get_mut(&(req.name.clone(), req.rpc_addr.clone()))
        {
            *backoff_ms = if learned {
                FIRST_BACKOFF_MS
            } else {
                backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS)
            };
            *next_ms = now_ms.saturating_add(*backoff_ms);
        }
        learned
    }

    /// Expires unanswered verifications and forgets proofs of ids no longer known.
    pub(crate) fn handle_time(&mut self, now_ms: u64, known: &BTreeSet<NodeId>) {
        let expired: Vec<VerifyRequest> = self
            .in_flight
            .iter()
            .filter(|(_, asked)| now_ms.saturating_sub(**asked) >= IN_FLIGHT_EXPIRY_MS)
            .map(|(r, _)| r.clone())
            .collect();
        for r in expired {
            self.outbox.retain(|q| *q != r);
            let _ = self.handle_answer(&r, None, now_ms);
        }
        self.proofs.retain(|id, _| known.contains(id));
        self.leaves.retain(|id| known.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, addr: &str) -> VerifyRequest {
        VerifyRequest { name: name.into(), raft_id: 7, rpc_addr: addr.into() }
    }

    fn claim() -> NodeClaim {
        NodeClaim {
            raft_id: 7,
            cluster_id: 0,
            started_ms: 1,
            leaving: false,
            gossip_addr: String::new(),
        }
    }

    #[test]
    fn attempts_are_bounded_in_flight_and_backed_off_per_name_and_address() {
        let mut v = Verifier::default();
        for i in 0..100 {
            v.want(req(&format!("forged{i}"), "x:1"), 0);
        }
        let asked: Vec<_> = std::iter::from_fn(|| v.poll()).collect();
        assert_eq!(asked.len(), MAX_IN_FLIGHT);
        for r in &asked {
            v.handle_answer(r, None, 0);
        }
        assert_eq!(v.refused(), MAX_IN_FLIGHT as u64);
        // The refused ones back off: asked again only after the backoff.
        v.want(asked[0].clone(), 1_000);
        assert_eq!(v.poll(), None, "backing off");
        v.want(asked[0].clone(), 2_000);
        assert_eq!(v.poll().as_ref(), Some(&asked[0]));
        v.handle_answer(&asked[0], None, 2_000);
        v.want(asked[0].clone(), 5_000);
        assert_eq!(v.poll(), None, "backoff doubled to 4 s");
        v.want(asked[0].clone(), 6_000);
        assert!(v.poll().is_some());
    }

    #[test]
    fn only_a_claim_for_the_asked_id_is_a_proof_and_a_failure_keeps_the_old_one() {
        let mut v = Verifier::default();
        v.want(req("b", "b:1"), 0);
        let r = v.poll().unwrap();
        v.handle_answer(&r, Some(NodeClaim { raft_id: 8, ..claim() }), 0);
        assert!(v.proofs().is_empty(), "another node answered");
        v.want(req("b", "b:1"), 10_000);
        let r = v.poll().unwrap();
        v.handle_answer(&r, Some(claim()), 10_000);
        assert_eq!(v.proofs()[&7].rpc_addr, "b:1");
        v.want(req("b", "forged:1"), 10_000);
        let r = v.poll().unwrap();
        v.handle_answer(&r, None, 10_000);
        assert_eq!(v.proofs()[&7].rpc_addr, "b:1", "a failed verification changes nothing");
        // Unanswered ones expire as failures.
        v.want(req("c", "c:1"), 20_000);
        let _ = v.poll().unwrap();
        v.handle_time(20_000 + IN_FLIGHT_EXPIRY_MS, &[7].into());
        assert_eq!(v.refused(), 3);
        assert_eq!(v.in_flight.len(), 0);
    }
}
