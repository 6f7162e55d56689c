//! The gossip socket: UDP on `bind-addr`. One task receives, opens (cluster key) and hands
//! datagrams to the driver; one task seals and sends what the core emits. Gossip is lossy by
//! design, so both directions drop rather than wait when a queue is full, and a datagram to a
//! name not resolved yet is dropped while its lookup runs in the background
//! ([`super::gossip_resolve`]).

use std::sync::Arc;

use mokv_core::gossip::{Datagram, MAX_DATAGRAM_BYTES};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::gossip_resolve::{system_lookup, Resolved, Resolver, LOOKUP_TIMEOUT};
use crate::security::gossip_crypto::{ClusterKey, OVERHEAD};

/// Datagrams waiting for the driver, and for the socket.
pub const GOSSIP_QUEUE: usize = 1024;

/// The running gossip socket tasks.
#[derive(Debug)]
pub struct GossipNet {
    pub outbound: mpsc::Sender<Datagram>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the receive and send tasks on `socket`; opened datagrams go to `inbound`.
pub fn spawn(socket: UdpSocket, key: ClusterKey, inbound: mpsc::Sender<Vec<u8>>) -> GossipNet {
    let socket = Arc::new(socket);
    let key = Arc::new(key);
    let (outbound, out_rx) = mpsc::channel(GOSSIP_QUEUE);
    let recv = tokio::spawn(receive(socket.clone(), key.clone(), inbound));
    let send = tokio::spawn(send(socket, key, out_rx));
    GossipNet { outbound, tasks: vec![recv, send] }
}

async fn receive(socket: Arc<UdpSocket>, key: Arc<ClusterKey>, inbound: mpsc::Sender<Vec<u8>>) {
    // Room for one sealed datagram of the largest size foca sends, plus slack to notice
    // oversized ones (they fail to open).
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + OVERHEAD + 512];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors of earlier sends surface here on some systems; keep receiving.
                tracing::debug!(error = %e, "gossip receive error");
                continue;
            }
        };
        match key.open(&buf[..n]) {
            Ok(plain) => {
                if inbound.try_send(plain).is_err() {
                    crate::metrics::gossip_dropped("inbound_full");
                }
            }
            Err(e) => {
                crate::metrics::gossip_dropped("unauthenticated");
                tracing::debug!(%from, error = %e, "gossip datagram refused");
            }
        }
    }
}

async fn send(socket: Arc<UdpSocket>, key: Arc<ClusterKey>, mut out: mpsc::Receiver<Datagram>) {
    let mut resolver = Resolver::new(system_lookup(), LOOKUP_TIMEOUT);
    loop {
        let d = tokio::select! {
            d = out.recv() => match d {
                Some(d) => d,
                None => return,
            },
            (name, ok) = resolver.finished() => {
                if !ok {
                    tracing::debug!(to = %name, "gossip address does not resolve");
                }
                continue;
            }
        };
        let addr = match resolver.addr(&d.to) {
            Resolved::Ready(a) => a,
            Resolved::Pending => {
                crate::metrics::gossip_dropped("resolving");
                continue;
            }
            Resolved::Busy => {
                crate::metrics::gossip_dropped("lookups_busy");
                continue;
            }
        };
        let Some(sealed) = key.seal(&d.payload) else {
            crate::metrics::gossip_dropped("no_randomness");
            continue;
        };
        if let Err(e) = socket.send_to(&sealed, addr).await {
            crate::metrics::gossip_dropped("send_failed");
            tracing::debug!(%addr, error = %e, "gossip send failed");
        }
    }
}
