//! Fuzz-style property tests of the core's untrusted inputs, small enough to run in CI:
//! peer messages (`Node::handle_peer_message`: arbitrary bytes, refused shapes, mutated valid
//! raft messages) and client requests (`Node::handle_request`: arbitrary keys, values and range
//! queries). The command and snapshot decoders have their own proptests next to them
//! (`command.rs`, `snapshot.rs`: round trips, truncations, flipped bytes, garbage payloads).
//!
//! Known limit (see the README's security section): raft-rs trusts authenticated peers, and some
//! well-formed but protocol-violating messages make it panic (e.g. an append that conflicts
//! with committed entries). The core refuses what it can check cheaply; the mutation tests here
//! therefore mutate the bytes of honest messages and assert only "no panic, the node still
//! answers", which holds for undecodable bytes, wrong recipients, local types, bad snapshots
//! and the guarded fields.

use mokv_core::persist::DurableState;
use mokv_core::RangeQuery;
use mokv_core::{
    Config, Consistency, Error, InvalidArgument, MemberInfo, Node, PeerMessageError, Request,
    Response, Role,
};
use proptest::prelude::*;
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};

const CASES: u32 = 64;

fn info(id: u64) -> MemberInfo {
    MemberInfo {
        id,
        name: format!("n{id}"),
        peer_addr: format!("127.0.0.1:{id}"),
        rpc_addr: format!("127.0.0.1:{id}"),
        auto_promote: true,
    }
}

/// Persists everything the node asks for and drops its other outputs.
fn drain(node: &mut Node, disk: &mut DurableState) -> Vec<mokv_core::Reply> {
    let mut replies = Vec::new();
    for _ in 0..100 {
        let mut progressed = false;
        while let Some(b) = node.poll_persist() {
            disk.apply(&b);
            node.handle_persisted(b.id);
            progressed = true;
        }
        while node.poll_transmit().is_some() {
            progressed = true;
        }
        while let Some(r) = node.poll_reply() {
            replies.push(r);
            progressed = true;
        }
        while node.poll_event().is_some() {
            progressed = true;
        }
        while let Some(job) = node.poll_snapshot_job() {
            node.handle_snapshot_durable(job.into_image().reference());
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    replies
}

/// A bootstrapped single-voter node that leads, with a couple of committed writes.
fn leader(seed: u64) -> (Node, DurableState) {
    let config = Config::new(1, seed);
    let mut disk = DurableState::default();
    disk.apply(&Node::bootstrap(&info(1), &config, std::num::NonZeroU64::MIN));
    let mut node = Node::new(config, disk.clone()).unwrap();
    drain(&mut node, &mut disk);
    for t in 0..50 {
        if node.status().role == Role::Leader {
            break;
        }
        node.handle_tick(mokv_core::Now { monotonic_ms: t, wall_ms: t });
        drain(&mut node, &mut disk);
    }
    assert_eq!(node.status().role, Role::Leader);
    for (i, k) in ["a", "b"].into_iter().enumerate() {
        node.handle_request(
            i as u64,
            Request::Set { key: k.into(), value: b"v".to_vec(), session: None },
        );
        drain(&mut node, &mut disk);
    }
    (node, disk)
}

/// [`leader`] with nodes 2 and 3 added as learners (it tracks their progress, so responses
/// from them reach raft-rs's replication code).
fn leader_with_learners(seed: u64) -> (Node, DurableState) {
    let (mut node, mut disk) = leader(seed);
    for id in [2, 3] {
        node.handle_request(10 + id, Request::AddLearner { info: info(id) });
        let replies = drain(&mut node, &mut disk);
        let added = replies.iter().any(|r| r.id == 10 + id && r.result.is_ok());
        assert!(added, "{replies:?}");
    }
    (node, disk)
}

/// A fresh node waiting to be added to a cluster (empty disk).
fn joiner(seed: u64) -> (Node, DurableState) {
    let mut disk = DurableState::default();
    let mut node = Node::new(Config::new(1, seed), disk.clone()).unwrap();
    drain(&mut node, &mut disk);
    (node, disk)
}

/// The node still works: a serializable read is answered.
fn still_answers(node: &mut Node, disk: &mut DurableState) {
    node.handle_request(
        u64::MAX,
        Request::Get { key: "a".into(), consistency: Consistency::Serializable },
    );
    let replies = drain(node, disk);
    assert!(replies.iter().any(|r| r.id == u64::MAX), "no reply after the input");
}

const REMOTE_TYPES: &[MessageType] = &[
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgSnapshot,
];

const LOCAL_TYPES: &[MessageType] = &[
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgPropose,
    MessageType::MsgTransferLeader,
];

/// An honest-looking message from node 2 to node 1 in the leader's current term: responses,
/// votes and reads that a real peer could send at any time.
fn arb_honest_message() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(vec![
            MessageType::MsgAppendResponse,
            MessageType::MsgHeartbeatResponse,
            MessageType::MsgRequestVote,
            MessageType::MsgRequestPreVote,
            MessageType::MsgRequestVoteResponse,
            MessageType::MsgRequestPreVoteResponse,
            MessageType::MsgReadIndex,
        ]),
        0u64..4,
        0u64..4,
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(t, index, log_term, reject, ctx)| {
            let mut m = Message::default();
            m.set_msg_type(t);
            m.from = 2;
            m.to = 1;
            m.term = if t == MessageType::MsgReadIndex { 0 } else { 2 };
            m.index = index;
            m.log_term = log_term;
            m.reject = reject;
            if t == MessageType::MsgReadIndex {
                let mut e = Entry::default();
                e.data = ctx.into();
                m.entries = vec![e].into();
            } else {
                m.context = ctx.into();
            }
            m
        })
}

