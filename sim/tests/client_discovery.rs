//! Level 2: the real client discovers a membership change during a partition.
//!
//! A client seeded with `n1` only (discovery on) runs a workload of writes, reads and ranges.
//! Then, at once: the client is cut off from its seed `n1`, and a follower `R` is cut off from
//! the other nodes and removed from the cluster (it keeps its stale view of the members, with
//! itself in it). A new node `n4` joins and is promoted. The client must learn the new
//! membership through the nodes it still reaches (not through its seed), stop sending to `R`,
//! and send reads to `n4`, without being restarted. The history (this client's and two other
//! workload clients') is checked with the level-1 checkers (per-key linearizability,
//! serializable reads, at most once, acknowledged writes never lost through the final reads).
//!
//! `MOKV_SIM_SEED=<n>` reruns another seed (`MOKV_SIM_TRACE=1` prints notes and history).

mod level2;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use level2::cluster::{self, addr, others, Registry, NODE_HOSTS};
use level2::run::{control, finish_on, formed, heal_all, run, seed_or, wait_until, Verdict};
use level2::workload::{
    add_workload_client, HostAction, Recorder, CLIENT_ATTEMPTS, CLIENT_TIMEOUT,
};
use mokv_client::{Client, ClientConfig, ReadMode, TlsFiles};
use mokv_core::{Request, Rng};
use sim::workload::KEYS;

/// The node that joins during the run.
const NEW: &str = "n4";
const NEW_ID: u64 = 4;

/// The client under test: seeded with `n1` only, discovery every second.
fn seeded_client(seed: u64) -> Client {
    let mut config = ClientConfig::new(
        vec![addr("n1")],
        TlsFiles { ca: "-".into(), cert: "-".into(), key: "-".into() },
    );
    config.request_timeout = CLIENT_TIMEOUT;
    config.max_attempts = CLIENT_ATTEMPTS;
    config.refresh_interval = Duration::from_secs(1);
    let plaintext =
        mokv_client::Plaintext { connect: level2::net::channel_factory(), id_seed: seed };
    Client::connect_plaintext(config, plaintext).expect("a client over the simulated network")
}

fn knows(client: &Client, host: &str) -> bool {
    client.nodes().iter().any(|n| n.addr == addr(host))
}

fn answered(client: &Client, host: &str) -> u64 {
    client.nodes().iter().find(|n| n.addr == addr(host)).map_or(0, |n| n.answered)
}

fn raft_id(registry: &Registry, host: &str) -> Option<u64> {
    registry.borrow().get(host).map(|h| h.view().status.id)
}

fn discovery_run(seed: u64) -> Verdict {
    run(seed, "client_discovers_membership_change", Default::default(), |sim, registry, shared| {
        for c in 1..=2 {
            add_workload_client(sim, shared, c, seed.wrapping_mul(17).wrapping_add(c));
        }
        let gate = Rc::new(Cell::new(false));
        cluster::add_gated_node(sim, registry, NEW, NEW_ID, seed, gate.clone());
        let (registry, shared) = (registry.clone(), shared.clone());
        control(sim, async move {
            if !formed(&registry, &shared).await {
                return;
            }
            let client = seeded_client(seed ^ 0x5eed);
            // The client's own workload, recorded like the others.
            shared.running.set(shared.running.get() + 1);
            let (w_client, w_shared) = (client.clone(), shared.clone());
            tokio::task::spawn_local(async move {
                let mut rng = Rng::new(seed ^ 0x3);
                let mut r = Recorder { client: w_client, number: 3, shared: w_shared.clone() };
                while !w_shared.stop.get() {
                    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                    match rng.below(10) {
                        0..=2 => {
                            r.set(key).await;
                        }
                        3..=6 => {
                            r.get(key, ReadMode::Linearizable).await;
                        }
                        7 => {
                            r.get(key, ReadMode::Serializable).await;
                        }
                        _ => {
                            r.range(ReadMode::Linearizable).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
                }
                w_shared.running.set(w_shared.running.get() - 1);
            });
            shared.go.set(true);
            if !wait_until(Duration::from_secs(10), || NODE_HOSTS.iter().all(|n| knows(&client, n)))
                .await
            {
                shared.problem("the client did not discover the members from its seed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;

            let Some(leader) = cluster::leader(&registry) else {
                shared.problem("no leader before the change");
                return finish_on(&registry, &shared, seed, &NODE_HOSTS).await;
            };
            // The follower to remove: not the leader, not the client's seed.
            let removed = others(&leader).into_iter().find(|n| *n != "n1").unwrap_or("n3");
            let Some(removed_id) = raft_id(&registry, removed) else { return };
            shared.note(format!(
                "cut the client off from its seed n1; cut {removed} off from the nodes and \
                 remove it (leader {leader})"
            ));
            turmoil::partition("ctl", "n1");
            for o in others(removed) {
                turmoil::partition(removed, o);
            }
            let removed_ok = wait_until(Duration::from_secs(20), || {
                let Some(l) = cluster::leader(&registry) else { return false };
                let Some(h) = registry.borrow().get(&l).cloned() else { return false };
                if !h.view().status.conf.all_ids().contains(&removed_id) {
                    return true;
                }
                tokio::task::spawn_local(async move {
                    let _ = h.call(Request::Remove { id: removed_id }).await;
                });
                false
            })
            .await;
            if !removed_ok {
                shared.problem(format!("liveness: {removed} was not removed"));
            }
            shared.note(format!("{removed} removed; {NEW} starts"));
            gate.set(true);
            let joined = wait_until(Duration::from_secs(30), || {
                cluster::admit_joiners_except(&registry, &[removed]);
                let Some(l) = cluster::leader(&registry) else { return false };
                let voters = registry.borrow().get(&l).map(|h| h.view().status.conf.voters.clone());
                voters.is_some_and(|v| v.contains(&NEW_ID))
            })
            .await;
            if !joined {
                shared.problem(format!("liveness: {NEW} did not become a voter"));
            }
            shared.note(format!("{NEW} is a voter"));
            let learned = wait_until(Duration::from_secs(20), || {
                knows(&client, NEW) && !knows(&client, removed)
            })
            .await;
            if !learned {
                shared.problem(format!(
                    "the client did not learn the new membership (knows {NEW}: {}, still \
                     knows {removed}: {})",
                    knows(&client, NEW),
                    knows(&client, removed)
                ));
            }
            let before = answered(&client, NEW);
            let served =
                wait_until(Duration::from_secs(20), || answered(&client, NEW) > before + 5).await;
            if !served {
                shared.problem(format!("{NEW} served no reads of the client after it joined"));
            }
            shared.note(format!(
                "the client knows {NEW}, forgot {removed}; {NEW} answered {} of its calls",
                answered(&client, NEW)
            ));
            // The removed node goes away for good; the rest heals.
            shared.host_actions.borrow_mut().push(HostAction::Crash(removed.to_owned()));
            heal_all(&["n1", "n2", "n3", NEW, "ctl", "c1", "c2"]);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let members: Vec<&str> =
                ["n1", "n2", "n3", NEW].into_iter().filter(|n| *n != removed).collect();
            finish_on(&registry, &shared, seed, &members).await;
        });
    })
}

#[test]
fn client_discovers_membership_change() {
    let v = discovery_run(seed_or(5));
    println!(
        "seed={} ops={} simulated={}ms history_hash={:016x} inconclusive={} violations={}",
        v.seed,
        v.ops,
        v.sim_ms,
        v.history_hash,
        v.inconclusive,
        v.violations.len()
    );
    for n in &v.trace {
        println!("  {n}");
    }
    v.assert_clean();
}
