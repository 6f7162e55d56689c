//! Starting and stopping one node: disk → core node (with gossip) → driver → gRPC server (KV,
//! Peer, health, reflection) on one mTLS port + the gossip socket on `bind-addr`, and the
//! graceful shutdown sequence (optionally leaving the cluster for good).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mokv_core::gossip::GossipId;
use mokv_core::persist::{NodeMeta, PersistBatch, MAX_REMEMBERED_PEERS};
use mokv_core::{MemberInfo, Node, NodeId, Request, Role};
use mokv_proto::api::cluster_server::ClusterServer;
use mokv_proto::api::kv_server::KvServer;
use mokv_proto::api::lease_server::LeaseServer;
use mokv_proto::api::maintenance_server::MaintenanceServer;
use mokv_proto::api::watch_server::WatchServer;
use mokv_proto::peer::peer_server::PeerServer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::config::NodeConfig;
use crate::net::cluster_service::ClusterService;
use crate::net::gossip_net;
use crate::net::kv_service::KvService;
use crate::net::lease_service::LeaseService;
use crate::net::maintenance_service::MaintenanceService;
use crate::net::page_token::PageTokens;
use crate::net::peer_link::MAX_PEER_MESSAGE_BYTES;
use crate::net::peer_service::PeerService;
use crate::net::server_stop;
use crate::net::transport::PeerConnector;
use crate::net::watch_service::{WatchLimits, WatchService};
use crate::node::driver::{Driver, DriverConfig, DriverError, DriverHandle, View};
use crate::node::handle::NodeHandle;
use crate::security::{authz, gossip_crypto, tls};
use crate::storage::disk::Disk;
use crate::storage::Storage;

/// The node's Raft id (8 big-endian bytes): chosen by the shell before the core starts.
pub(crate) const META_NODE_ID: &str = "node-id";
/// Where data dirs written before the core kept its own metadata (`NodeMeta`) hold the
/// cluster id (16 hex digits) and the remembered gossip peers (lines of `<raft id> <gossip
/// address>`). Read once, when the core's metadata is absent (see [`legacy_node_meta`]).
const LEGACY_META_CLUSTER_ID: &str = "cluster-id";
const LEGACY_META_GOSSIP_PEERS: &str = "gossip-peers";
/// How long a leader waits for its leadership transfer at shutdown.
const TRANSFER_WAIT: Duration = Duration::from_secs(3);
/// How long the server gets to finish in-flight requests at shutdown. Long-lived streams end
/// on the server's stop (`net::server_stop`), so only a client that stops reading (or a
/// snapshot transfer in flight) is still open when this runs out.
const DRAIN_WAIT: Duration = Duration::from_secs(3);
/// How long a leaving node waits to see its removal before it stops gossiping anyway (the
/// leader removes a leaving member even once it is gone).
const LEAVE_WAIT: Duration = Duration::from_secs(10);
/// How often a leaving node tells the other members again, until it sees its removal.
const LEAVE_ANNOUNCE_INTERVAL: Duration = Duration::from_millis(500);
/// Time for the last gossip datagrams (our own "down") to leave the socket.
const GOSSIP_FLUSH: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Disk(#[from] crate::storage::disk::DiskError),
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("corrupt node metadata: {0}")]
    Meta(&'static str),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("TLS configuration: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("recovering the raft state: {0}")]
    Recovery(#[from] mokv_core::RecoveryError),
    #[error("randomness: {0}")]
    Random(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("authorization: {0}")]
    Authz(#[from] authz::AuthzError),
}

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    pub id: u64,
    /// Where the rpc port is bound (port 0 in the config gives a free port).
    pub local_addr: SocketAddr,
    /// The address others use (advertise host + bound port).
    pub rpc_addr: String,
    /// The advertised gossip (UDP) address: what other nodes list in `start-join-addrs`.
    pub gossip_addr: String,
    /// Where the gossip (UDP) socket is bound (port 0 in `bind-addr` gives a free port);
    /// `None` for an embedded node, which has no gossip.
    pub gossip_local_addr: Option<SocketAddr>,
    pub(crate) leave_on_shutdown: bool,
    pub(crate) handle: DriverHandle,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) server_stop: Option<oneshot::Sender<()>>,
    pub(crate) server: JoinHandle<Result<(), tonic::transport::Error>>,
    pub(crate) driver: JoinHandle<Result<(), DriverError>>,
    pub(crate) background: Vec<JoinHandle<()>>,
}

