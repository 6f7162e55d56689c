//! The client: calls, routing, retries. Discovery runs in [`crate::discovery`], node choice in
//! [`crate::view`], sessions in [`crate::sessions`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{
    DeleteRequest, GetRequest, RangeRequest, RegisterSessionRequest, Session, SetRequest,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::discovery::Refresher;
use crate::retry::{backoff, classify, leader_hint, Failure};
use crate::sessions::{Registration, Sessions, Ticket};
use crate::transport::{Dialer, Rng, Transport};
use crate::txn::{Txn, TxnOutcome};
use crate::types::{CasOutcome, Condition, Entry, Member, NodeInfo};
use crate::view::{Target, View};
use crate::{lock, ClientConfig, ClientError, Plaintext, ReadFrom, ReadOptions};

/// A handle on a mokv cluster. Cheap to clone (clones share everything), `Send + Sync`, and
/// every method takes `&self`: share one client between any number of tasks; their calls go
/// concurrently over the same connections (one HTTP/2 connection per node by default, see
/// [`ClientConfig::connections_per_node`]).
///
/// What it does for each call:
/// - **writes** (`set`, `delete`, the conditional `set_if`, `delete_if`) go to the leader. A
///   follower answers UNAVAILABLE with the leader's address in the metadata; the client
///   resends there at once (no lookup in between). Each write carries a session `(client_id, seq)`
///   (registered on first use, bound to the certificate's name), so a write retried after a lost
///   answer is applied once, also with many writes in flight;
/// - **reads** (`get`, `range`, the streams) go where [`ReadOptions::from`] (default:
///   [`ClientConfig::read_from`]) says: healthy followers by default, spread by least
///   outstanding requests, the leader when no follower is healthy;
/// - **membership** is learned from the seed endpoints through `GetServers`, refreshed every
///   [`ClientConfig::refresh_interval`] and after failures; nodes that fail locally or that
///   gossip reports down or suspect are skipped until a probe reaches them again;
/// - **failures** that may pass (no leader, a lost connection, a timeout) are retried with
///   jittered exponential backoff within [`ClientConfig::call_timeout`] and
///   [`ClientConfig::max_attempts`]; the others return at once as a [`ClientError`]. A call
///   never panics.
///
/// Dropping the last clone stops the background refresh.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// What every clone of a [`Client`] shares.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) request_timeout: Duration,
    pub(crate) call_timeout: Duration,
    max_attempts: u32,
    read_from: ReadFrom,
    pub(crate) discovery: bool,
    pub(crate) refresh_interval: Duration,
    pub(crate) seeds: Vec<String>,
    pub(crate) view: Mutex<View>,
    sessions: Mutex<Sessions>,
    /// Signalled whenever a session seq is released (a write waiting for room may go on).
    sessions_changed: Notify,
    pub(crate) rng: Mutex<Rng>,
    pub(crate) refresher: Refresher,
}

/// An attempt in flight on a node; dropping it (also when the caller drops the call) counts it
/// out of the node's load.
pub(crate) struct InFlight<'a> {
    pub(crate) view: &'a Mutex<View>,
    pub(crate) uri: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.view).finished(&self.uri);
    }
}

/// A write's session seq; dropping it releases the seq (the call is over: that seq is never
/// sent again) and wakes writes waiting for room.
struct Seq<'a> {
    inner: &'a Inner,
    ticket: Ticket,
}

impl Drop for Seq<'_> {
    fn drop(&mut self) {
        lock(&self.inner.sessions).release(&self.ticket);
        self.inner.sessions_changed.notify_waiters();
    }
}

