//! The input-batching contract, on one leader whose followers are played by the test.

use protobuf::Message as _;
use raft::eraftpb::{HardState, Message, MessageType};

use super::{Node, Role, Transmit};
use crate::config::Config;
use crate::kv::StateMachine;
use crate::members::{Conf, MemberInfo, NodeId};
use crate::persist::{DurableState, PersistBatch};
use crate::request::{Consistency, Reply, Request, RequestId, Response};
use crate::snapshot::SnapshotImage;

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
pub(super) fn leader_of_three() -> Node {
    let mut node = Node::new(Config::new(1, 7), three_voters_at_one()).unwrap();
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

/// The durable state of node 1 of a three-voter configuration: a snapshot at index 1.
pub(super) fn three_voters_at_one() -> DurableState {
    let mut sm = StateMachine::new(Config::new(1, 7).session_limits);
    sm.set_conf(Conf { voters: [1, 2, 3].into_iter().collect(), ..Conf::default() });
    for id in 1..=3 {
        sm.members_mut().insert(id, info(id));
    }
    sm.skip(1);
    let image = SnapshotImage { index: 1, term: 1, state: sm };
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 1;
    DurableState {
        snapshot: Some(crate::persist::StoredSnapshot { reference: image.reference(), image }),
        hard_state: Some(hs.write_to_bytes().unwrap()),
        entries: Vec::new(),
        node_meta: None,
    }
}

/// Drains every output, acknowledging each persist batch at once.
pub(super) fn drain_and_ack(node: &mut Node) -> (Vec<PersistBatch>, Vec<Transmit>, Vec<Reply>) {
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
        // Snapshot jobs are encoded at once (a shell does it off the driver).
        let mut jobs = false;
        while let Some(job) = node.poll_snapshot_job() {
            jobs = true;
            node.handle_snapshot_durable(job.into_image().reference());
        }
        match last {
            Some(id) => node.handle_persisted(id),
            None if jobs => {}
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

#[cfg(feature = "planted-bugs")]
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

pub(super) fn gossip_config(id: NodeId, cluster_id: u64) -> crate::gossip::GossipConfig {
    let identity = crate::gossip::GossipId {
        gossip_addr: format!("n{id}:1"),
        name: format!("n{id}"),
        raft_id: id,
        rpc_addr: format!("n{id}:2"),
        cluster_id,
        started_ms: 1,
        bump: 0,
        leaving: false,
    };
    crate::gossip::GossipConfig::new(identity, Vec::new())
}

fn durable_with_meta(meta: &crate::persist::NodeMeta) -> DurableState {
    DurableState { node_meta: Some(meta.encode()), ..DurableState::default() }
}

#[test]
fn a_node_gossips_its_stored_cluster_id_and_announces_to_the_peers_it_remembered() {
    let meta = crate::persist::NodeMeta {
        cluster_id: Some(42),
        gossip_peers: [(2, "n2:1".to_owned()), (4, "n4:1".to_owned())].into(),
    };
    let mut config = Config::new(3, 9);
    config.gossip = Some(gossip_config(3, 0));
    let mut node = Node::new(config, durable_with_meta(&meta)).unwrap();
    assert_eq!(node.cluster_id(), Some(42));
    assert_eq!(node.gossip_identity().map(|g| g.cluster_id), Some(42));
    node.handle_tick(super::Now::default());
    let mut to: Vec<String> = std::iter::from_fn(|| node.poll_datagram()).map(|d| d.to).collect();
    to.sort();
    to.dedup();
    assert_eq!(to, vec!["n2:1".to_owned(), "n4:1".to_owned()], "no configured seeds: only these");
    assert!(node.poll_persist().is_none(), "nothing new to store");
}

#[test]
fn a_given_cluster_id_is_stored_unless_another_one_is() {
    let mut config = Config::new(3, 9);
    config.gossip = Some(gossip_config(3, 7));
    let mut node = Node::new(config.clone(), DurableState::default()).unwrap();
    let batch = node.poll_persist().expect("the cluster id is stored at once");
    assert!(batch.must_sync);
    let meta = crate::persist::NodeMeta::decode(batch.node_meta.as_deref().unwrap()).unwrap();
    assert_eq!(meta.cluster_id, Some(7));

    let other = crate::persist::NodeMeta { cluster_id: Some(8), ..Default::default() };
    let err = Node::new(config, durable_with_meta(&other)).unwrap_err();
    assert!(matches!(err, crate::error::RecoveryError::ClusterIdMismatch), "{err:?}");
}

#[test]
fn corrupt_node_metadata_is_refused_at_start() {
    let durable = DurableState { node_meta: Some(vec![1, 2, 3]), ..DurableState::default() };
    let err = Node::new(Config::new(1, 1), durable).unwrap_err();
    assert!(matches!(err, crate::error::RecoveryError::Corrupt("node metadata")), "{err:?}");
}

#[test]
fn without_gossip_the_directory_is_the_member_table_and_the_leader() {
    let node = leader_of_three();
    let d = node.directory();
    assert_eq!(d.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(d.get(2).and_then(|e| e.rpc_addr.as_deref()), Some("rpc:2"));
    assert_eq!(d.get(2).and_then(|e| e.peer_addr.as_deref()), Some("peer:2"));
    assert_eq!(d.get(1).and_then(|e| e.health), Some(crate::gossip::Health::Alive));
    assert_eq!(d.get(3).and_then(|e| e.health), None, "no gossip: unseen");
    assert_eq!(d.leader, node.leader_hint());
    assert_eq!(
        d.leader.map(|l| (l.id, l.name, l.rpc_addr)),
        Some((1, "n1".into(), "rpc:1".into()))
    );
}

/// The durable state of node 2, a voter of `voters` (a snapshot at index 1), no metadata yet.
fn voter_2_of(voters: &[NodeId]) -> DurableState {
    let mut sm = StateMachine::new(Config::new(2, 1).session_limits);
    sm.set_conf(Conf { voters: voters.iter().copied().collect(), ..Conf::default() });
    for id in voters {
        sm.members_mut().insert(*id, info(*id));
    }
    sm.skip(1);
    let image = SnapshotImage { index: 1, term: 1, state: sm };
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 1;
    DurableState {
        snapshot: Some(crate::persist::StoredSnapshot { reference: image.reference(), image }),
        hard_state: Some(hs.write_to_bytes().unwrap()),
        ..DurableState::default()
    }
}

/// `node` hears of leader `leader` of term 2 over Raft (a heartbeat).
fn hears_leader(node: &mut Node, leader: NodeId) {
    let mut hb = Message::default();
    hb.set_msg_type(MessageType::MsgHeartbeat);
    hb.from = leader;
    hb.to = node.config.id;
    hb.term = 2;
    node.handle_peer_message(&hb.write_to_bytes().unwrap()).unwrap();
    assert_eq!(node.status().leader, Some(leader));
}

/// Ten seconds of ticks and gossip between n1 (at `n1:1`) and n2: whether n2 announced that
/// it learned cluster id 42, and n2's persist batches.
fn gossip_ten_seconds(n1: &mut Node, n2: &mut Node) -> (bool, Vec<PersistBatch>) {
    let mut batches = Vec::new();
    let mut learned = false;
    for t in 1..=100 {
        for n in [&mut *n1, &mut *n2] {
            n.handle_tick(super::Now { monotonic_ms: t * 100, wall_ms: t * 100 });
        }
        for _ in 0..4 {
            let mut wire: Vec<crate::gossip::Datagram> = Vec::new();
            wire.extend(std::iter::from_fn(|| n1.poll_datagram()));
            wire.extend(std::iter::from_fn(|| n2.poll_datagram()));
            for d in wire {
                let to = if d.to == "n1:1" { &mut *n1 } else { &mut *n2 };
                let _ = to.handle_gossip(&d.payload);
            }
        }
        while n1.poll_persist().is_some() {}
        batches.extend(std::iter::from_fn(|| n2.poll_persist()));
        learned |= std::iter::from_fn(|| n2.poll_event())
            .any(|e| e == super::Event::ClusterIdLearned { cluster_id: 42 });
    }
    (learned, batches)
}

/// Node `id` (randomness seeded by `rng_seed`) gossiping cluster id `cluster_id`, with `seeds`.
fn gossiping(
    id: NodeId,
    rng_seed: u64,
    cluster_id: u64,
    seeds: &[&str],
    disk: DurableState,
) -> Node {
    let mut config = Config::new(id, rng_seed);
    config.gossip = Some(gossip_config(id, cluster_id));
    config.gossip.as_mut().unwrap().seeds = seeds.iter().map(|s| (*s).to_owned()).collect();
    Node::new(config, disk).unwrap()
}

/// A node that joined empty learns its cluster's id from the leader's gossip identity once it
/// is in the configuration, stores it with a synced metadata batch, and gossips it again after
/// a restart from what it stored; the gossip peers it saw are remembered on the way.
#[test]
fn a_joined_node_stores_the_cluster_id_it_learns_and_restarts_with_it() {
    let mut disk = voter_2_of(&[1, 2]);
    let mut n2 = gossiping(2, 5, 0, &["n1:1"], disk.clone());
    // Node 1 gossips cluster id 42 (a fresh node given it: it stores it too).
    let mut n1 = gossiping(1, 6, 42, &[], DurableState::default());
    hears_leader(&mut n2, 1);

    let (learned, batches) = gossip_ten_seconds(&mut n1, &mut n2);
    assert!(learned, "node 2 learned the cluster id");
    assert_eq!(n2.cluster_id(), Some(42));
    assert_eq!(n2.gossip_identity().map(|g| g.cluster_id), Some(42));
    let stored = batches
        .iter()
        .find(|b| b.node_meta.is_some() && b.must_sync)
        .expect("the learned id is stored, synced");
    assert!(stored.entries.is_empty() && stored.hard_state.is_none(), "a metadata-only batch");
    for b in &batches {
        disk.apply(b);
    }
    let meta = crate::persist::NodeMeta::decode(disk.node_meta.as_deref().unwrap()).unwrap();
    assert_eq!(meta.cluster_id, Some(42));
    assert_eq!(meta.gossip_peers.get(&1).map(String::as_str), Some("n1:1"), "peer remembered");

    let restarted = gossiping(2, 5, 0, &["n1:1"], disk);
    assert_eq!(restarted.gossip_identity().map(|g| g.cluster_id), Some(42));
}

/// The cluster id is learned from any member of the configuration, not only from the leader:
/// here leader 3 joined empty itself and gossips no id (it is not even in node 2's gossip
/// view), while member 1 gossips 42. Learning from the leader only, node 2 would stay without
/// an id, and so would every node a leader like 3 adds, for good.
#[test]
fn a_joined_node_learns_the_cluster_id_from_a_member_when_the_leader_has_none() {
    let mut n2 = gossiping(2, 5, 0, &["n1:1"], voter_2_of(&[1, 2, 3]));
    let mut n1 = gossiping(1, 6, 42, &[], DurableState::default());
    hears_leader(&mut n2, 3);

    let (learned, _) = gossip_ten_seconds(&mut n1, &mut n2);
    assert!(learned, "node 2 learned the cluster id from member 1");
    assert_eq!(n2.cluster_id(), Some(42));
}

/// Conditional writes through the node: decided at apply time in log order (two if-absent
/// creations of one key in the same batch: the first wins), and a compared value larger than a
/// value may be is refused before it is proposed.
#[test]
fn conditional_writes_are_decided_in_log_order() {
    use crate::command::{Condition, KeyRevisions};
    use crate::error::Error;

    let mut node = leader_of_three();
    let create = |value: &[u8]| Request::SetIf {
        key: "lock".into(),
        value: value.to_vec(),
        condition: Condition::Absent,
        session: None,
    };
    node.handle_request(1, create(b"a"));
    node.handle_request(2, create(b"b"));
    let too_large = vec![0; node.config.max_value_bytes + 1];
    let compare = Condition::ValueEquals(too_large);
    node.handle_request(
        3,
        Request::DeleteIf { key: "lock".into(), condition: compare, session: None },
    );
    let (_, _, replies) = drain_and_ack(&mut node);
    assert_eq!(replies.len(), 1);
    assert!(matches!(replies[0].result, Err(Error::InvalidArgument(_))), "{:?}", replies[0]);
    let last = node.status().last_index;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppendResponse);
    m.from = 2;
    m.to = 1;
    m.term = node.status().term;
    m.index = last;
    node.handle_peer_message(&m.write_to_bytes().unwrap()).unwrap();
    let (_, _, replies) = drain_and_ack(&mut node);
    let first = last - 1;
    assert_eq!(replies[0].result, Ok(Response::Set { revision: first }));
    let current = Some(KeyRevisions { create_index: first, mod_index: first, version: 1 });
    assert_eq!(replies[1].result, Ok(Response::ConditionFailed { revision: last, current }));
    assert_eq!(node.state().get("lock").unwrap().value(), b"a");
}

fn tick_at(n: &mut Node, monotonic_ms: u64, wall_ms: u64) {
    n.handle_tick(crate::node::Now { monotonic_ms, wall_ms });
}

/// Gossip's timers run on the monotonic clock: when this node's wall clock steps back an hour
/// (an NTP correction) while the monotonic one moves on, a peer that went silent is still
/// suspected and declared down in the usual few seconds.
#[test]
fn a_backward_wall_clock_step_does_not_freeze_failure_detection() {
    let mut config1 = Config::new(1, 6);
    config1.gossip = Some(gossip_config(1, 42));
    let mut n1 = Node::new(config1, DurableState::default()).unwrap();
    let mut config2 = Config::new(2, 5);
    let mut g2 = gossip_config(2, 42);
    g2.seeds = vec!["n1:1".into()];
    config2.gossip = Some(g2);
    let mut n2 = Node::new(config2, DurableState::default()).unwrap();
    let health_of_2 = |n1: &Node| n1.directory().get(2).and_then(|e| e.health);

    let wall_start_ms = 10 * 3_600_000;
    let mut t = 0u64;
    // Both alive and talking, clocks agreeing.
    for _ in 0..50 {
        t += 100;
        tick_at(&mut n1, t, wall_start_ms + t);
        tick_at(&mut n2, t, wall_start_ms + t);
        for _ in 0..4 {
            let mut wire: Vec<crate::gossip::Datagram> = Vec::new();
            wire.extend(std::iter::from_fn(|| n1.poll_datagram()));
            wire.extend(std::iter::from_fn(|| n2.poll_datagram()));
            for d in wire {
                let to = if d.to == "n1:1" { &mut n1 } else { &mut n2 };
                let _ = to.handle_gossip(&d.payload);
            }
        }
    }
    assert_eq!(health_of_2(&n1), Some(crate::gossip::Health::Alive));

    // Node 2 goes silent; node 1's wall clock steps back one hour, its monotonic clock goes on.
    let stepped_wall_ms = wall_start_ms + t - 3_600_000;
    let mut down_after_ms = None;
    for i in 1..=200u64 {
        t += 100;
        tick_at(&mut n1, t, stepped_wall_ms + i * 100);
        while n1.poll_datagram().is_some() {}
        if health_of_2(&n1) == Some(crate::gossip::Health::Down) {
            down_after_ms = Some(i * 100);
            break;
        }
    }
    let down_after_ms = down_after_ms.expect("node 2 is declared down despite the clock step");
    assert!(down_after_ms <= 10_000, "declared down after {down_after_ms} ms");
}

/// A transaction over `max_txn_ops` or `max_txn_bytes`, or with a bad key or value inside, is
/// refused before it is proposed, with a message that names sizes only.
#[test]
fn transactions_are_bounded_before_they_are_proposed() {
    use crate::error::{Error, InvalidArgument};
    use crate::txn::{Txn, TxnOp};

    let mut node = leader_of_three();
    node.config.max_txn_ops = 3;
    node.config.max_txn_bytes = 64;
    let get = |key: &str| TxnOp::Get { key: key.into() };
    let last = node.status().last_index;
    let too_many = Txn {
        success: vec![get("a"), get("b")],
        failure: vec![get("c"), get("d")],
        ..Txn::default()
    };
    node.handle_request(1, Request::Txn { txn: too_many, session: None });
    let secret = "secret-key-".repeat(8);
    let too_large = Txn { success: vec![get(&secret)], ..Txn::default() };
    node.handle_request(2, Request::Txn { txn: too_large, session: None });
    let empty_key = Txn { failure: vec![TxnOp::Delete { key: String::new() }], ..Txn::default() };
    node.handle_request(3, Request::Txn { txn: empty_key, session: None });
    let (_, _, replies) = drain_and_ack(&mut node);
    assert_eq!(replies.len(), 3);
    assert_eq!(
        replies[0].result,
        Err(Error::InvalidArgument(InvalidArgument::TooManyTxnOps { count: 4, max: 3 }))
    );
    let Err(e) = &replies[1].result else { panic!("{:?}", replies[1]) };
    assert!(matches!(e, Error::InvalidArgument(InvalidArgument::TxnTooLarge { max: 64, .. })));
    assert!(!e.to_string().contains("secret"), "{e}");
    assert_eq!(replies[2].result, Err(Error::InvalidArgument(InvalidArgument::EmptyKey)));
    assert_eq!(node.status().last_index, last, "nothing was proposed");
}

#[test]
fn proposed_entries_are_packed_into_shared_blocks() {
    let mut node = leader_of_three();
    let first = node.status().last_index + 1;
    for i in 0..100 {
        node.handle_request(i as RequestId, set(i));
    }
    let entries = node.raw.raft.raft_log.unstable_entries();
    let ours: Vec<_> = entries.iter().filter(|e| e.index >= first).collect();
    assert_eq!(ours.len(), 100);
    // Each entry's context, then its data, then the next entry's context, back to back: one
    // allocation each would leave the allocator's header between them.
    for pair in ours.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert_eq!(a.context.as_ptr().wrapping_add(a.context.len()), a.data.as_ptr());
        assert_eq!(a.data.as_ptr().wrapping_add(a.data.len()), b.context.as_ptr());
    }
}

#[test]
fn a_leader_sends_heartbeats_at_once_to_a_peer_that_started() {
    let heartbeats_to = |transmits: &[Transmit], to: NodeId| {
        transmits
            .iter()
            .filter(|t| t.to == to)
            .map(|t| Message::parse_from_bytes(&t.payload.0).unwrap())
            .filter(|m| m.get_msg_type() == MessageType::MsgHeartbeat)
            .count()
    };
    let mut node = leader_of_three();
    node.handle_peer_started(3);
    let (_, transmits, _) = drain_and_ack(&mut node);
    assert_eq!(heartbeats_to(&transmits, 3), 1, "without waiting for a heartbeat tick");

    // Not a member, or this node itself: nothing to send.
    node.handle_peer_started(9);
    node.handle_peer_started(1);
    let (_, transmits, _) = drain_and_ack(&mut node);
    assert!(transmits.is_empty());

    // A follower does not know better than the leader: it sends nothing.
    let mut follower = Node::new(Config::new(1, 7), three_voters_at_one()).unwrap();
    drain_and_ack(&mut follower);
    follower.handle_peer_started(2);
    let (_, transmits, _) = drain_and_ack(&mut follower);
    assert!(transmits.is_empty());
}
