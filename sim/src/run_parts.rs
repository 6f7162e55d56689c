//! Pieces both runners (the operator-driven swarm in [`crate::run`] and the gossip swarm in
//! [`crate::gossip_run`]) share: the queue of scheduled fault undos, the fresh write-and-read
//! round after healing, and the final reads that put the last state into the history.

use std::collections::BTreeMap;

use mokv_core::NodeId;

use crate::cluster::Cluster;
use crate::history::{History, Observed, OpKind, Outcome};
use crate::workload::{Client, Problems, KEYS};

/// A scheduled undo of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Undo {
    Heal,
    Restart(NodeId),
    Resume(NodeId),
}

/// Undos by (due tick, scheduling order): fired in that order, so a seed replays exactly.
#[derive(Debug, Default)]
pub(crate) struct UndoQueue {
    due: BTreeMap<(u64, u64), Undo>,
    seq: u64,
}

impl UndoQueue {
    /// Schedules `u` at least one tick after `now`.
    pub(crate) fn schedule(&mut self, now: u64, after: u64, u: Undo) {
        self.seq += 1;
        self.due.insert((now + after.max(1), self.seq), u);
    }

    /// The next undo due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Undo> {
        let (&key, &u) = self.due.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.due.remove(&key);
        Some(u)
    }

    pub(crate) fn contains(&self, u: Undo) -> bool {
        self.due.values().any(|v| *v == u)
    }

    /// Everything still pending, in due order (the queue is left empty).
    pub(crate) fn take_all(&mut self) -> Vec<Undo> {
        std::mem::take(&mut self.due).into_values().collect()
    }
}

/// Starts one op per client: a fresh write (`write`) or a linearizable read of its key.
pub(crate) fn start_fresh_round(
    write: bool,
    clients: &mut [Client],
    c: &Cluster,
    history: &mut History,
    next_value: &mut u64,
) {
    for (i, client) in clients.iter_mut().enumerate() {
        let key = KEYS[i % KEYS.len()].into();
        let kind = if write {
            *next_value += 1;
            OpKind::Set { key, value: *next_value }
        } else {
            OpKind::Get { key, linearizable: true }
        };
        client.start(kind, c, history);
    }
}

/// The liveness violation if some client's fresh op did not finish within `ticks`.
pub(crate) fn fresh_round_unfinished(
    write: bool,
    clients: &[Client],
    ticks: u64,
) -> Option<String> {
    clients.iter().find(|c| !c.is_idle()).map(|cl| {
        format!(
            "liveness: fresh {} by client {} did not finish within {ticks} ticks",
            if write { "write" } else { "read" },
            cl.id
        )
    })
}

/// The liveness violation if a node has held a request unanswered for longer than its request
/// timeout allows (the core answers everything within `request_timeout_ticks`, with an error
/// at worst; a margin covers the tick the timeout is noticed on).
pub(crate) fn unanswered_request(c: &Cluster, request_timeout_ticks: u64) -> Option<String> {
    let bound = request_timeout_ticks + 20;
    c.unanswered_for(bound).map(|(id, node, at)| {
        format!(
            "liveness: n{node} never answered request {id} (handed to it at tick {at}, now {})",
            c.now()
        )
    })
}

/// Acknowledged writes are never lost: the final state of each key (read from the leader after
/// quiescence) joins the history as a last linearizable read; and every node of `ids` in the
/// leader's configuration has applied (nearly) as far as the most advanced one.
///
/// The leader's configuration, not a node's own, says who must catch up: the leader stops
/// replicating to a node the moment it appends that node's removal, so a removed node learns of
/// its removal only if it received and durably committed that entry. Cut off during the
/// removal, or restarted after losing its commit index, it still lists itself as a member and
/// never advances; Raft expects that (pre-vote and check-quorum keep it from disrupting), and
/// whoever removed it is the one to shut it down.
pub(crate) fn final_reads(
    c: &Cluster,
    ids: &[NodeId],
    history: &mut History,
    problems: &mut Problems,
) {
    let Some(leader) = c.leader() else { return };
    let now = c.now();
    for key in KEYS {
        let observed = c.node(leader).and_then(|n| {
            n.state().get(key).map(|v| Observed {
                value: crate::history::decode_value(&v.value).unwrap_or(u64::MAX),
                mod_index: v.mod_index,
            })
        });
        let op = history.invoke(0, OpKind::Get { key: key.into(), linearizable: true }, now);
        history.complete(op, Outcome::Read(observed), now, Some(leader));
    }
    let Some(conf) = c.node(leader).map(|n| n.status().conf) else { return };
    let members = conf.all_ids();
    let applied: Vec<(NodeId, u64)> = ids
        .iter()
        .filter(|id| members.contains(id))
        .filter_map(|&id| Some((id, c.node(id)?.status().applied_index)))
        .collect();
    if let Some(max) = applied.iter().map(|(_, a)| *a).max() {
        for (id, a) in &applied {
            if *a + 2 < max {
                problems.push(format!(
                    "after quiescence n{id} applied {a}, the most advanced node {max}"
                ));
            }
        }
    }
}
