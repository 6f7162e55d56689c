//! Tests of the configuration: layering, checks, flags and environment names, and the README.

use super::*;

fn minimal() -> Settings {
    Settings {
        data_dir: Some("/tmp/x".into()),
        node_name: Some("n1".into()),
        server_tls_cert_file: Some("c".into()),
        server_tls_key_file: Some("k".into()),
        server_tls_ca_file: Some("ca".into()),
        cluster_key: Some("a-test-cluster-key-0123".into()),
        ..Settings::default()
    }
}

#[test]
fn cluster_key_is_required_and_not_too_short() {
    let mut s = minimal();
    s.cluster_key = None;
    let e = NodeConfig::resolve(s).unwrap_err();
    assert!(e.0.starts_with("cluster-key-file"), "{e}");
    let s = Settings { cluster_key: Some("short".into()), ..minimal() };
    let e = NodeConfig::resolve(s).unwrap_err();
    assert!(e.0.starts_with("cluster-key"), "{e}");
    assert!(!e.0.contains("short"), "the key is never echoed: {e}");
    let c = NodeConfig::resolve(minimal()).unwrap();
    assert!(!format!("{c:?}").contains("a-test-cluster-key"));
}

#[test]
fn yaml_with_original_keys_parses() {
    let s = Settings::from_yaml(
        "data-dir: /tmp/mokv-data\nnode-name: node1\nbind-addr: 127.0.0.1:8401\n\
         rpc-port: 8400\nstart-join-addrs: []\nbootstrap: true\n\
         acl-model-file: $HOME/.mokv/model.conf\nacl-policy-file: /p.csv\n\
         server-tls-cert-file: /s.pem\nserver-tls-key-file: /s-key.pem\n\
         server-tls-ca-file: /ca.pem\npeer-tls-cert-file: /p.pem\n\
         peer-tls-key-file: /p-key.pem\npeer-tls-ca-file: /ca.pem\nmetrics-port: 4000\n\
         log-level: debug\ncluster-key: 0123456789abcdef0123\n",
    )
    .unwrap();
    let c = NodeConfig::resolve(s.expand_paths()).unwrap();
    assert_eq!(c.rpc_port, 8400);
    assert_eq!(c.max_concurrent_streams, DEFAULT_MAX_CONCURRENT_STREAMS);
    assert!(c.bootstrap);
    assert_eq!(c.metrics_port, Some(4000));
    assert!(!c.acl_model_file.unwrap().to_str().unwrap().contains('$'));
}

#[test]
fn max_concurrent_streams_is_configurable_and_checked() {
    let s = Settings::from_yaml("max-concurrent-streams: 8\n").unwrap();
    let c = NodeConfig::resolve(s.over(minimal())).unwrap();
    assert_eq!(c.max_concurrent_streams, 8);
    let s = Settings::from_yaml("max-concurrent-streams: 0\n").unwrap();
    let e = NodeConfig::resolve(s.over(minimal())).unwrap_err();
    assert!(e.0.starts_with("max-concurrent-streams"), "{e}");
}

#[test]
fn unknown_key_is_named() {
    let e = Settings::from_yaml("data-dir: /x\nrpc-prot: 1\n").unwrap_err();
    assert!(e.0.contains("rpc-prot"), "{e}");
}

#[test]
fn bad_value_is_named() {
    let e = Settings::from_yaml("rpc-port: lots\n").unwrap_err();
    assert!(e.0.contains("rpc-port"), "{e}");
    let e = Settings::from_yaml("rpc-port: 70000\n").unwrap_err();
    assert!(e.0.contains("rpc-port"), "{e}");
}

#[test]
fn checks_name_the_key() {
    let mut s = minimal();
    s.heartbeat_ticks = Some(20);
    let e = NodeConfig::resolve(s).unwrap_err();
    assert!(e.0.starts_with("heartbeat-ticks"), "{e}");
    let mut s = minimal();
    s.log_level = Some("info,=[".into());
    assert!(NodeConfig::resolve(s).unwrap_err().0.starts_with("log-level"));
    let mut s = minimal();
    s.data_dir = None;
    assert!(NodeConfig::resolve(s).unwrap_err().0.starts_with("data-dir"));
}

#[test]
fn flags_beat_file() {
    let file = Settings { rpc_port: Some(1), tick_ms: Some(7), ..minimal() };
    let flags = Settings { rpc_port: Some(2), ..Settings::default() };
    let c = NodeConfig::resolve(flags.over(file)).unwrap();
    assert_eq!((c.rpc_port, c.tick_ms), (2, 7));
}

