//! What the core asks the shell to make durable, and what the shell hands back at start-up.
//!
//! The shell stores these records as they are (opaque bytes keyed by log index) and never
//! interprets them: the core owns every durable format, the node's own metadata ([`NodeMeta`])
//! included.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{DecodeError, Reader, Writer};
use crate::gossip::{newest, GossipMember, MAX_IDENTITY_FIELD_BYTES};
use crate::members::NodeId;
use crate::snapshot::SnapshotImage;
use crate::snapshot_ref::SnapshotRef;

impl SnapshotRecord {
    /// A record whose file the disk must write from `image` (bootstrap, recovery); its
    /// reference is computed here, chunk by chunk.
    pub fn to_write(image: SnapshotImage) -> SnapshotRecord {
        SnapshotRecord { reference: image.reference(), image, write_file: true }
    }
}

/// Identifies a [`PersistBatch`]. Ids increase by one per batch; acknowledging id `n` says
/// every batch up to and including `n` is durable.
pub type PersistId = u64;

/// One Raft log entry in its durable encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub index: u64,
    pub bytes: Vec<u8>,
}

/// The node's snapshot, replacing the previous one: what the disk stores is the small
/// [`SnapshotRef`] (its [`SnapshotRef::encode`]), never the snapshot itself, which lives in
/// the file the reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The snapshot file; the disk stores its encoding.
    pub reference: SnapshotRef,
    /// The state the file holds, as a copy-on-write image. A disk that keeps its state in
    /// memory (tests, the simulator) keeps this instead of reading the file back; a real disk
    /// only uses it when `write_file` is set, and drops it after the batch.
    pub image: SnapshotImage,
    /// The file does not exist yet (a bootstrap or a recovery made the image): the disk writes
    /// it durably, from `image`, before the batch. Otherwise the shell made it durable before
    /// the core saw its reference (a snapshot job's file, or one received from the leader).
    pub write_file: bool,
}

/// One atomic unit of durable work.
///
/// The shell applies batches in id order, each one atomically and in this field order:
/// 1. if `snapshot` is set: store its reference, replacing the previous one (writing its
///    file first if `write_file`; the files of older snapshots may be deleted once the batch
///    is durable);
/// 2. delete log records with index `>= truncate_from`;
/// 3. delete log records with index `<= compact_to`;
/// 4. write `entries`;
/// 5. write `hard_state` if set;
/// 6. if `node_meta` is set: store it, replacing the previous one.
///
/// It then calls `Node::handle_persisted(id)`. When `must_sync` is true the write must be on
/// stable storage (fsync) before that call; several batches may share one sync (group commit),
/// acknowledged with the highest id. A batch with `must_sync == false` only changes what a
/// crash may lose without harm (the commit index, the remembered gossip peers) and may be
/// written without a sync.
///
/// A batch that carries only `node_meta` holds nothing back: no message or answer waits for
/// it, and its acknowledgement may come with a later one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistBatch {
    pub id: PersistId,
    pub snapshot: Option<SnapshotRecord>,
    pub truncate_from: Option<u64>,
    pub compact_to: Option<u64>,
    pub entries: Vec<LogRecord>,
    pub hard_state: Option<Vec<u8>>,
    /// The node's metadata ([`NodeMeta::encode`]), replacing what was stored.
    pub node_meta: Option<Vec<u8>>,
    pub must_sync: bool,
}

impl PersistBatch {
    /// True when the batch changes nothing on disk.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.compact_to.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.node_meta.is_none()
    }
}

/// Everything the shell read back from disk at start-up: the records exactly as they were
/// written, and the snapshot the stored reference names, read from its file (and checked
/// against the reference) by the shell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    pub hard_state: Option<Vec<u8>>,
    pub snapshot: Option<StoredSnapshot>,
    /// Log records in ascending index order, without gaps.
    pub entries: Vec<LogRecord>,
    /// The last [`PersistBatch::node_meta`] written.
    pub node_meta: Option<Vec<u8>>,
}

impl DurableState {
    /// True for a node that holds no Raft state: a fresh data dir, or one where the node only
    /// remembered gossip peers before it was ever added to a cluster.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }

