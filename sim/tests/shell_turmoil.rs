//! Level 2: the real shell (KvService, PeerService, driver, core) and the real client
//! library (sessions, retries, leader following) over turmoil's simulated network, checked
//! with the level-1 history checkers (per-key linearizability, serializable reads, at most once,
//! acknowledged writes never lost through the final reads).
//!
//! - `leader_partitioned_away`: the leader is cut off from the other nodes while clients
//!   write; the majority elects a new leader and keeps serving; after the heal all converge.
//! - `client_retry_after_timeout`: the answers of the leader to a client are lost; the client
//!   times out, retries with the same session, and the write is applied once.
//! - `follower_read_during_partition`: a follower cut off from the others answers no
//!   linearizable read (a stale value would be a violation); a follower on the majority side
//!   answers with the latest value.
//! - `forged_peer_messages`: a host holding a non-member node certificate and one holding a
//!   client certificate send Raft batches and snapshot streams claiming to come from members,
//!   in a term far ahead, while clients write and the leader is cut off once: every forged call
//!   is refused (PERMISSION_DENIED), no node ever reaches the forged term, and the history stays
//!   linearizable.
//! - `restarted_follower_learns_its_leader`: with the leader's heartbeats 20 s apart, a
//!   follower that crashed and restarted knows its leader within 2 s of its start: its
//!   greeting to the other nodes has the leader stream back and send heartbeats at once.
//! - `planted_*`: the core's planted bugs (stale follower reads, skipped session dedup) make
//!   those scenarios fail, so the checks can fail.
//! - `swarm`: 200 seeds with random partitions, one-way cuts, held links and crashes, on every
//!   core (`MOKV_SIM_L2_SEEDS=<n>` seeds instead, `MOKV_SIM_FIRST_SEED=<s>` to start at s).
//! - `replay`: `MOKV_SIM_SEED=<n>` reruns one swarm seed (`MOKV_SIM_TRACE=1` prints its
//!   notes and history, `MOKV_SIM_LOG=mokv_shell=info` the nodes' logs). The scenario tests
//!   take `MOKV_SIM_SEED` too.
//!
//! Replay is bit for bit: each turmoil host is a tokio runtime whose `select!` draws its branch
//! order from an RNG that turmoil seeds, which tokio allows only under `--cfg tokio_unstable`.
//! The repository's `.cargo/config.toml` sets that flag for every build (a `RUSTFLAGS`
//! variable would override it); `determinism` runs seeds twice and fails if the histories
//! differ, or if the flag is missing.

mod level2;

use std::rc::Rc;
use std::time::Duration;

use level2::cluster::{self, others, Registry, NODE_HOSTS};
use level2::net;
use level2::run::{
    control, finish, formed, heal_all, run, run_tuned, seed_or, wait_until, Verdict,
};
use level2::workload::{add_workload_client, now_ms, HostAction, Recorder, Shared, CLIENT_TIMEOUT};
use mokv_client::ReadMode;
use mokv_core::{PlantedBugs, Rng, Role};
use mokv_proto::peer::peer_client::PeerClient;
use mokv_proto::peer::{RaftBatch, SnapshotChunk};
use protobuf::Message as _;
use raft::eraftpb::{Message as RaftMessage, MessageType};
use sim::history::{Observed, Outcome};
use sim::swarm::{first_seed, run_parallel, seeds_from_env, SeedOutcome};
use tonic::transport::Endpoint;
use tonic::Code;
use turmoil::Sim;

fn term_of(registry: &Registry, node: &str) -> u64 {
    registry.borrow().get(node).map_or(0, |h| h.view().status.term)
}

fn cut_off(node: &str) {
    for o in others(node) {
        turmoil::partition(node, o);
    }
}

// ---------------------------------------------------------------------------------------------
// (a) The leader partitioned away under writes.