fn random_u64() -> Result<u64, StartError> {
    getrandom::u64().map_err(|e| StartError::Random(e.to_string()))
}

/// Starts a node as configured. Returns once the port is bound and the driver runs.
pub async fn start(cfg: &NodeConfig) -> Result<RunningNode, StartError> {
    // Authorization first: a bad model or policy file stops the start before anything is touched.
    let authz =
        authz::Authorizer::load(cfg.acl_model_file.as_deref(), cfg.acl_policy_file.as_deref())
            .await?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let disk = Arc::new(Disk::open(&cfg.data_dir.join("raft"))?);
    let id = match disk.get_meta(META_NODE_ID)? {
        Some(b) => {
            let b: [u8; 8] = b.as_slice().try_into().map_err(|_| StartError::Meta("node id"))?;
            u64::from_be_bytes(b)
        }
        None => {
            let mut id = 0;
            while id == 0 {
                id = random_u64()?;
            }
            disk.put_meta(META_NODE_ID, &id.to_be_bytes())?;
            id
        }
    };

    // Bind first: with port 0 the advertised address needs the real port.
    let bind = SocketAddr::new(cfg.listen_host, cfg.rpc_port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| StartError::Bind { addr: bind, source })?;
    let local_addr =
        listener.local_addr().map_err(|source| StartError::Bind { addr: bind, source })?;
    let rpc_addr = format_addr(&cfg.advertise_host, local_addr.port());
    let me = MemberInfo {
        id,
        name: cfg.node_name.clone(),
        peer_addr: rpc_addr.clone(),
        rpc_addr: rpc_addr.clone(),
        auto_promote: true,
    };

    // Gossip on bind-addr's host and port (port 0: a free one, advertised as bound), or on
    // the socket handed over on stdin.
    let gossip_bind = SocketAddr::new(cfg.listen_host, port_of(&cfg.bind_addr));
    let udp = if cfg.gossip_socket_on_stdin {
        crate::net::inherited::udp_socket_on_stdin()
    } else {
        tokio::net::UdpSocket::bind(gossip_bind).await
    }
    .map_err(|source| StartError::Bind { addr: gossip_bind, source })?;
    let gossip_local_addr =
        udp.local_addr().map_err(|source| StartError::Bind { addr: gossip_bind, source })?;
    let gossip_port = gossip_local_addr.port();
    let gossip_addr = format_addr(&cfg.advertise_host, gossip_port);

    let mut core_config = cfg.core_config(id, random_u64()?);
    let mut durable = disk.load()?;
    if durable.node_meta.is_none() {
        if let Some(meta) = legacy_node_meta(&*disk)? {
            disk.write(&[PersistBatch {
                node_meta: Some(meta.encode()),
                must_sync: true,
                ..PersistBatch::default()
            }])?;
            durable = disk.load()?;
        }
    }
    let fresh = durable.is_empty();
    if fresh && cfg.bootstrap {
        tracing::info!(id, name = %cfg.node_name, "bootstrapping a new cluster");
        let cluster_id = loop {
            if let Some(id) = NonZeroU64::new(random_u64()?) {
                break id;
            }
        };
        disk.write(&[Node::bootstrap(&me, &core_config, cluster_id)])?;
        durable = disk.load()?;
    } else if fresh && cfg.start_join_addrs.is_empty() {
        tracing::warn!("empty data dir, no bootstrap and no start-join-addrs: waiting to be found");
    }
    let identity = GossipId {
        gossip_addr: gossip_addr.clone(),
        name: cfg.node_name.clone(),
        raft_id: id,
        rpc_addr: rpc_addr.clone(),
        // The core gossips the cluster id it stored, and the peers it remembered are seeds.
        cluster_id: 0,
        started_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        bump: 0,
        leaving: false,
    };
    core_config.gossip = Some(cfg.gossip_config(identity));
    let replay_started = std::time::Instant::now();
    let log_entries = durable.entries.len();
    let node = Node::new(core_config, durable)?;
    tracing::info!(
        log_entries,
        ms = replay_started.elapsed().as_millis() as u64,
        "replayed the raft log on the snapshot"
    );
    crate::metrics::quota_state_bytes(cfg.quota_state_bytes);

    // Reloaded peer certificates reach the driver's links through this channel.
    let (peer_tls, peer_connector) =
        watch::channel(PeerConnector::Tls(tls::client_config(&cfg.peer_tls)?));
    let server_tls =
        tls::ReloadableServerTls::load(&cfg.server_tls, cfg.server_tls_crl_file.as_deref())?;
    let rustls_config = server_tls.server_config()?;
    let (mut driver, handle) = Driver::new(
        node,
        disk.clone(),
        DriverConfig { tick: Duration::from_millis(cfg.tick_ms), peer: peer_connector },
    );
    let key = gossip_crypto::ClusterKey::new(&cfg.cluster_key.0);
    let gossip = gossip_net::spawn(udp, key, handle.gossip_inbound());
    driver.set_gossip_outbound(gossip.outbound.clone());
    let driver = driver.spawn_on_own_thread();

    let stopping = Arc::new(AtomicBool::new(false));
    // TLS is terminated here rather than by tonic so that certificates can be reloaded.
    let gate = crate::net::conn_gate::ConnGate::new(cfg.conn_limits(), handle.clone());
    let anonymous_max_age = Duration::from_millis(cfg.anonymous_connection_max_age_ms);
    let incoming =
        tls::incoming(listener, rustls_config, server_tls.connections(), gate, anonymous_max_age);
    let anonymous = tls::AnonymousLimits {
        max_age: anonymous_max_age,
        max_concurrent_streams: cfg.anonymous_max_concurrent_streams,
    };
    let services = Services {
        handle: handle.clone(),
        stopping: stopping.clone(),
        authz: authz.clone(),
        max_key_bytes: cfg.max_key_bytes,
        max_value_bytes: cfg.max_value_bytes,
        max_txn_bytes: cfg.max_txn_bytes,
        max_concurrent_streams: cfg.max_concurrent_streams,
        page_tokens: PageTokens::from_cluster_key(&cfg.cluster_key.0),
        watch_queue_max_bytes: cfg.watch_queue_max_bytes,
        max_page_bytes: cfg.max_page_bytes,
        max_snapshot_bytes: cfg.max_snapshot_bytes,
    };
    let (server_stop, server, health) =
        serve(incoming.authenticated, Some((incoming.anonymous, anonymous)), services)?;

    let mut background = vec![
        tokio::spawn(report_health(health, handle.watch(), stopping.clone())),
        tokio::spawn(tls::watch(server_tls, tls::CERT_RELOAD_INTERVAL)),
        tokio::spawn(tls::watch_peer(
            cfg.peer_tls.clone(),
            tls::CERT_RELOAD_INTERVAL,
            move |reloaded| {
                peer_tls.send_replace(PeerConnector::Tls(reloaded));
            },
        )),
    ];
    background.extend(gossip.tasks);
    if cfg.acl_model_file.is_some() || cfg.acl_policy_file.is_some() {
        background.push(tokio::spawn(authz::watch(
            authz,
            cfg.acl_model_file.clone(),
            cfg.acl_policy_file.clone(),
            authz::RELOAD_INTERVAL,
        )));
    }
    tracing::info!(id, %local_addr, %rpc_addr, %gossip_addr, "node started");
    Ok(RunningNode {
        id,
        local_addr,
        rpc_addr,
        gossip_addr,
        gossip_local_addr: Some(gossip_local_addr),
        leave_on_shutdown: cfg.leave_on_shutdown,
        handle,
        stopping,
        server_stop: Some(server_stop),
        server,
        driver,
        background,
    })
}

