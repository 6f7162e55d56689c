//! The client `KV` gRPC service (package `api`, wire-compatible with the original).
//!
//! Each rpc: identity from the verified client certificate → [`authorize`] → one core
//! [`Request`] through the driver → the answer, or a status from [`crate::net::status`].
//!
//! Writes on a follower are not forwarded: they fail UNAVAILABLE with the leader hint in the
//! metadata (see `status.rs`), and the client retries on the leader. Reads are served by any
//! node (linearizable through ReadIndex by default).
//!
//! `List` streams every key with its value, paging through the core's range reads (pages
//! bounded by count and by bytes, `max-page-bytes`; each page is one linearizable read, like
//! etcd's paginated range). A stream buffers at most three pages: the one being sent, one
//! queued, and the next one read while the queue is full.
//!
//! `Set` and `Delete` with a `condition` become the core's conditional writes: a condition that
//! does not hold is an OK answer with `ok = false` and `condition_failed` set (the key's
//! revisions then), not an error status. They need `consume` on the key besides `produce`.
//!
//! `Set` with a non-zero `lease` attaches the key to that lease (the core's `SetWithLease`,
//! with the request's condition if any); an unknown lease is NOT_FOUND. It needs what the same
//! `Set` without a lease needs.
//!
//! `Txn` runs a transaction (compares, then the success or failure branch) as one write; every
//! key it touches is authorized first, with the action each part needs (`consume` for compares
//! and reads, `produce` for writes; both branches, since which runs is decided when applied).
//!
//! Authorization objects and actions per rpc, and how `List`/`Range` results are filtered, are
//! documented in [`crate::security::authz`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mokv_core::{Condition, KeyRevisions, SessionRef};
use mokv_core::{Consistency, Request, Response, Role};
use mokv_core::{RangeItem, RangeQuery};
use mokv_proto::api::kv_server::Kv;
use mokv_proto::api::{
    ConditionFailed, DeleteRequest, DeleteResponse, GetRequest, GetResponse, GetServersResponse,
    KeyValue, RangeRequest, RangeResponse, ReadConsistency, RegisterSessionRequest,
    RegisterSessionResponse, Server, SetRequest, SetResponse, Suffrage, TxnRequest, TxnResponse,
};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use crate::net::kv_txn;
use crate::net::page_token::PageTokens;
use crate::net::status;
use crate::node::driver::DriverHandle;
use crate::security::authz::{range_object, Action, Authorizer, Policy, CLUSTER_OBJECT};
use crate::security::identity::{identity_of, Identity};

/// Keys per internal page of `List` (the core also bounds a page by bytes).
const LIST_PAGE: u32 = 256;
/// Pages queued between the paging task and the gRPC stream.
const LIST_BUFFER_PAGES: usize = 1;

/// The items of the pages the paging task reads, one by one.
struct ListItems {
    pages: mpsc::Receiver<Result<Vec<GetResponse>, Status>>,
    page: std::vec::IntoIter<GetResponse>,
}

