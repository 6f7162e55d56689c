//! Core bugs the simulator found, each as a minimal scenario (the swarm pins the seeds too).

use mokv_core::{Event, Request, Role};
use sim::cluster::is_ok;
use sim::Cluster;

/// Bug 1 (swarm seeds 599, 717, 1040, 1344, 1870): a node that becomes leader while its own
/// removal is in its log commits and applies that removal as leader. raft-rs keeps it in the
/// Leader role without a progress entry for itself, and its next append response or persist
/// ack panicked (`raft.rs` `maybe_commit` / `on_persist_entries`: unwrap on `None`).
#[test]
fn leader_that_applies_its_own_removal_steps_down() {
    let mut c = Cluster::form(21, 4, |_| {});
    let a = c.leader().unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != a).collect();
    let b = others[0];
    // Only b gets the removal entry, and not its commit.
    for other in &others[1..] {
        c.block(a, *other);
    }
    let last = c.node(b).unwrap().status().last_index;
    c.submit(a, Request::Remove { id: b });
    assert!(c.run_until(20, |c| c.node(b).unwrap().status().last_index > last));
    c.crash(a);
    c.heal();
    // b has the longest log, wins the election, commits and applies its own removal.
    assert!(
        c.run_until(500, |c| c.events().iter().any(|(_, id, e)| *id == b && *e == Event::Removed))
    );
    c.restart(a);
    // The remaining voters (a quorum of the new configuration) elect a leader other than b
    // and serve writes; b does not stay leader of a cluster it is no longer part of.
    assert!(c.run_until(500, |c| c.leader().is_some_and(|l| l != b)), "no leader but b");
    let leader = c.leader().unwrap();
    let set = Request::Set { key: "k".into(), value: b"v".to_vec(), session: None };
    assert!(is_ok(&c.call(leader, set, 200)));
    assert_ne!(c.node(b).unwrap().status().role, Role::Leader);
}

/// Gossip swarm seed 1016210: a leader handing over (leaving, or asked to transfer to "the
/// best voter") picked the most caught-up voter even when it was down. The transfer timed out
/// after an election timeout, was started again to the same voter, and while a transfer runs
/// every write is refused: the cluster stalled for as long as that voter stayed down.
#[test]
fn leader_hands_over_only_to_a_voter_it_hears_from() {
    let mut c = Cluster::form(7, 3, |_| {});
    let leader = c.leader().unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    // `ahead` is the most caught up (and, by its higher id, wins a tie); then it dies.
    let (ahead, behind) = (others[1], others[0]);
    c.block(leader, behind);
    for i in 0..5 {
        let set = Request::Set { key: format!("k{i}"), value: b"v".to_vec(), session: None };
        assert!(is_ok(&c.call(leader, set, 200)));
    }
    c.crash(ahead);
    c.heal();
    // Past an election timeout, the leader knows `ahead` is silent (check-quorum round).
    c.run_ticks(40);
    assert_eq!(c.leader(), Some(leader));
    let started = c.call(leader, Request::TransferLeader { to: 0 }, 50);
    assert!(is_ok(&started), "transfer not started: {started:?}");
    assert!(
        c.run_until(300, |c| c.leader() == Some(behind)),
        "leadership was not handed to the live voter n{behind} (leader: {:?})",
        c.leader()
    );
}

