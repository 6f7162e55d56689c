//! Joining an existing cluster: ask the members in `start-join-addrs` (their rpc addresses for
//! now; gossip addresses once gossip lands) to add this node, following leader hints, with
//! capped exponential backoff, until one accepts or this node shows up in the member table.

use std::time::Duration;

use mokv_core::MemberInfo;
use mokv_proto::peer::JoinRequest;

use crate::driver::DriverHandle;
use crate::transport::PeerConnector;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the accepting leader said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub cluster_id: String,
}

/// Why joining stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("refused by {addr}: {message}")]
    Refused { addr: String, message: String },
}

/// Calls `Join` until accepted. Retries forever on transient failures; a refusal that cannot
/// change (another cluster, wrong certificate) ends it.
pub async fn join(
    handle: DriverHandle,
    me: MemberInfo,
    cluster_id: String,
    addrs: Vec<String>,
    peer: PeerConnector,
) -> Result<Joined, JoinError> {
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    let mut redirect: Option<String> = None;
    loop {
        if handle.view().members.contains_key(&me.id) {
            return Ok(Joined { cluster_id });
        }
        let addr = match redirect.take() {
            Some(a) => a,
            None => {
                let a = addrs[next % addrs.len()].clone();
                next += 1;
                a
            }
        };
        let req = JoinRequest {
            node_name: me.name.clone(),
            rpc_addr: me.rpc_addr.clone(),
            peer_addr: me.peer_addr.clone(),
            raft_id: me.id,
            cluster_id: cluster_id.clone(),
        };
        match try_join(&addr, &peer, req).await {
            Ok(r) if r.accepted => {
                tracing::info!(%addr, leader = r.leader_id, "joined the cluster");
                if r.leader_id != 0 && !r.leader_rpc_addr.is_empty() {
                    handle.learn_address(r.leader_id, r.leader_rpc_addr).await;
                }
                return Ok(Joined { cluster_id: r.cluster_id });
            }
            Ok(r) => {
                tracing::info!(%addr, leader = %r.leader_rpc_addr, "not the leader; following hint");
                if !r.leader_rpc_addr.is_empty() && r.leader_rpc_addr != addr {
                    redirect = Some(r.leader_rpc_addr);
                    continue;
                }
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                ) =>
            {
                return Err(JoinError::Refused { addr, message: s.message().to_owned() });
            }
            Err(s) => {
                // Leader hint on UNAVAILABLE answers too.
                if let Some(a) = s.metadata().get(mokv_proto::LEADER_HINT_ADDR) {
                    if let Ok(a) = a.to_str() {
                        if !a.is_empty() && a != addr {
                            redirect = Some(a.to_owned());
                        }
                    }
                }
                tracing::info!(%addr, code = ?s.code(), msg = s.message(), "join attempt failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn try_join(
    addr: &str,
    peer: &PeerConnector,
    req: JoinRequest,
) -> Result<mokv_proto::peer::JoinResponse, tonic::Status> {
    let endpoint = crate::peer_link::endpoint(addr, peer)
        .map_err(|e| tonic::Status::invalid_argument(format!("join address {addr}: {e}")))?
        .timeout(JOIN_TIMEOUT);
    let channel = peer
        .connect(endpoint)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connecting to {addr}: {e}")))?;
    let mut client = crate::peer_link::client(channel);
    Ok(client.join(req).await?.into_inner())
}
