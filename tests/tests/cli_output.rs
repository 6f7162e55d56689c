//! The `mokv` CLI for scripts: `--output json` against a real node, every documented exit code
//! provoked for real, and shell completions generated from the clap definitions.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mokv_proto::api::SetRequest;
use mokv_tests::{eventually, scrape_metrics, Bins, Certs, Mokvd, NodeSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// What one `mokv` run returned.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// stdout as one JSON object per line.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {self:?}")))
            .collect()
    }

    /// The JSON error object on stderr (`--output json`).
    fn json_error(&self) -> Value {
        serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not one JSON object ({e}): {self:?}"))
    }
}

/// `mokv` as `who` against `endpoint`, with `args` after the connection flags.
fn mokv(bins: &Bins, certs: &Certs, who: &str, endpoint: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(&bins.mokv);
    cmd.arg("--endpoints").arg(endpoint);
    cmd.arg("--ca").arg(certs.path("ca.pem"));
    cmd.arg("--cert").arg(certs.path(&format!("{who}.pem")));
    cmd.arg("--key").arg(certs.path(&format!("{who}-key.pem")));
    run(cmd.args(args))
}

fn run(cmd: &mut Command) -> Run {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MOKV_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("running mokv");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One bootstrapped node that has taken a write; certificates for `root` and `nobody` (whom
/// the default policy grants nothing).
async fn single_node(bins: &Bins, tmp: &Path) -> (Certs, Mokvd) {
    let certs = Certs::generate(bins, &tmp.join("certs"), &["n1"], &["root", "nobody"]);
    let node = Mokvd::start(
        &bins.mokvd,
        NodeSpec::node(&certs, &tmp.join("data"), "n1")
            .flag("--bootstrap")
            .with("--metrics-port", "0")
            .flag("--metrics-plain-http"),
    );
    let kv = certs.kv(&node.addr);
    eventually("the node takes a write", || {
        let mut kv = kv.clone();
        async move {
            let req = SetRequest {
                key: "ready".into(),
                value: b"1".to_vec(),
                session: None,
                condition: None,
                lease: 0,
            };
            kv.set(req).await.ok()
        }
    })
    .await;
    (certs, node)
}

/// set/get/delete/list/members with `--output json`, parsed; a value that is not UTF-8 comes
/// back as `value_base64`; `--output table` is the plain text of before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_of_every_command_parses_with_stable_fields() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = single_node(&bins, tmp.path()).await;
    let addr = node.addr.as_str();
    let json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let r = mokv(&bins, &certs, "root", addr, &all);
        assert_eq!(r.code, Some(0), "{all:?}: {r:?}");
        r
    };

    let set = json(&["set", "app/a", "1"]).json();
    assert_eq!(set["key"], "app/a");
    let revision = set["revision"].as_u64().expect("revision is a number");
    assert!(revision > 0, "{set}");
    // The flag works after the subcommand too, and has a short form.
    let set_b = mokv(&bins, &certs, "root", addr, &["set", "app/b", "two words", "-o", "json"]);
    assert_eq!(set_b.code, Some(0), "{set_b:?}");
    let revision_b = set_b.json()["revision"].as_u64().unwrap();
    assert!(revision_b > revision);

    let get = json(&["get", "app/a"]).json();
    assert_eq!(
        get,
        serde_json::json!({"key": "app/a", "value": "1", "create_revision": revision,
            "mod_revision": revision, "version": 1})
    );

    // Bytes that are not UTF-8 (written through the library: the CLI takes text).
    let binary: &[u8] = &[0xff, 0x00, 0xfe, b'x'];
    certs.client(&[addr]).set("app/bin", binary).await.unwrap();
    let get_bin = json(&["get", "app/bin"]).json();
    assert_eq!(get_bin["value_base64"], "/wD+eA==", "{get_bin}");
    assert!(get_bin.get("value").is_none(), "{get_bin}");

    // One page: a document with the entries and the next page's token.
    let page = json(&["list", "--prefix", "app/", "--limit", "2"]).json();
    let kvs = page["kvs"].as_array().expect("kvs");
    let keys: Vec<&str> = kvs.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/a", "app/b"]);
    assert_eq!(kvs[1]["value"], "two words");
    let token = page["next_page_token"].as_str().expect("a next page token").to_owned();
    let last = json(&["list", "--prefix", "app/", "--limit", "2", "--page-token", &token]).json();
    assert_eq!(last["kvs"].as_array().unwrap().len(), 1);
    assert_eq!(last["kvs"][0]["value_base64"], "/wD+eA==");
    assert!(last["next_page_token"].is_null(), "{last}");

    // Every page: one object per line, in key order, values or base64; keys-only: no values.
    let lines = json(&["list", "--prefix", "app/", "--limit", "1", "--all"]).json_lines();
    let keys: Vec<&str> = lines.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/a", "app/b", "app/bin"]);
    assert_eq!(lines[0]["value"], "1");
    assert_eq!(lines[2]["value_base64"], "/wD+eA==");
    assert_eq!(lines[1]["mod_revision"].as_u64(), Some(revision_b));
    let keys_only = json(&["list", "--prefix", "app/", "--keys-only", "--all"]).json_lines();
    assert_eq!(keys_only.len(), 3);
    for e in &keys_only {
        assert!(e.get("value").is_none() && e.get("value_base64").is_none(), "{e}");
        assert!(e["mod_revision"].as_u64().is_some(), "{e}");
    }

    let members = json(&["members"]).json();
    let members = members["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{members:?}");
    let m = &members[0];
    assert_eq!(m["name"], "n1");
    assert_eq!(m["rpc_addr"], addr);
    assert_eq!(m["leader"], true);
    assert_eq!(m["role"], "voter");
    assert_eq!(m["raft_id"], format!("{:x}", node.raft_id));
    assert!(m["health"].is_string(), "{m}");

    assert_eq!(
        json(&["delete", "app/a"]).json(),
        serde_json::json!({"key": "app/a", "deleted": true})
    );
    // Deleting a missing key is not an error (as in text mode).
    let again = json(&["delete", "app/a"]).json();
    assert_eq!(again, serde_json::json!({"key": "app/a", "deleted": false}));

    // Text mode is unchanged, and is the default.
    let text = mokv(&bins, &certs, "root", addr, &["--output", "table", "get", "app/b"]);
    assert_eq!((text.code, text.stdout.as_str()), (Some(0), "two words\n"), "{text:?}");
    let default = mokv(&bins, &certs, "root", addr, &["list", "--prefix", "app/b", "--all"]);
    assert_eq!(default.stdout, "app/b\ttwo words\napp/bin\t\u{fffd}\0\u{fffd}x\n", "{default:?}");
}

