//! Compare-and-swap end to end: real `mokvd` processes over mTLS, the `mokv` CLI as the
//! writing processes, the library's `set_if` / `delete_if`, and the gRPC answer of a failed
//! condition.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use mokv_client::{CasOutcome, ClientError, Condition, KeyRevisions, ReadMode};
use mokv_proto::api::{self, condition::Check, SetRequest};
use mokv_tests::{eventually, Bins, Certs, Cluster, Mokvd, NodeSpec};
use tonic::Code;

/// Exit code of `mokv set/delete` when the condition did not hold.
const CONDITION_FAILED: i32 = 3;
/// Concurrent CLI writers.
const WRITERS: usize = 8;
/// `mokv set --if-version` calls per writer.
const ATTEMPTS: usize = 6;

/// `mokv` invocations against `endpoints` as `who`.
#[derive(Debug, Clone)]
struct Cli {
    bin: PathBuf,
    certs: PathBuf,
    endpoints: String,
}

impl Cli {
    fn new(bin: &Path, certs: &Certs, endpoints: &[&str]) -> Cli {
        Cli { bin: bin.to_path_buf(), certs: certs.dir.clone(), endpoints: endpoints.join(",") }
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(&self.bin)
            .args(["--endpoints", &self.endpoints, "--ca"])
            .arg(self.certs.join("ca.pem"))
            .arg("--cert")
            .arg(self.certs.join("root.pem"))
            .arg("--key")
            .arg(self.certs.join("root-key.pem"))
            .args(args)
            .env_remove("MOKV_ENDPOINTS")
            .output()
            .expect("running mokv")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `version V` of a failed condition's line
/// (`condition failed: mod_revision R version V (at revision X)`).
fn failed_version(line: &str) -> u64 {
    let after = line.split(" version ").nth(1).unwrap_or_else(|| panic!("no version in {line:?}"));
    after.split(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
}

/// One writer process after another: `mokv set counter V --if-version V`, where V is the
/// version the writer believes current (the counter's value is always its version - 1, since
/// every write after the creation is one of these increments). On success the writer goes on
/// from V + 1; on exit code 3 it takes V from the printed current version. Returns the values
/// this writer wrote.
fn writer(cli: &Cli, start_version: u64) -> Vec<u64> {
    let mut version = start_version;
    let mut written = Vec::new();
    for _ in 0..ATTEMPTS {
        let v = version.to_string();
        let out = cli.run(&["set", "counter", &v, "--if-version", &v]);
        match out.status.code() {
            Some(0) => {
                assert!(stdout(&out).starts_with("OK (revision "), "{}", stdout(&out));
                written.push(version);
                version += 1;
            }
            Some(CONDITION_FAILED) => {
                let seen = failed_version(&stdout(&out));
                assert_ne!(seen, version, "a condition that held was reported as failed");
                version = seen;
            }
            code => panic!(
                "mokv set exited with {code:?}: {}{}",
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    written
}

/// The test: 8 processes increment one counter with CAS; the counter ends at exactly
/// the number of successful CAS calls, and the successful calls wrote 1, 2, ... each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_cli_writers_increment_a_counter_exactly_once_per_successful_cas() {
    let cluster = Cluster::start(Bins::get(), &[]).await;
    let cli = Cli::new(&cluster.bins.mokv, &cluster.certs, &cluster.addrs());

    // Created once; the second creation fails and prints the current version.
    let created = eventually("the counter created", || {
        let out = cli.run(&["set", "counter", "0", "--if-absent"]);
        async move { (out.status.code() == Some(0)).then_some(out) }
    })
    .await;
    assert!(stdout(&created).starts_with("OK"), "{}", stdout(&created));
    let again = cli.run(&["set", "counter", "0", "--if-absent"]);
    assert_eq!(again.status.code(), Some(CONDITION_FAILED), "{}", stdout(&again));
    assert_eq!(failed_version(&stdout(&again)), 1);

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let cli = cli.clone();
            tokio::task::spawn_blocking(move || writer(&cli, 1))
        })
        .collect();
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    let successes = written.len() as u64;
    assert!(successes >= 1, "no CAS succeeded");
    let distinct: BTreeSet<u64> = written.iter().copied().collect();
    assert_eq!(distinct.len() as u64, successes, "two CAS calls wrote the same value");
    assert_eq!(distinct, (1..=successes).collect(), "a successful CAS was lost or invented");

    let read = cli.run(&["--read-from", "leader", "get", "counter"]);
    assert_eq!(stdout(&read), format!("{successes}\n"));
    let entry = cluster.client().get("counter", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!(entry.version, successes + 1, "one write per successful CAS after the creation");
    println!("{successes} of {} CAS calls succeeded", WRITERS * ATTEMPTS);
}

/// A single node with a policy under which `writer` may only produce under `w/`.
async fn node_with_writer(tmp: &Path) -> (Certs, Mokvd) {
    let bins = Bins::get();
    let certs = Certs::generate(&bins, &tmp.join("certs"), &["n1"], &["root", "writer"]);
    let policy = tmp.join("policy.csv");
    std::fs::write(&policy, "p, root, *, *\np, writer, w/*, produce\n").unwrap();
    let spec = NodeSpec::node(&certs, &tmp.join("data"), "n1")
        .flag("--bootstrap")
        .with("--acl-policy-file", &policy);
    let node = Mokvd::start(&bins.mokvd, spec);
    let client = certs.client(&[&node.addr]);
    eventually("the node takes a write", || {
        let client = client.clone();
        async move { client.set("ready", b"1").await.ok() }
    })
    .await;
    (certs, node)
}

/// Each condition through the library and the CLI, the failure answer on the wire, a bad
/// condition refused, and the extra `consume` permission a conditional write needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_through_library_cli_and_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = node_with_writer(tmp.path()).await;
    let client = certs.client(&[&node.addr]);

    // Library: if-absent, version, value, mod revision.
    let CasOutcome::Applied { revision: r1 } =
        client.set_if("w/k", b"a", Condition::Absent).await.unwrap()
    else {
        panic!("if-absent on a new key failed");
    };
    let failed = client.set_if("w/k", b"b", Condition::Absent).await.unwrap();
    let first = KeyRevisions { create_revision: r1, mod_revision: r1, version: 1 };
    assert!(
        matches!(failed, CasOutcome::Failed { revision, current: Some(k) } if revision > r1 && k == first),
        "{failed:?}"
    );
    assert!(!client.set_if("w/k", b"b", Condition::Version(2)).await.unwrap().is_applied());
    let r2 = match client.set_if("w/k", b"b", Condition::Version(1)).await.unwrap() {
        CasOutcome::Applied { revision } => revision,
        other => panic!("{other:?}"),
    };
    assert!(!client
        .set_if("w/k", b"c", Condition::ValueEquals(b"a".to_vec()))
        .await
        .unwrap()
        .is_applied());
    assert!(client
        .set_if("w/k", b"c", Condition::ValueEquals(b"b".to_vec()))
        .await
        .unwrap()
        .is_applied());
    assert!(!client.delete_if("w/k", Condition::ModRevision(r2)).await.unwrap().is_applied());
    let e = client.get("w/k", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"c"[..], 3));
    assert!(client
        .delete_if("w/k", Condition::ModRevision(e.mod_revision))
        .await
        .unwrap()
        .is_applied());
    let gone = client.delete_if("w/k", Condition::ModRevision(e.mod_revision)).await.unwrap();
    assert!(matches!(gone, CasOutcome::Failed { current: None, .. }), "{gone:?}");

    // CLI: exit code 3 with the current revision, 0 when the condition holds.
    let cli = Cli::new(&Bins::get().mokv, &certs, &[&node.addr]);
    assert_eq!(cli.run(&["set", "c", "1", "--if-absent"]).status.code(), Some(0));
    let e = client.get("c", ReadMode::Linearizable).await.unwrap().unwrap();
    let stale = (e.mod_revision - 1).to_string();
    let out = cli.run(&["set", "c", "2", "--if-mod-revision", &stale]);
    assert_eq!(out.status.code(), Some(CONDITION_FAILED));
    assert!(
        stdout(&out)
            .starts_with(&format!("condition failed: mod_revision {} version 1 ", e.mod_revision)),
        "{}",
        stdout(&out)
    );
    let out = cli.run(&["delete", "c", "--if-mod-revision", &stale]);
    assert_eq!(out.status.code(), Some(CONDITION_FAILED), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("mod_revision {}", e.mod_revision)), "{}", stdout(&out));
    let current = e.mod_revision.to_string();
    let out = cli.run(&["set", "c", "2", "--if-mod-revision", &current]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = cli.run(&["set", "c", "3", "--if-version", "1"]);
    assert_eq!(out.status.code(), Some(CONDITION_FAILED), "{}", stdout(&out));
    assert_eq!(failed_version(&stdout(&out)), 2);
    let e = client.get("c", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!(e.value, b"2");
    let out = cli.run(&["delete", "c", "--if-mod-revision", &e.mod_revision.to_string()]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "deleted\n"));
    let out = cli.run(&["delete", "c", "--if-mod-revision", "5"]);
    assert_eq!(out.status.code(), Some(CONDITION_FAILED));
    assert!(
        stdout(&out).starts_with("condition failed: key absent (at revision "),
        "{}",
        stdout(&out)
    );
    // The flags exclude each other.
    let out = cli.run(&["set", "c", "1", "--if-absent", "--if-version", "0"]);
    assert_eq!(out.status.code(), Some(4), "a usage error expected (exit code 4)");

    // gRPC: the failure is an OK answer; a condition with nothing set is INVALID_ARGUMENT.
    let mut kv = certs.kv(&node.addr);
    let cas = |check| SetRequest {
        key: "g".into(),
        value: b"v".to_vec(),
        session: None,
        condition: Some(api::Condition { check }),
        lease: 0,
    };
    let ok = kv.set(cas(Some(Check::Absent(true)))).await.unwrap().into_inner();
    assert!(ok.ok && ok.condition_failed.is_none());
    let no = kv.set(cas(Some(Check::Absent(true)))).await.unwrap().into_inner();
    assert!(!no.ok);
    let f = no.condition_failed.expect("condition_failed set");
    assert_eq!(
        (f.exists, f.create_revision, f.mod_revision, f.version),
        (true, ok.revision, ok.revision, 1)
    );
    assert!(no.revision > ok.revision);
    for bad in [None, Some(Check::Absent(false))] {
        let e = kv.set(cas(bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    // Authorization: `writer` may produce under w/ but not consume, so a plain write passes
    // and a conditional one (whose answer reveals the key's state) is refused.
    let writer = mokv_client::Client::connect(mokv_client::ClientConfig::new(
        vec![node.addr.clone()],
        certs.tls("writer"),
    ))
    .unwrap();
    writer.set("w/plain", b"1").await.unwrap();
    match writer.set_if("w/plain", b"2", Condition::Version(1)).await {
        Err(ClientError::Refused { code: Code::PermissionDenied, .. }) => {}
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
    match writer.delete_if("w/plain", Condition::Version(1)).await {
        Err(ClientError::Refused { code: Code::PermissionDenied, .. }) => {}
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
    let v = client.get("w/plain", ReadMode::Linearizable).await.unwrap().unwrap();
    assert_eq!((v.value.as_slice(), v.version), (&b"1"[..], 1));
}
