//! Clients and an operator, driving a [`Cluster`] the way real ones would: one request at a
//! time per client, routed to the leader they know (following `NotLeader` hints), retried
//! with the same session seq, with client-side timeouts in ticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mokv_core::RangeQuery;
use mokv_core::SessionError;
use mokv_core::SessionRef;
use mokv_core::{Compare, Condition, Txn, TxnOp, TxnOpResult};
use mokv_core::{
    Consistency, Error, InvalidArgument, NodeId, Reply, Request, RequestId, Response, Rng,
    Unavailable,
};

use crate::cluster::Cluster;
use crate::history::{
    decode_value, encode_value, History, Observed, OpKind, Outcome, TxnStep, ValueId,
};
use crate::violation::WorkloadProblem;

/// The workload's key space: small, so operations conflict often.
pub const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];

/// The key groups transactions span (each transaction stays within one): the linearizability
/// checker models each group as one map, so a group is its unit of search.
pub const TXN_GROUPS: [&[&str]; 3] = [&["k0", "k1"], &["k2", "k3"], &["k4"]];

/// Knobs of the workload, drawn per seed.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadKnobs {
    pub reply_loss_permille: u64,
    pub follower_read_permille: u64,
    pub client_timeout_ticks: u64,
    /// Print every attempt and answer (the readable trace).
    pub trace: bool,
    /// Draw compare-and-swaps and transactions besides plain writes and reads.
    pub coordination_ops: bool,
}

/// How the run is going, as far as clients are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Faults fire; clients start new operations and may give up on old ones.
    Faults,
    /// Faults are over: no new operations, no giving up; every outstanding one must finish.
    Drain,
}

#[derive(Debug)]
struct Attempt {
    rid: RequestId,
    node: NodeId,
    deadline: u64,
}

#[derive(Debug)]
struct Current {
    op: usize,
    request: Request,
    /// A write waiting for its session to be registered: attempts send the registration.
    registering: bool,
    attempt: Option<Attempt>,
    /// Attempts whose outcome the client cannot know (timeouts, lost replies, Indeterminate).
    unknown: u32,
}

/// One client with its session.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    /// The identity its sessions are registered under (a certificate's name in a real shell).
    owner: String,
    /// The registered session, once a registration was answered.
    session_id: Option<u64>,
    seq: u64,
    current: Option<Current>,
    leader: Option<NodeId>,
    next_at: u64,
    /// The value this client last saw or wrote per key (`None`: absent), which its
    /// compare-and-swaps and transactions expect.
    seen: BTreeMap<String, Option<ValueId>>,
}

/// What the workload noticed that is wrong in itself (not a history property).
pub type Problems = Vec<WorkloadProblem>;

