//! Backup and restore with real processes: `mokv snapshot save` from a node that holds keys
//! with several versions, deleted keys and values bigger than one stream chunk; `mokv snapshot
//! status`; `mokvd restore` into a fresh data dir; a node started on it serves every key with
//! its value and revisions. A non-root client is refused; a corrupt and a truncated file are
//! refused by `status` and by `restore` with their reason and a non-zero exit code.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::maintenance_client::MaintenanceClient;
use mokv_proto::api::{RangeRequest, ReadConsistency, SnapshotRequest};
use mokv_tests::{eventually, Bins, Certs, Mokvd, NodeSpec};
use serde_json::Value;
use tonic::transport::Channel;

/// A key as the cluster shows it: value, create revision, mod revision, version.
type Shown = (Vec<u8>, u64, u64, u64);

/// Every key of the node behind `kv` (linearizable Range, page by page).
async fn every_key(kv: &KvClient<Channel>) -> Option<BTreeMap<String, Shown>> {
    let mut kv = kv.clone();
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let req = RangeRequest {
            limit: 50,
            page_token,
            consistency: ReadConsistency::Linearizable as i32,
            ..RangeRequest::default()
        };
        let page = kv.range(req).await.ok()?.into_inner();
        for i in page.kvs {
            all.insert(i.key, (i.value, i.create_revision, i.mod_revision, i.version));
        }
        if page.next_page_token.is_empty() {
            return Some(all);
        }
        page_token = page.next_page_token;
    }
}

