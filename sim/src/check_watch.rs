//! Watchers in the workload, and the check of what they saw against the committed history.
//!
//! **The reference.** Every tick, after the cluster stepped, [`Watches::poll`] takes from every
//! live node the events its core recorded since the last look (`Node::watch_history`) and
//! merges them into one map by revision. Every committed entry is applied from the log by at
//! least one node (whoever first snapshots it applied it), so the union is the complete
//! committed change log; two nodes that recorded the same revision must agree on it exactly.
//! At the end, the reference is tied to the clients' history: an acknowledged `Set` at
//! revision `r` is exactly one `PUT` of its key and value at `r`, an acknowledged `Delete` at
//! `r` is a `DELETE` of its key or nothing (the key was absent).
//!
//! **The watchers.** A few watchers (a key or a prefix of the workload's key space) follow the
//! cluster the way the shell's watch service does: a cursor (the next revision), pages from
//! the serving node's history (`WatchHistory::page`), and on a crash of that node or a random
//! failover, a resume from the cursor on another node. A node that answers `Compacted` makes
//! the watcher try another; when every live node does, the watcher ends its segment there and
//! starts a new one from "now" (a client would be told and start over). Each segment
//! `[start, end)` must equal the reference's matching events in that range: complete, in order,
//! no duplicates.
//!
//! Watchers only read the nodes' state and draw from their own RNG stream, so adding them
//! changes neither the cluster's behaviour nor any recorded seed's trace.

use std::collections::BTreeMap;
use std::fmt;

use mokv_core::{Compacted, KeyFilter, NodeId, Rng, WatchEvent, WatchEventKind};

use crate::cluster::Cluster;
use crate::history::{encode_value, History, OpKind, Outcome};

/// Mixed into the run's seed for the watchers' own RNG stream.
const WATCH_RNG_SALT: u64 = 0x7761_7463_6865_7273;
/// A watcher moves to another node about once in this many polls.
const FAILOVER_ONE_IN: u64 = 150;

/// What a watcher saw wrong (or the reference itself).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchViolation {
    /// Two nodes recorded different changes at one revision.
    ReplicasDisagree { revision: u64, first: NodeId, second: NodeId },
    /// An acknowledged write is not the change recorded at its revision.
    WriteNotInChanges { op: usize, revision: u64 },
    /// A watcher's segment differs from the committed changes at `revision` (the first
    /// difference): an event missing, repeated, out of order or never committed.
    WrongEvents {
        watcher: usize,
        segment_start: u64,
        revision: u64,
        expected: Option<(u64, String)>,
        got: Option<(u64, String)>,
    },
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchViolation::ReplicasDisagree { revision, first, second } => write!(
                f,
                "watch: n{first} and n{second} recorded different changes at revision {revision}"
            ),
            WatchViolation::WriteNotInChanges { op, revision } => write!(
                f,
                "watch: acknowledged write #{op} is not the change recorded at revision {revision}"
            ),
            WatchViolation::WrongEvents { watcher, segment_start, revision, expected, got } => {
                write!(
                    f,
                    "watch: watcher {watcher} (from revision {segment_start}) at revision \
                     {revision}: expected {expected:?}, got {got:?}"
                )
            }
        }
    }
}

/// One stretch of a watcher's stream: from `start` to its cursor, on any number of nodes.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    /// The cursor when the segment ended (or now).
    end: u64,
    events: Vec<WatchEvent>,
}

#[derive(Debug)]
struct Watcher {
    filter: KeyFilter,
    node: NodeId,
    /// `None`: not started; the next poll starts at the serving node's "now".
    cursor: Option<u64>,
    /// Bytes per page (small ones make the watcher lag and page through history).
    page_bytes: usize,
    /// Polls once in this many ticks.
    period: u64,
    /// Nodes that answered `Compacted` in a row.
    compacted_in_a_row: usize,
    segments: Vec<Segment>,
}

/// The reference change log and the watchers (see the module documentation).
#[derive(Debug)]
pub struct Watches {
    rng: Rng,
    /// Every committed change by revision, and the node that first recorded it.
    reference: BTreeMap<u64, (NodeId, Vec<WatchEvent>)>,
    /// Per node: the revisions up to here were taken into the reference.
    taken: BTreeMap<NodeId, u64>,
    watchers: Vec<Watcher>,
    violations: Vec<WatchViolation>,
    /// Segments ended because every node answered `Compacted`.
    pub restarts: u64,
    /// Times a watcher moved to another node.
    pub failovers: u64,
}

impl Watches {
    /// Watchers for run `seed`: one on every key, one on a prefix, one on a single key.
    pub fn new(seed: u64, nodes: &[NodeId]) -> Self {
        let mut rng = Rng::new(seed ^ WATCH_RNG_SALT);
        let filters = [
            KeyFilter::Prefix(String::new()),
            KeyFilter::Prefix("k".into()),
            KeyFilter::Key(crate::workload::KEYS[0].into()),
        ];
        let watchers = filters
            .into_iter()
            .map(|filter| Watcher {
                filter,
                node: nodes
                    .get(rng.below(nodes.len().max(1) as u64) as usize)
                    .copied()
                    .unwrap_or(1),
                cursor: None,
                page_bytes: [1, 200, 4096][rng.below(3) as usize],
                period: 1 + rng.below(8),
                compacted_in_a_row: 0,
                segments: Vec::new(),
            })
            .collect();
        Self {
            rng,
            reference: BTreeMap::new(),
            taken: BTreeMap::new(),
            watchers,
            violations: Vec::new(),
            restarts: 0,
            failovers: 0,
        }
    }

