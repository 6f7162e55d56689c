//! The operator `Cluster` gRPC service (`cluster.proto`, package `api`): the answering node's
//! status and view of the members, member removal and leadership transfer.
//!
//! Every rpc needs the Casbin action `admin` on the object `cluster` ([`CLUSTER_OBJECT`]);
//! anything else is PERMISSION_DENIED. Members are named by their node name; the name is
//! resolved against the replicated member table of the answering node. Removal and transfer
//! are the leader's: a follower answers UNAVAILABLE with the leader hint (see
//! [`crate::net::status`]), like a write. The strict-quorum guard's refusal is
//! FAILED_PRECONDITION.
//!
//! `MemberStatus` reports what the answering node knows (its own role, term and indexes; on
//! the leader, every member's replication progress); a whole-cluster table is built by asking
//! every member, as `mokv status` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mokv_core::{ClusterReport, NodeId, Request, Response, Role};
use mokv_proto::api::cluster_server::Cluster;
use mokv_proto::api::{
    MemberListRequest, MemberListResponse, MemberRemoveRequest, MemberRemoveResponse, MemberRole,
    MemberStatusRequest, MemberStatusResponse, MemberView, NodeStatus, TransferLeaderRequest,
    TransferLeaderResponse,
};
use tonic::Status;

use crate::net::kv_service::health_of;
use crate::net::status;
use crate::node::driver::DriverHandle;
use crate::security::authz::{Action, Authorizer, CLUSTER_OBJECT};
use crate::security::identity::identity_of;

/// The version every node reports (`mokv status`'s version column).
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone)]
pub struct ClusterService {
    handle: DriverHandle,
    stopping: Arc<AtomicBool>,
    authz: Authorizer,
}

impl ClusterService {
    /// `stopping` turns every new request away (UNAVAILABLE) during shutdown; `authz` decides
    /// who is an operator.
    pub fn new(handle: DriverHandle, stopping: Arc<AtomicBool>, authz: Authorizer) -> Self {
        Self { handle, stopping, authz }
    }

    fn admit<T>(&self, req: &tonic::Request<T>) -> Result<(), Status> {
        self.authz.snapshot().check(identity_of(req), Action::Admin, CLUSTER_OBJECT)?;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(status::shutting_down());
        }
        Ok(())
    }

    async fn report(&self) -> Result<ClusterReport, Status> {
        match status::call(&self.handle, Request::ClusterReport).await? {
            Response::ClusterReport(report) => Ok(*report),
            _ => Err(Status::internal("unexpected answer from the core")),
        }
    }

    /// The Raft id of the member named `name` in the configuration.
    fn member_named(&self, name: &str) -> Result<NodeId, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("a member name is required"));
        }
        self.handle.with_view(|v| {
            v.members
                .values()
                .find(|m| m.name == name && v.status.conf.contains(m.id))
                .map(|m| m.id)
                .ok_or_else(|| Status::not_found("no member of the cluster has that name"))
        })
    }

    fn member_views(&self, report: &ClusterReport) -> Vec<MemberView> {
        self.handle.with_view(|v| {
            report
                .members
                .iter()
                .map(|m| MemberView {
                    name: m.info.name.clone(),
                    raft_id: m.info.id,
                    // Where it is now (a node restarted on another port is found again).
                    rpc_addr: v.rpc_addr_of(m.info.id).unwrap_or_else(|| m.info.rpc_addr.clone()),
                    voter: m.voter,
                    health: health_of(m.health) as i32,
                    matched_index: m.matched_index,
                    recently_active: m.recently_active,
                    last_contact_ms: m.last_contact_ms,
                })
                .collect()
        })
    }
}

fn role_of(r: Role) -> MemberRole {
    match r {
        Role::Follower => MemberRole::RoleFollower,
        Role::PreCandidate => MemberRole::RolePreCandidate,
        Role::Candidate => MemberRole::RoleCandidate,
        Role::Leader => MemberRole::RoleLeader,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_status(
        &self,
        request: tonic::Request<MemberStatusRequest>,
    ) -> Result<tonic::Response<MemberStatusResponse>, Status> {
        self.admit(&request)?;
        let report = self.report().await?;
        let s = &report.status;
        let (name, cluster_id) = self.handle.with_view(|v| {
            let name = v.members.get(&s.id).map(|m| m.name.clone());
            (name.or_else(|| v.directory.get(s.id).map(|e| e.name.clone())), v.cluster_id)
        });
        let node = NodeStatus {
            name: name.unwrap_or_default(),
            raft_id: s.id,
            role: role_of(s.role) as i32,
            term: s.term,
            leader_id: s.leader.unwrap_or(0),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_index: s.last_index,
            version: VERSION.to_owned(),
            cluster_id,
        };
        let members = self.member_views(&report);
        Ok(tonic::Response::new(MemberStatusResponse { node: Some(node), members }))
    }

    async fn member_list(
        &self,
        request: tonic::Request<MemberListRequest>,
    ) -> Result<tonic::Response<MemberListResponse>, Status> {
        self.admit(&request)?;
        let report = self.report().await?;
        let members = self.member_views(&report);
        let leader_id = report.status.leader.unwrap_or(0);
        Ok(tonic::Response::new(MemberListResponse { members, leader_id }))
    }

    async fn member_remove(
        &self,
        request: tonic::Request<MemberRemoveRequest>,
    ) -> Result<tonic::Response<MemberRemoveResponse>, Status> {
        self.admit(&request)?;
        let r = request.into_inner();
        let id = self.member_named(&r.name)?;
        match status::call(&self.handle, Request::RemoveMember { id, force: r.force }).await? {
            Response::Membership { index } => {
                tracing::warn!(
                    raft_id = id,
                    force = r.force,
                    index,
                    "member removed by an operator"
                );
                Ok(tonic::Response::new(MemberRemoveResponse { index, raft_id: id }))
            }
            _ => Err(Status::internal("unexpected answer from the core")),
        }
    }

    async fn transfer_leader(
        &self,
        request: tonic::Request<TransferLeaderRequest>,
    ) -> Result<tonic::Response<TransferLeaderResponse>, Status> {
        self.admit(&request)?;
        let name = request.into_inner().name;
        let to = if name.is_empty() { 0 } else { self.member_named(&name)? };
        match status::call(&self.handle, Request::TransferLeader { to }).await? {
            Response::TransferStarted => Ok(tonic::Response::new(TransferLeaderResponse {})),
            _ => Err(Status::internal("unexpected answer from the core")),
        }
    }
}
