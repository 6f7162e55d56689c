//! Gossip suggests, proofs decide: a forger holding only the cluster key gossips a voter
//! leaving at another address and a new identity; the leader changes nothing until the nodes
//! themselves prove it.

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use super::tests::{drain_and_ack, gossip_config, three_voters_at_one};
use super::{Node, Now, Role};
use crate::config::Config;
use crate::gossip::{Datagram, Gossip, GossipConfig, GossipId, NodeClaim, VerifyRequest};

/// Node 1 (gossip at `n1:1`, cluster 42) leading voters {1, 2, 3}.
fn gossiping_leader() -> Node {
    let mut config = Config::new(1, 7);
    config.gossip = Some(gossip_config(1, 42));
    let mut node = Node::new(config, three_voters_at_one()).unwrap();
    node.raw.raft.become_candidate();
    node.raw.raft.become_leader();
    node.after_input();
    drain_and_ack(&mut node);
    assert_eq!(node.status().role, Role::Leader);
    node
}

fn forged(name: &str, raft_id: u64, port: u16, leaving: bool) -> GossipId {
    GossipId {
        gossip_addr: format!("forger:{port}"),
        name: name.into(),
        raft_id,
        rpc_addr: format!("forger:{}", port + 1),
        cluster_id: 42,
        started_ms: 1_000,
        bump: 0,
        leaving,
    }
}

struct World {
    leader: Node,
    forgers: Vec<Gossip>,
    t_ms: u64,
    asked: Vec<VerifyRequest>,
    ever_pending_conf: bool,
}

impl World {
    /// Runs `steps` of 100 ms; `answer` plays the shell's proof (the real nodes' answers).
    fn run(&mut self, steps: u64, answer: impl Fn(&VerifyRequest) -> Option<NodeClaim>) {
        for _ in 0..steps {
            self.t_ms += 100;
            let now = Now { monotonic_ms: self.t_ms, wall_ms: self.t_ms };
            self.leader.handle_tick(now);
            // Followers 2 and 3 keep answering over Raft (the leader keeps its quorum).
            for from in [2, 3] {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgHeartbeatResponse);
                m.from = from;
                m.to = 1;
                m.term = self.leader.status().term;
                self.leader.handle_peer_message(&m.write_to_bytes().unwrap()).unwrap();
            }
            for f in &mut self.forgers {
                f.handle_time(self.t_ms);
            }
            for _ in 0..4 {
                let mut wire: Vec<Datagram> =
                    std::iter::from_fn(|| self.leader.poll_datagram()).collect();
                for f in &mut self.forgers {
                    wire.extend(std::iter::from_fn(|| f.poll_datagram()));
                }
                for d in wire {
                    if d.to == "n1:1" {
                        let _ = self.leader.handle_gossip(&d.payload);
                    } else if let Some(f) =
                        self.forgers.iter_mut().find(|f| f.identity().gossip_addr == d.to)
                    {
                        let _ = f.handle_datagram(&d.payload);
                    }
                }
            }
            while let Some(r) = self.leader.poll_verify() {
                let claim = answer(&r);
                self.asked.push(r.clone());
                self.leader.handle_verified(r, claim);
            }
            drain_and_ack(&mut self.leader);
            self.ever_pending_conf |= self.leader.raw.raft.has_pending_conf();
        }
    }
}

/// The real nodes 2 and 3 at their member-table addresses, neither leaving.
fn honest(r: &VerifyRequest) -> Option<NodeClaim> {
    let real = [("n2", 2, "rpc:2"), ("n3", 3, "rpc:3")];
    real.iter().any(|(n, id, a)| r.name == *n && r.raft_id == *id && r.rpc_addr == *a).then_some(
        NodeClaim {
            raft_id: r.raft_id,
            cluster_id: 42,
            started_ms: 1,
            leaving: false,
            gossip_addr: String::new(),
        },
    )
}