#[test]
fn cli_parses_flags_and_aliases() {
    let cli = parse_cli_from([
        "mokvd",
        "--config-file",
        "/etc/x.yaml",
        "--bootstrap",
        "--start-join-addrs",
        "a:1,b:2",
    ])
    .unwrap();
    assert_eq!(cli.run.config.as_deref(), Some(Path::new("/etc/x.yaml")));
    assert_eq!(cli.run.settings.bootstrap, Some(true));
    assert_eq!(cli.run.settings.start_join_addrs.unwrap(), vec!["a:1", "b:2"]);
}

#[test]
fn expands_variables() {
    std::env::set_var("MOKV_TEST_DIR_X", "/base");
    assert_eq!(expand_path(Path::new("${MOKV_TEST_DIR_X}/a")), PathBuf::from("/base/a"));
    assert_eq!(expand_path(Path::new("$MOKV_TEST_DIR_X/a")), PathBuf::from("/base/a"));
    assert_eq!(expand_path(Path::new("$NOPE_NOT_SET_Q/a")), PathBuf::from("$NOPE_NOT_SET_Q/a"));
}

/// Every key and variable `mokvd` accepted before the settings were declared in one place;
/// the README and the tests use them, so none may change.
const KEYS: &[&str] = &[
    "data-dir",
    "node-name",
    "bind-addr",
    "rpc-port",
    "advertise-addr",
    "start-join-addrs",
    "bootstrap",
    "acl-model-file",
    "acl-policy-file",
    "server-tls-cert-file",
    "server-tls-key-file",
    "server-tls-ca-file",
    "peer-tls-cert-file",
    "peer-tls-key-file",
    "peer-tls-ca-file",
    "metrics-port",
    "ports-file",
    "log-level",
    "max-key-bytes",
    "max-value-bytes",
    "max-concurrent-streams",
    "tick-ms",
    "election-ticks",
    "heartbeat-ticks",
    "snapshot-threshold",
    "cluster-key-file",
    "cluster-key",
    "dead-member-timeout-ms",
    "leave-on-shutdown",
    "gossip-probe-ms",
    "gossip-suspect-ms",
    "gossip-max-members",
    "snapshot-threshold-bytes",
    "max-in-memory-log-bytes",
    "max-uncommitted-log-bytes",
    "max-snapshot-bytes",
    "max-page-bytes",
    "quota-state-bytes",
    "metrics-plain-http",
    "metrics-client-auth",
    "server-tls-crl-file",
    "gossip-socket-on-stdin",
    "max-txn-ops",
    "max-txn-bytes",
    "max-leases",
    "lease-min-ttl-ms",
    "lease-max-ttl-ms",
    "watch-history-max-bytes",
    "watch-history-max-revisions",
    "watch-queue-max-bytes",
    "max-sessions-per-identity",
    "max-tls-handshakes",
    "tls-handshake-timeout-ms",
    "max-client-connections",
    "max-connections-per-ip",
    "anonymous-connection-max-age-ms",
    "anonymous-max-concurrent-streams",
];

#[test]
fn every_key_is_a_flag_an_environment_variable_and_a_yaml_key() {
    let mut declared: Vec<String> = reference().into_iter().map(|d| d.key).collect();
    declared.sort();
    let mut expected: Vec<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(declared, expected);
    let cmd = command();
    for key in KEYS {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key))
            .unwrap_or_else(|| panic!("no flag --{key}"));
        let env = arg.get_env().unwrap_or_else(|| panic!("--{key} has no environment variable"));
        assert_eq!(env.to_str().unwrap(), env_var_of(key));
        // YAML: the key is known (an unknown key is refused) and typed.
        let e = Settings::from_yaml(&format!("{key}: {{a: 1}}\n")).unwrap_err();
        assert!(e.0.contains(key) && !e.0.contains("unknown field"), "{key}: {e}");
    }
    assert_eq!(env_var_of("snapshot-threshold"), "MOKV_SNAPSHOT_THRESHOLD");
}

#[test]
fn flags_parse_into_the_same_fields_as_yaml() {
    let cli = parse_cli_from([
        "mokvd",
        "--snapshot-threshold",
        "50",
        "--dead-member-timeout-ms",
        "3000",
        "--leave-on-shutdown",
        "true",
        "--cluster-key",
        "k",
    ])
    .unwrap();
    let yaml = Settings::from_yaml(
        "snapshot-threshold: 50\ndead-member-timeout-ms: 3000\nleave-on-shutdown: true\n\
         cluster-key: k\n",
    )
    .unwrap();
    assert_eq!(format!("{:?}", cli.run.settings), format!("{yaml:?}"));
}

