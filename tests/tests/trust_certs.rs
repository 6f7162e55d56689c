//! Certificates as a trust boundary, on real `mokvd` processes: bounded lifetimes and their
//! expiry metric, revocation through a CRL (refused after the reload, open connections
//! closed), a peer-certificate reload that cannot cut a node off, opaque `Range` page tokens,
//! and `/metrics` over TLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mokv_proto::api::RangeRequest;
use mokv_tests::{eventually, scrape_metrics, Bins, Certs, Cluster, Mokvd, NodeSpec};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Runs `mokvd certs --out DIR` with `args`.
fn mokvd_certs(bins: &Bins, dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(&bins.mokvd)
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .args(args)
        .output()
        .expect("running mokvd certs");
    assert!(out.status.success(), "mokvd certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A rustls client trusting the CA of `certs`, presenting `who`'s certificate if given.
fn tls_client(certs: &Certs, who: Option<&str>, alpn: &[u8]) -> tokio_rustls::TlsConnector {
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
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET /metrics` over HTTPS on 127.0.0.1:`port`: the status line and the body; `None` if the
/// connection or handshake failed.
async fn scrape_https(certs: &Certs, who: Option<&str>, port: u16) -> Option<(String, String)> {
    let connector = tls_client(certs, who, b"http/1.1");
    let scrape = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut s = connector.connect(ServerName::try_from("localhost").ok()?, tcp).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.ok()?;
        let mut text = Vec::new();
        // A server that closes without close_notify still delivered what it sent.
        let _ = s.read_to_end(&mut text).await;
        let text = String::from_utf8(text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_owned(), body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), scrape).await.ok()?
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// One bootstrapped node with certificate `n1` and `extra` flags.
fn one_node(bins: &Bins, certs: &Certs, data: &Path, extra: &[(&str, String)]) -> Mokvd {
    let mut spec = NodeSpec::node(certs, data, "n1").flag("--bootstrap");
    for (k, v) in extra {
        spec = spec.with(k, v);
    }
    Mokvd::start(&bins.mokvd, spec)
}

/// Revoking `root` in the CRL: the node reloads it, closes root's open connection at once,
/// refuses root's new connections, and keeps serving the others.
#[tokio::test]
async fn revoked_client_certificate_is_refused_and_its_open_connection_closed() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1"], &["root", "nobody"]);
    // A CRL in force from the start (it revokes a certificate nobody uses).
    mokvd_certs(&bins, &certs.dir, &["--client", "old", "--revoke", "old"]);
    let crl = certs.path("crl.pem");
    let node = one_node(
        &bins,
        &certs,
        &tmp.path().join("data"),
        &[("--server-tls-crl-file", crl.display().to_string())],
    );
    let addr = node.addr.clone();
    // The revoked certificate is refused from the start; root is served.
    eventually("root served", || async { certs.servers(&addr).await }).await;
    let old = mokv_proto::api::kv_client::KvClient::new(certs.channel(&addr, Some("old")));
    assert!(mokv_tests::servers(&old).await.is_none(), "a revoked certificate is refused");

    // An open HTTP/2 connection as root.
    let connector = tls_client(&certs, Some("root"), b"h2");
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut conn =
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("the server's SETTINGS")
        .expect("reading the connection");
    assert!(n > 0, "the server answered the preface");
    assert_eq!(node.output_count("no longer trusted"), 0);

    mokvd_certs(&bins, &certs.dir, &["--revoke", "root"]);

    // The reload closes the open connection: reads end (EOF or error) and the node says why.
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // SETTINGS ack, pings
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "root's open connection was not closed after the CRL reload");
    eventually("the node's word that it closed root's connection", || async {
        node.output_contains("closed connections whose client certificate is no longer trusted")
            .then_some(())
    })
    .await;
    // New connections as root are refused; other clients still connect (nobody: denied by the
    // policy, which takes a completed handshake).
    assert!(certs.servers(&addr).await.is_none(), "root is refused after the reload");
    let mut nobody =
        mokv_proto::api::kv_client::KvClient::new(certs.channel(&addr, Some("nobody")));
    let denied = nobody
        .get(mokv_proto::api::GetRequest { key: "k".into(), consistency: 0 })
        .await
        .expect_err("nobody may not read");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
}

/// A mismatched or half-written key in every node's certificate files: each node refuses the
/// reload, keeps its previous identity, and the cluster keeps committing writes.
#[tokio::test]
async fn half_written_peer_key_is_refused_and_the_node_keeps_its_peers() {
    let bins = Bins::get();
    let cluster = Cluster::start(bins, &[]).await;
    let client = cluster.client();
    client.set("before", b"1").await.expect("a write before the reload");
    // n1: another node's key (does not match its certificate); n2, n3: half-written keys.
    let n2_key = cluster.certs.read("n2-key.pem");
    std::fs::write(cluster.certs.path("n1-key.pem"), &n2_key).unwrap();
    for n in ["n2", "n3"] {
        let path = cluster.certs.path(&format!("{n}-key.pem"));
        let key = std::fs::read(&path).unwrap();
        std::fs::write(&path, &key[..key.len() / 2]).unwrap();
    }
    for i in 0..3 {
        let node = &cluster.nodes[i];
        eventually("the peer reload refused", || async {
            node.output_contains("peer certificate reload refused").then_some(())
        })
        .await;
    }
    // Links are rebuilt on a new peer identity; the refused one never reached them. Leadership
    // may move meanwhile (the library client follows it); the write must commit on all three.
    eventually("a write after the refused reload", || async {
        client.set("after", b"2").await.ok()
    })
    .await;
    for addr in cluster.addrs() {
        let c = cluster.certs.client(&[addr]);
        let got = eventually("the write on every node", || {
            let c = &c;
            async move { c.get("after", mokv_client::ReadMode::Linearizable).await.ok().flatten() }
        })
        .await;
        assert_eq!(got.value, b"2");
    }
}

/// `Range` page tokens name no key, and continue on another node of the cluster.
#[tokio::test]
async fn page_tokens_are_opaque_and_work_on_any_node() {
    let bins = Bins::get();
    let cluster = Cluster::start(bins, &[]).await;
    let client = cluster.client();
    for k in ["p/secret-alpha", "p/secret-beta", "p/secret-gamma"] {
        client.set(k, b"v").await.unwrap();
    }
    let mut kv1 = cluster.certs.kv(&cluster.nodes[0].addr);
    let first = kv1
        .range(RangeRequest {
            prefix: "p/".into(),
            limit: 1,
            consistency: 0,
            ..RangeRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.kvs.len(), 1);
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let hex: String = "p/secret-alpha".bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !token.contains(&hex) && !token.contains("secret"),
        "the page token reveals the key: {token}"
    );
    let mut kv2 = cluster.certs.kv(&cluster.nodes[1].addr);
    let second = kv2
        .range(RangeRequest {
            prefix: "p/".into(),
            limit: 1,
            page_token: token.clone(),
            consistency: 0,
            ..RangeRequest::default()
        })
        .await
        .expect("the token continues on another node")
        .into_inner();
    assert_eq!(second.kvs[0].key, "p/secret-beta");
    // Tampered, or for another prefix: INVALID_ARGUMENT.
    let bad = kv2
        .range(RangeRequest {
            prefix: "q/".into(),
            limit: 1,
            page_token: token,
            ..RangeRequest::default()
        })
        .await
        .expect_err("a token for another prefix");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// `/metrics` is HTTPS with the node's certificate by default (plain HTTP gets nothing), shows
/// the time left on each certificate (and warns below 30 days), and with
/// `metrics-client-auth` answers only scrapers with a certificate from the cluster CA.
#[tokio::test]
async fn metrics_over_tls_with_cert_expiry_and_optional_client_auth() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &[], &["root"]);
    // A node certificate that expires in 10 days: below the 30-day warning threshold.
    mokvd_certs(&bins, &certs.dir, &["--node", "n1", "--days", "10"]);
    let node = one_node(&bins, &certs, &tmp.path().join("a"), &[("--metrics-port", "0".into())]);
    let port = node.metrics_port.expect("started with --metrics-port");
    let (status, body) =
        eventually("an HTTPS scrape", || async { scrape_https(&certs, None, port).await }).await;
    assert!(status.contains("200"), "{status}");
    let server = sample(&body, "mokv_tls_cert_expiry_seconds{role=\"server\"}").expect("server");
    let ca = sample(&body, "mokv_tls_cert_expiry_seconds{role=\"ca\"}").expect("ca");
    assert!(sample(&body, "mokv_tls_cert_expiry_seconds{role=\"peer\"}").is_some());
    let day = 86_400.0;
    assert!((9.0 * day..=10.0 * day).contains(&server), "server cert: {server} s");
    assert!((3649.0 * day..=3650.0 * day).contains(&ca), "CA: {ca} s");
    assert!(node.output_contains("certificate expires soon"), "{}", node.log_tail(20));
    assert!(
        scrape_metrics(port, Duration::from_secs(2)).await.is_none(),
        "plain HTTP is not served unless asked for"
    );
    drop(node);

    let node = one_node(
        &bins,
        &certs,
        &tmp.path().join("b"),
        &[("--metrics-port", "0".into()), ("--metrics-client-auth", "true".into())],
    );
    let port = node.metrics_port.expect("started with --metrics-port");
    let (status, body) = eventually("an HTTPS scrape with root's certificate", || async {
        scrape_https(&certs, Some("root"), port).await
    })
    .await;
    assert!(status.contains("200") && body.contains("mokv_tls_cert_expiry_seconds"), "{status}");
    let (status, _) = scrape_https(&certs, None, port).await.expect("an answer");
    assert!(status.contains("403"), "a scraper without a certificate: {status}");
    drop(node);
}
