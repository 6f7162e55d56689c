//! Lease holders in the workload, checked as they go.
//!
//! A holder runs one lease at a time through a cycle, the way a lock or a service registration
//! uses one: grant (a TTL of 2–6 s, an id of its own so a retried grant is recognised), attach
//! its own key with a fresh value, then a few keep-alives, time-to-live queries and
//! linearizable reads of that key spaced over a few TTLs, and finally either a revoke or
//! silence until it sees the lease expire; then linearizable reads of the key again.
//!
//! Only the holder writes its key (`l<i>`, outside the clients' key space), so what it reads
//! tells what the lease did. Two properties are checked on every answer:
//!
//! - **No early expiry.** A lease must live at least its TTL past the submission of its grant
//!   and of every keep-alive that was answered (the leader restarts the TTL when it serves the
//!   keep-alive, which is later; a failover restarts it in full, which is later still). Seeing
//!   the lease gone — a keep-alive or time-to-live answered not-found, an attach refused
//!   not-found, or the attached key absent on a linearizable read — in a reply produced before
//!   that point is [`LeaseViolation::ExpiredEarly`].
//! - **Gone means gone.** Once the holder saw the lease gone (revoke answered, or one of the
//!   observations above), a linearizable read submitted afterwards must not return the value
//!   attached to it: [`LeaseViolation::ReadAfterGone`].
//!
//! Holders draw from their own RNG stream, so they never shift the clients' or the faults'
//! draws; their requests do change the cluster's traffic (they are part of the workload).

use std::fmt;

use mokv_core::{Consistency, Error, LeaseError, NodeId, Request, RequestId, Response, Rng};

use crate::cluster::{Cluster, MS_PER_TICK};
use crate::history::{decode_value, encode_value, ValueId};
use crate::workload::Phase;

/// Mixed into the run's seed for the holders' own RNG stream.
const LEASE_RNG_SALT: u64 = 0x6c65_6173_6573_2121;
/// Values the holders write start here, far above the clients' (every value stays unique).
const FIRST_VALUE: ValueId = 1 << 48;
/// Attempts of one request before the holder gives up on it.
const MAX_ATTEMPTS: u32 = 6;
/// Ticks a holder waits for a silent lease to expire before it moves on (no finding: under
/// faults the leader that should expire it may be cut off for long).
const EXPIRY_WAIT_TICKS: u64 = 400;

/// What a lease holder saw wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseViolation {
    /// The lease was seen gone (`how`) in a reply produced at `seen_ms`, before `alive_until_ms`
    /// (its TTL past the last answered keep-alive's or the grant's submission).
    ExpiredEarly { holder: usize, lease: u64, how: &'static str, seen_ms: u64, alive_until_ms: u64 },
    /// A linearizable read submitted at `read_tick` returned the value attached to a lease the
    /// holder had seen gone at `gone_tick`.
    ReadAfterGone { holder: usize, lease: u64, gone_tick: u64, read_tick: u64 },
}

impl fmt::Display for LeaseViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseViolation::ExpiredEarly { holder, lease, how, seen_ms, alive_until_ms } => write!(
                f,
                "lease: holder {holder}'s lease {lease:#x} gone ({how}) at {seen_ms} ms, before \
                 {alive_until_ms} ms (TTL after the last answered keep-alive)"
            ),
            LeaseViolation::ReadAfterGone { holder, lease, gone_tick, read_tick } => write!(
                f,
                "lease: holder {holder} read its key's value of lease {lease:#x} at tick \
                 {read_tick}, after it saw the lease gone at tick {gone_tick}"
            ),
        }
    }
}

/// The lease a holder is running.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: u64,
    ttl_ms: u64,
    /// The lease must live at least until here (virtual ms).
    alive_until_ms: u64,
    /// The value attached to the key, and whether the attach was answered (only then does an
    /// absent key mean the lease is gone).
    value: Option<(ValueId, bool)>,
}

