//! Batched inputs (many requests and packets per drain, as the shell's driver hands them to the
//! core) under leader changes, on the level-1 harness with `batch_inputs` on.
//!
//! - `batched_writes_across_leader_changes`: rounds of write batches, each followed by a crash,
//!   a partition or nothing; afterwards every acknowledged write is on every node, no write
//!   refused with a definite error is, and the replicas are equal.
//! - `reads_queued_behind_a_round_*`: linearizable reads that arrive while a ReadIndex round is
//!   in flight wait behind it; when the leader changes under them they are still answered, and
//!   never with a value older than a write acknowledged before they were submitted.
//! - `planted_answer_before_durable_*`: the broken pipeline (answering a leader's writes when
//!   their entry is handed to the disk) is caught, by the scenario above and by the swarm.

use std::collections::BTreeMap;

use mokv_core::{
    Config, Consistency, Error, ErrorClass, NodeId, PlantedBugs, Reply, Request, RequestId,
    Response, Rng,
};
use sim::cluster::get_value;
use sim::scenario::FaultScenario;
use sim::{Cluster, NetFaults};

fn set(key: &str, value: &str) -> Request {
    Request::Set { key: key.into(), value: value.as_bytes().to_vec(), session: None }
}

fn get(key: &str) -> Request {
    Request::Get { key: key.into(), consistency: Consistency::Linearizable }
}

fn bugs_answer_before_durable() -> PlantedBugs {
    let mut b = PlantedBugs::default();
    b.answer_before_durable = true;
    b
}

fn others(c: &Cluster, id: NodeId) -> Vec<NodeId> {
    c.ids().into_iter().filter(|i| *i != id).collect()
}

/// One seeded run of the write scenario; returns what the checks found (empty: clean).
fn batched_failover_run(seed: u64, bugs: PlantedBugs) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0xba7c_4ed0);
    let mut base = Config::new(1, 0);
    base.planted_bugs = bugs;
    let mut c = Cluster::form_with_config(seed, 3, base);
    c.batch_inputs = true;
    c.persist_delay_ticks = 1 + rng.below(3);
    c.net = NetFaults { loss_percent: 0, duplicate_percent: 0, delay_ticks_max: rng.below(3) };
    // (key, value) -> request id; keys are unique, so a key's final value names its write.
    let mut writes: BTreeMap<RequestId, (String, String)> = BTreeMap::new();
    let mut problems = Vec::new();
    for round in 0..8u64 {
        let Some(leader) = c.leader() else {
            c.run_ticks(50);
            continue;
        };
        let n = 5 + rng.below(40) as usize;
        let batch: Vec<(String, String)> =
            (0..n).map(|i| (format!("r{round}k{i}"), format!("s{seed}r{round}v{i}"))).collect();
        let requests = batch.iter().map(|(k, v)| set(k, v)).collect();
        let ids = c.submit_batch(leader, requests);
        for (id, kv) in ids.into_iter().zip(batch) {
            writes.insert(id, kv);
        }
        // Let the batch get somewhere (or not), then disturb the leader.
        c.run_ticks(rng.below(4));
        match rng.below(3) {
            0 => {
                c.crash(leader);
                c.run_ticks(30 + rng.below(30));
                c.restart(leader);
            }
            1 => {
                c.isolate(leader);
                c.run_ticks(30 + rng.below(30));
                c.heal();
            }
            _ => {}
        }
        c.run_ticks(20);
    }
    c.heal();
    // Writes still pending on a live node are answered (or time out) within this; those of a
    // crashed process never are (indeterminate).
    c.run_ticks(100);
    let settled = c.run_until(2_000, |c| {
        let ids = c.ids();
        let applied: Vec<u64> =
            ids.iter().filter_map(|id| c.node(*id)).map(|n| n.status().applied_index).collect();
        c.leader().is_some()
            && applied.len() == ids.len()
            && applied.iter().all(|a| *a == applied[0])
    });
    if !settled {
        problems.push("no progress after the heal".to_string());
        return problems;
    }
    let leader = c.leader().expect("settled");
    let state = c.node(leader).expect("leader").state();
    for id in c.ids() {
        if c.node(id).map(|n| n.state().digest()) != Some(state.digest()) {
            problems.push(format!("node {id} differs from the leader"));
        }
    }
    for (id, (key, value)) in &writes {
        let stored = state.get(key).map(|v| v.value().to_vec());
        let reply = c.reply(*id).map(|r: &Reply| r.result.clone());
        match reply {
            Some(Ok(Response::Set { .. })) if stored.as_deref() != Some(value.as_bytes()) => {
                problems.push(format!("acknowledged write {key} is lost"));
            }
            Some(Err(e)) if e.class() == ErrorClass::Retryable && stored.is_some() => {
                problems.push(format!("write {key} refused with {e:?} was applied"));
            }
            _ => {}
        }
    }
    problems
}

#[test]
fn batched_writes_across_leader_changes() {
    for seed in 0..24 {
        let problems = batched_failover_run(seed, PlantedBugs::default());
        assert!(problems.is_empty(), "seed {seed}: {problems:?}");
    }
}

