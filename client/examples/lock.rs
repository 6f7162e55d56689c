//! A distributed lock on mokv: a lease, an if-absent write attached to it, and a watch.
//!
//! To take the lock named `KEY`, a holder
//! 1. grants itself a lease and keeps it alive from a background task
//!    ([`Client::lease_keep_alive`]);
//! 2. writes `KEY` *if it is absent*, attached to that lease ([`Client::set_with_lease`] with
//!    [`Condition::Absent`]). If the write is applied, it holds the lock: the key names it.
//! 3. Otherwise someone else holds it: the failed write tells the key's revision; the holder
//!    watches `KEY` from the next revision for its DELETE, then tries again from step 2.
//!
//! The lock is released by revoking the lease (the key is deleted with it). If the holder
//! dies, its keep-alives stop and the leader expires the lease after its TTL, which deletes
//! the key: the next waiter's watch sees the DELETE. A lock is therefore safe only as long as
//! its holder notices in time that its lease is gone (the keeper's state turns
//! [`KeepAliveState::Gone`]); work that must never overlap should also carry the acquiring
//! revision to whatever it changes (a fencing token), since a paused holder may not notice.
//!
//! ```text
//! cargo run -p mokv-client --example lock -- ADDR KEY NAME HOLD_MS ROUNDS
//! ```
//!
//! For each round it prints `acquired <revision>` once it holds the lock and `released
//! <revision>` once it gave it up: the revisions a holder held the lock between. TLS files come
//! from `MOKV_CA`, `MOKV_CERT`, `MOKV_KEY` (the `--dev` node's files by default).

use std::path::PathBuf;
use std::time::Duration;

use mokv_client::{
    default_dev_dir, CasOutcome, Client, ClientConfig, ClientError, Condition, EventKind,
    KeepAliveState, LeaseKeeper, Stream, TlsFiles, WatchOptions,
};

/// TTL of the lock's lease: how long a crashed holder blocks the others.
const LEASE_TTL: Duration = Duration::from_secs(3);

/// A held lock: the lease whose revoke releases it, and the revision it was taken at (a
/// fencing token).
struct Held {
    lease: u64,
    revision: u64,
    _keeper: LeaseKeeper,
}

/// Blocks until `key` is held by `name` (see the module docs).
async fn acquire(client: &Client, key: &str, name: &str) -> Result<Held, ClientError> {
    let lease = client.lease_grant(LEASE_TTL).await?;
    let keeper = client.lease_keep_alive(lease.id, LEASE_TTL);
    loop {
        let outcome =
            client.set_with_lease(key, name.as_bytes(), lease.id, Some(Condition::Absent)).await?;
        let revision = match outcome {
            CasOutcome::Applied { revision } => {
                return Ok(Held { lease: lease.id, revision, _keeper: keeper });
            }
            // Deleted between the write's evaluation and now: try again at once.
            CasOutcome::Failed { current: None, .. } => continue,
            CasOutcome::Failed { revision, current: Some(_) } => revision,
        };
        // Held by someone else as of `revision`: wait for its DELETE after that.
        let mut events =
            Box::pin(client.watch(key, WatchOptions::new().from_revision(revision + 1)));
        while let Some(event) = next(&mut events).await {
            if event?.kind == EventKind::Delete {
                break;
            }
        }
        if *keeper.state().borrow() == KeepAliveState::Gone {
            return Err(ClientError::Refused {
                code: tonic::Code::NotFound,
                message: "our lease expired while waiting".into(),
            });
        }
    }
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let seed = args.next().unwrap_or_else(|| "127.0.0.1:8400".to_owned());
    let key = args.next().unwrap_or_else(|| "locks/demo".to_owned());
    let name = args.next().unwrap_or_else(|| format!("holder-{}", std::process::id()));
    let hold_ms: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(500);
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let dev = TlsFiles::dev(&default_dev_dir());
    let file = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    let tls = TlsFiles {
        ca: file("MOKV_CA", dev.ca),
        cert: file("MOKV_CERT", dev.cert),
        key: file("MOKV_KEY", dev.key),
    };
    let client = Client::connect(ClientConfig::new(vec![seed], tls))?;
    for _ in 0..rounds {
        let held = acquire(&client, &key, &name).await?;
        println!("acquired {}", held.revision);
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        let released = client.lease_revoke(held.lease).await?;
        println!("released {released}");
    }
    Ok(())
}
