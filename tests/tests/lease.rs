//! Leases end to end: real `mokvd` processes over mTLS, the `mokv` CLI granting leases,
//! attaching keys, keeping a lease alive (a `mokv lease keepalive` process) and revoking; a
//! `mokv watch` process seeing the DELETE when a lease expires; and a lease kept alive across
//! kill -9 of the leader.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mokv_client::ReadOptions;
use mokv_tests::{
    eventually, eventually_within, find_leader, mokv_cli, Bins, Cluster, MokvProcess,
};

fn cli_ok(cluster: &Cluster, args: &[&str]) -> String {
    let run = mokv_cli(&cluster.bins, &cluster.certs, "root", &cluster.addrs().join(","), args);
    assert_eq!(run.code, Some(0), "mokv {args:?}: {run:?}");
    run.stdout.trim().to_owned()
}

async fn exists(cluster: &Cluster, key: &str) -> bool {
    cluster.client().get(key, ReadOptions::new()).await.unwrap().is_some()
}

/// A key with a 2 s lease stays while `mokv lease keepalive` runs (for more than twice the
/// TTL), disappears once it is killed and the TTL passes, and its `mokv watch` prints the
/// DELETE; a revoke deletes another lease's key at once, at the revoke's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_lives_while_kept_alive_and_goes_at_expiry_or_revoke() {
    let cluster = Cluster::start(Bins::get(), &[]).await;
    let addrs = cluster.addrs();
    let id = cli_ok(&cluster, &["lease", "grant", "2"]);
    let id_n: u64 = id.parse().expect("the lease id");
    let set = cli_ok(&cluster, &["set", "svc/a", "up", "--lease", &id]);
    assert!(set.starts_with("OK (revision "), "{set}");
    let mut watch = MokvProcess::start(&cluster.bins, &cluster.certs, &addrs, &["watch", "svc/a"]);
    let mut keeper =
        MokvProcess::start(&cluster.bins, &cluster.certs, &addrs, &["lease", "keepalive", &id]);

    // Kept alive for more than 2 × TTL: the key stays (observed: keep-alives answered all
    // along, and the key read after the period).
    let kept_until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < kept_until {
        assert!(exists(&cluster, "svc/a").await, "a kept-alive lease's key disappeared");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(keeper.still_running(), "the keep-alive loop stopped: {:?}", keeper.lines());
    assert!(keeper.count("lease ") >= 4, "keep-alives: {:?}", keeper.lines());
    let ttl = cli_ok(&cluster, &["lease", "ttl", &id]);
    assert!(ttl.starts_with(&format!("lease {id}: granted TTL 2000 ms")), "{ttl}");
    assert!(ttl.ends_with("svc/a"), "{ttl}");
    assert_eq!(watch.count("DELETE"), 0);

    // Keep-alives stop: the key goes after the TTL, and the watcher sees it go.
    keeper.stop();
    let stopped = Instant::now();
    eventually_within("the watcher sees the DELETE", Duration::from_secs(10), || {
        let n = watch.count("DELETE svc/a ");
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert!(
        // The last keep-alive went out at most a third of the TTL before the stop.
        stopped.elapsed() >= Duration::from_millis(1_000),
        "deleted {:?} after the last keep-alive could have been sent, before its TTL",
        stopped.elapsed()
    );
    assert!(!exists(&cluster, "svc/a").await);
    assert!(watch.still_running());
    let gone =
        mokv_cli(&cluster.bins, &cluster.certs, "root", &addrs.join(","), &["lease", "ttl", &id]);
    assert_eq!(gone.code, Some(2), "an expired lease is not found: {gone:?}");
    let late = mokv_cli(
        &cluster.bins,
        &cluster.certs,
        "root",
        &addrs.join(","),
        &["set", "svc/b", "x", "--lease", &id],
    );
    assert_eq!(late.code, Some(2), "a write to an expired lease is refused NOT_FOUND: {late:?}");

    // Revoke: both keys of a new lease go at once, at the revoke's revision.
    let client = cluster.client();
    let lease = client.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease.id, id_n);
    let first = client.set_with_lease("svc/c", b"1", lease.id, None).await.unwrap();
    let mokv_client::CasOutcome::Applied { revision: first } = first else { panic!("{first:?}") };
    client.set_with_lease("svc/d", b"1", lease.id, None).await.unwrap();
    let from = first.to_string();
    let mut watch_all = MokvProcess::start(
        &cluster.bins,
        &cluster.certs,
        &addrs,
        &["watch", "--prefix", "svc/", "--from-revision", &from],
    );
    let revision = client.lease_revoke(lease.id).await.unwrap();
    assert!(!exists(&cluster, "svc/c").await && !exists(&cluster, "svc/d").await);
    eventually("the prefix watcher sees both DELETEs", || {
        let lines = watch_all.lines();
        async move {
            let want = [format!("DELETE svc/c {revision}"), format!("DELETE svc/d {revision}")];
            want.iter().all(|w| lines.contains(w)).then_some(())
        }
    })
    .await;
    watch_all.stop();
    watch.stop();
}

/// A lease kept alive by the library's keeper survives kill -9 of the leader: the new leader
/// restarts its TTL in full and the keeper's keep-alives reach it, so the key is still there
/// well after the TTL; once the keeper stops, the key goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_lease_survives_kill_9_of_the_leader() {
    let mut cluster = Cluster::start(Bins::get(), &[]).await;
    let leader = cluster.leader().await;
    let client = cluster.client();
    let ttl = Duration::from_secs(2);
    let lease = client.lease_grant(ttl).await.unwrap();
    client.set_with_lease("lock/x", b"me", lease.id, None).await.unwrap();
    let keeper = client.lease_keep_alive(lease.id, ttl);
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
    // Three TTLs after the failover, the key is still there: the keeper reached the new
    // leader (its state says so) and the new leader did not expire the lease.
    let until = Instant::now() + 3 * ttl;
    while Instant::now() < until {
        assert!(exists(&cluster, "lock/x").await, "the kept-alive lease expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(*keeper.state().borrow(), mokv_client::KeepAliveState::Alive);
    let left = client.lease_time_to_live(lease.id, false).await.unwrap();
    assert_eq!(left.granted_ttl, ttl);
    assert!(left.remaining <= ttl);
    keeper.stop();
    eventually("the key goes once keep-alives stop", || {
        let client = client.clone();
        async move { client.get("lock/x", ReadOptions::new()).await.ok()?.is_none().then_some(()) }
    })
    .await;
}

/// Builds `client/examples/lock.rs` into the running test's target dir and profile (as
/// [`Bins::get`] does for the binaries); its path.
fn lock_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("a target dir");
    let target_dir = profile_dir.parent().expect("a target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    // The same packages as `Bins::get` builds (plus the example), so that cargo resolves the
    // same features and reuses that build's dependencies instead of compiling most of them
    // again for `mokv-client` alone.
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "-p", "mokv-shell", "--bin", "mokvd", "-p", "mokv-client", "--bin", "mokv"])
        .args(["--example", "lock", "--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .stdout(Stdio::null())
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the lock example failed");
    profile_dir.join("examples").join("lock")
}

/// The lock recipe (`client/examples/lock.rs`) in two processes contending for one key, three
/// rounds each: each holds the lock between the revision it acquired it at and the revision of
/// its release, and no two of these intervals overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lock_holders_take_turns_and_are_never_both_inside() {
    let lock = lock_example();
    let cluster = Cluster::start(Bins::get(), &[]).await;
    let endpoint = cluster.addrs()[0].to_owned();
    let holders: Vec<Child> = ["a", "b"]
        .into_iter()
        .map(|name| {
            Command::new(&lock)
                .args([endpoint.as_str(), "locks/one", name, "300", "3"])
                .env("MOKV_CA", cluster.certs.path("ca.pem"))
                .env("MOKV_CERT", cluster.certs.path("root.pem"))
                .env("MOKV_KEY", cluster.certs.path("root-key.pem"))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting the lock example")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        holders.into_iter().map(|h| h.wait_with_output().expect("lock output")).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut intervals: Vec<(u64, u64)> = Vec::new();
    for out in &outputs {
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let numbers: Vec<(String, u64)> = text
            .lines()
            .map(|l| {
                let (word, n) = l.split_once(' ').expect("`<word> <revision>`");
                (word.to_owned(), n.parse().expect("a revision"))
            })
            .collect();
        assert_eq!(numbers.len(), 6, "{text}");
        for pair in numbers.chunks(2) {
            assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("acquired", "released"));
            assert!(pair[0].1 < pair[1].1);
            intervals.push((pair[0].1, pair[1].1));
        }
    }
    intervals.sort();
    for w in intervals.windows(2) {
        assert!(w[0].1 < w[1].0, "two holders inside at once: {intervals:?}");
    }
}
