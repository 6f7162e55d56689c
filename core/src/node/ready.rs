//! The Ready loop: raft-rs's async-persist protocol, persist batches and the messages they
//! hold back, applying committed entries (KV commands and conf changes), snapshots and log
//! compaction, and noticing role changes.

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{StateRole, Storage};
use raft_proto::ConfChangeI as _;
use smallvec::SmallVec;

use super::pipeline::{Pushed, Released};
use super::writes::WriteKind;
use super::{encode_pb, raft_snapshot, Event, Node, PeerPayload, Role, Transmit};
use crate::command::WriteOutcome;
use crate::command::{Command, Proposal};
use crate::error::{Error, InvalidArgument, Unavailable};
use crate::kv::WARM_GROUP_KEYS;

use crate::log::entry_bytes;
use crate::members::{Conf, MemberInfo};
use crate::persist::{LogRecord, PersistBatch, PersistId, SnapshotRecord};
use crate::request::Response;
use crate::snapshot::SnapshotImage;
use crate::snapshot_ref::SnapshotRef;
use crate::txn::TxnResponse;

impl Node {
    /// Every input ends here: the Ready it needs runs at the next `poll_*`, together with
    /// that of every other input before it.
    pub(super) fn after_input(&mut self) {
        self.ready_due = true;
    }

    /// The Ready owed to the inputs since the last one, if any.
    pub(super) fn run_due_ready(&mut self) {
        if std::mem::take(&mut self.ready_due) {
            self.run_ready();
        }
    }

    /// Starts read rounds, drains raft-rs, notices role changes.
    fn run_ready(&mut self) {
        self.start_read_round();
        self.process_ready();
        self.observe();
        // A term change may have re-queued reads; start their round now rather than next tick.
        self.start_read_round();
        self.process_ready();
    }

