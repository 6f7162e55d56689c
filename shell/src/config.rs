//! `mokvd`'s configuration: command-line flags, `MOKV_*` environment variables and a YAML file
//! with the original mökv's kebab-case keys.
//!
//! Precedence: flags > environment > file > defaults. Flags and environment variables are
//! handled by clap (`--rpc-port` / `MOKV_RPC_PORT`), the file by serde with
//! `deny_unknown_fields`; both layers are the same [`Settings`] struct of optional values, merged
//! field by field, then resolved into a checked [`NodeConfig`]. Any unknown key or bad value
//! stops start-up with a message that names the key.
//!
//! The peer (node-to-node) service is served on the same port as the client `KV` service, as
//! the original multiplexed Raft on its rpc port; the peer service only accepts callers whose
//! certificate is a node certificate (see [`crate::tls::Identity::is_node`]). So there is no
//! separate peer port, and a member's peer address equals its rpc address.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use mokv_core::gossip::GossipConfig;
use serde::Deserialize;

/// Default client port, the original's.
pub const DEFAULT_RPC_PORT: u16 = 8400;
/// Default `max-concurrent-streams`: in-flight rpcs per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;

#[derive(Parser, Debug)]
#[command(
    name = "mokvd",
    version,
    about = "mokv node: a Raft-replicated key-value store over mTLS"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a CA, node certificates and client certificates (replaces cfssl).
    Certs(crate::certs::CertsArgs),
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// YAML configuration file (the original's `--config-file` is accepted too).
    #[arg(long, visible_alias = "config-file", env = "MOKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Single-node development cluster in a local data dir (default `$HOME/.mokv-dev`),
    /// generating a dev CA, a server certificate and a `root` client certificate if absent.
    #[arg(long)]
    pub dev: bool,
    #[command(flatten)]
    pub settings: Settings,
}

/// One layer of settings; `None` = not given in this layer.
#[derive(Args, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Directory of the node's durable state (RocksDB under `raft/`).
    #[arg(long, env = "MOKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's name; must be the CN of its node certificate.
    #[arg(long, env = "MOKV_NODE_NAME")]
    pub node_name: Option<String>,
    /// Gossip address (host:port). Its host is also the host the rpc port listens on.
    #[arg(long, env = "MOKV_BIND_ADDR")]
    pub bind_addr: Option<String>,
    /// Port of the gRPC services (client KV and peer); 0 picks a free port.
    #[arg(long, env = "MOKV_RPC_PORT")]
    pub rpc_port: Option<u16>,
    /// Host (name or IP) other nodes and clients use to reach this node's rpc port.
    #[arg(long, env = "MOKV_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Gossip addresses (`bind-addr`) of other nodes to join through, comma separated; tried
    /// with backoff until one answers.
    #[arg(long, env = "MOKV_START_JOIN_ADDRS", value_delimiter = ',')]
    pub start_join_addrs: Option<Vec<String>>,
    /// Start a new single-node cluster if the data dir is empty.
    #[arg(long, env = "MOKV_BOOTSTRAP", num_args = 0..=1, default_missing_value = "true")]
    pub bootstrap: Option<bool>,
    /// Casbin model (default: the built-in copy of certs/model.conf); reloaded when it changes.
    #[arg(long, env = "MOKV_ACL_MODEL_FILE")]
    pub acl_model_file: Option<PathBuf>,
    /// Casbin policy CSV (default: the built-in certs/policy.csv, `root` may do everything);
    /// reloaded when it changes.
    #[arg(long, env = "MOKV_ACL_POLICY_FILE")]
    pub acl_policy_file: Option<PathBuf>,
    #[arg(long, env = "MOKV_SERVER_TLS_CERT_FILE")]
    pub server_tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "MOKV_SERVER_TLS_KEY_FILE")]
    pub server_tls_key_file: Option<PathBuf>,
    #[arg(long, env = "MOKV_SERVER_TLS_CA_FILE")]
    pub server_tls_ca_file: Option<PathBuf>,
    #[arg(long, env = "MOKV_PEER_TLS_CERT_FILE")]
    pub peer_tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "MOKV_PEER_TLS_KEY_FILE")]
    pub peer_tls_key_file: Option<PathBuf>,
    #[arg(long, env = "MOKV_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,
    /// Prometheus `/metrics` port (off when unset).
    #[arg(long, env = "MOKV_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// tracing filter: a level (`info`) or directives (`mokv_shell=debug,info`).
    #[arg(long, env = "MOKV_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[arg(long, env = "MOKV_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    #[arg(long, env = "MOKV_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Concurrent HTTP/2 streams (in-flight rpcs) per client or peer connection.
    #[arg(long, env = "MOKV_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Length of one Raft tick in milliseconds.
    #[arg(long, env = "MOKV_TICK_MS")]
    pub tick_ms: Option<u64>,
    #[arg(long, env = "MOKV_ELECTION_TICKS")]
    pub election_ticks: Option<usize>,
    #[arg(long, env = "MOKV_HEARTBEAT_TICKS")]
    pub heartbeat_ticks: Option<usize>,
    /// Snapshot and compact the log after this many applied entries.
    #[arg(long, env = "MOKV_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,
    /// File holding the cluster's gossip key (any secret text; `mokvd certs` writes one to
    /// `cluster.key`). Gossip datagrams are encrypted and authenticated with it.
    #[arg(long, env = "MOKV_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// The cluster's gossip key inline (prefer `cluster-key-file`: flags show in `ps`).
    #[arg(long, env = "MOKV_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,
    /// Remove a member from the Raft configuration after it has been down this long (ms);
    /// 0 (default): never, a down member stays and is reported.
    #[arg(long, env = "MOKV_DEAD_MEMBER_TIMEOUT_MS")]
    pub dead_member_timeout_ms: Option<u64>,
    /// On SIGTERM/SIGINT leave the cluster for good (the leader removes this member) instead of
    /// only stopping (the member stays, reported down, and catches up when it restarts).
    #[arg(long, env = "MOKV_LEAVE_ON_SHUTDOWN", num_args = 0..=1, default_missing_value = "true")]
    pub leave_on_shutdown: Option<bool>,
    /// Gossip probe interval (ms); failure detection takes about this plus `gossip-suspect-ms`.
    #[arg(long, env = "MOKV_GOSSIP_PROBE_MS")]
    pub gossip_probe_ms: Option<u64>,
    /// How long a suspected member has to refute before it is declared down (ms).
    #[arg(long, env = "MOKV_GOSSIP_SUSPECT_MS")]
    pub gossip_suspect_ms: Option<u64>,
}

