//! mokv's wire protocol.
//!
//! - [`api`]: the client `KV` service, package `api`, wire-compatible with the original mökv
//!   (same messages, field numbers and rpcs; additions only under new numbers or new rpcs).
//! - [`api`] also holds the operator `Cluster` service (`cluster.proto`: status, members).
//! - [`peer`]: the node-to-node service (raft-rs messages as opaque bytes, snapshot chunks, join).
//!
//! This crate owns no behaviour: it is generated code plus the encoded descriptor set that the
//! shell hands to gRPC server reflection.

#![allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]

pub mod api {
    tonic::include_proto!("api");
}

pub mod peer {
    tonic::include_proto!("mokv.peer");
}

/// Encoded `FileDescriptorSet` of every service here, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mokv_descriptor");

/// Metadata key carrying the leader's node name on UNAVAILABLE answers, when known.
pub const LEADER_HINT_ID: &str = "mokv-leader-id";
/// Metadata key carrying the leader's client (rpc) address on UNAVAILABLE answers, when known.
pub const LEADER_HINT_ADDR: &str = "mokv-leader-addr";
