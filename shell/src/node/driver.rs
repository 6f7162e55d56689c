//! The driver: ONE tokio task owns the core [`Node`] and moves its inputs and outputs.
//!
//! Inputs: the tick timer, client requests, peer batches, gossip datagrams, disk progress,
//! feedback of the peer links (unreachable, snapshot outcome), control messages. Each wakeup
//! (one `select!`) takes the input that woke it and then every other input already waiting, up
//! to [`MAX_CALLS_PER_STEP`] client requests and [`MAX_PEER_BATCHES_PER_STEP`] peer batches,
//! hands them all to the core, and drains the outputs once, in the order `Node`'s documentation
//! prescribes: the core runs ONE Raft Ready for the lot (many proposals → one log append, one
//! persist batch, one message per follower). Outputs: persist batches → the disk writer;
//! transmits → per-peer links; replies → the waiting callers; events; gossip datagrams → the
//! gossip socket (dropped when its queue is full). Every queue is bounded: client calls and
//! peer batches wait for room (backpressure), a full peer link drops the message and tells the
//! core the peer is unreachable.
//!
//! The [`View`] callers read is updated after every drain; watchers are woken only when
//! something they can act on changed (role, term, leader, configuration, members, gossip,
//! whether the node can serve), not for every commit.
//!
//! The disk writer is a dedicated thread: it takes every batch queued so far, writes them
//! with ONE `Disk::write` (one fsync: group commit) and publishes the highest id written;
//! the driver then calls `handle_persisted`. A failed write stops the node: nothing may be
//! acknowledged that is not durable. (A [`Storage`] that does not block, the simulator's
//! memory store, gets the same writer as a task instead of a thread.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mokv_core::gossip::{Datagram, GossipMember, Health};
use mokv_core::persist::PersistBatch;
use mokv_core::{
    Directory, Error, Event, LeaderHint, MemberInfo, Node, NodeId, Now, Request, RequestId,
    Response, Role, SnapshotImage, SnapshotJob, SnapshotRef, Status, Transmit,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::net::peer_link::{Feedback, Links};
use crate::net::transport::PeerConnector;
use crate::node::slow_pass::PassClock;
use crate::node::watch_hub::{WatchHub, WatchPageRequest};
use crate::storage::disk::DiskError;
use crate::storage::{SnapshotStore, Storage};

/// Client requests waiting for the driver.
const CALL_QUEUE: usize = 4096;
/// Peer batches (one `RaftBatch` each, or one snapshot) waiting for the driver.
const PEER_QUEUE: usize = 256;
/// Client requests taken per wakeup at most (besides the one that woke the driver).
pub const MAX_CALLS_PER_STEP: usize = 1024;
/// Peer batches taken per wakeup at most.
pub const MAX_PEER_BATCHES_PER_STEP: usize = 64;
/// Gossip datagrams taken per wakeup at most.
const MAX_DATAGRAMS_PER_STEP: usize = 64;
/// Persist batches waiting for the disk writer.
const DISK_QUEUE: usize = 4096;
/// Batches written by one `Disk::write` at most.
const MAX_GROUP_BATCHES: usize = 1024;
/// Watch page requests waiting for the driver (each watcher has at most one in flight).
const WATCH_QUEUE: usize = 1024;
/// How long a caller waits for room in the call queue before it is told the node is busy.
const ENQUEUE_WAIT: Duration = Duration::from_secs(1);

/// What callers see of the node, refreshed after every driver step.
#[derive(Debug, Clone)]
pub struct View {
    pub status: Status,
    pub members: BTreeMap<NodeId, MemberInfo>,
    pub leader_hint: Option<LeaderHint>,
    /// Every other gossip identity, with its health in this node's view (metrics).
    pub gossip: Vec<GossipMember>,
    /// Every node the core knows of, each by its newest incarnation (`Node::directory`).
    pub directory: Directory,
    /// The cluster this node's data belongs to (0: none yet).
    pub cluster_id: u64,
    /// What this node answers `Peer.Identify` with (`None` without gossip).
    pub own_claim: Option<mokv_core::gossip::NodeClaim>,
}

impl View {
    /// Where member `id`'s rpc port is now (its directory entry's address).
    pub fn rpc_addr_of(&self, id: NodeId) -> Option<String> {
        self.directory.get(id).and_then(|e| e.rpc_addr.clone())
    }

    /// Health of Raft member `id` in this node's view (`None`: gossip has not seen it).
    pub fn health(&self, id: NodeId) -> Option<Health> {
        self.directory.get(id).and_then(|e| e.health)
    }
}

/// The answer to one call: the core's, or [`CallError::Stopped`] for a call the core never saw.
type Reply = Result<Result<Response, Error>, CallError>;

struct Call {
    request: Request,
    reply: oneshot::Sender<Reply>,
}

/// The messages of one received `RaftBatch` (or one snapshot): one input.
struct PeerInbound {
    /// The name in the caller's node certificate (the core admits only messages from the
    /// node of that name).
    caller: String,
    messages: Vec<Vec<u8>>,
    /// With one snapshot message: the image the shell decoded from its received file.
    image: Option<SnapshotImage>,
    /// Told whether the core accepted every message.
    done: Option<oneshot::Sender<bool>>,
}

enum Control {
    LearnAddress {
        id: NodeId,
        addr: String,
    },
    Leave,
    /// Tell the other members over `Peer.Leave` that this node leaves.
    AnnounceLeave,
    /// Member `id` says (caller certificate name `caller`) that it leaves.
    PeerLeave {
        caller: String,
        id: NodeId,
        done: oneshot::Sender<Result<(), mokv_core::gossip::LeaveRefused>>,
    },
    GossipStop,
    /// Peer `id` greeted this node: it just started.
    PeerStarted {
        id: NodeId,
    },
    Stop,
}

/// Why a call did not reach the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the node is busy")]
    Busy,
    /// The request never reached the core: nothing was applied.
    #[error("the node is shutting down")]
    Stopped,
    /// The node stopped (shutdown, disk failure, panic of the driver) after the request reached
    /// the core: a write may already be in the log and may still commit, so its outcome is
    /// unknown, exactly like a write that timed out.
    #[error(
        "the node stopped with the request in flight; the write may or may not have been applied"
    )]
    Interrupted,
}

