//! The node hosts: three (or more) turmoil hosts `n1`, `n2`, ... each running the real shell
//! (driver, core, KV and Peer services) through `mokv_shell::embed`, with in-memory storage.
//! `n1` bootstraps the cluster; the others are added as learners through the leader's driver
//! (what mokvd's gossip reconciler does; gossip itself is simulated at level 1 and tested with
//! real processes) and promoted by the core once caught up.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mokv_core::{PlantedBugs, Rng, Role};
use mokv_shell::embed::{self, EmbeddedConfig, MemoryStorage};
use mokv_shell::NodeHandle;
use turmoil::Sim;

use super::net::{self, RPC_PORT};

/// Wall-clock milliseconds at simulated time zero (any fixed value: session expiry only
/// compares differences).
const EPOCH_MS: u64 = 1_800_000_000_000;

/// The shell's default tick (mokvd's `tick-ms`): election and request timeouts keep their
/// real proportions to the gRPC timeouts (connect, keepalive) compiled into the shell.
pub const TICK: Duration = Duration::from_millis(100);

/// Applied entries between snapshots in level-2 runs.
pub const SNAPSHOT_THRESHOLD_ENTRIES: u64 = 64;

/// The nodes' clock: simulated time, so session expiry follows the simulation.
fn sim_now_ms() -> u64 {
    EPOCH_MS + turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// Driver handles of the running nodes, by host name: how the test observes the nodes (roles,
/// terms, applied index) without going through the network. Replaced when a node restarts.
pub type Registry = Rc<RefCell<BTreeMap<String, NodeHandle>>>;

/// The node hosts of every level-2 cluster.
pub const NODE_HOSTS: [&str; 3] = ["n1", "n2", "n3"];

/// The node hosts other than `node`.
pub fn others(node: &str) -> Vec<&'static str> {
    NODE_HOSTS.iter().copied().filter(|n| *n != node).collect()
}

/// `host:port` of a node's gRPC services.
pub fn addr(host: &str) -> String {
    format!("{host}:{RPC_PORT}")
}

/// Adds the node hosts to `sim`. Node ids are 1, 2, ...; each core's seed derives from `seed`.
/// `bugs` switches planted core bugs on (tests that show a checker catches them); `tune`
/// changes every core's configuration last (a scenario's own timing).
pub fn add_nodes(
    sim: &mut Sim<'_>,
    seed: u64,
    bugs: PlantedBugs,
    tune: fn(&mut mokv_core::Config),
) -> Registry {
    let registry: Registry = Rc::new(RefCell::new(BTreeMap::new()));
    let mut rng = Rng::new(seed ^ 0x6e6f_6465);
    for (i, name) in NODE_HOSTS.iter().map(|n| n.to_string()).enumerate() {
        let id = i as u64 + 1;
        let mut core = mokv_core::Config::new(id, rng.next_u64());
        core.planted_bugs = bugs;
        // Snapshots every few dozen entries (mokvd: 10 000): a node that was cut off or crashed
        // for a while catches up through the real snapshot transfer (Peer.Snapshot chunks).
        core.snapshot_threshold_entries = SNAPSHOT_THRESHOLD_ENTRIES;
        core.log_keep_entries = SNAPSHOT_THRESHOLD_ENTRIES / 4;
        tune(&mut core);
        let cfg = EmbeddedConfig {
            name: name.clone(),
            core,
            rpc_addr: addr(&name),
            local_addr: std::net::SocketAddr::from(([0, 0, 0, 0], RPC_PORT)),
            bootstrap: (id == 1).then_some(seed | 1),
            tick: TICK,
            max_concurrent_streams: mokv_shell::config::DEFAULT_MAX_CONCURRENT_STREAMS,
            now_ms: sim_now_ms,
        };
        // Outlives restarts of the host (turmoil `bounce`): what was written stays written.
        let storage = Arc::new(MemoryStorage::new());
        let registry = registry.clone();
        sim.host(name.as_str(), move || {
            let (cfg, storage, registry) = (cfg.clone(), storage.clone(), registry.clone());
            async move {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", RPC_PORT)).await?;
                let name = cfg.name.clone();
                let mut node =
                    embed::start(cfg, storage, net::channel_factory(), net::incoming(listener))
                        .await?;
                registry.borrow_mut().insert(name, node.handle());
                node.wait_failed().await?;
                Err("the node's driver stopped".into())
            }
        });
    }
    registry
}

