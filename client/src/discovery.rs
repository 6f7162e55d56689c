//! Discovery and probing, in one background task per client.
//!
//! The task wakes every [`ClientConfig::refresh_interval`](crate::ClientConfig), when a call
//! asks for a refresh (a leader hint that changed the leader, a connection failure, an
//! UNAVAILABLE answer without a hint) — at most once per [`MIN_GAP`], and not while the last
//! round was refused (an identity without the `discover` permission: then only the interval
//! retries) — and when the probe of a failing node is due. Each round:
//! - probes the failing nodes whose probe is due with `GetServers` (any answer of the node
//!   itself, even a refusal, brings it back; no answer backs its next probe off);
//! - with discovery on, asks for the member list: the leader first, then the other usable
//!   nodes, then the rest, then the seed endpoints no longer in the view (so a client whose
//!   every known node moved can start over from its seeds). The first answer replaces the
//!   view's node list.
//!
//! The task holds the client weakly: it ends when the last [`Client`](crate::Client) clone is
//! dropped (the drop also aborts it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::Code;

use crate::client::Inner;
use crate::retry::Failure;
use crate::types::Member;
use crate::view::Target;
use crate::{lock, ClientError};

/// Refreshes asked for by calls are at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(100);
/// Wake-up when nothing is due (a request or a new failure wakes the task earlier).
const IDLE: Duration = Duration::from_secs(3600);

/// The handle on a client's background task.
#[derive(Debug, Default)]
pub(crate) struct Refresher {
    wake: Arc<Notify>,
    started: AtomicBool,
    requested: AtomicBool,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Refresher {
    /// Spawns the task, once, if a tokio runtime is running.
    pub(crate) fn start(&self, inner: &Arc<Inner>) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut task = lock(&self.task);
        if task.is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let handle = tokio::spawn(run(Arc::downgrade(inner), self.wake.clone()));
        *task = Some(handle.abort_handle());
        self.started.store(true, Ordering::Release);
    }

    /// Asks for a member-list refresh soon.
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Something changed that may move the next wake-up earlier (a node failed).
    pub(crate) fn nudge(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

async fn run(client: Weak<Inner>, wake: Arc<Notify>) {
    let mut last_discovery: Option<Instant> = None;
    // The last round was refused (no `discover` permission): only the interval retries it,
    // not every failing call.
    let mut refused = false;
    loop {
        let at = {
            let Some(inner) = client.upgrade() else { return };
            inner.next_round(last_discovery, refused)
        };
        tokio::select! {
            biased;
            () = wake.notified() => {}
            () = tokio::time::sleep_until(at) => {}
        }
        let Some(inner) = client.upgrade() else { return };
        let now = Instant::now();
        inner.probe(now).await;
        if inner.discovery && inner.discovery_due(last_discovery, now, refused) {
            inner.refresher.requested.store(false, Ordering::Release);
            last_discovery = Some(now);
            // A failed round is retried at the next interval or request; calls go on with
            // the view they have.
            let result = inner.discover().await;
            refused = matches!(result, Err(ClientError::Refused { .. }));
        }
    }
}

impl Inner {
    fn discovery_due(&self, last: Option<Instant>, now: Instant, refused: bool) -> bool {
        let Some(last) = last else { return true };
        now >= last + self.refresh_interval
            || (!refused
                && self.refresher.requested.load(Ordering::Acquire)
                && now >= last + MIN_GAP)
    }

    /// When the task should wake next.
    fn next_round(&self, last_discovery: Option<Instant>, refused: bool) -> Instant {
        let now = Instant::now();
        let mut at = now + IDLE;
        if self.discovery {
            at = match last_discovery {
                None => now,
                Some(last) if !refused && self.refresher.requested.load(Ordering::Acquire) => {
                    (last + MIN_GAP).max(now)
                }
                Some(last) => last + self.refresh_interval,
            };
        }
        match lock(&self.view).next_probe() {
            Some(p) => at.min(p),
            None => at,
        }
    }

    /// Probes the failing nodes whose probe is due, all at once.
    async fn probe(&self, now: Instant) {
        let due = lock(&self.view).probes_due(now);
        let probes = due.into_iter().map(|t| async move {
            let _ = self.ask_members(&t).await;
        });
        futures_util::future::join_all(probes).await;
    }

    /// `GetServers` on one node, one attempt.
    async fn ask_members(&self, target: &Target) -> Result<Vec<Member>, Failure> {
        let mut kv = target.kv.clone();
        let deadline = Instant::now() + self.request_timeout;
        let fut = async move { kv.get_servers(()).await };
        let r = self.attempt(target, fut, deadline).await?;
        Ok(r.servers.into_iter().map(Member::from).collect())
    }

    /// One discovery round (see the module doc).
    pub(crate) async fn discover(&self) -> Result<(), ClientError> {
        let mut last = String::from("no node to ask");
        let mut targets = lock(&self.view).discovery_order();
        let mut seeds_added = false;
        while let Some(t) = (!targets.is_empty()).then(|| targets.remove(0)) {
            match self.ask_members(&t).await {
                Ok(members) if !members.is_empty() => {
                    lock(&self.view).apply_members(&members);
                    return Ok(());
                }
                Ok(_) => last = "an empty member list".into(),
                Err(Failure::Server(s)) => {
                    if matches!(
                        s.code(),
                        Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented
                    ) {
                        return Err(ClientError::from_status(&s));
                    }
                    last = format!("{:?}: {}", s.code(), s.message());
                }
                Err(Failure::Local { why, .. }) => last = why,
            }
            if targets.is_empty() && !seeds_added {
                // Every node known failed: start over from the seeds no longer in the view.
                seeds_added = true;
                let mut view = lock(&self.view);
                for seed in &self.seeds {
                    let uri = view.uri(seed);
                    if view.contains(&uri) {
                        continue;
                    }
                    if let Ok(uri) = view.ensure(seed) {
                        targets.extend(view.peek(&uri));
                    }
                }
            }
        }
        Err(ClientError::Unavailable { attempts: 0, last })
    }
}
