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