    /// One tick: take every node's new changes into the reference, then let each watcher read.
    pub fn poll(&mut self, c: &Cluster, nodes: &[NodeId]) {
        self.take_changes(c);
        let now = c.now();
        let live: Vec<NodeId> =
            nodes.iter().copied().filter(|&id| c.is_up(id) && !c.is_paused(id)).collect();
        for w in &mut self.watchers {
            if !now.is_multiple_of(w.period) || live.is_empty() {
                continue;
            }
            let move_away = !live.contains(&w.node)
                || w.compacted_in_a_row > 0
                || self.rng.below(FAILOVER_ONE_IN) == 0;
            if move_away {
                w.node = live[self.rng.below(live.len() as u64) as usize];
                self.failovers += 1;
            }
            let Some(n) = c.node(w.node) else { continue };
            let applied = n.state().applied_index();
            let cursor = *w.cursor.get_or_insert_with(|| {
                w.segments.push(Segment { start: applied + 1, end: applied + 1, events: vec![] });
                applied + 1
            });
            match n.watch_history().page(&w.filter, cursor, w.page_bytes, applied) {
                Ok(page) => {
                    w.compacted_in_a_row = 0;
                    if let Some(seg) = w.segments.last_mut() {
                        seg.events.extend(page.events);
                        seg.end = page.next_revision;
                    }
                    w.cursor = Some(page.next_revision);
                }
                Err(Compacted { .. }) => {
                    w.compacted_in_a_row += 1;
                    if w.compacted_in_a_row >= live.len() {
                        // Everyone compacted past it: a client is told and starts over.
                        w.cursor = None;
                        w.compacted_in_a_row = 0;
                        self.restarts += 1;
                    }
                }
            }
        }
    }

    fn take_changes(&mut self, c: &Cluster) {
        for id in c.ids() {
            let Some(n) = c.node(id) else { continue };
            let applied = n.state().applied_index();
            let taken = self.taken.entry(id).or_insert(0);
            if applied <= *taken {
                continue;
            }
            let mut by_revision: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
            for e in n.watch_history().events_from(*taken + 1) {
                by_revision.entry(e.revision).or_default().push(e.clone());
            }
            *taken = applied;
            for (revision, events) in by_revision {
                match self.reference.get(&revision) {
                    None => {
                        self.reference.insert(revision, (id, events));
                    }
                    Some((first, known)) if *known != events => {
                        self.violations.push(WatchViolation::ReplicasDisagree {
                            revision,
                            first: *first,
                            second: id,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Every finding: the reference against the clients' acknowledged writes, and every
    /// watcher's segments against the reference.
    pub fn check(mut self, history: &History) -> Vec<WatchViolation> {
        for (i, op) in history.ops.iter().enumerate() {
            let Outcome::Written { revision } = op.outcome else { continue };
            let recorded = self.reference.get(&revision).map(|(_, e)| e.as_slice());
            let ok = match (&op.kind, recorded) {
                (OpKind::Set { key, value }, Some([e])) => {
                    e.kind == WatchEventKind::Put
                        && e.key() == key.as_str()
                        && e.value() == encode_value(*value).as_slice()
                }
                (OpKind::Delete { .. }, None) => true,
                (OpKind::Delete { key }, Some([e])) => {
                    e.kind == WatchEventKind::Delete && e.key() == key.as_str()
                }
                // A compare-and-swap acknowledged as written wrote its value (or deleted).
                (OpKind::Cas { key, value: Some(value), .. }, Some([e])) => {
                    e.kind == WatchEventKind::Put
                        && e.key() == key.as_str()
                        && e.value() == encode_value(*value).as_slice()
                }
                (OpKind::Cas { value: None, .. }, None) => true,
                (OpKind::Cas { key, value: None, .. }, Some([e])) => {
                    e.kind == WatchEventKind::Delete && e.key() == key.as_str()
                }
                _ => false,
            };
            if !ok {
                self.violations.push(WatchViolation::WriteNotInChanges { op: i, revision });
            }
        }
        for (watcher, w) in self.watchers.iter().enumerate() {
            for seg in &w.segments {
                let expected: Vec<&WatchEvent> = self
                    .reference
                    .range(seg.start..seg.end)
                    .flat_map(|(_, (_, events))| events)
                    .filter(|e| w.filter.matches(e.key()))
                    .collect();
                let got: Vec<&WatchEvent> = seg.events.iter().collect();
                if expected == got {
                    continue;
                }
                let at = expected.iter().zip(&got).take_while(|(a, b)| a == b).count();
                let brief = |e: Option<&&WatchEvent>| e.map(|e| (e.revision, e.key().to_owned()));
                let revision = expected.get(at).or(got.get(at)).map_or(seg.end, |e| e.revision);
                self.violations.push(WatchViolation::WrongEvents {
                    watcher,
                    segment_start: seg.start,
                    revision,
                    expected: brief(expected.get(at)),
                    got: brief(got.get(at)),
                });
                break;
            }
        }
        self.violations
    }

    /// Events the watchers received in all (for summaries and the self-test).
    pub fn events_seen(&self) -> usize {
        self.watchers.iter().flat_map(|w| &w.segments).map(|s| s.events.len()).sum()
    }
}