#[test]
fn defaults_of_core_settings_come_from_the_core() {
    let c = NodeConfig::resolve(minimal()).unwrap();
    let core = mokv_core::Config::new(1, 0);
    assert_eq!(c.election_ticks, core.election_ticks);
    assert_eq!(c.heartbeat_ticks, core.heartbeat_ticks);
    assert_eq!(c.max_key_bytes, core.max_key_bytes);
    assert_eq!(c.max_value_bytes, core.max_value_bytes);
    assert_eq!(c.snapshot_threshold_entries, core.snapshot_threshold_entries);
    assert_eq!(c.snapshot_threshold_bytes, core.snapshot_threshold_bytes);
    assert_eq!(c.max_in_memory_log_bytes, core.max_in_memory_log_bytes);
    assert_eq!(c.max_uncommitted_log_bytes, core.max_uncommitted_log_bytes);
    assert_eq!(c.max_page_bytes, core.max_page_bytes);
    assert_eq!(c.max_txn_ops, core.max_txn_ops);
    assert_eq!(c.max_txn_bytes, core.max_txn_bytes);
    assert_eq!(c.quota_state_bytes, core.quota_state_bytes);
    assert_eq!(c.dead_member_timeout_ms, core.dead_member_timeout_ms);
    assert_eq!(c.peer_tls, c.server_tls, "the peer side defaults to the server side");
}

#[test]
fn core_checks_are_reported_with_the_key() {
    let s = Settings { snapshot_threshold_entries: Some(0), ..minimal() };
    let e = NodeConfig::resolve(s).unwrap_err();
    assert!(e.0.starts_with("snapshot-threshold:"), "{e}");
    let s = Settings { election_ticks: Some(1), heartbeat_ticks: Some(1), ..minimal() };
    let e = NodeConfig::resolve(s).unwrap_err();
    assert!(e.0.starts_with("election-ticks:"), "{e}");
    let s = Settings { max_key_bytes: Some(0), ..minimal() };
    assert!(NodeConfig::resolve(s).unwrap_err().0.starts_with("max-key-bytes:"));
    let s = Settings { max_in_memory_log_bytes: Some(1), ..minimal() };
    assert!(NodeConfig::resolve(s).unwrap_err().0.starts_with("max-in-memory-log-bytes:"));
    let s = Settings { max_uncommitted_log_bytes: Some(1), ..minimal() };
    assert!(NodeConfig::resolve(s).unwrap_err().0.starts_with("max-uncommitted-log-bytes:"));
    let s = Settings { quota_state_bytes: Some(1 << 20), ..minimal() };
    let c = NodeConfig::resolve(s).unwrap();
    assert_eq!(c.core_config(1, 0).quota_state_bytes, Some(1 << 20));
}

/// Marks the start of the generated table in the README.
const README_BEGIN: &str = "<!-- config-reference: generated by `mokvd config reference` -->";
/// Marks its end.
const README_END: &str = "<!-- end of config-reference -->";

/// The README's configuration table is `mokvd config reference`'s output, byte for byte.
#[test]
fn readme_reference_is_generated() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let begin = readme.find(README_BEGIN).expect("README has the begin marker");
    let body = &readme[begin + README_BEGIN.len()..];
    let end = body.find(README_END).expect("README has the end marker");
    assert_eq!(
        body[..end].trim(),
        markdown_reference(),
        "README.md's configuration table is stale: replace it with `mokvd config reference`"
    );
}

#[test]
fn connection_limits_are_configurable_and_checked() {
    let s = Settings::from_yaml(
        "max-tls-handshakes: 4\ntls-handshake-timeout-ms: 700\nmax-client-connections: 9\n\
         max-connections-per-ip: 3\nanonymous-connection-max-age-ms: 500\n\
         anonymous-max-concurrent-streams: 2\n",
    )
    .unwrap();
    let c = NodeConfig::resolve(s.over(minimal())).unwrap();
    let l = c.conn_limits();
    assert_eq!(
        (l.max_tls_handshakes, l.max_client_connections, l.max_connections_per_ip),
        (4, 9, 3)
    );
    assert_eq!(l.tls_handshake_timeout, std::time::Duration::from_millis(700));
    assert_eq!((c.anonymous_connection_max_age_ms, c.anonymous_max_concurrent_streams), (500, 2));
    for key in [
        "max-tls-handshakes",
        "tls-handshake-timeout-ms",
        "max-client-connections",
        "max-connections-per-ip",
        "anonymous-connection-max-age-ms",
        "anonymous-max-concurrent-streams",
    ] {
        let s = Settings::from_yaml(&format!("{key}: 0\n")).unwrap();
        let e = NodeConfig::resolve(s.over(minimal())).unwrap_err();
        assert!(e.0.starts_with(key), "{e}");
    }
}
