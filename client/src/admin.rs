//! Operator calls: the `Cluster` service (`cluster.proto`) behind `mokv status` and
//! `mokv member`. They need an identity the cluster's policy gives the action `admin` on the
//! object `cluster` (the default policy: `root` only).
//!
//! [`Admin::cluster_status`] builds the whole-cluster table by asking every member for its
//! own numbers (role, term, commit and applied index, version): each node knows only its own
//! exactly. Health (gossip) and last contact come from the leader's answer (it hears from
//! every member), else from the first node that answered. A member that does not answer in
//! time is listed with what the others know of it and the error.
//!
//! Removal and leadership transfer are the leader's: a follower's UNAVAILABLE answer with a
//! leader hint is followed, and UNAVAILABLE (nothing was applied) is retried on the endpoints
//! within the call deadline; removing the leader itself thus hands leadership over first and
//! is then done by the new leader.

use std::time::Duration;

use mokv_proto::api::cluster_client::ClusterClient;
use mokv_proto::api::{
    MemberListRequest, MemberRemoveRequest, MemberRole, MemberStatusRequest, MemberStatusResponse,
    MemberView, TransferLeaderRequest,
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::{ClientError, Health, TlsFiles};

/// Pause before a call is retried on the next endpoint (no leader hint to follow).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A member's part in the current term, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RaftRole {
    /// Follows a leader (or waits for one).
    Follower,
    /// Checks whether it could win an election before starting one.
    PreCandidate,
    /// Runs for leader.
    Candidate,
    /// The leader.
    Leader,
}

impl RaftRole {
    fn from_wire(r: i32) -> RaftRole {
        match MemberRole::try_from(r) {
            Ok(MemberRole::RoleLeader) => RaftRole::Leader,
            Ok(MemberRole::RoleCandidate) => RaftRole::Candidate,
            Ok(MemberRole::RolePreCandidate) => RaftRole::PreCandidate,
            _ => RaftRole::Follower,
        }
    }

    /// Lower-case name (`leader`, `follower`, `pre-candidate`, `candidate`).
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Follower => "follower",
            RaftRole::PreCandidate => "pre-candidate",
            RaftRole::Candidate => "candidate",
            RaftRole::Leader => "leader",
        }
    }
}

/// One member of the configuration as one node knows it ([`Admin::members`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// Its node name.
    pub name: String,
    /// Its Raft id.
    pub raft_id: u64,
    /// Its client (rpc) address.
    pub rpc_addr: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// Its health in the answering node's gossip view.
    pub health: Health,
    /// It is the leader, as the answering node knows.
    pub is_leader: bool,
}

/// One row of [`Admin::cluster_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its node name.
    pub name: String,
    /// Its Raft id.
    pub raft_id: u64,
    /// Its client (rpc) address.
    pub rpc_addr: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// Its own role (`None`: it did not answer).
    pub role: Option<RaftRole>,
    /// Its own current term.
    pub term: Option<u64>,
    /// Its commit index.
    pub commit_index: Option<u64>,
    /// Its applied index.
    pub applied_index: Option<u64>,
    /// Entries it has yet to apply: the leader's commit index minus its applied index.
    pub lag_entries: Option<u64>,
    /// Its health in the leader's gossip view (or the first answering node's).
    pub health: Health,
    /// Milliseconds since the leader last heard from it over Raft (`None` for the leader
    /// itself, or when no leader answered).
    pub last_contact_ms: Option<u64>,
    /// The mokvd version it runs.
    pub version: Option<String>,
    /// Why it did not answer (no message text from a key or value).
    pub error: Option<String>,
}

/// The whole-cluster table of [`Admin::cluster_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// One row per member of the configuration, ordered by name.
    pub members: Vec<MemberStatus>,
    /// The cluster id (0: not known).
    pub cluster_id: u64,
}