impl Client {
    pub fn new(id: u64) -> Self {
        Client {
            id,
            owner: format!("client-{id}"),
            session_id: None,
            seq: 0,
            current: None,
            leader: None,
            next_at: 0,
            seen: BTreeMap::new(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// The history index of the outstanding operation.
    pub fn outstanding(&self) -> Option<usize> {
        self.current.as_ref().map(|c| c.op)
    }

    /// Starts `kind` now (the caller checked the client is idle).
    pub fn start(&mut self, mut kind: OpKind, cluster: &Cluster, history: &mut History) {
        self.expect_what_was_seen(&mut kind);
        let request = match &kind {
            OpKind::Set { key, value } => {
                self.seq += 1;
                Request::Set {
                    key: key.clone(),
                    value: encode_value(*value),
                    session: Some(self.session()),
                }
            }
            OpKind::Delete { key } => {
                self.seq += 1;
                Request::Delete { key: key.clone(), session: Some(self.session()) }
            }
            OpKind::Get { key, linearizable } => {
                Request::Get { key: key.clone(), consistency: consistency(*linearizable) }
            }
            OpKind::Range { linearizable } => Request::Range {
                query: RangeQuery { prefix: "k".into(), ..RangeQuery::default() },
                consistency: consistency(*linearizable),
            },
            OpKind::Cas { key, expect, value } => {
                self.seq += 1;
                let condition = condition(*expect);
                let session = Some(self.session());
                match value {
                    Some(v) => Request::SetIf {
                        key: key.clone(),
                        value: encode_value(*v),
                        condition,
                        session,
                    },
                    None => Request::DeleteIf { key: key.clone(), condition, session },
                }
            }
            OpKind::Txn { compares, success, failure } => {
                self.seq += 1;
                let steps = |steps: &[TxnStep]| -> Vec<TxnOp> {
                    steps
                        .iter()
                        .map(|s| match s {
                            TxnStep::Set(k, v) => {
                                TxnOp::Set { key: k.clone(), value: encode_value(*v) }
                            }
                            TxnStep::Delete(k) => TxnOp::Delete { key: k.clone() },
                            TxnStep::Get(k) => TxnOp::Get { key: k.clone() },
                        })
                        .collect()
                };
                let txn = Txn {
                    compares: compares
                        .iter()
                        .map(|(k, e)| Compare { key: k.clone(), condition: condition(*e) })
                        .collect(),
                    success: steps(success),
                    failure: steps(failure),
                };
                Request::Txn { txn, session: Some(self.session()) }
            }
        };
        let registering = kind.is_write() && self.session_id.is_none();
        let op = history.invoke(self.id, kind, cluster.now());
        self.current = Some(Current { op, request, registering, attempt: None, unknown: 0 });
    }

    /// Compare-and-swaps and transactions expect what this client saw last (so that they
    /// succeed often enough to matter).
    fn expect_what_was_seen(&self, kind: &mut OpKind) {
        let seen = |k: &str| self.seen.get(k).copied().flatten();
        match kind {
            OpKind::Cas { key, expect, .. } => *expect = seen(key),
            OpKind::Txn { compares, .. } => {
                for (k, e) in compares {
                    *e = seen(k);
                }
            }
            _ => {}
        }
    }

    /// Remembers what a completed operation showed of each key.
    fn remember(&mut self, kind: &OpKind, outcome: &Outcome) {
        match (kind, outcome) {
            (OpKind::Set { key, value }, Outcome::Written { .. }) => {
                self.seen.insert(key.clone(), Some(*value));
            }
            (OpKind::Delete { key }, Outcome::Written { .. }) => {
                self.seen.insert(key.clone(), None);
            }
            (OpKind::Cas { key, value, .. }, Outcome::Written { .. }) => {
                self.seen.insert(key.clone(), *value);
            }
            (OpKind::Get { key, .. }, Outcome::Read(o)) => {
                self.seen.insert(key.clone(), o.map(|o| o.value));
            }
            (OpKind::Range { .. }, Outcome::Ranged(items)) => {
                for key in KEYS {
                    let o = items.iter().find(|(k, _)| k == key).map(|(_, o)| o.value);
                    self.seen.insert(key.to_string(), o);
                }
            }
            (OpKind::Txn { success, failure, .. }, Outcome::TxnDone { succeeded, reads, .. }) => {
                let steps = if *succeeded { success } else { failure };
                let mut reads = reads.iter().flatten();
                for s in steps {
                    match s {
                        TxnStep::Set(k, v) => {
                            self.seen.insert(k.clone(), Some(*v));
                        }
                        TxnStep::Delete(k) => {
                            self.seen.insert(k.clone(), None);
                        }
                        TxnStep::Get(k) => {
                            if let Some(o) = reads.next() {
                                self.seen.insert(k.clone(), o.map(|o| o.value));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The session of the write being started (client id 0 until registered: the request
    /// is rebuilt once it is).
    fn session(&self) -> SessionRef {
        // One request outstanding at a time: everything below `seq` was answered or given up.
        SessionRef {
            owner: self.owner.clone(),
            client_id: self.session_id.unwrap_or(0),
            seq: self.seq,
            first_unacked_seq: self.seq,
        }
    }

    /// One tick of the client: look at its reply, time out, retry, or give up.
    #[allow(clippy::too_many_arguments)]
    pub fn poll(
        &mut self,
        cluster: &mut Cluster,
        history: &mut History,
        rng: &mut Rng,
        knobs: &WorkloadKnobs,
        nodes: &[NodeId],
        phase: Phase,
        problems: &mut Problems,
    ) {
        let now = cluster.now();
        let Some(cur) = self.current.as_mut() else { return };
        let is_write = history.ops[cur.op].kind.is_write();
        if let Some(a) = &cur.attempt {
            let (node, rid) = (a.node, a.rid);
            if let Some(reply) = cluster.reply(rid).cloned() {
                if knobs.trace {
                    println!("t={now} c{} <- n{node} #{} {:?}", self.id, cur.op, reply.result);
                }
                cur.attempt = None;
                let op = cur.op;
                self.on_reply(reply, node, cluster, history, rng, knobs, problems);
                if history.ops[op].complete.is_some() {
                    history.ops[op].node_incarnation = cluster.reply_incarnation(rid);
                }
            } else if now >= a.deadline {
                if knobs.trace {
                    println!("t={now} c{} x  n{node} #{} client timeout", self.id, cur.op);
                }
                cur.attempt = None;
                if is_write && !cur.registering {
                    cur.unknown += 1;
                }
                self.leader = None;
                self.next_at = now + rng.below(3);
            }
            return;
        }
        if now < self.next_at {
            return;
        }
        // Give up on a write after a few unknown outcomes (only while faults last).
        let age = now - history.ops[cur.op].invoke_tick;
        if phase == Phase::Faults && (cur.unknown >= 4 || age > 500) {
            let outcome = if is_write { Outcome::MaybeApplied } else { Outcome::ReadFailed };
            if knobs.trace {
                println!("t={now} c{} gives up #{}: {outcome:?}", self.id, cur.op);
            }
            history.complete(cur.op, outcome, now, None);
            self.current = None;
            self.next_at = now + rng.below(10);
            return;
        }
        let node = pick_node(self.leader, &cur.request, rng, knobs, nodes);
        let request = if cur.registering {
            Request::RegisterSession { owner: self.owner.clone() }
        } else {
            cur.request.clone()
        };
        let rid = cluster.submit(node, request);
        if knobs.trace {
            println!("t={now} c{} -> n{node} #{} {:?}", self.id, cur.op, cur.request);
        }
        if !cur.registering {
            history.ops[cur.op].attempts += 1;
        }
        cur.attempt = Some(Attempt { rid, node, deadline: now + knobs.client_timeout_ticks });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_reply(
        &mut self,
        reply: Reply,
        node: NodeId,
        cluster: &Cluster,
        history: &mut History,
        rng: &mut Rng,
        knobs: &WorkloadKnobs,
        problems: &mut Problems,
    ) {
        let now = cluster.now();
        let Some(cur) = self.current.as_mut() else { return };
        let op = cur.op;
        let retry_at = |rng: &mut Rng| now + 1 + rng.below(8);
        match reply.result {
            Ok(Response::SessionRegistered { client_id }) if cur.registering => {
                // The write goes on as the first of the new session, to the same node.
                cur.registering = false;
                self.session_id = Some(client_id);
                self.seq = 1;
                let session = self.session();
                if let Some(cur) = self.current.as_mut() {
                    set_session(&mut cur.request, session);
                }
                self.leader = Some(node);
                self.next_at = now;
            }
            Ok(resp) => {
                let lost = matches!(
                    resp,
                    Response::Set { .. }
                        | Response::Delete { .. }
                        | Response::ConditionFailed { .. }
                        | Response::Txn(_)
                ) && rng.below(1000) < knobs.reply_loss_permille;
                if lost {
                    // The answer is lost on the way back: the client retries.
                    cur.unknown += 1;
                    self.next_at = retry_at(rng);
                    return;
                }
                let outcome = match resp {
                    Response::ConditionFailed { revision, .. } => Outcome::CasFailed { revision },
                    Response::Txn(t) => {
                        let reads = t.results.map(|results| {
                            results
                                .into_iter()
                                .filter_map(|r| match r {
                                    TxnOpResult::Get(v) => Some(v.and_then(|v| {
                                        observe(&v.value, v.mod_index, problems, op)
                                    })),
                                    _ => None,
                                })
                                .collect()
                        });
                        Outcome::TxnDone { succeeded: t.succeeded, revision: t.revision, reads }
                    }
                    Response::Set { revision } | Response::Delete { revision, .. } => {
                        Outcome::Written { revision }
                    }
                    Response::Get(v) => {
                        Outcome::Read(v.and_then(|v| observe(&v.value, v.mod_index, problems, op)))
                    }
                    Response::Range(page) => {
                        if !page.next_page_token.is_empty() {
                            problems.push(WorkloadProblem::RangeNeedsTwoPages { op });
                        }
                        Outcome::Ranged(
                            page.items
                                .into_iter()
                                .filter_map(|i| {
                                    observe(&i.value, i.mod_index, problems, op).map(|o| (i.key, o))
                                })
                                .collect(),
                        )
                    }
                    other => {
                        problems.push(WorkloadProblem::UnexpectedResponse { op, response: other });
                        Outcome::ReadFailed
                    }
                };
                if matches!(
                    outcome,
                    Outcome::Written { .. } | Outcome::CasFailed { .. } | Outcome::TxnDone { .. }
                ) {
                    self.leader = Some(node);
                }
                self.remember(&history.ops[op].kind, &outcome);
                history.complete(op, outcome, now, Some(node));
                self.current = None;
                self.next_at = now + rng.below(6);
            }
            Err(Error::NotLeader { leader }) => {
                self.leader = leader.map(|h| h.id);
                self.next_at = now + if self.leader.is_some() { 0 } else { 1 + rng.below(5) };
            }
            Err(Error::Unavailable(u)) => {
                if matches!(u, Unavailable::LeadershipTransfer | Unavailable::Removed) {
                    self.leader = None;
                }
                self.next_at = retry_at(rng);
            }
            Err(Error::Indeterminate) => {
                cur.unknown += 1;
                self.next_at = retry_at(rng);
            }
            Err(Error::Session(SessionError::ResultDiscarded)) => {
                history.complete(op, Outcome::MaybeApplied, now, Some(node));
                self.current = None;
            }
            Err(Error::Session(SessionError::Unknown | SessionError::Expired)) => {
                // The session is gone: the write was not applied by this attempt, but an
                // earlier one may have been. The next write registers a fresh session.
                history.complete(op, Outcome::MaybeApplied, now, Some(node));
                self.current = None;
                self.session_id = None;
                self.seq = 0;
            }
            Err(e) => {
                problems.push(WorkloadProblem::Misuse { op, error: e });
                let outcome = if history.ops[op].kind.is_write() {
                    Outcome::MaybeApplied
                } else {
                    Outcome::ReadFailed
                };
                history.complete(op, outcome, now, Some(node));
                self.current = None;
            }
        }
    }
}

/// Puts `session` into a write request.
fn set_session(request: &mut Request, s: SessionRef) {
    match request {
        Request::Set { session, .. }
        | Request::Delete { session, .. }
        | Request::SetIf { session, .. }
        | Request::DeleteIf { session, .. }
        | Request::Txn { session, .. } => *session = Some(s),
        _ => {}
    }
}

fn pick_node(
    leader: Option<NodeId>,
    request: &Request,
    rng: &mut Rng,
    knobs: &WorkloadKnobs,
    nodes: &[NodeId],
) -> NodeId {
    let random = nodes[rng.below(nodes.len() as u64) as usize];
    let anywhere = match request {
        Request::Get { consistency: Consistency::Serializable, .. }
        | Request::Range { consistency: Consistency::Serializable, .. } => true,
        Request::Get { .. } | Request::Range { .. } => {
            rng.below(1000) < knobs.follower_read_permille
        }
        _ => false,
    };
    if anywhere {
        return random;
    }
    leader.filter(|l| nodes.contains(l)).unwrap_or(random)
}

fn consistency(linearizable: bool) -> Consistency {
    if linearizable {
        Consistency::Linearizable
    } else {
        Consistency::Serializable
    }
}

fn observe(value: &[u8], mod_index: u64, problems: &mut Problems, op: usize) -> Option<Observed> {
    match decode_value(value) {
        Some(value) => Some(Observed { value, mod_index }),
        None => {
            problems.push(WorkloadProblem::UnknownValue { op, bytes: value.to_vec() });
            None
        }
    }
}

/// The condition "the key holds this value" (`None`: absent).
fn condition(expect: Option<ValueId>) -> Condition {
    match expect {
        Some(v) => Condition::ValueEquals(encode_value(v)),
        None => Condition::Absent,
    }
}

/// Draws the next operation of a client. Compare-and-swaps and transactions are drawn with
/// no expectation; [`Client::start`] fills in what that client saw last.
pub fn draw_op(rng: &mut Rng, next_value: &mut u64, coordination_ops: bool) -> OpKind {
    let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_string();
    let mut fresh = || {
        *next_value += 1;
        *next_value
    };
    match if coordination_ops { rng.below(100) } else { 100 } {
        0..=7 => {
            let value = if rng.below(4) == 0 { None } else { Some(fresh()) };
            return OpKind::Cas { key, expect: None, value };
        }
        8..=14 => {
            let group = TXN_GROUPS[rng.below(2) as usize];
            let (a, b) = (group[0].to_string(), group[1].to_string());
            let compares = vec![(a.clone(), None), (b.clone(), None)];
            let success = match rng.below(10) {
                0..=6 => vec![TxnStep::Set(a.clone(), fresh()), TxnStep::Set(b.clone(), fresh())],
                7 => vec![TxnStep::Delete(a.clone()), TxnStep::Set(b.clone(), fresh())],
                _ => vec![
                    TxnStep::Get(a.clone()),
                    TxnStep::Set(b.clone(), fresh()),
                    TxnStep::Get(b.clone()),
                ],
            };
            let failure = vec![TxnStep::Get(a), TxnStep::Get(b)];
            return OpKind::Txn { compares, success, failure };
        }
        _ => {}
    }
    match rng.below(100) {
        0..=39 => {
            *next_value += 1;
            OpKind::Set { key, value: *next_value }
        }
        40..=49 => OpKind::Delete { key },
        50..=74 => OpKind::Get { key, linearizable: true },
        75..=84 => OpKind::Get { key, linearizable: false },
        85..=94 => OpKind::Range { linearizable: true },
        _ => OpKind::Range { linearizable: false },
    }
}

/// A membership change the operator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add(NodeId),
    Remove(NodeId),
}

#[derive(Debug)]
struct AdminCurrent {
    change: Change,
    started: u64,
    attempt: Option<Attempt>,
}

/// The operator: applies membership changes one at a time, retrying like a client, and shuts
/// a node down once its removal is acknowledged.
#[derive(Debug, Default)]
pub struct Admin {
    queue: VecDeque<Change>,
    current: Option<AdminCurrent>,
    leader: Option<NodeId>,
    next_at: u64,
    /// Nodes removed from the cluster and shut down.
    pub retired: BTreeSet<NodeId>,
    /// (tick, description) of finished changes, for the trace.
    pub log: Vec<(u64, String)>,
}

impl Admin {
    pub fn busy(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    pub fn enqueue(&mut self, change: Change) {
        self.queue.push_back(change);
    }

    pub fn poll(&mut self, cluster: &mut Cluster, rng: &mut Rng, nodes: &[NodeId]) {
        let now = cluster.now();
        if self.current.is_none() {
            let Some(change) = self.queue.pop_front() else { return };
            if let Change::Add(id) = change {
                cluster.add_node(id);
            }
            self.current = Some(AdminCurrent { change, started: now, attempt: None });
        }
        let Some(cur) = self.current.as_mut() else { return };
        if let Some(a) = &cur.attempt {
            let reply = cluster.reply(a.rid).cloned();
            let timed_out = now >= a.deadline;
            if reply.is_none() && !timed_out {
                return;
            }
            cur.attempt = None;
            let change = cur.change;
            let done = match reply.map(|r| r.result) {
                Some(Ok(_)) => Some("done"),
                // The leader checks a removal against its applied configuration with no
                // change pending: "not a member" means an earlier attempt already removed it.
                Some(Err(Error::InvalidArgument(InvalidArgument::Membership(
                    "node is not a member",
                )))) if matches!(change, Change::Remove(_)) => Some("already done"),
                Some(Err(Error::InvalidArgument(_))) => Some("refused (already done?)"),
                Some(Err(Error::NotLeader { leader })) => {
                    self.leader = leader.map(|h| h.id);
                    None
                }
                Some(Err(_)) | None => {
                    self.leader = None;
                    self.next_at = now + 1 + rng.below(10);
                    None
                }
            };
            if let Some(how) = done {
                self.finish(cluster, change, how);
            } else if now - cur.started > 1500 {
                self.log.push((now, format!("{change:?} abandoned")));
                self.current = None;
            }
            return;
        }
        if now < self.next_at {
            return;
        }
        let request = match cur.change {
            Change::Add(id) => Request::AddLearner { info: cluster.member_info(id) },
            Change::Remove(id) => Request::Remove { id },
        };
        let random = nodes[rng.below(nodes.len() as u64) as usize];
        let node = self.leader.filter(|l| nodes.contains(l)).unwrap_or(random);
        let rid = cluster.submit(node, request);
        cur.attempt = Some(Attempt { rid, node, deadline: now + 60 });
    }

    fn finish(&mut self, cluster: &mut Cluster, change: Change, how: &str) {
        let now = cluster.now();
        self.log.push((now, format!("{change:?} {how}")));
        if let Change::Remove(id) = change {
            // Whether this ack or an earlier attempt removed it, it is out: shut it down.
            let gone = how == "done"
                || how == "already done"
                || cluster
                    .leader()
                    .and_then(|l| cluster.node(l))
                    .is_some_and(|n| !n.status().conf.all_ids().contains(&id));
            if gone {
                cluster.crash(id);
                self.retired.insert(id);
            }
        }
        self.current = None;
    }
}