    /// Drains raft-rs: every Ready it has, into persist batches, transmits and answers.
    pub(super) fn process_ready(&mut self) {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            let number = rd.number();
            let mut batch = PersistBatch::default();

            for m in rd.take_messages() {
                self.push_transmit(m);
            }
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                self.install_snapshot(snap, &mut batch);
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(committed);
            let entries = rd.take_entries();
            if let Some(first) = entries.first() {
                batch.truncate_from =
                    Some(batch.truncate_from.map_or(first.index, |t| t.min(first.index)));
                batch.entries = entries
                    .iter()
                    .map(|e| LogRecord { index: e.index, bytes: encode_pb(e) })
                    .collect();
                self.raw.mut_store().append(&entries);
                if self.config.planted_bugs.answer_before_durable() {
                    self.answer_writes_early(&entries);
                }
            }
            if let Some(hs) = rd.hs() {
                batch.hard_state = Some(encode_pb(hs));
                self.raw.mut_store().set_hard_state(hs.clone());
            }
            // A commit that covers a membership change waiting for its answer is synced
            // even alone (see `finish_write`). A new snapshot reference is synced so that the
            // file it replaces can go.
            batch.must_sync = rd.must_sync()
                || batch.snapshot.is_some()
                || (batch.hard_state.is_some() && self.persist.holds_replies());
            let term = self.raw.raft.term;
            for rs in rd.take_read_states() {
                self.stats.read_index_rounds_confirmed += 1;
                self.reads.on_read_state(&rs.request_ctx, rs.index, term);
            }
            let held = rd.take_persisted_messages();
            self.raw.advance_append_async(rd);
            self.enqueue_persist(Some(number), batch, held);
            self.sync_raft_applied();
            self.serve_applied_reads();
            self.maybe_snapshot();
        }
    }

    /// The planted bug `answer_before_durable`: answers our `Set`s among `entries` now.
    fn answer_writes_early(&mut self, entries: &[Entry]) {
        for e in entries {
            let Some(w) = self.writes.get(e.index) else { continue };
            let ours = w.is_entry(e);
            let is_set = matches!(
                Proposal::decode(&e.data),
                Ok(Proposal { command: Command::Set { .. }, .. })
            );
            if ours && is_set && w.kind == WriteKind::Kv {
                if let Some(w) = self.writes.take(e.index) {
                    self.reply(w.id, Ok(Response::Set { revision: e.index }));
                }
            }
        }
    }

    fn push_transmit(&mut self, m: Message) {
        let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        let to = m.to;
        let payload = PeerPayload(encode_pb(&m));
        let snapshot =
            if is_snapshot { SnapshotRef::decode(&m.get_snapshot().data).ok() } else { None };
        if is_snapshot {
            self.stats.snapshots_sent += 1;
            self.stats.snapshots_sent_bytes += snapshot.map_or(0, |r| r.len_bytes);
        }
        self.transmits.push_back(Transmit { to, payload, is_snapshot, snapshot });
    }

    /// Hands a batch to the persist pipeline with the messages that wait for it.
    pub(super) fn enqueue_persist(
        &mut self,
        ready: Option<u64>,
        batch: PersistBatch,
        held: Vec<Message>,
    ) {
        match self.persist.push(ready, batch, held) {
            Pushed::Released(released) => self.release(released),
            Pushed::Queued(id) => {
                if self.config.planted_bugs.ack_before_durable() {
                    self.ack_persisted(id);
                }
            }
        }
    }

    /// Every batch up to and including `id` is durable.
    pub(super) fn ack_persisted(&mut self, id: PersistId) {
        let released = self.persist.ack(id);
        self.release(released);
    }

    /// Sends what the pipeline released, answers the membership changes now durable, and
    /// tells raft-rs which Ready is persisted.
    fn release(&mut self, released: Released) {
        for m in released.messages {
            self.push_transmit(m);
        }
        for (id, result) in released.replies {
            self.reply(id, result);
        }
        if let Some(n) = released.ready_number {
            self.raw.on_persist_ready(n);
            self.sync_raft_applied();
        }
    }

    /// Tells raft-rs how far the state machine has applied. After installing a snapshot the
    /// state machine is ahead of what raft-rs accepts until the snapshot is durable.
    fn sync_raft_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let target = self.sm.applied_index().min(log.persisted).min(log.committed);
        if target > log.applied {
            self.raw.advance_apply_to(target);
        }
    }

    fn install_snapshot(&mut self, snap: Snapshot, batch: &mut PersistBatch) {
        // Validated in handle_peer_message: the reference decodes and the image the shell
        // decoded from its file is the one raft-rs accepted.
        let Ok(reference) = SnapshotRef::decode(&snap.data) else { return };
        let Some(image) = self.received_snapshot.take() else { return };
        if (image.index, image.term) != (reference.index, reference.term) {
            return;
        }
        let index = image.index;
        for w in self.writes.take_up_to(index) {
            // The snapshot may or may not contain our entry.
            self.stats.proposals_dropped += 1;
            self.reply(w.id, Err(Error::Indeterminate));
        }
        self.stats.snapshots_installed += 1;
        self.stats.snapshots_installed_bytes += reference.len_bytes;
        batch.snapshot =
            Some(SnapshotRecord { reference, image: image.clone(), write_file: false });
        batch.truncate_from = Some(0);
        self.raw.mut_store().install_snapshot(snap);
        self.sm = image.state;
        if self.raw.raft.state == StateRole::Leader {
            self.lease_clock.restart(self.sm.leases(), self.now_ms);
        }
        if !self.config.planted_bugs.watch_skips_snapshot_boundary() {
            self.history.restart_at(index);
        }
        self.applied_bytes_since_snapshot = 0;
        self.push_event(Event::SnapshotInstalled { index });
        self.push_event(Event::MembershipChanged);
    }

    /// Applies committed entries in groups of [`WARM_GROUP_KEYS`]: a group's proposals are
    /// decoded first and the map's paths to their keys warmed together (`kv/tree/warm.rs`),
    /// so that the cache misses of those lookups overlap instead of following one another.
    /// A restart replaying a long log tail onto a large map is where that counts.
    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for group in entries.chunks(WARM_GROUP_KEYS) {
            let applied = self.sm.applied_index();
            let proposals: SmallVec<[Option<Proposal>; WARM_GROUP_KEYS]> = group
                .iter()
                .map(|e| {
                    // Empty: a new leader's entry, never a client's proposal.
                    let normal = e.get_entry_type() == EntryType::EntryNormal;
                    let wanted = normal && e.index > applied && !e.data.is_empty();
                    wanted.then(|| Proposal::decode(&e.data).ok()).flatten()
                })
                .collect();
            {
                let keys: SmallVec<[&[u8]; WARM_GROUP_KEYS]> = proposals
                    .iter()
                    .flatten()
                    .filter_map(|p| p.command.single_key().map(str::as_bytes))
                    .collect();
                self.sm.warm_keys(&keys);
            }
            for (e, proposal) in group.iter().zip(proposals) {
                self.apply_entry(e, proposal);
            }
        }
    }

    /// Applies `e`; `proposal` is its data decoded (`None` for a normal entry that is empty or
    /// does not decode).
    fn apply_entry(&mut self, e: &Entry, proposal: Option<Proposal>) {
        if e.index <= self.sm.applied_index() {
            return;
        }
        self.applied_bytes_since_snapshot += entry_bytes(e);
        let outcome = match e.get_entry_type() {
            EntryType::EntryNormal => self.apply_normal(e, proposal),
            EntryType::EntryConfChange => {
                let cc = ConfChange::parse_from_bytes(&e.data).ok();
                self.apply_conf_change(e.index, cc.map(|cc| (cc.context.to_vec(), cc.into_v2())))
            }
            EntryType::EntryConfChangeV2 => {
                let cc = ConfChangeV2::parse_from_bytes(&e.data).ok();
                self.apply_conf_change(e.index, cc.map(|cc| (cc.context.to_vec(), cc)))
            }
        };
        self.finish_write(e, outcome);
    }

    fn apply_normal(&mut self, e: &Entry, proposal: Option<Proposal>) -> Result<Response, Error> {
        // `None`: a new leader's empty entry (never a client's proposal), or data that does not
        // decode — every node decodes the same bytes the same way, so skipping keeps replicas
        // equal.
        let Some(mut proposal) = proposal else {
            self.sm.skip(e.index);
            return Err(Unavailable::Dropped.into());
        };
        if self.config.planted_bugs.skip_session_dedup() {
            proposal.session = None;
        }
        let (outcome, reads) =
            self.sm.apply_with_reads(e.index, &proposal, self.config.max_page_bytes);
        self.history.record(self.sm.take_events());
        if let Ok(applied) = &outcome {
            self.on_lease_applied(&proposal.command, applied);
        }
        match outcome {
            Ok(WriteOutcome::Set { revision }) => Ok(Response::Set { revision }),
            Ok(WriteOutcome::Deleted { existed, revision }) => {
                Ok(Response::Delete { existed, revision })
            }
            Ok(WriteOutcome::ConditionFailed { revision, current }) => {
                Ok(Response::ConditionFailed { revision, current })
            }
            Ok(WriteOutcome::Txn { succeeded, revision }) => {
                Ok(Response::Txn(TxnResponse { succeeded, revision, results: reads }))
            }
            Ok(WriteOutcome::LeaseGranted { id, ttl_ms, revision }) => {
                Ok(Response::LeaseGranted { id, ttl_ms, revision })
            }
            Ok(WriteOutcome::LeaseRevoked { revision, .. }) => {
                Ok(Response::LeaseRevoked { revision })
            }
            Ok(WriteOutcome::SessionRegistered { client_id }) => {
                Ok(Response::SessionRegistered { client_id })
            }
            Err(e) => Err(e),
        }
    }

    fn apply_conf_change(
        &mut self,
        index: u64,
        cc: Option<(Vec<u8>, ConfChangeV2)>,
    ) -> Result<Response, Error> {
        self.sm.skip(index);
        let Some((context, cc)) = cc else {
            return Err(InvalidArgument::Membership("undecodable change").into());
        };
        let Ok(cs) = self.raw.apply_conf_change(&cc) else {
            return Err(InvalidArgument::Membership("change refused by raft").into());
        };
        self.sm.set_conf(Conf::from_raft(&cs));
        for change in cc.get_changes() {
            let node = change.node_id;
            match change.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Ok(info) = MemberInfo::decode(&context) {
                        if info.id == node {
                            self.sm.members_mut().insert(node, info);
                        }
                    }
                    if node == self.config.id && self.membership.is_removed() {
                        // A leader added it back (under the same Raft id) before it heard that
                        // this node was leaving. It serves as a member again until that leader,
                        // hearing it is leaving, removes it for good. It does not take the
                        // leave back: that news would race the leader's view again, and the
                        // two could go on adding and removing it.
                        self.membership.set_readded();
                    }
                }
                ConfChangeType::RemoveNode => {
                    self.sm.members_mut().remove(&node);
                    if node == self.config.id {
                        self.membership.set_removed();
                        // Out for good, even if a leader that has not heard this yet adds it
                        // back under the same id (it then serves until removed again).
                        self.announce_leaving();
                        self.push_event(Event::Removed);
                        // A node can become leader while its own removal is in its log and
                        // then apply it as leader. raft-rs keeps it Leader with no progress
                        // entry for itself (its next commit attempt panics) and, while a
                        // quorum of the new configuration answers its heartbeats, nobody
                        // else is elected. Step down; it is not promotable any more, so it
                        // never campaigns again.
                        if self.raw.raft.state == StateRole::Leader {
                            let term = self.raw.raft.term;
                            self.raw.raft.become_follower(term, raft::INVALID_ID);
                        }
                    }
                }
            }
        }
        self.membership.retain_members(&self.sm.conf().all_ids());
        self.push_event(Event::MembershipChanged);
        if self.membership.is_removed() {
            self.fail_everything(Unavailable::Removed);
        }
        Ok(Response::Membership { index })
    }

    /// Answers the proposal waiting at this entry's index, if this node made one.
    fn finish_write(&mut self, e: &Entry, outcome: Result<Response, Error>) {
        let Some(w) = self.writes.take(e.index) else { return };
        let ours = w.is_entry(e);
        if ours {
            self.stats.proposals_committed += 1;
        } else {
            self.stats.proposals_dropped += 1;
        }
        let result = if !ours {
            Err(Unavailable::Dropped.into())
        } else if w.kind == WriteKind::Membership {
            outcome.map(|_| Response::Membership { index: e.index })
        } else {
            outcome
        };
        // A membership change is answered once this node's durable commit index covers it.
        // Its caller may then shut a removed node down at once; had this node crashed with
        // the change in its log but an older commit index on disk, it would restart in the
        // old configuration and could need the removed node's vote to make progress (voters
        // {a, b} minus b, then a restarts: only b could elect it).
        if w.kind == WriteKind::Membership
            && result.is_ok()
            && e.index > self.persist.durable_commit()
        {
            self.persist.hold_reply(e.index, w.id, result);
            return;
        }
        self.reply(w.id, result);
    }

    /// Fails every waiting request: writes as indeterminate, reads with `why`.
    fn fail_everything(&mut self, why: Unavailable) {
        for w in self.writes.take_all() {
            self.stats.proposals_dropped += 1;
            self.reply(w.id, Err(Error::Indeterminate));
        }
        for id in self.reads.drain_all() {
            self.reply(id, Err(why.into()));
        }
    }

    /// Keeps the in-memory log within its budget (see `log_trim`) and takes a snapshot
    /// (compacting the log on disk) once enough entries or bytes were applied since the last,
    /// or when raft-rs needed one to catch a follower up.
    fn maybe_snapshot(&mut self) {
        self.trim_log();
        let applied = self.sm.applied_index();
        let store = self.raw.store();
        let last_snapshot = store.snapshot_index();
        let wanted = store.take_snapshot_wanted();
        // The entry count alone would make snapshots of a large state cost many times the log
        // they replace (see `Config::max_snapshot_bytes_per_log_byte`).
        let log_pays_for_snapshot = self
            .applied_bytes_since_snapshot
            .saturating_mul(self.config.max_snapshot_bytes_per_log_byte)
            >= self.sm.state_bytes();
        let due = (applied.saturating_sub(last_snapshot) >= self.config.snapshot_threshold_entries
            && log_pays_for_snapshot)
            || self.applied_bytes_since_snapshot >= self.config.snapshot_threshold_bytes
            || wanted;
        if applied <= last_snapshot || !due {
            return;
        }
        if self.snapshot_in_flight.is_some() {
            return;
        }
        let Ok(term) = store.term(applied) else { return };
        // Copy-on-write clones: O(1) here; the shell writes the file off the driver, and the
        // disk gets the image with the reference once that file is durable.
        let image = SnapshotImage { index: applied, term, state: self.sm.clone() };
        self.snapshot_job = Some(image.to_job());
        self.snapshot_in_flight = Some(image);
        self.applied_bytes_since_snapshot = 0;
    }

    /// Uses the snapshot `image`, whose durable file `reference` names: followers behind the
    /// log get it from now on, and the log it covers is compacted, in the batch that stores the
    /// reference (see [`PersistBatch`]: the snapshot is durable before the log goes).
    pub(super) fn finish_snapshot(&mut self, reference: SnapshotRef, image: SnapshotImage) {
        let (index, term) = (reference.index, reference.term);
        let store = self.raw.store();
        // A newer snapshot (installed from the leader) already covers this one.
        if index <= store.snapshot_index() || store.term(index).ok() != Some(term) {
            return;
        }
        let (_, low_water) = self.log_budget_with_unapplied();
        let snapshot = raft_snapshot(&reference, image.state.conf());
        let keep_from = index.saturating_sub(self.config.log_keep_entries);
        let store = self.raw.mut_store();
        store.set_snapshot(snapshot);
        store.compact_to(keep_from);
        store.compact_to_fit(low_water, index);
        // Memory may have dropped entries past the previous snapshot, never past this one
        // (see `log_trim`): the disk now drops the same.
        let compact_to = (store.first_index() - 1).min(index);
        self.stats.snapshots_taken += 1;
        self.stats.snapshots_taken_bytes += reference.len_bytes;
        let batch = PersistBatch {
            snapshot: Some(SnapshotRecord { reference, image, write_file: false }),
            compact_to: Some(compact_to),
            // Synced, so that the file it replaces can go (the disk deletes older snapshot
            // files only once a newer reference is durable).
            must_sync: true,
            ..PersistBatch::default()
        };
        self.enqueue_persist(None, batch, Vec::new());
    }

    /// Notices term / role / leader changes: emits an event, re-draws the election jitter,
    /// and retries read rounds of the old term.
    fn observe(&mut self) {
        let raft = &self.raw.raft;
        let now = (raft.term, Role::from(raft.state), raft.leader_id);
        if now == self.observed {
            return;
        }
        let term_changed = now.0 != self.observed.0;
        if now.2 != 0 && now.2 != self.observed.2 {
            self.stats.leader_changes += 1;
        }
        // A candidate, or a leader, of a term newer than the last one seen started an election
        // in it (a lone voter goes from follower to leader within one Ready).
        if term_changed && matches!(now.1, Role::Candidate | Role::Leader) {
            self.stats.elections_started += 1;
        }
        let became_leader =
            now.1 == Role::Leader && (term_changed || self.observed.1 != Role::Leader);
        self.observed = now;
        self.on_lease_role(became_leader);
        self.jitter_ticks_left = self.rng.below(self.config.election_ticks as u64);
        if term_changed {
            self.reads.on_term_change(now.0);
        }
        self.push_event(Event::RoleChanged {
            role: now.1,
            term: now.0,
            leader: (now.2 != 0).then_some(now.2),
        });
    }
}