/// A cheap, cloneable way to talk to the driver.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    /// This node's Raft id (fixed for the life of the process).
    id: NodeId,
    calls: mpsc::Sender<Call>,
    peers: mpsc::Sender<PeerInbound>,
    control: mpsc::Sender<Control>,
    gossip: mpsc::Sender<Vec<u8>>,
    watch_pages: mpsc::Sender<WatchPageRequest>,
    view: watch::Receiver<View>,
    /// The node's snapshot files (received files go there).
    snapshot_files: Arc<dyn SnapshotStore>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}
impl std::fmt::Debug for PeerInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerInbound({} messages)", self.messages.len())
    }
}
impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl DriverHandle {
    /// Hands a request to the core and waits for its answer.
    pub async fn call(&self, request: Request) -> Result<Result<Response, Error>, CallError> {
        let (tx, rx) = oneshot::channel();
        let permit = tokio::time::timeout(ENQUEUE_WAIT, self.calls.reserve())
            .await
            .map_err(|_| CallError::Busy)?
            .map_err(|_| CallError::Stopped)?;
        permit.send(Call { request, reply: tx });
        // A dropped sender: the driver ended without answering (it answers `Stopped` itself for
        // calls it never handed to the core), possibly by a panic, so the call may be in the log.
        rx.await.map_err(|_| CallError::Interrupted)?
    }

    /// This node's Raft id.
    /// Hands a watcher's page request to the driver ([`WatchHub::on_page`] answers it).
    pub async fn watch_page(&self, request: WatchPageRequest) -> Result<(), CallError> {
        self.watch_pages.send(request).await.map_err(|_| CallError::Stopped)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Reads the latest view without copying it (do not hold on: the driver waits for it).
    pub fn with_view<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        f(&self.view.borrow())
    }

    /// Delivers the messages of one received batch from the node whose certificate names
    /// `caller` as ONE input (the core steps them all, then runs one Ready); waits for room in
    /// the queue. With `wait_outcome`, also waits until the core accepted (`true`) or refused
    /// them (`false` if any was refused).
    pub async fn peer_batch(
        &self,
        caller: &str,
        messages: Vec<Vec<u8>>,
        wait_outcome: bool,
    ) -> Result<bool, CallError> {
        let (tx, rx) = oneshot::channel();
        let done = wait_outcome.then_some(tx);
        let inbound = PeerInbound { caller: caller.to_owned(), messages, image: None, done };
        self.peers.send(inbound).await.map_err(|_| CallError::Stopped)?;
        if wait_outcome {
            rx.await.map_err(|_| CallError::Stopped)
        } else {
            Ok(true)
        }
    }

    /// Delivers a snapshot message whose file was received, checked and decoded into `image`
    /// (see `Node::handle_snapshot_message`); waits until the core accepted it (`true`) or
    /// refused it.
    pub async fn peer_snapshot(
        &self,
        caller: &str,
        message: Vec<u8>,
        image: SnapshotImage,
    ) -> Result<bool, CallError> {
        let (tx, rx) = oneshot::channel();
        let inbound = PeerInbound {
            caller: caller.to_owned(),
            messages: vec![message],
            image: Some(image),
            done: Some(tx),
        };
        self.peers.send(inbound).await.map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)
    }

    /// The node's snapshot files: where received ones go.
    pub fn snapshot_files(&self) -> &Arc<dyn SnapshotStore> {
        &self.snapshot_files
    }

    /// Where the gossip socket hands opened datagrams (the socket drops when it is full).
    pub fn gossip_inbound(&self) -> mpsc::Sender<Vec<u8>> {
        self.gossip.clone()
    }

    /// Records where a node that is not in the member table yet can be reached (an embedding
    /// program without gossip tells a new learner where its leader is).
    pub async fn learn_address(&self, id: NodeId, addr: String) {
        let _ = self.control.send(Control::LearnAddress { id, addr }).await;
    }

    /// Starts leaving the cluster for good (see `Node::handle_leave`).
    pub async fn leave(&self) {
        let _ = self.control.send(Control::Leave).await;
    }

    /// Tells every other member over `Peer.Leave` that this node leaves (after
    /// [`leave`](Self::leave)); a round still under way is not started again.
    pub async fn announce_leave(&self) {
        let _ = self.control.send(Control::AnnounceLeave).await;
    }

    /// Member `id` says, over a connection authenticated by the node certificate of `caller`,
    /// that it leaves for good (see `Node::handle_peer_leave`).
    pub async fn peer_leave(
        &self,
        caller: &str,
        id: NodeId,
    ) -> Result<Result<(), mokv_core::gossip::LeaveRefused>, CallError> {
        let (done, rx) = oneshot::channel();
        let c = Control::PeerLeave { caller: caller.to_owned(), id, done };
        self.control.send(c).await.map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)
    }

    /// Declares this node down in gossip and stops gossiping.
    pub async fn gossip_stop(&self) {
        let _ = self.control.send(Control::GossipStop).await;
    }

    /// The latest view of the node.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver that changes whenever the view does.
    pub fn watch(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Peer `id` greeted this node (an admitted empty first batch on a Raft stream, which a
    /// node sends each peer when it starts; see `net::peer_link`): the link to it is renewed
    /// and, if this node leads, it sends heartbeats at once (`Node::handle_peer_started`). A
    /// hint: dropped when the control queue is full.
    pub fn peer_started(&self, id: NodeId) {
        let _ = self.control.try_send(Control::PeerStarted { id });
    }

    /// Asks the driver to stop: it finishes writing what is queued, then returns.
    pub async fn stop(&self) {
        let _ = self.control.send(Control::Stop).await;
    }
}

/// A verification's outcome, back from its task.
type Verified = (mokv_core::gossip::VerifyRequest, Option<mokv_core::gossip::NodeClaim>);

/// What the driver does after an input.
enum Step {
    Go,
    Stop,
}

/// Progress of the disk writer.
#[derive(Debug, Clone, Default)]
struct DiskProgress {
    persisted: u64,
    failed: Option<String>,
}

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub tick: Duration,
    /// How peer links connect (mTLS in mokvd). A new value (reloaded certificates) applies to
    /// links made from then on: the links reconnect at their next message, and what the old
    /// connections hold still leaves on them. The driver never looks inside.
    pub peer: watch::Receiver<PeerConnector>,
}