    /// Applies one batch the way the shell's disk does. Used by in-memory disks (tests, the
    /// simulator) so that they and the real disk share one definition of the batch semantics.
    pub fn apply(&mut self, batch: &PersistBatch) {
        if let Some(s) = &batch.snapshot {
            self.snapshot = Some(StoredSnapshot { reference: s.reference, image: s.image.clone() });
        }
        if let Some(from) = batch.truncate_from {
            self.entries.retain(|e| e.index < from);
        }
        if let Some(to) = batch.compact_to {
            self.entries.retain(|e| e.index > to);
        }
        self.entries.extend(batch.entries.iter().cloned());
        if let Some(hs) = &batch.hard_state {
            self.hard_state = Some(hs.clone());
        }
        if let Some(meta) = &batch.node_meta {
            self.node_meta = Some(meta.clone());
        }
    }
}

/// The node's snapshot as read back at start-up: the stored reference and the image its file
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub reference: SnapshotRef,
    pub image: SnapshotImage,
}

/// Bound on [`NodeMeta::gossip_peers`].
pub const MAX_REMEMBERED_PEERS: usize = 64;

/// What a node keeps on disk besides its Raft state. The core writes it whole, in a
/// [`PersistBatch::node_meta`], whenever it changes, and reads it back in [`DurableState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMeta {
    /// The cluster this node's data belongs to (never 0, which gossip reads as "none yet"):
    /// chosen at bootstrap, or learned from the leader by a node that joined empty. A node with
    /// a cluster id is only ever added back to that cluster.
    pub cluster_id: Option<u64>,
    /// The gossip address of every other node this one has seen in gossip (its newest
    /// incarnation's), by Raft id, at most [`MAX_REMEMBERED_PEERS`]: extra seeds after a
    /// restart, so that a cluster re-forms even when every configured seed is gone (like serf's
    /// snapshot file).
    pub gossip_peers: BTreeMap<NodeId, String>,
}

impl NodeMeta {
    const VERSION: u8 = 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.put_u8(Self::VERSION);
        w.put_u64(self.cluster_id.unwrap_or(0));
        w.put_u64(self.gossip_peers.len() as u64);
        for (id, addr) in &self.gossip_peers {
            w.put_u64(*id);
            w.put_str(addr);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.get_u8()? {
            Self::VERSION => {}
            v => return Err(DecodeError::UnsupportedVersion(u32::from(v))),
        }
        let cluster_id = Some(r.get_u64()?).filter(|id| *id != 0);
        let n = r.get_count(8 + 4)?;
        if n > MAX_REMEMBERED_PEERS {
            return Err(DecodeError::Invalid("too many remembered gossip peers"));
        }
        let mut gossip_peers = BTreeMap::new();
        for _ in 0..n {
            let id = r.get_u64()?;
            let addr = r.get_str()?;
            if id == 0 || addr.is_empty() || addr.len() > MAX_IDENTITY_FIELD_BYTES {
                return Err(DecodeError::Invalid("remembered gossip peer"));
            }
            gossip_peers.insert(id, addr.to_owned());
        }
        r.finish()?;
        Ok(Self { cluster_id, gossip_peers })
    }

