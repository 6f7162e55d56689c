//! `mokvd`'s configuration: command-line flags, `MOKV_*` environment variables and a YAML file
//! with the original mökv's kebab-case keys.
//!
//! Every setting is declared once, below (name, type, default, doc; a unit in the name): the
//! `settings!` macro (`config/declare.rs`) makes of it the flags, the environment variables
//! (`MOKV_` + the key in upper snake case), the YAML keys, the resolved [`NodeConfig`] and the
//! reference table in the README (`mokvd config reference`; a test keeps the README equal to
//! it). [`NodeConfig::validate`] is the one check, and it leaves the core's settings to
//! [`mokv_core::Config::validate`].
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

pub(crate) mod declare;
mod paths;
mod reference;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use mokv_core::gossip::GossipConfig;

pub use paths::{default_dev_dir, expand_path};
pub use reference::{markdown_reference, SettingDoc};

/// Default client port, the original's.
pub const DEFAULT_RPC_PORT: u16 = 8400;
/// Default `max-concurrent-streams`: in-flight rpcs per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Shortest accepted cluster key: a guessable key would let anyone join and spoof members.
pub const MIN_CLUSTER_KEY_BYTES: usize = 16;

/// The core's defaults, the one source of the defaults of the settings the core reads.
fn core_defaults() -> mokv_core::Config {
    mokv_core::Config::new(1, 0)
}

