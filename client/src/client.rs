//! The client: connections, routing, retries.

use std::time::Duration;

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{
    DeleteRequest, GetRequest, RangeRequest, ReadConsistency, Session, SetRequest,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::transport::{Ids, Transport};
use crate::{ClientError, Plaintext, TlsFiles};

/// How a client reaches a cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` or `https://host:port` of one or more nodes' client (`KV`) service.
    pub endpoints: Vec<String>,
    pub tls: TlsFiles,
    /// Deadline of one attempt.
    pub request_timeout: Duration,
    /// Attempts per call before giving up (retryable failures only).
    pub max_attempts: u32,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<String>, tls: TlsFiles) -> Self {
        Self { endpoints, tls, request_timeout: Duration::from_secs(5), max_attempts: 8 }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Sees every write acknowledged before the read started (the default).
    #[default]
    Linearizable,
    /// The answering node's local state; may be stale.
    Serializable,
}

impl ReadMode {
    fn wire(self) -> i32 {
        match self {
            ReadMode::Linearizable => ReadConsistency::Linearizable as i32,
            ReadMode::Serializable => ReadConsistency::Serializable as i32,
        }
    }
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// One cluster member as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub rpc_addr: String,
    pub is_leader: bool,
    pub raft_id: u64,
    pub voter: bool,
    pub health: String,
}

#[derive(Debug)]
struct Conn {
    addr: String,
    kv: KvClient<Channel>,
}

/// A connection to a cluster. Calls take `&mut self`: one client has one request in flight,
/// which is what keeps its session sequence simple; use several clients for concurrency.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    ids: Ids,
    timeout: Duration,
    max_attempts: u32,
    conns: Vec<Conn>,
    leader: Option<usize>,
    next_read: usize,
    client_id: u64,
    next_seq: u64,
    /// Whether some write of this session has been answered with success (so the server
    /// knows the session).
    session_known: bool,
}

