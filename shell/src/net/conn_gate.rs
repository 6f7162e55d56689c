//! Admission of the rpc port's connections: bounds on TLS handshakes and open connections, by
//! connection class, so that a flood of clients (or of callers without a certificate) cannot
//! exhaust the node and cannot lock its peers out.
//!
//! Classes ([`ConnClass`]), decided once the handshake has verified the client certificate:
//! - `peer`: a node certificate (server auth) whose CN is the name of a current member. Not
//!   subject to the client bounds: Raft links always get in.
//! - `client`: any other verified certificate.
//! - `anonymous`: no certificate. Only health and reflection answer it; it is served by a
//!   server with few streams per connection and a maximum connection age (see
//!   [`crate::node::server`]).
//!
//! Bounds:
//! - Concurrent TLS handshakes (`max-tls-handshakes`), each bounded in time
//!   (`tls-handshake-timeout-ms`). A connection from the IP address of a current member (its
//!   peer address, when that is an IP literal) that finds them all taken may use
//!   [`PEER_HANDSHAKE_RESERVE`] more, so that a handshake flood from elsewhere does not keep a
//!   restarted peer from reconnecting.
//! - Open `client` and `anonymous` connections, in total (`max-client-connections`) and per
//!   source IP (`max-connections-per-ip`). A connection from a non-member IP counts from the
//!   moment it is accepted (its handshake included), so a flood is refused before any TLS work;
//!   one from a member IP counts once its handshake shows it is not a member's peer link.
//!
//! Beyond a bound the TCP connection is closed at once, counted in
//! `mokv_connections_refused_total{reason}` (`handshakes`, `per_ip`, `total`) and logged at
//! most once per [`REFUSAL_LOG_INTERVAL`]. `mokv_connections_open{class}` (plus
//! `handshake` for the handshakes in progress) is the number of connections open now.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::security::identity::Identity;

/// Handshakes beyond `max-tls-handshakes` allowed to connections from members' addresses.
pub const PEER_HANDSHAKE_RESERVE: usize = 16;
/// At most one log line about refused connections per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds (settings of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Concurrent TLS handshakes.
    pub max_tls_handshakes: usize,
    /// Bound on one TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Open connections that are not members' peer links.
    pub max_client_connections: usize,
    /// Open connections that are not members' peer links, per source IP.
    pub max_connections_per_ip: usize,
}

/// Who a connection is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnClass {
    /// A current member's node certificate.
    Peer,
    /// Another verified certificate.
    Client,
    /// No certificate.
    Anonymous,
}

impl ConnClass {
    /// The `class` label of `mokv_connections_open`.
    pub fn label(self) -> &'static str {
        match self {
            ConnClass::Peer => "peer",
            ConnClass::Client => "client",
            ConnClass::Anonymous => "anonymous",
        }
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Refusal {
    /// `max-tls-handshakes` (and, for a member's address, the reserve) in progress.
    Handshakes,
    /// `max-connections-per-ip` open from its address.
    PerIp,
    /// `max-client-connections` open.
    Total,
}

impl Refusal {
    /// The `reason` label of `mokv_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Handshakes => "handshakes",
            Refusal::PerIp => "per_ip",
            Refusal::Total => "total",
        }
    }

    /// Every reason, for registering the counters at zero.
    pub const ALL: [Refusal; 3] = [Refusal::Handshakes, Refusal::PerIp, Refusal::Total];
}

/// What the gate asks about the cluster: is this name a current member, is this address one
/// of a current member's.
pub trait Membership: Send + Sync + 'static {
    /// Whether `name` is the name of a current member (voter or learner).
    fn is_member_name(&self, name: &str) -> bool;
    /// Whether `ip` is the address of a current member's peer port.
    fn is_member_ip(&self, ip: IpAddr) -> bool;
}

/// The admission state of the rpc port (shared by the accept loop and every connection).
pub struct ConnGate {
    limits: ConnLimits,
    members: Box<dyn Membership>,
    state: Mutex<State>,
}

impl std::fmt::Debug for ConnGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGate").field("limits", &self.limits).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    handshakes: usize,
    reserved_handshakes: usize,
    /// Counted (client-bound) connections: open `client`/`anonymous` ones and handshakes from
    /// non-member addresses.
    counted: usize,
    /// The same, by source IP (no entry at zero: as many entries as counted connections).
    per_ip: BTreeMap<IpAddr, usize>,
    open: BTreeMap<ConnClass, usize>,
    log: RefusalLog,
}

/// Refusals since the last log line.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: BTreeMap<Refusal, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    General,
    Reserved,
}