/// What the gRPC server of a node serves, and its limits.
pub(crate) struct Services {
    pub handle: DriverHandle,
    pub stopping: Arc<AtomicBool>,
    pub authz: authz::Authorizer,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// The core's `max_txn_bytes`: a transaction up to it must fit in one request message.
    pub max_txn_bytes: usize,
    pub max_concurrent_streams: u32,
    /// Seals `Range` page tokens (the same key on every node of a cluster).
    pub page_tokens: PageTokens,
    /// Bound on the live queue of one watcher (`watch-queue-max-bytes`).
    pub watch_queue_max_bytes: usize,
    /// Bound on one catch-up page of a watch (`max-page-bytes`).
    pub max_page_bytes: usize,
    /// Largest snapshot file accepted from a peer (`max-snapshot-bytes`).
    pub max_snapshot_bytes: u64,
}

type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Cert-less TLS connections and how they are served: with their own limits, by a second
/// server (tonic sets HTTP/2 limits per server, not per connection).
pub(crate) type AnonymousIncoming = (
    tokio_stream::wrappers::ReceiverStream<Result<tls::MtlsConn, std::io::Error>>,
    tls::AnonymousLimits,
);

/// Spawns the gRPC server (KV, Peer, health, reflection) on `incoming`: mokvd's TLS
/// connections, or an embedding program's plaintext ones ([`crate::node::embedded`]); and, with
/// `anonymous`, the same services on mokvd's cert-less connections, with few streams per
/// connection and a maximum connection age (GOAWAY; `tls::incoming` closes them a grace later).
/// Returns the stop signal (for both), the server task and the health reporter.
pub(crate) fn serve<I, IO, IE>(
    incoming: I,
    anonymous: Option<AnonymousIncoming>,
    s: Services,
) -> Result<(oneshot::Sender<()>, ServerTask, tonic_health::server::HealthReporter), StartError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mokv_proto::FILE_DESCRIPTOR_SET)
        // Health too, so that `grpcurl list` shows it and `describe` can explain it.
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let cluster = ClusterServer::new(ClusterService::new(
        s.handle.clone(),
        s.stopping.clone(),
        s.authz.clone(),
    ));
    let maintenance = MaintenanceServer::new(MaintenanceService::new(
        s.handle.clone(),
        s.stopping.clone(),
        s.authz.clone(),
    ));
    let request_limit = (s.max_value_bytes * 2 + s.max_key_bytes).max(s.max_txn_bytes) + (64 << 10);
    let kv = KvServer::new(KvService::new(
        s.handle.clone(),
        s.stopping.clone(),
        s.authz.clone(),
        s.page_tokens,
    ))
    .max_decoding_message_size(request_limit)
    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let watch_limits = WatchLimits {
        page_max_bytes: s.max_page_bytes,
        queue_max_bytes: s.watch_queue_max_bytes,
        max_key_bytes: s.max_key_bytes,
    };
    // Both servers stop on the one signal, and with them the streams that would otherwise
    // hold their drain open until `DRAIN_WAIT` (see `net::server_stop`).
    let (stop_trigger, stop) = server_stop::server_stop();
    let watch = WatchServer::new(WatchService::new(
        s.handle.clone(),
        s.stopping.clone(),
        stop.clone(),
        s.authz.clone(),
        watch_limits,
    ))
    .max_decoding_message_size(request_limit)
    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let lease = LeaseServer::new(LeaseService::new(
        s.handle.clone(),
        s.stopping.clone(),
        stop.clone(),
        s.authz.clone(),
    ))
    .max_decoding_message_size(request_limit)
    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let peer = PeerServer::new(
        PeerService::new(s.handle, stop.clone()).with_max_snapshot_bytes(s.max_snapshot_bytes),
    )
    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);

    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(kv)
        .add_service(cluster)
        .add_service(maintenance)
        .add_service(watch)
        .add_service(lease)
        .add_service(peer)
        .add_service(health_service)
        .add_service(reflection);
    let routes = routes.routes().prepare();

    let (server_stop, stop_rx) = oneshot::channel::<()>();
    let stop_signal = move || {
        let stop = stop.clone();
        async move { stop.stopped().await }
    };
    let builder = || {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
    };
    let layers = tower::ServiceBuilder::new()
        .layer(tower::util::MapResponseLayer::new(oversized_is_invalid_argument))
        .layer(crate::metrics::rpc_layer::RpcMetricsLayer)
        .into_inner();
    let main = builder()
        .max_concurrent_streams(Some(s.max_concurrent_streams))
        .layer(layers.clone())
        .serve_with_incoming_shutdown(routes.clone(), incoming, stop_signal());
    let anonymous = anonymous.map(|(incoming, limits)| {
        builder()
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .max_connection_age(limits.max_age)
            .layer(layers)
            .serve_with_incoming_shutdown(routes, incoming, stop_signal())
    });
    let server = async move {
        let stop = async move {
            let _ = stop_rx.await;
            stop_trigger.stop();
        };
        let anonymous = async move {
            match anonymous {
                Some(a) => a.await,
                None => Ok(()),
            }
        };
        let ((), main, anonymous) = tokio::join!(stop, main, anonymous);
        main.and(anonymous)
    };
    Ok((server_stop, tokio::spawn(server), health))
}