fn encode(m: &Message) -> Vec<u8> {
    m.write_to_bytes().unwrap()
}

#[test]
fn refuses_undecodable_wrong_recipient_local_types_and_bad_snapshots() {
    let (mut node, mut disk) = leader(1);
    // Not a raft message (field 2 with wire type 7 is invalid protobuf).
    assert!(matches!(
        node.handle_peer_message(&[0x17, 0xff, 0xff]),
        Err(PeerMessageError::Malformed { .. })
    ));
    for &t in REMOTE_TYPES {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 2;
        m.to = 3;
        m.term = 99;
        assert!(matches!(
            node.handle_peer_message(&encode(&m)),
            Err(PeerMessageError::WrongRecipient { to: 3 })
        ));
    }
    for &t in LOCAL_TYPES {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 2;
        m.to = 1;
        assert!(
            matches!(node.handle_peer_message(&encode(&m)), Err(PeerMessageError::LocalType)),
            "{t:?}"
        );
    }
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 2;
    m.to = 1;
    m.term = 99;
    let mut snap = Snapshot::default();
    snap.data = b"not a snapshot".to_vec().into();
    snap.mut_metadata().index = 50;
    snap.mut_metadata().term = 99;
    m.set_snapshot(snap);
    assert!(matches!(node.handle_peer_message(&encode(&m)), Err(PeerMessageError::BadSnapshot(_))));
    // None of it changed anything.
    drain(&mut node, &mut disk);
    assert_eq!(node.status().role, Role::Leader);
    assert_eq!(node.status().term, 2);
    still_answers(&mut node, &mut disk);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        seed in any::<u64>(),
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 1..8),
    ) {
        let (mut node, mut disk) = leader(seed);
        for bytes in &inputs {
            let _ = node.handle_peer_message(bytes);
            drain(&mut node, &mut disk);
        }
        still_answers(&mut node, &mut disk);
        let (mut node, mut disk) = joiner(seed);
        for bytes in &inputs {
            let _ = node.handle_peer_message(bytes);
            drain(&mut node, &mut disk);
        }
    }

    #[test]
    fn snapshot_messages_with_garbage_are_refused(
        data in proptest::collection::vec(any::<u8>(), 0..128),
        index in any::<u64>(),
        term in any::<u64>(),
    ) {
        for (mut node, mut disk) in [leader(index), joiner(term)] {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgSnapshot);
            m.from = 2;
            m.to = 1;
            m.term = term;
            let mut snap = Snapshot::default();
            snap.data = data.clone().into();
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = term;
            m.set_snapshot(snap);
            prop_assert!(node.handle_peer_message(&encode(&m)).is_err());
            drain(&mut node, &mut disk);
        }
    }

    #[test]
    fn mutated_honest_messages_never_panic(
        seed in any::<u64>(),
        m in arb_honest_message(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..), 0..3),
    ) {
        let (mut node, mut disk) = leader(seed);
        let mut bytes = encode(&m);
        for (at, x) in flips {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= x;
            }
        }
        let _ = node.handle_peer_message(&bytes);
        drain(&mut node, &mut disk);
        for t in 0..3 {
            node.handle_tick(mokv_core::Now { monotonic_ms: 1_000 + t, wall_ms: 1_000 + t });
            drain(&mut node, &mut disk);
        }
        still_answers(&mut node, &mut disk);
    }

    #[test]
    fn requests_never_panic_and_over_limit_is_invalid_argument(
        seed in any::<u64>(),
        key_len in prop_oneof![0usize..8, 4090usize..4200],
        value_len in prop_oneof![0usize..8, (1usize << 20) - 2..(1usize << 20) + 3],
        key_byte in any::<char>(),
        prefix in ".{0,12}",
        start_key in ".{0,12}",
        page_token in ".{0,24}",
        limit in any::<usize>(),
        keys_only in any::<bool>(),
        serializable in any::<bool>(),
    ) {
        let (mut node, mut disk) = leader(seed);
        let max_key = 4096;
        let max_value = 1 << 20;
        let key: String = std::iter::repeat_n(key_byte, key_len).collect();
        let consistency =
            if serializable { Consistency::Serializable } else { Consistency::Linearizable };
        let requests = vec![
            Request::Set { key: key.clone(), value: vec![7; value_len], session: None },
            Request::Delete { key: key.clone(), session: None },
            Request::Get { key: key.clone(), consistency },
            Request::Range {
                query: RangeQuery { prefix, start_key, limit, page_token, keys_only },
                consistency,
            },
        ];
        for (id, req) in requests.into_iter().enumerate() {
            let is_set = matches!(req, Request::Set { .. });
            let is_range = matches!(req, Request::Range { .. });
            node.handle_request(id as u64, req);
            let replies = drain(&mut node, &mut disk);
            let reply = replies.iter().find(|r| r.id == id as u64);
            prop_assert!(reply.is_some(), "request {} got no reply", id);
            let result = &reply.unwrap().result;
            if is_range {
                continue;
            }
            let key_bad = key.is_empty() || key.len() > max_key;
            let value_bad = is_set && value_len > max_value;
            if key_bad || value_bad {
                prop_assert!(
                    matches!(result, Err(Error::InvalidArgument(_))),
                    "request {} expected InvalidArgument, got {:?}", id, result
                );
                if let Err(e) = result {
                    // Never echoes the key or value.
                    let msg = e.to_string();
                    prop_assert!(key.len() < 3 || !msg.contains(&key));
                }
            } else {
                prop_assert!(result.is_ok(), "request {} failed: {:?}", id, result);
            }
        }
        // Over-limit values are named as such.
        node.handle_request(99, Request::Set {
            key: "k".into(),
            value: vec![0; max_value + 1],
            session: None,
        });
        let replies = drain(&mut node, &mut disk);
        let too_large = matches!(
            replies.iter().find(|r| r.id == 99).map(|r| &r.result),
            Some(Err(Error::InvalidArgument(InvalidArgument::ValueTooLarge { .. })))
        );
        prop_assert!(too_large);
        node.handle_request(100, Request::Set { key: "ok".into(), value: vec![1], session: None });
        let replies = drain(&mut node, &mut disk);
        let written = matches!(
            replies.iter().find(|r| r.id == 100).map(|r| &r.result),
            Some(Ok(Response::Set { .. }))
        );
        prop_assert!(written);
    }
}