/// Operator calls over mutual TLS (see the module documentation).
#[derive(Debug, Clone)]
pub struct Admin {
    endpoints: Vec<String>,
    tls: ClientTlsConfig,
    /// Bound on one rpc to one node.
    timeout: Duration,
    /// Bound on one call, retries included.
    call_timeout: Duration,
}

impl Admin {
    /// Operator calls to the nodes at `endpoints` (`host:port`; any member will do): each rpc
    /// bounded by `rpc_timeout`, each call (retries included) by `call_timeout`.
    pub fn connect(
        endpoints: Vec<String>,
        tls: &TlsFiles,
        rpc_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Admin, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints".into()));
        }
        let timeout = rpc_timeout.max(Duration::from_millis(1));
        let call_timeout = call_timeout.max(timeout);
        Ok(Admin { endpoints, tls: tls.load()?, timeout, call_timeout })
    }

    fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, ClientError> {
        let uri = if addr.contains("://") { addr.to_owned() } else { format!("https://{addr}") };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|_| ClientError::Config("invalid endpoint address".into()))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tls_config(self.tls.clone())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(ClusterClient::new(endpoint.connect_lazy()))
    }

    /// Runs `call` until a node answers, within the call deadline: on the leader a hint
    /// names, else on the endpoints in turn. UNAVAILABLE (unreachable, not the leader, a
    /// leadership transfer under way: nothing was applied) is retried after a pause; any other
    /// answer is final.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(ClusterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        let mut next_endpoint = 0;
        let mut hint: Option<String> = None;
        let mut attempts = 0u32;
        loop {
            let addr = hint.take().unwrap_or_else(|| {
                next_endpoint += 1;
                self.endpoints[(next_endpoint - 1) % self.endpoints.len()].clone()
            });
            attempts += 1;
            let status = match tokio::time::timeout_at(deadline, call(self.client(&addr)?)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) => s,
                Err(_) => tonic::Status::deadline_exceeded("no answer within the call deadline"),
            };
            if status.code() != tonic::Code::Unavailable {
                return Err(ClientError::from_status(&status));
            }
            let last = format!("{addr}: {}", status.message());
            hint = status
                .metadata()
                .get(mokv_proto::LEADER_HINT_ADDR)
                .and_then(|v| v.to_str().ok())
                .filter(|h| *h != addr)
                .map(str::to_owned);
            let pause = if hint.is_some() { Duration::ZERO } else { RETRY_PAUSE };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(ClientError::Unavailable { attempts, last });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// The configuration's members as the first answering endpoint knows them.
    pub async fn members(&self) -> Result<Vec<MemberEntry>, ClientError> {
        let list =
            self.call(|mut c| async move { c.member_list(MemberListRequest {}).await }).await?;
        let mut members: Vec<MemberEntry> = list
            .members
            .into_iter()
            .map(|m| MemberEntry {
                is_leader: m.raft_id == list.leader_id && list.leader_id != 0,
                name: m.name,
                raft_id: m.raft_id,
                rpc_addr: m.rpc_addr,
                voter: m.voter,
                health: Health::from_wire(m.health),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(members)
    }

    /// Removes the member named `name` (see `MemberRemove` in `cluster.proto`); returns the
    /// Raft index at which the removal was applied.
    pub async fn remove(&self, name: &str, force: bool) -> Result<u64, ClientError> {
        let request = MemberRemoveRequest { name: name.to_owned(), force };
        let r = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.member_remove(request).await }
            })
            .await?;
        Ok(r.index)
    }

    /// Hands leadership to the voter named `name` (`None`: the most caught-up live voter).
    /// Returns once the transfer started; the new leader is seen in [`Self::cluster_status`].
    pub async fn transfer_leader(&self, name: Option<&str>) -> Result<(), ClientError> {
        let request = TransferLeaderRequest { name: name.unwrap_or_default().to_owned() };
        self.call(|mut c| {
            let request = request.clone();
            async move { c.transfer_leader(request).await }
        })
        .await?;
        Ok(())
    }

    /// One node's own status and its view of the members.
    async fn node_status(&self, addr: &str) -> Result<MemberStatusResponse, tonic::Status> {
        let mut c = self.client(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let r = tokio::time::timeout(self.timeout, c.member_status(MemberStatusRequest {})).await;
        match r {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
        }
    }

    /// The whole-cluster table: every member asked for its own numbers (see the module
    /// documentation).
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let first =
            self.call(|mut c| async move { c.member_status(MemberStatusRequest {}).await }).await?;
        let first_id = first.node.as_ref().map_or(0, |n| n.raft_id);
        let mut tasks = tokio::task::JoinSet::new();
        for m in first.members.iter().filter(|m| m.raft_id != first_id) {
            let (admin, m) = (self.clone(), m.clone());
            tasks.spawn(async move {
                let r = admin.node_status(&m.rpc_addr).await;
                (m.raft_id, r)
            });
        }
        let mut answers = std::collections::BTreeMap::new();
        answers.insert(first_id, Ok(first.clone()));
        while let Some(joined) = tasks.join_next().await {
            if let Ok((id, r)) = joined {
                answers.insert(id, r);
            }
        }
        Ok(table(&first, &answers))
    }
}