impl Client {
    /// A client over mutual TLS with `config.tls`. Nothing is dialed yet: connections open on
    /// first use, so a node that is down does not stop the client from starting. Discovery
    /// starts in the background when called inside a tokio runtime (else on the first call).
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints".into()));
        }
        let tls = config.tls.load()?;
        Self::with_transport(&config, Transport::Tls(tls), Rng::from_os()?)
    }

    /// Like [`connect`](Self::connect), over plaintext connections the program makes itself
    /// (see [`Plaintext`]); `config.tls` is not read.
    pub fn connect_plaintext(
        config: ClientConfig,
        plaintext: Plaintext,
    ) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints".into()));
        }
        let transport = Transport::Plaintext(plaintext.connect);
        Self::with_transport(&config, transport, Rng::seeded(plaintext.id_seed))
    }

    fn with_transport(
        config: &ClientConfig,
        transport: Transport,
        rng: Rng,
    ) -> Result<Client, ClientError> {
        let dialer = Dialer {
            transport,
            connect_timeout: config.request_timeout,
            pool: config.connections_per_node.max(1),
        };
        let view = View::new(dialer, &config.endpoints)?;
        let inner = Inner {
            request_timeout: config.request_timeout.max(Duration::from_millis(1)),
            call_timeout: config.call_timeout.max(Duration::from_millis(1)),
            max_attempts: config.max_attempts.max(1),
            read_from: config.read_from,
            discovery: config.discovery,
            refresh_interval: config.refresh_interval.max(Duration::from_millis(10)),
            seeds: config.endpoints.clone(),
            view: Mutex::new(view),
            sessions: Mutex::new(Sessions::new(config.session_window, config.max_sessions)),
            sessions_changed: Notify::new(),
            rng: Mutex::new(rng),
            refresher: Refresher::default(),
        };
        let client = Client { inner: Arc::new(inner) };
        if tokio::runtime::Handle::try_current().is_ok() {
            client.start();
        }
        Ok(client)
    }

    /// What every clone shares (the watch stream's retries use it).
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Starts the background task (discovery, probes of failing nodes) once.
    pub(crate) fn start(&self) {
        self.inner.refresher.start(&self.inner);
    }

    /// Writes `value` under `key`; returns the revision (raft index) of the write.
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<u64, ClientError> {
        let build = |session| SetRequest {
            key: key.to_owned(),
            value: value.to_vec(),
            session: Some(session),
            condition: None,
            lease: 0,
        };
        let resp = self.write(build, |mut kv, req| async move { kv.set(req).await }).await?;
        Ok(resp.revision)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ClientError> {
        let build = |session| DeleteRequest {
            key: key.to_owned(),
            session: Some(session),
            condition: None,
        };
        let resp = self.write(build, |mut kv, req| async move { kv.delete(req).await }).await?;
        Ok(resp.ok)
    }

    /// Compare-and-swap: writes `value` under `key` only if `condition` holds when the write
    /// is applied. A condition that does not hold is [`CasOutcome::Failed`] (not an error),
    /// with the key's revisions then. Applied at most once like every write: a retry after a
    /// lost answer gets the first answer.
    ///
    /// ```no_run
    /// # async fn demo(client: mokv_client::Client) -> Result<(), mokv_client::ClientError> {
    /// use mokv_client::{CasOutcome, Condition, ReadMode};
    /// // Increment a counter without losing concurrent increments.
    /// loop {
    ///     let current = client.get("counter", ReadMode::Linearizable).await?;
    ///     let (n, condition) = match current {
    ///         Some(e) => (String::from_utf8_lossy(&e.value).parse::<u64>().unwrap_or(0),
    ///                     Condition::ModRevision(e.mod_revision)),
    ///         None => (0, Condition::Absent),
    ///     };
    ///     let next = (n + 1).to_string();
    ///     if client.set_if("counter", next.as_bytes(), condition).await?.is_applied() {
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn set_if(
        &self,
        key: &str,
        value: &[u8],
        condition: Condition,
    ) -> Result<CasOutcome, ClientError> {
        let condition = condition.wire();
        let build = |session| SetRequest {
            key: key.to_owned(),
            value: value.to_vec(),
            session: Some(session),
            condition: Some(condition.clone()),
            lease: 0,
        };
        let resp = self.write(build, |mut kv, req| async move { kv.set(req).await }).await?;
        Ok(CasOutcome::from_wire(resp.revision, resp.condition_failed))
    }

    /// Deletes `key` only if `condition` holds when the delete is applied; see
    /// [`set_if`](Self::set_if). [`CasOutcome::Applied`] also when the key was already
    /// absent and the condition allowed that ([`Condition::Absent`], version or mod revision
    /// 0).
    pub async fn delete_if(
        &self,
        key: &str,
        condition: Condition,
    ) -> Result<CasOutcome, ClientError> {
        let condition = condition.wire();
        let build = |session| DeleteRequest {
            key: key.to_owned(),
            session: Some(session),
            condition: Some(condition.clone()),
        };
        let resp = self.write(build, |mut kv, req| async move { kv.delete(req).await }).await?;
        Ok(CasOutcome::from_wire(resp.revision, resp.condition_failed))
    }

    /// Runs a transaction (see [`Txn`]): atomic, at one revision, applied at most once like
    /// every write (a retry after a lost answer gets [`TxnOutcome::replayed`]).
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, ClientError> {
        let build = |session| txn.wire(session);
        let resp = self.write(build, |mut kv, req| async move { kv.txn(req).await }).await?;
        Ok(TxnOutcome::from_wire(resp))
    }

    /// Reads `key`; `None` when it does not exist. `opts` is a [`ReadMode`](crate::ReadMode),
    /// a [`ReadFrom`] or [`ReadOptions`].
    pub async fn get(
        &self,
        key: &str,
        opts: impl Into<ReadOptions>,
    ) -> Result<Option<Entry>, ClientError> {
        let opts = opts.into();
        let req = GetRequest { key: key.to_owned(), consistency: opts.mode.wire() };
        let call = |mut kv: KvClient<Channel>, req: GetRequest| async move { kv.get(req).await };
        match self.read(opts.from, req, call).await {
            Ok(r) => {
                let mut e = Entry::from(r);
                if e.key.is_empty() {
                    key.clone_into(&mut e.key);
                }
                Ok(Some(e))
            }
            Err(ClientError::Refused { code: Code::NotFound, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of keys under `prefix`, after `page_token` ("" for the first page), at most
    /// `limit` (0: the server's default). Returns the entries and the next page's token (""
    /// after the last page). [`range_stream`](Self::range_stream) pages for you.
    pub async fn range(
        &self,
        prefix: &str,
        limit: u32,
        page_token: &str,
        keys_only: bool,
        opts: impl Into<ReadOptions>,
    ) -> Result<(Vec<Entry>, String), ClientError> {
        let opts = opts.into();
        let req = RangeRequest {
            prefix: prefix.to_owned(),
            start_key: String::new(),
            limit,
            page_token: page_token.to_owned(),
            keys_only,
            consistency: opts.mode.wire(),
        };
        let call =
            |mut kv: KvClient<Channel>, req: RangeRequest| async move { kv.range(req).await };
        let r = self.read(opts.from, req, call).await?;
        Ok((r.kvs.into_iter().map(Entry::from).collect(), r.next_page_token))
    }

    /// The members as a node reports them (the leader when known), fetched now. Also updates
    /// the client's own view when discovery is on.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        let call = |mut kv: KvClient<Channel>, ()| async move { kv.get_servers(()).await };
        let r = self.read(Some(ReadFrom::Leader), (), call).await?;
        let members: Vec<Member> = r.servers.into_iter().map(Member::from).collect();
        if self.inner.discovery {
            lock(&self.inner.view).apply_members(&members);
        }
        Ok(members)
    }

    /// Asks for the member list now (discovery does this periodically and after failures),
    /// and applies it to the client's view.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        self.inner.discover().await
    }

    /// The nodes this client knows now, with their roles, health, and the attempts each one
    /// has in flight and has answered.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.inner.view).snapshot()
    }

    /// A seq for a new write, waiting (at most until `deadline`) while every session is at
    /// its window.
    async fn seq(&self, deadline: Instant) -> Result<Seq<'_>, ClientError> {
        let inner = &*self.inner;
        loop {
            let notified = inner.sessions_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ticket = {
                let mut rng = lock(&inner.rng);
                lock(&inner.sessions).acquire(&mut rng)
            };
            if let Some(ticket) = ticket {
                return Ok(Seq { inner, ticket });
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ClientError::Unavailable {
                    attempts: 0,
                    last: "every session is at its window of writes in flight".into(),
                });
            }
        }
    }

    /// Sends a write to the leader, following hints; retries with the same session seq after
    /// failures that may hide an application (the session makes a repeat harmless).
    async fn write<Req, Resp, B, F, Fut>(&self, build: B, call: F) -> Result<Resp, ClientError>
    where
        B: Fn(Session) -> Req,
        F: Fn(KvClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.write_via(build, |target, req| call(target.kv.clone(), req)).await
    }

    /// [`Client::write`] through any service on the target's connection (`call` gets the
    /// target): the leader-following, retries and session of a write.
    pub(crate) async fn write_via<Req, Resp, B, F, Fut>(
        &self,
        build: B,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        B: Fn(Session) -> Req,
        F: Fn(&Target, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.start();
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.call_timeout;
        let mut seq = self.seq(deadline).await?;
        // Some attempt of this seq may have been applied.
        let mut maybe_applied = false;
        let mut next: Option<String> = None;
        let mut avoid: Vec<String> = Vec::new();
        let mut hops = 0u32;
        let mut backoffs = 0u32;
        let mut last = String::from("no attempt was made");
        let mut attempts = 0;
        while attempts < inner.max_attempts && Instant::now() < deadline {
            attempts += 1;
            let target = {
                let mut view = lock(&inner.view);
                match next.take().and_then(|uri| view.target(&uri)) {
                    Some(t) => Some(t),
                    None => view.pick_write(&avoid),
                }
            };
            let Some(target) = target else { break };
            let changed = inner.sessions_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let registration = lock(&inner.sessions).wire(&seq.ticket);
            let registering = registration == Registration::Register;
            let result = {
                let _in_flight = InFlight { view: &inner.view, uri: target.uri.clone() };
                match registration {
                    Registration::Ready(session) => {
                        let fut = call(&target, build(session));
                        inner.attempt(&target, fut, deadline).await.map(Some)
                    }
                    Registration::Register => {
                        let mut kv = target.kv.clone();
                        let fut =
                            async move { kv.register_session(RegisterSessionRequest {}).await };
                        let r = inner.attempt(&target, fut, deadline).await;
                        {
                            let mut sessions = lock(&inner.sessions);
                            match &r {
                                Ok(resp) => sessions.registered(&seq.ticket, resp.client_id),
                                Err(_) => sessions.registration_failed(&seq.ticket),
                            }
                        }
                        inner.sessions_changed.notify_waiters();
                        r.map(|_| None)
                    }
                    Registration::Wait => {
                        // Another write of this session is registering it.
                        attempts -= 1;
                        if tokio::time::timeout_at(deadline, changed).await.is_err() {
                            break;
                        }
                        next = Some(target.uri.clone());
                        continue;
                    }
                }
            };
            match result {
                Ok(Some(resp)) => {
                    lock(&inner.view).set_leader(&target.uri);
                    return Ok(resp);
                }
                Ok(None) => {
                    // Registered: the write goes to the same node (the leader) now.
                    attempts -= 1;
                    next = Some(target.uri.clone());
                    continue;
                }
                Err(Failure::Server(s)) => {
                    last = describe(&target, s.code(), s.message());
                    match s.code() {
                        Code::Unavailable => {
                            if let Some(addr) = leader_hint(&s) {
                                let (uri, changed) = {
                                    let mut view = lock(&inner.view);
                                    let before = view.leader().map(str::to_owned);
                                    let uri = view.ensure(&addr).ok();
                                    if let Some(u) = &uri {
                                        view.set_leader(u);
                                    }
                                    let changed = before != uri;
                                    (uri, changed)
                                };
                                if changed {
                                    // The view was wrong about the leader: roles changed.
                                    inner.refresher.request();
                                }
                                if let Some(u) = uri {
                                    let moved = u != target.uri;
                                    next = Some(u);
                                    if moved && hops < 3 {
                                        // Straight to the leader, no backoff.
                                        hops += 1;
                                        continue;
                                    }
                                }
                            } else {
                                lock(&inner.view).not_leader(&target.uri);
                                avoid.push(target.uri.clone());
                                inner.refresher.request();
                            }
                        }
                        // Handed to Raft but not committed in time: it may still be applied
                        // (a registration that may have been applied only wastes a session).
                        Code::DeadlineExceeded => maybe_applied |= !registering,
                        // The server forgot the session (FAILED_PRECONDITION), or the result
                        // of this seq (ABORTED): this attempt was not applied, an earlier one
                        // may have been.
                        Code::FailedPrecondition | Code::Aborted if !registering => {
                            if s.code() == Code::FailedPrecondition {
                                lock(&inner.sessions).expired(&seq.ticket);
                            }
                            if maybe_applied {
                                return Err(ClientError::Indeterminate);
                            }
                            // Never applied: the write starts over under a fresh seq.
                            drop(seq);
                            seq = self.seq(deadline).await?;
                            continue;
                        }
                        _ => return Err(ClientError::from_status(&s)),
                    }
                }
                Err(Failure::Local { why, maybe_sent }) => {
                    maybe_applied |= maybe_sent && !registering;
                    last = describe(&target, Code::Unavailable, &why);
                    avoid.push(target.uri.clone());
                    inner.refresher.request();
                }
            }
            hops = 0;
            backoff(backoffs, &inner.rng, deadline).await;
            backoffs += 1;
        }
        if maybe_applied {
            return Err(ClientError::Indeterminate);
        }
        Err(ClientError::Unavailable { attempts, last })
    }

    /// Sends a read where `from` says; after a failure tries another node, backing off once
    /// every candidate has failed.
    pub(crate) async fn read<Req, Resp, F, Fut>(
        &self,
        from: Option<ReadFrom>,
        req: Req,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.start();
        let inner = &*self.inner;
        let from = from.unwrap_or(inner.read_from);
        let deadline = Instant::now() + inner.call_timeout;
        let mut avoid: Vec<String> = Vec::new();
        let mut backoffs = 0u32;
        let mut last = String::from("no attempt was made");
        let mut attempts = 0;
        while attempts < inner.max_attempts && Instant::now() < deadline {
            attempts += 1;
            let Some(target) = lock(&inner.view).pick_read(from, &avoid) else { break };
            let result = {
                let _in_flight = InFlight { view: &inner.view, uri: target.uri.clone() };
                inner.attempt(&target, call(target.kv.clone(), req.clone()), deadline).await
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(Failure::Server(s)) => {
                    last = describe(&target, s.code(), s.message());
                    match s.code() {
                        // No leader, read not confirmed in time, busy, removed: another node
                        // may do better.
                        Code::Unavailable | Code::DeadlineExceeded => {
                            if s.code() == Code::Unavailable && leader_hint(&s).is_none() {
                                inner.refresher.request();
                            }
                        }
                        _ => return Err(ClientError::from_status(&s)),
                    }
                }
                Err(Failure::Local { why, .. }) => {
                    last = describe(&target, Code::Unavailable, &why);
                    inner.refresher.request();
                }
            }
            if !avoid.contains(&target.uri) {
                avoid.push(target.uri.clone());
            }
            // Untried nodes are tried at once; a second round backs off first.
            if avoid.len() >= lock(&inner.view).len() {
                avoid.clear();
                backoff(backoffs, &inner.rng, deadline).await;
                backoffs += 1;
            }
        }
        Err(ClientError::Unavailable { attempts, last })
    }
}

