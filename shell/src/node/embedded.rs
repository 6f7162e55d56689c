//! Starting a node inside another program, over that program's network: the simulator's entry
//! point (level 2: the real services, driver and core over turmoil's simulated TCP).
//!
//! Compared with [`crate::node::server::start`], the embedding program supplies what `mokvd` takes
//! from the operating system and its configuration: the accepted connections (plaintext; the
//! program vouches for each caller with [`crate::security::identity::VouchedIdentity`]), the outgoing
//! connector ([`ChannelFactory`]), the storage, the node id, the seed of the core's randomness
//! and the wall clock. Everything else is the same code: the driver, the `KV` and `Peer`
//! services, health, the status mapping. No TLS, no files, no OS threads, no OS randomness,
//! no gossip: members are added by the embedding program (an `AddLearner` request to the
//! leader's driver, as the gossip reconciler would). Authorization uses the built-in default
//! policy (`root` may do everything).
//!
//! `mokvd` never calls this: no configuration key or flag leads here.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use mokv_core::{MemberInfo, Node};
use tokio::sync::watch;

use crate::net::transport::{ChannelFactory, PeerConnector};
use crate::node::driver::{Driver, DriverConfig};
use crate::node::server::{self, RunningNode, Services, StartError};
use crate::security::authz;
use crate::storage::Storage;

/// What the embedding program decides about one node.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub name: String,
    /// The core's settings; `core.id` is the node id, `core.seed` seeds its randomness.
    pub core: mokv_core::Config,
    /// The address other nodes and clients reach this node at (`host:port`).
    pub rpc_addr: String,
    /// Where the incoming connections arrive.
    pub local_addr: SocketAddr,
    /// `Some(cluster id)`: start a new one-node cluster if the storage is empty.
    pub bootstrap: Option<u64>,
    pub tick: Duration,
    pub max_concurrent_streams: u32,
    /// The wall clock in milliseconds (session expiry).
    pub now_ms: fn() -> u64,
}

/// Starts a node serving on `incoming` and dialing peers through `connect`.
pub async fn start<I, IO, IE>(
    cfg: EmbeddedConfig,
    storage: Arc<dyn Storage>,
    connect: ChannelFactory,
    incoming: I,
) -> Result<RunningNode, StartError>
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
    let authz = authz::Authorizer::defaults().await?;
    let id = cfg.core.id;
    let me = MemberInfo {
        id,
        name: cfg.name.clone(),
        peer_addr: cfg.rpc_addr.clone(),
        rpc_addr: cfg.rpc_addr.clone(),
        auto_promote: true,
    };
    let mut durable = storage.load()?;
    if let (true, Some(cluster_id)) = (durable.is_empty(), cfg.bootstrap) {
        let cluster_id = NonZeroU64::new(cluster_id).ok_or(StartError::Meta("cluster id 0"))?;
        storage.write(&[Node::bootstrap(&me, &cfg.core, cluster_id)])?;
        durable = storage.load()?;
    }
    let node = Node::new(cfg.core.clone(), durable)?;
    // Never replaced: the sender is dropped at once.
    let (_, peer) = watch::channel(PeerConnector::Plaintext(connect));
    let (driver, handle) =
        Driver::new(node, storage.clone(), DriverConfig { tick: cfg.tick, peer });
    let driver = tokio::spawn(driver.with_clock(cfg.now_ms).run());

    let stopping = Arc::new(AtomicBool::new(false));
    let services = Services {
        handle: handle.clone(),
        stopping: stopping.clone(),
        authz,
        max_key_bytes: cfg.core.max_key_bytes,
        max_value_bytes: cfg.core.max_value_bytes,
        max_txn_bytes: cfg.core.max_txn_bytes,
        max_concurrent_streams: cfg.max_concurrent_streams,
        page_tokens: crate::net::page_token::PageTokens::embedded(id),
        watch_queue_max_bytes: crate::net::watch_service::DEFAULT_QUEUE_MAX_BYTES,
        max_page_bytes: cfg.core.max_page_bytes,
        max_snapshot_bytes: crate::net::peer_service::DEFAULT_MAX_SNAPSHOT_BYTES,
    };
    let (server_stop, server, health) = server::serve(incoming, None, services)?;
    let background =
        vec![tokio::spawn(server::report_health(health, handle.watch(), stopping.clone()))];
    Ok(RunningNode {
        id,
        local_addr: cfg.local_addr,
        rpc_addr: cfg.rpc_addr,
        gossip_addr: String::new(),
        gossip_local_addr: None,
        leave_on_shutdown: false,
        handle,
        stopping,
        server_stop: Some(server_stop),
        server,
        driver,
        background,
    })
}