macro_rules! overlay {
    ($top:expr, $bottom:expr, $($field:ident),* $(,)?) => {
        Settings { $($field: $top.$field.or($bottom.$field)),* }
    };
}

impl Settings {
    /// `self` wins where it has a value.
    pub fn over(self, below: Settings) -> Settings {
        overlay!(
            self,
            below,
            data_dir,
            node_name,
            bind_addr,
            rpc_port,
            advertise_addr,
            start_join_addrs,
            bootstrap,
            acl_model_file,
            acl_policy_file,
            server_tls_cert_file,
            server_tls_key_file,
            server_tls_ca_file,
            peer_tls_cert_file,
            peer_tls_key_file,
            peer_tls_ca_file,
            metrics_port,
            log_level,
            max_key_bytes,
            max_value_bytes,
            max_concurrent_streams,
            tick_ms,
            election_ticks,
            heartbeat_ticks,
            snapshot_threshold,
            cluster_key_file,
            cluster_key,
            dead_member_timeout_ms,
            leave_on_shutdown,
            gossip_probe_ms,
            gossip_suspect_ms,
        )
    }

    /// Parses a YAML file; errors name the offending key (serde_yaml prefixes the path).
    pub fn from_yaml(text: &str) -> Result<Settings, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))
    }

    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("reading config file {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| ConfigError(format!("{} ({})", e.0, path.display())))
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {why}"))
}

/// Certificate, key and CA files of one side of the TLS setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub node_name: String,
    pub bind_addr: String,
    /// Host the rpc port listens on (the host part of `bind-addr`).
    pub listen_host: IpAddr,
    pub rpc_port: u16,
    /// Host others use to reach this node.
    pub advertise_host: String,
    pub start_join_addrs: Vec<String>,
    pub bootstrap: bool,
    pub acl_model_file: Option<PathBuf>,
    pub acl_policy_file: Option<PathBuf>,
    pub server_tls: TlsFiles,
    pub peer_tls: TlsFiles,
    pub metrics_port: Option<u16>,
    pub log_level: String,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_concurrent_streams: u32,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_threshold: u64,
    /// The secret gossip datagrams are sealed with (never logged).
    pub cluster_key: ClusterSecret,
    pub dead_member_timeout_ms: u64,
    pub leave_on_shutdown: bool,
    pub gossip_probe_ms: u64,
    pub gossip_suspect_ms: u64,
}

/// The cluster key as configured; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(pub Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Shortest accepted cluster key: a guessable key would let anyone join and spoof members.
pub const MIN_CLUSTER_KEY_BYTES: usize = 16;

