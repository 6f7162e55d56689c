//! What a client write becomes in the Raft log: a [`Proposal`], encoded once by the leader and
//! decoded by every replica when the entry is applied; and what applying it did
//! ([`WriteOutcome`], kept in sessions and snapshots).
//!
//! The encoding is ours (not protobuf) so that it is stable, versioned and canonical: equal
//! proposals give equal bytes, and a build that does not understand an entry refuses it instead
//! of guessing.

use crate::codec::{DecodeError, Reader, Writer};
use crate::kv::Entry;
use crate::txn::Txn;

/// Format version written as the first byte of every encoded proposal: 1 without a state
/// quota, 2 with one (after `proposed_at_ms`), 3 for a write in a registered session or a
/// session registration (the session names its owner; the quota is optional). Versions 1 and
/// 2 stay the encoding of proposals without a registered session, so those keep their bytes;
/// a session in a version 1 or 2 proposal is a legacy one ([`ProposalSession::Legacy`]).
const PROPOSAL_VERSION: u8 = 1;
const PROPOSAL_VERSION_WITH_QUOTA: u8 = 2;
const PROPOSAL_VERSION_REGISTERED: u8 = 3;

/// Tag bytes of [`Command`] variants. Numbers are never reused; new commands (CAS,
/// transactions) take new tags.
const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_SET_IF: u8 = 3;
const TAG_DELETE_IF: u8 = 4;
const TAG_TXN: u8 = 5;
const TAG_SET_LEASED: u8 = 6;
const TAG_LEASE_GRANT: u8 = 7;
const TAG_LEASE_REVOKE: u8 = 8;
const TAG_LEASE_EXPIRE: u8 = 9;
const TAG_REGISTER_SESSION: u8 = 10;

/// Tag bytes of [`Condition`] variants.
const CONDITION_ABSENT: u8 = 1;
const CONDITION_VERSION: u8 = 2;
const CONDITION_MOD_REVISION: u8 = 3;
const CONDITION_VALUE: u8 = 4;

/// What a conditional write requires of its key. Evaluated when the entry is applied, against
/// the state every replica has at that log index, so every replica decides the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The key does not exist.
    Absent,
    /// The key's version (writes since it was created) is this. An absent key has version 0,
    /// so `Version(0)` means absent (etcd's rule).
    Version(u64),
    /// The key was last written at this log index. An absent key has mod revision 0.
    ModRevision(u64),
    /// The key exists and holds exactly these bytes.
    ValueEquals(Vec<u8>),
}

impl Condition {
    /// Whether the condition holds for a key whose current state is `current`.
    pub fn holds(&self, current: Option<&Entry>) -> bool {
        match self {
            Condition::Absent => current.is_none(),
            Condition::Version(n) => current.map_or(0, Entry::version) == *n,
            Condition::ModRevision(r) => current.map_or(0, Entry::mod_index) == *r,
            Condition::ValueEquals(value) => current.is_some_and(|v| v.value() == value.as_slice()),
        }
    }

    pub(crate) fn encode_to(&self, w: &mut Writer) {
        match self {
            Condition::Absent => w.put_u8(CONDITION_ABSENT),
            Condition::Version(n) => {
                w.put_u8(CONDITION_VERSION);
                w.put_u64(*n);
            }
            Condition::ModRevision(r) => {
                w.put_u8(CONDITION_MOD_REVISION);
                w.put_u64(*r);
            }
            Condition::ValueEquals(value) => {
                w.put_u8(CONDITION_VALUE);
                w.put_bytes(value);
            }
        }
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.get_u8()? {
            CONDITION_ABSENT => Ok(Condition::Absent),
            CONDITION_VERSION => Ok(Condition::Version(r.get_u64()?)),
            CONDITION_MOD_REVISION => Ok(Condition::ModRevision(r.get_u64()?)),
            CONDITION_VALUE => Ok(Condition::ValueEquals(r.get_bytes()?.to_vec())),
            tag => Err(DecodeError::UnknownTag(tag)),
        }
    }

