//! Leases on the node: the requests, the leader's deadlines and the expiries it proposes.
//!
//! Only the leader keeps deadlines ([`crate::lease::LeaseClock`]): every lease's restarts at
//! `now + TTL` when a node becomes leader, a grant it applies starts one, a keep-alive it
//! serves restarts one, and a revoke or expiry it applies ends one. A lease past its deadline
//! is expired by a replicated `LeaseExpire` entry the leader proposes; every replica deletes
//! the lease's keys when that entry is applied.

use raft::StateRole;

use super::writes::WriteKind;
use super::Node;
use crate::command::{Command, Condition, Proposal, ProposalSession, SessionRef, WriteOutcome};
use crate::error::{Error, InvalidArgument};
use crate::lease::{LeaseError, LeaseTtl};
use crate::read::ReadKind;
use crate::request::{Consistency, RequestId, Response};

/// Most expiries the leader proposes per tick, so that a mass expiry does not flood one
/// Ready; the rest follow on the next ticks.
const MAX_EXPIRIES_PER_TICK: usize = 64;

impl Node {
    pub(super) fn lease_grant(
        &mut self,
        id: RequestId,
        lease: Option<u64>,
        ttl_ms: u64,
        session: Option<SessionRef>,
    ) {
        let (min_ms, max_ms) = (self.config.lease_min_ttl_ms, self.config.lease_max_ttl_ms);
        let checked = if lease == Some(0) {
            Err(InvalidArgument::LeaseIdZero.into())
        } else if !(min_ms..=max_ms).contains(&ttl_ms) {
            Err(InvalidArgument::LeaseTtl { ttl_ms, min_ms, max_ms }.into())
        } else {
            Ok(())
        };
        let command = Command::LeaseGrant { id: lease, ttl_ms, max_leases: self.config.max_leases };
        self.propose_command(id, session, checked.map(|()| command));
    }

    pub(super) fn lease_revoke(&mut self, id: RequestId, lease: u64, session: Option<SessionRef>) {
        self.propose_command(id, session, Ok(Command::LeaseRevoke { id: lease }));
    }

    pub(super) fn set_with_lease(
        &mut self,
        id: RequestId,
        (key, value, lease): (String, Vec<u8>, u64),
        condition: Option<Condition>,
        session: Option<SessionRef>,
    ) {
        let checked =
            self.check_key(&key)
                .and_then(|()| self.check_value(&value))
                .and_then(|()| condition.as_ref().map_or(Ok(()), |c| self.check_condition(c)))
                .and_then(|()| {
                    if lease == 0 {
                        Err(InvalidArgument::LeaseIdZero.into())
                    } else {
                        Ok(())
                    }
                });
        let command = Command::SetLeased { key, value, lease, condition };
        self.propose_command(id, session, checked.map(|()| command));
    }

    /// A keep-alive or time-to-live query: the leader only, through a ReadIndex round (see
    /// [`crate::Request::LeaseKeepAlive`]).
    pub(super) fn lease_read(&mut self, id: RequestId, lease: u64, keys: Option<bool>) {
        if let Err(e) = self.check_leader() {
            self.reply(id, Err(e));
            return;
        }
        let term = self.raw.raft.term;
        let kind = match keys {
            None => ReadKind::LeaseKeepAlive { id: lease, term },
            Some(keys) => ReadKind::LeaseTimeToLive { id: lease, keys, term },
        };
        self.read(id, kind, Consistency::Linearizable);
    }

    fn propose_command(
        &mut self,
        id: RequestId,
        session: Option<SessionRef>,
        command: Result<Command, Error>,
    ) {
        let proposal = command.map(|command| Proposal {
            session: session.map(ProposalSession::Registered),
            proposed_at_ms: self.wall_ms,
            quota_state_bytes: self.config.quota_state_bytes,
            command,
        });
        self.propose_write(id, proposal);
    }