fn leader_partitioned_away_run(seed: u64, bugs: PlantedBugs) -> Verdict {
    run(seed, "leader_partitioned_away", bugs, |sim, registry, shared| {
        for c in 1..=3 {
            add_workload_client(sim, shared, c, seed.wrapping_mul(31).wrapping_add(c));
        }
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            shared.go.set(true);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Some(old) = cluster::leader(&registry) else {
                shared.problem("no leader before the partition");
                return finish(&registry, &shared, seed).await;
            };
            let old_term = term_of(&registry, &old);
            shared.note(format!("partition the leader {old} (term {old_term}) from the others"));
            cut_off(&old);
            let cut_at = now_ms();
            let elected = wait_until(Duration::from_secs(10), || {
                others(&old).iter().any(|n| {
                    registry.borrow().get(*n).is_some_and(|h| {
                        let s = h.view().status;
                        s.role == Role::Leader && s.term > old_term
                    })
                })
            })
            .await;
            if !elected {
                shared.problem("liveness: the majority elected no new leader");
            }
            shared.note(format!("new leader {:?}", cluster::leader(&registry)));
            // Writes go on at the majority while the old leader is cut off.
            tokio::time::sleep(Duration::from_secs(5)).await;
            heal_all(&NODE_HOSTS);
            let healed_at = now_ms();
            shared.note("healed");
            tokio::time::sleep(Duration::from_secs(2)).await;
            finish(&registry, &shared, seed).await;
            let acked_meanwhile = shared.history.borrow().ops.iter().any(|op| {
                op.kind.is_write()
                    && matches!(op.outcome, Outcome::Written { .. })
                    && op.invoke_tick >= cut_at
                    && op.complete_tick.is_some_and(|t| t <= healed_at)
            });
            if !acked_meanwhile {
                shared.problem("liveness: no write was acknowledged while the leader was cut off");
            }
        });
    })
}

#[test]
fn leader_partitioned_away() {
    let v = leader_partitioned_away_run(seed_or(1), PlantedBugs::default());
    report(&v);
    v.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// (b) A client retrying after a timeout: applied at most once.

/// A host that reads `key` (linearizable, any node) every 100 ms from `go` to `stop`: it sees
/// the write at its log index, and would see it again at another if it were applied twice.
fn add_poller(sim: &mut Sim<'_>, shared: &Rc<Shared>, number: u64, key: &'static str, seed: u64) {
    let shared = shared.clone();
    shared.running.set(shared.running.get() + 1);
    sim.client(format!("c{number}"), async move {
        while !shared.go.get() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut r = Recorder::new(&shared, number, &NODE_HOSTS, seed);
        while !shared.stop.get() {
            r.get(key, ReadMode::Linearizable).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shared.running.set(shared.running.get() - 1);
        Ok(())
    });
}

fn client_retry_after_timeout_run(seed: u64, bugs: PlantedBugs) -> Verdict {
    run(seed, "client_retry_after_timeout", bugs, |sim, registry, shared| {
        add_poller(sim, shared, 2, "k1", seed ^ 2);
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            // The writer runs on this host ("ctl"); its first write opens its connections.
            let mut w = Recorder::new(&shared, 1, &NODE_HOSTS, seed ^ 1);
            if !matches!(w.set("k1").await.1, Outcome::Written { .. }) {
                shared.problem("the first write failed on a healthy cluster");
            }
            shared.go.set(true);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(leader) = cluster::leader(&registry) else {
                shared.problem("no leader");
                return finish(&registry, &shared, seed).await;
            };
            // Requests reach the leader; its answers to this client are lost. The lost bytes
            // leave that TCP connection hung for good: the client must time out, retry on
            // other nodes (which send it back to the leader) and reconnect.
            shared.note(format!("answers of {leader} to ctl are lost"));
            turmoil::partition_oneway(leader.as_str(), "ctl");
            let repair_leader = leader.clone();
            let repair_shared = shared.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(CLIENT_TIMEOUT + Duration::from_secs(1)).await;
                repair_shared.note(format!("answers of {repair_leader} to ctl flow again"));
                turmoil::repair_oneway(repair_leader.as_str(), "ctl");
            });
            let started_ms = now_ms();
            let (value, outcome) = w.set("k1").await;
            let took_ms = now_ms() - started_ms;
            shared.note(format!("the retried write finished after {took_ms} ms: {outcome:?}"));
            match outcome {
                Outcome::Written { revision } => {
                    if took_ms < CLIENT_TIMEOUT.as_millis() as u64 {
                        shared.problem("the write did not time out: the scenario missed its aim");
                    }
                    // Two writes of k1 so far: version 2, last written by this one.
                    match w.client.get("k1", ReadMode::Linearizable).await {
                        Ok(Some(e)) => {
                            if e.version != 2 || e.mod_revision != revision {
                                shared.problem(format!(
                                    "the retried write was applied more than once: k1 has \
                                     version {} (want 2), last written at {} (acknowledged \
                                     at {revision})",
                                    e.version, e.mod_revision
                                ));
                            }
                            if sim::history::decode_value(&e.value) != Some(value) {
                                shared.problem("k1 does not hold the retried write's value");
                            }
                        }
                        other => shared.problem(format!("reading k1 back: {other:?}")),
                    }
                }
                other => shared.problem(format!(
                    "liveness: the retried write did not succeed within the client's retries: \
                     {other:?}"
                )),
            }
            heal_all(&["n1", "n2", "n3", "ctl", "c2"]);
            finish(&registry, &shared, seed).await;
        });
    })
}