    /// Bytes the condition adds to a proposal beyond a fixed header.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Condition::ValueEquals(value) => value.len(),
            _ => 0,
        }
    }
}

/// A key's revisions (no value) at the moment a condition was evaluated: what a caller needs
/// to retry. No value, so that an outcome kept in a session has a fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRevisions {
    /// Log index of the write that created the key.
    pub create_index: u64,
    /// Log index of the latest write to the key.
    pub mod_index: u64,
    /// Writes since creation; 1 on create.
    pub version: u64,
}

impl From<&Entry> for KeyRevisions {
    fn from(v: &Entry) -> Self {
        let p = v.parts();
        KeyRevisions { create_index: p.create_index, mod_index: p.mod_index, version: p.version }
    }
}

/// Identifies a write within a registered client session so a retried write is applied at
/// most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// The caller's identity (its certificate's CN), passed in by the shell with every write.
    /// Sessions are looked up by (owner, client id): another identity's session is unknown.
    pub owner: String,
    /// The session id the registration answered ([`crate::Response::SessionRegistered`]);
    /// 0 means "no session" (no deduplication).
    pub client_id: u64,
    /// Sequence number of this request within the session, starting at 1.
    pub seq: u64,
    /// Every seq below this has been answered to the client, so the cluster may forget those
    /// results.
    pub first_unacked_seq: u64,
}

/// The session part of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProposalSession {
    /// A write in a registered session (proposal version 3).
    Registered(SessionRef),
    /// A write of a build before registration, in a session keyed by client id alone: only
    /// decoded from log entries such builds wrote (proposal versions 1 and 2), never proposed.
    Legacy { client_id: u64, seq: u64, first_unacked_seq: u64 },
}

impl ProposalSession {
    pub(crate) fn client_id(&self) -> u64 {
        match self {
            ProposalSession::Registered(r) => r.client_id,
            ProposalSession::Legacy { client_id, .. } => *client_id,
        }
    }
}

/// What a write did. Stored in sessions so a retry gets the very same answer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Set {
        revision: u64,
    },
    /// Deleting a missing key succeeds too (`existed == false`): a retried delete must not
    /// turn into an error.
    Deleted {
        existed: bool,
        revision: u64,
    },
    /// A conditional write whose condition did not hold at log index `revision`: nothing was
    /// written. `current` is the key then (`None`: absent).
    ConditionFailed {
        revision: u64,
        current: Option<KeyRevisions>,
    },
    /// A transaction applied at log index `revision`, which ran its `success` branch if
    /// `succeeded`, else its `failure` branch. Its per-operation results are not kept (they
    /// may hold values; an outcome has a fixed size).
    Txn {
        succeeded: bool,
        revision: u64,
    },
    /// Lease `id` was granted with `ttl_ms` at log index `revision`.
    LeaseGranted {
        id: u64,
        ttl_ms: u64,
        revision: u64,
    },
    /// A lease was revoked or expired at log index `revision`, deleting its keys there.
    /// `existed == false` only for an expiry of a lease already gone (a revoke of an unknown
    /// lease is an error).
    LeaseRevoked {
        existed: bool,
        revision: u64,
    },
    /// A session registration opened session `client_id` (never stored in a session).
    SessionRegistered {
        client_id: u64,
    },
}

const OUTCOME_SET: u8 = 1;
const OUTCOME_DELETED: u8 = 2;
const OUTCOME_CONDITION_FAILED: u8 = 3;
const OUTCOME_TXN: u8 = 4;
const OUTCOME_LEASE_GRANTED: u8 = 5;
const OUTCOME_LEASE_REVOKED: u8 = 6;
const OUTCOME_SESSION_REGISTERED: u8 = 7;

