//! `Node::restore` (a backup into a new cluster) and `Node::force_new_cluster` (a survivor of a
//! lost quorum), each written the way the shell does and restarted with `Node::new`.

use std::num::NonZeroU64;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use super::tests::{drain_and_ack, three_voters_at_one};
use super::{Node, Role};
use crate::backup::Backup;
use crate::config::Config;
use crate::members::MemberInfo;
use crate::persist::DurableState;
use crate::request::{Reply, Request, RequestId, Response};

fn set(node: &mut Node, id: RequestId, key: &str, value: &[u8]) {
    let req = Request::Set { key: key.into(), value: value.to_vec(), session: None };
    node.handle_request(id, req);
}

fn answer(replies: &[Reply], id: RequestId) -> &Response {
    let r = replies.iter().find(|r| r.id == id).expect("an answer");
    r.result.as_ref().expect("a successful answer")
}

/// Runs one lone voter until it leads.
fn started(config: Config, durable: DurableState) -> (Node, DurableState) {
    let mut durable = durable;
    let mut node = Node::new(config, durable.clone()).unwrap();
    for b in drain_and_ack(&mut node).0 {
        durable.apply(&b);
    }
    assert_eq!(node.status().role, Role::Leader, "a lone voter leads itself");
    (node, durable)
}

#[test]
fn a_restored_backup_is_a_new_one_voter_cluster_with_every_key_and_revision() {
    // The source: a one-node cluster with history.
    let me = MemberInfo {
        id: 9,
        name: "src".into(),
        peer_addr: String::new(),
        rpc_addr: String::new(),
        auto_promote: true,
    };
    let config = Config::new(9, 1);
    let mut durable = DurableState::default();
    durable.apply(&Node::bootstrap(&me, &config, NonZeroU64::new(77).unwrap()));
    let (mut src, _) = started(config, durable);
    set(&mut src, 1, "a", b"1");
    set(&mut src, 2, "b", b"2");
    set(&mut src, 3, "a", b"3");
    src.handle_request(4, Request::Delete { key: "b".into(), session: None });
    set(&mut src, 5, "c", b"5");
    drain_and_ack(&mut src);
    src.handle_request(6, Request::Backup);
    let replies = drain_and_ack(&mut src).2;
    let Response::Backup(source) = answer(&replies, 6).clone() else { panic!("not a backup") };
    assert_eq!(source.info().cluster_id, Some(77));
    assert_eq!(source.info().applied_index, src.state().applied_index());
    let file: Vec<u8> = source.encoder(16).flatten().collect();
    let backup = Backup::decode(&file).unwrap();

    let new_me = MemberInfo { id: 5, name: "r1".into(), ..me };
    let config = Config::new(5, 2);
    let mut durable = DurableState::default();
    durable.apply(&Node::restore(&new_me, &config, NonZeroU64::new(88).unwrap(), backup));
    let (mut node, _) = started(config, durable);
    assert_eq!(node.cluster_id(), Some(88));
    assert_eq!(node.state().conf().voters.iter().copied().collect::<Vec<_>>(), vec![5]);
    assert_eq!(node.members().keys().copied().collect::<Vec<_>>(), vec![5]);
    for key in ["a", "c"] {
        assert_eq!(node.state().get(key), src.state().get(key), "{key}");
    }
    assert_eq!(node.state().get("a").unwrap().version(), 2);
    assert!(node.state().get("b").is_none());
    set(&mut node, 7, "d", b"7");
    let replies = drain_and_ack(&mut node).2;
    let Response::Set { revision } = answer(&replies, 7) else { panic!("not a set") };
    assert!(*revision > src.state().applied_index(), "revisions continue after the backup");
}

/// The three-voter leader's followers acknowledge everything up to `index`.
fn acknowledge(node: &mut Node, index: u64) {
    let term = node.status().term;
    for from in [2, 3] {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.from = from;
        m.to = 1;
        m.term = term;
        m.index = index;
        node.handle_peer_message(&m.write_to_bytes().unwrap()).unwrap();
    }
}

#[test]
fn force_new_cluster_keeps_everything_committed_and_drops_the_rest() {
    // Node 1 of three made leader, every batch it writes kept as its disk would.
    let mut durable = three_voters_at_one();
    let mut node = Node::new(Config::new(1, 7), durable.clone()).unwrap();
    node.raw.raft.become_candidate();
    node.raw.raft.become_leader();
    node.after_input();
    let (start, _, _) = drain_and_ack(&mut node);
    let last = node.status().last_index;
    acknowledge(&mut node, last);
    let (started_batches, _, _) = drain_and_ack(&mut node);
    let first = node.status();
    for i in 0..10 {
        set(&mut node, i, &format!("k{i}"), b"v");
    }
    let (batches, _, _) = drain_and_ack(&mut node);
    let committed = node.status().last_index;
    acknowledge(&mut node, committed);
    let (more, _, _) = drain_and_ack(&mut node);
    assert_eq!(node.status().commit_index, committed);
    for i in 10..15 {
        set(&mut node, i, &format!("k{i}"), b"v");
    }
    let (uncommitted, _, _) = drain_and_ack(&mut node);
    for b in start.iter().chain(&started_batches).chain(&batches).chain(&more).chain(&uncommitted) {
        durable.apply(b);
    }
    assert_eq!(durable.entries.last().unwrap().index, committed + 5);

    let forced = Node::force_new_cluster(
        Config::new(1, 3),
        durable.clone(),
        Some("survivor"),
        NonZeroU64::new(99).unwrap(),
    )
    .unwrap();
    assert_eq!(forced.applied_index, committed);
    assert_eq!(forced.dropped_entries, 5);
    assert_eq!(forced.removed_voters, vec![2, 3]);
    assert_eq!(forced.keys, 10);
    durable.apply(&forced.batch);
    assert!(durable.entries.is_empty(), "the whole log is replaced by the snapshot");

    let (mut node, _) = started(Config::new(1, 4), durable);
    assert!(node.status().term > first.term, "the term never goes back");
    assert_eq!(node.cluster_id(), Some(99));
    assert_eq!(node.members().get(&1).unwrap().name, "survivor");
    assert_eq!(node.members().len(), 1);
    assert_eq!(node.state().len(), 10);
    assert!(node.state().get("k9").is_some() && node.state().get("k10").is_none());
    // It commits alone.
    set(&mut node, 20, "after", b"x");
    let replies = drain_and_ack(&mut node).2;
    assert!(matches!(answer(&replies, 20), Response::Set { revision } if *revision > committed));
}