#[test]
fn client_retry_after_timeout() {
    let v = client_retry_after_timeout_run(seed_or(2), PlantedBugs::default());
    report(&v);
    v.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// (c) A linearizable follower read during a partition.

fn follower_read_during_partition_run(seed: u64, bugs: PlantedBugs) -> Verdict {
    run(seed, "follower_read_during_partition", bugs, |sim, registry, shared| {
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            let Some(leader) = cluster::leader(&registry) else { return };
            let followers = others(&leader);
            let (minority, majority) = (followers[0], followers[1]);
            let mut w = Recorder::new(&shared, 1, &NODE_HOSTS, seed ^ 1);
            let (old, _) = w.set("k2").await;
            // Every node has applied the old value before the cut.
            if !wait_until(Duration::from_secs(5), || cluster::converged(&registry)).await {
                shared.problem("the cluster did not converge before the cut");
            }
            shared.note(format!("partition the follower {minority} from {leader} and {majority}"));
            cut_off(minority);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (new, outcome) = w.set("k2").await;
            if !matches!(outcome, Outcome::Written { .. }) {
                shared.problem("the majority did not acknowledge a write during the partition");
            }
            // Reads on both sides of the cut, each client bound to one node.
            let mut on_minority = Recorder::new(&shared, 2, &[minority], seed ^ 2);
            let mut on_majority = Recorder::new(&shared, 3, &[majority], seed ^ 3);
            let seen = |o: &Outcome| match o {
                Outcome::Read(v) => Some(v.map(|o: Observed| o.value)),
                _ => None,
            };
            let min_read = on_minority.get("k2", ReadMode::Linearizable).await;
            match seen(&min_read) {
                None => {}                      // refused: what a cut-off follower must do
                Some(v) if v == Some(new) => {} // not possible while cut off, but not stale
                Some(v) => shared.problem(format!(
                    "{minority} (cut off) answered a linearizable read with {v:?}, older than \
                     the acknowledged v{new}"
                )),
            }
            let maj_read = on_majority.get("k2", ReadMode::Linearizable).await;
            if seen(&maj_read) != Some(Some(new)) {
                shared.problem(format!(
                    "{majority} (majority side) did not answer the latest value: {maj_read:?}"
                ));
            }
            // A serializable read on the cut-off side may be stale (the old value): allowed.
            let stale_ok = on_minority.get("k2", ReadMode::Serializable).await;
            shared.note(format!(
                "cut-off {minority}: linearizable {min_read:?}, serializable {stale_ok:?} \
                 (old v{old}, new v{new}); {majority}: {maj_read:?}"
            ));
            heal_all(&["n1", "n2", "n3"]);
            finish(&registry, &shared, seed).await;
        });
    })
}