/// A heartbeat whose commit index is beyond the receiver's log: raft-rs would panic in
/// `commit_to`; the core refuses it.
#[test]
fn heartbeat_committing_beyond_the_log_is_refused() {
    for (mut node, mut disk) in [joiner(3), leader(3)] {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = 2;
        m.to = 1;
        m.term = 50;
        m.commit = 1_000;
        assert!(matches!(
            node.handle_peer_message(&encode(&m)),
            Err(PeerMessageError::CommitBeyondLog { commit: 1_000 })
        ));
        drain(&mut node, &mut disk);
    }
}

/// An append that would rewrite committed entries (raft-rs panics on a conflict with a
/// committed entry) is ignored by raft-rs itself: it starts below the commit index.
#[test]
fn append_rewriting_committed_entries_is_ignored() {
    let (mut node, mut disk) = leader(4);
    let last = node.status().last_index;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = 2;
    m.to = 1;
    m.term = 50;
    m.index = 1;
    m.log_term = 1;
    m.commit = 1;
    let mut entries = Vec::new();
    for i in 2..=last + 1 {
        let mut e = Entry::default();
        e.index = i;
        e.term = 49;
        entries.push(e);
    }
    m.entries = entries.into();
    let _ = node.handle_peer_message(&encode(&m));
    drain(&mut node, &mut disk);
}