/// Why the driver stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("writing the raft store failed: {0}")]
    Disk(String),
    #[error("the disk writer stopped unexpectedly")]
    DiskWriterGone,
    /// A snapshot file could not be written (the file system refused it).
    #[error("writing a snapshot file failed: {0}")]
    Snapshot(#[from] crate::storage::disk::DiskError),
    /// The thread that writes a snapshot file could not be started.
    #[error("starting the snapshot writer thread failed: {0}")]
    SnapshotThread(#[source] std::io::Error),
    /// The driver's own thread or runtime could not be started.
    #[error("starting the driver's thread failed: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The task that owns the core node.
pub struct Driver {
    node: Node,
    tick: Duration,
    calls: mpsc::Receiver<Call>,
    peers_in: mpsc::Receiver<PeerInbound>,
    control: mpsc::Receiver<Control>,
    watch_pages: mpsc::Receiver<WatchPageRequest>,
    watches: WatchHub,
    feedback: mpsc::Receiver<Feedback>,
    disk_tx: Option<mpsc::Sender<PersistBatch>>,
    disk_progress: watch::Receiver<DiskProgress>,
    disk_writer: Option<DiskWriter>,
    /// Snapshot jobs are written to their files on a blocking thread (a real disk); with an
    /// in-memory disk (tests, the simulator) at once, so that a simulated run stays
    /// deterministic.
    encode_off_thread: bool,
    /// Where snapshot files are written (and read by the peer links).
    snapshot_files: Arc<dyn SnapshotStore>,
    /// The runtime `new` was called on: network work the driver starts (peer links, identity
    /// checks, the leave round) runs there, also when the driver runs on a thread of its own.
    io: tokio::runtime::Handle,
    /// Durable snapshot files (or the error writing one) coming back from the blocking threads.
    snapshots_tx: mpsc::Sender<Result<SnapshotRef, DiskError>>,
    snapshots_done: mpsc::Receiver<Result<SnapshotRef, DiskError>>,
    /// The wall clock in milliseconds: only the core's proposal stamps (session cluster time).
    now_ms: fn() -> u64,
    /// Where the monotonic clock the core's timers run on starts (tokio's, so a simulated
    /// runtime's paused time drives it too).
    started: tokio::time::Instant,
    acked: u64,
    waiting: HashMap<RequestId, oneshot::Sender<Reply>>,
    next_request: RequestId,
    links: Links,
    gossip_in: mpsc::Receiver<Vec<u8>>,
    /// Dials identity verifications (`Node::poll_verify`) with the peer connector.
    verify_with: watch::Receiver<PeerConnector>,
    verified_tx: mpsc::Sender<Verified>,
    verified: mpsc::Receiver<Verified>,
    /// The `Peer.Leave` round under way, if any (see [`Driver::announce_leave`]).
    leave_round: Option<tokio::task::JoinHandle<()>>,
    gossip_out: Option<mpsc::Sender<Datagram>>,
    /// Where each node's peer port is now (`MemberEntry::peer_addr`: gossip's newest live
    /// incarnation, else the member table), refreshed when membership or gossip changes.
    peer_addrs: BTreeMap<NodeId, String>,
    /// Addresses told by the embedding program ([`DriverHandle::learn_address`]); the member
    /// table supersedes them.
    learned: BTreeMap<NodeId, String>,
    gossip_dirty: bool,
    view: watch::Sender<View>,
    /// The core reported a membership change (also sent after a snapshot install) since the
    /// view was last published.
    members_dirty: bool,
    quota_refusals: crate::node::quota::QuotaRefusals,
    metrics: crate::metrics::publish::NodeMetrics,
    request_times: crate::metrics::timing::RequestTimes,
    /// How long the pass under way has kept the driver busy (see `slow_pass`).
    pass: PassClock,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("node", &self.node).finish_non_exhaustive()
    }
}

fn view_of(node: &Node) -> View {
    View {
        status: node.status(),
        members: node.members().clone(),
        leader_hint: node.leader_hint(),
        gossip: node.gossip_members(),
        directory: node.directory(),
        cluster_id: node.cluster_id().unwrap_or(0),
        own_claim: node.own_claim(),
    }
}

fn peer_addrs_of(node: &Node) -> BTreeMap<NodeId, String> {
    node.directory().members.into_values().filter_map(|e| Some((e.id, e.peer_addr?))).collect()
}

/// Nice value of the thread that writes snapshot files (19 is the lowest priority).
const SNAPSHOT_THREAD_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`SNAPSHOT_THREAD_NICE`]. On Linux the nice
/// value is per thread, and `setpriority` on "this process" means the calling thread. Failing
/// to lower it only costs latency, so it is logged, not returned.
fn lower_this_threads_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, SNAPSHOT_THREAD_NICE) {
        tracing::debug!(error = %e, "could not lower the snapshot thread's priority");
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Driver {
    /// Builds the driver around a started node and its disk; `run` it on a task.
    pub fn new(node: Node, disk: Arc<dyn Storage>, config: DriverConfig) -> (Driver, DriverHandle) {
        let (calls_tx, calls) = mpsc::channel(CALL_QUEUE);
        let (peers_tx, peers_in) = mpsc::channel(PEER_QUEUE);
        let (control_tx, control) = mpsc::channel(16);
        let (watch_tx, watch_pages) = mpsc::channel(WATCH_QUEUE);
        let (gossip_tx, gossip_in) = mpsc::channel(crate::net::gossip_net::GOSSIP_QUEUE);
        let (feedback_tx, feedback) = mpsc::channel(1024);
        let (verified_tx, verified) =
            mpsc::channel(mokv_core::gossip::MAX_VERIFICATIONS_IN_FLIGHT + 1);
        let verify_with = config.peer.clone();
        let (disk_tx, disk_rx) = mpsc::channel(DISK_QUEUE);
        let (progress_tx, disk_progress) = watch::channel(DiskProgress::default());
        // One job is under way at a time (the core's rule), so two slots never fill.
        let (snapshots_tx, snapshots_done) = mpsc::channel(2);
        let encode_off_thread = disk.blocks();
        let snapshot_files = disk.snapshot_files();
        let disk_writer = if disk.blocks() {
            std::thread::Builder::new()
                .name("mokv-disk".into())
                .spawn(move || disk_writer(&*disk, disk_rx, &progress_tx))
                .ok()
                .map(DiskWriter::Thread)
        } else {
            let task = async move { disk_writer_task(&*disk, disk_rx, &progress_tx).await };
            Some(DiskWriter::Task(tokio::spawn(task)))
        };
        let (view, view_rx) = watch::channel(view_of(&node));
        let node_id = node.id();
        let handle = DriverHandle {
            id: node.id(),
            calls: calls_tx,
            peers: peers_tx,
            control: control_tx,
            gossip: gossip_tx,
            watch_pages: watch_tx,
            view: view_rx,
            snapshot_files: snapshot_files.clone(),
        };
        let peer_addrs = peer_addrs_of(&node);
        let watches = WatchHub::new(&node);
        let driver = Driver {
            node,
            watch_pages,
            watches,
            tick: config.tick,
            calls,
            peers_in,
            control,
            feedback,
            disk_tx: Some(disk_tx),
            disk_progress,
            disk_writer,
            encode_off_thread,
            snapshot_files: snapshot_files.clone(),
            io: tokio::runtime::Handle::current(),
            snapshots_tx,
            snapshots_done,
            now_ms,
            started: tokio::time::Instant::now(),
            acked: 0,
            waiting: HashMap::new(),
            next_request: 1,
            links: Links::new(node_id, config.peer, feedback_tx, snapshot_files),
            gossip_in,
            verify_with,
            verified_tx,
            verified,
            leave_round: None,
            gossip_out: None,
            peer_addrs,
            learned: BTreeMap::new(),
            gossip_dirty: false,
            view,
            members_dirty: false,
            quota_refusals: crate::node::quota::QuotaRefusals::default(),
            metrics: crate::metrics::publish::NodeMetrics::default(),
            request_times: crate::metrics::timing::RequestTimes::default(),
            pass: PassClock::default(),
        };
        (driver, handle)
    }

    /// Where the core's gossip datagrams go (the gossip socket's send queue).
    pub fn set_gossip_outbound(&mut self, tx: mpsc::Sender<Datagram>) {
        self.gossip_out = Some(tx);
    }

    /// Replaces the wall clock that stamps proposals (a simulator passes its own); the core's
    /// timers keep running on the monotonic clock.
    pub fn with_clock(mut self, now_ms: fn() -> u64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// The clocks handed to the core at a tick.
    fn now(&self) -> Now {
        let monotonic_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now { monotonic_ms, wall_ms: (self.now_ms)() }
    }

    /// [`Driver::run`] on a thread of its own (`mokv-driver`), in a single-threaded runtime;
    /// the network work it starts stays on the calling runtime. The driver then never waits
    /// behind request handlers for a worker thread, nor they behind it (measured when it moved
    /// here: ≈ 25 % less CPU per put on the leader, a third of the slow writes while loading).
    ///
    /// The task resolves once the driver stopped and its runtime is gone (so is everything it
    /// held, the disk among them); it panics if the driver did. A plain thread rather than a
    /// blocking task: the process never waits for it to exit.
    pub fn spawn_on_own_thread(self) -> tokio::task::JoinHandle<Result<(), DriverError>> {
        let (done_tx, done) = oneshot::channel();
        let spawned = std::thread::Builder::new().name("mokv-driver".into()).spawn(move || {
            let (result, node) =
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => {
                        let (result, node) = runtime.block_on(self.run_to_end());
                        (result, Some(node))
                    }
                    Err(e) => (Err(DriverError::Runtime(e)), None),
                };
            let _ = done_tx.send(result);
            // The node is stopped and what it owed is durable: it is freed after the caller
            // heard so. Freeing a large state block by block takes a while (≈ 120 ms of a
            // 1M-key node's stop), and a process that exits meanwhile need not wait for it.
            drop(node);
        });
        tokio::spawn(async move {
            if let Err(e) = spawned {
                return Err(DriverError::Runtime(e));
            }
            match done.await {
                Ok(result) => result,
                Err(_) => panic!("the driver's thread panicked"),
            }
        })
    }

    /// Runs until stopped ([`DriverHandle::stop`]) or until the disk fails.
    pub async fn run(self) -> Result<(), DriverError> {
        self.run_to_end().await.0
    }

    /// [`Driver::run`], handing the stopped node back instead of dropping it (everything else
    /// of the driver is dropped here, its disk writer joined).
    async fn run_to_end(mut self) -> (Result<(), DriverError>, Node) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.greet_peers();
        // Outputs of Node::new (a lone voter campaigns at once).
        let mut result = self.drain().await;
        while result.is_ok() {
            let step = tokio::select! {
                changed = self.disk_progress.changed() => match changed {
                    Ok(()) => self.on_disk_progress(),
                    Err(_) => Err(self.disk_gone()),
                },
                Some(c) = self.control.recv() => Ok(self.on_control(c)),
                Some(d) = self.gossip_in.recv() => {
                    self.on_gossip(&d);
                    Ok(Step::Go)
                }
                _ = ticker.tick() => {
                    self.node.handle_tick(self.now());
                    Ok(Step::Go)
                }
                Some((request, claim)) = self.verified.recv() => {
                    crate::metrics::gossip_verification(claim.is_some());
                    tracing::info!(
                        name = %request.name,
                        raft_id = request.raft_id,
                        rpc_addr = %request.rpc_addr,
                        proven = claim.is_some(),
                        "gossiped identity checked"
                    );
                    self.node.handle_verified(request, claim);
                    Ok(Step::Go)
                }
                Some(fb) = self.feedback.recv() => {
                    self.on_feedback(fb);
                    Ok(Step::Go)
                }
                Some(call) = self.calls.recv() => {
                    self.on_call(call);
                    Ok(Step::Go)
                }
                Some(msg) = self.peers_in.recv() => {
                    self.on_peer(msg);
                    Ok(Step::Go)
                }
                Some(done) = self.snapshots_done.recv() => match done {
                    Ok(reference) => {
                        self.node.handle_snapshot_durable(reference);
                        Ok(Step::Go)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "writing a snapshot file failed; stopping");
                        Err(DriverError::Snapshot(e))
                    }
                },
                Some(w) = self.watch_pages.recv() => {
                    self.watches.on_page(&self.node, w);
                    Ok(Step::Go)
                }
            };
            // The input that woke the driver was handled above; the rest of its pass (the
            // inputs waiting, the outputs of all of them) is timed.
            self.pass.start(tokio::time::Instant::now());
            // Everything else already waiting joins the same Ready.
            let step = step.and_then(|s| match s {
                Step::Go => self.take_waiting_inputs(),
                Step::Stop => Ok(Step::Stop),
            });
            match step {
                Ok(Step::Go) => result = self.drain().await,
                Ok(Step::Stop) => {
                    // Inputs taken before the stop in this pass still get their outputs.
                    result = self.drain().await;
                    break;
                }
                Err(e) => result = Err(e),
            }
        }
        self.finish().await;
        let Driver { node, .. } = self;
        (result, node)
    }

    /// Greets every other member at start (see `net::peer_link`): a restarted node learns who
    /// leads a round trip later, rather than at the leader's next heartbeat after its link to
    /// this node reopened.
    fn greet_peers(&mut self) {
        let me = self.node.id();
        for (id, addr) in self.peer_addrs.iter().filter(|(id, _)| **id != me) {
            self.links.greet(addr, *id);
        }
    }

    /// Hands the core every input that is waiting now, up to the per-step bounds.
    fn take_waiting_inputs(&mut self) -> Result<Step, DriverError> {
        match self.disk_progress.has_changed() {
            Ok(true) => {
                self.on_disk_progress()?;
            }
            Ok(false) => {}
            Err(_) => return Err(self.disk_gone()),
        }
        while let Ok(c) = self.control.try_recv() {
            if let Step::Stop = self.on_control(c) {
                return Ok(Step::Stop);
            }
        }
        while let Ok(fb) = self.feedback.try_recv() {
            self.on_feedback(fb);
        }
        for _ in 0..MAX_DATAGRAMS_PER_STEP {
            let Ok(d) = self.gossip_in.try_recv() else { break };
            self.on_gossip(&d);
        }
        for _ in 0..MAX_PEER_BATCHES_PER_STEP {
            let Ok(msg) = self.peers_in.try_recv() else { break };
            self.on_peer(msg);
        }
        for _ in 0..MAX_CALLS_PER_STEP {
            let Ok(call) = self.calls.try_recv() else { break };
            self.on_call(call);
        }
        Ok(Step::Go)
    }

    /// Why the disk writer is gone: its last reported failure, if any.
    fn disk_gone(&self) -> DriverError {
        match self.disk_progress.borrow().failed.clone() {
            Some(e) => DriverError::Disk(e),
            None => DriverError::DiskWriterGone,
        }
    }

    fn on_disk_progress(&mut self) -> Result<Step, DriverError> {
        let p = self.disk_progress.borrow_and_update().clone();
        if let Some(e) = p.failed {
            return Err(DriverError::Disk(e));
        }
        if p.persisted > self.acked {
            self.acked = p.persisted;
            self.node.handle_persisted(p.persisted);
        }
        Ok(Step::Go)
    }

    fn on_control(&mut self, c: Control) -> Step {
        match c {
            Control::Stop => return Step::Stop,
            Control::LearnAddress { id, addr } => {
                self.learned.insert(id, addr);
            }
            Control::Leave => self.node.handle_leave(),
            Control::AnnounceLeave => self.announce_leave(),
            Control::PeerLeave { caller, id, done } => {
                let _ = done.send(self.node.handle_peer_leave(&caller, id));
            }
            Control::GossipStop => self.node.handle_gossip_stop(),
            Control::PeerStarted { id } => {
                if let Some(addr) = self.peer_addrs.get(&id).or_else(|| self.learned.get(&id)) {
                    self.links.renew(addr, id);
                }
                self.node.handle_peer_started(id);
            }
        }
        Step::Go
    }

    /// One round of `Peer.Leave` calls to every other member of the configuration, at the
    /// address this node reaches it at; at most one round at a time.
    fn announce_leave(&mut self) {
        if self.leave_round.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let me = self.node.id();
        let conf = self.node.status().conf.all_ids();
        let to: Vec<(String, String)> = self
            .node
            .directory()
            .members
            .into_values()
            .filter(|e| e.id != me && conf.contains(&e.id) && !e.name.is_empty())
            .filter_map(|e| Some((e.name, e.peer_addr?)))
            .collect();
        let connector = self.verify_with.borrow().clone();
        self.leave_round = Some(self.io.spawn(async move {
            let acknowledged = crate::net::leave::announce(connector, me, to).await;
            tracing::info!(acknowledged, "told the other members that this node leaves");
        }));
    }

    fn on_gossip(&mut self, d: &[u8]) {
        if let Err(e) = self.node.handle_gossip(d) {
            tracing::debug!(error = %e, "gossip datagram refused by the core");
        }
    }

    fn on_feedback(&mut self, fb: Feedback) {
        match fb {
            Feedback::Unreachable(to) => self.node.handle_unreachable(to),
            Feedback::Snapshot { to, delivered } => self.node.handle_snapshot_status(to, delivered),
        }
    }

    fn on_call(&mut self, call: Call) {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(id, call.reply);
        self.request_times.start(id, &call.request);
        self.node.handle_request(id, call.request);
    }

    fn on_peer(&mut self, msg: PeerInbound) {
        let mut all_ok = true;
        let mut image = msg.image;
        for m in &msg.messages {
            let result = match image.take() {
                Some(image) => self.node.handle_snapshot_message(Some(&msg.caller), m, image),
                None => self.node.handle_peer_message_from(&msg.caller, m),
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "peer message refused");
                all_ok = false;
            }
        }
        if let Some(done) = msg.done {
            let _ = done.send(all_ok);
        }
    }

    /// Drains the node's outputs in the documented order, until it has nothing more to say.
    async fn drain(&mut self) -> Result<(), DriverError> {
        loop {
            while let Some(batch) = self.node.poll_persist() {
                let Some(tx) = &self.disk_tx else { return Err(DriverError::DiskWriterGone) };
                match tx.try_send(batch) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(batch)) => {
                        // Waits for room: the disk is the bottleneck and everything should
                        // slow down.
                        let waiting = tokio::time::Instant::now();
                        tx.send(batch).await.map_err(|_| DriverError::DiskWriterGone)?;
                        self.pass.waited_for_disk(waiting.elapsed());
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Err(DriverError::DiskWriterGone)
                    }
                }
            }
            let mut encoded_here = false;
            while let Some(job) = self.node.poll_snapshot_job() {
                encoded_here |= self.start_snapshot(job)?;
            }
            let mut failed: Vec<(NodeId, bool)> = Vec::new();
            while let Some(t) = self.node.poll_transmit() {
                let to = t.to;
                if let Err(is_snapshot) = self.route(t) {
                    failed.push((to, is_snapshot));
                }
            }
            while let Some(reply) = self.node.poll_reply() {
                if let Err(Error::QuotaExceeded(q)) = &reply.result {
                    self.quota_refusals.refused(q);
                }
                self.request_times.answered(reply.id, reply.result.is_ok());
                if let Some(tx) = self.waiting.remove(&reply.id) {
                    let _ = tx.send(Ok(reply.result));
                }
            }
            while let Some(event) = self.node.poll_event() {
                self.on_event(event);
            }
            while let Some(d) = self.node.poll_datagram() {
                let sent = self.gossip_out.as_ref().is_some_and(|tx| tx.try_send(d).is_ok());
                if !sent {
                    crate::metrics::gossip_dropped("outbound_full");
                }
            }
            // The core bounds these (a few in flight); each task ends within its timeout.
            while let Some(request) = self.node.poll_verify() {
                let connector = self.verify_with.borrow().clone();
                let tx = self.verified_tx.clone();
                self.io.spawn(async move {
                    let claim = crate::net::identify::verify(&connector, &request).await;
                    let _ = tx.send((request, claim)).await;
                });
            }
            crate::metrics::gossip_identities_ignored(self.node.gossip_identities_ignored());
            if failed.is_empty() && !encoded_here {
                break;
            }
            // Reported after the drain pass: these are inputs and produce outputs again.
            for (to, is_snapshot) in failed {
                if is_snapshot {
                    self.node.handle_snapshot_status(to, false);
                } else {
                    self.node.handle_unreachable(to);
                }
            }
        }
        self.watches.publish(&self.node);
        let status = self.node.status();
        if let Some(slow) = self.pass.finish(tokio::time::Instant::now(), status.applied_index) {
            crate::metrics::slow_driver_pass();
            tracing::warn!(
                busy_ms = slow.busy.as_millis() as u64,
                disk_wait_ms = slow.disk_wait.as_millis() as u64,
                applied_entries = slow.applied_entries,
                "slow driver pass: every request and Raft message of this node waited for it"
            );
        }
        crate::metrics::node_status(&status);
        crate::metrics::state_bytes(self.node.state().state_bytes());
        self.metrics.after_step(&self.node, self.links.queue_depths());
        // The member table is copied only when it changed, not after every request.
        let members_changed = std::mem::take(&mut self.members_dirty);
        let gossip_changed = std::mem::take(&mut self.gossip_dirty);
        let node = &self.node;
        self.view.send_if_modified(|old| {
            let o = &old.status;
            // What a watcher can act on; commit and apply progress alone wakes nobody (the
            // value is still updated in place, so `view()` always reads the latest).
            let notable = members_changed
                || gossip_changed
                || o.term != status.term
                || o.role != status.role
                || o.leader != status.leader
                || o.conf != status.conf
                || o.can_serve() != status.can_serve();
            if !notable && *o == status {
                return false;
            }
            if members_changed {
                old.members = node.members().clone();
            }
            if gossip_changed {
                old.gossip = node.gossip_members();
                old.cluster_id = node.cluster_id().unwrap_or(0);
            }
            if notable {
                old.leader_hint = node.leader_hint();
                old.directory = node.directory();
            }
            // Small, and read by `Peer.Identify`: always current (leaving, cluster id learned).
            old.own_claim = node.own_claim();
            old.status = status;
            notable
        });
        Ok(())
    }

    /// Writes a snapshot job to its file away from this task; the file's reference comes back
    /// as an input once the file is durable. Taking the job cost the driver one copy-on-write
    /// clone of the state. True when it was written here and handed back at once (an input:
    /// the drain goes on).
    fn start_snapshot(&mut self, job: SnapshotJob) -> Result<bool, DriverError> {
        if !self.encode_off_thread {
            let reference = self.snapshot_files.write_snapshot(job)?;
            self.node.handle_snapshot_durable(reference);
            return Ok(true);
        }
        let tx = self.snapshots_tx.clone();
        let files = self.snapshot_files.clone();
        // Its own thread, niced: encoding a large state takes seconds of CPU, and on a machine
        // with few cores it must not take them from the driver, the network and the disk
        // writer (which would show as write latency). A blocking-pool thread would keep the
        // lower priority for later work, and an unprivileged process cannot raise it again.
        let spawned = std::thread::Builder::new().name("mokv-snapshot".into()).spawn(move || {
            lower_this_threads_priority();
            let started = std::time::Instant::now();
            let index = job.index();
            let done = files.write_snapshot(job);
            if let Ok(r) = &done {
                tracing::info!(
                    index,
                    bytes = r.len_bytes,
                    write_ms = started.elapsed().as_millis() as u64,
                    "snapshot file written off the driver"
                );
            }
            // The driver is gone only when the node stops.
            let _ = tx.blocking_send(done);
        });
        spawned.map_err(DriverError::SnapshotThread)?;
        Ok(false)
    }

    /// Queues a transmit on its peer's link. `Err(is_snapshot)` when it was dropped.
    fn route(&mut self, t: Transmit) -> Result<(), bool> {
        let (is_snapshot, to) = (t.is_snapshot, t.to);
        let addr: &str = match self.peer_addrs.get(&t.to).or_else(|| self.learned.get(&t.to)) {
            Some(a) => a,
            None => {
                crate::metrics::peer_dropped(t.to);
                return Err(is_snapshot);
            }
        };
        if self.links.send(addr, t) {
            Ok(())
        } else {
            crate::metrics::peer_dropped(to);
            Err(is_snapshot)
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::RoleChanged { role, term, leader } => {
                tracing::info!(?role, term, ?leader, "raft role changed");
                if role == Role::Leader {
                    tracing::info!(term, "this node is the leader");
                }
            }
            Event::MembershipChanged => {
                self.members_dirty = true;
                let members = self.node.members();
                // Links to nodes that left; learned addresses are superseded.
                self.links.retain(|id| members.contains_key(id) || self.learned.contains_key(id));
                self.learned.retain(|id, _| !members.contains_key(id));
                self.peer_addrs = peer_addrs_of(&self.node);
                tracing::info!(conf = ?self.node.status().conf, "membership changed");
            }
            Event::Removed => tracing::warn!("this node was removed from the cluster"),
            Event::SnapshotInstalled { index } => tracing::info!(index, "snapshot installed"),
            Event::GossipChanged => {
                self.gossip_dirty = true;
                let view = self.node.gossip_members();
                self.peer_addrs = peer_addrs_of(&self.node);
                self.metrics.gossip_view(&view);
                tracing::debug!(members = view.len(), "gossip membership changed");
            }
            Event::ClusterIdLearned { cluster_id } => {
                self.gossip_dirty = true;
                tracing::info!(cluster_id = format!("{cluster_id:016x}"), "joined a cluster");
            }
            other => tracing::debug!(?other, "event"),
        }
    }

    /// Stops the links, answers waiting callers, and lets the disk writer finish what is queued.
    ///
    /// A call the core has seen may be in the log (and commit on another node, or when this one
    /// restarts): it is answered [`CallError::Interrupted`] (indeterminate). A call still in the
    /// queue never reached the core: [`CallError::Stopped`] (nothing applied).
    async fn finish(&mut self) {
        self.links.clear();
        self.request_times.clear();
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Err(CallError::Interrupted));
        }
        self.calls.close();
        while let Ok(call) = self.calls.try_recv() {
            let _ = call.reply.send(Err(CallError::Stopped));
        }
        self.disk_tx = None;
        match self.disk_writer.take() {
            Some(DiskWriter::Thread(t)) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            Some(DiskWriter::Task(t)) => {
                let _ = t.await;
            }
            None => {}
        }
        // Whatever the writer finished last is durable; tell the core for completeness.
        let p = self.disk_progress.borrow().clone();
        if p.failed.is_none() && p.persisted > self.acked {
            self.node.handle_persisted(p.persisted);
        }
    }
}

