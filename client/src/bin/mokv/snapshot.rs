//! `mokv snapshot save FILE` and `mokv snapshot status FILE`: backup files (the format of
//! mokv-core's `backup` module).
//!
//! `save` writes the stream to `FILE.part`, syncs it, checks it completely (length, checksum,
//! every record) and only then renames it to `FILE` and syncs the directory: a `FILE` that
//! exists is always a whole, checked backup. A failed save removes `FILE.part`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use mokv_client::Client;
use mokv_core::backup::{Backup, BackupInfo};
use serde::Serialize;

use crate::exit::Exit;
use crate::output::json_line;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a consistent backup of every key from the cluster into FILE (needs the admin
    /// permission on `cluster`).
    Save { file: PathBuf },
    /// Check a backup file (length, checksum, every record) and show what it holds; a corrupt
    /// or truncated file exits with code 1.
    Status { file: PathBuf },
}

/// `snapshot status` / `snapshot save` as JSON.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    file: &'a str,
    checksum_ok: bool,
    keys: u64,
    bytes: u64,
    /// The log index the data is as of.
    revision: u64,
    max_mod_revision: u64,
    /// In hex, as `mokv members` shows ids.
    cluster_id: Option<String>,
}

fn print(file: &Path, info: &BackupInfo, json: bool, verb: &str) {
    let name = file.display().to_string();
    if json {
        json_line(&StatusJson {
            file: &name,
            checksum_ok: true,
            keys: info.keys,
            bytes: info.file_bytes(),
            revision: info.applied_index,
            max_mod_revision: info.max_mod_revision,
            cluster_id: info.cluster_id.map(|id| format!("{id:x}")),
        });
    } else {
        println!("{verb} {name}");
        println!("{:<18} {:<10} {:<12} {:<16} CHECKSUM", "KEYS", "BYTES", "REVISION", "CLUSTER");
        println!(
            "{:<18} {:<10} {:<12} {:<16} ok",
            info.keys,
            info.file_bytes(),
            info.applied_index,
            info.cluster_id.map_or_else(|| "-".to_owned(), |id| format!("{id:x}")),
        );
    }
}

fn failure(file: &Path, e: impl std::fmt::Display) -> Failure {
    Failure { exit: Exit::Error, message: format!("{}: {e}", file.display()) }
}

/// Reads and checks a whole backup file.
fn check(file: &Path) -> Result<BackupInfo, Failure> {
    let bytes = std::fs::read(file).map_err(|e| failure(file, e))?;
    Backup::verify(&bytes).map_err(|e| failure(file, e))
}

/// `mokv snapshot status FILE` (needs no cluster).
pub fn status(file: &Path, json: bool) -> Result<(), Failure> {
    let info = check(file)?;
    print(file, &info, json, "backup");
    Ok(())
}

/// `mokv snapshot save FILE`.
pub async fn save(client: &Client, file: &Path, json: bool) -> Result<(), Failure> {
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = save_part(client, file, &part).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    let info = result?;
    print(file, &info, json, "saved");
    Ok(())
}

async fn save_part(client: &Client, file: &Path, part: &Path) -> Result<BackupInfo, Failure> {
    let mut stream = client.snapshot().await?;
    let mut out = std::fs::File::create(part).map_err(|e| failure(part, e))?;
    let mut written = 0u64;
    while let Some(chunk) = stream.next_chunk().await? {
        written += chunk.len() as u64;
        if written > stream.summary.file_bytes {
            return Err(failure(part, "the node sent more bytes than it announced"));
        }
        out.write_all(&chunk).map_err(|e| failure(part, e))?;
    }
    out.sync_all().map_err(|e| failure(part, e))?;
    drop(out);
    let info = check(part)?;
    std::fs::rename(part, file).map_err(|e| failure(file, e))?;
    // The rename is durable once the directory is.
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failure(dir, e))?;
    Ok(info)
}
