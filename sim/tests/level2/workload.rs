//! Client hosts running the real `mokv-client` (sessions, retries, leader following) and
//! recording every operation into the level-1 [`History`], on simulated time.
//!
//! All hosts of a turmoil simulation run on one thread, one after the other, so the history is
//! shared through `Rc<RefCell<_>>` and its points are taken right before a call is issued and
//! right after it returned: each recorded interval contains the real one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use mokv_client::{Client, ClientConfig, ClientError, Entry, Plaintext, ReadMode, TlsFiles};
use mokv_core::Rng;
use sim::history::{decode_value, encode_value, History, Observed, OpKind, Outcome, ValueId};
use sim::workload::KEYS;
use turmoil::Sim;

use super::cluster::{addr, NODE_HOSTS};
use super::net;

/// Deadline of one client attempt (the client's `request_timeout`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per call (the client's `max_attempts`).
pub const CLIENT_ATTEMPTS: u32 = 6;

/// What the hosts of one run share with each other and with the test.
#[derive(Debug, Default)]
pub struct Shared {
    pub history: RefCell<History>,
    /// Set by the control host: workload clients start issuing operations.
    pub go: Cell<bool>,
    /// Set by the control host: workload clients finish their current operation and stop.
    pub stop: Cell<bool>,
    /// Workload clients still running.
    pub running: Cell<usize>,
    next_value: Cell<ValueId>,
    /// Findings of the run other than history violations (liveness, convergence, scenario
    /// expectations), and what the workload saw that cannot be (an undecodable value).
    pub problems: RefCell<Vec<String>>,
    /// Text of the notable moments (faults, heals), for the failure report.
    pub trace: RefCell<Vec<String>>,
    /// Crashes and restarts the control host asks for: only the test's loop around
    /// `Sim::step` can do them (turmoil has no crash from inside a host).
    pub host_actions: RefCell<Vec<HostAction>>,
}

/// A crash or restart of a node host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// The node's process dies: its tasks and connections are gone, its storage stays.
    Crash(String),
    /// The node starts again on its storage.
    Restart(String),
}

impl Shared {
    pub fn new() -> Rc<Shared> {
        Rc::new(Shared::default())
    }

    /// A value id no other write of the run uses.
    pub fn fresh_value(&self) -> ValueId {
        let v = self.next_value.get() + 1;
        self.next_value.set(v);
        v
    }

    pub fn problem(&self, p: impl Into<String>) {
        self.problems.borrow_mut().push(p.into());
    }

    pub fn note(&self, n: impl Into<String>) {
        self.trace.borrow_mut().push(format!("t={}ms {}", now_ms(), n.into()));
    }
}

/// Simulated milliseconds since the start of the run.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// A real client over the simulated network, to `endpoints` (host names), its session ids
/// seeded by `seed`. A client given several nodes discovers the members and balances over
/// them; a client given one node is bound to it (discovery off): the scenarios use those to
/// read one node's own view.
pub fn client(endpoints: &[&str], seed: u64) -> Client {
    client_with(endpoints, seed, endpoints.len() > 1)
}

/// [`client`] with discovery on or off.
pub fn client_with(endpoints: &[&str], seed: u64, discovery: bool) -> Client {
    let mut config = ClientConfig::new(
        endpoints.iter().map(|h| addr(h)).collect(),
        // Never read: the connections are plaintext.
        TlsFiles { ca: "-".into(), cert: "-".into(), key: "-".into() },
    );
    config.request_timeout = CLIENT_TIMEOUT;
    config.max_attempts = CLIENT_ATTEMPTS;
    config.discovery = discovery;
    let plaintext = Plaintext { connect: net::channel_factory(), id_seed: seed };
    Client::connect_plaintext(config, plaintext).expect("a client over the simulated network")
}

/// A client plus the shared history: each call is recorded.
pub struct Recorder {
    pub client: Client,
    pub number: u64,
    pub shared: Rc<Shared>,
}

impl Recorder {
    pub fn new(shared: &Rc<Shared>, number: u64, endpoints: &[&str], seed: u64) -> Recorder {
        Recorder { client: client(endpoints, seed), number, shared: shared.clone() }
    }

    fn invoke(&self, kind: OpKind) -> usize {
        self.shared.history.borrow_mut().invoke(self.number, kind, now_ms())
    }