impl WriteOutcome {
    pub(crate) fn encode_to(&self, w: &mut Writer) {
        match *self {
            WriteOutcome::Set { revision } => {
                w.put_u8(OUTCOME_SET);
                w.put_u64(revision);
            }
            WriteOutcome::Deleted { existed, revision } => {
                w.put_u8(OUTCOME_DELETED);
                w.put_bool(existed);
                w.put_u64(revision);
            }
            WriteOutcome::ConditionFailed { revision, current } => {
                w.put_u8(OUTCOME_CONDITION_FAILED);
                w.put_u64(revision);
                match current {
                    None => w.put_bool(false),
                    Some(k) => {
                        w.put_bool(true);
                        w.put_u64(k.create_index);
                        w.put_u64(k.mod_index);
                        w.put_u64(k.version);
                    }
                }
            }
            WriteOutcome::Txn { succeeded, revision } => {
                w.put_u8(OUTCOME_TXN);
                w.put_bool(succeeded);
                w.put_u64(revision);
            }
            WriteOutcome::LeaseGranted { id, ttl_ms, revision } => {
                w.put_u8(OUTCOME_LEASE_GRANTED);
                w.put_u64(id);
                w.put_u64(ttl_ms);
                w.put_u64(revision);
            }
            WriteOutcome::LeaseRevoked { existed, revision } => {
                w.put_u8(OUTCOME_LEASE_REVOKED);
                w.put_bool(existed);
                w.put_u64(revision);
            }
            WriteOutcome::SessionRegistered { client_id } => {
                w.put_u8(OUTCOME_SESSION_REGISTERED);
                w.put_u64(client_id);
            }
        }
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.get_u8()? {
            OUTCOME_SET => Ok(WriteOutcome::Set { revision: r.get_u64()? }),
            OUTCOME_DELETED => {
                Ok(WriteOutcome::Deleted { existed: r.get_bool()?, revision: r.get_u64()? })
            }
            OUTCOME_CONDITION_FAILED => {
                let revision = r.get_u64()?;
                let current = if r.get_bool()? {
                    let k = KeyRevisions {
                        create_index: r.get_u64()?,
                        mod_index: r.get_u64()?,
                        version: r.get_u64()?,
                    };
                    if k.version == 0 || k.create_index > k.mod_index || k.mod_index >= revision {
                        return Err(DecodeError::Invalid("key version"));
                    }
                    Some(k)
                } else {
                    None
                };
                Ok(WriteOutcome::ConditionFailed { revision, current })
            }
            OUTCOME_TXN => {
                Ok(WriteOutcome::Txn { succeeded: r.get_bool()?, revision: r.get_u64()? })
            }
            OUTCOME_LEASE_GRANTED => Ok(WriteOutcome::LeaseGranted {
                id: r.get_u64()?,
                ttl_ms: r.get_u64()?,
                revision: r.get_u64()?,
            }),
            OUTCOME_LEASE_REVOKED => {
                Ok(WriteOutcome::LeaseRevoked { existed: r.get_bool()?, revision: r.get_u64()? })
            }
            OUTCOME_SESSION_REGISTERED => {
                Ok(WriteOutcome::SessionRegistered { client_id: r.get_u64()? })
            }
            tag => Err(DecodeError::UnknownTag(tag)),
        }
    }
}

/// A change to the key-value data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    Set {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Set, only if `condition` holds when applied.
    SetIf {
        key: String,
        value: Vec<u8>,
        condition: Condition,
    },
    /// Delete, only if `condition` holds when applied.
    DeleteIf {
        key: String,
        condition: Condition,
    },
    /// A transaction, applied as a whole at one log index.
    Txn(Txn),
    /// Set, attached to lease `lease` (which must exist when applied), only if `condition`
    /// (when given) holds.
    SetLeased {
        key: String,
        value: Vec<u8>,
        lease: u64,
        condition: Option<Condition>,
    },
    /// Grants a lease: id `id` (must be unused) or, without one, one derived from the entry's
    /// log index. `max_leases` is the proposing leader's bound, so every replica refuses alike.
    LeaseGrant {
        id: Option<u64>,
        ttl_ms: u64,
        max_leases: u64,
    },
    /// Revokes a lease (a client's request): its keys are deleted at this entry.
    LeaseRevoke {
        id: u64,
    },
    /// The leader found the lease past its deadline: like a revoke, but a lease already gone
    /// is not an error (nobody waits for the answer).
    LeaseExpire {
        id: u64,
    },
    /// Opens a client session for `owner` (the caller's certificate CN), whose id is this
    /// entry's log index. `max_sessions_per_identity` is the proposing leader's quota
    /// ([`crate::Config::max_sessions_per_identity`]): every replica evicts with this one.
    RegisterSession {
        owner: String,
        max_sessions_per_identity: u64,
    },
}

