//! The network: the gRPC services a node serves ([`kv_service`], [`peer_service`],
//! [`watch_service`]; opaque
//! page tokens: [`page_token`]; the stop their long streams end on: [`server_stop`]) and the one
//! mapping of core errors to their status codes ([`status`]); the outgoing peer links
//! ([`peer_link`]) and how they dial ([`transport`]); the gossip socket ([`gossip_net`]), bound here or
//! inherited ([`inherited`]).

pub mod cluster_service;
pub mod conn_gate;
pub mod gossip_net;
pub mod gossip_resolve;
pub mod identify;
pub mod inherited;
pub mod kv_service;
mod kv_txn;
pub mod lease_service;
pub mod leave;
pub mod maintenance_service;
pub mod page_token;
pub mod peer_link;
pub mod peer_refusals;
pub mod peer_service;
pub mod server_stop;
pub mod status;
pub mod transport;
pub mod watch_service;
