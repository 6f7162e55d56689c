//! What a run can find wrong, as types: one enum per source (the runner's phases, the clients,
//! the history checkers, gossip convergence), each with the one-line message a failure prints
//! as its `Display`.

use std::collections::BTreeSet;
use std::fmt;

use mokv_core::gossip::Health;
use mokv_core::Conf;
use mokv_core::{Error, NodeId, RequestId, Response};

use crate::history::{Op, ValueId};

/// One thing a run found wrong. Any one fails the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A node (or raft-rs inside it) panicked; the run stopped there.
    Panic { message: String },
    /// The cluster did not form within `ticks`.
    Formation { ticks: u64, mismatch: ConvergenceMismatch },
    /// A client's operation was still outstanding `ticks` after the heal.
    ClientStuck { client: u64, ticks: u64, op: Option<(usize, Box<Op>)> },
    /// A client's fresh write (or linearizable read) after the heal did not finish in `ticks`.
    FreshOpUnfinished { write: bool, client: u64, ticks: u64 },
    /// A node held a request longer than its request timeout allows.
    Unanswered { node: NodeId, request: RequestId, handed_at_tick: u64, now_tick: u64 },
    /// The configuration had not converged `ticks` after the heal.
    NotConverged { ticks: u64, mismatch: ConvergenceMismatch },
    /// The configuration converged, then no longer held after the fresh writes.
    ConvergenceLost { mismatch: ConvergenceMismatch },
    /// Two nodes became leader in the same term.
    TwoLeaders { term: u64, first: NodeId, second: NodeId, tick: u64 },
    /// Two nodes hold different state at the same applied index.
    Diverged { applied_index: u64, first: NodeId, second: NodeId, tick: u64 },
    /// A client saw something wrong in itself (not a history property).
    Workload(WorkloadProblem),
    /// A history checker failed.
    History(HistoryViolation),
    /// A watcher's events differ from the committed changes ([`crate::check_watch`]).
    Watch(crate::check_watch::WatchViolation),
    /// A lease holder saw its lease end early or its key outlive it ([`crate::check_lease`]).
    Lease(crate::check_lease::LeaseViolation),
    /// A lease holder still waited for an answer `ticks` after the heal.
    LeaseHolderStuck { ticks: u64 },
    /// Node `node` (at `tick`) let a forged gossip identity change membership or an address.
    ForgedMembership { tick: u64, node: NodeId, what: Forgery },
}

/// What a forged gossip identity (a forger holds the gossip key, no node certificate) achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forgery {
    /// Voter `voter` left the configuration though it never left: it was not told to, was not
    /// wiped, did not gossip its own leave, and was not out long enough to be removed as dead;
    /// a forger gossiped it leaving (`identity`).
    VoterRemoved { voter: NodeId, identity: String },
    /// A Raft id only a forger announced (`identity`) is in the configuration or member table.
    ForgedIdAdded { id: NodeId, identity: String },
    /// The member table, the directory (Raft traffic, `GetServers`) or the leader hint lists
    /// member `member` at a forger's address.
    AddressFollowed { member: NodeId, addr: String },
}

impl fmt::Display for Forgery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Forgery::VoterRemoved { voter, identity } => write!(
                f,
                "voter n{voter} removed without leaving, after a forger gossiped {identity}"
            ),
            Forgery::ForgedIdAdded { id, identity } => {
                write!(f, "forged id {id} is a member (forger gossiped {identity})")
            }
            Forgery::AddressFollowed { member, addr } => {
                write!(f, "member n{member} listed at the forged address {addr}")
            }
        }
    }
}

impl Violation {
    /// A panic rather than a checker's finding.
    pub fn is_panic(&self) -> bool {
        matches!(self, Violation::Panic { .. })
    }

    /// Something did not finish after the heal (its message starts with "liveness").
    pub fn is_liveness(&self) -> bool {
        matches!(
            self,
            Violation::ClientStuck { .. }
                | Violation::FreshOpUnfinished { .. }
                | Violation::Unanswered { .. }
                | Violation::LeaseHolderStuck { .. }
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Panic { message } => write!(f, "panic: {}", message.replace('\n', " ")),
            Violation::Formation { ticks, mismatch } => {
                write!(f, "formation: not converged within {ticks} ticks: {mismatch}")
            }
            Violation::ClientStuck { client, ticks, op } => {
                write!(
                    f,
                    "liveness: client {client} still waiting {ticks} ticks after the heal: "
                )?;
                match op {
                    Some((i, op)) => write!(f, "#{i} {op:?}"),
                    None => Ok(()),
                }
            }
            Violation::FreshOpUnfinished { write, client, ticks } => write!(
                f,
                "liveness: fresh {} by client {client} did not finish within {ticks} ticks",
                if *write { "write" } else { "read" }
            ),
            Violation::Unanswered { node, request, handed_at_tick, now_tick } => write!(
                f,
                "liveness: n{node} never answered request {request} (handed to it at tick \
                 {handed_at_tick}, now {now_tick})"
            ),
            Violation::NotConverged { ticks, mismatch } => {
                write!(f, "convergence: not converged {ticks} ticks after the heal: {mismatch}")
            }
            Violation::ConvergenceLost { mismatch } => {
                write!(f, "convergence: lost after the fresh writes: {mismatch}")
            }
            Violation::TwoLeaders { term, first, second, tick } => {
                write!(f, "two leaders in term {term}: n{first} and n{second} (tick {tick})")
            }
            Violation::Diverged { applied_index, first, second, tick } => write!(
                f,
                "state diverged at applied index {applied_index}: n{first} and n{second} (tick \
                 {tick})"
            ),
            Violation::Workload(p) => write!(f, "workload: {p}"),
            Violation::History(v) => v.fmt(f),
            Violation::Watch(v) => v.fmt(f),
            Violation::Lease(v) => v.fmt(f),
            Violation::LeaseHolderStuck { ticks } => {
                write!(f, "liveness: a lease holder still waiting {ticks} ticks after the heal")
            }
            Violation::ForgedMembership { tick, node, what } => {
                write!(f, "forged membership: n{node} at tick {tick}: {what}")
            }
        }
    }
}