/// tonic's decoder refuses a request beyond `max_decoding_message_size` with OUT_OF_RANGE
/// before any handler runs; mokv reports every over-limit input as INVALID_ARGUMENT (the core
/// does for keys and values), so this rewrites that one status. It travels in the headers of
/// a trailers-only response (the request is decoded before anything is sent).
fn oversized_is_invalid_argument<B>(mut resp: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &[u8] = b"11";
    let h = resp.headers();
    let oversized = h.get("grpc-status").is_some_and(|v| v.as_bytes() == OUT_OF_RANGE)
        && h.get("grpc-message").is_some_and(|v| {
            let m = v.as_bytes();
            contains(m, b"decoded message length too large")
                || contains(m, b"decoded%20message%20length%20too%20large")
        });
    if oversized {
        let h = resp.headers_mut();
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("request%20exceeds%20the%20message%20size%20limit"),
        );
    }
    resp
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The port of `host:port` (0 if it has none: a free port).
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0)
}

/// The cluster id and the remembered gossip peers of a data dir written before the core kept
/// them (`NodeMeta`), if it holds either: they become the core's metadata.
fn legacy_node_meta(disk: &dyn Storage) -> Result<Option<NodeMeta>, StartError> {
    let cluster_id = disk.get_meta(LEGACY_META_CLUSTER_ID)?;
    let peers = disk.get_meta(LEGACY_META_GOSSIP_PEERS)?;
    if cluster_id.is_none() && peers.is_none() {
        return Ok(None);
    }
    let cluster_id = match cluster_id {
        Some(b) => Some(parse_legacy_cluster_id(&b).ok_or(StartError::Meta("cluster id"))?),
        None => None,
    };
    let gossip_peers = peers.map(|b| parse_legacy_gossip_peers(&b)).unwrap_or_default();
    Ok(Some(NodeMeta { cluster_id, gossip_peers }))
}

