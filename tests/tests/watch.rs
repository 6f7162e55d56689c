//! Watch end to end: real `mokvd` processes over mTLS, the `mokv watch` CLI as the watching
//! processes, kill -9 of the leader while a writer writes; and the statuses a watch can end
//! with (compacted, too slow, denied), read from the raw gRPC stream.

use std::collections::BTreeMap;
use std::time::Duration;

use mokv_client::ClientError;
use mokv_proto::api::watch_client::WatchClient;
use mokv_proto::api::{EventType, WatchRequest};
use mokv_tests::{eventually, eventually_within, find_leader, Bins, Certs, Cluster, MokvProcess};
use tonic::Code;

/// A running `mokv watch` whose stdout lines are collected as they come.
struct Watcher(MokvProcess);

impl Watcher {
    fn start(bins: &Bins, certs: &Certs, endpoints: &[&str], args: &[&str]) -> Watcher {
        let args: Vec<&str> = std::iter::once("watch").chain(args.iter().copied()).collect();
        Watcher(MokvProcess::start(bins, certs, endpoints, &args))
    }

    fn lines(&self) -> Vec<String> {
        self.0.lines()
    }

    /// Whether it printed `PUT <key> <revision> ...`.
    fn saw(&self, key: &str, revision: u64) -> bool {
        let prefix = format!("PUT {key} {revision} ");
        self.lines().iter().any(|l| l.starts_with(&prefix))
    }

    fn still_running(&mut self) -> bool {
        self.0.still_running()
    }
}

/// `PUT <key> <revision> <value>` lines as (revision, key, value); panics on anything else.
fn puts(lines: &[String]) -> Vec<(u64, String, String)> {
    lines
        .iter()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (kind, key, revision, value) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            assert_eq!(kind, Some("PUT"), "unexpected line {l:?}");
            let revision = revision.and_then(|r| r.parse().ok()).expect("a revision");
            (revision, key.expect("a key").to_owned(), value.unwrap_or_default().to_owned())
        })
        .collect()
}

/// A writer writes `w/<i>` while two `mokv watch --prefix w/` processes watch, one started on
/// the leader, one on a follower; the leader is killed (SIGKILL) in the middle. Each watcher
/// must print every acknowledged write exactly once, at its revision, in revision order, and
/// nothing that was not written: it resumed on a live node from its last revision + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watcher_sees_every_change_across_kill_9_of_the_leader() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let client = cluster.client();
    // A first write fixes where the watches start, so none can miss the beginning.
    let start = client.set("w/start", b"0").await.unwrap();
    let from = start.to_string();
    let args = ["--prefix", "w/", "--from-revision", from.as_str()];
    let leader_addr = cluster.nodes[leader].addr.clone();
    let follower_addr = cluster.nodes[follower].addr.clone();
    let mut watchers = [
        Watcher::start(&cluster.bins, &cluster.certs, &[&leader_addr], &args),
        Watcher::start(&cluster.bins, &cluster.certs, &[&follower_addr], &args),
    ];
    for w in &watchers {
        eventually("the watch started", || {
            let seen = w.saw("w/start", start);
            async move { seen.then_some(()) }
        })
        .await;
    }

    // (key, value) -> revision of the acknowledged writes; values written but not confirmed.
    let mut acked: BTreeMap<(String, String), u64> = BTreeMap::new();
    acked.insert(("w/start".into(), "0".into()), start);
    let mut unconfirmed: Vec<(String, String)> = Vec::new();
    let write = |i: u64| {
        let client = client.clone();
        async move {
            let key = format!("w/{:03}", i % 50);
            let value = format!("v{i}");
            (key.clone(), value.clone(), client.set(&key, value.as_bytes()).await)
        }
    };
    let mut record = |(key, value, result): (String, String, Result<u64, ClientError>)| {
        match result {
            Ok(revision) => {
                acked.insert((key, value), revision);
            }
            Err(ClientError::Unavailable { .. }) => {} // never applied
            Err(_) => unconfirmed.push((key, value)),
        }
    };
    for i in 0..60 {
        record(write(i).await);
    }
    cluster.nodes[leader].kill();
    let live: Vec<(usize, String)> =
        (0..3).filter(|i| *i != leader).map(|i| (i, cluster.nodes[i].addr.clone())).collect();
    let certs = cluster.certs.clone();
    eventually_within("a new leader", Duration::from_secs(10), || {
        let live = live.clone();
        let certs = certs.clone();
        async move { find_leader(&certs, &live).await }
    })
    .await;
    for i in 60..120 {
        record(write(i).await);
    }
    let end = client.set("w/end", b"end").await.unwrap();
    acked.insert(("w/end".into(), "end".into()), end);

    for (n, w) in watchers.iter_mut().enumerate() {
        eventually(&format!("watcher {n} saw the last write"), || {
            let seen = w.saw("w/end", end);
            async move { seen.then_some(()) }
        })
        .await;
        assert!(w.still_running(), "watcher {n} exited");
        let events = puts(&w.lines());
        // In revision order, no revision twice (one key per write).
        assert!(
            events.windows(2).all(|p| p[0].0 < p[1].0),
            "watcher {n}: not strictly increasing: {events:?}"
        );
        let seen: BTreeMap<(String, String), u64> =
            events.iter().map(|(r, k, v)| ((k.clone(), v.clone()), *r)).collect();
        assert_eq!(seen.len(), events.len(), "watcher {n}: a write seen twice");
        for (write, revision) in &acked {
            assert_eq!(seen.get(write), Some(revision), "watcher {n} missed {write:?}");
        }
        for write in seen.keys() {
            assert!(
                acked.contains_key(write) || unconfirmed.contains(write),
                "watcher {n} saw {write:?}, which was never written"
            );
        }
        eprintln!("watcher {n}: {} events, {} acknowledged writes", events.len(), acked.len());
    }
}