/// The disk writer, on its thread or task.
#[derive(Debug)]
enum DiskWriter {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

/// The disk writer thread: group commit of everything queued, one `Disk::write` at a time.
fn disk_writer(
    disk: &dyn Storage,
    mut rx: mpsc::Receiver<PersistBatch>,
    progress: &watch::Sender<DiskProgress>,
) {
    while let Some(first) = rx.blocking_recv() {
        if !write_group(disk, first, &mut rx, progress) {
            return;
        }
    }
}

/// The same writer as a task, for a store that does not block.
async fn disk_writer_task(
    disk: &dyn Storage,
    mut rx: mpsc::Receiver<PersistBatch>,
    progress: &watch::Sender<DiskProgress>,
) {
    while let Some(first) = rx.recv().await {
        if !write_group(disk, first, &mut rx, progress) {
            return;
        }
    }
}

/// A raft store write (with its sync) that took this long is logged: writes wait for it,
/// and on a shared disk a snapshot file or another program's I/O shows up here first.
const SLOW_WRITE_SECONDS: f64 = 0.1;

/// Writes `first` and whatever else is queued with one `write`; `false` once it failed.
fn write_group(
    disk: &dyn Storage,
    first: PersistBatch,
    rx: &mut mpsc::Receiver<PersistBatch>,
    progress: &watch::Sender<DiskProgress>,
) -> bool {
    let mut group = vec![first];
    while group.len() < MAX_GROUP_BATCHES {
        match rx.try_recv() {
            Ok(b) => group.push(b),
            Err(_) => break,
        }
    }
    let bytes: usize = group
        .iter()
        .map(|b| {
            b.entries.iter().map(|e| e.bytes.len()).sum::<usize>()
                + b.snapshot.as_ref().map_or(0, |_| SnapshotRef::ENCODED_LEN)
        })
        .sum();
    let last = group.last().map_or(0, |b| b.id);
    let started = Instant::now();
    match disk.write(&group) {
        Ok(()) => {
            let has_snapshot = group.iter().any(|b| b.snapshot.is_some());
            let seconds = started.elapsed().as_secs_f64();
            if seconds >= SLOW_WRITE_SECONDS {
                // At most one line per SLOW_WRITE_SECONDS: the writer is the one logging.
                tracing::warn!(
                    ms = (seconds * 1000.0) as u64,
                    bytes,
                    batches = group.len(),
                    has_snapshot,
                    "slow raft store write: every write of this node waited for it"
                );
            }
            crate::metrics::persist_group(group.len(), bytes, seconds, has_snapshot);
            progress.send_modify(|p| p.persisted = p.persisted.max(last));
        }
        Err(e) => {
            tracing::error!(error = %e, "raft store write failed; stopping");
            progress.send_modify(|p| p.failed = Some(e.to_string()));
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::sync::atomic::{AtomicBool, Ordering};

    use mokv_core::persist::DurableState;
    use tonic::Code;

    use super::*;
    use crate::net::transport::ChannelFactory;
    use crate::storage::disk::DiskError;
    use crate::storage::MemoryStorage;

    /// A memory store whose writes fail once `fail` is set: a disk that dies under the node.
    #[derive(Debug, Default)]
    struct FailingDisk {
        inner: MemoryStorage,
        fail: AtomicBool,
    }

    impl Storage for FailingDisk {
        fn load(&self) -> Result<DurableState, DiskError> {
            self.inner.load()
        }
        fn write(&self, batches: &[PersistBatch]) -> Result<(), DiskError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(DiskError::MalformedLogKey { len: 0 });
            }
            self.inner.write(batches)
        }
        fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
            self.inner.get_meta(key)
        }
        fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DiskError> {
            self.inner.put_meta(key, value)
        }
        fn blocks(&self) -> bool {
            false
        }
        fn snapshot_files(&self) -> Arc<dyn crate::storage::SnapshotStore> {
            self.inner.snapshot_files()
        }
    }

