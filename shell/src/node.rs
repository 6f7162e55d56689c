//! The node itself: the driver task that owns the core [`mokv_core::Node`] ([`driver`]), and
//! how a node is started and stopped, by `mokvd` ([`server`]) or inside an embedding program
//! ([`embedded`]).

pub mod driver;
pub mod embedded;
pub mod handle;
mod health;
pub mod quota;
pub mod server;
mod slow_pass;
pub mod watch_hub;
