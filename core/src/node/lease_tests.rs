//! Leases through the node: expiry decided by the leader from the ticks' monotonic clock,
//! keep-alives that postpone it, TTLs restarted in full by a new leader, and none of it on a
//! follower.

use super::lone_leader::{call, drain, lone_leader};
use super::tests::{drain_and_ack, three_voters_at_one};
use super::{Node, Now, Role};
use crate::command::{Command, Proposal};
use crate::config::Config;
use crate::error::{Error, InvalidArgument};
use crate::lease::{LeaseError, LeaseTtl};
use crate::persist::DurableState;
use crate::request::{Reply, Request, Response};

/// One tick at monotonic `ms`, drained.
fn tick(node: &mut Node, disk: &mut DurableState, ms: u64) {
    node.handle_tick(Now { monotonic_ms: ms, wall_ms: ms });
    assert!(drain(node, disk).is_empty());
}

fn grant(node: &mut Node, disk: &mut DurableState, ttl_ms: u64) -> u64 {
    let r = call(node, disk, 1, Request::LeaseGrant { id: None, ttl_ms, session: None });
    match r.result {
        Ok(Response::LeaseGranted { id, ttl_ms: granted, .. }) if granted == ttl_ms => id,
        other => panic!("{other:?}"),
    }
}

fn set_leased(node: &mut Node, disk: &mut DurableState, key: &str, lease: u64) -> Reply {
    let request = Request::SetWithLease {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        condition: None,
        session: None,
    };
    call(node, disk, 2, request)
}

fn keep_alive(node: &mut Node, disk: &mut DurableState, lease: u64) -> Reply {
    call(node, disk, 3, Request::LeaseKeepAlive { id: lease })
}

#[test]
fn a_lease_expires_after_its_ttl_of_ticks_and_keep_alives_postpone_it() {
    let (mut node, mut disk) = lone_leader(Config::new(1, 3));
    tick(&mut node, &mut disk, 10_000);
    let lease = grant(&mut node, &mut disk, 1_000);
    assert!(set_leased(&mut node, &mut disk, "k", lease).result.is_ok());
    tick(&mut node, &mut disk, 10_900);
    let r = keep_alive(&mut node, &mut disk, lease);
    assert_eq!(r.result, Ok(Response::LeaseKeptAlive { id: lease, ttl_ms: 1_000 }));
    // Past the grant's deadline but not the keep-alive's.
    tick(&mut node, &mut disk, 11_800);
    assert!(node.state().get("k").is_some());
    let ttl = call(&mut node, &mut disk, 4, Request::LeaseTimeToLive { id: lease, keys: true });
    let expected =
        LeaseTtl { id: lease, granted_ttl_ms: 1_000, remaining_ms: 100, keys: vec!["k".into()] };
    assert_eq!(ttl.result, Ok(Response::LeaseTimeToLive(expected)));
    tick(&mut node, &mut disk, 11_900);
    assert!(node.state().get("k").is_none(), "expired at the keep-alive's deadline");
    assert_eq!(node.state().lease_count(), 0);
    let deleted = node.watch_history().events_from(0).last().unwrap().clone();
    assert_eq!((deleted.key(), deleted.kind), ("k", crate::WatchEventKind::Delete));
    let r = keep_alive(&mut node, &mut disk, lease);
    assert_eq!(r.result, Err(Error::Lease(LeaseError::NotFound)));
}

#[test]
fn bad_grants_and_unknown_leases_are_refused() {
    let (mut node, mut disk) = lone_leader(Config::new(1, 3));
    let r =
        call(&mut node, &mut disk, 1, Request::LeaseGrant { id: None, ttl_ms: 1, session: None });
    assert!(matches!(r.result, Err(Error::InvalidArgument(InvalidArgument::LeaseTtl { .. }))));
    let r = set_leased(&mut node, &mut disk, "k", 77);
    assert_eq!(r.result, Err(Error::Lease(LeaseError::NotFound)));
    assert!(node.state().get("k").is_none());
    let r = call(&mut node, &mut disk, 1, Request::LeaseRevoke { id: 77, session: None });
    assert_eq!(r.result, Err(Error::Lease(LeaseError::NotFound)));
    let chosen = Request::LeaseGrant { id: Some(77), ttl_ms: 5_000, session: None };
    assert!(call(&mut node, &mut disk, 1, chosen.clone()).result.is_ok());
    let again = call(&mut node, &mut disk, 1, chosen).result;
    assert_eq!(again, Err(Error::Lease(LeaseError::AlreadyExists)));
}

