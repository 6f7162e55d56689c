//! The input-batching contract, on one leader whose followers are played by the test.

use super::*;
use crate::members::MemberInfo;
use crate::persist::DurableState;

fn info(id: NodeId) -> MemberInfo {
    MemberInfo {
        id,
        name: format!("n{id}"),
        peer_addr: format!("peer:{id}"),
        rpc_addr: format!("rpc:{id}"),
        auto_promote: false,
    }
}

/// Node 1 of a three-voter configuration (a snapshot at index 1), made leader of term 2 with
/// both followers caught up (replicating), and every output drained.
fn leader_of_three() -> Node {
    let config = Config::new(1, 7);
    let mut sm = StateMachine::new(config.session_limits);
    sm.set_conf(Conf { voters: [1, 2, 3].into_iter().collect(), ..Conf::default() });
    for id in 1..=3 {
        sm.members_mut().insert(id, info(id));
    }
    sm.skip(1);
    let image = SnapshotImage { index: 1, term: 1, state: sm };
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 1;
    let durable = DurableState {
        snapshot: Some(image.encode()),
        hard_state: Some(hs.write_to_bytes().unwrap()),
        entries: Vec::new(),
    };
    let mut node = Node::new(config, durable).unwrap();
    node.raw.raft.become_candidate();
    node.raw.raft.become_leader();
    node.after_input();
    drain_and_ack(&mut node);
    let term = node.raw.raft.term;
    let last = node.raw.raft.raft_log.last_index();
    for from in [2, 3] {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.from = from;
        m.to = 1;
        m.term = term;
        m.index = last;
        node.handle_peer_message(&m.write_to_bytes().unwrap()).unwrap();
    }
    drain_and_ack(&mut node);
    assert_eq!(node.status().role, Role::Leader);
    assert_eq!(node.status().commit_index, last, "the leader's empty entry is committed");
    node
}

/// Drains every output, acknowledging each persist batch at once.
fn drain_and_ack(node: &mut Node) -> (Vec<PersistBatch>, Vec<Transmit>, Vec<Reply>) {
    let (mut batches, mut transmits, mut replies) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let mut last = None;
        while let Some(b) = node.poll_persist() {
            last = Some(b.id);
            batches.push(b);
        }
        while let Some(t) = node.poll_transmit() {
            transmits.push(t);
        }
        while let Some(r) = node.poll_reply() {
            replies.push(r);
        }
        while node.poll_event().is_some() {}
        match last {
            Some(id) => node.handle_persisted(id),
            None => return (batches, transmits, replies),
        }
    }
}

fn set(i: usize) -> Request {
    Request::Set { key: format!("k{i}"), value: vec![b'v'; 16], session: None }
}

#[test]
fn proposals_between_drains_make_one_append_one_batch_one_message_per_follower() {
    let mut node = leader_of_three();
    let before = node.status().last_index;
    for i in 0..100 {
        node.handle_request(i as RequestId, set(i));
    }
    // Inputs only record: the log grew, nothing has been handed out yet.
    assert_eq!(node.status().last_index, before + 100);
    let mut batches = Vec::new();
    while let Some(b) = node.poll_persist() {
        batches.push(b);
    }
    assert_eq!(batches.len(), 1, "one persist batch for the lot");
    assert_eq!(batches[0].entries.len(), 100);
    let mut transmits = Vec::new();
    while let Some(t) = node.poll_transmit() {
        transmits.push(t);
    }
    for to in [2, 3] {
        let appends: Vec<Message> = transmits
            .iter()
            .filter(|t| t.to == to)
            .map(|t| Message::parse_from_bytes(&t.payload.0).unwrap())
            .filter(|m| m.get_msg_type() == MessageType::MsgAppend)
            .collect();
        assert_eq!(appends.len(), 1, "one append to {to}");
        assert_eq!(appends[0].entries.len(), 100);
    }
    assert!(node.poll_reply().is_none(), "nothing is answered before it is committed");
}

#[test]
fn a_batch_is_answered_after_a_quorum_acknowledges_it() {
    let mut node = leader_of_three();
    for i in 0..10 {
        node.handle_request(i as RequestId, set(i));
    }
    let (batches, _, replies) = drain_and_ack(&mut node);
    assert_eq!(batches.len(), 1);
    assert!(replies.is_empty(), "durable here, but no follower has it yet");
    let last = node.status().last_index;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppendResponse);
    m.from = 2;
    m.to = 1;
    m.term = node.status().term;
    m.index = last;
    node.handle_peer_message(&m.write_to_bytes().unwrap()).unwrap();
    let (_, _, replies) = drain_and_ack(&mut node);
    let ids: Vec<RequestId> = replies.iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| matches!(r.result, Ok(Response::Set { .. }))));
}

#[test]
fn planted_answer_before_durable_answers_at_append() {
    let mut node = leader_of_three();
    node.config.planted_bugs.answer_before_durable = true;
    for i in 0..5 {
        node.handle_request(i as RequestId, set(i));
    }
    let mut replies = Vec::new();
    while node.poll_persist().is_some() {}
    while node.poll_transmit().is_some() {}
    while let Some(r) = node.poll_reply() {
        replies.push(r);
    }
    assert_eq!(replies.len(), 5, "the bug answers before anything is durable");
}

#[test]
fn reads_between_drains_share_one_round_and_later_ones_wait_for_it() {
    let mut node = leader_of_three();
    let get = |k: &str| Request::Get { key: k.into(), consistency: Consistency::Linearizable };
    for i in 0..20 {
        node.handle_request(i, get("a"));
    }
    let (_, transmits, replies) = drain_and_ack(&mut node);
    assert!(replies.is_empty());
    let heartbeats = |ts: &[Transmit]| {
        ts.iter()
            .map(|t| Message::parse_from_bytes(&t.payload.0).unwrap())
            .filter(|m| m.get_msg_type() == MessageType::MsgHeartbeat)
            .collect::<Vec<_>>()
    };
    let round = heartbeats(&transmits);
    assert_eq!(round.len(), 2, "one heartbeat per follower for the 20 reads");
    // More reads while the round is in flight: no new round.
    for i in 20..30 {
        node.handle_request(i, get("a"));
    }
    let (_, transmits, _) = drain_and_ack(&mut node);
    assert!(heartbeats(&transmits).is_empty(), "the next round waits for this one");
    // One follower confirms: the first 20 are answered, the next round goes out.
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeatResponse);
    m.from = 2;
    m.to = 1;
    m.term = node.status().term;
    m.context = round[0].context.clone();
    node.handle_peer_message(&m.write_to_bytes().unwrap()).unwrap();
    let (_, transmits, replies) = drain_and_ack(&mut node);
    let ids: Vec<RequestId> = replies.iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    assert_eq!(heartbeats(&transmits).len(), 2, "the queued reads' round");
}
