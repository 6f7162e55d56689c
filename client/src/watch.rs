//! `Watch`: the changes of a key or a prefix as a stream that survives node failures.
//!
//! How the stream resumes is documented on [`Client::watch`].

use std::collections::VecDeque;
use tokio::time::Instant;

use futures_core::Stream;
use mokv_proto::api::watch_client::WatchClient;
use mokv_proto::api::{EventType, WatchRequest, WatchResponse};
use tonic::{Code, Streaming};

use crate::client::InFlight;
use crate::retry::{backoff, classify, Failure};
use crate::{lock, Client, ClientError, ReadFrom};

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    /// The revision (raft log index) of the change.
    pub revision: u64,
    /// The value before the change, when asked for ([`WatchOptions::prev_value`]) and the key
    /// existed.
    pub prev_value: Option<Vec<u8>>,
}

/// What to watch and from where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch every key starting with the given key.
    pub prefix: bool,
    /// The first revision to report; `None`: changes from now on.
    pub start_revision: Option<u64>,
    /// Also report each change's previous value.
    pub prev_value: bool,
}

impl WatchOptions {
    /// A key watch from now, without previous values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watch every key under the given one.
    #[must_use]
    pub fn prefix(mut self) -> Self {
        self.prefix = true;
        self
    }

    /// Start at `revision` (e.g. the last revision seen + 1).
    #[must_use]
    pub fn from_revision(mut self, revision: u64) -> Self {
        self.start_revision = Some(revision);
        self
    }

    /// Report previous values.
    #[must_use]
    pub fn prev_value(mut self) -> Self {
        self.prev_value = true;
        self
    }
}

struct State {
    client: Client,
    key: String,
    opts: WatchOptions,
    /// The next revision to ask for (`None` until the first response says where "now" was).
    next: Option<u64>,
    stream: Option<Streaming<WatchResponse>>,
    buffered: VecDeque<WatchEvent>,
}

impl Client {
    /// The changes of `key` (with [`WatchOptions::prefix`], of every key under it) as a stream,
    /// in revision order, complete and without duplicates.
    ///
    /// The stream keeps its position (the next revision). When the node serving it fails or
    /// cancels it as too slow, it is opened again on another healthy node (followers serve
    /// watches too) from that position. A node that no longer retains the position
    /// (OUT_OF_RANGE: compacted, e.g. after it installed a snapshot) is skipped for another;
    /// when every node answers so, the stream ends with that error, whose message carries the
    /// oldest available revision (changes were lost: read the current state and start again).
    /// It also ends when no node could serve it for
    /// [`ClientConfig::call_timeout`](crate::ClientConfig::call_timeout), and on a refusal
    /// (PERMISSION_DENIED, INVALID_ARGUMENT). It never ends otherwise.
    ///
    /// ```no_run
    /// # async fn demo(client: mokv_client::Client) -> Result<(), mokv_client::ClientError> {
    /// use mokv_client::{EventKind, Stream, WatchOptions};
    /// use futures_util::StreamExt;
    /// let mut events = Box::pin(client.watch("app/", WatchOptions::new().prefix()));
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{:?} {} at {}", event.kind, event.key, event.revision);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch(
        &self,
        key: &str,
        opts: WatchOptions,
    ) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send + 'static {
        let state = State {
            client: self.clone(),
            key: key.to_owned(),
            next: opts.start_revision,
            opts,
            stream: None,
            buffered: VecDeque::new(),
        };
        futures_util::stream::try_unfold(state, |mut st| async move {
            loop {
                if let Some(e) = st.buffered.pop_front() {
                    return Ok(Some((e, st)));
                }
                if st.stream.is_none() {
                    st.stream = Some(st.open().await?);
                }
                let Some(stream) = st.stream.as_mut() else { continue };
                match stream.message().await {
                    Ok(Some(resp)) => st.take(resp),
                    // A clean end without a status: the node went away; resume elsewhere.
                    Ok(None) => st.stream = None,
                    Err(s) => match classify(s) {
                        Failure::Server(s) if !resumable(s.code()) => {
                            return Err(ClientError::from_status(&s));
                        }
                        _ => st.stream = None,
                    },
                }
            }
        })
    }
}

/// Statuses after which the watch resumes on another node from its position.
fn resumable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

impl State {
    fn take(&mut self, resp: WatchResponse) {
        let from = self.next.unwrap_or(resp.start_revision);
        for e in resp.events {
            // Whole revisions from the resume point on only; never one seen before.
            if e.revision < from {
                continue;
            }
            self.buffered.push_back(WatchEvent {
                kind: if e.r#type == EventType::Delete as i32 {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                key: e.key,
                value: e.value,
                revision: e.revision,
                prev_value: e.has_prev_value.then_some(e.prev_value),
            });
        }
        self.next = Some(self.next.unwrap_or(0).max(resp.next_revision));
    }

    /// Opens the stream on some healthy node, from the position.
    async fn open(&self) -> Result<Streaming<WatchResponse>, ClientError> {
        self.client.start();
        let inner = &**self.client.inner();
        let deadline = Instant::now() + inner.call_timeout;
        let mut avoid: Vec<String> = Vec::new();
        let mut compacted: Option<tonic::Status> = None;
        let mut backoffs = 0u32;
        let mut attempts = 0u32;
        let mut last = String::from("no attempt was made");
        while Instant::now() < deadline {
            // The view's lock is released before any wait below.
            let picked = lock(&inner.view).pick_read(ReadFrom::Any, &avoid);
            let Some(target) = picked else {
                if let Some(s) = compacted.take() {
                    return Err(ClientError::from_status(&s));
                }
                avoid.clear();
                backoff(backoffs, &inner.rng, deadline).await;
                backoffs += 1;
                continue;
            };
            attempts += 1;
            let request = WatchRequest {
                key: self.key.clone(),
                prefix: self.opts.prefix,
                start_revision: self.next.unwrap_or(0),
                prev_value: self.opts.prev_value,
            };
            let result = {
                let _in_flight = InFlight { view: &inner.view, uri: target.uri.clone() };
                let mut watch = WatchClient::new(target.channel.clone());
                inner.attempt(&target, watch.watch(request), deadline).await
            };
            match result {
                Ok(stream) => return Ok(stream),
                Err(Failure::Server(s)) if s.code() == Code::OutOfRange => {
                    last = format!("{:?}: {}", s.code(), s.message());
                    compacted = Some(s);
                }
                Err(Failure::Server(s)) if !resumable(s.code()) => {
                    return Err(ClientError::from_status(&s));
                }
                Err(Failure::Server(s)) => last = format!("{:?}: {}", s.code(), s.message()),
                Err(Failure::Local { why, .. }) => {
                    last = why;
                    inner.refresher.request();
                }
            }
            if !avoid.contains(&target.uri) {
                avoid.push(target.uri.clone());
            }
        }
        Err(ClientError::Unavailable { attempts, last })
    }
}
