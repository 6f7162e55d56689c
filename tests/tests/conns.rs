//! Connection and handshake bounds of the rpc port, with real `mokvd` processes over real TLS:
//! connections beyond a bound are closed at once and counted, a cert-less connection gets few
//! streams and a short life, and peers still get in while clients flood the bounds.
//!
//! Floods come from other loopback addresses (127.0.0.2, ...) than the nodes' own (127.0.0.1),
//! as an attacker's connections come from other hosts than the members'.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mokv_proto::api::cluster_client::ClusterClient;
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{MemberStatusRequest, SetRequest};
use mokv_tests::{eventually, metric, servers, Bins, Certs, Cluster, Mokvd, NodeSpec, DEADLINE};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// A rustls client (ALPN h2) trusting the CA of `certs`, presenting `who`'s certificate if
/// given.
fn tls_client(certs: &Certs, who: Option<&str>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&certs.read("ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match who {
        Some(w) => {
            let chain = CertificateDer::pem_slice_iter(&certs.read(&format!("{w}.pem")))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(&certs.read(&format!("{w}-key.pem"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TCP connection to `addr` from the loopback address `from` (e.g. "127.0.0.2").
async fn tcp_from(from: &str, addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// An HTTP/2 connection over TLS from `from` that the server took into service: the handshake
/// completed and the server's SETTINGS frame arrived (returned: its payload). `None` if the
/// server closed it instead.
async fn h2_from(
    from: &str,
    addr: &str,
    connector: &tokio_rustls::TlsConnector,
) -> Option<(Tls, Vec<u8>)> {
    let tcp = tcp_from(from, addr).await;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
        .await
        .expect("the handshake ends")
        .ok()?;
    tls.write_all(H2_PREFACE).await.ok()?;
    let mut header = [0u8; 9];
    tokio::time::timeout(DEADLINE, tls.read_exact(&mut header))
        .await
        .expect("the server's first frame or a close")
        .ok()?;
    assert_eq!(header[3], 4, "the server's first frame is SETTINGS");
    let len =
        (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.ok()?;
    Some((tls, payload))
}

/// The value of SETTINGS_MAX_CONCURRENT_STREAMS (0x3) in a SETTINGS payload.
fn max_concurrent_streams(settings: &[u8]) -> Option<u32> {
    settings.chunks_exact(6).find_map(|e| {
        (u16::from_be_bytes([e[0], e[1]]) == 3)
            .then(|| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
    })
}

/// Reads until the server closes the connection (end of file or a reset); panics if it is
/// still open after `bound`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, bound: Duration, what: &str) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // SETTINGS acks, pings, GOAWAY
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {bound:?}");
}

/// One bootstrapped node with `flags` and plain-HTTP metrics.
fn single_node(bins: &Bins, tmp: &std::path::Path, flags: &[(&str, &str)]) -> (Certs, Mokvd) {
    let certs = Certs::generate(bins, &tmp.join("certs"), &["n1"], &["root"]);
    let mut spec = NodeSpec::node(&certs, &tmp.join("data"), "n1")
        .flag("--bootstrap")
        .with("--metrics-port", "0")
        .flag("--metrics-plain-http");
    for (k, v) in flags {
        spec = spec.with(k, *v);
    }
    let node = Mokvd::start(&bins.mokvd, spec);
    (certs, node)
}

/// Opens more connections from one address than `max-connections-per-ip`: the extra one is
/// closed at once (before any TLS), counted under `per_ip`; another address still gets in, and
/// a closed connection frees its place.
#[tokio::test]
async fn connections_beyond_the_per_ip_bound_are_closed_and_counted() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    // Handshakes outlast the test's deadline: a connection closed within it was refused.
    let (certs, node) = single_node(
        &bins,
        tmp.path(),
        &[("--max-connections-per-ip", "3"), ("--tls-handshake-timeout-ms", "120000")],
    );
    let (addr, metrics) = (node.addr.clone(), node.metrics_port.unwrap());
    eventually("n1 serves", || async { certs.servers(&addr).await }).await;

    let anonymous = tls_client(&certs, None);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(h2_from("127.0.0.2", &addr, &anonymous).await.expect("within the bound"));
    }
    let mut extra = tcp_from("127.0.0.2", &addr).await;
    closed_within(&mut extra, DEADLINE, "a connection beyond the per-IP bound").await;
    assert!(h2_from("127.0.0.2", &addr, &anonymous).await.is_none(), "refused again");

    let refused = r#"mokv_connections_refused_total{reason="per_ip"}"#;
    eventually("two refusals counted", || async {
        metric(metrics, refused).await.filter(|n| *n >= 2.0)
    })
    .await;
    let open = r#"mokv_connections_open{class="anonymous"}"#;
    assert_eq!(metric(metrics, open).await, Some(3.0));
    // Another address is not affected.
    assert!(certs.servers(&addr).await.is_some(), "root from 127.0.0.1 is served");
    assert!(h2_from("127.0.0.3", &addr, &anonymous).await.is_some(), "127.0.0.3 gets in");

    // A closed connection frees its place.
    drop(held.pop());
    let again = eventually("a place from 127.0.0.2 again", || async {
        h2_from("127.0.0.2", &addr, &anonymous).await
    })
    .await;
    held.push(again);
}

/// A connection without a client certificate is offered few concurrent streams (a client's
/// gets the configured `max-concurrent-streams`) and is closed at its maximum age.
#[tokio::test]
async fn a_connection_without_a_certificate_has_few_streams_and_a_short_life() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = single_node(
        &bins,
        tmp.path(),
        &[
            ("--anonymous-connection-max-age-ms", "1000"),
            ("--anonymous-max-concurrent-streams", "2"),
            ("--max-concurrent-streams", "100"),
        ],
    );
    let addr = node.addr.clone();
    eventually("n1 serves", || async { certs.servers(&addr).await }).await;

    let (mut anon, settings) =
        h2_from("127.0.0.1", &addr, &tls_client(&certs, None)).await.expect("served");
    assert_eq!(max_concurrent_streams(&settings), Some(2), "cert-less: few streams");
    let (_root, settings) =
        h2_from("127.0.0.1", &addr, &tls_client(&certs, Some("root"))).await.expect("served");
    assert_eq!(max_concurrent_streams(&settings), Some(100), "with a certificate");

    // Max age 1 s (GOAWAY), closed a second later at the latest; the bound is slack.
    closed_within(&mut anon, Duration::from_secs(10), "a cert-less connection past its age").await;
    let m = node.metrics_port.unwrap();
    eventually("root's connection open, the cert-less one gone", || async {
        let client = metric(m, r#"mokv_connections_open{class="client"}"#).await?;
        let anonymous = metric(m, r#"mokv_connections_open{class="anonymous"}"#).await?;
        (client == 1.0 && anonymous == 0.0).then_some(())
    })
    .await;
}

/// Sets `key` through `kv` (a connection made before the flood).
async fn set(kv: &mut KvClient<Channel>, key: &str) -> Result<(), tonic::Status> {
    let req = SetRequest {
        key: key.into(),
        value: b"v".to_vec(),
        session: None,
        condition: None,
        lease: 0,
    };
    kv.set(req).await.map(|_| ())
}

/// `mokv_connections_refused_total{reason}` on the metrics port `m` (0 before any refusal).
async fn refused(m: u16, reason: &str) -> f64 {
    let sample = format!("mokv_connections_refused_total{{reason=\"{reason}\"}}");
    metric(m, &sample).await.expect("the refusal counters are exported")
}

/// Milliseconds since the node behind `cluster` last received a Raft message from `name`.
async fn last_contact_ms(cluster: &ClusterClient<Channel>, name: &str) -> Option<u64> {
    let mut cluster = cluster.clone();
    let r =
        tokio::time::timeout(Duration::from_secs(1), cluster.member_status(MemberStatusRequest {}))
            .await
            .ok()?
            .ok()?;
    r.into_inner().members.into_iter().find(|m| m.name == name)?.last_contact_ms
}

/// Floods the live nodes' bounds from other addresses and from the test's own (a member's)
/// address: every handshake place is held by stalled handshakes from 127.0.0.2 and every
/// client connection place by those and by root's connections. A follower restarted during
/// the flood still gets its peer links in (a member's address has reserved handshakes, a
/// member's node certificate is not bound by the client limits): the leader receives its Raft
/// messages, and when the leader is killed it and the other flooded node elect a new one.
#[tokio::test]
async fn peers_get_in_while_clients_flood_the_bounds() {
    let bins = Bins::get();
    let mut c = Cluster::start(
        bins,
        &[
            ("--max-tls-handshakes", "3"),
            ("--max-client-connections", "8"),
            ("--tls-handshake-timeout-ms", "120000"),
            ("--metrics-port", "0"),
            ("--metrics-plain-http", "true"),
        ],
    )
    .await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let follower_name = c.nodes[follower].name().to_owned();
    c.nodes[follower].kill();
    // Root's connections to the two flooded nodes, made before the flood.
    let channel = |i: usize| c.certs.channel(&c.nodes[i].addr, Some("root"));
    let mut kv = KvClient::new(channel(leader));
    let status = ClusterClient::new(channel(leader));
    set(&mut kv, "before").await.expect("a write with two of three");
    let contact = last_contact_ms(&status, &follower_name).await;
    assert!(contact.is_some(), "the leader heard from the follower before it was killed");

    let mut flood = Vec::new();
    let mut held = Vec::new();
    for i in [leader, other] {
        let addr = c.nodes[i].addr.clone();
        let m = c.nodes[i].metrics_port.unwrap();
        // Stalled handshakes (a TCP connection that never says hello) from 127.0.0.2 until
        // every handshake place is held and one more is closed at once.
        let handshakes = r#"mokv_connections_open{class="handshake"}"#;
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(
                attempts <= 12,
                "{}: the flood does not hold every handshake place",
                c.nodes[i].name()
            );
            let before = refused(m, "handshakes").await;
            let mut s = tcp_from("127.0.0.2", &addr).await;
            let mut b = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
                Err(_) => flood.push(s),
                Ok(_) => {
                    // Closed at once: counted, and every handshake place is held.
                    assert!(refused(m, "handshakes").await > before, "a refusal is counted");
                    if metric(m, handshakes).await == Some(3.0) {
                        break;
                    }
                }
            }
        }
        // Root's connections from 127.0.0.1 until one is refused for the client bound.
        let before = refused(m, "total").await;
        loop {
            assert!(held.len() <= 16, "{} accepts every client connection", c.nodes[i].name());
            let kv = KvClient::new(c.certs.channel(&addr, Some("root")));
            if servers(&kv).await.is_none() && refused(m, "total").await > before {
                break;
            }
            held.push(kv);
        }
        let anonymous = tls_client(&c.certs, None);
        assert!(h2_from("127.0.0.3", &addr, &anonymous).await.is_none(), "others are refused");
    }

    let restarted = Instant::now();
    c.nodes[follower].restart();
    set(&mut kv, "during").await.expect("a write during the flood");
    // The leader hears from the restarted node: its peer link got in.
    eventually("the restarted node's Raft messages reach the leader", || async {
        let ms = last_contact_ms(&status, &follower_name).await?;
        (u128::from(ms) < restarted.elapsed().as_millis()).then_some(())
    })
    .await;

    // Failover: the survivors elect a leader, which takes messages both ways between them, so
    // the restarted node's link into the other flooded node got in too.
    c.nodes[leader].kill();
    let ports = [c.nodes[follower].metrics_port.unwrap(), c.nodes[other].metrics_port.unwrap()];
    eventually("a new leader among the flooded node and the restarted one", || async {
        for p in ports {
            if metric(p, "mokv_is_leader").await == Some(1.0) {
                return Some(());
            }
        }
        None
    })
    .await;
    drop((flood, held));
}
