//! Transactions end to end: real `mokvd` processes over mTLS, `mokv txn` processes moving value
//! between two keys concurrently, the library's builder, authorization of every touched key
//! and the size bounds.

use std::path::{Path, PathBuf};
use std::process::Output;

use mokv_client::{ClientError, Condition, ReadMode, Txn, TxnOp, TxnResult};
use mokv_proto::api::{self, TxnRequest};
use mokv_tests::{eventually, Bins, Certs, Cluster, Mokvd, NodeSpec};
use tonic::Code;

/// Exit code of `mokv txn` when the failure branch ran.
const FAILURE_BRANCH: i32 = 3;
/// Concurrent `mokv txn` writers.
const WRITERS: usize = 4;
/// Transfers each writer makes (successful ones; failed compares are retried).
const TRANSFERS: usize = 5;
/// Both accounts start with this.
const START: i64 = 100;

fn cli(bin: &Path, certs: &Certs, endpoints: &str, who: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin)
        .args(["--endpoints", endpoints, "--ca"])
        .arg(certs.path("ca.pem"))
        .arg("--cert")
        .arg(certs.path(&format!("{who}.pem")))
        .arg("--key")
        .arg(certs.path(&format!("{who}-key.pem")))
        .args(args)
        .env_remove("MOKV_ENDPOINTS")
        .output()
        .expect("running mokv")
}

/// The two `get` results of a `mokv --output json txn` outcome, as numbers.
fn balances(outcome: &serde_json::Value) -> (i64, i64) {
    let value = |i: usize| -> i64 {
        outcome["results"][i]["kv"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no value in {outcome}"))
            .parse()
            .unwrap()
    };
    (value(0), value(1))
}

/// One writer process after another: `mokv txn` moving 1 from `a` to `b` if both still hold
/// what the writer last saw, else (exit code 3) taking the current balances from the failure
/// branch's reads. Returns the revisions of its successful transfers.
fn writer(bin: PathBuf, certs: Certs, endpoints: String, dir: PathBuf) -> Vec<u64> {
    let doc = dir.join("txn.json");
    let (mut a, mut b) = (START, START);
    let mut done = Vec::new();
    let mut attempts = 0;
    while done.len() < TRANSFERS {
        attempts += 1;
        assert!(attempts < 200, "a writer made no progress");
        let text = serde_json::json!({
            "compare": [{"key": "a", "value": a.to_string()}, {"key": "b", "value": b.to_string()}],
            "success": [{"set": {"key": "a", "value": (a - 1).to_string()}},
                        {"set": {"key": "b", "value": (b + 1).to_string()}}],
            "failure": [{"get": {"key": "a"}}, {"get": {"key": "b"}}],
        });
        std::fs::write(&doc, text.to_string()).unwrap();
        let out = cli(
            &bin,
            &certs,
            &endpoints,
            "root",
            &["--output", "json", "txn", doc.to_str().unwrap()],
        );
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr))
        });
        match out.status.code() {
            Some(0) => {
                assert_eq!(outcome["succeeded"], true);
                done.push(outcome["revision"].as_u64().unwrap());
                (a, b) = (a - 1, b + 1);
            }
            // A replayed answer (a retry of a lost one) carries no reads: an impossible
            // expectation makes the next attempt read the balances.
            Some(FAILURE_BRANCH) if outcome["replayed"] == true => (a, b) = (-1, -1),
            Some(FAILURE_BRANCH) => {
                assert_eq!(outcome["succeeded"], false);
                (a, b) = balances(&outcome);
            }
            code => panic!("mokv txn exited with {code:?}: {outcome}"),
        }
    }
    done
}

/// The issue's invariant: concurrent transfers between two keys by several `mokv txn`
/// processes, while a library client reads both keys in one transaction over and over: every
/// read sees the same sum, and the end state accounts for exactly the successful transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cli_transfers_keep_the_sum() {
    let cluster = Cluster::start(Bins::get(), &[]).await;
    let client = cluster.client();
    let init = Txn::new()
        .on_success_set("a", START.to_string().as_bytes())
        .on_success_set("b", START.to_string().as_bytes());
    let created = eventually("the accounts created", || {
        let (client, init) = (client.clone(), init.clone());
        async move { client.txn(init).await.ok() }
    })
    .await;
    assert!(created.succeeded);

    let tmp = tempfile::tempdir().unwrap();
    let endpoints = cluster.addrs().join(",");
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let dir = tmp.path().join(format!("w{i}"));
            std::fs::create_dir(&dir).unwrap();
            let (bin, certs, endpoints) =
                (cluster.bins.mokv.clone(), cluster.certs.clone(), endpoints.clone());
            tokio::task::spawn_blocking(move || writer(bin, certs, endpoints, dir))
        })
        .collect();
    // Read both keys atomically while the writers run.
    let read_both = Txn::new().on_success_get("a").on_success_get("b");
    let mut reads = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let r = client.txn(read_both.clone()).await.unwrap();
        let value = |i: usize| match &r.results[i] {
            TxnResult::Get(Some(e)) => String::from_utf8_lossy(&e.value).parse::<i64>().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(value(0) + value(1), 2 * START, "a transaction read a half-done transfer");
        reads += 1;
    }
    let mut revisions = Vec::new();
    for w in writers {
        revisions.extend(w.await.expect("writer"));
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), WRITERS * TRANSFERS, "two transfers shared a revision");
    let moved = (WRITERS * TRANSFERS) as i64;
    let a = client.get("a", ReadMode::Linearizable).await.unwrap().unwrap();
    let b = client.get("b", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!(a.value, (START - moved).to_string().into_bytes());
    assert_eq!(b.value, (START + moved).to_string().into_bytes());
    // The last transfer wrote both keys at its one revision.
    assert_eq!(a.mod_revision, b.mod_revision);
    assert_eq!(a.mod_revision, *revisions.last().unwrap());
    println!("{moved} transfers, {reads} atomic reads of both keys");
}