/// Gossip swarm seeds 1025144, 1028710, 1025181, 1027276, 1036927: a node that had applied its
/// own removal was added back under the same Raft id (the leader had not yet heard that it was
/// leaving). A removed node stopped applying entries, so it became a member that never
/// applied: reads through it timed out and elections could stall. It now keeps applying, and
/// serves again once re-added.
#[test]
fn removed_node_added_back_under_its_id_applies_and_serves_again() {
    let mut c = Cluster::form(8, 3, |_| {});
    let leader = c.leader().unwrap();
    let victim = c.ids().into_iter().find(|id| *id != leader).unwrap();
    assert!(is_ok(&c.call(leader, Request::Remove { id: victim }, 200)));
    assert!(c.run_until(200, |c| c
        .events()
        .iter()
        .any(|(_, id, e)| *id == victim && *e == Event::Removed)));
    let info = c.member_info(victim);
    assert!(is_ok(&c.call(leader, Request::AddLearner { info }, 200)));
    let set = Request::Set { key: "after".into(), value: b"v".to_vec(), session: None };
    assert!(is_ok(&c.call(leader, set, 200)));
    let target = c.node(leader).unwrap().status().applied_index;
    assert!(
        c.run_until(300, |c| c.node(victim).unwrap().status().applied_index >= target),
        "the re-added node stopped at index {} (leader at {target})",
        c.node(victim).unwrap().status().applied_index
    );
    let get =
        Request::Get { key: "after".into(), consistency: mokv_core::Consistency::Linearizable };
    assert!(is_ok(&c.call(victim, get, 300)), "the re-added node does not serve reads");
}

/// Found by the end-to-end tests (session 1): a learner that catches up by snapshot in an idle
/// cluster must still be promoted. When the learner's answer to the snapshot reaches the
/// leader before the leader's own report that the snapshot was sent (the stream's end),
/// raft-rs leaves the learner in Probe, not Replicate, until the next entry is appended,
/// which in an idle cluster never comes; promotion asked for Replicate and never happened.
#[test]
fn learner_caught_up_by_snapshot_is_promoted_in_an_idle_cluster() {
    let mut c = Cluster::form(9, 3, |cfg| {
        cfg.snapshot_threshold_entries = 5;
        cfg.log_keep_entries = 2;
    });
    let leader = c.leader().unwrap();
    for i in 0..20 {
        let set = Request::Set { key: format!("k{i}"), value: b"v".to_vec(), session: None };
        assert!(is_ok(&c.call(leader, set, 200)));
    }
    // The learner's reply comes back within a tick or two; the leader hears that its snapshot
    // went out only later.
    c.snapshot_report_delay_ticks = 8;
    c.add_node(4);
    let info = c.member_info(4);
    assert!(info.auto_promote);
    assert!(is_ok(&c.call(leader, Request::AddLearner { info }, 200)));
    assert!(
        c.run_until(400, |c| c
            .events()
            .iter()
            .any(|(_, id, e)| *id == 4 && matches!(e, Event::SnapshotInstalled { .. }))),
        "the learner never installed a snapshot"
    );
    // No more writes: promotion must not wait for the next entry.
    assert!(
        c.run_until(600, |c| c.node(leader).unwrap().status().conf.voters.contains(&4)),
        "the learner, caught up by snapshot, was never promoted"
    );
}

/// Swarm seed 2024751: voters {a, b}; the operator removes b, and once the removal is
/// acknowledged shuts b down for good. a then crashed with the removal in its log but an
/// older commit index on disk (the batch carrying the newer one was not yet synced), restarted
/// in the configuration {a, b}, and could never be elected without b. A membership change is
/// now answered only once the leader's durable commit index covers it.
#[test]
fn removal_is_acknowledged_only_once_its_commit_is_durable() {
    let mut c = Cluster::form(10, 2, |_| {});
    c.persist_delay_ticks = 4;
    let a = c.leader().unwrap();
    let b = c.ids().into_iter().find(|id| *id != a).unwrap();
    let id = c.submit(a, Request::Remove { id: b });
    assert!(c.run_until(200, |c| c.reply(id).is_some()), "the removal was never answered");
    assert!(is_ok(&c.reply(id).cloned()), "removal refused: {:?}", c.reply(id));
    // The operator shuts b down for good, and a crashes at once, losing what was not synced.
    c.destroy(b);
    c.crash(a);
    c.restart(a);
    assert!(c.run_until(300, |c| c.leader() == Some(a)), "a alone is never elected again");
    let set = Request::Set { key: "k".into(), value: b"v".to_vec(), session: None };
    assert!(is_ok(&c.call(a, set, 200)));
}