#[test]
fn follower_read_during_partition() {
    let v = follower_read_during_partition_run(seed_or(3), PlantedBugs::default());
    report(&v);
    v.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// (d) Forged peer messages: callers that are not the member they claim to be.

/// The term the forgers claim: far above any term a run reaches, so a node that accepted one
/// forged message would show it.
const FORGED_TERM: u64 = 1_000_000;

/// A Raft message `from` → `to` in [`FORGED_TERM`]: a follower that accepted it would step up to
/// that term at once.
fn forged_heartbeat(from: u64, to: u64) -> Vec<u8> {
    let mut m = RaftMessage::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = FORGED_TERM;
    m.write_to_bytes().expect("a raft message encodes")
}

/// A host that, from `go` to `stop`, sends forged Raft batches and snapshot streams to random
/// nodes, each claiming to come from a random member. `host` decides the caller's identity:
/// `n9` holds a node certificate of a name that is no member, any other name a client
/// certificate. Every call that reaches a node must be refused with PERMISSION_DENIED.
fn add_forger(sim: &mut Sim<'_>, shared: &Rc<Shared>, host: &'static str, seed: u64) {
    let shared = shared.clone();
    shared.running.set(shared.running.get() + 1);
    sim.client(host, async move {
        while !shared.go.get() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut rng = Rng::new(seed);
        let mut refused = 0u64;
        while !shared.stop.get() {
            let target = NODE_HOSTS[rng.below(NODE_HOSTS.len() as u64) as usize];
            let to = target[1..].parse::<u64>().expect("node hosts are n<id>");
            let claimed = rng.below(NODE_HOSTS.len() as u64) + 1;
            let endpoint = Endpoint::from_shared(format!("http://{}", cluster::addr(target)))
                .expect("a node address is a uri")
                .timeout(Duration::from_secs(2));
            let mut peer = PeerClient::new(net::channel_factory()(endpoint));
            let message = forged_heartbeat(claimed, to);
            let answer = if rng.below(2) == 0 {
                let batch = RaftBatch { from: claimed, to, messages: vec![message] };
                peer.raft(tokio_stream::iter(vec![batch])).await.map(|_| ())
            } else {
                let chunk = SnapshotChunk {
                    from: claimed,
                    to,
                    total_bytes: 1,
                    offset: 0,
                    data: vec![0],
                    message,
                };
                peer.snapshot(tokio_stream::iter(vec![chunk])).await.map(|_| ())
            };
            match answer {
                Err(s) if s.code() == Code::PermissionDenied => refused += 1,
                // The network or a crashed node: the call never reached a decision.
                Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {}
                other => shared.problem(format!(
                    "{host}: a forged peer call to {target} claiming id {claimed} was not \
                     refused: {other:?}"
                )),
            }
            tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        }
        if refused == 0 {
            shared.problem(format!("{host}: no forged call was refused: none reached a node"));
        }
        shared.note(format!("{host}: {refused} forged peer calls refused"));
        shared.running.set(shared.running.get() - 1);
        Ok(())
    });
}

fn forged_peer_messages_run(seed: u64, bugs: PlantedBugs) -> Verdict {
    run(seed, "forged_peer_messages", bugs, |sim, registry, shared| {
        for c in 1..=2 {
            add_workload_client(sim, shared, c, seed.wrapping_mul(31).wrapping_add(c));
        }
        add_forger(sim, shared, "n9", seed ^ 0x6e39);
        add_forger(sim, shared, "eve", seed ^ 0x657665);
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            shared.go.set(true);
            tokio::time::sleep(Duration::from_secs(3)).await;
            // An election while the forgers keep going: the new leader must not be swayed.
            if let Some(old) = cluster::leader(&registry) {
                shared.note(format!("partition the leader {old}"));
                cut_off(&old);
                tokio::time::sleep(Duration::from_secs(4)).await;
                heal_all(&NODE_HOSTS);
                shared.note("healed");
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            finish(&registry, &shared, seed).await;
            for node in NODE_HOSTS {
                let term = term_of(&registry, node);
                if term >= FORGED_TERM {
                    shared.problem(format!("{node} reached the forged term ({term})"));
                }
            }
        });
    })
}