/// A single node limiting transactions to 4 compares plus operations, with a policy under
/// which `app` may produce and consume under `app/` only.
async fn limited_node(tmp: &Path) -> (Certs, Mokvd) {
    let bins = Bins::get();
    let certs = Certs::generate(&bins, &tmp.join("certs"), &["n1"], &["root", "app"]);
    let policy = tmp.join("policy.csv");
    std::fs::write(&policy, "p, root, *, *\np, app, app/*, produce\np, app, app/*, consume\n")
        .unwrap();
    let spec = NodeSpec::node(&certs, &tmp.join("data"), "n1")
        .flag("--bootstrap")
        .with("--acl-policy-file", &policy)
        .with("--max-txn-ops", "4");
    let node = Mokvd::start(&bins.mokvd, spec);
    let client = certs.client(&[&node.addr]);
    eventually("the node takes a write", || {
        let client = client.clone();
        async move { client.set("ready", b"1").await.ok() }
    })
    .await;
    (certs, node)
}

fn refused_with(r: Result<mokv_client::TxnOutcome, ClientError>, code: Code) -> String {
    match r {
        Err(ClientError::Refused { code: c, message }) if c == code => message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// Every key a transaction touches is authorized with the action it needs (a denied one fails
/// the whole transaction, nothing applied), the bounds answer INVALID_ARGUMENT without echoing
/// keys, and the CLI's table output and exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_bounds_and_cli_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = limited_node(tmp.path()).await;
    let root = certs.client(&[&node.addr]);
    let app = mokv_client::Client::connect(mokv_client::ClientConfig::new(
        vec![node.addr.clone()],
        certs.tls("app"),
    ))
    .unwrap();
    root.set("other", b"secret").await.unwrap();

    // Inside its prefix: allowed, and the compare decides the branch.
    let ok = app
        .txn(
            Txn::new()
                .compare("app/x", Condition::Absent)
                .on_success_set("app/x", b"1")
                .on_success(TxnOp::Range { prefix: "app/".into(), limit: 0 }),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert!(
        matches!(&ok.results[1], TxnResult::Range { entries, more: false } if entries.len() == 1)
    );
    // One touched key outside its prefix, in any role, denies the whole transaction.
    let denied = [
        Txn::new().compare("other", Condition::Absent).on_success_set("app/y", b"1"),
        Txn::new().on_success_set("app/y", b"1").on_failure_get("other"),
        Txn::new().on_success_set("app/y", b"1").on_success(TxnOp::Delete { key: "other".into() }),
        Txn::new()
            .on_success_set("app/y", b"1")
            .on_success(TxnOp::Range { prefix: "".into(), limit: 1 }),
    ];
    for txn in denied {
        refused_with(app.txn(txn).await, Code::PermissionDenied);
    }
    assert!(root.get("app/y", ReadMode::Linearizable).await.unwrap().is_none(), "nothing applied");
    assert_eq!(root.get("other", ReadMode::Linearizable).await.unwrap().unwrap().value, b"secret");

    // Bounds: 5 compares and operations over `--max-txn-ops 4`.
    let secret = "secret-key";
    let five = (0..5).fold(Txn::new(), |t, i| t.on_success_get(&format!("{secret}{i}")));
    let message = refused_with(root.txn(five).await, Code::InvalidArgument);
    assert!(!message.contains(secret), "{message}");
    // An operation with nothing set on the wire.
    let mut kv = certs.kv(&node.addr);
    let empty_op = TxnRequest { success: vec![api::TxnOp { op: None }], ..TxnRequest::default() };
    assert_eq!(kv.txn(empty_op).await.unwrap_err().code(), Code::InvalidArgument);

    // CLI: table output, exit code 3 for the failure branch, 4 for a bad document.
    let mokv = Bins::get().mokv;
    let doc = tmp.path().join("t.json");
    let txn_cli = |text: &str| {
        std::fs::write(&doc, text).unwrap();
        cli(&mokv, &certs, &node.addr, "root", &["txn", doc.to_str().unwrap()])
    };
    let out = txn_cli(
        r#"{"compare":[{"key":"app/x","version":1}],
        "success":[{"set":{"key":"app/x","value":"2"}},{"get":{"key":"app/x"}}]}"#,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("succeeded revision "), "{text}");
    assert_eq!(lines.next(), Some("set"));
    assert_eq!(lines.next(), Some("get\tapp/x\t2"));
    let out = txn_cli(
        r#"{"compare":[{"key":"app/x","absent":true}],
        "failure":[{"delete":{"key":"app/x"}}]}"#,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(FAILURE_BRANCH), "{text}");
    assert!(text.starts_with("failed revision ") && text.contains("\ndelete deleted\n"), "{text}");
    let out = txn_cli(r#"{"compare":[{"key":"secret-key"}]}"#);
    assert_eq!(out.status.code(), Some(4));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secret-key"));
}