impl Client {
    /// Prepares connections to every endpoint (connected lazily, so a node that is down does
    /// not stop the client from starting).
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints".into()));
        }
        let tls = config.tls.load()?;
        Self::with_transport(&config, Transport::Tls(tls), Ids::Os)
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
        Self::with_transport(&config, transport, Ids::Seeded(plaintext.id_seed))
    }

    fn with_transport(
        config: &ClientConfig,
        transport: Transport,
        mut ids: Ids,
    ) -> Result<Client, ClientError> {
        let client_id = ids.draw()?;
        let mut client = Client {
            transport,
            ids,
            timeout: config.request_timeout,
            max_attempts: config.max_attempts.max(1),
            conns: Vec::new(),
            leader: None,
            next_read: 0,
            client_id,
            next_seq: 1,
            session_known: false,
        };
        for e in &config.endpoints {
            client.conn_index(e)?;
        }
        Ok(client)
    }

    /// Writes `value` under `key`; returns the revision (raft index) of the write.
    pub async fn set(&mut self, key: &str, value: &[u8]) -> Result<u64, ClientError> {
        let session = self.new_session();
        let req = SetRequest { key: key.to_owned(), value: value.to_vec(), session: Some(session) };
        let resp =
            self.write(|mut kv, req: SetRequest| async move { kv.set(req).await }, req).await?;
        Ok(resp.revision)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&mut self, key: &str) -> Result<bool, ClientError> {
        let session = self.new_session();
        let req = DeleteRequest { key: key.to_owned(), session: Some(session) };
        let resp = self
            .write(|mut kv, req: DeleteRequest| async move { kv.delete(req).await }, req)
            .await?;
        Ok(resp.ok)
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(&mut self, key: &str, mode: ReadMode) -> Result<Option<Entry>, ClientError> {
        let req = GetRequest { key: key.to_owned(), consistency: mode.wire() };
        match self.read(|mut kv, req: GetRequest| async move { kv.get(req).await }, req).await {
            Ok(r) => Ok(Some(Entry {
                key: if r.key.is_empty() { key.to_owned() } else { r.key },
                value: r.value,
                create_revision: r.create_revision,
                mod_revision: r.mod_revision,
                version: r.version,
            })),
            Err(ClientError::Refused { code: Code::NotFound, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of keys under `prefix`, after `page_token` ("" for the first page). Returns the
    /// entries and the next page's token ("" after the last page).
    pub async fn range(
        &mut self,
        prefix: &str,
        limit: u32,
        page_token: &str,
        keys_only: bool,
        mode: ReadMode,
    ) -> Result<(Vec<Entry>, String), ClientError> {
        let req = RangeRequest {
            prefix: prefix.to_owned(),
            start_key: String::new(),
            limit,
            page_token: page_token.to_owned(),
            keys_only,
            consistency: mode.wire(),
        };
        let r =
            self.read(|mut kv, req: RangeRequest| async move { kv.range(req).await }, req).await?;
        let entries = r
            .kvs
            .into_iter()
            .map(|kv| Entry {
                key: kv.key,
                value: kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
            })
            .collect();
        Ok((entries, r.next_page_token))
    }

    /// Members as the next node asked reports them.
    pub async fn members(&mut self) -> Result<Vec<Member>, ClientError> {
        let r = self.read(|mut kv, req: ()| async move { kv.get_servers(req).await }, ()).await?;
        Ok(r.servers
            .into_iter()
            .map(|s| Member {
                voter: s.suffrage == mokv_proto::api::Suffrage::Voter as i32,
                health: mokv_proto::api::Health::try_from(s.health)
                    .map(|h| h.as_str_name().trim_start_matches("HEALTH_").to_lowercase())
                    .unwrap_or_else(|_| "unknown".into()),
                name: s.id,
                rpc_addr: s.rpc_addr,
                is_leader: s.is_leader,
                raft_id: s.raft_id,
            })
            .collect())
    }

    fn new_session(&mut self) -> Session {
        let seq = self.next_seq;
        self.next_seq += 1;
        // One request in flight per client: everything before this seq was answered. Until a
        // write has succeeded, the server may not know the session at all (writes refused
        // before they reached the log, e.g. INVALID_ARGUMENT, do not open it), and an unknown
        // session with answered seqs is taken for an expired one: claim none answered yet.
        let first_unacked_seq = if self.session_known { seq } else { 1 };
        Session { client_id: self.client_id, seq, first_unacked_seq }
    }

    /// The server forgot this session (FAILED_PRECONDITION): later writes use a new one.
    fn restart_session(&mut self) {
        let next = self.client_id.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        self.client_id = self.ids.draw().unwrap_or(next).max(1);
        self.next_seq = 1;
        self.session_known = false;
    }

    /// Sends a write to the leader, following hints; retries with the same session on
    /// retryable and indeterminate failures (the session makes a repeat harmless).
    async fn write<Req, Resp, F, Fut>(&mut self, call: F, req: Req) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut last = String::new();
        let mut indeterminate = false;
        for attempt in 0..self.max_attempts {
            let idx = self.leader.unwrap_or(attempt as usize % self.conns.len());
            let kv = self.conns[idx].kv.clone();
            match self.attempt(idx, call(kv, req.clone())).await {
                Ok(r) => {
                    self.session_known = true;
                    return Ok(r);
                }
                Err(s) => {
                    last = format!("{}: {}", self.conns[idx].addr, s.message());
                    match s.code() {
                        Code::Unavailable => self.follow_hint(&s)?,
                        Code::FailedPrecondition => {
                            self.restart_session();
                            return Err(ClientError::from_status(&s));
                        }
                        // Timed out at or on the way to the server: it may have been applied;
                        // the retry carries the same session and seq, so it is applied once.
                        Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                            indeterminate = true;
                            self.leader = None;
                        }
                        _ => return Err(ClientError::from_status(&s)),
                    }
                }
            }
            backoff(attempt).await;
        }
        if indeterminate {
            return Err(ClientError::Indeterminate);
        }
        Err(ClientError::Unavailable { attempts: self.max_attempts, last })
    }

    /// Sends a read to the next node round-robin; on UNAVAILABLE tries the next one.
    async fn read<Req, Resp, F, Fut>(&mut self, call: F, req: Req) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut last = String::new();
        for attempt in 0..self.max_attempts {
            let idx = self.next_read % self.conns.len();
            self.next_read = self.next_read.wrapping_add(1);
            let kv = self.conns[idx].kv.clone();
            match self.attempt(idx, call(kv, req.clone())).await {
                Ok(r) => return Ok(r),
                Err(s) => match s.code() {
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown => {
                        last = format!("{}: {}", self.conns[idx].addr, s.message());
                    }
                    _ => return Err(ClientError::from_status(&s)),
                },
            }
            if attempt + 1 >= self.conns.len() as u32 {
                backoff(attempt).await;
            }
        }
        Err(ClientError::Unavailable { attempts: self.max_attempts, last })
    }

    /// One attempt on connection `idx`, bounded by the client's deadline.
    ///
    /// A missed deadline may mean the connection is dead without either side being told (a
    /// black-holed TCP connection: every later request on it hangs too, until HTTP/2 keepalive
    /// gives up on it many seconds later). The connection is therefore replaced, so the next
    /// attempt on that node dials afresh. (Found by the level-2 simulator: a client whose
    /// answers from the leader were lost kept retrying on the hung connection until its retry
    /// budget ran out, long after the network had healed.)
    async fn attempt<Resp>(
        &mut self,
        idx: usize,
        fut: impl std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    ) -> Result<Resp, Status> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => {
                if let Ok(kv) = self.dial(&self.conns[idx].addr) {
                    self.conns[idx].kv = kv;
                }
                Err(Status::deadline_exceeded("client deadline"))
            }
        }
    }

    /// After UNAVAILABLE: go to the hinted leader, or try the next node.
    fn follow_hint(&mut self, s: &Status) -> Result<(), ClientError> {
        let hint = s
            .metadata()
            .get(mokv_proto::LEADER_HINT_ADDR)
            .and_then(|v| v.to_str().ok())
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        self.leader = match hint {
            Some(addr) => Some(self.conn_index(&addr)?),
            // No hint: forget the leader and let the next attempt try another node.
            None => None,
        };
        Ok(())
    }

    /// Index of the connection to `addr`, creating it if new.
    fn conn_index(&mut self, addr: &str) -> Result<usize, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("{}://{addr}", self.transport.scheme())
        };
        if let Some(i) = self.conns.iter().position(|c| c.addr == uri) {
            return Ok(i);
        }
        let kv = self.dial(&uri)?;
        self.conns.push(Conn { addr: uri, kv });
        Ok(self.conns.len() - 1)
    }

    /// A new (lazily connecting) channel to `uri`.
    fn dial(&self, uri: &str) -> Result<KvClient<Channel>, ClientError> {
        let endpoint = Endpoint::from_shared(uri.to_owned())
            .map_err(|_| ClientError::Config("invalid endpoint address".into()))?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(KvClient::new(self.transport.channel(endpoint)?))
    }
}

async fn backoff(attempt: u32) {
    let ms = (50u64 << attempt.min(5)).min(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