/// What a client (or the final reads) noticed that is wrong in itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkloadProblem {
    /// A Range over the whole (five-key) key space did not fit one page.
    RangeNeedsTwoPages { op: usize },
    /// A reply of a kind the request cannot get.
    UnexpectedResponse { op: usize, response: Response },
    /// A well-formed request refused as misuse.
    Misuse { op: usize, error: Error },
    /// A read returned bytes no client wrote.
    UnknownValue { op: usize, bytes: Vec<u8> },
    /// After quiescence a member had applied less than the most advanced node.
    Lagging { node: NodeId, applied_index: u64, most_advanced: u64 },
}

impl fmt::Display for WorkloadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadProblem::RangeNeedsTwoPages { op } => {
                write!(f, "op {op}: range of 5 keys needs 2 pages")
            }
            WorkloadProblem::UnexpectedResponse { op, response } => {
                write!(f, "op {op}: unexpected response {response:?}")
            }
            WorkloadProblem::Misuse { op, error } => {
                write!(f, "op {op}: request refused as misuse: {error}")
            }
            WorkloadProblem::UnknownValue { op, bytes } => {
                write!(f, "op {op}: read a value no client wrote: {bytes:?}")
            }
            WorkloadProblem::Lagging { node, applied_index, most_advanced } => write!(
                f,
                "after quiescence n{node} applied {applied_index}, the most advanced node \
                 {most_advanced}"
            ),
        }
    }
}

/// A history checker's finding (see [`crate::checker`]). Read and op numbers are indexes into
/// the history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryViolation {
    /// A read returned `key` at `index` after the same incarnation of `node` served `served`.
    WentBackInTime { node: NodeId, read: usize, key: String, index: u64, served: u64 },
    /// A Range answer is not sorted or repeats a key.
    RangeUnsorted { range: usize },
    /// A Range holds `key` at `index` though an acknowledged write at `write` is at or below
    /// the range's own index.
    RangeStaleKey { range: usize, key: String, index: u64, write: u64, range_index: u64 },
    /// A Range leaves out `key`, set at `set_at` (at or below the range's index), never deleted.
    RangeMissingKey { range: usize, key: String, set_at: u64, range_index: u64 },
    /// No linearization of `key`'s history; the search could not place these ops.
    NotLinearizable { key: String, stuck_at: Vec<(usize, Op)> },
    /// A read returned a value nobody wrote.
    UnwrittenValue { read: usize, value: ValueId },
    /// A read found a value under a key other than the one it was written to.
    WrongKey { read: usize, value: ValueId, key: String, written_to: String },
    /// A serializable read returned a value written after it completed.
    ReadBeforeWrite { read: usize, value: ValueId },
    /// Two reads saw the same write at different log indexes.
    AppliedTwice { value: ValueId, first_read: usize, first_index: u64, read: usize, index: u64 },
    /// A write was acknowledged at a revision other than the index it was read at.
    RevisionMismatch { write: usize, value: ValueId, revision: u64, read: usize, index: u64 },
}

impl fmt::Display for HistoryViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryViolation::WentBackInTime { node, read, key, index, served } => write!(
                f,
                "n{node} went back in time: read #{read} returned {key} at index {index}, after \
                 the same incarnation had served index {served}"
            ),
            HistoryViolation::RangeUnsorted { range } => {
                write!(f, "range #{range} is not sorted or repeats a key")
            }
            HistoryViolation::RangeStaleKey { range, key, index, write, range_index } => write!(
                f,
                "range #{range} is no single state: {key} at index {index} but a write at \
                 {write} is below the range's index {range_index}"
            ),
            HistoryViolation::RangeMissingKey { range, key, set_at, range_index } => write!(
                f,
                "range #{range} is no single state: {key} missing, but set at {set_at} (below \
                 the range's index {range_index}) and never deleted after"
            ),
            HistoryViolation::NotLinearizable { key, stuck_at } => {
                write!(f, "history of key {key} is not linearizable; cannot place ")?;
                for (n, (i, op)) in stuck_at.iter().enumerate() {
                    if n > 0 {
                        f.write_str(" / ")?;
                    }
                    write!(f, "#{i} {op:?}")?;
                }
                Ok(())
            }
            HistoryViolation::UnwrittenValue { read, value } => {
                write!(f, "read #{read} returned v{value} that nobody wrote")
            }
            HistoryViolation::WrongKey { read, value, key, written_to } => {
                write!(f, "read #{read} found v{value} under {key}, written to {written_to}")
            }
            HistoryViolation::ReadBeforeWrite { read, value } => {
                write!(f, "serializable read #{read} returned v{value} before it was written")
            }
            HistoryViolation::AppliedTwice { value, first_read, first_index, read, index } => {
                write!(
                    f,
                    "write of v{value} applied twice: read #{first_read} saw it at index \
                     {first_index}, read #{read} at index {index}"
                )
            }
            HistoryViolation::RevisionMismatch { write, value, revision, read, index } => write!(
                f,
                "write #{write} of v{value} acknowledged at revision {revision}, but read \
                 #{read} saw it applied at index {index}"
            ),
        }
    }
}