impl Stream for ListItems {
    type Item = Result<GetResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = self.page.next() {
                return Poll::Ready(Some(Ok(item)));
            }
            match self.pages.poll_recv(cx) {
                Poll::Ready(Some(Ok(page))) => self.page = page.into_iter(),
                Poll::Ready(Some(Err(s))) => return Poll::Ready(Some(Err(s))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct KvService {
    handle: DriverHandle,
    stopping: Arc<AtomicBool>,
    authz: Authorizer,
    page_tokens: Arc<PageTokens>,
}

impl KvService {
    /// `stopping` turns every new request away (UNAVAILABLE) during shutdown; `authz` decides
    /// who may do what; `page_tokens` seals `Range` page tokens (they never show key names).
    pub fn new(
        handle: DriverHandle,
        stopping: Arc<AtomicBool>,
        authz: Authorizer,
        page_tokens: PageTokens,
    ) -> Self {
        Self { handle, stopping, authz, page_tokens: Arc::new(page_tokens) }
    }

    /// Checks `(caller, obj, action)` against the policy in force; returns the caller and that
    /// policy (for filtering results with the same policy).
    fn admit<T>(
        &self,
        req: &tonic::Request<T>,
        action: Action,
        obj: &str,
    ) -> Result<(Identity, Policy), Status> {
        let policy = self.authz.snapshot();
        let id = policy.check(identity_of(req), action, obj)?;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(status::shutting_down());
        }
        Ok((id, policy))
    }

    /// A write needs `produce` on its key; a conditional one also `consume`, because its
    /// answer tells the key's revisions and whether a compared value matched. Returns the
    /// caller (whose name owns its sessions).
    fn admit_write<T>(
        &self,
        req: &tonic::Request<T>,
        key: &str,
        conditional: bool,
    ) -> Result<Identity, Status> {
        let (caller, _) = self.admit(req, Action::Produce, key)?;
        if conditional {
            self.admit(req, Action::Consume, key)?;
        }
        Ok(caller)
    }
}

fn consistency(c: i32) -> Result<Consistency, Status> {
    match ReadConsistency::try_from(c) {
        Ok(ReadConsistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(ReadConsistency::Serializable) => Ok(Consistency::Serializable),
        Err(_) => Err(Status::invalid_argument("unknown read consistency")),
    }
}

/// The core's session of a write by `caller`: sessions are the caller's own (looked up by its
/// certificate name and the id), so naming another identity's id finds nothing.
fn session(s: Option<mokv_proto::api::Session>, caller: &Identity) -> Option<SessionRef> {
    s.filter(|s| s.client_id != 0).map(|s| SessionRef {
        owner: caller.name.clone(),
        client_id: s.client_id,
        seq: s.seq,
        first_unacked_seq: s.first_unacked_seq,
    })
}

/// The core's condition for a wire one; a condition with nothing set is refused rather than
/// read as "no condition" (the caller asked for a compare).
pub(crate) fn condition(c: mokv_proto::api::Condition) -> Result<Condition, Status> {
    use mokv_proto::api::condition::Check;
    match c.check {
        Some(Check::Absent(true)) => Ok(Condition::Absent),
        Some(Check::Version(n)) => Ok(Condition::Version(n)),
        Some(Check::ModRevision(r)) => Ok(Condition::ModRevision(r)),
        Some(Check::Value(v)) => Ok(Condition::ValueEquals(v)),
        Some(Check::Absent(false)) | None => {
            Err(Status::invalid_argument("condition: set exactly one of its fields"))
        }
    }
}

fn condition_failed(current: Option<KeyRevisions>) -> ConditionFailed {
    match current {
        Some(k) => ConditionFailed {
            exists: true,
            create_revision: k.create_index,
            mod_revision: k.mod_index,
            version: k.version,
        },
        None => ConditionFailed::default(),
    }
}

fn unexpected() -> Status {
    Status::internal("unexpected answer from the core")
}

/// Counts the outcome of one rpc.
fn counted<T>(rpc: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    crate::metrics::request(rpc, r.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
    r
}

fn key_value(i: RangeItem) -> KeyValue {
    KeyValue {
        key: i.key,
        value: i.value,
        create_revision: i.create_index,
        mod_revision: i.mod_index,
        version: i.version,
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: tonic::Request<GetRequest>,
    ) -> Result<tonic::Response<GetResponse>, Status> {
        let r = async {
            self.admit(&request, Action::Consume, &request.get_ref().key)?;
            let GetRequest { key, consistency: c } = request.into_inner();
            let req = Request::Get { key: key.clone(), consistency: consistency(c)? };
            match status::call(&self.handle, req).await? {
                Response::Get(Some(v)) => Ok(tonic::Response::new(GetResponse {
                    key,
                    value: v.value,
                    create_revision: v.create_index,
                    mod_revision: v.mod_index,
                    version: v.version,
                })),
                Response::Get(None) => Err(status::not_found()),
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("get", r)
    }

    async fn set(
        &self,
        request: tonic::Request<SetRequest>,
    ) -> Result<tonic::Response<SetResponse>, Status> {
        let r = async {
            let conditional = request.get_ref().condition.is_some();
            let caller = self.admit_write(&request, &request.get_ref().key, conditional)?;
            let SetRequest { key, value, session: s, condition: c, lease } = request.into_inner();
            let session = session(s, &caller);
            let req = match (c, lease) {
                (c, 1..) => Request::SetWithLease {
                    key,
                    value,
                    lease,
                    condition: c.map(condition).transpose()?,
                    session,
                },
                (None, 0) => Request::Set { key, value, session },
                (Some(c), 0) => Request::SetIf { key, value, condition: condition(c)?, session },
            };
            match status::call(&self.handle, req).await? {
                Response::Set { revision } => Ok(tonic::Response::new(SetResponse {
                    ok: true,
                    revision,
                    condition_failed: None,
                })),
                Response::ConditionFailed { revision, current } => {
                    Ok(tonic::Response::new(SetResponse {
                        ok: false,
                        revision,
                        condition_failed: Some(condition_failed(current)),
                    }))
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("set", r)
    }

    async fn delete(
        &self,
        request: tonic::Request<DeleteRequest>,
    ) -> Result<tonic::Response<DeleteResponse>, Status> {
        let r = async {
            let conditional = request.get_ref().condition.is_some();
            let caller = self.admit_write(&request, &request.get_ref().key, conditional)?;
            let DeleteRequest { key, session: s, condition: c } = request.into_inner();
            let session = session(s, &caller);
            let req = match c {
                None => Request::Delete { key, session },
                Some(c) => Request::DeleteIf { key, condition: condition(c)?, session },
            };
            match status::call(&self.handle, req).await? {
                Response::Delete { existed, revision } => {
                    Ok(tonic::Response::new(DeleteResponse {
                        ok: existed,
                        revision,
                        condition_failed: None,
                    }))
                }
                Response::ConditionFailed { revision, current } => {
                    Ok(tonic::Response::new(DeleteResponse {
                        ok: false,
                        revision,
                        condition_failed: Some(condition_failed(current)),
                    }))
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("delete", r)
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<GetResponse, Status>> + Send>>;

    async fn list(
        &self,
        request: tonic::Request<()>,
    ) -> Result<tonic::Response<Self::ListStream>, Status> {
        let r = self.admit(&request, Action::Consume, &range_object(""));
        let (caller, policy) = counted("list", r)?;
        let (tx, rx) = mpsc::channel(LIST_BUFFER_PAGES);
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut token = String::new();
            loop {
                let query = RangeQuery {
                    limit: LIST_PAGE as usize,
                    page_token: std::mem::take(&mut token),
                    ..RangeQuery::default()
                };
                let req = Request::Range { query, consistency: Consistency::Linearizable };
                let page = match status::call(&handle, req).await {
                    Ok(Response::Range(p)) => p,
                    Ok(_) => {
                        let _ = tx.send(Err(unexpected())).await;
                        return;
                    }
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let items = page
                    .items
                    .into_iter()
                    .filter(|i| policy.allows(&caller.name, &i.key, Action::Consume))
                    .map(|i| GetResponse {
                        key: i.key,
                        value: i.value,
                        create_revision: i.create_index,
                        mod_revision: i.mod_index,
                        version: i.version,
                    })
                    .collect();
                if tx.send(Ok(items)).await.is_err() {
                    return; // the client went away
                }
                if page.next_page_token.is_empty() {
                    return;
                }
                token = page.next_page_token;
            }
        });
        let items = ListItems { pages: rx, page: Vec::new().into_iter() };
        Ok(tonic::Response::new(Box::pin(items)))
    }

    async fn get_servers(
        &self,
        request: tonic::Request<()>,
    ) -> Result<tonic::Response<GetServersResponse>, Status> {
        let r = self.admit(&request, Action::Discover, CLUSTER_OBJECT).map(|_| {
            let view = self.handle.view();
            let conf = &view.status.conf;
            let servers = view
                .members
                .values()
                .map(|m| Server {
                    id: m.name.clone(),
                    rpc_addr: view.rpc_addr_of(m.id).unwrap_or_else(|| m.rpc_addr.clone()),
                    is_leader: view.status.leader == Some(m.id)
                        && (m.id != view.status.id || view.status.role == Role::Leader),
                    raft_id: m.id,
                    suffrage: if conf.is_voter(m.id) {
                        Suffrage::Voter as i32
                    } else {
                        Suffrage::Learner as i32
                    },
                    health: health_of(view.health(m.id)) as i32,
                })
                .collect();
            tonic::Response::new(GetServersResponse { servers })
        });
        counted("get_servers", r)
    }

    async fn range(
        &self,
        request: tonic::Request<RangeRequest>,
    ) -> Result<tonic::Response<RangeResponse>, Status> {
        let r = async {
            let obj = range_object(&request.get_ref().prefix);
            let (caller, policy) = self.admit(&request, Action::Consume, &obj)?;
            let q = request.into_inner();
            let page_token = self
                .page_tokens
                .open(&q.prefix, &q.page_token)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let prefix = q.prefix.clone();
            let query = RangeQuery {
                prefix: q.prefix,
                start_key: q.start_key,
                limit: q.limit as usize,
                page_token,
                keys_only: q.keys_only,
            };
            let req = Request::Range { query, consistency: consistency(q.consistency)? };
            match status::call(&self.handle, req).await? {
                Response::Range(p) => Ok(tonic::Response::new(RangeResponse {
                    kvs: p
                        .items
                        .into_iter()
                        .filter(|i| policy.allows(&caller.name, &i.key, Action::Consume))
                        .map(key_value)
                        .collect(),
                    next_page_token: self
                        .page_tokens
                        .seal(&prefix, &p.next_page_token)
                        .ok_or_else(|| Status::unavailable("no fresh nonce for a page token"))?,
                })),
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("range", r)
    }

    async fn txn(
        &self,
        request: tonic::Request<TxnRequest>,
    ) -> Result<tonic::Response<TxnResponse>, Status> {
        let r = async {
            let txn = kv_txn::from_wire(request.get_ref())?;
            let mut admitted = None;
            for (obj, action) in kv_txn::permissions(&txn) {
                admitted = Some(self.admit(&request, action, &obj)?);
            }
            let (caller, policy) = match admitted {
                Some(a) => a,
                // Nothing to touch: still only for a caller allowed to use the service.
                None => self.admit(&request, Action::Discover, CLUSTER_OBJECT)?,
            };
            let session = session(request.into_inner().session, &caller);
            let req = Request::Txn { txn: txn.clone(), session };
            match status::call(&self.handle, req).await? {
                Response::Txn(r) => Ok(tonic::Response::new(kv_txn::to_wire(r, &txn, |key| {
                    policy.allows(&caller.name, key, Action::Consume)
                }))),
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("txn", r)
    }

    /// Opens a session for the caller. Any authenticated caller may (a session is of use only
    /// for writes the policy allows it anyway): its sessions count against its own
    /// per-identity quota, and the cluster-wide bound refuses rather than evicts.
    async fn register_session(
        &self,
        request: tonic::Request<RegisterSessionRequest>,
    ) -> Result<tonic::Response<RegisterSessionResponse>, Status> {
        let r = async {
            let caller = identity_of(&request).ok_or_else(status::unauthenticated)?;
            if self.stopping.load(Ordering::Relaxed) {
                return Err(status::shutting_down());
            }
            let req = Request::RegisterSession { owner: caller.name };
            match status::call(&self.handle, req).await? {
                Response::SessionRegistered { client_id } => {
                    Ok(tonic::Response::new(RegisterSessionResponse { client_id }))
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        counted("register_session", r)
    }
}

/// A member's health in the answering node's gossip view.
pub(crate) fn health_of(h: Option<mokv_core::gossip::Health>) -> mokv_proto::api::Health {
    use mokv_core::gossip::Health;
    match h {
        Some(Health::Alive) => mokv_proto::api::Health::Alive,
        Some(Health::Suspect) => mokv_proto::api::Health::Suspect,
        Some(Health::Down) => mokv_proto::api::Health::Down,
        None => mokv_proto::api::Health::Unknown,
    }
}
