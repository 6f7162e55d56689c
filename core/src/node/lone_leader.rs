//! Test support: a bootstrapped single-node cluster driven by hand, its persist batches written
//! to an in-memory disk and acknowledged at once.

use std::num::NonZeroU64;

use super::{Node, Role};
use crate::config::Config;
use crate::members::MemberInfo;
use crate::persist::DurableState;
use crate::request::{Reply, Request, RequestId};

/// A bootstrapped single-node cluster, leader of itself, and the in-memory disk it writes to.
pub(super) fn lone_leader(config: Config) -> (Node, DurableState) {
    let info = MemberInfo {
        id: config.id,
        name: "n1".into(),
        peer_addr: "peer:1".into(),
        rpc_addr: "rpc:1".into(),
        auto_promote: false,
    };
    let mut disk = DurableState::default();
    disk.apply(&Node::bootstrap(&info, &config, NonZeroU64::new(9).unwrap()));
    let mut node = Node::new(config, disk.clone()).unwrap();
    drain(&mut node, &mut disk);
    assert_eq!(node.status().role, Role::Leader);
    (node, disk)
}

/// Drains every output, writing each persist batch to `disk` and acknowledging it.
pub(super) fn drain(node: &mut Node, disk: &mut DurableState) -> Vec<Reply> {
    let mut replies = Vec::new();
    loop {
        let mut last = None;
        while let Some(b) = node.poll_persist() {
            disk.apply(&b);
            last = Some(b.id);
        }
        while node.poll_transmit().is_some() {}
        while let Some(r) = node.poll_reply() {
            replies.push(r);
        }
        while node.poll_event().is_some() {}
        // Snapshot jobs are encoded at once (a shell does it off the driver).
        let mut jobs = false;
        while let Some(job) = node.poll_snapshot_job() {
            jobs = true;
            node.handle_snapshot_durable(job.into_image().reference());
        }
        match last {
            Some(id) => node.handle_persisted(id),
            None if jobs => {}
            None => return replies,
        }
    }
}

/// One request, drained; its answer.
pub(super) fn call(
    node: &mut Node,
    disk: &mut DurableState,
    id: RequestId,
    request: Request,
) -> Reply {
    node.handle_request(id, request);
    let mut replies = drain(node, disk);
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies.remove(0)
}
