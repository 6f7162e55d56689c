//! What a client is configured with, and the per-call read options.

use std::time::Duration;

use mokv_proto::api::ReadConsistency;

use crate::TlsFiles;

/// How a client reaches a cluster, and how hard it tries.
///
/// Build it with [`ClientConfig::new`] and change the fields you need; the defaults suit a
/// service that embeds the client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Seed endpoints: `host:port` (or `https://host:port`) of one or more nodes' client (`KV`)
    /// service. With [`discovery`](Self::discovery) on, one is enough: the client learns the
    /// other members from it and no longer needs any seed once it has.
    pub endpoints: Vec<String>,
    /// The client's mTLS files (CA, certificate, key; the certificate's CN is its identity).
    pub tls: TlsFiles,
    /// Deadline of one attempt (one rpc to one node). Default 5 s.
    pub request_timeout: Duration,
    /// Deadline of one call, retries included: a call never takes (much) longer than this.
    /// Default 15 s.
    pub call_timeout: Duration,
    /// Attempts per call at most (retryable failures only). Default 12.
    pub max_attempts: u32,
    /// HTTP/2 connections per node; every call in flight to a node shares them. Default 1.
    pub connections_per_node: usize,
    /// Learn the members through `GetServers` (needs the `discover` permission, which the
    /// default policy gives every identity that holds any permission). Off: the client uses
    /// the seed endpoints only, plus the leaders that nodes point it to. Default on.
    pub discovery: bool,
    /// How often the member list is refreshed (it is also refreshed after a leader hint, a
    /// connection failure or an UNAVAILABLE answer). Default 5 s.
    pub refresh_interval: Duration,
    /// Where reads go when the call does not say ([`ReadOptions::from`]). Default
    /// [`ReadFrom::Followers`].
    pub read_from: ReadFrom,
    /// Writes in flight per session at most (seqs between the oldest unanswered one and the
    /// newest). Must not exceed the server's results kept per session (64 by default), or a
    /// retried write could be refused as discarded. Default 32.
    pub session_window: u32,
    /// Sessions a client opens at most, so that one slow write does not stall the others;
    /// writes beyond `session_window × max_sessions` in flight wait. Default 8.
    pub max_sessions: usize,
}

impl ClientConfig {
    /// The defaults, with `endpoints` as seeds and `tls` as the identity.
    pub fn new(endpoints: Vec<String>, tls: TlsFiles) -> Self {
        Self {
            endpoints,
            tls,
            request_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
            max_attempts: 12,
            connections_per_node: 1,
            discovery: true,
            refresh_interval: Duration::from_secs(5),
            read_from: ReadFrom::Followers,
            session_window: 32,
            max_sessions: 8,
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Sees every write acknowledged before the read started (the default). Any node answers
    /// it (through ReadIndex), so it is never stale, wherever it is served.
    #[default]
    Linearizable,
    /// The answering node's local state; may be stale.
    Serializable,
}

impl ReadMode {
    pub(crate) fn wire(self) -> i32 {
        match self {
            ReadMode::Linearizable => ReadConsistency::Linearizable as i32,
            ReadMode::Serializable => ReadConsistency::Serializable as i32,
        }
    }
}

/// Which nodes may serve a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The leader (any node while no leader is known).
    Leader,
    /// Healthy followers, spread by least outstanding requests; the leader when no follower
    /// is healthy (the default).
    #[default]
    Followers,
    /// Any healthy node, the leader included.
    Any,
}

/// Options of one read: its consistency and where it may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// How fresh the answer must be.
    pub mode: ReadMode,
    /// Which nodes may answer; `None`: the client's [`ClientConfig::read_from`].
    pub from: Option<ReadFrom>,
}

impl ReadOptions {
    /// Linearizable, from where the client's configuration says.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options with consistency `mode`.
    #[must_use]
    pub fn mode(mut self, mode: ReadMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same options, served from `from`.
    #[must_use]
    pub fn from(mut self, from: ReadFrom) -> Self {
        self.from = Some(from);
        self
    }
}

impl From<ReadMode> for ReadOptions {
    fn from(mode: ReadMode) -> Self {
        ReadOptions { mode, from: None }
    }
}

impl From<ReadFrom> for ReadOptions {
    fn from(from: ReadFrom) -> Self {
        ReadOptions { mode: ReadMode::default(), from: Some(from) }
    }
}

/// Options of a paged [`Client::range_stream`](crate::Client::range_stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Keys per page asked of the server; 0: the server's default page size.
    pub page_size: u32,
    /// Only the keys and revisions, without values.
    pub keys_only: bool,
    /// Continue after this page token (from an earlier page); "" to start at the beginning.
    pub page_token: String,
    /// Consistency and placement of each page's read.
    pub read: ReadOptions,
}
