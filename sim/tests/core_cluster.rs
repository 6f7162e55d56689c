//! Whole-cluster behaviour of `mokv-core` nodes on the deterministic harness: the scenarios a
//! Raft KV store must get right, each on a fixed seed.

use mokv_core::RangeQuery;
use mokv_core::SessionRef;
use mokv_core::{Config, Consistency, Error, Event, Reply, Request, Response, Role, Unavailable};
use sim::cluster::{get_value, is_ok};
use sim::Cluster;

fn set(key: &str, value: &str) -> Request {
    Request::Set { key: key.into(), value: value.as_bytes().to_vec(), session: None }
}

fn get(key: &str) -> Request {
    Request::Get { key: key.into(), consistency: Consistency::Linearizable }
}

fn small_snapshots(c: &mut Config) {
    c.snapshot_threshold_entries = 20;
    c.log_keep_entries = 5;
}

fn three(seed: u64) -> Cluster {
    Cluster::form(seed, 3, |_| {})
}

#[test]
fn single_node_elects_itself_and_serves() {
    let mut c = Cluster::new(1);
    assert!(c.run_until(50, |c| c.leader() == Some(1)));
    assert!(is_ok(&c.call(1, set("a", "1"), 50)));
    assert_eq!(get_value(&c.call(1, get("a"), 50)), Some(b"1".to_vec()));
}

#[test]
fn three_nodes_elect_one_leader_and_replicate() {
    let mut c = three(2);
    let leader = c.leader().unwrap();
    let r = c.call(leader, set("k", "v"), 100);
    let Some(Reply { result: Ok(Response::Set { revision }), .. }) = r else { panic!("{r:?}") };
    // Every node applies the write.
    assert!(c.run_until(100, |c| c.ids().iter().all(|id| c
        .node(*id)
        .unwrap()
        .status()
        .applied_index
        >= revision)));
    for id in c.ids() {
        let v = c.node(id).unwrap().state().get("k").map(|v| v.value().to_vec());
        assert_eq!(v, Some(b"v".to_vec()), "node {id}");
    }
    let leaders =
        c.ids().iter().filter(|id| c.node(**id).unwrap().status().role == Role::Leader).count();
    assert_eq!(leaders, 1);
}