/// The node that is leader in the highest term any node knows, if any.
pub fn leader(registry: &Registry) -> Option<String> {
    let nodes = registry.borrow();
    nodes
        .iter()
        .map(|(name, h)| (name, h.view().status))
        .filter(|(_, s)| s.role == Role::Leader)
        .max_by_key(|(_, s)| s.term)
        .map(|(name, _)| name.clone())
}

/// Asks the leader to add every running node that is not in its configuration yet, as the
/// gossip reconciler would (fire and forget: repeated until formed).
pub fn admit_joiners(registry: &Registry) {
    admit_joiners_except(registry, &[]);
}

/// [`admit_joiners`], leaving out the nodes `except` (removed on purpose).
pub fn admit_joiners_except(registry: &Registry, except: &[&str]) {
    let Some(l) = leader(registry) else { return };
    let nodes = registry.borrow();
    let Some(leader) = nodes.get(&l).cloned() else { return };
    let conf = leader.view().status.conf;
    let leader_id = leader.view().status.id;
    for (name, h) in nodes.iter() {
        let id = h.view().status.id;
        if conf.all_ids().contains(&id) || except.contains(&name.as_str()) {
            continue;
        }
        // The new node has no member table yet: tell it where the leader is (gossip does in
        // mokvd).
        let (joiner, leader_addr) = (h.clone(), addr(&l));
        let info = mokv_core::MemberInfo {
            id,
            name: name.clone(),
            peer_addr: addr(name),
            rpc_addr: addr(name),
            auto_promote: true,
        };
        let leader = leader.clone();
        tokio::spawn(async move {
            joiner.learn_address(leader_id, leader_addr).await;
            let _ = leader.call(mokv_core::Request::AddLearner { info }).await;
        });
    }
}

/// Every node is running, one of them leads, and every node is a voter that knows that leader.
pub fn formed(registry: &Registry) -> bool {
    let count = NODE_HOSTS.len();
    let Some(l) = leader(registry) else { return false };
    let nodes = registry.borrow();
    let Some(status) = nodes.get(&l).map(|h| h.view().status) else { return false };
    nodes.len() == count
        && status.conf.voters.len() == count
        && nodes.values().all(|h| h.view().status.leader == Some(status.id))
}

/// Every node has applied everything the leader committed (and the leader applied it too).
pub fn converged(registry: &Registry) -> bool {
    let Some(l) = leader(registry) else { return false };
    let nodes = registry.borrow();
    let Some(commit) = nodes.get(&l).map(|h| h.view().status.commit_index) else { return false };
    nodes.values().all(|h| {
        let s = h.view().status;
        s.applied_index == commit && s.commit_index == commit
    })
}

/// Adds node host `name` (raft id `id`) whose node starts only once `gate` is set: a member that
/// joins an already formed cluster (admit it with [`admit_joiners`]). It is not one of
/// [`NODE_HOSTS`].
pub fn add_gated_node(
    sim: &mut Sim<'_>,
    registry: &Registry,
    name: &str,
    id: u64,
    seed: u64,
    gate: Rc<std::cell::Cell<bool>>,
) {
    let mut core = mokv_core::Config::new(id, Rng::new(seed ^ 0x6761_7465 ^ id).next_u64());
    core.snapshot_threshold_entries = SNAPSHOT_THRESHOLD_ENTRIES;
    core.log_keep_entries = SNAPSHOT_THRESHOLD_ENTRIES / 4;
    let cfg = EmbeddedConfig {
        name: name.to_owned(),
        core,
        rpc_addr: addr(name),
        local_addr: std::net::SocketAddr::from(([0, 0, 0, 0], RPC_PORT)),
        bootstrap: None,
        tick: TICK,
        max_concurrent_streams: mokv_shell::config::DEFAULT_MAX_CONCURRENT_STREAMS,
        now_ms: sim_now_ms,
    };
    let storage = Arc::new(MemoryStorage::new());
    let registry = registry.clone();
    sim.host(name, move || {
        let (cfg, storage, registry, gate) =
            (cfg.clone(), storage.clone(), registry.clone(), gate.clone());
        async move {
            while !gate.get() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", RPC_PORT)).await?;
            let name = cfg.name.clone();
            let mut node =
                embed::start(cfg, storage, net::channel_factory(), net::incoming(listener)).await?;
            registry.borrow_mut().insert(name, node.handle());
            node.wait_failed().await?;
            Err("the node's driver stopped".into())
        }
    });
}
