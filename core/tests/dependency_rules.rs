//! The core stays sans-io: none of the I/O stacks may enter its dependency tree.

use std::process::Command;

#[test]
fn core_depends_on_no_io_stack() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "mokv-core", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("raft ")), "sanity: raft is listed\n{tree}");
    for banned in ["tokio", "tonic", "rocksdb", "librocksdb-sys", "rustls", "mio", "hyper"] {
        let hit = tree.lines().find(|l| l.split_whitespace().next() == Some(banned));
        assert!(hit.is_none(), "mokv-core must not depend on {banned}: {hit:?}");
    }
}
