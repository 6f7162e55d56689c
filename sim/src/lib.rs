//! Deterministic simulation of mokv clusters (see the sim issue); level 1 drives `mokv-core` nodes.
