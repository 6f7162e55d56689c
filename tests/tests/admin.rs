//! The operator commands end to end, on real `mokvd` processes through the real `mokv` CLI:
//! `mokv status` (one table for the cluster), `mokv member list | remove | transfer-leader`
//! (the `Cluster` service, Casbin action `admin` on `cluster`), the strict-quorum guard on
//! removal and `--force`.

use std::time::Duration;

use mokv_proto::api::cluster_client::ClusterClient;
use mokv_proto::api::MemberListRequest;
use mokv_tests::{eventually, mokv_cli, Bins, Certs, CliRun, Cluster};
use serde_json::Value;
use tonic::Code;

/// `mokv status --output json` against `endpoint`, as root.
fn status(c: &Cluster, endpoint: &str) -> CliRun {
    mokv_cli(&c.bins, &c.certs, "root", endpoint, &["status", "--output", "json"])
}

fn members(doc: &Value) -> Vec<Value> {
    doc["members"].as_array().cloned().unwrap_or_default()
}

fn field<'a>(m: &'a Value, key: &str) -> &'a str {
    m[key].as_str().unwrap_or_default()
}

/// The name of the single leader in a status document where every member answered in one
/// term, healthy; `None` otherwise.
fn settled_leader(doc: &Value, expected_members: usize) -> Option<String> {
    let ms = members(doc);
    let leaders: Vec<&Value> = ms.iter().filter(|m| field(m, "role") == "leader").collect();
    let terms: std::collections::BTreeSet<u64> =
        ms.iter().filter_map(|m| m["term"].as_u64()).collect();
    let healthy = ms.iter().all(|m| field(m, "health") == "alive" && m["error"].is_null());
    (ms.len() == expected_members && leaders.len() == 1 && terms.len() == 1 && healthy)
        .then(|| field(leaders[0], "name").to_owned())
}

/// Polls `mokv status` on `endpoint` until `done` accepts the document.
async fn status_until<T>(
    c: &Cluster,
    endpoint: &str,
    what: &str,
    done: impl Fn(&Value) -> Option<T>,
) -> T {
    eventually(what, || {
        let run = status(c, endpoint);
        let found = (run.code == Some(0)).then(|| run.json()).as_ref().and_then(&done);
        async move { found }
    })
    .await
}

