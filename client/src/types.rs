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