/// The statuses a watch ends with, on the raw stream: a start before every node's retained
/// history (OUT_OF_RANGE with the oldest revision), a reader too slow for its queue
/// (RESOURCE_EXHAUSTED after the events it did get), a caller without `consume` on the prefix
/// (PERMISSION_DENIED); and a follower serving a watch that starts ahead of what it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_statuses_compacted_too_slow_denied() {
    let mut cluster = Cluster::start(
        Bins::get(),
        &[("--watch-queue-max-bytes", "4096"), ("--watch-history-max-revisions", "1000")],
    )
    .await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let addr = cluster.nodes[follower].addr.clone();
    let client = cluster.client();
    let request = |key: &str, prefix: bool, start_revision: u64| WatchRequest {
        key: key.into(),
        prefix,
        start_revision,
        prev_value: true,
    };

    // A start ahead of what was written: the follower serves it once it gets there, from
    // exactly that revision, with the previous value.
    let start = client.set("p/a", b"0").await.unwrap() + 3;
    let mut w = WatchClient::new(cluster.certs.channel(&addr, Some("root")));
    let mut ahead = w.watch(request("p/a", false, start)).await.unwrap().into_inner();
    let mut written = Vec::new();
    for v in 1..=4u8 {
        written.push((client.set("p/a", &[b'0' + v]).await.unwrap(), b'0' + v));
    }
    // The first write at or after `start` (at least the third one is), and the one before it.
    let i = written.iter().position(|(r, _)| *r >= start).unwrap();
    let (revision, value) = written[i];
    let prev = if i == 0 { b'0' } else { written[i - 1].1 };
    let first = tokio::time::timeout(mokv_tests::DEADLINE, async {
        loop {
            match ahead.message().await {
                Ok(Some(r)) if !r.events.is_empty() => break r,
                Ok(Some(_)) => {}
                other => panic!("the watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the follower's first event");
    let e = &first.events[0];
    assert_eq!((e.key.as_str(), e.revision, e.value.as_slice()), ("p/a", revision, &[value][..]));
    assert_eq!(e.r#type, EventType::Put as i32);
    assert_eq!((e.has_prev_value, e.prev_value.as_slice()), (true, &[prev][..]));

    // Revision 1 is the bootstrap snapshot on n1; the others joined by a snapshot too.
    let status = w.watch(request("p/", true, 1)).await.expect_err("a compacted start");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("the oldest available revision is"), "{status:?}");
    let oldest: u64 = status
        .metadata()
        .get("mokv-oldest-revision")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("the oldest revision in the metadata");
    assert!(oldest > 1);
    // From the oldest available revision on, the same node serves it.
    w.watch(request("p/", true, oldest)).await.unwrap();

    // `nobody` may not consume anything.
    let mut denied = WatchClient::new(cluster.certs.channel(&addr, Some("nobody")));
    let status = denied.watch(request("p/", true, 0)).await.expect_err("a denied watch");
    assert_eq!(status.code(), Code::PermissionDenied);

    // A reader that does not read: once the HTTP/2 windows (about 1 MiB each way) are full,
    // its queue (4 KiB) overflows and it is cancelled. 8 MiB of changes is far beyond both.
    const SLOW_WRITES: usize = 1024;
    let mut slow = w.watch(request("s/", true, 0)).await.unwrap().into_inner();
    let value = vec![b'x'; 8192];
    let writes: Vec<_> = (0..SLOW_WRITES)
        .map(|i| {
            let client = client.clone();
            let value = value.clone();
            tokio::spawn(async move { client.set(&format!("s/{i}"), &value).await })
        })
        .collect();
    for t in writes {
        t.await.unwrap().unwrap();
    }
    let mut events = 0usize;
    let status = tokio::time::timeout(mokv_tests::DEADLINE, async {
        loop {
            match slow.message().await {
                Ok(Some(r)) => events += r.events.len(),
                Ok(None) => panic!("the stream ended without a status after {events} events"),
                Err(s) => break s,
            }
        }
    })
    .await
    .expect("the slow watcher was never cancelled");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("watcher too slow"), "{status:?}");
    assert!(events < SLOW_WRITES, "cancelled only after every event: {events}");
}
