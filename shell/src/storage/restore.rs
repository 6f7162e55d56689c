//! Offline rewrites of a data dir, run by `mokvd restore` and `mokvd recover` while no node runs
//! on it (RocksDB's lock refuses a second opener): the core computes the new durable state
//! ([`Node::restore`], [`Node::force_new_cluster`]); this writes it.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use mokv_core::backup::{Backup, BackupError, BackupInfo};
use mokv_core::{ForcedCluster, MemberInfo, Node, RecoveryError};

use crate::node::server::META_NODE_ID;
use crate::storage::disk::{Disk, DiskError};

/// Why a restore or recovery did not happen. A failure before the first write leaves the
/// target untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Backup { path: PathBuf, source: BackupError },
    #[error("data dir {path} is not empty: restore creates a new node's data dir")]
    NotEmpty { path: PathBuf },
    #[error("data dir {path} holds no node (no raft state)")]
    NoNode { path: PathBuf },
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Disk(#[from] DiskError),
    #[error("the stored node id is corrupt")]
    NodeId,
    #[error("recovering the node's state: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("randomness: {0}")]
    Random(String),
}

/// What `mokvd restore` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's header.
    pub info: BackupInfo,
    /// The new node's Raft id.
    pub node_id: u64,
    /// The new cluster's id.
    pub cluster_id: u64,
}

fn random_nonzero() -> Result<NonZeroU64, RestoreError> {
    loop {
        let v = getrandom::u64().map_err(|e| RestoreError::Random(e.to_string()))?;
        if let Some(v) = NonZeroU64::new(v) {
            return Ok(v);
        }
    }
}

/// Where a node's RocksDB lives inside its data dir (as `mokvd` opens it).
fn raft_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("raft")
}

/// Creates the data dir of a NEW cluster from the backup file `from`: one node named `name`,
/// its only voter, holding the backup's keys with their revisions, under a new random cluster
/// id and node id. Refuses a data dir that exists and is not empty, and a backup that fails any
/// check (before anything is written).
pub fn restore(from: &Path, data_dir: &Path, name: &str) -> Result<Restored, RestoreError> {
    let bytes =
        std::fs::read(from).map_err(|source| RestoreError::Read { path: from.into(), source })?;
    let backup = Backup::decode(&bytes)
        .map_err(|source| RestoreError::Backup { path: from.into(), source })?;
    drop(bytes);
    let dir_error = |source| RestoreError::DataDir { path: data_dir.into(), source };
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty { path: data_dir.into() });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dir_error(e)),
    }
    let node_id = random_nonzero()?.get();
    let cluster_id = random_nonzero()?;
    let info = *backup.info();
    std::fs::create_dir_all(data_dir).map_err(dir_error)?;
    let disk = Disk::open(&raft_dir(data_dir))?;
    // The member's addresses come from gossip once it runs (they are not known here).
    let me = MemberInfo {
        id: node_id,
        name: name.to_owned(),
        peer_addr: String::new(),
        rpc_addr: String::new(),
        auto_promote: true,
    };
    let config = mokv_core::Config::new(node_id, 0);
    disk.put_meta(META_NODE_ID, &node_id.to_be_bytes())?;
    disk.write(&[Node::restore(&me, &config, cluster_id, backup)])?;
    Ok(Restored { info, node_id, cluster_id: cluster_id.get() })
}

/// Rewrites the data dir of a stopped node into a one-voter cluster holding everything it knew
/// committed (see [`Node::force_new_cluster`]), under a new cluster id; `name` renames it.
pub fn force_new_cluster(
    data_dir: &Path,
    name: Option<&str>,
) -> Result<ForcedCluster, RestoreError> {
    let raft = raft_dir(data_dir);
    if !raft.is_dir() {
        return Err(RestoreError::NoNode { path: data_dir.into() });
    }
    let disk = Disk::open(&raft)?;
    let id = match disk.get_meta(META_NODE_ID)? {
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| RestoreError::NodeId)?),
        None => return Err(RestoreError::NoNode { path: data_dir.into() }),
    };
    let durable = disk.load()?;
    if durable.is_empty() {
        return Err(RestoreError::NoNode { path: data_dir.into() });
    }
    let config = mokv_core::Config::new(id, 0);
    let forced = Node::force_new_cluster(config, durable, name, random_nonzero()?)?;
    disk.write(std::slice::from_ref(&forced.batch))?;
    Ok(forced)
}