declare::settings! {
    required {
        /// Directory of the node's durable state (RocksDB under `raft/`).
        data_dir: PathBuf,
        /// This node's name; must be the CN of its node certificate.
        node_name: String,
    }
    defaulted {
        /// Gossip address (host:port). Its host is also the host the rpc port listens on;
        /// port 0 picks a free port.
        bind_addr: String = "127.0.0.1:8401".to_owned(),
        /// Port of the gRPC services (client KV and peer); 0 picks a free port.
        rpc_port: u16 = DEFAULT_RPC_PORT,
        /// Take the gossip UDP socket from standard input (inetd style) instead of binding
        /// `bind-addr`'s port: for supervisors and tests that bind the socket themselves and
        /// must know the port before the node starts. `bind-addr`'s host still sets the rpc
        /// listen host.
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        gossip_socket_on_stdin: bool = false,
        /// Gossip addresses (`bind-addr`) of other nodes to join through, comma separated; tried
        /// with backoff until one answers.
        #[arg(value_delimiter = ',')]
        start_join_addrs: Vec<String> = Vec::new(),
        /// Start a new single-node cluster if the data dir is empty.
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        bootstrap: bool = false,
        /// tracing filter: a level (`info`) or directives (`mokv_shell=debug,info`).
        log_level: String = "info".to_owned(),
        /// Longest key accepted.
        max_key_bytes: usize = core_defaults().max_key_bytes,
        /// Largest value accepted.
        max_value_bytes: usize = core_defaults().max_value_bytes,
        /// Concurrent HTTP/2 streams (in-flight rpcs) per client or peer connection.
        max_concurrent_streams: u32 = DEFAULT_MAX_CONCURRENT_STREAMS,
        /// Length of one Raft tick.
        tick_ms: u64 = 100,
        /// Minimum election timeout, in ticks.
        election_ticks: usize = core_defaults().election_ticks,
        /// Leader heartbeat interval, in ticks; below `election-ticks`.
        heartbeat_ticks: usize = core_defaults().heartbeat_ticks,
        /// Snapshot and compact the log after this many applied entries.
        snapshot_threshold_entries as "snapshot-threshold": u64 =
            core_defaults().snapshot_threshold_entries,
        /// Snapshot and compact the log once the entries applied since the last snapshot hold
        /// this many bytes: what a restart replays on top of the snapshot is at most this.
        snapshot_threshold_bytes: u64 = core_defaults().snapshot_threshold_bytes,
        /// Bound on the applied entries of the Raft log held in memory: once over it, they are
        /// dropped from memory (the disk keeps those after the snapshot for a restart) down to
        /// half of it; a follower that needs a dropped entry gets a snapshot.
        max_in_memory_log_bytes: u64 = core_defaults().max_in_memory_log_bytes,
        /// The leader refuses proposals as busy (UNAVAILABLE, retryable) while its uncommitted
        /// Raft entries hold this many bytes.
        max_uncommitted_log_bytes: u64 = core_defaults().max_uncommitted_log_bytes,
        /// Largest snapshot file accepted from the leader. Received snapshots go to disk one
        /// chunk at a time, never whole into memory, so the disk bounds them; this refuses
        /// absurd sizes early (default 1 TiB).
        max_snapshot_bytes: u64 = crate::net::peer_service::DEFAULT_MAX_SNAPSHOT_BYTES,
        /// Bound on the keys and values of one `Range` page (and of each internal page of
        /// `List`); a page holds at least one item.
        max_page_bytes: usize = core_defaults().max_page_bytes,
        /// Bound on one transaction's compares plus operations (both branches); beyond it
        /// `Txn` fails INVALID_ARGUMENT.
        max_txn_ops: usize = core_defaults().max_txn_ops,
        /// Bound on one transaction's keys, values and compared values (plus 16 bytes per
        /// compare and operation); beyond it `Txn` fails INVALID_ARGUMENT.
        max_txn_bytes: usize = core_defaults().max_txn_bytes,
        /// Leases the cluster may hold at once; a grant beyond is refused RESOURCE_EXHAUSTED
        /// (the leader's setting applies).
        max_leases: u64 = core_defaults().max_leases,
        /// Shortest TTL a lease may be granted with, in milliseconds (INVALID_ARGUMENT below).
        lease_min_ttl_ms: u64 = core_defaults().lease_min_ttl_ms,
        /// Longest TTL a lease may be granted with, in milliseconds (INVALID_ARGUMENT above).
        lease_max_ttl_ms: u64 = core_defaults().lease_max_ttl_ms,
        /// Bytes of applied changes every node keeps for watches (keys, values, previous
        /// values and 48 bytes per change); a watch from an evicted revision is OUT_OF_RANGE.
        watch_history_max_bytes: u64 = core_defaults().watch_history.max_bytes,
        /// Revisions (log indices) of applied changes every node keeps for watches.
        watch_history_max_revisions: u64 = core_defaults().watch_history.max_revisions,
        /// Write sessions one client identity (certificate CN) may hold; registering another
        /// evicts its least recently used one, never another identity's. The leader's value
        /// applies (it is stamped into each registration).
        max_sessions_per_identity: u64 = core_defaults().max_sessions_per_identity,
        /// Bytes of changes queued for one watcher that does not read them; beyond, it is
        /// cancelled with RESOURCE_EXHAUSTED "watcher too slow".
        watch_queue_max_bytes: usize = crate::net::watch_service::DEFAULT_QUEUE_MAX_BYTES,
        /// Remove a member from the Raft configuration after it has been down this long;
        /// 0: never, a down member stays and is reported.
        dead_member_timeout_ms: u64 = core_defaults().dead_member_timeout_ms,
        /// On SIGTERM/SIGINT leave the cluster for good (the leader removes this member) instead
        /// of only stopping (the member stays, reported down, and catches up when it restarts).
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        leave_on_shutdown: bool = false,
        /// Serve `/metrics` as plain HTTP instead of HTTPS with the node's server certificate.
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        metrics_plain_http: bool = false,
        /// Require scrapers of `/metrics` to present a client certificate from the cluster CA
        /// (`server-tls-ca-file`, not revoked by `server-tls-crl-file`); HTTPS only.
        #[arg(num_args = 0..=1, default_missing_value = "true")]
        metrics_client_auth: bool = false,
        /// Gossip probe interval; failure detection takes about this plus `gossip-suspect-ms`.
        gossip_probe_ms: u64 = 1_000,
        /// How long a suspected member has to refute before it is declared down.
        gossip_suspect_ms: u64 = 4_000,
        /// Most other gossip members (down ones included) this node keeps track of: new
        /// identities beyond it are ignored (`mokv_gossip_identities_ignored_total`).
        gossip_max_members: usize = 1_024,
        /// TLS handshakes in progress at once on the rpc port; beyond, a new connection is closed
        /// at once (connections from a member's address have a small reserve beyond it).
        max_tls_handshakes: usize = 256,
        /// Bound on one TLS handshake on the rpc port.
        tls_handshake_timeout_ms: u64 = 5_000,
        /// Open rpc connections that are not a current member's peer links (with or without a
        /// client certificate, handshakes included); beyond, a new one is closed at once.
        max_client_connections: usize = 4_096,
        /// Like `max-client-connections`, per source IP address.
        max_connections_per_ip: usize = 256,
        /// Age at which a connection without a client certificate (health and reflection only)
        /// is told to go away (GOAWAY); it is closed one second later.
        anonymous_connection_max_age_ms: u64 = 30_000,
        /// Concurrent streams per connection without a client certificate.
        anonymous_max_concurrent_streams: u32 = 8,
    }
    optional {
        /// Casbin model (unset: the built-in copy of certs/model.conf); reloaded when it changes.
        acl_model_file: PathBuf,
        /// Casbin policy CSV (unset: the built-in certs/policy.csv, `root` may do everything);
        /// reloaded when it changes.
        acl_policy_file: PathBuf,
        /// Prometheus `/metrics` port (unset: off; 0: a free port, reported in `ports-file`);
        /// HTTPS with the server certificate unless `metrics-plain-http`.
        metrics_port: u16,
        /// State quota (like etcd's `quota-backend-bytes`): writes that would take the data
        /// (keys, values and 32 bytes per key) past it fail RESOURCE_EXHAUSTED; deletes still
        /// work. The leader's setting applies to the whole cluster (unset: no quota).
        quota_state_bytes: u64,
        /// PEM CRL(s) of revoked client and node certificates (`mokvd certs --revoke` writes
        /// `crl.pem`); reloaded with the CA, and open connections of a certificate it revokes
        /// are closed.
        server_tls_crl_file: PathBuf,
        /// After every listener is bound, write their addresses here (atomically: a temp file
        /// renamed into place), one `rpc|gossip|metrics <ip:port>` per line; for scripts and
        /// tests that start the node with port 0.
        ports_file: PathBuf,
    }
    inputs {
        /// Host (name or IP) other nodes and clients use to reach this node's rpc port.
        advertise_addr: String => "the host of bind-addr (required if that is 0.0.0.0)",
        /// Certificate of the gRPC server (a node certificate).
        server_tls_cert_file: PathBuf => "required",
        /// Private key of `server-tls-cert-file`.
        server_tls_key_file: PathBuf => "required",
        /// CA that signs client and node certificates.
        server_tls_ca_file: PathBuf => "required",
        /// Certificate this node presents to its peers.
        peer_tls_cert_file: PathBuf => "same as server-tls-cert-file",
        /// Private key of `peer-tls-cert-file`.
        peer_tls_key_file: PathBuf => "same as server-tls-key-file",
        /// CA that signs the peers' certificates.
        peer_tls_ca_file: PathBuf => "same as server-tls-ca-file",
        /// File holding the cluster's gossip key (any secret text; `mokvd certs` writes one to
        /// `cluster.key`). Gossip datagrams are encrypted and authenticated with it.
        cluster_key_file: PathBuf => "required, or cluster-key",
        /// The cluster's gossip key inline (prefer `cluster-key-file`: flags show in `ps`).
        #[arg(hide_env_values = true)]
        cluster_key: String => "unset",
    }
    derived {
        /// Host the rpc port listens on (the host part of `bind-addr`).
        listen_host: IpAddr,
        /// Host others use to reach this node (`advertise-addr`).
        advertise_host: String,
        /// `server-tls-{cert,key,ca}-file`.
        server_tls: TlsFiles,
        /// `peer-tls-{cert,key,ca}-file`, each defaulting to its `server-tls` counterpart.
        peer_tls: TlsFiles,
        /// The secret gossip datagrams are sealed with (never logged).
        cluster_key: ClusterSecret,
    }
}

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
    /// About the configuration itself.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create the data dir of a NEW one-node cluster from a backup file (`mokv snapshot
    /// save`); then start `mokvd` on it with the same node name.
    Restore(RestoreArgs),
    /// Rewrite a stopped node's data dir after its cluster lost quorum for good.
    Recover(RecoverArgs),
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The name of the new cluster's first node (its `node-name` when started).
    #[arg(long)]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// Make the node the only voter of a new cluster holding everything it knew committed
    /// (etcd's --force-new-cluster). Required: there is no other mode yet.
    #[arg(long, required = true)]
    pub force_new_cluster: bool,
    /// The stopped node's data dir.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Rename the node.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every setting (key, environment variable, type, default, meaning) as a markdown
    /// table: the README's configuration reference.
    Reference,
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