    fn complete(&self, op: usize, outcome: Outcome) -> Outcome {
        self.shared.history.borrow_mut().complete(op, outcome.clone(), now_ms(), None);
        outcome
    }

    fn observe(&self, e: &Entry) -> Option<Observed> {
        match decode_value(&e.value) {
            Some(value) => Some(Observed { value, mod_index: e.mod_revision }),
            None => {
                self.shared
                    .problem(format!("client {} read a value it cannot decode", self.number));
                None
            }
        }
    }

    /// Sets `key` to a fresh value; returns the value and the recorded outcome.
    pub async fn set(&mut self, key: &str) -> (ValueId, Outcome) {
        let value = self.shared.fresh_value();
        let op = self.invoke(OpKind::Set { key: key.into(), value });
        let outcome = match self.client.set(key, &encode_value(value)).await {
            Ok(revision) => Outcome::Written { revision },
            // Any failure of a write may hide an application (even UNAVAILABLE after the
            // request left: a broken connection): the history takes it as maybe applied.
            Err(_) => Outcome::MaybeApplied,
        };
        (value, self.complete(op, outcome))
    }

    pub async fn delete(&mut self, key: &str) -> Outcome {
        let op = self.invoke(OpKind::Delete { key: key.into() });
        let outcome = match self.client.delete(key).await {
            // The client does not return a delete's revision; only Sets' revisions are checked.
            Ok(_) => Outcome::Written { revision: 0 },
            Err(_) => Outcome::MaybeApplied,
        };
        self.complete(op, outcome)
    }

    pub async fn get(&mut self, key: &str, mode: ReadMode) -> Outcome {
        let linearizable = mode == ReadMode::Linearizable;
        let op = self.invoke(OpKind::Get { key: key.into(), linearizable });
        let outcome = match self.client.get(key, mode).await {
            Ok(e) => Outcome::Read(e.as_ref().and_then(|e| self.observe(e))),
            Err(e) => self.read_failed(&e),
        };
        self.complete(op, outcome)
    }

    /// A Range over the whole key space (one page holds it).
    pub async fn range(&mut self, mode: ReadMode) -> Outcome {
        let linearizable = mode == ReadMode::Linearizable;
        let op = self.invoke(OpKind::Range { linearizable });
        let outcome = match self.client.range("k", 100, "", false, mode).await {
            Ok((entries, next)) => {
                if !next.is_empty() {
                    self.shared.problem("a range over 5 keys needed a second page");
                }
                Outcome::Ranged(
                    entries
                        .iter()
                        .filter_map(|e| self.observe(e).map(|o| (e.key.clone(), o)))
                        .collect(),
                )
            }
            Err(e) => self.read_failed(&e),
        };
        self.complete(op, outcome)
    }

    fn read_failed(&self, e: &ClientError) -> Outcome {
        // Refusals (INVALID_ARGUMENT, PERMISSION_DENIED, ...) are never expected here.
        if let ClientError::Refused { code, .. } = e {
            self.shared.problem(format!("client {}: read refused with {code:?}", self.number));
        }
        Outcome::ReadFailed
    }
}

/// Adds a workload client host: once `go` is set it issues random operations on the key space
/// (writes, linearizable and some serializable reads, ranges) until `stop` is set.
pub fn add_workload_client(sim: &mut Sim<'_>, shared: &Rc<Shared>, number: u64, seed: u64) {
    let shared = shared.clone();
    shared.running.set(shared.running.get() + 1);
    let name = format!("c{number}");
    sim.client(name, async move {
        while !shared.go.get() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut rng = Rng::new(seed);
        let mut r = Recorder::new(&shared, number, &NODE_HOSTS, rng.next_u64());
        while !shared.stop.get() {
            let key = KEYS[rng.below(KEYS.len() as u64) as usize];
            match rng.below(100) {
                0..=44 => {
                    r.set(key).await;
                }
                45..=49 => {
                    r.delete(key).await;
                }
                50..=79 => {
                    r.get(key, ReadMode::Linearizable).await;
                }
                80..=87 => {
                    r.get(key, ReadMode::Serializable).await;
                }
                88..=95 => {
                    r.range(ReadMode::Linearizable).await;
                }
                _ => {
                    r.range(ReadMode::Serializable).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
        }
        shared.running.set(shared.running.get() - 1);
        Ok(())
    });
}