fn arb_any_remote_message() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(REMOTE_TYPES.to_vec()),
        prop_oneof![Just(2u64), Just(3u64), Just(1u64), Just(0u64), any::<u64>()],
        0u64..6,
        prop_oneof![4 => 0u64..10, 1 => any::<u64>()],
        0u64..6,
        prop_oneof![4 => 0u64..10, 1 => any::<u64>()],
        any::<bool>(),
        proptest::collection::vec((0u64..8, 0u64..6), 0..4),
    )
        .prop_map(|(t, from, term, index, log_term, commit, reject, entries)| {
            let mut m = Message::default();
            m.set_msg_type(t);
            m.from = from;
            m.to = 1;
            m.term = term;
            m.index = index;
            m.log_term = log_term;
            m.commit = commit;
            m.reject = reject;
            m.entries = entries
                .into_iter()
                .map(|(index, term)| {
                    let mut e = Entry::default();
                    e.index = index;
                    e.term = term;
                    e
                })
                .collect::<Vec<_>>()
                .into();
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Well-formed protobuf with arbitrary raft fields (terms, indexes, commits, entries,
    /// senders), in sequences, to a leader, a leader tracking two learners and a fresh node.
    /// Found (and now refused by the core): term-less votes, MsgTransferLeader/MsgPropose with
    /// a term, read index without context, non-consecutive appends, log term 0 at a real
    /// index, heartbeats committing past the log, messages "from" 0 or from the node itself.
    #[test]
    fn structured_messages_never_panic(seed in any::<u64>(), ms in proptest::collection::vec(arb_any_remote_message(), 1..6)) {
        for (mut node, mut disk) in [leader(seed), leader_with_learners(seed), joiner(seed)] {
            for m in &ms {
                let _ = node.handle_peer_message(&encode(m));
                drain(&mut node, &mut disk);
            }
            for t in 0..3 {
                node.handle_tick(mokv_core::Now { monotonic_ms: 1_000 + t, wall_ms: 1_000 + t });
                drain(&mut node, &mut disk);
            }
        }
    }
}

#[test]
fn refuses_protocol_violations_raft_rs_would_panic_on() {
    let (mut node, mut disk) = leader(5);
    let msg = |t: MessageType, from: u64, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = 1;
        m.term = term;
        m
    };
    let refused = |node: &mut Node, m: &Message| node.handle_peer_message(&encode(m)).unwrap_err();
    assert!(matches!(
        refused(&mut node, &msg(MessageType::MsgRequestVote, 2, 0)),
        PeerMessageError::BadTerm
    ));
    assert!(matches!(
        refused(&mut node, &msg(MessageType::MsgReadIndex, 2, 3)),
        PeerMessageError::BadTerm
    ));
    assert!(matches!(
        refused(&mut node, &msg(MessageType::MsgReadIndex, 2, 0)),
        PeerMessageError::MalformedReadIndex
    ));
    assert!(matches!(
        refused(&mut node, &msg(MessageType::MsgHeartbeat, 1, 3)),
        PeerMessageError::BadSender { from: 1 }
    ));
    assert!(matches!(
        refused(&mut node, &msg(MessageType::MsgAppendResponse, 0, 3)),
        PeerMessageError::BadSender { from: 0 }
    ));
    let mut gap = msg(MessageType::MsgAppend, 2, 3);
    let mut e = Entry::default();
    e.index = 3;
    e.term = 1;
    gap.entries = vec![e].into();
    assert!(matches!(refused(&mut node, &gap), PeerMessageError::MalformedAppend));
    let mut zero_term = msg(MessageType::MsgAppend, 2, 3);
    zero_term.index = 1;
    zero_term.commit = 1;
    assert!(matches!(refused(&mut node, &zero_term), PeerMessageError::MalformedAppend));
    drain(&mut node, &mut disk);
    assert_eq!(node.status().role, Role::Leader);
    still_answers(&mut node, &mut disk);
}