/// The environment variable of a setting: `MOKV_` + its key in upper snake case.
pub fn env_var_of(key: &str) -> String {
    format!("MOKV_{}", key.to_uppercase().replace('-', "_"))
}

/// `mokvd`'s command line, with every setting also read from its environment variable.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    static ENV_VARS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let vars = ENV_VARS
        .get_or_init(|| reference().into_iter().map(|d| (env_var_of(&d.key), d.key)).collect());
    Cli::command().mut_args(|arg| {
        let var = arg.get_long().and_then(|long| vars.iter().find(|(_, key)| key == long));
        match var {
            Some((var, _)) => arg.env(var.as_str()),
            None => arg,
        }
    })
}

/// Parses `args` (the program name first) as `mokvd`'s command line, environment included.
pub fn parse_cli_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches as _;
    let mut cmd = command();
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

/// Parses the process's command line; prints help, version or the error and exits as clap does.
pub fn parse_cli() -> Cli {
    parse_cli_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

impl Settings {
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

/// The cluster key as configured; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(pub Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Computes the values that combine several settings (and normalises `start-join-addrs`).
/// Only what is needed to compute them is checked here; value ranges are [`NodeConfig::validate`]'s.
fn derive(plain: &mut Plain, s: Inputs) -> Result<Derived, ConfigError> {
    plain.start_join_addrs.retain(|a| !a.is_empty());
    let listen_host = host_of(&plain.bind_addr)
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
    let server_tls = TlsFiles {
        cert: s.server_tls_cert_file.ok_or_else(|| bad("server-tls-cert-file", "is required"))?,
        key: s.server_tls_key_file.ok_or_else(|| bad("server-tls-key-file", "is required"))?,
        ca: s.server_tls_ca_file.ok_or_else(|| bad("server-tls-ca-file", "is required"))?,
    };
    // The peer side defaults to the server side: one node certificate does both.
    let peer_tls = TlsFiles {
        cert: s.peer_tls_cert_file.unwrap_or_else(|| server_tls.cert.clone()),
        key: s.peer_tls_key_file.unwrap_or_else(|| server_tls.key.clone()),
        ca: s.peer_tls_ca_file.unwrap_or_else(|| server_tls.ca.clone()),
    };
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
    Ok(Derived {
        listen_host,
        advertise_host,
        server_tls,
        peer_tls,
        cluster_key: ClusterSecret(cluster_key),
    })
}

impl NodeConfig {
    /// The one check of a configuration. The settings the core reads are checked by
    /// [`mokv_core::Config::validate`] (the same check `Node::new` runs), named by their keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() || self.node_name.len() > 255 {
            return Err(bad("node-name", "must be 1..=255 bytes"));
        }
        if self.bootstrap && !self.start_join_addrs.is_empty() {
            return Err(bad(
                "bootstrap",
                "a bootstrapping node starts a new cluster; it cannot also join start-join-addrs",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| bad("log-level", e))?;
        // Peer messages carry values; keep them well below the peer message limit.
        if self.max_value_bytes > crate::MAX_VALUE_BYTES_LIMIT {
            return Err(bad(
                "max-value-bytes",
                format!("must be at most {}", crate::MAX_VALUE_BYTES_LIMIT),
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(bad("max-concurrent-streams", "must be positive"));
        }
        for (key, value) in [
            ("max-tls-handshakes", self.max_tls_handshakes as u64),
            ("max-client-connections", self.max_client_connections as u64),
            ("max-connections-per-ip", self.max_connections_per_ip as u64),
            ("anonymous-connection-max-age-ms", self.anonymous_connection_max_age_ms),
            ("anonymous-max-concurrent-streams", u64::from(self.anonymous_max_concurrent_streams)),
        ] {
            if value == 0 {
                return Err(bad(key, "must be positive"));
            }
        }
        if !(1..=600_000).contains(&self.tls_handshake_timeout_ms) {
            return Err(bad("tls-handshake-timeout-ms", "must be in 1..=600000"));
        }
        if self.metrics_plain_http && self.metrics_client_auth {
            return Err(bad(
                "metrics-client-auth",
                "needs HTTPS: it cannot be set with metrics-plain-http",
            ));
        }
        if !(1..=10_000).contains(&self.tick_ms) {
            return Err(bad("tick-ms", "must be in 1..=10000"));
        }
        if self.cluster_key.0.len() < MIN_CLUSTER_KEY_BYTES {
            return Err(bad(
                "cluster-key",
                format!("must be at least {MIN_CLUSTER_KEY_BYTES} characters"),
            ));
        }
        if !(10..=60_000).contains(&self.gossip_probe_ms) {
            return Err(bad("gossip-probe-ms", "must be in 10..=60000"));
        }
        if !(10..=600_000).contains(&self.gossip_suspect_ms) {
            return Err(bad("gossip-suspect-ms", "must be in 10..=600000"));
        }
        self.core_config(1, 0).validate().map_err(|e| {
            let key = reference()
                .into_iter()
                .find(|d| d.name == e.field)
                .map_or_else(|| e.field.to_owned(), |d| d.key);
            bad(&key, e.reason)
        })
    }

    /// The core's configuration for node `id`, seeded with `seed`.
    pub fn core_config(&self, id: u64, seed: u64) -> mokv_core::Config {
        let mut c = mokv_core::Config::new(id, seed);
        c.election_ticks = self.election_ticks;
        c.heartbeat_ticks = self.heartbeat_ticks;
        c.max_key_bytes = self.max_key_bytes;
        c.max_value_bytes = self.max_value_bytes;
        c.snapshot_threshold_entries = self.snapshot_threshold_entries;
        c.log_keep_entries = c.log_keep_entries.min(self.snapshot_threshold_entries);
        c.snapshot_threshold_bytes = self.snapshot_threshold_bytes;
        c.max_in_memory_log_bytes = self.max_in_memory_log_bytes;
        c.max_uncommitted_log_bytes = self.max_uncommitted_log_bytes;
        c.max_page_bytes = self.max_page_bytes;
        c.max_txn_ops = self.max_txn_ops;
        c.max_txn_bytes = self.max_txn_bytes;
        c.max_leases = self.max_leases;
        c.lease_min_ttl_ms = self.lease_min_ttl_ms;
        c.lease_max_ttl_ms = self.lease_max_ttl_ms;
        c.watch_history = mokv_core::HistoryLimits {
            max_bytes: self.watch_history_max_bytes,
            max_revisions: self.watch_history_max_revisions,
        };
        c.quota_state_bytes = self.quota_state_bytes;
        c.max_sessions_per_identity = self.max_sessions_per_identity.max(1);
        c.dead_member_timeout_ms = self.dead_member_timeout_ms;
        c
    }

    /// The bounds on the rpc port's connections.
    pub fn conn_limits(&self) -> crate::net::conn_gate::ConnLimits {
        crate::net::conn_gate::ConnLimits {
            max_tls_handshakes: self.max_tls_handshakes,
            tls_handshake_timeout: std::time::Duration::from_millis(self.tls_handshake_timeout_ms),
            max_client_connections: self.max_client_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        }
    }

    /// Gossip settings for this node's identity (`identity.raft_id` = the node's id).
    pub fn gossip_config(&self, identity: mokv_core::gossip::GossipId) -> GossipConfig {
        let mut g = GossipConfig::new(identity, self.start_join_addrs.clone());
        g.probe_period_ms = self.gossip_probe_ms;
        g.probe_rtt_ms = (self.gossip_probe_ms / 2).max(5);
        g.suspect_to_down_ms = self.gossip_suspect_ms;
        g.max_members = self.gossip_max_members.max(1);
        g
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

/// Settings of `--dev` under `dir` (certificates are generated there by `main`).
pub fn dev_settings(dir: &Path) -> Settings {
    Settings {
        data_dir: Some(dir.to_path_buf()),
        node_name: Some("dev".to_owned()),
        bootstrap: Some(true),
        server_tls_cert_file: Some(dir.join("dev.pem")),
        server_tls_key_file: Some(dir.join("dev-key.pem")),
        server_tls_ca_file: Some(dir.join("ca.pem")),
        cluster_key_file: Some(dir.join("cluster.key")),
        ..Settings::default()
    }
}

#[cfg(test)]
mod tests;