/// Why a gossiping cluster has not converged on its expected voters (see
/// [`crate::scenario::gossip::check_converged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConvergenceMismatch {
    /// Not exactly one live leader.
    Leaders { leaders: Vec<NodeId> },
    /// The leader's applied configuration is not exactly the expected voters.
    LeaderConf { leader: NodeId, conf: Box<Conf>, expected: BTreeSet<NodeId> },
    /// An expected member is down.
    Down { node: NodeId },
    /// An expected member applied another configuration than the leader.
    ConfDiffers { node: NodeId, conf: Box<Conf>, leader_conf: Box<Conf> },
    /// A member sees someone who is not a member as not down.
    NonMemberSeen { viewer: NodeId, name: String, raft_id: NodeId, health: Health },
    /// A member does not see another (newest incarnation of its name) alive under its id.
    MemberNotAlive { viewer: NodeId, name: String, member: NodeId, seen: Option<(NodeId, Health)> },
    /// Nodes asked to leave are still around.
    StillLeaving { nodes: Vec<NodeId> },
}

impl fmt::Display for ConvergenceMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvergenceMismatch::Leaders { leaders } => write!(f, "leaders: {leaders:?}"),
            ConvergenceMismatch::LeaderConf { leader, conf, expected } => {
                write!(f, "leader n{leader} conf {conf:?}, expected voters {expected:?}")
            }
            ConvergenceMismatch::Down { node } => write!(f, "n{node} is down"),
            ConvergenceMismatch::ConfDiffers { node, conf, leader_conf } => {
                write!(f, "n{node} applied conf {conf:?}, leader {leader_conf:?}")
            }
            ConvergenceMismatch::NonMemberSeen { viewer, name, raft_id, health } => write!(
                f,
                "n{viewer} sees {name} (raft id {raft_id}) {health:?}, which is not a member"
            ),
            ConvergenceMismatch::MemberNotAlive { viewer, name, member, seen } => {
                write!(f, "n{viewer} sees {name} (n{member}) as {seen:?}")
            }
            ConvergenceMismatch::StillLeaving { nodes } => write!(f, "still leaving: {nodes:?}"),
        }
    }
}

/// The linearizability search gave up on a key: neither a violation nor a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    pub key: String,
    pub max_steps: u64,
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linearizability of {} undecided within {} steps", self.key, self.max_steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome};

    fn op() -> Op {
        Op {
            client: 1,
            kind: OpKind::Get { key: "k0".into(), linearizable: true },
            invoke: 3,
            invoke_tick: 10,
            complete: Some(4),
            complete_tick: Some(12),
            outcome: Outcome::Read(None),
            node: Some(2),
            node_incarnation: Some(1),
            attempts: 1,
        }
    }

    /// The one-line messages other tools match on (level-2 tests, failure triage).
    #[test]
    fn messages() {
        let v = Violation::History(HistoryViolation::NotLinearizable {
            key: "k0".into(),
            stuck_at: vec![(7, op()), (9, op())],
        });
        let line = v.to_string();
        assert!(line.starts_with("history of key k0 is not linearizable; cannot place #7 Op {"));
        assert!(line.contains(" / #9 Op {"), "{line}");
        let twice = HistoryViolation::AppliedTwice {
            value: 5,
            first_read: 1,
            first_index: 8,
            read: 4,
            index: 9,
        };
        assert_eq!(
            twice.to_string(),
            "write of v5 applied twice: read #1 saw it at index 8, read #4 at index 9"
        );
        let stuck = Violation::ClientStuck { client: 2, ticks: 2000, op: None };
        assert!(stuck.is_liveness());
        assert_eq!(
            stuck.to_string(),
            "liveness: client 2 still waiting 2000 ticks after the heal: "
        );
        let lag = Violation::Workload(WorkloadProblem::Lagging {
            node: 3,
            applied_index: 10,
            most_advanced: 20,
        });
        assert_eq!(
            lag.to_string(),
            "workload: after quiescence n3 applied 10, the most advanced node 20"
        );
        assert!(Violation::Panic { message: "a\nb".into() }.to_string() == "panic: a b");
    }
}