fn names(run: &CliRun) -> Vec<String> {
    assert_eq!(run.code, Some(0), "{run:?}");
    let mut names: Vec<String> =
        members(&run.json()).iter().map(|m| field(m, "name").to_owned()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_cluster_transfer_moves_the_leader_and_remove_takes_a_follower_out() {
    let mut c = Cluster::start(Bins::get(), &[]).await;
    let n1 = c.nodes[0].addr.clone();

    // One table for the whole cluster from any node: three members, one leader, one term,
    // every member's own indexes and version.
    let leader =
        status_until(&c, &n1, "3 members, one leader, one term", |d| settled_leader(d, 3)).await;
    let doc = status(&c, &n1).json();
    for m in members(&doc) {
        assert_eq!(field(&m, "version"), env!("CARGO_PKG_VERSION"), "{m}");
        assert_eq!(field(&m, "suffrage"), "voter", "{m}");
        assert!(m["applied_index"].as_u64().unwrap_or(0) > 0, "{m}");
        if field(&m, "name") == leader {
            assert!(m["last_contact_ms"].is_null(), "the leader has no contact with itself: {m}");
        }
    }
    let table = mokv_cli(&c.bins, &c.certs, "root", &n1, &["status"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("LAST CONTACT"), "{table:?}");
    for n in ["n1", "n2", "n3"] {
        assert!(lines.iter().any(|l| l.starts_with(n)), "{n} missing: {table:?}");
    }
    assert_eq!(table.stdout.matches(" leader ").count(), 1, "{table:?}");

    // transfer-leader to a named follower: status shows it leading.
    let target = ["n1", "n2", "n3"].into_iter().find(|n| *n != leader).unwrap().to_owned();
    let run = mokv_cli(&c.bins, &c.certs, "root", &n1, &["member", "transfer-leader", &target]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("started"), "{run:?}");
    status_until(&c, &n1, "the named node leads", |d| {
        settled_leader(d, 3).filter(|l| *l == target)
    })
    .await;

    // member remove of a follower: the list shows two, writes still commit.
    let gone = ["n1", "n2", "n3"].into_iter().find(|n| *n != target).unwrap().to_owned();
    let stay: Vec<usize> = (0..3).filter(|i| c.nodes[*i].name() != gone).collect();
    let via = c.nodes[stay[0]].addr.clone();
    let run = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "remove", &gone, "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.json()["index"].as_u64().unwrap_or(0) > 0, "{run:?}");
    let mut expected: Vec<String> = stay.iter().map(|i| c.nodes[*i].name().to_owned()).collect();
    expected.sort();
    eventually("the member list shows two", || {
        let list = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "list", "-o", "json"]);
        let two = list.code == Some(0) && names(&list) == expected;
        async move { two.then_some(()) }
    })
    .await;

    // Writes commit on the two left, for a stretch of many reconciler passes (a tick each):
    // the removed node, still running and gossiping, is not added back meanwhile.
    let endpoints: Vec<&str> = stay.iter().map(|i| c.nodes[*i].addr.as_str()).collect();
    let client = c.certs.client(&endpoints);
    let t0 = std::time::Instant::now();
    let mut written = 0;
    while written < 20 || t0.elapsed() < Duration::from_secs(2) {
        client.set(&format!("after-remove/{written}"), b"v").await.expect("a write commits");
        written += 1;
    }
    let got = client.get("after-remove/0", mokv_client::ReadMode::Linearizable).await.unwrap();
    assert_eq!(got.map(|e| e.value), Some(b"v".to_vec()));
    let list = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "list", "-o", "json"]);
    assert_eq!(names(&list), expected, "{gone} was added back: {list:?}");
    let gone_index = (0..3).find(|i| c.nodes[*i].name() == gone).unwrap();
    assert!(c.nodes[gone_index].is_running(), "{gone} still runs (and gossips)");
    eprintln!(
        "{gone} after {written} writes over {:?}: saw its removal: {}",
        t0.elapsed(),
        c.nodes[gone_index].output_contains("removed from the cluster")
    );
    let status_two = status(&c, &via);
    assert_eq!(names(&status_two), expected, "{status_two:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_that_leaves_no_live_majority_is_refused_unless_forced() {
    let mut c = Cluster::start(Bins::get(), &[]).await;
    let leader = c.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (down, other) = (followers[0], followers[1]);
    let via = c.nodes[leader].addr.clone();
    let down_name = c.nodes[down].name().to_owned();
    let other_name = c.nodes[other].name().to_owned();
    c.nodes[down].kill();
    // Seen down by the leader (gossip), which status reports.
    status_until(&c, &via, "the killed follower is down", |d| {
        members(d)
            .iter()
            .any(|m| field(m, "name") == down_name && field(m, "health") == "down")
            .then_some(())
    })
    .await;

    // Removing the live follower would leave {leader, down}: refused, nothing changes.
    let run =
        mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "remove", &other_name, "-o", "json"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let err: Value = serde_json::from_str(run.stderr.trim()).expect("a JSON error object");
    let message = field(&err, "message");
    assert!(message.contains("FailedPrecondition") && message.contains("use force"), "{err}");
    let list = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "list", "-o", "json"]);
    assert_eq!(names(&list).len(), 3, "{list:?}");

    // Removing the down one keeps a live majority: allowed without --force.
    let run = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "remove", &down_name]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let list = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "list", "-o", "json"]);
    assert_eq!(names(&list).len(), 2, "{list:?}");
    c.client().set("after", b"v").await.expect("two live voters commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_removes_past_the_guard() {
    let mut c = Cluster::start(Bins::get(), &[]).await;
    let leader = c.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (down, other) = (followers[0], followers[1]);
    let via = c.nodes[leader].addr.clone();
    let down_name = c.nodes[down].name().to_owned();
    let other_name = c.nodes[other].name().to_owned();
    c.nodes[down].kill();
    status_until(&c, &via, "the killed follower is down", |d| {
        members(d)
            .iter()
            .any(|m| field(m, "name") == down_name && field(m, "health") == "down")
            .then_some(())
    })
    .await;
    let run =
        mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "remove", &other_name, "--force"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    // {leader, down} is left; the configuration has two voters (the leader may have stepped
    // down without a quorum: any node answers the list).
    let list = mokv_cli(&c.bins, &c.certs, "root", &via, &["member", "list", "-o", "json"]);
    let mut expected = vec![c.nodes[leader].name().to_owned(), down_name.clone()];
    expected.sort();
    assert_eq!(names(&list), expected, "{list:?}");
    // The down voter back: the two commit again.
    c.nodes[down].restart();
    let client = c.certs.client(&[via.as_str(), c.nodes[down].addr.as_str()]);
    eventually("a write commits once the down voter is back", || {
        let client = client.clone();
        async move { client.set("after-force", b"v").await.ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_admin_permission_is_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = Bins::get();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1"], &["root", "nobody"]);
    let node = mokv_tests::Mokvd::start(
        &bins.mokvd,
        mokv_tests::NodeSpec::node(&certs, &tmp.path().join("data"), "n1").flag("--bootstrap"),
    );
    // root may: the node answers with itself as leader.
    let doc = eventually("root gets a status", || {
        let run = mokv_cli(&bins, &certs, "root", &node.addr, &["status", "-o", "json"]);
        let doc = (run.code == Some(0)).then(|| run.json());
        async move { doc.filter(|d| settled_leader(d, 1).is_some()) }
    })
    .await;
    assert_eq!(field(&members(&doc)[0], "name"), "n1");

    // nobody may not: PERMISSION_DENIED on the wire, exit code 6 from the CLI.
    let mut cluster = ClusterClient::new(certs.channel(&node.addr, Some("nobody")));
    let denied = cluster.member_list(MemberListRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    for args in [
        &["status"][..],
        &["member", "list"],
        &["member", "remove", "n1", "--force"],
        &["member", "transfer-leader"],
    ] {
        let run = mokv_cli(&bins, &certs, "nobody", &node.addr, args);
        assert_eq!(run.code, Some(6), "{args:?}: {run:?}");
    }
    let run = mokv_cli(&bins, &certs, "root", &node.addr, &["member", "list", "-o", "json"]);
    assert_eq!(names(&run), ["n1"], "nothing was removed: {run:?}");
}
