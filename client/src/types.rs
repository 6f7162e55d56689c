//! What calls return: entries, members, and the client's own view of the nodes.

use mokv_proto::api;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value (empty for a keys-only range).
    pub value: Vec<u8>,
    /// Raft index of the write that created the key.
    pub create_revision: u64,
    /// Raft index of the write that last changed the key.
    pub mod_revision: u64,
    /// Writes the key has seen since it was created (1 after the first).
    pub version: u64,
}

impl From<api::KeyValue> for Entry {
    fn from(kv: api::KeyValue) -> Self {
        Entry {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

impl From<api::GetResponse> for Entry {
    fn from(r: api::GetResponse) -> Self {
        Entry {
            key: r.key,
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
        }
    }
}

/// What a conditional write ([`Client::set_if`](crate::Client::set_if),
/// [`Client::delete_if`](crate::Client::delete_if)) requires of its key. The cluster evaluates
/// it when the write is applied, on the state at the write's own revision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The key does not exist.
    Absent,
    /// The key's version ([`Entry::version`]) is this; 0 means the key does not exist.
    Version(u64),
    /// The key was last written at this revision ([`Entry::mod_revision`]); 0 means the key
    /// does not exist.
    ModRevision(u64),
    /// The key exists and holds exactly these bytes.
    ValueEquals(Vec<u8>),
}

impl Condition {
    pub(crate) fn wire(&self) -> api::Condition {
        use api::condition::Check;
        let check = match self {
            Condition::Absent => Check::Absent(true),
            Condition::Version(n) => Check::Version(*n),
            Condition::ModRevision(r) => Check::ModRevision(*r),
            Condition::ValueEquals(v) => Check::Value(v.clone()),
        };
        api::Condition { check: Some(check) }
    }
}

/// A key's revisions as a failed condition saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRevisions {
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the write that last changed the key.
    pub mod_revision: u64,
    /// Writes the key has seen since it was created.
    pub version: u64,
}

/// The answer to a conditional write. A condition that does not hold is a normal answer, not
/// an error: nothing was written, and the key's state then is given to retry with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The condition held and the write was applied at `revision`.
    Applied {
        /// Revision (raft index) of the write.
        revision: u64,
    },
    /// The condition did not hold when evaluated at `revision`; nothing was written.
    Failed {
        /// Revision at which the condition was evaluated.
        revision: u64,
        /// The key then; `None` when it did not exist.
        current: Option<KeyRevisions>,
    },
}

impl CasOutcome {
    /// Whether the write was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, CasOutcome::Applied { .. })
    }

    pub(crate) fn from_wire(revision: u64, failed: Option<api::ConditionFailed>) -> CasOutcome {
        match failed {
            None => CasOutcome::Applied { revision },
            Some(f) => CasOutcome::Failed {
                revision,
                current: f.exists.then_some(KeyRevisions {
                    create_revision: f.create_revision,
                    mod_revision: f.mod_revision,
                    version: f.version,
                }),
            },
        }
    }
}

/// A member's health as the answering node's gossip sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Not reported (no gossip about it yet, or gossip is off).
    #[default]
    Unknown,
    /// Answering gossip probes.
    Alive,
    /// Missed probes; may be down.
    Suspect,
    /// Declared down by gossip.
    Down,
}

impl Health {
    pub(crate) fn from_wire(h: i32) -> Health {
        match api::Health::try_from(h) {
            Ok(api::Health::Alive) => Health::Alive,
            Ok(api::Health::Suspect) => Health::Suspect,
            Ok(api::Health::Down) => Health::Down,
            _ => Health::Unknown,
        }
    }

    /// Whether gossip says the node should not be sent requests.
    pub fn is_failed(self) -> bool {
        matches!(self, Health::Suspect | Health::Down)
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Down => "down",
        })
    }
}

/// One cluster member as a node reports it (`GetServers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's name (its certificate's CN).
    pub name: String,
    /// Its client (`KV`) address, `host:port`.
    pub rpc_addr: String,
    /// Whether the answering node takes it for the leader.
    pub is_leader: bool,
    /// Its raft id.
    pub raft_id: u64,
    /// Voter (`true`) or learner.
    pub voter: bool,
    /// Its gossip health.
    pub health: Health,
}

impl From<api::Server> for Member {
    fn from(s: api::Server) -> Self {
        Member {
            voter: s.suffrage == api::Suffrage::Voter as i32,
            health: Health::from_wire(s.health),
            name: s.id,
            rpc_addr: s.rpc_addr,
            is_leader: s.is_leader,
            raft_id: s.raft_id,
        }
    }
}

/// A node's role as the client last learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Not known yet (a seed before discovery, or discovery off).
    #[default]
    Unknown,
    /// The leader: writes go here.
    Leader,
    /// A voter that is not the leader: reads go here.
    Follower,
    /// A learner (catching up; promoted to voter once it has): reads only when no follower
    /// can serve them.
    Learner,
}

/// One node in the client's view ([`Client::nodes`](crate::Client::nodes)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its client address, `host:port`.
    pub addr: String,
    /// Its name, once discovery has reported it.
    pub name: Option<String>,
    /// Its role as last learned.
    pub role: Role,
    /// Its gossip health as last reported.
    pub health: Health,
    /// Whether requests may go to it: `false` while it fails locally (connection errors,
    /// timeouts) until a probe reaches it again, or while gossip reports it down or suspect.
    pub usable: bool,
    /// Attempts in flight to it now.
    pub in_flight: usize,
    /// Attempts it answered (with success or a final answer) since the client started.
    pub answered: u64,
}
