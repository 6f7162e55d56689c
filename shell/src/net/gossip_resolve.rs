//! Gossip addresses to socket addresses, off the send path. Gossip names come from the wire
//! (any holder of the cluster key chooses them), so a lookup never holds up the send loop: an
//! IP literal or a cached name is answered at once; any other name starts a lookup in the
//! background (at most [`MAX_LOOKUPS_IN_FLIGHT`] at once, each bounded by [`LOOKUP_TIMEOUT`])
//! and its datagram is dropped, as gossip is lossy by design and retries on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

/// Lookups running at once.
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 8;
/// Longest one lookup may take before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Resolved names kept (a member's address rarely changes; the cache is emptied when full).
const MAX_RESOLVED: usize = 4096;

/// Resolves one name (`host:port`); `None` if it does not resolve.
pub type LookupFn =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send>> + Send + Sync>;

/// The system resolver (`getaddrinfo` through tokio), first address.
pub fn system_lookup() -> LookupFn {
    Arc::new(|name: String| {
        Box::pin(async move { tokio::net::lookup_host(name).await.ok()?.next() })
    })
}

/// What [`Resolver::addr`] knows about a name right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Ready(SocketAddr),
    /// A lookup is running (started now or earlier).
    Pending,
    /// No lookup could start: [`MAX_LOOKUPS_IN_FLIGHT`] are running.
    Busy,
}

/// The send loop's resolver: a bounded cache and a bounded set of background lookups.
pub struct Resolver {
    lookup: LookupFn,
    timeout: Duration,
    resolved: BTreeMap<String, SocketAddr>,
    pending: BTreeSet<String>,
    tasks: JoinSet<(String, Option<SocketAddr>)>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("resolved", &self.resolved.len())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Lookups through `lookup`, each given up after `timeout` (see [`LOOKUP_TIMEOUT`]).
    pub fn new(lookup: LookupFn, timeout: Duration) -> Self {
        Self {
            lookup,
            timeout,
            resolved: BTreeMap::new(),
            pending: BTreeSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// The address of `name` if known now; otherwise starts its lookup when there is room.
    /// Never waits.
    pub fn addr(&mut self, name: &str) -> Resolved {
        if let Ok(a) = name.parse() {
            return Resolved::Ready(a);
        }
        if let Some(a) = self.resolved.get(name) {
            return Resolved::Ready(*a);
        }
        if self.pending.contains(name) {
            return Resolved::Pending;
        }
        if self.pending.len() >= MAX_LOOKUPS_IN_FLIGHT {
            return Resolved::Busy;
        }
        let owned = name.to_owned();
        let lookup = (self.lookup)(owned.clone());
        let timeout = self.timeout;
        self.tasks.spawn(async move {
            let addr = tokio::time::timeout(timeout, lookup).await.ok().flatten();
            (owned, addr)
        });
        self.pending.insert(name.to_owned());
        Resolved::Pending
    }

    /// Waits for the next lookup to finish and records it; returns the name and whether it
    /// resolved. Pending forever while none runs (for `select!`).
    pub async fn finished(&mut self) -> (String, bool) {
        loop {
            match self.tasks.join_next().await {
                None => std::future::pending::<()>().await,
                Some(Ok((name, addr))) => {
                    self.pending.remove(&name);
                    let Some(addr) = addr else { return (name, false) };
                    if self.resolved.len() >= MAX_RESOLVED {
                        self.resolved.clear();
                    }
                    self.resolved.insert(name.clone(), addr);
                    return (name, true);
                }
                // A lookup task that panicked or was aborted: its name is lost with it, so
                // forget every pending name whose task is gone.
                Some(Err(_)) => {
                    if self.tasks.is_empty() {
                        self.pending.clear();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver whose lookups of names starting with "slow" never finish (they time out
    /// after 50 ms), and of others answer 10.0.0.1 at the name's port.
    fn resolver() -> Resolver {
        Resolver::new(
            Arc::new(|name: String| {
                Box::pin(async move {
                    if name.starts_with("slow") {
                        std::future::pending::<()>().await;
                    }
                    let port: u16 = name.rsplit(':').next()?.parse().ok()?;
                    Some(SocketAddr::from(([10, 0, 0, 1], port)))
                })
            }),
            Duration::from_millis(50),
        )
    }

    #[tokio::test]
    async fn lookups_are_bounded_and_never_block_the_caller() {
        let mut r = resolver();
        assert_eq!(r.addr("127.0.0.1:7"), Resolved::Ready("127.0.0.1:7".parse().unwrap()));
        for i in 0..MAX_LOOKUPS_IN_FLIGHT {
            assert_eq!(r.addr(&format!("slow{i}:1")), Resolved::Pending);
        }
        assert_eq!(r.addr("slow0:1"), Resolved::Pending, "one lookup per name");
        assert_eq!(r.addr("fast:9"), Resolved::Busy);
        assert_eq!(r.pending.len(), MAX_LOOKUPS_IN_FLIGHT);
        // The hanging lookups time out and free their slots.
        for _ in 0..MAX_LOOKUPS_IN_FLIGHT {
            let (name, ok) = r.finished().await;
            assert!(name.starts_with("slow") && !ok);
        }
        assert!(r.pending.is_empty());
        assert_eq!(r.addr("fast:9"), Resolved::Pending);
        assert_eq!(r.finished().await, ("fast:9".to_owned(), true));
        assert_eq!(r.addr("fast:9"), Resolved::Ready(SocketAddr::from(([10, 0, 0, 1], 9))));
    }
}
