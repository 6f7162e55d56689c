//! The swarm's fault schedule, drawn from the seed: a few rounds of one fault each (the leader
//! cut off, one node cut off, a one-way cut between nodes, a client cut off from a node, a
//! held link between a client and a node, links between nodes held (delayed, then delivered:
//! what TCP retransmission makes of a short outage), a node crashed), each healed (restarted)
//! after a drawn time — or, one time in three, left in place so that the next fault adds to it.
//! Everything is healed at the end.

use std::rc::Rc;
use std::time::Duration;

use mokv_core::Rng;

use super::cluster::{self, others, Registry, NODE_HOSTS as NODES};
use super::workload::{HostAction, Shared};

/// Every host of a swarm run, for healing.
pub const HOSTS: [&str; 6] = ["n1", "n2", "n3", "c1", "c2", "c3"];
const CLIENTS: [&str; 3] = ["c1", "c2", "c3"];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

/// Runs `rounds` fault rounds, then heals everything.
pub async fn rounds(rng: &mut Rng, rounds: u64, registry: &Registry, shared: &Rc<Shared>) {
    for _ in 0..rounds {
        // Quiet time between faults: the cluster should settle and serve.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_500))).await;
        let hold_ms = 500 + rng.below(5_000);
        let mut crashed = None;
        match rng.below(7) {
            0 => {
                let Some(leader) = cluster::leader(registry) else { continue };
                shared.note(format!("partition the leader {leader} from the other nodes"));
                for o in others(&leader) {
                    turmoil::partition(leader.as_str(), o);
                }
            }
            1 => {
                let n = pick(rng, &NODES);
                shared.note(format!("partition {n} from the other nodes"));
                for o in others(n) {
                    turmoil::partition(n, o);
                }
            }
            2 => {
                let a = pick(rng, &NODES);
                let b = pick(rng, &others(a));
                shared.note(format!("partition one way {a} -> {b}"));
                turmoil::partition_oneway(a, b);
            }
            3 => {
                let (c, n) = (pick(rng, &CLIENTS), pick(rng, &NODES));
                shared.note(format!("partition {c} from {n}"));
                turmoil::partition(c, n);
            }
            4 => {
                let (c, n) = (pick(rng, &CLIENTS), pick(rng, &NODES));
                shared.note(format!("hold {c} <-> {n}"));
                turmoil::hold(c, n);
            }
            5 => {
                let n = pick(rng, &NODES);
                shared.note(format!("hold the links of {n} to the other nodes"));
                for o in others(n) {
                    turmoil::hold(n, o);
                }
            }
            _ => {
                let n = match (rng.below(2), cluster::leader(registry)) {
                    (0, Some(leader)) => leader,
                    _ => pick(rng, &NODES).to_owned(),
                };
                shared.note(format!("crash {n}"));
                shared.host_actions.borrow_mut().push(HostAction::Crash(n.clone()));
                crashed = Some(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        if rng.below(3) > 0 {
            shared.note("heal");
            super::run::heal_all(&HOSTS);
        }
        // A crashed node always comes back: a cluster that lost a node for good has no
        // liveness to check after the heal.
        if let Some(n) = crashed {
            shared.note(format!("restart {n}"));
            shared.host_actions.borrow_mut().push(HostAction::Restart(n));
        }
    }
    shared.note("heal everything");
    super::run::heal_all(&HOSTS);
}