impl Held {
    fn ttl_ticks(&self) -> u64 {
        self.ttl_ms / MS_PER_TICK
    }
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    /// No lease: the next step grants one.
    Idle,
    Granting(Held),
    Attaching(Held),
    /// Keep-alives, TTL queries and reads until `steps_left` is 0.
    Holding {
        lease: Held,
        steps_left: u32,
    },
    Revoking(Held),
    /// No more keep-alives: reads until the lease is seen gone (or `EXPIRY_WAIT_TICKS`).
    Expiring {
        lease: Held,
        since: u64,
    },
    /// Seen gone at `gone_tick`: `reads_left` reads that must not return its value.
    Gone {
        lease: Held,
        gone_tick: u64,
        reads_left: u32,
    },
}

/// What a request was for, to judge its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Grant,
    Attach,
    KeepAlive,
    TimeToLive,
    Read,
    Revoke,
}

#[derive(Debug)]
struct InFlight {
    step: Step,
    request: Request,
    rid: Option<RequestId>,
    node: NodeId,
    /// The tick of the latest attempt's submission.
    submitted: u64,
    /// The tick of the first attempt's submission.
    first_submitted: u64,
    deadline: u64,
    attempts: u32,
}

#[derive(Debug)]
struct Holder {
    key: String,
    stage: Stage,
    leases_granted: u64,
    leader: Option<NodeId>,
    in_flight: Option<InFlight>,
    next_at: u64,
}

/// The run's lease holders (none in some seeds) and what they found.
#[derive(Debug)]
pub struct LeaseHolders {
    rng: Rng,
    holders: Vec<Holder>,
    next_value: ValueId,
    violations: Vec<LeaseViolation>,
    /// Leases granted, kept alive, revoked and seen expired (for swarm summaries).
    pub granted: u64,
    pub kept_alive: u64,
    pub revoked: u64,
    pub expired: u64,
}