impl NodeConfig {
    /// Applies defaults and checks every value.
    pub fn resolve(s: Settings) -> Result<NodeConfig, ConfigError> {
        let data_dir = s.data_dir.ok_or_else(|| bad("data-dir", "is required"))?;
        let node_name = s.node_name.ok_or_else(|| bad("node-name", "is required"))?;
        if node_name.is_empty() || node_name.len() > 255 {
            return Err(bad("node-name", "must be 1..=255 bytes"));
        }
        let bind_addr = s.bind_addr.unwrap_or_else(|| "127.0.0.1:8401".to_owned());
        let listen_host = host_of(&bind_addr)
            .ok_or_else(|| bad("bind-addr", "must be IP:port, e.g. 127.0.0.1:8401"))?;
        let advertise_host = match s.advertise_addr {
            Some(a) if a.is_empty() => return Err(bad("advertise-addr", "must not be empty")),
            Some(a) => a,
            None if listen_host.is_unspecified() => {
                return Err(bad(
                    "advertise-addr",
                    "is required when bind-addr listens on all interfaces",
                ))
            }
            None => listen_host.to_string(),
        };
        let start_join_addrs: Vec<String> =
            s.start_join_addrs.unwrap_or_default().into_iter().filter(|a| !a.is_empty()).collect();
        let bootstrap = s.bootstrap.unwrap_or(false);
        if bootstrap && !start_join_addrs.is_empty() {
            return Err(bad(
                "bootstrap",
                "a bootstrapping node starts a new cluster; it cannot also join start-join-addrs",
            ));
        }
        let server_tls = TlsFiles {
            cert: s
                .server_tls_cert_file
                .ok_or_else(|| bad("server-tls-cert-file", "is required"))?,
            key: s.server_tls_key_file.ok_or_else(|| bad("server-tls-key-file", "is required"))?,
            ca: s.server_tls_ca_file.ok_or_else(|| bad("server-tls-ca-file", "is required"))?,
        };
        // The peer side defaults to the server side: one node certificate does both.
        let peer_tls = TlsFiles {
            cert: s.peer_tls_cert_file.unwrap_or_else(|| server_tls.cert.clone()),
            key: s.peer_tls_key_file.unwrap_or_else(|| server_tls.key.clone()),
            ca: s.peer_tls_ca_file.unwrap_or_else(|| server_tls.ca.clone()),
        };
        let log_level = s.log_level.unwrap_or_else(|| "info".to_owned());
        tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|e| bad("log-level", e))?;
        let defaults = mokv_core::Config::new(1, 0);
        let max_key_bytes = s.max_key_bytes.unwrap_or(defaults.max_key_bytes);
        if max_key_bytes == 0 {
            return Err(bad("max-key-bytes", "must be positive"));
        }
        let max_value_bytes = s.max_value_bytes.unwrap_or(defaults.max_value_bytes);
        // Peer messages carry values; keep them well below the peer message limit.
        if max_value_bytes > crate::MAX_VALUE_BYTES_LIMIT {
            return Err(bad(
                "max-value-bytes",
                format!("must be at most {}", crate::MAX_VALUE_BYTES_LIMIT),
            ));
        }
        let max_concurrent_streams =
            s.max_concurrent_streams.unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS);
        if max_concurrent_streams == 0 {
            return Err(bad("max-concurrent-streams", "must be positive"));
        }
        let tick_ms = s.tick_ms.unwrap_or(100);
        if !(1..=10_000).contains(&tick_ms) {
            return Err(bad("tick-ms", "must be in 1..=10000"));
        }
        let election_ticks = s.election_ticks.unwrap_or(defaults.election_ticks);
        let heartbeat_ticks = s.heartbeat_ticks.unwrap_or(defaults.heartbeat_ticks);
        if election_ticks < 2 {
            return Err(bad("election-ticks", "must be at least 2"));
        }
        if heartbeat_ticks == 0 || heartbeat_ticks >= election_ticks {
            return Err(bad("heartbeat-ticks", "must be in 1..election-ticks"));
        }
        let snapshot_threshold =
            s.snapshot_threshold.unwrap_or(defaults.snapshot_threshold_entries);
        if snapshot_threshold == 0 {
            return Err(bad("snapshot-threshold", "must be positive"));
        }
        let cluster_key = match (s.cluster_key, s.cluster_key_file) {
            (Some(_), Some(_)) => {
                return Err(bad("cluster-key", "set cluster-key or cluster-key-file, not both"))
            }
            (Some(k), None) => k.trim().as_bytes().to_vec(),
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| bad("cluster-key-file", format!("reading {}: {e}", path.display())))?
                .trim()
                .as_bytes()
                .to_vec(),
            (None, None) => {
                return Err(bad(
                    "cluster-key-file",
                    "is required (gossip is encrypted with it; `mokvd certs` writes cluster.key)",
                ))
            }
        };
        if cluster_key.len() < MIN_CLUSTER_KEY_BYTES {
            return Err(bad(
                "cluster-key",
                format!("must be at least {MIN_CLUSTER_KEY_BYTES} characters"),
            ));
        }
        let gossip_probe_ms = s.gossip_probe_ms.unwrap_or(1_000);
        if !(10..=60_000).contains(&gossip_probe_ms) {
            return Err(bad("gossip-probe-ms", "must be in 10..=60000"));
        }
        let gossip_suspect_ms = s.gossip_suspect_ms.unwrap_or(4_000);
        if !(10..=600_000).contains(&gossip_suspect_ms) {
            return Err(bad("gossip-suspect-ms", "must be in 10..=600000"));
        }
        Ok(NodeConfig {
            data_dir,
            node_name,
            bind_addr,
            listen_host,
            rpc_port: s.rpc_port.unwrap_or(DEFAULT_RPC_PORT),
            advertise_host,
            start_join_addrs,
            bootstrap,
            acl_model_file: s.acl_model_file,
            acl_policy_file: s.acl_policy_file,
            server_tls,
            peer_tls,
            metrics_port: s.metrics_port,
            log_level,
            max_key_bytes,
            max_value_bytes,
            max_concurrent_streams,
            tick_ms,
            election_ticks,
            heartbeat_ticks,
            snapshot_threshold,
            cluster_key: ClusterSecret(cluster_key),
            dead_member_timeout_ms: s.dead_member_timeout_ms.unwrap_or(0),
            leave_on_shutdown: s.leave_on_shutdown.unwrap_or(false),
            gossip_probe_ms,
            gossip_suspect_ms,
        })
    }

    /// The core's configuration for node `id`, seeded with `seed`.
    pub fn core_config(&self, id: u64, seed: u64) -> mokv_core::Config {
        let mut c = mokv_core::Config::new(id, seed);
        c.election_ticks = self.election_ticks;
        c.heartbeat_ticks = self.heartbeat_ticks;
        c.max_key_bytes = self.max_key_bytes;
        c.max_value_bytes = self.max_value_bytes;
        c.snapshot_threshold_entries = self.snapshot_threshold;
        c.log_keep_entries = c.log_keep_entries.min(self.snapshot_threshold);
        c.dead_member_timeout_ms = self.dead_member_timeout_ms;
        c
    }

    /// Gossip settings for this node's identity (`identity.raft_id` = the node's id).
    pub fn gossip_config(&self, identity: mokv_core::gossip::GossipId) -> GossipConfig {
        let mut g = GossipConfig::new(identity, self.start_join_addrs.clone());
        g.probe_period_ms = self.gossip_probe_ms;
        g.probe_rtt_ms = (self.gossip_probe_ms / 2).max(5);
        g.suspect_to_down_ms = self.gossip_suspect_ms;
        g
    }
}