/// Joins each member's own answer with the leader's (else `first`'s) view of it.
fn table(
    first: &MemberStatusResponse,
    answers: &std::collections::BTreeMap<u64, Result<MemberStatusResponse, tonic::Status>>,
) -> ClusterStatus {
    let own = |id: u64| answers.get(&id).and_then(|r| r.as_ref().ok()).and_then(|r| r.node.clone());
    // The leader as the members themselves say (the highest term wins a disagreement).
    let leader = answers
        .values()
        .filter_map(|r| r.as_ref().ok())
        .filter(|r| {
            r.node.as_ref().is_some_and(|n| RaftRole::from_wire(n.role) == RaftRole::Leader)
        })
        .max_by_key(|r| r.node.as_ref().map_or(0, |n| n.term));
    let viewer = leader.unwrap_or(first);
    let leader_id = leader.and_then(|l| l.node.as_ref()).map(|n| n.raft_id);
    let leader_commit = leader.and_then(|l| l.node.as_ref()).map(|n| n.commit_index);
    let view_of =
        |id: u64| -> Option<&MemberView> { viewer.members.iter().find(|m| m.raft_id == id) };
    let mut members: Vec<MemberStatus> = first
        .members
        .iter()
        .map(|m| {
            let node = own(m.raft_id);
            let seen = view_of(m.raft_id).unwrap_or(m);
            let error = match answers.get(&m.raft_id) {
                Some(Err(s)) => Some(format!("{:?}: {}", s.code(), s.message())),
                None => Some("not asked".to_owned()),
                Some(Ok(_)) => None,
            };
            MemberStatus {
                name: m.name.clone(),
                raft_id: m.raft_id,
                rpc_addr: m.rpc_addr.clone(),
                voter: m.voter,
                role: node.as_ref().map(|n| RaftRole::from_wire(n.role)),
                term: node.as_ref().map(|n| n.term),
                commit_index: node.as_ref().map(|n| n.commit_index),
                applied_index: node.as_ref().map(|n| n.applied_index),
                lag_entries: node
                    .as_ref()
                    .zip(leader_commit)
                    .map(|(n, commit)| commit.saturating_sub(n.applied_index)),
                health: Health::from_wire(seen.health),
                last_contact_ms: if Some(m.raft_id) == leader_id {
                    None
                } else {
                    leader_id.and(seen.last_contact_ms)
                },
                version: node.as_ref().map(|n| n.version.clone()),
                error,
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let cluster_id = first.node.as_ref().map_or(0, |n| n.cluster_id);
    ClusterStatus { members, cluster_id }
}
