//! Authorization: the single seam every request passes through.
//!
//! For now: any verified client certificate may do anything on the `KV` service, and only node
//! certificates may call the peer service. Casbin rules (object = key, actions
//! `produce`/`consume`) replace [`authorize`]'s body in a later issue; its callers do not change.

use tonic::Status;

use crate::status;
use crate::tls::Identity;

/// What a client wants to do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A write (Set, Delete).
    Produce,
    /// A read (Get, List, Range, GetServers).
    Consume,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
        }
    }
}

/// Decides whether `identity` may perform `action` on `key` (`""` = every key, e.g. List or
/// GetServers). Returns the identity on success.
pub fn authorize(
    identity: Option<Identity>,
    action: Action,
    key: &str,
) -> Result<Identity, Status> {
    let _ = (action, key);
    identity.ok_or_else(status::unauthenticated)
}

/// Only nodes (certificates valid for server auth) may call the peer service.
pub fn authorize_peer(identity: Option<Identity>) -> Result<Identity, Status> {
    let id = identity.ok_or_else(status::unauthenticated)?;
    if id.is_node {
        Ok(id)
    } else {
        Err(status::permission_denied())
    }
}