/// Each exit code of `mokv --help`, provoked for real: a missing key, a bad command line, a
/// node that never answers, a certificate without permission, a request the node refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_are_the_documented_ones() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let (certs, node) = single_node(&bins, tmp.path()).await;
    let addr = node.addr.as_str();
    let root = |args: &[&str]| mokv(&bins, &certs, "root", addr, args);

    // The table is in the help.
    let help = run(Command::new(&bins.mokv).arg("--help"));
    assert_eq!(help.code, Some(0), "{help:?}");
    for line in [
        "0  ok",
        "1  error",
        "2  not found",
        "3  condition failed",
        "4  usage error",
        "5  unavailable",
        "6  permission denied",
        "7  indeterminate",
    ] {
        assert!(help.stdout.contains(line), "--help lacks {line:?}:\n{}", help.stdout);
    }

    // 0.
    assert_eq!(root(&["get", "ready"]).code, Some(0));

    // 2: not found; nothing on stdout, the reason on stderr (as JSON with --output json).
    let missing = root(&["get", "no-such-key"]);
    assert_eq!((missing.code, missing.stdout.as_str()), (Some(2), ""), "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{missing:?}");
    let missing = root(&["-o", "json", "get", "no-such-key"]);
    assert_eq!((missing.code, missing.stdout.as_str()), (Some(2), ""), "{missing:?}");
    let err = missing.json_error();
    assert_eq!((err["error"].as_str(), err["exit_code"].as_u64()), (Some("not_found"), Some(2)));

    // 4: usage errors (clap's own 2 would read as "not found").
    for args in [&["get"][..], &["--output", "yaml", "get", "k"], &["frobnicate"], &[]] {
        let r = root(args);
        assert_eq!(r.code, Some(4), "{args:?}: {r:?}");
        assert!(!r.stderr.is_empty(), "{args:?}: {r:?}");
    }

    // 6: a valid certificate whose identity the policy grants nothing, for a read and a write.
    for args in [&["get", "ready"][..], &["set", "k", "v"]] {
        let r = mokv(&bins, &certs, "nobody", addr, args);
        assert_eq!(r.code, Some(6), "{args:?}: {r:?}");
    }
    let denied = mokv(&bins, &certs, "nobody", addr, &["-o", "json", "members"]);
    assert_eq!(denied.code, Some(6), "{denied:?}");
    assert_eq!(denied.json_error()["error"], "permission_denied");

    // 1: a request the node refuses as invalid (a key over 4 KiB), and unreadable files.
    let long_key = "k".repeat(4097);
    let invalid = root(&["set", &long_key, "v"]);
    assert_eq!(invalid.code, Some(1), "{invalid:?}");
    assert!(!invalid.stderr.contains(&long_key), "the key was echoed");
    let no_files = run(Command::new(&bins.mokv)
        .args(["--endpoints", addr, "--ca", "/nonexistent/ca.pem"])
        .args(["get", "ready"]));
    assert_eq!(no_files.code, Some(1), "{no_files:?}");

    // 5: an endpoint that accepts TCP connections and never answers (a hung node). A read
    // gives up: unavailable. So does a write: its session is never registered, so the write
    // itself was never sent and cannot have been applied. The listener stays open until then.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    let timeout = ["--call-timeout-ms", "500", "-o", "json"];
    for args in [&["get", "k"][..], &["set", "k", "v"]] {
        let r = mokv(&bins, &certs, "root", &hung_addr, &[&timeout[..], args].concat());
        assert_eq!(r.code, Some(5), "{args:?}: {r:?}");
        assert_eq!(r.json_error()["error"], "unavailable");
    }
    drop(hung);

    // 7: a write that was sent and never answered cannot tell whether it was applied: it is
    // indeterminate, never reported as "not applied". The link to the node fails for good
    // right after the node answered the session registration, so the write leaves the CLI
    // and is lost on the way.
    let metrics_port = node.metrics_port.expect("started with --metrics-port");
    let registered = || async {
        let text = scrape_metrics(metrics_port, Duration::from_secs(1)).await?;
        let count = text
            .lines()
            .filter(|l| l.starts_with("mokv_requests_total{"))
            .filter(|l| l.contains(r#"rpc="register_session""#) && l.contains(r#"code="ok""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        Some(count)
    };
    let before = registered().await.unwrap_or(0.0);
    let relay = CuttableRelay::start(addr, Duration::from_secs(1)).await;
    let cli = {
        let (bins, certs, relay_addr) = (bins.clone(), certs.clone(), relay.addr.clone());
        // Not through the member list: that names the node's own address.
        let args = ["--no-discovery", "--call-timeout-ms", "10000", "-o", "json", "set", "k", "v"];
        tokio::task::spawn_blocking(move || mokv(&bins, &certs, "root", &relay_addr, &args))
    };
    eventually("the node answers the CLI's session registration", || async {
        (registered().await? > before).then_some(())
    })
    .await;
    relay.cut();
    let write = cli.await.unwrap();
    assert_eq!(write.code, Some(7), "{write:?}");
    assert_eq!(write.json_error()["error"], "indeterminate");
}

/// A TCP relay to a node whose client-to-node direction runs `hold` behind and stops for good
/// at [`CuttableRelay::cut`]: whatever the client sends after that (or sent less than `hold`
/// before it) never reaches the node, as on a link that fails in the middle of a request. The
/// connection stays open, so the client sees no error, only no answer.
struct CuttableRelay {
    addr: String,
    cut: Arc<AtomicBool>,
}

impl CuttableRelay {
    async fn start(node: &str, hold: Duration) -> CuttableRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (node, is_cut) = (node.to_owned(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(&node).await else { continue };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_node, mut to_node) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_node, &mut to_client).await;
                });
                // Bounded: the reader waits while 64 chunks are held.
                let (held, mut due) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        if held.send((Instant::now() + hold, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                });
                let is_cut = is_cut.clone();
                tokio::spawn(async move {
                    while let Some((at, bytes)) = due.recv().await {
                        tokio::time::sleep_until(at).await;
                        if !is_cut.load(Ordering::SeqCst)
                            && to_node.write_all(&bytes).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        CuttableRelay { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// `mokv completions bash` is a script bash can load, and completing with it offers the
/// subcommands and the `--output` values.
#[test]
fn completions_come_from_the_clap_definitions() {
    let bins = Bins::get();
    let bash = run(Command::new(&bins.mokv).args(["completions", "bash"]));
    assert_eq!(bash.code, Some(0), "{bash:?}");
    for sub in ["get", "set", "delete", "list", "members", "bench", "completions"] {
        assert!(bash.stdout.contains(sub), "the script does not mention {sub}");
    }
    // Run the completion function as bash does for `mokv ge<TAB>` and `mokv --output <TAB>`:
    // the command, the word under the cursor and the one before it as arguments.
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("mokv.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let complete = |words: &str, cword: usize| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
             COMP_POINT=${{#COMP_LINE}}; \
             _mokv mokv \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let r = run(Command::new("bash").args(["--norc", "-c", &program]));
        assert_eq!(r.code, Some(0), "{r:?}");
        r.stdout
    };
    let subcommands = complete("mokv ge", 1);
    assert_eq!(subcommands.trim(), "get", "{subcommands:?}");
    let formats = complete("mokv --output ''", 2);
    let mut formats: Vec<&str> = formats.split_whitespace().collect();
    formats.sort_unstable();
    assert!(formats.contains(&"json") && formats.contains(&"table"), "{formats:?}");

    for shell in ["zsh", "fish"] {
        let r = run(Command::new(&bins.mokv).args(["completions", shell]));
        assert_eq!(r.code, Some(0), "{shell}: {r:?}");
        assert!(r.stdout.contains("members") && r.stdout.contains("completions"), "{shell}");
    }
    let bad = run(Command::new(&bins.mokv).args(["completions", "tcsh"]));
    assert_eq!(bad.code, Some(4), "{bad:?}");
}
