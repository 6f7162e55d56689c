//! The operator requests on one leader whose followers are played by the test: the cluster
//! report, removal under the strict-quorum guard (and `force`), transfer to a named voter.

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use super::tests::{drain_and_ack, leader_of_three};
use super::{Node, Now, Role};
use crate::error::{Error, InvalidArgument, QuorumGuard};
use crate::gossip::Health;
use crate::request::{Reply, Request, RequestId, Response};

/// Ticks the leader for `ticks` ticks of 10 ms; node 2 answers every heartbeat, node 3 is
/// silent (down). The leader keeps its quorum ({1, 2}); after an election timeout it no longer
/// counts node 3 as recently active.
fn tick_with_only_2_answering(node: &mut Node, ticks: u64, start_ms: u64) {
    for t in 1..=ticks {
        let ms = start_ms + t * 10;
        node.handle_tick(Now { monotonic_ms: ms, wall_ms: ms });
        let (_, transmits, _) = drain_and_ack(node);
        for t in transmits.iter().filter(|t| t.to == 2) {
            let m = Message::parse_from_bytes(&t.payload.0).unwrap();
            let mut r = Message::default();
            r.from = 2;
            r.to = 1;
            r.term = m.term;
            match m.get_msg_type() {
                MessageType::MsgHeartbeat => {
                    r.set_msg_type(MessageType::MsgHeartbeatResponse);
                    r.context = m.context.clone();
                }
                MessageType::MsgAppend => {
                    r.set_msg_type(MessageType::MsgAppendResponse);
                    r.index = m.index + m.entries.len() as u64;
                }
                _ => continue,
            }
            node.handle_peer_message(&r.write_to_bytes().unwrap()).unwrap();
        }
    }
    assert_eq!(node.status().role, Role::Leader, "2 keeps the leader's quorum");
}

fn call(node: &mut Node, id: RequestId, request: Request) -> Vec<Reply> {
    node.handle_request(id, request);
    let (_, _, replies) = drain_and_ack(node);
    replies.into_iter().filter(|r| r.id == id).collect()
}

#[test]
fn the_report_has_every_member_with_progress_and_last_contact_on_the_leader() {
    let mut node = leader_of_three();
    tick_with_only_2_answering(&mut node, 40, 0);
    let replies = call(&mut node, 1, Request::ClusterReport);
    let [Reply { result: Ok(Response::ClusterReport(report)), .. }] = replies.as_slice() else {
        panic!("one report: {replies:?}");
    };
    assert_eq!(report.status.role, Role::Leader);
    let ids: Vec<u64> = report.members.iter().map(|m| m.info.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(report.members.iter().all(|m| m.voter));
    assert_eq!(report.members[1].info.name, "n2");
    let (me, two, three) = (&report.members[0], &report.members[1], &report.members[2]);
    assert_eq!(me.health, Some(Health::Alive), "itself");
    assert_eq!(me.last_contact_ms, None, "itself");
    assert_eq!(two.matched_index, Some(report.status.last_index), "2 acknowledged everything");
    assert_eq!(two.recently_active, Some(true));
    assert_eq!(three.recently_active, Some(false), "3 was silent for an election timeout");
    assert_eq!(three.matched_index, two.matched_index, "no entry since 3 went silent");
    // 2 answered the last heartbeats; 3 was last heard from when it acknowledged the first
    // entry (the test's clock started at 0 and ran 400 ms).
    assert!(two.last_contact_ms.unwrap() <= 20, "{two:?}");
    assert_eq!(three.last_contact_ms, Some(400), "{three:?}");
}

#[test]
fn removal_of_a_voter_that_leaves_no_live_majority_is_refused_unless_forced() {
    let mut node = leader_of_three();
    tick_with_only_2_answering(&mut node, 40, 0);
    // Removing 2 would leave {1, 3} with 3 down: one live voter of two.
    let replies = call(&mut node, 1, Request::RemoveMember { id: 2, force: false });
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].result, Err(Error::QuorumGuard(QuorumGuard::new(2, 1))));
    assert_eq!(replies[0].result.as_ref().unwrap_err().class(), crate::ErrorClass::Misuse);
    let last = node.status().last_index;
    assert!(!node.raw.raft.has_pending_conf(), "nothing was proposed");
    // Forced: proposed (answered once committed).
    let replies = call(&mut node, 2, Request::RemoveMember { id: 2, force: true });
    assert!(replies.is_empty(), "waits for the commit: {replies:?}");
    assert_eq!(node.status().last_index, last + 1);
    assert!(node.raw.raft.has_pending_conf());
}

#[test]
fn removal_of_the_down_voter_passes_the_guard_and_commits() {
    let mut node = leader_of_three();
    tick_with_only_2_answering(&mut node, 40, 0);
    // Removing 3 leaves {1, 2}, both live.
    let replies = call(&mut node, 1, Request::RemoveMember { id: 3, force: false });
    assert!(replies.is_empty(), "proposed: {replies:?}");
    tick_with_only_2_answering(&mut node, 5, 400);
    let report = node.cluster_report();
    let ids: Vec<u64> = report.members.iter().map(|m| m.info.id).collect();
    assert_eq!(ids, [1, 2], "3 is out once 2 acknowledged the change");
    // Not seen up in gossip when removed: not remembered, so it is a member again if it comes
    // back (only an up member's removal keeps its process out).
    assert!(node.membership.removed_ids().is_empty());
}

#[test]
fn a_learner_or_a_node_that_is_not_the_leader_gets_no_guard_but_the_usual_answers() {
    let mut node = leader_of_three();
    let replies = call(&mut node, 1, Request::RemoveMember { id: 9, force: false });
    assert_eq!(
        replies[0].result,
        Err(InvalidArgument::Membership("node is not a member").into()),
        "an unknown id"
    );
    // A follower refuses with the leader hint, forced or not.
    let term = node.status().term;
    node.raw.raft.become_follower(term + 1, 2);
    for force in [false, true] {
        let replies = call(&mut node, 2, Request::RemoveMember { id: 3, force });
        assert!(matches!(replies[0].result, Err(Error::NotLeader { .. })), "{replies:?}");
    }
}

#[test]
fn transfer_goes_to_the_named_voter_only() {
    let mut node = leader_of_three();
    let replies = call(&mut node, 1, Request::TransferLeader { to: 7 });
    assert_eq!(
        replies[0].result,
        Err(InvalidArgument::Membership("the transferee is not a voter").into())
    );
    assert_eq!(node.raw.raft.lead_transferee, None);
    let replies = call(&mut node, 2, Request::TransferLeader { to: 1 });
    assert_eq!(replies[0].result, Ok(Response::TransferStarted), "already the leader");
    assert_eq!(node.raw.raft.lead_transferee, None);
    let replies = call(&mut node, 3, Request::TransferLeader { to: 3 });
    assert_eq!(replies[0].result, Ok(Response::TransferStarted));
    assert_eq!(node.raw.raft.lead_transferee, Some(3));
}