impl ConnGate {
    /// A gate with these bounds, asking `members` about the cluster.
    pub fn new(limits: ConnLimits, members: impl Membership) -> Arc<ConnGate> {
        for r in Refusal::ALL {
            metrics::counter!("mokv_connections_refused_total", "reason" => r.label()).increment(0);
        }
        let gate = ConnGate { limits, members: Box::new(members), state: Mutex::default() };
        gate.lock().publish();
        Arc::new(gate)
    }

    /// The bounds.
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A TCP connection from `ip` was accepted: may its TLS handshake start? `Err`: close it.
    pub fn accept(self: &Arc<Self>, ip: IpAddr) -> Result<Handshake, Refusal> {
        let member_ip = self.members.is_member_ip(ip);
        let mut s = self.lock();
        let slot = if s.handshakes < self.limits.max_tls_handshakes {
            Slot::General
        } else if member_ip && s.reserved_handshakes < PEER_HANDSHAKE_RESERVE {
            Slot::Reserved
        } else {
            return Err(s.refuse(Refusal::Handshakes));
        };
        let counted = !member_ip;
        if counted {
            s.count(ip, &self.limits)?;
        }
        match slot {
            Slot::General => s.handshakes += 1,
            Slot::Reserved => s.reserved_handshakes += 1,
        }
        s.publish();
        Ok(Handshake { gate: self.clone(), ip, slot: Some(slot), counted })
    }
}

impl State {
    /// Counts one client-bound connection from `ip`, or refuses it.
    fn count(&mut self, ip: IpAddr, limits: &ConnLimits) -> Result<(), Refusal> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
            return Err(self.refuse(Refusal::PerIp));
        }
        if self.counted >= limits.max_client_connections {
            return Err(self.refuse(Refusal::Total));
        }
        self.counted += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        Ok(())
    }

    fn uncount(&mut self, ip: IpAddr) {
        self.counted = self.counted.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn refuse(&mut self, why: Refusal) -> Refusal {
        metrics::counter!("mokv_connections_refused_total", "reason" => why.label()).increment(1);
        *self.log.unlogged.entry(why).or_default() += 1;
        let due = self.log.last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            self.log.last = Some(Instant::now());
            let refused = std::mem::take(&mut self.log.unlogged);
            let summary: Vec<String> =
                refused.iter().map(|(r, n)| format!("{}={n}", r.label())).collect();
            tracing::warn!(
                refused = %summary.join(","),
                open_client_connections = self.counted,
                handshakes = self.handshakes + self.reserved_handshakes,
                "connection limits reached: connections closed at once"
            );
        }
        why
    }

    fn publish(&self) {
        let g = |class: &'static str, n: usize| {
            metrics::gauge!("mokv_connections_open", "class" => class).set(n as f64);
        };
        for class in [ConnClass::Peer, ConnClass::Client, ConnClass::Anonymous] {
            g(class.label(), self.open.get(&class).copied().unwrap_or(0));
        }
        g("handshake", self.handshakes + self.reserved_handshakes);
    }
}

/// A TLS handshake in progress (releases its place when dropped).
#[derive(Debug)]
pub struct Handshake {
    gate: Arc<ConnGate>,
    ip: IpAddr,
    slot: Option<Slot>,
    counted: bool,
}

impl Handshake {
    /// The handshake succeeded with the client certificate's identity (`None`: no certificate):
    /// the connection's class decides whether it stays. `Err`: close it.
    pub fn finish(mut self, identity: Option<&Identity>) -> Result<ConnPermit, Refusal> {
        let gate = self.gate.clone();
        let class = match identity {
            None => ConnClass::Anonymous,
            Some(id) if id.is_node && gate.members.is_member_name(&id.name) => ConnClass::Peer,
            Some(_) => ConnClass::Client,
        };
        let mut s = gate.lock();
        self.release_slot(&mut s);
        let counted = match (class, self.counted) {
            (ConnClass::Peer, true) => {
                s.uncount(self.ip);
                false
            }
            (ConnClass::Peer, false) => false,
            (_, true) => true,
            (_, false) => {
                if let Err(r) = s.count(self.ip, &gate.limits) {
                    s.publish();
                    return Err(r);
                }
                true
            }
        };
        // Handed over to the permit.
        self.counted = false;
        *s.open.entry(class).or_default() += 1;
        s.publish();
        Ok(ConnPermit { gate: gate.clone(), ip: self.ip, class, counted })
    }

