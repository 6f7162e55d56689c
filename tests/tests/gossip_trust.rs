//! The gossip key suggests, a node certificate decides: a test holding only the cluster key
//! (no certificate) forges gossip against a real 3-node mTLS cluster — a voter leaving, a
//! voter moved to another rpc address, fresh identities — with the public
//! `mokv_core::gossip::Gossip` sealed exactly as `mokvd` seals gossip. The leader hears each
//! forgery (observed: its verification counters move), and the membership stays as it was:
//! three voters at their real addresses, nobody added, nobody removed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mokv_core::gossip::{Gossip, GossipConfig, GossipId};
use mokv_proto::api::{Server, Suffrage};
use mokv_tests::{gossip_sockets, metric, Bins, Certs, Mokvd, NodeSpec, DEADLINE, POLL};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::{TcpListener, UdpSocket};

/// The cluster key as `mokvd` derives it from the key file, and its datagram format
/// (`version || nonce || ciphertext || tag`, the version authenticated as associated data).
struct SealKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

const VERSION: u8 = 1;

impl SealKey {
    fn from_file(path: &Path) -> SealKey {
        let secret = std::fs::read_to_string(path).expect("reading the cluster key file");
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"mokv gossip key v1\0");
        ctx.update(secret.trim().as_bytes());
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, ctx.finish().as_ref()).expect("a 256-bit key");
        SealKey { key: LessSafeKey::new(unbound), rng: SystemRandom::new() }
    }

    fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("randomness");
        let mut body = payload.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([VERSION]),
                &mut body,
            )
            .expect("sealing");
        let mut out = vec![VERSION];
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    fn open(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        if datagram.len() < 1 + NONCE_LEN + 16 || datagram[0] != VERSION {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = datagram[1..1 + NONCE_LEN].try_into().ok()?;
        let mut body = datagram[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from([VERSION]), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// One forged gossip member: its own UDP socket, whatever identity it claims.
struct Forger {
    gossip: Gossip,
    socket: UdpSocket,
}

/// Runs the forgers' gossip (timers, sends, receives) until aborted.
async fn forge(mut forgers: Vec<Forger>, key: SealKey) {
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let now_ms = start.elapsed().as_millis() as u64;
        for f in &mut forgers {
            while let Ok((n, _)) = f.socket.try_recv_from(&mut buf) {
                if let Some(plain) = key.open(&buf[..n]) {
                    let _ = f.gossip.handle_datagram(&plain);
                }
            }
            f.gossip.handle_time(now_ms);
            while let Some(d) = f.gossip.poll_datagram() {
                if let Ok(to) = d.to.parse::<SocketAddr>() {
                    let _ = f.socket.send_to(&key.seal(&d.payload), to).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

fn voters_at(view: &[Server], real: &[(String, u64, String)]) -> bool {
    view.len() == real.len()
        && view.iter().filter(|s| s.is_leader).count() == 1
        && real.iter().all(|(name, raft_id, addr)| {
            view.iter().any(|s| {
                s.id == *name
                    && s.raft_id == *raft_id
                    && s.rpc_addr == *addr
                    && s.suffrage == Suffrage::Voter as i32
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_key_alone_cannot_remove_move_or_add_members() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().expect("temp dir");
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1", "n2", "n3"], &["root"]);
    let data = tmp.path().join("data");
    let sockets = gossip_sockets(3);
    let seed = sockets[0].local_addr().expect("bound").to_string();
    let mut nodes: Vec<Mokvd> = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let mut spec = NodeSpec::node(&certs, &data, &format!("n{}", i + 1))
            .with("--metrics-port", "0")
            .flag("--metrics-plain-http");
        spec = if i == 0 {
            spec.flag("--bootstrap")
        } else {
            spec.with("--start-join-addrs", seed.clone())
        };
        nodes.push(Mokvd::start_with_gossip_socket(&bins.mokvd, spec, socket));
    }
    let real: Vec<(String, u64, String)> =
        nodes.iter().map(|n| (n.name().to_owned(), n.raft_id, n.addr.clone())).collect();

    // Formed: every node lists the three voters at their real addresses.
    let start = Instant::now();
    let leader = loop {
        let mut leader = None;
        let mut all = true;
        for n in &nodes {
            match certs.servers(&n.addr).await {
                Some(view) if voters_at(&view, &real) => {
                    leader = view.iter().find(|s| s.is_leader).map(|s| s.id.clone());
                }
                _ => all = false,
            }
        }
        if all {
            break leader.expect("one leader");
        }
        assert!(start.elapsed() < DEADLINE, "the cluster did not form");
        tokio::time::sleep(POLL).await;
    };
    let l = nodes.iter().position(|n| n.name() == leader).expect("the leader is a node");
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let (v, w) = (&nodes[followers[0]], &nodes[followers[1]]);
    let leader_metrics = nodes[l].metrics_port.expect("started with --metrics-port");
    let proven = "mokv_gossip_verifications_total{result=\"proven\"}";
    let refused = "mokv_gossip_verifications_total{result=\"refused\"}";
    let proven_before = metric(leader_metrics, proven).await.unwrap_or(0.0);
    let refused_before = metric(leader_metrics, refused).await.unwrap_or(0.0);

    // Where the forged rpc addresses point: a port that takes connections and drops them.
    let trap = TcpListener::bind("127.0.0.1:0").await.expect("binding the trap");
    let trap_addr = trap.local_addr().expect("bound").to_string();
    let trap_task = tokio::spawn(async move {
        while let Ok((conn, _)) = trap.accept().await {
            drop(conn);
        }
    });

    let later = wall_ms() + 3_600_000;
    let gossip_seeds: Vec<String> = nodes.iter().map(|n| n.gossip_addr.clone()).collect();
    let mut forged: Vec<(GossipId, UdpSocket)> = Vec::new();
    let own_socket = || async { UdpSocket::bind("127.0.0.1:0").await.expect("forger socket") };
    // (a) A newer incarnation of voter v, at v's own gossip address, leaving.
    forged.push((
        GossipId {
            gossip_addr: v.gossip_addr.clone(),
            name: v.name().to_owned(),
            raft_id: v.raft_id,
            rpc_addr: v.addr.clone(),
            cluster_id: 0,
            started_ms: later,
            bump: 0,
            leaving: true,
        },
        own_socket().await,
    ));
    // (b) A newer incarnation of voter w at another rpc address.
    let s = own_socket().await;
    forged.push((
        GossipId {
            gossip_addr: s.local_addr().expect("bound").to_string(),
            name: w.name().to_owned(),
            raft_id: w.raft_id,
            rpc_addr: trap_addr.clone(),
            cluster_id: 0,
            started_ms: later,
            bump: 0,
            leaving: false,
        },
        s,
    ));
    // (c) Fresh identities.
    for k in 7..10u64 {
        let s = own_socket().await;
        forged.push((
            GossipId {
                gossip_addr: s.local_addr().expect("bound").to_string(),
                name: format!("n{k}"),
                raft_id: 0x5eed_0000 + k,
                rpc_addr: trap_addr.clone(),
                cluster_id: 0,
                started_ms: later,
                bump: 0,
                leaving: false,
            },
            s,
        ));
    }
    let forgers: Vec<Forger> = forged
        .into_iter()
        .enumerate()
        .map(|(i, (id, socket))| Forger {
            gossip: Gossip::new(&GossipConfig::new(id, gossip_seeds.clone()), i as u64),
            socket,
        })
        .collect();
    let forging = tokio::spawn(forge(forgers, SealKey::from_file(&certs.path("cluster.key"))));

    // The leader dialed the forged addresses and every one failed its proof (the moved w and
    // the three strangers), and it checked the leave with v itself, which answered.
    let start = Instant::now();
    loop {
        // Checked while the forgeries are heard, not only after: a node acting on one is
        // caught as soon as its view shows it.
        for n in &nodes {
            if let Some(view) = certs.servers(&n.addr).await {
                assert!(
                    voters_at(&view, &real),
                    "{}'s view during the forgeries (the trap is {trap_addr}): {view:?}",
                    n.name()
                );
            }
        }
        let r = metric(leader_metrics, refused).await.unwrap_or(0.0) - refused_before;
        let p = metric(leader_metrics, proven).await.unwrap_or(0.0) - proven_before;
        if r >= 4.0 && p >= 1.0 {
            eprintln!("leader verifications since the forgery: {r} refused, {p} proven");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the leader did not verify the forgeries: {r} refused, {p} proven since they began"
        );
        tokio::time::sleep(POLL).await;
    }
    // Nothing followed the forgeries: the three voters at their real addresses on every node,
    // no learner, no stranger.
    for n in &nodes {
        let view = certs.servers(&n.addr).await.expect("GetServers answers");
        assert!(voters_at(&view, &real), "{}'s view after the forgeries: {view:?}", n.name());
    }
    // The forgeries keep coming while the leader keeps refusing them.
    let refused_then = metric(leader_metrics, refused).await.unwrap_or(0.0);
    let start = Instant::now();
    while metric(leader_metrics, refused).await.unwrap_or(0.0) <= refused_then {
        assert!(start.elapsed() < DEADLINE, "no second round of refusals");
        tokio::time::sleep(POLL).await;
    }
    for n in &nodes {
        let view = certs.servers(&n.addr).await.expect("GetServers answers");
        assert!(voters_at(&view, &real), "{}'s view after more forgeries: {view:?}", n.name());
    }
    forging.abort();
    trap_task.abort();
}
