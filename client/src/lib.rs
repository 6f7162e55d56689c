//! Client library: discovery, routing (writes to the leader, reads spread), retries with sessions.