impl Command {
    /// The one key this command writes, if it writes exactly one.
    pub(crate) fn single_key(&self) -> Option<&str> {
        match self {
            Command::Set { key, .. }
            | Command::Delete { key }
            | Command::SetIf { key, .. }
            | Command::DeleteIf { key, .. }
            | Command::SetLeased { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// One replicated write: the command plus what the state machine needs to apply it
/// deterministically on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub session: Option<ProposalSession>,
    /// The proposing leader's clock in milliseconds. The state machine has no clock of its
    /// own; this is the only time it ever sees (used for session expiry).
    pub proposed_at_ms: u64,
    /// The proposing leader's state quota (`Config::quota_state_bytes`). Every replica
    /// decides with this one, so replicas configured differently still refuse the same writes.
    pub quota_state_bytes: Option<u64>,
    pub command: Command,
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.payload_len());
        let registered = matches!(self.session, Some(ProposalSession::Registered(_)))
            || matches!(self.command, Command::RegisterSession { .. });
        if registered {
            w.put_u8(PROPOSAL_VERSION_REGISTERED);
            match &self.session {
                Some(ProposalSession::Registered(s)) => {
                    w.put_bool(true);
                    w.put_str(&s.owner);
                    w.put_u64(s.client_id);
                    w.put_u64(s.seq);
                    w.put_u64(s.first_unacked_seq);
                }
                // A registration carries no session (`decode` refuses one).
                _ => w.put_bool(false),
            }
            w.put_u64(self.proposed_at_ms);
            match self.quota_state_bytes {
                None => w.put_bool(false),
                Some(quota) => {
                    w.put_bool(true);
                    w.put_u64(quota);
                }
            }
        } else {
            w.put_u8(match self.quota_state_bytes {
                None => PROPOSAL_VERSION,
                Some(_) => PROPOSAL_VERSION_WITH_QUOTA,
            });
            match &self.session {
                Some(ProposalSession::Legacy { client_id, seq, first_unacked_seq }) => {
                    w.put_bool(true);
                    w.put_u64(*client_id);
                    w.put_u64(*seq);
                    w.put_u64(*first_unacked_seq);
                }
                _ => w.put_bool(false),
            }
            w.put_u64(self.proposed_at_ms);
            if let Some(quota) = self.quota_state_bytes {
                w.put_u64(quota);
            }
        }
        match &self.command {
            Command::Set { key, value } => {
                w.put_u8(TAG_SET);
                w.put_str(key);
                w.put_bytes(value);
            }
            Command::Delete { key } => {
                w.put_u8(TAG_DELETE);
                w.put_str(key);
            }
            Command::SetIf { key, value, condition } => {
                w.put_u8(TAG_SET_IF);
                w.put_str(key);
                w.put_bytes(value);
                condition.encode_to(&mut w);
            }
            Command::DeleteIf { key, condition } => {
                w.put_u8(TAG_DELETE_IF);
                w.put_str(key);
                condition.encode_to(&mut w);
            }
            Command::Txn(txn) => {
                w.put_u8(TAG_TXN);
                txn.encode_to(&mut w);
            }
            Command::SetLeased { key, value, lease, condition } => {
                w.put_u8(TAG_SET_LEASED);
                w.put_str(key);
                w.put_bytes(value);
                w.put_u64(*lease);
                match condition {
                    None => w.put_bool(false),
                    Some(c) => {
                        w.put_bool(true);
                        c.encode_to(&mut w);
                    }
                }
            }
            Command::LeaseGrant { id, ttl_ms, max_leases } => {
                w.put_u8(TAG_LEASE_GRANT);
                match id {
                    None => w.put_bool(false),
                    Some(id) => {
                        w.put_bool(true);
                        w.put_u64(*id);
                    }
                }
                w.put_u64(*ttl_ms);
                w.put_u64(*max_leases);
            }
            Command::LeaseRevoke { id } => {
                w.put_u8(TAG_LEASE_REVOKE);
                w.put_u64(*id);
            }
            Command::LeaseExpire { id } => {
                w.put_u8(TAG_LEASE_EXPIRE);
                w.put_u64(*id);
            }
            Command::RegisterSession { owner, max_sessions_per_identity } => {
                w.put_u8(TAG_REGISTER_SESSION);
                w.put_str(owner);
                w.put_u64(*max_sessions_per_identity);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.get_u8()?;
        let (session, proposed_at_ms, quota_state_bytes) = match version {
            PROPOSAL_VERSION | PROPOSAL_VERSION_WITH_QUOTA => {
                let session = if r.get_bool()? {
                    Some(ProposalSession::Legacy {
                        client_id: r.get_u64()?,
                        seq: r.get_u64()?,
                        first_unacked_seq: r.get_u64()?,
                    })
                } else {
                    None
                };
                let proposed_at_ms = r.get_u64()?;
                let quota =
                    if version == PROPOSAL_VERSION_WITH_QUOTA { Some(r.get_u64()?) } else { None };
                (session, proposed_at_ms, quota)
            }
            PROPOSAL_VERSION_REGISTERED => {
                let session = if r.get_bool()? {
                    Some(ProposalSession::Registered(SessionRef {
                        owner: r.get_str()?.to_owned(),
                        client_id: r.get_u64()?,
                        seq: r.get_u64()?,
                        first_unacked_seq: r.get_u64()?,
                    }))
                } else {
                    None
                };
                let proposed_at_ms = r.get_u64()?;
                let quota = if r.get_bool()? { Some(r.get_u64()?) } else { None };
                (session, proposed_at_ms, quota)
            }
            v => return Err(DecodeError::UnsupportedVersion(u32::from(v))),
        };
        let command = match r.get_u8()? {
            TAG_SET => {
                let key = r.get_str()?.to_owned();
                let value = r.get_bytes()?.to_vec();
                Command::Set { key, value }
            }
            TAG_DELETE => Command::Delete { key: r.get_str()?.to_owned() },
            TAG_SET_IF => {
                let key = r.get_str()?.to_owned();
                let value = r.get_bytes()?.to_vec();
                Command::SetIf { key, value, condition: Condition::decode_from(&mut r)? }
            }
            TAG_DELETE_IF => {
                let key = r.get_str()?.to_owned();
                Command::DeleteIf { key, condition: Condition::decode_from(&mut r)? }
            }
            TAG_TXN => Command::Txn(Txn::decode_from(&mut r)?),
            TAG_SET_LEASED => {
                let key = r.get_str()?.to_owned();
                let value = r.get_bytes()?.to_vec();
                let lease = r.get_u64()?;
                let condition =
                    if r.get_bool()? { Some(Condition::decode_from(&mut r)?) } else { None };
                Command::SetLeased { key, value, lease, condition }
            }
            TAG_LEASE_GRANT => {
                let id = if r.get_bool()? { Some(r.get_u64()?) } else { None };
                Command::LeaseGrant { id, ttl_ms: r.get_u64()?, max_leases: r.get_u64()? }
            }
            TAG_LEASE_REVOKE => Command::LeaseRevoke { id: r.get_u64()? },
            TAG_LEASE_EXPIRE => Command::LeaseExpire { id: r.get_u64()? },
            TAG_REGISTER_SESSION => Command::RegisterSession {
                owner: r.get_str()?.to_owned(),
                max_sessions_per_identity: r.get_u64()?,
            },
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        // What `encode` writes, only: a registration is version 3 without a session, and a
        // version 3 proposal has a registered session or is a registration.
        let is_registration = matches!(command, Command::RegisterSession { .. });
        let canonical = if version == PROPOSAL_VERSION_REGISTERED {
            is_registration != session.is_some()
        } else {
            !is_registration
        };
        if !canonical {
            return Err(DecodeError::Invalid("proposal session"));
        }
        r.finish()?;
        Ok(Proposal { session, proposed_at_ms, quota_state_bytes, command })
    }

    /// Size hint for the variable part, so encoding allocates once.
    fn payload_len(&self) -> usize {
        match &self.command {
            Command::Set { key, value } => key.len() + value.len(),
            Command::Delete { key } => key.len(),
            Command::SetIf { key, value, condition } => {
                key.len() + value.len() + condition.payload_len()
            }
            Command::DeleteIf { key, condition } => key.len() + condition.payload_len(),
            Command::Txn(txn) => txn.payload_len(),
            Command::SetLeased { key, value, condition, .. } => {
                key.len() + value.len() + condition.as_ref().map_or(0, Condition::payload_len)
            }
            Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. }
            | Command::LeaseExpire { .. } => 0,
            Command::RegisterSession { owner, .. } => owner.len(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A session of a write: none, a legacy one or a registered one.
    pub(crate) fn arb_session() -> impl Strategy<Value = Option<ProposalSession>> {
        let ids = (any::<u64>(), any::<u64>(), any::<u64>());
        prop_oneof![
            Just(None),
            ids.prop_map(|(client_id, seq, first_unacked_seq)| {
                Some(ProposalSession::Legacy { client_id, seq, first_unacked_seq })
            }),
            (".{0,8}", ids).prop_map(|(owner, (client_id, seq, first_unacked_seq))| {
                Some(ProposalSession::Registered(SessionRef {
                    owner,
                    client_id,
                    seq,
                    first_unacked_seq,
                }))
            }),
        ]
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (".{0,8}", proptest::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(key, value)| Command::Set { key, value }),
            ".{0,8}".prop_map(|key| Command::Delete { key }),
            (".{0,8}", proptest::collection::vec(any::<u8>(), 0..16), arb_condition())
                .prop_map(|(key, value, condition)| Command::SetIf { key, value, condition }),
            (".{0,8}", arb_condition())
                .prop_map(|(key, condition)| Command::DeleteIf { key, condition }),
            crate::txn::tests::arb_txn().prop_map(Command::Txn),
            (
                ".{0,8}",
                proptest::collection::vec(any::<u8>(), 0..16),
                any::<u64>(),
                proptest::option::of(arb_condition())
            )
                .prop_map(|(key, value, lease, condition)| Command::SetLeased {
                    key,
                    value,
                    lease,
                    condition
                }),
            (proptest::option::of(any::<u64>()), any::<u64>(), any::<u64>()).prop_map(
                |(id, ttl_ms, max_leases)| Command::LeaseGrant { id, ttl_ms, max_leases }
            ),
            any::<u64>().prop_map(|id| Command::LeaseRevoke { id }),
            any::<u64>().prop_map(|id| Command::LeaseExpire { id }),
        ]
    }

    pub(crate) fn arb_condition() -> impl Strategy<Value = Condition> {
        prop_oneof![
            Just(Condition::Absent),
            any::<u64>().prop_map(Condition::Version),
            any::<u64>().prop_map(Condition::ModRevision),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Condition::ValueEquals),
        ]
    }

    fn arb_outcome() -> impl Strategy<Value = WriteOutcome> {
        let current = proptest::option::of((1u64..100, 0u64..100, 1u64..100).prop_map(
            |(create_index, later, version)| KeyRevisions {
                create_index,
                mod_index: create_index + later,
                version,
            },
        ));
        prop_oneof![
            any::<u64>().prop_map(|revision| WriteOutcome::Set { revision }),
            (any::<bool>(), any::<u64>())
                .prop_map(|(existed, revision)| WriteOutcome::Deleted { existed, revision }),
            current.prop_map(|current| WriteOutcome::ConditionFailed { revision: 200, current }),
            (any::<bool>(), any::<u64>())
                .prop_map(|(succeeded, revision)| WriteOutcome::Txn { succeeded, revision }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(id, ttl_ms, revision)| {
                WriteOutcome::LeaseGranted { id, ttl_ms, revision }
            }),
            (any::<bool>(), any::<u64>())
                .prop_map(|(existed, revision)| WriteOutcome::LeaseRevoked { existed, revision }),
        ]
    }

    /// Proposals as a leader makes them: a registration never carries a session.
    fn arb_proposal() -> impl Strategy<Value = Proposal> {
        let register = (".{0,8}", any::<u64>()).prop_map(|(owner, max_sessions_per_identity)| {
            Command::RegisterSession { owner, max_sessions_per_identity }
        });
        let write = (arb_session(), arb_command());
        let shape = prop_oneof![4 => write, 1 => register.prop_map(|command| (None, command))];
        (shape, any::<u64>(), proptest::option::of(any::<u64>())).prop_map(
            |((session, command), proposed_at_ms, quota_state_bytes)| Proposal {
                session,
                proposed_at_ms,
                quota_state_bytes,
                command,
            },
        )
    }

    fn sample() -> Proposal {
        Proposal {
            session: Some(ProposalSession::Legacy { client_id: 7, seq: 3, first_unacked_seq: 2 }),
            proposed_at_ms: 1_000,
            quota_state_bytes: None,
            command: Command::Set { key: "k".into(), value: b"v".to_vec() },
        }
    }

    #[test]
    fn rejects_unknown_version() {
        let mut bytes = sample().encode();
        bytes[0] = 4;
        assert_eq!(Proposal::decode(&bytes), Err(DecodeError::UnsupportedVersion(4)));
    }

    #[test]
    fn rejects_unknown_tag() {
        let p = Proposal { session: None, ..sample() };
        let mut bytes = p.encode();
        // version (1) + session flag (1) + proposed_at_ms (8), then the tag.
        bytes[10] = 99;
        assert_eq!(Proposal::decode(&bytes), Err(DecodeError::UnknownTag(99)));
    }

    #[test]
    fn a_quota_is_version_2_and_no_quota_keeps_version_1_bytes() {
        let plain = sample().encode();
        assert_eq!(plain[0], 1);
        let with = Proposal { quota_state_bytes: Some(1 << 20), ..sample() };
        let bytes = with.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes.len(), plain.len() + 8);
        assert_eq!(Proposal::decode(&bytes).unwrap(), with);
    }

    #[test]
    fn a_registered_session_is_version_3_with_its_owner() {
        let session = ProposalSession::Registered(SessionRef {
            owner: "alice".into(),
            client_id: 9,
            seq: 2,
            first_unacked_seq: 1,
        });
        let p = Proposal { session: Some(session), quota_state_bytes: Some(5), ..sample() };
        let bytes = p.encode();
        assert_eq!(bytes[0], 3);
        assert_eq!(Proposal::decode(&bytes).unwrap(), p);
        let register = Proposal {
            session: None,
            command: Command::RegisterSession { owner: "a".into(), max_sessions_per_identity: 2 },
            ..sample()
        };
        let bytes = register.encode();
        assert_eq!(bytes[0], 3);
        assert_eq!(Proposal::decode(&bytes).unwrap(), register);
        // The legacy sample keeps its version 1 bytes.
        assert_eq!(sample().encode()[0], 1);
    }

    #[test]
    fn a_registration_in_an_old_version_or_a_sessionless_version_3_write_is_refused() {
        let mut w = Writer::new();
        w.put_u8(PROPOSAL_VERSION);
        w.put_bool(false);
        w.put_u64(0);
        w.put_u8(TAG_REGISTER_SESSION);
        w.put_str("a");
        w.put_u64(2);
        assert_eq!(Proposal::decode(&w.finish()), Err(DecodeError::Invalid("proposal session")));
        let mut w = Writer::new();
        w.put_u8(PROPOSAL_VERSION_REGISTERED);
        w.put_bool(false);
        w.put_u64(0);
        w.put_bool(false);
        w.put_u8(TAG_DELETE);
        w.put_str("k");
        assert_eq!(Proposal::decode(&w.finish()), Err(DecodeError::Invalid("proposal session")));
    }

    #[test]
    fn tags_are_stable() {
        let tag = |command| {
            Proposal { session: None, proposed_at_ms: 5, quota_state_bytes: None, command }.encode()
                [10]
        };
        assert_eq!(tag(Command::Set { key: "k".into(), value: vec![1] }), TAG_SET);
        assert_eq!(tag(Command::Delete { key: "k".into() }), TAG_DELETE);
        let condition = Condition::Absent;
        let set_if = Command::SetIf { key: "k".into(), value: vec![1], condition };
        assert_eq!(tag(set_if), TAG_SET_IF);
        let delete_if = Command::DeleteIf { key: "k".into(), condition: Condition::Version(3) };
        assert_eq!(tag(delete_if), TAG_DELETE_IF);
        assert_eq!(tag(Command::Txn(Txn::default())), TAG_TXN);
        assert_eq!((TAG_SET, TAG_DELETE, TAG_SET_IF, TAG_DELETE_IF, TAG_TXN), (1, 2, 3, 4, 5));
        let leased =
            Command::SetLeased { key: "k".into(), value: vec![], lease: 1, condition: None };
        assert_eq!(tag(leased), TAG_SET_LEASED);
        let grant = Command::LeaseGrant { id: None, ttl_ms: 1, max_leases: 1 };
        assert_eq!(tag(grant), TAG_LEASE_GRANT);
        assert_eq!(tag(Command::LeaseRevoke { id: 1 }), TAG_LEASE_REVOKE);
        assert_eq!(tag(Command::LeaseExpire { id: 1 }), TAG_LEASE_EXPIRE);
        assert_eq!(
            (TAG_SET_LEASED, TAG_LEASE_GRANT, TAG_LEASE_REVOKE, TAG_LEASE_EXPIRE),
            (6, 7, 8, 9)
        );
    }

    #[test]
    fn conditions_against_a_key() {
        let v = Entry::new("k", b"x", 3, 7, 2);
        let present = Some(&v);
        assert!(Condition::Absent.holds(None));
        assert!(!Condition::Absent.holds(present));
        assert!(Condition::Version(0).holds(None));
        assert!(Condition::Version(2).holds(present));
        assert!(!Condition::Version(1).holds(present));
        assert!(Condition::ModRevision(0).holds(None));
        assert!(Condition::ModRevision(7).holds(present));
        assert!(!Condition::ModRevision(3).holds(present));
        assert!(Condition::ValueEquals(b"x".to_vec()).holds(present));
        assert!(!Condition::ValueEquals(b"y".to_vec()).holds(present));
        // An absent key has no value, not even the empty one.
        assert!(!Condition::ValueEquals(Vec::new()).holds(None));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(Proposal::decode(&bytes), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn rejects_invalid_utf8_key() {
        let p = Proposal {
            session: None,
            proposed_at_ms: 0,
            quota_state_bytes: None,
            command: Command::Delete { key: "ab".into() },
        };
        let mut bytes = p.encode();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert_eq!(Proposal::decode(&bytes), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn rejects_invalid_session_flag() {
        let mut bytes = sample().encode();
        bytes[1] = 2;
        assert!(Proposal::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(p in arb_proposal()) {
            let bytes = p.encode();
            prop_assert_eq!(Proposal::decode(&bytes).unwrap(), p);
        }

        #[test]
        fn every_truncation_is_an_error(p in arb_proposal()) {
            let bytes = p.encode();
            for len in 0..bytes.len() {
                prop_assert!(Proposal::decode(&bytes[..len]).is_err());
            }
        }

        #[test]
        fn outcomes_round_trip(o in arb_outcome()) {
            let mut w = Writer::new();
            o.encode_to(&mut w);
            let bytes = w.finish();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(WriteOutcome::decode_from(&mut r).unwrap(), o);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Proposal::decode(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic(p in arb_proposal(), at in any::<usize>(), x in 1u8..) {
            let mut bytes = p.encode();
            let i = at % bytes.len();
            bytes[i] ^= x;
            let _ = Proposal::decode(&bytes);
        }
    }
}
