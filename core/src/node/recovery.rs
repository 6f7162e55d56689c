//! Offline rewrites of a data dir into a one-voter cluster: from a backup (`mokvd restore`) and
//! from a surviving node's own state after a lost quorum (`mokvd recover --force-new-cluster`).
//! Both return one [`PersistBatch`] for the shell to write to the stopped node's disk; the node
//! then starts normally with [`Node::new`] and leads itself at once.

use std::num::NonZeroU64;

use protobuf::Message as _;
use raft::eraftpb::HardState;

use super::Node;
use crate::backup::Backup;
use crate::config::Config;
use crate::error::RecoveryError;
use crate::kv::StateMachine;
use crate::members::{Conf, MemberInfo, NodeId};
use crate::persist::{DurableState, NodeMeta, PersistBatch, SnapshotRecord};
use crate::snapshot::SnapshotImage;

/// What [`Node::force_new_cluster`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedCluster {
    /// The batch to write (replaces the snapshot, deletes the whole log, new hard state).
    pub batch: PersistBatch,
    /// The index the state is as of: everything this node knew committed.
    pub applied_index: u64,
    /// Log entries the node held beyond what it knew committed; they are dropped.
    pub dropped_entries: u64,
    /// Voters of the old configuration other than this node (removed).
    pub removed_voters: Vec<NodeId>,
    /// Number of keys kept.
    pub keys: u64,
}

impl Node {
    /// The durable state of a NEW one-voter cluster (`info` its only voter, `cluster_id` drawn
    /// by the shell) holding the keys of `backup` with their revisions: a snapshot at the
    /// backup's applied index (at least 1), so that revisions keep increasing after the
    /// restore. Client sessions, members and the old configuration are not carried over.
    /// Write it as the first batch of an empty data dir, like [`Node::bootstrap`]'s.
    pub fn restore(
        info: &MemberInfo,
        config: &Config,
        cluster_id: NonZeroU64,
        backup: Backup,
    ) -> PersistBatch {
        let index = backup.info().applied_index.max(1);
        let sm = StateMachine::from_data(config.session_limits, backup.data, index);
        one_voter_batch(info.clone(), sm, index, 1, Some(cluster_id.get()))
    }

    /// etcd's `--force-new-cluster` for a stopped node whose quorum is lost for good: its state
    /// as of everything it knew committed (its snapshot plus its committed log), with a new
    /// configuration holding only `config.id` as voter and every other member removed. The
    /// term stays (it never goes back) and the cluster id is replaced by `new_cluster_id`, so
    /// that the lost members, should they come back with their old data, are not admitted.
    ///
    /// Entries past the commit index the node knew are dropped, as etcd does: the node cannot
    /// tell whether they were committed, and one may have been refused to its client.
    pub fn force_new_cluster(
        config: Config,
        durable: DurableState,
        name: Option<&str>,
        new_cluster_id: NonZeroU64,
    ) -> Result<ForcedCluster, RecoveryError> {
        let id = config.id;
        let last_log_index = durable.entries.last().map(|e| e.index);
        let mut config = config;
        config.gossip = None;
        // Replays the committed log into the state machine.
        let node = Node::new(config, durable)?;
        let index = node.sm.applied_index();
        let term = node.raw.raft.raft_log.term(index).map_err(RecoveryError::Raft)?;
        let hs_term = node.raw.raft.term;
        let dropped_entries = last_log_index.map_or(0, |last| last.saturating_sub(index));
        let old = node.sm.conf().clone();
        let removed_voters = old.voters.iter().copied().filter(|v| *v != id).collect();
        let mut info = node.sm.members().get(&id).cloned().unwrap_or_else(|| MemberInfo {
            id,
            name: String::new(),
            peer_addr: String::new(),
            rpc_addr: String::new(),
            auto_promote: true,
        });
        if let Some(name) = name {
            info.name = name.to_owned();
        }
        let keys = node.sm.len() as u64;
        let mut meta = node.meta.clone();
        meta.cluster_id = Some(new_cluster_id.get());
        // The remembered peers are the lost members.
        meta.gossip_peers.clear();
        let mut sm = node.sm;
        sm.members_mut().clear();
        let mut batch = one_voter_batch(info, sm, index, term, None);
        let mut hs = HardState::default();
        hs.term = hs_term.max(term);
        hs.vote = id;
        hs.commit = index;
        batch.hard_state = Some(hs.write_to_bytes().unwrap_or_default());
        batch.compact_to = last_log_index;
        batch.node_meta = Some(meta.encode());
        Ok(ForcedCluster { batch, applied_index: index, dropped_entries, removed_voters, keys })
    }
}

/// A snapshot of `sm` at (`index`, `term`) whose configuration is `info` as the only voter,
/// with a hard state committing it, and (if given) the node metadata naming `cluster_id`.
fn one_voter_batch(
    info: MemberInfo,
    mut sm: StateMachine,
    index: u64,
    term: u64,
    cluster_id: Option<u64>,
) -> PersistBatch {
    sm.set_conf(Conf { voters: [info.id].into_iter().collect(), ..Conf::default() });
    sm.members_mut().insert(info.id, info);
    let image = SnapshotImage { index, term, state: sm };
    let mut hs = HardState::default();
    hs.term = term;
    hs.commit = index;
    PersistBatch {
        id: 0,
        snapshot: Some(SnapshotRecord::to_write(image)),
        hard_state: Some(hs.write_to_bytes().unwrap_or_default()),
        node_meta: cluster_id
            .map(|id| NodeMeta { cluster_id: Some(id), ..NodeMeta::default() }.encode()),
        must_sync: true,
        ..PersistBatch::default()
    }
}