#[test]
fn the_lease_bound_refuses_grants_beyond_it() {
    let (mut node, mut disk) = lone_leader(Config::new(1, 3));
    node.config.max_leases = 2;
    grant(&mut node, &mut disk, 5_000);
    grant(&mut node, &mut disk, 5_000);
    let r = call(
        &mut node,
        &mut disk,
        1,
        Request::LeaseGrant { id: None, ttl_ms: 5_000, session: None },
    );
    assert_eq!(r.result, Err(Error::Lease(LeaseError::TooMany { max: 2 })));
    assert_eq!(r.result.unwrap_err().class(), crate::ErrorClass::Retryable);
}

/// A restarted node leads again: the lease it had granted long ago gets its full TTL from
/// the moment it leads, however late that is on its clock.
#[test]
fn a_new_leader_restarts_every_ttl_in_full() {
    let (mut node, mut disk) = lone_leader(Config::new(1, 3));
    tick(&mut node, &mut disk, 1_000);
    let lease = grant(&mut node, &mut disk, 2_000);
    assert!(set_leased(&mut node, &mut disk, "k", lease).result.is_ok());
    drop(node);
    let mut node = Node::new(Config::new(1, 3), disk.clone()).unwrap();
    // Leads from the start, with its monotonic clock at 0 until the first tick: the deadline
    // restarts at (first clock the new leader saw) + TTL.
    drain(&mut node, &mut disk);
    assert_eq!(node.status().role, Role::Leader);
    assert_eq!(node.state().lease_ttl_ms(lease), Some(2_000));
    tick(&mut node, &mut disk, 1_999);
    assert!(node.state().get("k").is_some(), "the new leader's full TTL has not passed");
    tick(&mut node, &mut disk, 2_000);
    assert!(node.state().get("k").is_none());
}

/// The state of node 1 of three, holding a lease with an attached key in its snapshot.
fn three_voters_with_a_lease() -> DurableState {
    let mut durable = three_voters_at_one();
    let mut state = durable.snapshot.take().unwrap().image.state;
    let p =
        |command| Proposal { session: None, proposed_at_ms: 0, quota_state_bytes: None, command };
    state.apply(2, &p(Command::LeaseGrant { id: Some(5), ttl_ms: 1_000, max_leases: 9 })).unwrap();
    let set = Command::SetLeased { key: "k".into(), value: vec![1], lease: 5, condition: None };
    state.apply(3, &p(set)).unwrap();
    let image = crate::snapshot::SnapshotImage { index: 3, term: 1, state };
    durable.snapshot = Some(crate::persist::StoredSnapshot { reference: image.reference(), image });
    let mut hs = raft::eraftpb::HardState::default();
    hs.term = 1;
    hs.commit = 3;
    durable.hard_state = Some(protobuf::Message::write_to_bytes(&hs).unwrap());
    durable
}

/// Whether any batch appends a `LeaseExpire` entry.
fn proposes_expiry(batches: &[crate::persist::PersistBatch]) -> bool {
    batches.iter().flat_map(|b| &b.entries).any(|rec| {
        let e: raft::eraftpb::Entry = protobuf::Message::parse_from_bytes(&rec.bytes).unwrap();
        matches!(
            Proposal::decode(&e.data),
            Ok(Proposal { command: Command::LeaseExpire { .. }, .. })
        )
    })
}