#[test]
fn forged_gossip_changes_no_membership_and_no_address_until_proven() {
    let mut w = World {
        leader: gossiping_leader(),
        forgers: [forged("n2", 2, 1, true), forged("n9", 9, 3, false)]
            .into_iter()
            .enumerate()
            .map(|(i, id)| Gossip::new(&GossipConfig::new(id, vec!["n1:1".into()]), i as u64))
            .collect(),
        t_ms: 0,
        asked: Vec::new(),
        ever_pending_conf: false,
    };
    w.run(100, honest);
    // The leader heard the forgeries: voter 2 leaving at the forger's address, and node 9.
    let view = w.leader.gossip_members();
    assert!(view.iter().any(|m| m.id.raft_id == 2 && m.id.leaving), "{view:?}");
    assert!(view.iter().any(|m| m.id.raft_id == 9), "{view:?}");
    // It asked, and each forgery failed its proof.
    let asked =
        |name: &str, addr: &str| w.asked.iter().any(|r| r.name == name && r.rpc_addr == addr);
    assert!(asked("n2", "rpc:2"), "the leave is checked with n2 itself: {:?}", w.asked);
    assert!(asked("n2", "forger:2") && asked("n9", "forger:4"), "{:?}", w.asked);
    assert!(w.leader.verifications_refused() >= 2);
    // Nothing changed.
    assert!(!w.ever_pending_conf, "no configuration change was proposed");
    assert_eq!(w.leader.sm.conf().voters, [1, 2, 3].into());
    assert!(w.leader.sm.conf().learners.is_empty());
    let d = w.leader.directory();
    assert_eq!(d.get(2).and_then(|e| e.rpc_addr.as_deref()), Some("rpc:2"));
    assert_eq!(d.get(2).and_then(|e| e.peer_addr.as_deref()), Some("rpc:2"));
    assert!(d.get(9).and_then(|e| e.rpc_addr.clone()).is_none());
    // Dials stay bounded: backoff per (name, address).
    let dials_to_forger = w.asked.iter().filter(|r| r.rpc_addr.starts_with("forger")).count();
    assert!(dials_to_forger <= 10, "{dials_to_forger} verifications of forged addresses in 10 s");

    // Node 9 turns out real (its own certificate answers at the address it gossips): added.
    w.run(300, |r| {
        if r.name == "n9" && r.rpc_addr == "forger:4" {
            Some(NodeClaim {
                raft_id: 9,
                cluster_id: 42,
                started_ms: 1_000,
                leaving: false,
                gossip_addr: String::new(),
            })
        } else {
            honest(r)
        }
    });
    assert!(w.ever_pending_conf, "the proven node is added");
}

/// Voter 2 is lost to gossip: it knows no live gossip member (its only seed left) and no
/// member knows it, yet it is a voter. The leader asks it where it gossips, at its
/// member-table address, and announces to the gossip address it proved: the views join.
#[test]
fn the_leader_finds_a_voter_that_gossip_lost() {
    let lost = GossipId {
        gossip_addr: "n2:1".into(),
        name: "n2".into(),
        raft_id: 2,
        rpc_addr: "rpc:2".into(),
        cluster_id: 42,
        started_ms: 1_000,
        bump: 0,
        leaving: false,
    };
    let mut w = World {
        leader: gossiping_leader(),
        forgers: vec![Gossip::new(&GossipConfig::new(lost, Vec::new()), 1)],
        t_ms: 0,
        asked: Vec::new(),
        ever_pending_conf: false,
    };
    let with_gossip_addr = |r: &VerifyRequest| {
        honest(r).map(|c| NodeClaim { gossip_addr: format!("{}:1", r.name), ..c })
    };
    w.run(50, with_gossip_addr);
    assert!(w.asked.iter().any(|r| r.name == "n2" && r.rpc_addr == "rpc:2"), "{:?}", w.asked);
    let view = w.leader.gossip_members();
    assert!(
        view.iter().any(|m| m.id.raft_id == 2 && m.health == crate::gossip::Health::Alive),
        "the leader's view: {view:?}"
    );
    let theirs = w.forgers[0].members();
    assert!(theirs.iter().any(|m| m.id.raft_id == 1), "n2's view: {theirs:?}");
    assert!(!w.ever_pending_conf, "no configuration change");
    // Found: it is asked no more (voter 3 never answers with a gossip address: still asked).
    let before = w.asked.iter().filter(|r| r.name == "n2").count();
    w.run(100, with_gossip_addr);
    assert_eq!(w.asked.iter().filter(|r| r.name == "n2").count(), before, "{:?}", w.asked);
}