    /// Whether `kind` is a keep-alive or time-to-live query of a lease whose expiry this
    /// leader proposed but has not applied: it goes through another ReadIndex round. A
    /// keep-alive must not renew a lease that is being expired, and answering "not found"
    /// before the expiry is applied would tell the holder its keys are gone while they are
    /// still readable (and, should the expiry entry be lost with this leader, that the lease
    /// is gone while it lives on).
    pub(super) fn lease_read_waits_for_expiry(&self, kind: &ReadKind) -> bool {
        match kind {
            ReadKind::LeaseKeepAlive { id, term } | ReadKind::LeaseTimeToLive { id, term, .. } => {
                self.raw.raft.state == StateRole::Leader
                    && self.raw.raft.term == *term
                    && self.sm.lease_ttl_ms(*id).is_some()
                    && self.lease_clock.is_expiring(*id)
            }
            _ => false,
        }
    }

    /// Serves a confirmed keep-alive or time-to-live read: only if this node still leads in
    /// the term the request arrived in, and only for a lease whose expiry it has not proposed.
    pub(super) fn serve_lease_read(&mut self, kind: &ReadKind) -> Result<Response, Error> {
        let (lease, term) = match kind {
            ReadKind::LeaseKeepAlive { id, term } | ReadKind::LeaseTimeToLive { id, term, .. } => {
                (*id, *term)
            }
            _ => unreachable!("only lease reads are served here"),
        };
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.term != term {
            return Err(Error::NotLeader { leader: self.leader_hint() });
        }
        let ttl_ms = match self.sm.lease_ttl_ms(lease) {
            Some(ttl_ms) if !self.lease_clock.is_expiring(lease) => ttl_ms,
            _ => return Err(LeaseError::NotFound.into()),
        };
        match kind {
            ReadKind::LeaseKeepAlive { .. } => {
                if !self.config.planted_bugs.lease_keepalive_not_renewed() {
                    self.lease_clock.renew(lease, ttl_ms, self.now_ms);
                }
                Ok(Response::LeaseKeptAlive { id: lease, ttl_ms })
            }
            ReadKind::LeaseTimeToLive { keys, .. } => {
                let remaining_ms =
                    self.lease_clock.remaining_ms(lease, self.now_ms).unwrap_or(ttl_ms);
                let keys = match (keys, self.sm.leases().get(lease)) {
                    (true, Some(l)) => {
                        l.keys.iter().take(self.config.max_page_size).cloned().collect()
                    }
                    _ => Vec::new(),
                };
                Ok(Response::LeaseTimeToLive(LeaseTtl {
                    id: lease,
                    granted_ttl_ms: ttl_ms,
                    remaining_ms,
                    keys,
                }))
            }
            _ => unreachable!("only lease reads are served here"),
        }
    }

    /// Keeps the leader's deadlines in step with an entry just applied.
    pub(super) fn on_lease_applied(&mut self, command: &Command, outcome: &WriteOutcome) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        match (command, outcome) {
            (Command::LeaseGrant { .. }, WriteOutcome::LeaseGranted { id, ttl_ms, .. }) => {
                self.lease_clock.renew(*id, *ttl_ms, self.now_ms);
            }
            (Command::LeaseRevoke { id } | Command::LeaseExpire { id }, _) => {
                self.lease_clock.remove(*id);
            }
            _ => {}
        }
    }

    /// The role may have changed: a new leader restarts every deadline in full, any other
    /// role keeps none.
    pub(super) fn on_lease_role(&mut self, became_leader: bool) {
        if self.raw.raft.state != StateRole::Leader {
            self.lease_clock.clear();
        } else if became_leader {
            self.lease_clock.restart(self.sm.leases(), self.now_ms);
        }
    }

    /// The leader proposes the expiry of each lease past its deadline (once; again after a
    /// request timeout if its entry was not applied).
    pub(super) fn expire_leases(&mut self) {
        if self.check_leader().is_err() {
            return;
        }
        let retry_before_tick = self.tick.saturating_sub(self.config.request_timeout_ticks);
        let due = self.lease_clock.take_due(
            self.now_ms,
            self.tick,
            retry_before_tick,
            MAX_EXPIRIES_PER_TICK,
        );
        for id in due {
            let proposal = Proposal {
                session: None,
                proposed_at_ms: self.wall_ms,
                quota_state_bytes: None,
                command: Command::LeaseExpire { id },
            };
            let data = proposal.encode();
            self.propose(None, WriteKind::Kv, |raw, blocks, ctx| {
                super::propose_data(raw, blocks, &ctx, &data)
            });
        }
    }
}
