//! Proof of a gossiped identity (see `mokv_core::gossip::VerifyRequest`): dial the address
//! gossip suggested over peer mTLS, require the server certificate to be valid for the name
//! gossip claims (the node certificate `mokvd certs` issues names the node in its CN and SAN),
//! and ask the node who it is (`Peer.Identify`). Anyone holding the cluster key can gossip; only
//! the node's own certificate proves it.

use std::time::Duration;

use mokv_core::gossip::{NodeClaim, VerifyRequest};
use mokv_proto::peer::peer_client::PeerClient;
use mokv_proto::peer::IdentifyRequest;
use tonic::transport::{Channel, Endpoint};

use crate::net::transport::PeerConnector;

/// Whole verification, connection and name resolution included.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// The claim of the node `request.name` at `request.rpc_addr`, or `None` if it cannot be
/// reached or does not hold `request.name`'s certificate.
pub async fn verify(connector: &PeerConnector, request: &VerifyRequest) -> Option<NodeClaim> {
    tokio::time::timeout(VERIFY_TIMEOUT, ask(connector, request)).await.ok().flatten()
}

/// A `Peer` client for node `name` at `rpc_addr`: the connection is made only if the server
/// certificate is valid for `name` (not for the address). Each call is bounded by `timeout`.
pub fn peer_client(
    connector: &PeerConnector,
    name: &str,
    rpc_addr: &str,
    timeout: Duration,
) -> Option<PeerClient<Channel>> {
    let uri = format!("{}://{}", connector.scheme(), rpc_addr);
    let endpoint = Endpoint::from_shared(uri).ok()?.connect_timeout(timeout).timeout(timeout);
    let endpoint = match connector {
        PeerConnector::Tls(tls) => endpoint.tls_config(tls.clone().domain_name(name)).ok()?,
        PeerConnector::Plaintext(_) => endpoint,
    };
    Some(PeerClient::new(connector.connect_lazy(endpoint)))
}

async fn ask(connector: &PeerConnector, request: &VerifyRequest) -> Option<NodeClaim> {
    let mut client = peer_client(connector, &request.name, &request.rpc_addr, VERIFY_TIMEOUT)?;
    let answer = client.identify(IdentifyRequest {}).await.ok()?.into_inner();
    (answer.name == request.name && answer.raft_id == request.raft_id).then_some(NodeClaim {
        raft_id: answer.raft_id,
        cluster_id: answer.cluster_id,
        started_ms: answer.started_ms,
        leaving: answer.leaving,
        gossip_addr: answer.gossip_addr,
    })
}