impl LeaseHolders {
    /// Zero to two holders for run `seed`, drawn from their own stream.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ LEASE_RNG_SALT);
        let count = rng.below(3) as usize;
        Self::with_holders(rng, count)
    }

    /// No holders (a run that does not want them).
    pub fn none() -> Self {
        Self::with_holders(Rng::new(LEASE_RNG_SALT), 0)
    }

    fn with_holders(rng: Rng, count: usize) -> Self {
        let holders = (0..count)
            .map(|i| Holder {
                key: format!("l{i}"),
                stage: Stage::Idle,
                leases_granted: 0,
                leader: None,
                in_flight: None,
                next_at: 0,
            })
            .collect();
        Self {
            rng,
            holders,
            next_value: FIRST_VALUE,
            violations: Vec::new(),
            granted: 0,
            kept_alive: 0,
            revoked: 0,
            expired: 0,
        }
    }

    /// Whether no holder waits for an answer (the drain waits for this, as for clients).
    pub fn is_idle(&self) -> bool {
        self.holders.iter().all(|h| h.in_flight.is_none())
    }

    /// What the holders found.
    pub fn into_violations(self) -> Vec<LeaseViolation> {
        self.violations
    }

    /// One tick: every holder looks at its answer, times out, retries, or (while faults last)
    /// starts its next step.
    pub fn poll(&mut self, c: &mut Cluster, nodes: &[NodeId], phase: Phase, trace: bool) {
        if nodes.is_empty() {
            return;
        }
        for i in 0..self.holders.len() {
            self.poll_one(i, c, nodes, phase, trace);
        }
    }

    fn poll_one(&mut self, i: usize, c: &mut Cluster, nodes: &[NodeId], phase: Phase, trace: bool) {
        let now = c.now();
        if let Some(f) = self.holders[i].in_flight.as_mut() {
            let Some(rid) = f.rid else {
                if now >= self.holders[i].next_at {
                    self.submit(i, c, nodes);
                }
                return;
            };
            if let Some(reply) = c.reply(rid).cloned() {
                let at = c.reply_tick(rid).unwrap_or(now);
                if trace {
                    println!("t={now} lease holder {i} <- n{} {:?}", f.node, reply.result);
                }
                self.on_answer(i, reply.result, at, now);
            } else if now >= f.deadline {
                let h = &mut self.holders[i];
                h.leader = None;
                self.retry_or_give_up(i, now);
            }
            return;
        }
        if phase == Phase::Drain || now < self.holders[i].next_at {
            return;
        }
        if let Some((step, request)) = self.next_request(i, now) {
            self.holders[i].in_flight = Some(InFlight {
                step,
                request,
                rid: None,
                node: 0,
                submitted: now,
                first_submitted: now,
                deadline: now,
                attempts: 0,
            });
            self.submit(i, c, nodes);
        }
    }

    /// The request for the holder's stage (and the stage moved on where no request is due).
    fn next_request(&mut self, i: usize, now: u64) -> Option<(Step, Request)> {
        let stage = self.holders[i].stage;
        match stage {
            Stage::Idle => {
                let h = &mut self.holders[i];
                h.leases_granted += 1;
                let id = ((i as u64 + 1) << 32) | h.leases_granted;
                let ttl_ms = (20 + self.rng.below(41)) * MS_PER_TICK;
                h.stage = Stage::Granting(Held { id, ttl_ms, alive_until_ms: 0, value: None });
                Some((Step::Grant, Request::LeaseGrant { id: Some(id), ttl_ms, session: None }))
            }
            Stage::Granting(_) => None,
            Stage::Attaching(lease) => {
                let value = self.next_value;
                self.next_value += 1;
                let mut lease = lease;
                lease.value = Some((value, false));
                self.holders[i].stage = Stage::Attaching(lease);
                Some((
                    Step::Attach,
                    Request::SetWithLease {
                        key: self.holders[i].key.clone(),
                        value: encode_value(value),
                        lease: lease.id,
                        condition: None,
                        session: None,
                    },
                ))
            }
            Stage::Holding { lease, steps_left: 0 } => {
                if self.rng.below(2) == 0 {
                    self.holders[i].stage = Stage::Revoking(lease);
                    Some((Step::Revoke, Request::LeaseRevoke { id: lease.id, session: None }))
                } else {
                    self.holders[i].stage = Stage::Expiring { lease, since: now };
                    Some((Step::Read, self.read(i)))
                }
            }
            Stage::Holding { lease, .. } => Some(match self.rng.below(10) {
                0..=4 => (Step::KeepAlive, Request::LeaseKeepAlive { id: lease.id }),
                5..=7 => (Step::Read, self.read(i)),
                _ => (Step::TimeToLive, Request::LeaseTimeToLive { id: lease.id, keys: false }),
            }),
            Stage::Revoking(lease) => {
                Some((Step::Revoke, Request::LeaseRevoke { id: lease.id, session: None }))
            }
            Stage::Expiring { lease, since } => {
                if now - since > lease.ttl_ticks() + EXPIRY_WAIT_TICKS {
                    self.holders[i].stage = Stage::Idle;
                    return None;
                }
                Some(if self.rng.below(2) == 0 {
                    (Step::Read, self.read(i))
                } else {
                    (Step::TimeToLive, Request::LeaseTimeToLive { id: lease.id, keys: false })
                })
            }
            Stage::Gone { reads_left: 0, .. } => {
                self.holders[i].stage = Stage::Idle;
                None
            }
            Stage::Gone { .. } => Some((Step::Read, self.read(i))),
        }
    }

    fn read(&self, i: usize) -> Request {
        Request::Get { key: self.holders[i].key.clone(), consistency: Consistency::Linearizable }
    }

    /// Sends the in-flight request (again): to the leader it knows, or any node; reads go to
    /// any node half the time (a follower serves them through ReadIndex).
    fn submit(&mut self, i: usize, c: &mut Cluster, nodes: &[NodeId]) {
        let now = c.now();
        let random = nodes[self.rng.below(nodes.len() as u64) as usize];
        let h = &mut self.holders[i];
        let Some(f) = h.in_flight.as_mut() else { return };
        let anywhere = f.step == Step::Read && self.rng.below(2) == 0;
        let node = if anywhere {
            random
        } else {
            h.leader.filter(|l| nodes.contains(l)).unwrap_or(random)
        };
        f.node = node;
        f.submitted = now;
        f.deadline = now + 40;
        f.attempts += 1;
        f.rid = Some(c.submit(node, f.request.clone()));
    }

    /// No answer in time (or a retryable one): again, or give up on the step.
    fn retry_or_give_up(&mut self, i: usize, now: u64) {
        let h = &mut self.holders[i];
        let Some(f) = h.in_flight.as_mut() else { return };
        if f.attempts < MAX_ATTEMPTS {
            f.rid = None;
            h.next_at = now + 1 + self.rng.below(5);
            return;
        }
        h.in_flight = None;
        h.next_at = now + 1 + self.rng.below(10);
        h.stage = match h.stage {
            // The lease may exist or not: it expires on its own; start over.
            Stage::Granting(_) => Stage::Idle,
            // The attach may have been applied: keep going, but an absent key proves nothing.
            Stage::Attaching(lease) => Stage::Holding { lease, steps_left: 3 },
            Stage::Revoking(lease) => Stage::Expiring { lease, since: now },
            stage => stage,
        };
    }

    /// `result` answered the in-flight request in a reply produced at tick `at`.
    fn on_answer(&mut self, i: usize, result: Result<Response, Error>, at: u64, now: u64) {
        let Some(f) = self.holders[i].in_flight.take() else { return };
        let seen_ms = at * MS_PER_TICK;
        let stage = self.holders[i].stage;
        let gap = |rng: &mut Rng, lease: &Held| now + 1 + rng.below(lease.ttl_ticks() / 3 + 1);
        let next = match (stage, f.step, result) {
            (_, _, Err(Error::NotLeader { leader })) => {
                self.holders[i].leader = leader.map(|h| h.id);
                return self.retry(i, f, now);
            }
            (_, _, Err(Error::Unavailable(_) | Error::Indeterminate)) => {
                self.holders[i].leader = None;
                return self.retry(i, f, now);
            }
            // A retried grant finds the lease it granted before.
            (
                Stage::Granting(mut lease),
                Step::Grant,
                Ok(Response::LeaseGranted { .. }) | Err(Error::Lease(LeaseError::AlreadyExists)),
            ) => {
                self.granted += 1;
                // The first submission bounds from below when any attempt was applied.
                lease.alive_until_ms = f.first_submitted * MS_PER_TICK + lease.ttl_ms;
                Stage::Attaching(lease)
            }
            (Stage::Attaching(mut lease), Step::Attach, Ok(Response::Set { .. })) => {
                lease.value = lease.value.map(|(v, _)| (v, true));
                self.holders[i].next_at = gap(&mut self.rng, &lease);
                Stage::Holding { lease, steps_left: 2 + self.rng.below(8) as u32 }
            }
            (
                Stage::Holding { mut lease, steps_left },
                Step::KeepAlive,
                Ok(Response::LeaseKeptAlive { .. }),
            ) => {
                self.kept_alive += 1;
                lease.alive_until_ms =
                    lease.alive_until_ms.max(f.submitted * MS_PER_TICK + lease.ttl_ms);
                self.holders[i].next_at = gap(&mut self.rng, &lease);
                Stage::Holding { lease, steps_left: steps_left.saturating_sub(1) }
            }
            (
                Stage::Holding { lease, steps_left },
                Step::TimeToLive,
                Ok(Response::LeaseTimeToLive(_)),
            ) => {
                self.holders[i].next_at = gap(&mut self.rng, &lease);
                Stage::Holding { lease, steps_left: steps_left.saturating_sub(1) }
            }
            (Stage::Expiring { lease, .. }, Step::TimeToLive, Ok(Response::LeaseTimeToLive(_))) => {
                self.holders[i].next_at = gap(&mut self.rng, &lease);
                stage
            }
            (Stage::Revoking(lease), Step::Revoke, Ok(Response::LeaseRevoked { .. })) => {
                self.revoked += 1;
                Stage::Gone { lease, gone_tick: at, reads_left: 2 }
            }
            // Not found: the lease is gone. Before its time only if this was the first attempt
            // of a revoke (a retried revoke may find its own earlier attempt's work).
            (stage, step, Err(Error::Lease(LeaseError::NotFound))) => {
                let Some(lease) = stage.lease() else { return };
                let how = match step {
                    Step::Attach => "attach refused",
                    Step::KeepAlive => "keep-alive refused",
                    Step::TimeToLive => "time-to-live refused",
                    _ => "revoke refused",
                };
                if step != Step::Revoke || f.attempts == 1 {
                    self.expired += 1;
                    self.check_not_early(i, &lease, how, seen_ms);
                }
                Stage::Gone { lease, gone_tick: at, reads_left: 2 }
            }
            (stage, Step::Read, Ok(Response::Get(v))) => {
                let Some(lease) = stage.lease() else { return };
                let read = v.and_then(|v| decode_value(&v.value));
                let ours = lease.value.map(|(v, _)| v);
                match stage {
                    Stage::Gone { gone_tick, reads_left, .. } => {
                        if read.is_some() && read == ours {
                            self.violations.push(LeaseViolation::ReadAfterGone {
                                holder: i,
                                lease: lease.id,
                                gone_tick,
                                read_tick: f.submitted,
                            });
                        }
                        self.holders[i].next_at = now + 1 + self.rng.below(5);
                        Stage::Gone { lease, gone_tick, reads_left: reads_left.saturating_sub(1) }
                    }
                    _ if read.is_none() && lease.value.is_some_and(|(_, acked)| acked) => {
                        self.expired += 1;
                        self.check_not_early(i, &lease, "key absent", seen_ms);
                        Stage::Gone { lease, gone_tick: at, reads_left: 2 }
                    }
                    Stage::Holding { lease, steps_left } => {
                        self.holders[i].next_at = gap(&mut self.rng, &lease);
                        Stage::Holding { lease, steps_left: steps_left.saturating_sub(1) }
                    }
                    _ => {
                        self.holders[i].next_at = gap(&mut self.rng, &lease);
                        stage
                    }
                }
            }
            // Anything else (a refused request, a timeout-like error): move on from the step.
            (stage, _, _) => match stage {
                Stage::Granting(_) => Stage::Idle,
                Stage::Attaching(lease) => Stage::Holding { lease, steps_left: 1 },
                Stage::Holding { lease, steps_left } => {
                    Stage::Holding { lease, steps_left: steps_left.saturating_sub(1) }
                }
                Stage::Revoking(lease) => Stage::Expiring { lease, since: now },
                other => other,
            },
        };
        self.holders[i].stage = next;
    }

    fn retry(&mut self, i: usize, f: InFlight, now: u64) {
        self.holders[i].in_flight = Some(InFlight { rid: None, ..f });
        if f.attempts >= MAX_ATTEMPTS {
            self.retry_or_give_up(i, now);
        } else {
            self.holders[i].next_at = now + 1 + self.rng.below(5);
        }
    }

    fn check_not_early(&mut self, holder: usize, lease: &Held, how: &'static str, seen_ms: u64) {
        if seen_ms < lease.alive_until_ms {
            self.violations.push(LeaseViolation::ExpiredEarly {
                holder,
                lease: lease.id,
                how,
                seen_ms,
                alive_until_ms: lease.alive_until_ms,
            });
        }
    }
}

impl Stage {
    fn lease(&self) -> Option<Held> {
        match *self {
            Stage::Idle => None,
            Stage::Granting(l) | Stage::Attaching(l) | Stage::Revoking(l) => Some(l),
            Stage::Holding { lease, .. }
            | Stage::Expiring { lease, .. }
            | Stage::Gone { lease, .. } => Some(lease),
        }
    }
}
