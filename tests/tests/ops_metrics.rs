//! The dashboard and the alert rules in `deploy/` cannot rot: a live three-node cluster
//! (real `mokvd` processes, `/metrics` over HTTPS as by default) is scraped after some writes,
//! reads and a refused request, and every metric named by a Grafana panel or an alert rule
//! must be among the series the nodes export, with its HELP text.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mokv_proto::api::GetRequest;
use mokv_tests::{Bins, Certs, Cluster};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long the series may take to appear (the driver publishes the core's statistics a few
/// times a second; per-peer series need a leader that has heard from its followers).
const SERIES_DEADLINE: Duration = Duration::from_secs(30);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy")
}

/// Every `mokv_*` metric name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("mokv_") {
        let start = i + at;
        let boundary = start == 0 || !is_name_byte(bytes[start - 1]);
        let mut end = start;
        while end < bytes.len() && is_name_byte(bytes[end]) {
            end += 1;
        }
        if boundary {
            into.insert(expr[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The metric names of every panel query (and the dashboard's variable queries), and how
/// many panel queries there were.
fn dashboard_names(path: &Path) -> (BTreeSet<String>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    // What Grafana's import needs: a title, a uid, panels each with a type and a position.
    assert!(json["title"].is_string() && json["uid"].is_string(), "title and uid");
    let panels = json["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        assert!(p["type"].is_string() && p["gridPos"].is_object(), "panel {p}");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel ids are unique");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target has an expr");
            metric_names(expr, &mut names);
            queries += 1;
        }
    }
    for v in json["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            metric_names(q, &mut names);
        }
    }
    (names, queries)
}

/// The metric names of every alert rule, and the rule names.
fn alert_names(path: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("the rules are YAML");
    let mut names = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for group in yaml["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("an alerting rule");
            let expr = rule["expr"].as_str().expect("a rule has an expr");
            metric_names(expr, &mut names);
            alerts.insert(alert.to_owned());
        }
    }
    (names, alerts)
}

/// `GET /metrics` over HTTPS (trusting the cluster CA, no client certificate): the body of a
/// 200 answer; `None` otherwise.
async fn scrape_https(certs: &Certs, port: u16) -> Option<String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&certs.read("ca.pem")) {
        roots.add(c.ok()?).ok()?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let scrape = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut s = connector.connect(ServerName::try_from("localhost").ok()?, tcp).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.ok()?;
        let mut text = Vec::new();
        let _ = s.read_to_end(&mut text).await;
        let text = String::from_utf8(text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), scrape).await.ok()?
}

/// Sample names (`name` of `name{labels} value`) and the names with a `# HELP` line.
fn exported(text: &str, samples: &mut BTreeSet<String>, helped: &mut BTreeSet<String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(name) = rest.split_whitespace().next() {
                helped.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
}

/// The name a HELP line is written under: a histogram's or summary's base name.
fn base_name(sample: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| sample.strip_suffix(s)).unwrap_or(sample)
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let (panel_names, queries) = dashboard_names(&deploy_dir().join("grafana-dashboard.json"));
    let (alert_metric_names, alerts) = alert_names(&deploy_dir().join("prometheus-alerts.yml"));
    assert!(queries >= 20, "the dashboard's panels were read: {queries} queries");
    for wanted in [
        "MokvNoLeader",
        "MokvLeaderFlapping",
        "MokvApplyLagGrowing",
        "MokvFsyncSlow",
        "MokvMemberDown",
        "MokvCertificateExpiring",
        "MokvQuotaNearFull",
    ] {
        assert!(alerts.contains(wanted), "alert {wanted} in {alerts:?}");
    }
    let used: BTreeSet<String> = panel_names.union(&alert_metric_names).cloned().collect();
    assert!(used.len() >= 30, "metric names were read: {used:?}");

    let bins = Bins::get();
    let mut cluster =
        Cluster::start(bins, &[("--metrics-port", "0"), ("--quota-state-bytes", "100000000")])
            .await;
    let client = cluster.client();
    for i in 0..20 {
        client.set(&format!("ops/{i}"), b"value").await.expect("write");
    }
    for i in 0..20 {
        let got = client.get(&format!("ops/{i}"), mokv_client::ReadMode::Linearizable).await;
        assert!(got.expect("read").is_some());
    }
    // A refused request: `nobody` may not read (authorization denials by rpc).
    let leader = cluster.leader().await;
    let addr = cluster.nodes[leader].addr.clone();
    let mut nobody =
        mokv_proto::api::kv_client::KvClient::new(cluster.certs.channel(&addr, Some("nobody")));
    let refused = nobody.get(GetRequest { key: "ops/1".into(), consistency: 0 }).await;
    assert_eq!(refused.expect_err("nobody is refused").code(), tonic::Code::PermissionDenied);

    let ports: Vec<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.metrics_port.expect("started with --metrics-port"))
        .collect();
    let started = Instant::now();
    loop {
        let (mut samples, mut helped) = (BTreeSet::new(), BTreeSet::new());
        for port in &ports {
            if let Some(text) = scrape_https(&cluster.certs, *port).await {
                exported(&text, &mut samples, &mut helped);
            }
        }
        let missing: Vec<&String> = used.iter().filter(|n| !samples.contains(*n)).collect();
        let no_help: Vec<&String> =
            used.iter().filter(|n| !helped.contains(base_name(n))).collect();
        if missing.is_empty() && no_help.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < SERIES_DEADLINE,
            "used by the dashboard or the alerts but not exported: {missing:?}; \
             without HELP text: {no_help:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The memory gauges hold real readings: jemalloc's live bytes within its resident pages,
    // and a process RSS above what the allocator alone holds resident.
    let text = scrape_https(&cluster.certs, ports[0]).await.expect("a scrape of node 1");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in the scrape"))
    };
    let allocated = value("mokv_allocator_allocated_bytes");
    let resident = value("mokv_allocator_resident_bytes");
    let process = value("mokv_process_resident_bytes");
    assert!(allocated > 1e6, "jemalloc holds some allocations: {allocated}");
    assert!(resident >= allocated, "resident {resident} < allocated {allocated}");
    assert!(process >= resident, "process RSS {process} < allocator resident {resident}");
}

#[test]
fn metric_names_are_found_in_promql() {
    let mut names = BTreeSet::new();
    metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(mokv_a_seconds_bucket{x=\"y\"}[5m]))) / mokv_b",
        &mut names,
    );
    metric_names("xmokv_c + mokv_d:rate5m", &mut names);
    let expected: BTreeSet<String> =
        ["mokv_a_seconds_bucket", "mokv_b", "mokv_d:rate5m"].map(String::from).into();
    assert_eq!(names, expected);
}