/// 16 hex digits, non-zero.
fn parse_legacy_cluster_id(bytes: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(bytes).ok()?;
    u64::from_str_radix(s.trim(), 16).ok().filter(|id| *id != 0)
}

/// Lines of `<raft id> <gossip address>`; malformed lines are skipped.
fn parse_legacy_gossip_peers(bytes: &[u8]) -> BTreeMap<NodeId, String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| {
            let (id, addr) = l.split_once(' ')?;
            let id: NodeId = id.parse().ok()?;
            let addr = addr.trim();
            let fits = id != 0
                && !addr.is_empty()
                && addr.len() <= mokv_core::gossip::MAX_IDENTITY_FIELD_BYTES;
            fits.then(|| (id, addr.to_owned()))
        })
        .take(MAX_REMEMBERED_PEERS)
        .collect()
}

/// `host:port`, bracketing IPv6 literals.
fn format_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// SERVING only while the node serves as a full member ([`crate::node::health::serving`]) and
/// is not shutting down.
pub(crate) async fn report_health(
    health: tonic_health::server::HealthReporter,
    mut view: watch::Receiver<View>,
    stopping: Arc<AtomicBool>,
) {
    let mut last = None;
    loop {
        let serving = crate::node::health::serving(&view.borrow_and_update().status)
            && !stopping.load(Ordering::Relaxed);
        if last != Some(serving) {
            let s = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set_service_status("", s).await;
            health.set_service_status("api.KV", s).await;
            last = Some(serving);
        }
        // Re-check at least every second (the stopping flag has no channel).
        let _ = tokio::time::timeout(Duration::from_secs(1), view.changed()).await;
    }
}

