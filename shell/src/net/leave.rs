//! A node leaving for good says so itself, to every other member (`Peer.Leave`, over mTLS with
//! its own node certificate, each member dialed under its name). Gossip saying that a member
//! leaves is only a suggestion (anyone holding the cluster key can gossip it); this call is the
//! proof the leader removes the member on.

use std::time::Duration;

use mokv_core::NodeId;
use mokv_proto::peer::LeaveRequest;
use tokio::task::JoinSet;

use crate::net::identify::peer_client;
use crate::net::transport::PeerConnector;

/// Bound on one `Peer.Leave` call, connection included.
pub const LEAVE_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells each member of `to` (name, rpc address) that node `me` leaves, all at once; returns
/// how many acknowledged. Ends within [`LEAVE_CALL_TIMEOUT`] (plus scheduling).
pub async fn announce(connector: PeerConnector, me: NodeId, to: Vec<(String, String)>) -> usize {
    let mut calls = JoinSet::new();
    for (name, rpc_addr) in to {
        let connector = connector.clone();
        calls.spawn(async move {
            let Some(mut client) = peer_client(&connector, &name, &rpc_addr, LEAVE_CALL_TIMEOUT)
            else {
                return false;
            };
            let call = client.leave(LeaveRequest { raft_id: me });
            matches!(tokio::time::timeout(LEAVE_CALL_TIMEOUT, call).await, Ok(Ok(_)))
        });
    }
    let mut acknowledged = 0;
    while let Some(done) = calls.join_next().await {
        acknowledged += usize::from(done.unwrap_or(false));
    }
    acknowledged
}