    fn release_slot(&mut self, s: &mut State) {
        match self.slot.take() {
            Some(Slot::General) => s.handshakes -= 1,
            Some(Slot::Reserved) => s.reserved_handshakes -= 1,
            None => {}
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if self.slot.is_none() && !self.counted {
            return;
        }
        let gate = self.gate.clone();
        let mut s = gate.lock();
        self.release_slot(&mut s);
        if self.counted {
            s.uncount(self.ip);
        }
        s.publish();
    }
}

/// An admitted connection: held while it is open.
#[derive(Debug)]
pub struct ConnPermit {
    gate: Arc<ConnGate>,
    ip: IpAddr,
    class: ConnClass,
    counted: bool,
}

impl ConnPermit {
    /// The connection's class.
    pub fn class(&self) -> ConnClass {
        self.class
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        if self.counted {
            s.uncount(self.ip);
        }
        if let Some(n) = s.open.get_mut(&self.class) {
            *n = n.saturating_sub(1);
        }
        s.publish();
    }
}

/// The node's own view of the cluster: the replicated member table, and each member's peer
/// address there and in its newest gossip incarnation.
impl Membership for crate::node::driver::DriverHandle {
    fn is_member_name(&self, name: &str) -> bool {
        self.with_view(|v| v.members.values().any(|m| m.name == name))
    }

    fn is_member_ip(&self, ip: IpAddr) -> bool {
        self.with_view(|v| {
            v.members.iter().any(|(id, m)| {
                ip_of(&m.peer_addr) == Some(ip)
                    || v.directory
                        .get(*id)
                        .and_then(|e| e.peer_addr.as_deref())
                        .is_some_and(|a| ip_of(a) == Some(ip))
            })
        })
    }
}

/// The IP of `ip:port` (`[v6]:port` too); `None` for a host name (never resolved here).
fn ip_of(addr: &str) -> Option<IpAddr> {
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Members;

    impl Membership for Members {
        fn is_member_name(&self, name: &str) -> bool {
            name == "n1"
        }
        fn is_member_ip(&self, ip: IpAddr) -> bool {
            ip == IpAddr::from([10, 0, 0, 1])
        }
    }

    fn gate(handshakes: usize, total: usize, per_ip: usize) -> Arc<ConnGate> {
        ConnGate::new(
            ConnLimits {
                max_tls_handshakes: handshakes,
                tls_handshake_timeout: Duration::from_secs(1),
                max_client_connections: total,
                max_connections_per_ip: per_ip,
            },
            Members,
        )
    }

    const MEMBER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8));

    fn node(name: &str) -> Identity {
        Identity { name: name.into(), is_node: true }
    }

    #[test]
    fn per_ip_and_total_bounds_refuse_and_release() {
        let g = gate(100, 3, 2);
        let a1 = g.accept(A).unwrap().finish(None).unwrap();
        let _a2 = g.accept(A).unwrap().finish(None).unwrap();
        assert_eq!(g.accept(A).unwrap_err(), Refusal::PerIp);
        let _b1 = g.accept(B).unwrap();
        assert_eq!(g.accept(B).unwrap_err(), Refusal::Total);
        drop(a1);
        let _a3 = g.accept(A).unwrap();
        assert_eq!(g.lock().counted, 3);
    }

    #[test]
    fn a_members_peer_link_is_not_counted_and_a_member_address_has_reserved_handshakes() {
        let g = gate(1, 1, 1);
        // A flood from elsewhere holds every bound.
        let _flood = g.accept(A).unwrap();
        assert_eq!(g.accept(B).unwrap_err(), Refusal::Handshakes);
        // The member's address still handshakes, and its node certificate gets in.
        let hs = g.accept(MEMBER).unwrap();
        let peer = hs.finish(Some(&node("n1"))).unwrap();
        assert_eq!(peer.class(), ConnClass::Peer);
        // A node certificate of a non-member from a member address is a client: refused
        // while the client bounds are full.
        let hs = g.accept(MEMBER).unwrap();
        assert_eq!(hs.finish(Some(&node("intruder"))).unwrap_err(), Refusal::Total);
        let s = g.lock();
        assert_eq!((s.handshakes, s.reserved_handshakes, s.counted), (1, 0, 1));
    }

    #[test]
    fn a_peer_from_a_counted_address_is_uncounted_after_its_handshake() {
        let g = gate(10, 1, 1);
        let hs = g.accept(A).unwrap();
        assert_eq!(g.lock().counted, 1);
        let peer = hs.finish(Some(&node("n1"))).unwrap();
        assert_eq!(g.lock().counted, 0);
        let _client = g.accept(A).unwrap().finish(None).unwrap();
        drop(peer);
        let s = g.lock();
        assert_eq!((s.counted, s.per_ip.len(), s.handshakes), (1, 1, 0));
        assert_eq!(s.open.get(&ConnClass::Peer), Some(&0));
    }
}
