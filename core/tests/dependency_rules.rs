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

/// The planted bugs are compiled out of the shell: built on its own, `mokv-shell` selects no
/// `planted-bugs` feature of the core (only the simulator enables it).
#[test]
fn mokvd_is_built_without_planted_bugs() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = |package: &str| {
        let out = Command::new(&cargo)
            .args(["tree", "--offline", "-p", package, "-e", "features", "--prefix", "none"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let planted =
        |tree: &str| tree.lines().any(|l| l.starts_with("mokv-core feature \"planted-bugs\""));
    let shell = tree("mokv-shell");
    assert!(
        shell.lines().any(|l| l.starts_with("mokv-core ")),
        "sanity: the core is listed\n{shell}"
    );
    assert!(!planted(&shell), "mokv-shell must not enable planted-bugs\n{shell}");
    // Sanity of the probe itself: the simulator does enable it.
    assert!(planted(&tree("sim")), "the simulator enables planted-bugs");
}
