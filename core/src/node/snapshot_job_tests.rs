//! Snapshots taken off the driver: the node hands out a job (a copy-on-write clone of the
//! state), keeps its log until the job's file is durable, and only then compacts, in the batch
//! that stores the file's reference.

use std::num::NonZeroU64;

use super::{Node, Role};
use crate::config::Config;
use crate::members::MemberInfo;
use crate::persist::DurableState;
use crate::request::Request;
use crate::snapshot::{SnapshotImage, SnapshotJob};
use crate::snapshot_ref::SnapshotRef;

/// A bootstrapped single-node cluster that snapshots every `every` entries.
fn lone_leader(every: u64) -> (Node, DurableState, Config) {
    let mut config = Config::new(1, 1);
    config.snapshot_threshold_entries = every;
    config.log_keep_entries = 0;
    let info = MemberInfo {
        id: 1,
        name: "n1".into(),
        peer_addr: "peer:1".into(),
        rpc_addr: "rpc:1".into(),
        auto_promote: false,
    };
    let mut disk = DurableState::default();
    disk.apply(&Node::bootstrap(&info, &config, NonZeroU64::new(9).unwrap()));
    let mut node = Node::new(config.clone(), disk.clone()).unwrap();
    assert!(drain(&mut node, &mut disk).is_empty());
    assert_eq!(node.status().role, Role::Leader);
    (node, disk, config)
}

/// Drains every output but snapshot jobs, writing persist batches to `disk` and acknowledging
/// them; returns the jobs handed out.
fn drain(node: &mut Node, disk: &mut DurableState) -> Vec<SnapshotJob> {
    let mut jobs = Vec::new();
    loop {
        let mut last = None;
        while let Some(b) = node.poll_persist() {
            disk.apply(&b);
            last = Some(b.id);
        }
        while node.poll_transmit().is_some() || node.poll_reply().is_some() {}
        while node.poll_event().is_some() {}
        jobs.extend(std::iter::from_fn(|| node.poll_snapshot_job()));
        match last {
            Some(id) => node.handle_persisted(id),
            None => return jobs,
        }
    }
}

fn write(node: &mut Node, disk: &mut DurableState, from: u64, n: u64) -> Vec<SnapshotJob> {
    let mut jobs = Vec::new();
    for i in from..from + n {
        let set = Request::Set { key: format!("k{i}"), value: vec![1; 8], session: None };
        node.handle_request(i, set);
        jobs.extend(drain(node, disk));
    }
    jobs
}

fn snapshot_index(disk: &DurableState) -> u64 {
    disk.snapshot.as_ref().unwrap().reference.index
}

#[test]
fn a_due_snapshot_is_a_job_and_the_log_stays_until_its_file_is_durable() {
    let (mut node, mut disk, _) = lone_leader(10);
    let jobs = write(&mut node, &mut disk, 1, 12);
    assert_eq!(jobs.len(), 1, "one job at a time: {jobs:?}");
    let job = jobs.into_iter().next().unwrap();
    let at = job.index();
    assert!(at >= 10, "{job:?}");
    assert_eq!(snapshot_index(&disk), 1, "nothing stored before the job is encoded");
    let first_kept = disk.entries.first().unwrap().index;
    assert!(first_kept <= 2, "the log is kept whole: first entry {first_kept}");
    assert_eq!(node.stats().snapshots_taken, 0);

    // The job is the state at its index, whatever was applied after it.
    let bytes = job.encode();
    let image = SnapshotImage::decode(&bytes).unwrap();
    assert_eq!(image.index, at);
    assert_eq!(image.state.applied_index(), at);

    // A reference to another position is not this job's file: nothing changes.
    let reference = SnapshotRef::of_bytes(at, image.term, &bytes);
    node.handle_snapshot_durable(SnapshotRef { term: image.term + 1, ..reference });
    assert!(drain(&mut node, &mut disk).is_empty());
    assert_eq!(snapshot_index(&disk), 1);

    node.handle_snapshot_durable(reference);
    assert!(drain(&mut node, &mut disk).is_empty());
    let stored = disk.snapshot.as_ref().unwrap();
    assert_eq!(stored.reference, reference, "stored in the compacting batch");
    assert_eq!(stored.image, image, "with the image the file holds");
    assert!(disk.entries.iter().all(|e| e.index > at), "compacted up to the snapshot");
    assert_eq!(node.stats().snapshots_taken, 1);
    assert_eq!(node.stats().snapshots_taken_bytes, bytes.len() as u64);

    // A result nobody waits for any more changes nothing.
    node.handle_snapshot_durable(reference);
    assert!(drain(&mut node, &mut disk).is_empty());
    assert_eq!(node.stats().snapshots_taken, 1);
}

#[test]
fn a_crash_before_the_job_is_encoded_recovers_from_the_old_snapshot_and_the_log() {
    let (mut node, mut disk, config) = lone_leader(10);
    let jobs = write(&mut node, &mut disk, 1, 15);
    assert_eq!(jobs.len(), 1);
    let before = node.state().clone();
    let applied = node.state().applied_index();
    drop(node); // the crash: the job is lost with the process
    drop(jobs);

    let mut node = Node::new(config, disk.clone()).unwrap();
    let jobs = drain(&mut node, &mut disk);
    assert_eq!(snapshot_index(&disk), 1, "still the bootstrap snapshot");
    // Replayed from the log (plus the new term's empty entry).
    assert!(node.state().applied_index() > applied);
    assert_eq!(node.state().len(), 15);
    assert!((1..=15).all(|i| node.state().get(&format!("k{i}")) == before.get(&format!("k{i}"))));
    // The restarted node takes the snapshot again.
    let mut jobs: Vec<SnapshotJob> =
        jobs.into_iter().chain(write(&mut node, &mut disk, 100, 1)).collect();
    assert_eq!(jobs.len(), 1);
    let job = jobs.pop().unwrap();
    let at = job.index();
    node.handle_snapshot_durable(job.into_image().reference());
    drain(&mut node, &mut disk);
    assert_eq!(snapshot_index(&disk), at);
}
