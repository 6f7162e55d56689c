//! `mokvd` allocates with jemalloc in ONE arena (`shell/src/main.rs`, `.cargo/config.toml`): a
//! node's keys are allocated by several threads and freed by its driver, and with an arena per
//! thread the memory freed that way is reused by the allocating thread only (README, "Memory
//! layout"). The binary as built must carry that configuration; jemalloc prints its options at
//! exit when asked to through its environment variable, which is read over the built-in ones.

use std::process::Command;

use mokv_tests::Bins;

#[test]
fn mokvd_allocates_with_jemalloc_in_one_arena() {
    let bins = Bins::get();
    let out = Command::new(&bins.mokvd)
        .args(["config", "reference"])
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run mokvd config reference");
    assert!(out.status.success(), "mokvd config reference failed: {out:?}");
    let stats = String::from_utf8_lossy(&out.stderr);
    for option in ["opt.narenas: 1", "opt.background_thread: true", "opt.dirty_decay_ms: 1000"] {
        assert!(
            stats.lines().any(|l| l.trim().starts_with(option)),
            "jemalloc's statistics at exit lack {option:?}:\n{stats}"
        );
    }
}