    /// A one-voter node that is leader, on a disk the test can break.
    async fn leader(
    ) -> (Arc<FailingDisk>, DriverHandle, tokio::task::JoinHandle<Result<(), DriverError>>) {
        let disk = Arc::new(FailingDisk::default());
        let config = mokv_core::Config::new(1, 7);
        let me = MemberInfo {
            id: 1,
            name: "n1".into(),
            peer_addr: "127.0.0.1:1".into(),
            rpc_addr: "127.0.0.1:1".into(),
            auto_promote: true,
        };
        let cluster = NonZeroU64::new(9).unwrap();
        disk.write(&[Node::bootstrap(&me, &config, cluster)]).unwrap();
        let node = Node::new(config, disk.load().unwrap()).unwrap();
        let connect: ChannelFactory = Arc::new(|e: tonic::transport::Endpoint| e.connect_lazy());
        let (_, peer) = watch::channel(PeerConnector::Plaintext(connect));
        let tick = Duration::from_millis(5);
        let (driver, handle) = Driver::new(node, disk.clone(), DriverConfig { tick, peer });
        let task = tokio::spawn(driver.run());
        let mut view = handle.watch();
        tokio::time::timeout(Duration::from_secs(10), view.wait_for(|v| v.status.can_serve()))
            .await
            .expect("the lone voter leads in time")
            .expect("driver alive");
        (disk, handle, task)
    }

    fn set(key: &str) -> Request {
        Request::Set { key: key.into(), value: b"v".to_vec(), session: None }
    }

    /// A write handed to Raft when the disk fails may still commit (on another node, or after
    /// a restart replays the log): its caller is told DEADLINE_EXCEEDED, never UNAVAILABLE.
    #[tokio::test]
    async fn a_write_in_flight_when_the_disk_fails_is_indeterminate() {
        let (disk, handle, task) = leader().await;
        assert!(matches!(handle.call(set("a")).await, Ok(Ok(_))));
        disk.fail.store(true, Ordering::SeqCst);
        let answer = handle.call(set("b")).await;
        let status: tonic::Status = match answer {
            Err(e) => e.into(),
            Ok(r) => panic!("the write was answered {r:?}"),
        };
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(matches!(task.await, Ok(Err(DriverError::Disk(_)))));
        // Calls after the stop never reach the core: nothing applied, UNAVAILABLE.
        let after: tonic::Status = handle.call(set("c")).await.unwrap_err().into();
        assert_eq!(after.code(), Code::Unavailable);
    }
}
