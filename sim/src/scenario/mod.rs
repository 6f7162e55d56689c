//! The scenarios the [runner](crate::runner) drives:
//!
//! - [`faults::FaultScenario`]: a formed cluster under every network and process fault, its
//!   membership changed by an operator through requests (the "swarm");
//! - [`gossip::GossipScenario`]: a cluster that forms, grows, shrinks and heals through SWIM
//!   gossip and the leader's reconciler, and must converge after the heal (the "gossip swarm"),
//!   with forgers gossiping identities no node proves ([`forgery`]) in half of its seeds.

pub mod faults;
pub mod forgery;
pub mod gossip;

pub use faults::FaultScenario;
pub use gossip::GossipScenario;