impl Inner {
    /// One attempt on `target`, bounded by the client's attempt timeout and the call's
    /// deadline. Keeps the node's bookkeeping (answered, failed locally); the caller counts
    /// the attempt in flight ([`InFlight`]) if it picked the node as a target.
    ///
    /// A missed deadline may mean the connection is dead without either side being told (a
    /// black-holed TCP connection: every later request on it hangs too, until HTTP/2 keepalive
    /// gives up on it many seconds later). The node's connections are therefore replaced, so
    /// that the next attempt there dials afresh.
    pub(crate) async fn attempt<Resp>(
        &self,
        target: &Target,
        fut: impl Future<Output = Result<tonic::Response<Resp>, Status>>,
        deadline: Instant,
    ) -> Result<Resp, Failure> {
        let until = (Instant::now() + self.request_timeout).min(deadline);
        let failure = match tokio::time::timeout_at(until, fut).await {
            Ok(Ok(r)) => {
                lock(&self.view).answered(&target.uri);
                return Ok(r.into_inner());
            }
            Ok(Err(s)) => match classify(s) {
                Failure::Server(s) => {
                    lock(&self.view).answered(&target.uri);
                    return Err(Failure::Server(s));
                }
                local => (local, false),
            },
            Err(_) => {
                let why = "no answer in time".to_owned();
                (Failure::Local { why, maybe_sent: true }, true)
            }
        };
        let (failure, reconnect) = failure;
        lock(&self.view).failed(&target.uri, target.generation, reconnect, Instant::now());
        // Its probe is now due at some point: the background task may have to wake earlier.
        self.refresher.nudge();
        Err(failure)
    }
}

fn describe(target: &Target, code: Code, message: &str) -> String {
    format!("{}: {code:?}: {message}", crate::transport::addr_of(&target.uri))
}