#[test]
fn write_on_follower_is_refused_with_leader_hint() {
    let mut c = three(3);
    let leader = c.leader().unwrap();
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let r = c.call(follower, set("k", "v"), 10).unwrap();
    match r.result {
        Err(Error::NotLeader { leader: Some(hint) }) => {
            assert_eq!(hint.id, leader);
            assert_eq!(hint.rpc_addr, format!("sim-rpc:{leader}"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn linearizable_read_on_follower_sees_latest_write_immediately() {
    let mut c = three(4);
    let leader = c.leader().unwrap();
    for follower in c.ids().into_iter().filter(|id| *id != leader) {
        let value = format!("v{follower}");
        assert!(is_ok(&c.call(leader, set("k", &value), 100)));
        // Asked right after the ack, before any extra ticks: ReadIndex makes the follower wait
        // until it has applied the write.
        assert_eq!(get_value(&c.call(follower, get("k"), 100)), Some(value.into_bytes()));
    }
}

#[test]
fn serializable_read_is_local_and_may_be_stale() {
    let mut c = three(5);
    let leader = c.leader().unwrap();
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.isolate(follower);
    assert!(is_ok(&c.call(leader, set("k", "new"), 100)));
    let stale = c.call(
        follower,
        Request::Get { key: "k".into(), consistency: Consistency::Serializable },
        5,
    );
    assert!(matches!(stale, Some(Reply { result: Ok(Response::Get(None)), .. })), "{stale:?}");
    // A linearizable read on the isolated follower cannot be confirmed and times out.
    let r = c.call(follower, get("k"), 200).unwrap();
    assert_eq!(r.result, Err(Error::Unavailable(Unavailable::ReadTimedOut)));
}

/// A restarted follower knows no leader until the leader's next heartbeat, and raft-rs drops
/// a read index request it gets before then without a word. A linearizable read sent to it at
/// once must not wait out `read_retry_ticks` for a round that cannot be answered: it is
/// answered within a few ticks of the follower hearing the leader.
#[test]
fn read_on_a_just_restarted_follower_waits_for_the_leader_not_for_a_retry() {
    let mut c = three(8);
    let leader = c.leader().unwrap();
    assert!(is_ok(&c.call(leader, set("k", "v"), 100)));
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.crash(follower);
    c.restart(follower);
    assert_eq!(c.node(follower).unwrap().status().leader, None, "restarted: no leader known");
    let asked = c.now();
    let id = c.submit(follower, get("k"));
    assert!(c.run_until(100, |c| c.node(follower).unwrap().status().leader == Some(leader)));
    let heard = c.now();
    assert!(c.run_until(100, |c| c.reply(id).is_some()), "the read was never answered");
    assert_eq!(get_value(&c.reply(id).cloned()), Some(b"v".to_vec()));
    let answered = c.reply_tick(id).unwrap();
    let retry_ticks = Config::new(follower, 0).read_retry_ticks;
    assert!(
        answered - heard < retry_ticks && answered - asked < retry_ticks,
        "asked at tick {asked}, leader heard at {heard}, answered at {answered}: the read \
         waited for a retry ({retry_ticks} ticks)"
    );
}

/// A leader just elected drops read index requests until it has committed an entry of its
/// term: a read sent to it the moment it leads is answered once that entry commits, not after
/// a retry.
#[test]
fn read_on_a_just_elected_leader_waits_for_its_first_commit_not_for_a_retry() {
    let mut c = three(9);
    let old = c.leader().unwrap();
    assert!(is_ok(&c.call(old, set("k", "v"), 100)));
    c.crash(old);
    let leads = |c: &Cluster| {
        c.ids()
            .into_iter()
            .find(|id| *id != old && c.node(*id).is_some_and(|n| n.status().role == Role::Leader))
    };
    assert!(c.run_until(300, |c| leads(c).is_some()), "no new leader");
    let new = leads(&c).unwrap();
    let elected = c.now();
    let id = c.submit(new, get("k"));
    assert!(c.run_until(100, |c| c.reply(id).is_some()), "the read was never answered");
    assert_eq!(get_value(&c.reply(id).cloned()), Some(b"v".to_vec()));
    let answered = c.reply_tick(id).unwrap();
    let retry_ticks = Config::new(new, 0).read_retry_ticks;
    assert!(
        answered - elected < retry_ticks,
        "leader since tick {elected}, answered at {answered}: the read waited for a retry \
         ({retry_ticks} ticks)"
    );
}

#[test]
fn leader_failover_keeps_acknowledged_writes() {
    let mut c = three(6);
    let old = c.leader().unwrap();
    for i in 0..10 {
        assert!(is_ok(&c.call(old, set(&format!("k{i}"), "v"), 100)));
    }
    c.crash(old);
    assert!(c.run_until(300, |c| c.leader().is_some_and(|l| l != old)), "no new leader");
    let new = c.leader().unwrap();
    for i in 0..10 {
        assert_eq!(get_value(&c.call(new, get(&format!("k{i}")), 100)), Some(b"v".to_vec()));
    }
    assert!(is_ok(&c.call(new, set("after", "x"), 100)));
    // The old leader restarts from its disk, rejoins as follower and catches up.
    c.restart(old);
    assert!(c.run_until(300, |c| c.node(old).unwrap().state().get("after").is_some()));
    assert_eq!(c.node(old).unwrap().status().role, Role::Follower);
}

#[test]
fn retried_write_with_session_is_applied_once() {
    let mut c = three(7);
    let leader = c.leader().unwrap();
    let owner = "client-a".to_string();
    let registered = c.call(leader, Request::RegisterSession { owner: owner.clone() }, 100);
    let Some(Ok(Response::SessionRegistered { client_id })) = registered.map(|r| r.result) else {
        panic!("registration failed");
    };
    let session = Some(SessionRef { owner, client_id, seq: 1, first_unacked_seq: 1 });
    let first = c
        .call(
            leader,
            Request::Set { key: "k".into(), value: b"1".to_vec(), session: session.clone() },
            100,
        )
        .unwrap();
    let Ok(Response::Set { revision }) = first.result else { panic!("{first:?}") };
    assert!(is_ok(&c.call(leader, set("other", "x"), 100)));
    // The client never saw the answer and retries the same (client, seq): same revision back,
    // and the key did not change version.
    let again = c
        .call(leader, Request::Set { key: "k".into(), value: b"1".to_vec(), session }, 100)
        .unwrap();
    assert_eq!(again.result, Ok(Response::Set { revision }));
    assert_eq!(c.node(leader).unwrap().state().get("k").unwrap().version(), 1);
}

#[test]
fn node_behind_compaction_catches_up_by_snapshot() {
    let mut c = Cluster::form(8, 3, small_snapshots);
    let leader = c.leader().unwrap();
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.crash(lagging);
    for i in 0..100 {
        assert!(is_ok(&c.call(leader, set(&format!("k{i:03}"), &i.to_string()), 100)));
    }
    let first = c.disk(leader).unwrap().entries.first().map(|e| e.index).unwrap();
    let lagging_last = c.disk(lagging).unwrap().entries.last().map(|e| e.index).unwrap_or(0);
    assert!(first > lagging_last + 1, "the leader's log must be compacted past the lagging node");
    c.restart(lagging);
    assert!(c.run_until(500, |c| c.node(lagging).unwrap().state().len() == 100));
    assert!(c
        .events()
        .iter()
        .any(|(_, id, e)| *id == lagging && matches!(e, Event::SnapshotInstalled { .. })));
    // Equal state at equal applied index.
    let ld = c.node(leader).unwrap();
    let lg = c.node(lagging).unwrap();
    assert_eq!(ld.status().applied_index, lg.status().applied_index);
    assert_eq!(ld.state().digest(), lg.state().digest());
}

/// The in-memory log is trimmed past the last snapshot without taking one (the disk keeps
/// those entries for a restart); a follower behind memory's first entry gets a new snapshot —
/// one that connects to the log — and catches up.
#[test]
fn follower_behind_the_trimmed_in_memory_log_gets_a_new_snapshot() {
    const BUDGET: u64 = 16 << 10;
    let mut c = Cluster::form(9, 3, |c| {
        c.snapshot_threshold_entries = 1_000_000;
        c.snapshot_threshold_bytes = 1 << 30;
        c.max_append_bytes = 4 << 10;
        c.max_in_memory_log_bytes = BUDGET;
    });
    let leader = c.leader().unwrap();
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let snapshot_index =
        |c: &Cluster| c.disk(leader).unwrap().snapshot.as_ref().map_or(0, |s| s.reference.index);
    let snapshot_before = snapshot_index(&c);
    let (taken_before, sent_before) = {
        let stats = c.node(leader).unwrap().stats();
        (stats.snapshots_taken, stats.snapshots_sent)
    };
    c.crash(lagging);
    let value = "v".repeat(500);
    for i in 0..200 {
        assert!(is_ok(&c.call(leader, set(&format!("k{i:03}"), &value), 100)));
        let bytes = c.node(leader).unwrap().stats().log_bytes_in_memory;
        assert!(bytes <= BUDGET, "in-memory log at {bytes} bytes, budget {BUDGET}");
    }
    let ld = c.node(leader).unwrap();
    assert_eq!(ld.stats().snapshots_taken, taken_before, "trimming took no snapshot");
    let first_in_memory = ld.status().applied_index + 1 - ld.stats().log_entries_in_memory;
    assert!(first_in_memory > snapshot_before + 100, "memory dropped entries past the snapshot");
    let on_disk = c.disk(leader).unwrap().entries.first().map(|e| e.index).unwrap();
    assert!(on_disk <= snapshot_before + 1, "the disk kept them: first record {on_disk}");

    // It catches up while writes go on: the snapshot it is sent stays connected to the log
    // however far memory is trimmed meanwhile.
    c.restart(lagging);
    let mut ids = Vec::new();
    for tick in 0..100 {
        let batch = (0..8).map(|i| set(&format!("k{:04}", 1_000 + tick * 8 + i), &value));
        ids.extend(c.submit_batch(leader, batch.collect()));
        c.step();
    }
    assert!(c.run_until(200, |c| ids.iter().all(|id| c.reply(*id).is_some())));
    let written = ids.iter().filter(|id| is_ok(&c.reply(**id).cloned())).count();
    assert!(written > 200, "only {written} writes went through");
    assert!(c.run_until(1_000, |c| c.node(lagging).unwrap().state().len() == 200 + written));
    assert!(c
        .events()
        .iter()
        .any(|(_, id, e)| *id == lagging && matches!(e, Event::SnapshotInstalled { .. })));
    let (ld, lg) = (c.node(leader).unwrap(), c.node(lagging).unwrap());
    assert!(snapshot_index(&c) > snapshot_before + 100, "a new snapshot was taken for it");
    assert_eq!(ld.status().applied_index, lg.status().applied_index);
    assert_eq!(ld.state().digest(), lg.state().digest());
    assert_eq!(ld.stats().snapshots_sent, sent_before + 1, "one snapshot was enough");

    // The entries memory dropped past the snapshot come back from the disk at a restart.
    let digest = ld.state().digest();
    c.crash(leader);
    c.restart(leader);
    let restarted = c.node(leader).unwrap();
    assert_eq!(restarted.state().len(), 200 + written);
    assert_eq!(restarted.state().digest(), digest);
}

#[test]
fn learner_is_added_then_promoted_once_caught_up() {
    let mut c = three(9);
    let leader = c.leader().unwrap();
    for i in 0..30 {
        assert!(is_ok(&c.call(leader, set(&format!("k{i}"), "v"), 100)));
    }
    c.add_node(4);
    let info = c.member_info(4);
    let r = c.call(leader, Request::AddLearner { info }, 200);
    assert!(is_ok(&r), "{r:?}");
    assert!(
        c.node(leader).unwrap().status().conf.learners.contains(&4)
            || c.voters_seen_by_all().contains(&4)
    );
    assert!(c.run_until(500, |c| c.voters_seen_by_all().contains(&4)), "learner never promoted");
    assert_eq!(c.node(4).unwrap().state().len(), 30);
    // Every node knows how to reach the new member.
    for id in c.ids() {
        assert_eq!(
            c.node(id).unwrap().members().get(&4).map(|m| m.rpc_addr.as_str()),
            Some("sim-rpc:4")
        );
    }
}

#[test]
fn removed_member_leaves_the_configuration_and_learns_it() {
    let mut c = three(10);
    let leader = c.leader().unwrap();
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
    assert!(is_ok(&c.call(leader, Request::Remove { id: victim }, 200)));
    assert!(!c.node(leader).unwrap().status().conf.voters.contains(&victim));
    assert!(c.run_until(200, |c| c
        .events()
        .iter()
        .any(|(_, id, e)| *id == victim && *e == Event::Removed)));
    // The two remaining voters still commit.
    assert!(is_ok(&c.call(leader, set("k", "v"), 100)));
}

#[test]
fn leader_asked_to_remove_itself_hands_over_first() {
    let mut c = three(11);
    let old = c.leader().unwrap();
    let r = c.call(old, Request::Remove { id: old }, 10).unwrap();
    assert_eq!(r.result, Err(Error::Unavailable(Unavailable::LeadershipTransfer)));
    assert!(c.run_until(200, |c| c.leader().is_some_and(|l| l != old)));
    let new = c.leader().unwrap();
    assert!(is_ok(&c.call(new, Request::Remove { id: old }, 200)));
    assert!(!c.node(new).unwrap().status().conf.voters.contains(&old));
}

#[test]
fn leadership_transfer_moves_the_leader() {
    let mut c = three(12);
    let old = c.leader().unwrap();
    let target = c.ids().into_iter().find(|id| *id != old).unwrap();
    let r = c.call(old, Request::TransferLeader { to: target }, 10);
    assert!(matches!(r, Some(Reply { result: Ok(Response::TransferStarted), .. })));
    assert!(c.run_until(100, |c| c.leader() == Some(target)));
    assert!(is_ok(&c.call(target, set("k", "v"), 100)));
    // `to: 0` lets the leader pick the most caught-up voter.
    let r = c.call(target, Request::TransferLeader { to: 0 }, 10);
    assert!(matches!(r, Some(Reply { result: Ok(Response::TransferStarted), .. })));
    assert!(c.run_until(100, |c| c.leader().is_some_and(|l| l != target)));
}

#[test]
fn repeated_add_learner_with_same_info_is_idempotent() {
    let mut c = three(15);
    let leader = c.leader().unwrap();
    let info = c.member_info(2);
    let r = c.call(leader, Request::AddLearner { info }, 10);
    assert!(is_ok(&r), "{r:?}");
    let mut other = c.member_info(2);
    other.rpc_addr = "elsewhere:1".into();
    let r = c.call(leader, Request::AddLearner { info: other }, 10).unwrap();
    assert!(matches!(r.result, Err(Error::InvalidArgument(_))), "{r:?}");
}

#[test]
fn invalid_requests_are_refused_without_touching_the_log() {
    let mut c = three(13);
    let leader = c.leader().unwrap();
    let before = c.node(leader).unwrap().status().last_index;
    let empty = c.call(leader, set("", "v"), 5).unwrap();
    assert!(matches!(empty.result, Err(Error::InvalidArgument(_))));
    let big_key = c.call(leader, set(&"k".repeat(4097), "v"), 5).unwrap();
    assert!(matches!(big_key.result, Err(Error::InvalidArgument(_))));
    let big_value =
        Request::Set { key: "k".into(), value: vec![0; 1024 * 1024 + 1], session: None };
    assert!(matches!(c.call(leader, big_value, 5).unwrap().result, Err(Error::InvalidArgument(_))));
    let bad_token = Request::Range {
        query: RangeQuery { page_token: "not-a-token".into(), ..RangeQuery::default() },
        consistency: Consistency::Linearizable,
    };
    assert!(matches!(
        c.call(leader, bad_token, 50).unwrap().result,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(c.node(leader).unwrap().status().last_index, before);
    // Garbage from the network is refused, never a panic, and the node keeps serving.
    for garbage in [&b""[..], b"\xff\xff\xff", &[0x08; 64], b"\x0a\x80\x80\x80\x80\x10"] {
        for id in c.ids() {
            let _ = c.inject(id, garbage);
        }
    }
    assert!(c.inject(leader, b"\xff\xff\xff").is_err());
    assert!(is_ok(&c.call(leader, set("still", "fine"), 100)));
}

#[test]
fn range_pages_through_a_prefix_on_a_follower() {
    let mut c = three(14);
    let leader = c.leader().unwrap();
    for i in 0..25 {
        assert!(is_ok(&c.call(leader, set(&format!("user/{i:02}"), "v"), 100)));
    }
    assert!(is_ok(&c.call(leader, set("zzz", "v"), 100)));
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let mut keys = Vec::new();
    let mut token = String::new();
    loop {
        let q = RangeQuery {
            prefix: "user/".into(),
            limit: 10,
            page_token: token.clone(),
            ..RangeQuery::default()
        };
        let r = c
            .call(
                follower,
                Request::Range { query: q, consistency: Consistency::Linearizable },
                100,
            )
            .unwrap();
        let Ok(Response::Range(page)) = r.result else { panic!("{r:?}") };
        assert!(page.items.len() <= 10);
        keys.extend(page.items.into_iter().map(|i| i.key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("user/{i:02}")).collect();
    assert_eq!(keys, expected);
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let mut c = Cluster::form(seed, 3, small_snapshots);
        let leader = c.leader().unwrap();
        for i in 0..30 {
            c.submit(leader, set(&format!("k{i}"), "v"));
        }
        c.run_ticks(200);
        c.trace_hash()
    };
    assert_eq!(run(77), run(77));
    assert_ne!(run(77), run(78));
}