fn clean(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MOKV_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn mokv(bins: &Bins, certs: &Certs, who: &str, endpoint: &str, args: &[&str]) -> Output {
    clean(&bins.mokv)
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--ca")
        .arg(certs.path("ca.pem"))
        .arg("--cert")
        .arg(certs.path(&format!("{who}.pem")))
        .arg("--key")
        .arg(certs.path(&format!("{who}-key.pem")))
        .args(args)
        .output()
        .expect("running mokv")
}

fn status(bins: &Bins, file: &Path) -> Output {
    // Needs no cluster: no endpoint or certificate flags.
    clean(&bins.mokv)
        .args(["--output", "json", "snapshot", "status"])
        .arg(file)
        .output()
        .expect("running mokv")
}

fn restore(bins: &Bins, file: &Path, data_dir: &Path, name: &str) -> Output {
    clean(&bins.mokvd)
        .arg("restore")
        .arg("--from")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", name])
        .output()
        .expect("running mokvd restore")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_backup_restores_every_key_into_a_new_cluster() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let certs =
        Certs::generate(&bins, &tmp.path().join("certs"), &["n1", "r1"], &["root", "nobody"]);
    let node = Mokvd::start(
        &bins.mokvd,
        NodeSpec::node(&certs, &tmp.path().join("data"), "n1").flag("--bootstrap"),
    );
    let client = certs.client(&[node.addr.as_str()]);

    // Keys with several versions, deleted keys, and values bigger than a 1 MiB stream chunk.
    eventually("the node takes a write", || {
        let client = client.clone();
        async move { client.set("ready", b"1").await.ok() }
    })
    .await;
    for i in 0..60u32 {
        client.set(&format!("k/{i:03}"), format!("v{i}").as_bytes()).await.unwrap();
    }
    for i in 0..20u32 {
        client.set(&format!("k/{i:03}"), format!("v{i}-again").as_bytes()).await.unwrap();
    }
    for i in 50..60u32 {
        assert!(client.delete(&format!("k/{i:03}")).await.unwrap());
    }
    for i in 0..3u8 {
        client.set(&format!("big/{i}"), &vec![i; 700 << 10]).await.unwrap();
    }
    let last_revision = client.set("last", b"written before the save").await.unwrap();
    let kv = certs.kv(&node.addr);
    let before = every_key(&kv).await.expect("reading the source node");
    assert_eq!(before.len(), 1 + 50 + 3 + 1);
    assert_eq!(before["k/000"].3, 2, "k/000 was written twice");

    // Only an identity with `admin` on `cluster` may take a backup.
    let mut nobody = MaintenanceClient::new(certs.channel(&node.addr, Some("nobody")));
    let refused = nobody.snapshot(SnapshotRequest {}).await.expect_err("nobody may not back up");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let file = tmp.path().join("backup.mokv");
    let file_arg = file.to_str().unwrap();
    let out = mokv(&bins, &certs, "nobody", &node.addr, &["snapshot", "save", file_arg]);
    assert_eq!(out.status.code(), Some(6), "permission denied: {}", text(&out.stderr));
    assert!(!file.exists());

    let out =
        mokv(&bins, &certs, "root", &node.addr, &["-o", "json", "snapshot", "save", file_arg]);
    assert!(out.status.success(), "save failed: {}", text(&out.stderr));
    let saved: Value = serde_json::from_slice(&out.stdout).expect("save prints JSON");
    assert!(file.is_file() && !tmp.path().join("backup.mokv.part").exists());
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 2 << 20, "the file spans several chunks: {} bytes", bytes.len());

    let out = status(&bins, &file);
    assert!(out.status.success(), "status failed: {}", text(&out.stderr));
    let st: Value = serde_json::from_slice(&out.stdout).expect("status prints JSON");
    assert_eq!(st["checksum_ok"], true);
    assert_eq!(st["keys"], before.len() as u64);
    assert_eq!(st["bytes"], bytes.len() as u64);
    assert_eq!(st["revision"], saved["revision"]);
    // Linearizable: the save saw every write acknowledged before it.
    assert!(st["revision"].as_u64().unwrap() >= last_revision, "{st}");

    // Restore into a fresh data dir; a node started on it holds exactly the same keys.
    let data2 = tmp.path().join("restored");
    let out = restore(&bins, &file, &data2.join("r1"), "r1");
    assert!(out.status.success(), "restore failed: {}", text(&out.stderr));
    let out = restore(&bins, &file, &data2.join("r1"), "r1");
    assert_eq!(out.status.code(), Some(1), "a non-empty data dir is refused");
    assert!(text(&out.stderr).contains("not empty"), "{}", text(&out.stderr));

    let restored = Mokvd::start(&bins.mokvd, NodeSpec::node(&certs, &data2, "r1"));
    let kv2 = certs.kv(&restored.addr);
    let after = eventually("the restored node serves reads", || {
        let kv2 = kv2.clone();
        async move { every_key(&kv2).await }
    })
    .await;
    assert_eq!(after, before, "every key, value and revision came back");

    // A new cluster: another id, its own history continuing after the backup's revisions.
    let servers = certs.servers(&restored.addr).await.expect("GetServers");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].id, "r1");
    let client2 = certs.client(&[restored.addr.as_str()]);
    let rev = client2.set("after-restore", b"x").await.unwrap();
    assert!(rev > st["revision"].as_u64().unwrap(), "revisions keep increasing: {rev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_backups_are_refused() {
    let bins = Bins::get();
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&bins, &tmp.path().join("certs"), &["n1"], &["root"]);
    let node = Mokvd::start(
        &bins.mokvd,
        NodeSpec::node(&certs, &tmp.path().join("data"), "n1").flag("--bootstrap"),
    );
    let client = certs.client(&[node.addr.as_str()]);
    eventually("the node takes a write", || {
        let client = client.clone();
        async move { client.set("ready", b"1").await.ok() }
    })
    .await;
    for i in 0..20u32 {
        client.set(&format!("k{i}"), &[7u8; 100]).await.unwrap();
    }
    let good = tmp.path().join("good.mokv");
    let out =
        mokv(&bins, &certs, "root", &node.addr, &["snapshot", "save", good.to_str().unwrap()]);
    assert!(out.status.success(), "save failed: {}", text(&out.stderr));
    assert!(status(&bins, &good).status.success());
    let bytes = std::fs::read(&good).unwrap();

    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let corrupt = tmp.path().join("corrupt.mokv");
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = tmp.path().join("truncated.mokv");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();

    for (file, reason) in [(&corrupt, "checksum mismatch"), (&truncated, "truncated")] {
        let out = status(&bins, file);
        assert_eq!(out.status.code(), Some(1), "status of {}", file.display());
        let err: Value = serde_json::from_str(text(&out.stderr).trim()).expect("a JSON error");
        assert_eq!(err["exit_code"], 1);
        assert!(err["message"].as_str().unwrap().contains(reason), "{err}");

        let dir = tmp.path().join("never").join("n1");
        let out = restore(&bins, file, &dir, "n1");
        assert_eq!(out.status.code(), Some(1), "restore of {}", file.display());
        assert!(text(&out.stderr).contains(reason), "{}", text(&out.stderr));
        assert!(!dir.exists(), "nothing was written for a refused file");
    }
}
