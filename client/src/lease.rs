//! Leases: grant, revoke, keep alive, time to live, and writes attached to a lease.
//!
//! A key written with [`Client::set_with_lease`] is deleted by the cluster when its lease is
//! revoked, or when the leader has had no keep-alive for the lease's TTL. Keep a lease alive
//! with [`Client::lease_keep_alive`] (a background task) or [`Client::lease_keep_alive_once`].
//! After a leader change the new leader restarts every lease's TTL in full, so a failover
//! never makes a lease expire early.

use std::time::Duration;

use mokv_proto::api::lease_client::LeaseClient;
use mokv_proto::api::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseSession,
    LeaseTimeToLiveRequest, SetRequest,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

use crate::types::{CasOutcome, Condition};
use crate::{Client, ClientError};

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease's id, to attach keys with and to keep it alive.
    pub id: u64,
    /// Its time to live.
    pub ttl: Duration,
    /// The revision (raft index) of the grant.
    pub revision: u64,
}

/// What [`Client::lease_time_to_live`] tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The TTL the lease was granted with.
    pub granted_ttl: Duration,
    /// What is left of it on the leader's clock.
    pub remaining: Duration,
    /// Attached keys (when asked for), at most the server's page size of them.
    pub keys: Vec<String>,
}

/// How a [`LeaseKeeper`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepAliveState {
    /// The last keep-alive was answered.
    Alive,
    /// The last keep-alive failed (no leader, a network error); the keeper keeps trying.
    Retrying(String),
    /// The lease is gone (expired or revoked): the keeper stopped.
    Gone,
}

/// A background task keeping a lease alive (a keep-alive every third of its TTL, retried
/// sooner after a failure). Stops when dropped, when [`LeaseKeeper::stop`] is called, or when
/// the lease is gone.
#[derive(Debug)]
pub struct LeaseKeeper {
    state: watch::Receiver<KeepAliveState>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// A receiver of the keeper's state, e.g. to notice that the lease is gone.
    pub fn state(&self) -> watch::Receiver<KeepAliveState> {
        self.state.clone()
    }

    /// Stops sending keep-alives; the lease then expires after its TTL.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lease_session(s: mokv_proto::api::Session) -> LeaseSession {
    LeaseSession { client_id: s.client_id, seq: s.seq, first_unacked_seq: s.first_unacked_seq }
}

/// Whether an error says the lease does not exist.
pub(crate) fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { code: Code::NotFound, .. })
}

impl Client {
    /// Grants a lease with `ttl` (rounded down to milliseconds; the cluster bounds it); the
    /// cluster picks its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, ClientError> {
        self.lease_grant_with_id(0, ttl).await
    }

    /// Grants a lease with id `id` (refused ALREADY_EXISTS if in use; 0: the cluster picks).
    pub async fn lease_grant_with_id(&self, id: u64, ttl: Duration) -> Result<Lease, ClientError> {
        let ttl_ms = millis(ttl);
        let build = |s| LeaseGrantRequest { ttl_ms, id, session: Some(lease_session(s)) };
        let resp = self
            .write_via(build, |t, req| {
                let mut c = LeaseClient::new(t.channel.clone());
                async move { c.grant(req).await }
            })
            .await?;
        Ok(Lease { id: resp.id, ttl: Duration::from_millis(resp.ttl_ms), revision: resp.revision })
    }

    /// Revokes lease `id`: its keys are deleted at the returned revision. NOT_FOUND
    /// ([`ClientError::Refused`]) when the lease is gone.
    pub async fn lease_revoke(&self, id: u64) -> Result<u64, ClientError> {
        let build = |s| LeaseRevokeRequest { id, session: Some(lease_session(s)) };
        let resp = self
            .write_via(build, |t, req| {
                let mut c = LeaseClient::new(t.channel.clone());
                async move { c.revoke(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    /// One keep-alive, sent to the leader; the TTL it restarted.
    pub async fn lease_keep_alive_once(&self, id: u64) -> Result<Duration, ClientError> {
        let resp = self
            .write_via(
                |_| LeaseKeepAliveRequest { id },
                |t, req| {
                    let mut c = LeaseClient::new(t.channel.clone());
                    async move {
                        let mut answers =
                            c.keep_alive(futures_util::stream::iter([req])).await?.into_inner();
                        match answers.message().await? {
                            Some(a) => Ok(tonic::Response::new(a)),
                            None => Err(tonic::Status::unavailable("keep-alive stream ended")),
                        }
                    }
                },
            )
            .await?;
        Ok(Duration::from_millis(resp.ttl_ms))
    }

    /// Keeps lease `id` alive from a background task until the returned keeper is dropped
    /// or stopped, or the lease is gone. `ttl` is the lease's TTL (the period is a third).
    pub fn lease_keep_alive(&self, id: u64, ttl: Duration) -> LeaseKeeper {
        let (tx, rx) = watch::channel(KeepAliveState::Alive);
        let client = self.clone();
        let period = (ttl / 3).max(Duration::from_millis(50));
        let task = tokio::spawn(async move {
            loop {
                let wait = match client.lease_keep_alive_once(id).await {
                    Ok(_) => {
                        tx.send_replace(KeepAliveState::Alive);
                        period
                    }
                    Err(e) if is_not_found(&e) => {
                        tx.send_replace(KeepAliveState::Gone);
                        return;
                    }
                    Err(e) => {
                        tx.send_replace(KeepAliveState::Retrying(e.to_string()));
                        period / 4
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        LeaseKeeper { state: rx, task }
    }

    /// The lease's granted TTL and what remains of it (from the leader), with its keys if
    /// `keys`.
    pub async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTtl, ClientError> {
        let resp = self
            .write_via(
                |_| LeaseTimeToLiveRequest { id, keys },
                |t, req| {
                    let mut c = LeaseClient::new(t.channel.clone());
                    async move { c.time_to_live(req).await }
                },
            )
            .await?;
        Ok(LeaseTtl {
            granted_ttl: Duration::from_millis(resp.granted_ttl_ms),
            remaining: Duration::from_millis(resp.remaining_ms),
            keys: resp.keys,
        })
    }

    /// Writes `value` under `key` attached to lease `lease`, only if `condition` holds when
    /// given (e.g. [`Condition::Absent`] for a lock). NOT_FOUND ([`ClientError::Refused`]) when
    /// the lease is gone.
    pub async fn set_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: u64,
        condition: Option<Condition>,
    ) -> Result<CasOutcome, ClientError> {
        let condition = condition.as_ref().map(Condition::wire);
        let build = |session| SetRequest {
            key: key.to_owned(),
            value: value.to_vec(),
            session: Some(session),
            condition: condition.clone(),
            lease,
        };
        let resp = self
            .write_via(build, |t, req| {
                let mut kv = t.kv.clone();
                async move { kv.set(req).await }
            })
            .await?;
        Ok(CasOutcome::from_wire(resp.revision, resp.condition_failed))
    }
}