#[test]
fn forged_peer_messages() {
    let v = forged_peer_messages_run(seed_or(4), PlantedBugs::default());
    report(&v);
    v.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// The checks can fail: planted core bugs are caught through the real shell and client.

#[test]
fn planted_stale_follower_reads_is_caught() {
    let mut bugs = PlantedBugs::default();
    bugs.stale_follower_reads = true;
    let v = follower_read_during_partition_run(seed_or(3), bugs);
    println!("caught, as it must be: {}", v.violations.join(" / "));
    assert!(
        v.violations.iter().any(|x| x.contains("not linearizable")),
        "the history checker missed stale follower reads: {:?}",
        v.violations
    );
}

#[test]
fn planted_skip_session_dedup_is_caught() {
    let mut bugs = PlantedBugs::default();
    bugs.skip_session_dedup = true;
    let v = client_retry_after_timeout_run(seed_or(2), bugs);
    println!("caught, as it must be: {}", v.violations.join(" / "));
    // The level-1 at-most-once checker (the poller saw the value at two log indices), and the
    // scenario's own check of the key's version.
    assert!(
        v.violations.iter().any(|x| x.contains("applied twice")),
        "the at-most-once checker missed a retried write applied twice: {:?}",
        v.violations
    );
    assert!(
        v.violations.iter().any(|x| x.contains("more than once")),
        "the scenario missed a retried write applied twice: {:?}",
        v.violations
    );
}

// ---------------------------------------------------------------------------------------------
// (e) A restarted follower learns its leader from its own greeting, not the next heartbeat.

/// Heartbeat interval of the scenario below, in ticks: 20 s, far longer than it waits.
const SLOW_HEARTBEAT_TICKS: usize = 200;
/// How long after its start the restarted follower may take to know its leader: a few
/// network round trips (connect, greeting, greeting back, heartbeat), at most 42 ms each way.
const LEARN_LEADER_WITHIN: Duration = Duration::from_secs(2);

fn restarted_follower_learns_its_leader_run(seed: u64) -> Verdict {
    let slow_heartbeats = |core: &mut mokv_core::Config| {
        core.heartbeat_ticks = SLOW_HEARTBEAT_TICKS;
        core.election_ticks = 3 * SLOW_HEARTBEAT_TICKS;
    };
    let scenario = "restarted_follower_learns_its_leader";
    run_tuned(seed, scenario, PlantedBugs::default(), slow_heartbeats, |sim, registry, shared| {
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            let Some(leader) = cluster::leader(&registry) else { return };
            let follower = others(&leader)[0];
            shared.note(format!("crash the follower {follower}"));
            shared.host_actions.borrow_mut().push(HostAction::Crash(follower.to_owned()));
            let in_registry = || registry.borrow().contains_key(follower);
            if !wait_until(Duration::from_secs(5), || !in_registry()).await {
                shared.problem(format!("{follower} was not crashed"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            shared.note(format!("restart {follower}"));
            shared.host_actions.borrow_mut().push(HostAction::Restart(follower.to_owned()));
            // Its driver runs from the moment its handle is in the registry.
            if !wait_until(Duration::from_secs(5), in_registry).await {
                shared.problem(format!("{follower} did not restart"));
                return;
            }
            let started = tokio::time::Instant::now();
            let knows_leader = || {
                registry.borrow().get(follower).is_some_and(|h| h.view().status.leader.is_some())
            };
            if wait_until(LEARN_LEADER_WITHIN, knows_leader).await {
                let ms = started.elapsed().as_millis();
                shared.note(format!("{follower} knew its leader {ms} ms after its start"));
            } else {
                shared.problem(format!(
                    "{follower} did not learn its leader within {LEARN_LEADER_WITHIN:?} of its \
                     restart (the leader's heartbeats come every {SLOW_HEARTBEAT_TICKS} ticks)"
                ));
            }
            finish(&registry, &shared, seed).await;
        });
    })
}

/// Several seeds: without the greeting, one run in ten would still pass by a heartbeat that
/// happens to come within the bound.
#[test]
fn restarted_follower_learns_its_leader() {
    for seed in [5, 6, 7] {
        let v = restarted_follower_learns_its_leader_run(seed_or(seed));
        report(&v);
        v.assert_clean();
    }
}

// ---------------------------------------------------------------------------------------------
// The swarm.

/// Seeds `cargo test -p sim` runs by default (`MOKV_SIM_L2_SEEDS` to change).
const DEFAULT_SWARM_SEEDS: u64 = 200;

fn swarm_run(seed: u64, bugs: PlantedBugs) -> Verdict {
    run(seed, "swarm", bugs, |sim, registry, shared| {
        for c in 1..=3 {
            add_workload_client(sim, shared, c, seed.wrapping_mul(131).wrapping_add(c));
        }
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            shared.go.set(true);
            let mut rng = Rng::new(seed);
            let rounds = 2 + rng.below(3);
            level2::nemesis::rounds(&mut rng, rounds, &registry, &shared).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            finish(&registry, &shared, seed).await;
        });
    })
}