/// `$VAR` / `${VAR}` and a leading `~` in a path, as the original's example config used
/// `$HOME/.mokv/...`. Unknown variables are left as they are.
pub fn expand_path(p: &Path) -> PathBuf {
    let Some(s) = p.to_str() else { return p.to_path_buf() };
    let home = std::env::var("HOME").unwrap_or_default();
    let s = match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => s.to_owned(),
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match (name.is_empty(), std::env::var(name)) {
            (false, Ok(v)) => out.push_str(&v),
            _ => out.push_str(&rest[pos..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    PathBuf::from(out)
}

impl Settings {
    /// Expands `$VAR` and `~` in every path setting.
    pub fn expand_paths(mut self) -> Settings {
        for p in [
            &mut self.data_dir,
            &mut self.acl_model_file,
            &mut self.acl_policy_file,
            &mut self.server_tls_cert_file,
            &mut self.server_tls_key_file,
            &mut self.server_tls_ca_file,
            &mut self.peer_tls_cert_file,
            &mut self.peer_tls_key_file,
            &mut self.peer_tls_ca_file,
            &mut self.cluster_key_file,
        ] {
            if let Some(path) = p.as_mut() {
                *path = expand_path(path);
            }
        }
        self
    }
}

fn host_of(addr: &str) -> Option<IpAddr> {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if host == "localhost" {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Default directory of `--dev`: `$HOME/.mokv-dev`, or `./.mokv-dev` without a home.
pub fn default_dev_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".mokv-dev"),
        _ => PathBuf::from(".mokv-dev"),
    }
}

/// Settings of `--dev` under `dir` (certificates are generated there by `main`).
pub fn dev_settings(dir: &Path) -> Settings {
    Settings {
        data_dir: Some(dir.to_path_buf()),
        node_name: Some("dev".to_owned()),
        bind_addr: Some("127.0.0.1:8401".to_owned()),
        bootstrap: Some(true),
        server_tls_cert_file: Some(dir.join("dev.pem")),
        server_tls_key_file: Some(dir.join("dev-key.pem")),
        server_tls_ca_file: Some(dir.join("ca.pem")),
        cluster_key_file: Some(dir.join("cluster.key")),
        ..Settings::default()
    }
}

#[cfg(test)]
mod tests {
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
        let cli = Cli::try_parse_from([
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
}