#[test]
fn only_the_leader_expires_and_a_new_one_counts_from_its_election() {
    let mut follower = Node::new(Config::new(1, 7), three_voters_with_a_lease()).unwrap();
    drain_and_ack(&mut follower);
    for ms in (0..100_000).step_by(1_000) {
        follower.handle_tick(Now { monotonic_ms: ms, wall_ms: ms });
        if follower.status().role != Role::Follower {
            break;
        }
        let (batches, _, _) = drain_and_ack(&mut follower);
        assert!(!proposes_expiry(&batches), "a follower never expires a lease");
    }
    let r = {
        follower.handle_request(9, Request::LeaseKeepAlive { id: 5 });
        drain_and_ack(&mut follower).2
    };
    assert!(matches!(r[0].result, Err(Error::NotLeader { .. })), "{r:?}");

    // The same state on a node that becomes leader at 50 s on its clock.
    let mut node = Node::new(Config::new(1, 7), three_voters_with_a_lease()).unwrap();
    node.handle_tick(Now { monotonic_ms: 50_000, wall_ms: 50_000 });
    node.raw.raft.become_candidate();
    node.raw.raft.become_leader();
    node.after_input();
    drain_and_ack(&mut node);
    node.handle_tick(Now { monotonic_ms: 50_999, wall_ms: 50_999 });
    assert!(!proposes_expiry(&drain_and_ack(&mut node).0));
    node.handle_tick(Now { monotonic_ms: 51_000, wall_ms: 51_000 });
    assert!(proposes_expiry(&drain_and_ack(&mut node).0), "due a full TTL after the election");
    // Proposed once, not on every tick while it commits.
    node.handle_tick(Now { monotonic_ms: 51_100, wall_ms: 51_100 });
    assert!(!proposes_expiry(&drain_and_ack(&mut node).0));
}

/// Every output of `node` drained; persist batches are written to `disk` but NOT acknowledged
/// (they stay in flight, so what they carry does not commit on a lone leader).
fn drain_unacked(
    node: &mut Node,
    disk: &mut DurableState,
) -> (Vec<crate::persist::PersistBatch>, Vec<Reply>) {
    let (mut batches, mut replies) = (Vec::new(), Vec::new());
    while let Some(b) = node.poll_persist() {
        disk.apply(&b);
        batches.push(b);
    }
    while node.poll_transmit().is_some() {}
    while let Some(r) = node.poll_reply() {
        replies.push(r);
    }
    while node.poll_event().is_some() {}
    (batches, replies)
}

/// Found by the simulator's lease holders: a keep-alive (or TTL query) of a lease whose expiry
/// was proposed but not yet applied was answered "not found" at once, while its keys could
/// still be read. It now waits for the expiry to apply.
#[test]
fn a_keep_alive_during_a_proposed_expiry_waits_until_the_keys_are_gone() {
    let (mut node, mut disk) = lone_leader(Config::new(1, 3));
    tick(&mut node, &mut disk, 10_000);
    let lease = grant(&mut node, &mut disk, 1_000);
    assert!(set_leased(&mut node, &mut disk, "k", lease).result.is_ok());
    // Due: the expiry is proposed, its entry in a persist batch not yet durable.
    node.handle_tick(Now { monotonic_ms: 11_000, wall_ms: 11_000 });
    let (batches, replies) = drain_unacked(&mut node, &mut disk);
    assert!(proposes_expiry(&batches) && replies.is_empty());
    node.handle_request(7, Request::LeaseKeepAlive { id: lease });
    node.handle_request(8, Request::LeaseTimeToLive { id: lease, keys: false });
    node.handle_tick(Now { monotonic_ms: 11_100, wall_ms: 11_100 });
    let (_, replies) = drain_unacked(&mut node, &mut disk);
    assert!(replies.is_empty(), "answered before the expiry applied: {replies:?}");
    assert!(node.state().get("k").is_some());
    // The expiry becomes durable, commits and applies: both are answered "not found".
    let last = batches.last().unwrap().id;
    node.handle_persisted(last);
    let replies = drain(&mut node, &mut disk);
    assert!(node.state().get("k").is_none());
    let mut answered: Vec<_> = replies.iter().map(|r| (r.id, r.result.clone())).collect();
    answered.sort_by_key(|(id, _)| *id);
    let not_found = Err(Error::Lease(LeaseError::NotFound));
    assert_eq!(answered, vec![(7, not_found.clone()), (8, not_found)]);
}