/// The level-2 swarm: `MOKV_SIM_L2_SEEDS` seeds from `MOKV_SIM_FIRST_SEED` on, spread over
/// every core, each seed in a fresh process (see [`swarm_seed_in_child`]).
#[test]
fn swarm() {
    let total = seeds_from_env("MOKV_SIM_L2_SEEDS", DEFAULT_SWARM_SEEDS);
    let summary = run_parallel("level-2 swarm", first_seed(), total, |seed| {
        let child = swarm_seed_in_child(seed);
        SeedOutcome { failure: child.failure, inconclusive: child.inconclusive }
    });
    summary.assert_clean();
}

/// Same seed, same history, byte for byte, in two fresh processes (as a replay runs it).
/// Needs `--cfg tokio_unstable` (set for every build in `.cargo/config.toml`; see the module
/// documentation), which lets turmoil seed tokio's RNG.
#[test]
fn determinism() {
    #[cfg(not(tokio_unstable))]
    panic!(
        "built without --cfg tokio_unstable (is RUSTFLAGS set? it overrides .cargo/config.toml): \
         level 2 cannot replay bit for bit"
    );
    for seed in [11u64, 12, 13, 14] {
        let a = swarm_seed_in_child(seed);
        let b = swarm_seed_in_child(seed);
        assert!(a.summary.is_some(), "seed {seed}: the child printed no result");
        assert_eq!(a.summary, b.summary, "seed {seed}: the history differs between runs");
    }
}

/// What a child process reported for one swarm seed.
#[derive(Debug)]
struct ChildVerdict {
    /// The result line (ops, simulated time, history hash, violation count).
    summary: Option<String>,
    failure: Option<String>,
    inconclusive: usize,
}

/// Runs one swarm seed in a fresh process of this test binary (its `replay` test), exactly as
/// the printed replay command does. Within one process a second simulation of the same seed
/// can differ from the first (some state outlives a simulation in a dependency), so every
/// seed gets its own process: what the swarm saw is what a replay sees.
fn swarm_seed_in_child(seed: u64) -> ChildVerdict {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["replay", "--exact", "--nocapture", "--test-threads=1"])
        .env("MOKV_SIM_SEED", seed.to_string())
        .env_remove("MOKV_SIM_TRACE")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = format!("seed={seed} scenario=swarm ops=");
    // libtest may print "test replay ... " in front of the test's first line.
    let from = |prefix: &str| -> Option<String> {
        stdout.lines().find_map(|l| l.find(prefix).map(|at| l[at..].to_owned()))
    };
    let summary = from(&result);
    let inconclusive = summary
        .as_deref()
        .and_then(|l| l.split(" inconclusive=").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let failure_prefix = format!("seed={seed} scenario=swarm violation=");
    let failure = from(&failure_prefix).or_else(|| {
        (!out.status.success() || summary.is_none()).then(|| {
            format!(
                "seed={seed} scenario=swarm violation=the run crashed ({}); replay: \
                     MOKV_SIM_SEED={seed} cargo test -p sim --test shell_turmoil replay -- \
                     --exact --nocapture",
                out.status
            )
        })
    });
    ChildVerdict { summary, failure, inconclusive }
}

#[test]
fn replay() {
    let Ok(seed) = std::env::var("MOKV_SIM_SEED") else {
        println!("replay: set MOKV_SIM_SEED=<n> to rerun one swarm seed (MOKV_SIM_TRACE=1)");
        return;
    };
    let seed: u64 = seed.trim().parse().expect("MOKV_SIM_SEED must be a number");
    let v = swarm_run(seed, PlantedBugs::default());
    report(&v);
    if let Some(line) = v.failure_line() {
        println!("{line}");
    }
    v.assert_clean();
}

fn report(v: &Verdict) {
    println!(
        "seed={} scenario={} ops={} simulated={}ms history_hash={:016x} inconclusive={} \
         violations={}",
        v.seed,
        v.scenario,
        v.ops,
        v.sim_ms,
        v.history_hash,
        v.inconclusive,
        v.violations.len()
    );
}