impl RunningNode {
    /// Leaves the cluster for good: announces it in gossip (a leader hands over first), waits
    /// (bounded) until this node's removal is applied here, then declares itself down.
    async fn leave(&mut self) {
        tracing::info!("leaving the cluster");
        self.handle.leave().await;
        let id = self.id;
        let mut w = self.handle.watch();
        // Gossip's leaving flag is only a suggestion: the other members hear it from this
        // node itself (`Peer.Leave`), again until the removal is seen (a new leader, a lost
        // call).
        let removed = tokio::time::timeout(LEAVE_WAIT, async {
            loop {
                if !w.borrow_and_update().status.conf.all_ids().contains(&id) {
                    return;
                }
                self.handle.announce_leave().await;
                if let Ok(Err(_)) = tokio::time::timeout(LEAVE_ANNOUNCE_INTERVAL, w.changed()).await
                {
                    return;
                }
            }
        })
        .await
        .is_ok();
        if !removed {
            tracing::warn!("removal not seen in time; leaving gossip anyway");
        }
        self.handle.gossip_stop().await;
        tokio::time::sleep(GOSSIP_FLUSH).await;
    }

    /// A handle on the node: its view, and requests to its core.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle::new(self.handle.clone())
    }

    /// Resolves when the node stops on its own (a disk failure); the error says why.
    pub async fn wait_failed(&mut self) -> Result<(), DriverError> {
        match (&mut self.driver).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::DiskWriterGone),
        }
    }

    /// Graceful stop: turn clients away, hand leadership over, stop the server, flush the
    /// disk, stop the driver.
    pub async fn shutdown(mut self) -> Result<(), DriverError> {
        self.stopping.store(true, Ordering::Relaxed);
        if self.leave_on_shutdown {
            self.leave().await;
        }
        let view = self.handle.view();
        if view.status.role == Role::Leader {
            let target = view.status.conf.voters.iter().copied().find(|v| *v != self.id);
            if let Some(to) = target {
                tracing::info!(to, "transferring leadership before shutdown");
                let _ = self.handle.call(Request::TransferLeader { to }).await;
                let mut w = self.handle.watch();
                let _ = tokio::time::timeout(TRANSFER_WAIT, async {
                    loop {
                        let v = w.borrow_and_update().clone();
                        if v.status.role != Role::Leader {
                            break;
                        }
                        if w.changed().await.is_err() {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        if let Some(s) = self.server_stop.take() {
            let _ = s.send(());
        }
        let draining = std::time::Instant::now();
        if tokio::time::timeout(DRAIN_WAIT, &mut self.server).await.is_err() {
            tracing::warn!(
                bound_ms = DRAIN_WAIT.as_millis() as u64,
                "requests still open at the drain bound; closing their connections"
            );
            self.server.abort();
        } else {
            tracing::info!(took_ms = draining.elapsed().as_millis() as u64, "server drained");
        }
        for b in &self.background {
            b.abort();
        }
        // Wait until they are gone: some hold the RocksDB handle, whose lock a restart in the
        // same process needs.
        for b in self.background.drain(..) {
            let _ = b.await;
        }
        self.handle.stop().await;
        match (&mut self.driver).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::DiskWriterGone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mokv_core::persist::DurableState;

    /// A data dir from before the core kept its metadata: the old meta keys become the core's
    /// `NodeMeta`, which a node starts from (gossiping that cluster id, seeded by those peers).
    #[test]
    fn legacy_meta_keys_become_the_cores_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path()).unwrap();
        assert_eq!(legacy_node_meta(&disk).unwrap(), None, "a fresh dir has none");
        disk.put_meta(LEGACY_META_CLUSTER_ID, b"00000000deadbeef").unwrap();
        disk.put_meta(
            LEGACY_META_GOSSIP_PEERS,
            b"7 10.0.0.7:8401\nbad line\n0 x:1\n9 10.0.0.9:8401\n",
        )
        .unwrap();
        let meta = legacy_node_meta(&disk).unwrap().unwrap();
        assert_eq!(meta.cluster_id, Some(0xdead_beef));
        assert_eq!(
            meta.gossip_peers,
            BTreeMap::from([(7, "10.0.0.7:8401".to_owned()), (9, "10.0.0.9:8401".to_owned())])
        );
        disk.write(&[PersistBatch { node_meta: Some(meta.encode()), ..PersistBatch::default() }])
            .unwrap();
        let durable: DurableState = disk.load().unwrap();
        assert_eq!(NodeMeta::decode(durable.node_meta.as_deref().unwrap()).unwrap(), meta);

        disk.put_meta(LEGACY_META_CLUSTER_ID, b"not hex").unwrap();
        assert!(matches!(legacy_node_meta(&disk), Err(StartError::Meta("cluster id"))));
    }
}