#[test]
fn planted_answer_before_durable_is_caught_by_the_batched_scenario() {
    let caught = (0..24).find(|seed| {
        let problems = batched_failover_run(*seed, bugs_answer_before_durable());
        if let Some(p) = problems.first() {
            println!("seed {seed}: caught: {p}");
        }
        !problems.is_empty()
    });
    assert!(caught.is_some(), "answering writes before they are durable went unnoticed");
}

#[test]
fn planted_answer_before_durable_is_caught_by_the_swarm() {
    let caught =
        sim::first_seed_caught::<FaultScenario>(0..200, bugs_answer_before_durable(), |v| {
            !v.is_panic()
        });
    assert!(caught.is_some(), "answering writes before they are durable went unnoticed");
}

/// Reads outlive an election (they are retried meanwhile) instead of timing out.
fn patient_reads(c: &mut Config) {
    c.request_timeout_ticks = 300;
}

/// Every read in `ids` was answered with one of the `allowed` values (those of the writes it may
/// linearize after: the last one acknowledged before it was submitted, or a later one).
fn check_reads(c: &Cluster, ids: &[RequestId], allowed: &[&str]) {
    for id in ids {
        let reply = c.reply(*id).cloned();
        let value = get_value(&reply);
        let ok = value.as_deref().is_some_and(|v| allowed.iter().any(|a| a.as_bytes() == v));
        assert!(ok, "read {id}: {reply:?}, allowed {allowed:?}");
    }
}

#[test]
fn reads_queued_behind_a_round_on_a_follower_survive_a_leader_change() {
    for seed in 0..6 {
        let mut c = Cluster::form(100 + seed, 3, patient_reads);
        c.batch_inputs = true;
        let old = c.leader().unwrap();
        assert!(sim::cluster::is_ok(&c.call(old, set("k", "v1"), 100)));
        let follower = others(&c, old)[0];
        // A first batch of reads starts a round (forwarded to the leader) ...
        let first = c.submit_batch(follower, (0..10).map(|_| get("k")).collect());
        // ... and the leader dies before it answers; more reads queue behind the round.
        c.crash(old);
        let queued = c.submit_batch(follower, (0..10).map(|_| get("k")).collect());
        assert!(
            first.iter().chain(&queued).all(|id| c.reply(*id).is_none()),
            "no read is answered without a round"
        );
        assert!(c.run_until(500, |c| c.leader().is_some_and(|l| l != old)), "no new leader");
        let new = c.leader().unwrap();
        let w = c.call(new, set("k", "v2"), 200);
        assert!(sim::cluster::is_ok(&w), "seed {seed}: {w:?}");
        // Reads submitted after v2 was acknowledged, on both survivors.
        let mut after = c.submit_batch(follower, (0..10).map(|_| get("k")).collect());
        after.extend(c.submit_batch(new, (0..10).map(|_| get("k")).collect()));
        let all: Vec<RequestId> = first.iter().chain(&queued).chain(&after).copied().collect();
        assert!(
            c.run_until(500, |c| all.iter().all(|id| c.reply(*id).is_some())),
            "seed {seed}: reads queued behind the lost round were never answered"
        );
        check_reads(&c, &first, &["v1", "v2"]);
        check_reads(&c, &queued, &["v1", "v2"]);
        check_reads(&c, &after, &["v2"]);
        c.restart(old);
    }
}

#[test]
fn reads_queued_behind_a_round_on_a_deposed_leader_never_go_stale() {
    for seed in 0..6 {
        let mut c = Cluster::form(200 + seed, 3, patient_reads);
        c.batch_inputs = true;
        let old = c.leader().unwrap();
        assert!(sim::cluster::is_ok(&c.call(old, set("k", "v1"), 100)));
        // The leader is cut off with a round in flight and more reads queued behind it.
        let first = c.submit_batch(old, (0..10).map(|_| get("k")).collect());
        c.isolate(old);
        let queued = c.submit_batch(old, (0..10).map(|_| get("k")).collect());
        assert!(c.run_until(500, |c| c.leader().is_some_and(|l| l != old)), "no new leader");
        let new = c.leader().unwrap();
        let w = c.call(new, set("k", "v2"), 200);
        assert!(sim::cluster::is_ok(&w), "seed {seed}: {w:?}");
        // Submitted to the old leader after v2 was acknowledged elsewhere: v2 or an error.
        let late = c.submit_batch(old, (0..10).map(|_| get("k")).collect());
        c.run_ticks(20);
        c.heal();
        let all: Vec<RequestId> = first.iter().chain(&queued).chain(&late).copied().collect();
        assert!(
            c.run_until(1_000, |c| all.iter().all(|id| c.reply(*id).is_some())),
            "seed {seed}: reads on the deposed leader were never answered"
        );
        for id in first.iter().chain(&queued) {
            let r = c.reply(*id).cloned();
            let v = get_value(&r);
            assert!(
                v.as_deref().is_some_and(|v| v == b"v1" || v == b"v2")
                    || matches!(r, Some(Reply { result: Err(Error::Unavailable(_)), .. })),
                "seed {seed}: {r:?}"
            );
        }
        for id in &late {
            let r = c.reply(*id).cloned();
            assert!(
                get_value(&r).as_deref() == Some(b"v2".as_slice())
                    || matches!(r, Some(Reply { result: Err(Error::Unavailable(_)), .. })),
                "seed {seed}: a read submitted after v2 was acknowledged saw {r:?}"
            );
        }
    }
}