    /// Remembers the gossip address of every node in `view` but `self_id`: its newest
    /// incarnation's ([`newest`]). Beyond [`MAX_REMEMBERED_PEERS`] the nodes that are not in
    /// the configuration (`conf_ids`) are forgotten first, lowest Raft id first. Returns
    /// whether anything changed (and so needs writing).
    pub(crate) fn remember_gossip_peers(
        &mut self,
        view: &[GossipMember],
        self_id: NodeId,
        conf_ids: &BTreeSet<NodeId>,
    ) -> bool {
        let ids: BTreeSet<NodeId> =
            view.iter().map(|m| m.id.raft_id).filter(|id| *id != 0 && *id != self_id).collect();
        let mut changed = false;
        for id in ids {
            let Some(m) = newest(view, id) else { continue };
            let addr = &m.id.gossip_addr;
            if addr.is_empty() || addr.len() > MAX_IDENTITY_FIELD_BYTES {
                continue;
            }
            if self.gossip_peers.get(&id) != Some(addr) {
                self.gossip_peers.insert(id, addr.clone());
                changed = true;
            }
        }
        while self.gossip_peers.len() > MAX_REMEMBERED_PEERS {
            let victim = self
                .gossip_peers
                .keys()
                .copied()
                .find(|id| !conf_ids.contains(id))
                .or_else(|| self.gossip_peers.keys().next().copied());
            let Some(victim) = victim else { break };
            self.gossip_peers.remove(&victim);
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{GossipId, Health};
    use proptest::prelude::*;

    fn member(raft_id: NodeId, addr: &str, started_ms: u64) -> GossipMember {
        GossipMember {
            id: GossipId {
                gossip_addr: addr.into(),
                name: format!("n{raft_id}"),
                raft_id,
                rpc_addr: format!("{addr}-rpc"),
                cluster_id: 0,
                started_ms,
                bump: 0,
                leaving: false,
            },
            health: Health::Alive,
        }
    }

    #[test]
    fn peers_are_remembered_by_newest_incarnation_and_kept_when_out_of_view() {
        let mut meta = NodeMeta::default();
        let conf = BTreeSet::from([1, 2, 3]);
        let view = [member(2, "b:1", 10), member(2, "b:2", 20), member(3, "c:1", 5)];
        assert!(meta.remember_gossip_peers(&view, 1, &conf));
        assert_eq!(meta.gossip_peers, BTreeMap::from([(2, "b:2".into()), (3, "c:1".into())]));
        assert!(!meta.remember_gossip_peers(&view, 1, &conf), "nothing new: nothing to write");
        // A restarted node knows nobody yet: what it remembered stays.
        assert!(!meta.remember_gossip_peers(&[], 1, &conf));
        assert_eq!(meta.gossip_peers.len(), 2);
        // Its own old identity is not a peer.
        assert!(!meta.remember_gossip_peers(&[member(1, "a:9", 1)], 1, &conf));
    }

    #[test]
    fn beyond_the_bound_non_members_are_forgotten_first() {
        let mut meta = NodeMeta::default();
        let n = MAX_REMEMBERED_PEERS as u64 + 5;
        let conf: BTreeSet<NodeId> = [n, n + 1].into_iter().collect();
        let view: Vec<GossipMember> =
            (2..=n + 1).map(|id| member(id, &format!("h{id}:1"), 1)).collect();
        assert!(meta.remember_gossip_peers(&view, 1, &conf));
        assert_eq!(meta.gossip_peers.len(), MAX_REMEMBERED_PEERS);
        assert!(meta.gossip_peers.contains_key(&n) && meta.gossip_peers.contains_key(&(n + 1)));
        assert!(!meta.gossip_peers.contains_key(&2), "the lowest non-member went first");
        assert_eq!(NodeMeta::decode(&meta.encode()).unwrap(), meta);
    }

    #[test]
    fn zero_cluster_id_reads_as_none_and_bad_peers_are_refused() {
        let meta = NodeMeta { cluster_id: Some(0), ..NodeMeta::default() };
        assert_eq!(NodeMeta::decode(&meta.encode()).unwrap().cluster_id, None);
        let bad = NodeMeta { gossip_peers: BTreeMap::from([(0, "x:1".into())]), ..meta };
        assert!(NodeMeta::decode(&bad.encode()).is_err());
        assert!(matches!(NodeMeta::decode(&[9]), Err(DecodeError::UnsupportedVersion(9))));
    }

    proptest! {
        #[test]
        fn node_meta_round_trips(cluster in proptest::option::of(1u64..),
                                 peers in proptest::collection::btree_map(1u64.., "[a-z:0-9]{1,20}", 0..8)) {
            let meta = NodeMeta { cluster_id: cluster, gossip_peers: peers };
            prop_assert_eq!(NodeMeta::decode(&meta.encode()).unwrap(), meta);
        }

        #[test]
        fn node_meta_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = NodeMeta::decode(&bytes);
        }
    }
}
