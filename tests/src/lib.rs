//! Helpers for end-to-end tests with real `mokvd` processes.
//!
//! - [`Certs`]: a CA, node and client certificates made by `mokvd certs` in a temp dir.
//! - [`Mokvd`]: one `mokvd` child process on an ephemeral port (`--rpc-port 0`; the bound
//!   address is read from the `mokvd listening on ...` line on stdout). Dropping it SIGKILLs
//!   and reaps the process; [`Mokvd::kill`] / [`Mokvd::restart`] crash and restart it on its
//!   data dir and port.
//! - [`Cluster`]: three nodes formed through bootstrap + join.
//! - [`eventually`]: polling with a deadline (the only waiting the tests do).
//! - Every node is started with port 0 for each listener and `--ports-file`; [`Mokvd`] reads
//!   the bound rpc, gossip and metrics ports from it ([`Mokvd::metrics_port`], read with
//!   [`metric`]).
//! - [`servers`] / [`Certs::servers`]: one node's `GetServers` answer; [`gossip_sockets`]:
//!   gossip sockets bound by the test and handed to the node (only where a node must list a
//!   seed that starts after it); [`Mokvd::terminate`]: SIGTERM and wait for the exit;
//!   [`Mokvd::wipe_and_start`] / [`Mokvd::restart_on_new_rpc_port`]: a node back with an empty
//!   data dir / on another rpc port.
//!
//! - [`mokv_cli`]: one run of the `mokv` CLI as a given identity ([`CliRun`]).
//!
//! The binaries under test are the real `mokvd` and `mokv`, built by cargo from their own
//! packages once per test process ([`Bins::get`]) and run as processes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mokv_client::{Client, ClientConfig, TlsFiles};
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::Server;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The client from the ORIGINAL mökv proto text (`tests/proto/original_kv.proto`).
pub mod original {
    #![allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]
    tonic::include_proto!("api");
}

/// Upper bound of every wait; reaching it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two polls.
pub const POLL: Duration = Duration::from_millis(20);
/// Raft tick of the test nodes (election timeout = 10 ticks = 200..400 ms).
pub const TICK_MS: u64 = 20;

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub mokvd: PathBuf,
    pub mokv: PathBuf,
}

impl Bins {
    /// `mokvd` and `mokv` as their packages build them, from this checkout.
    ///
    /// The first call in a test process runs `cargo build -p mokv-shell --bin mokvd -p
    /// mokv-client --bin mokv` into the target dir and profile of the running test, and waits
    /// for it; later calls return the same paths. Cargo rebuilds what changed and only that, so
    /// the binaries are never stale, and they are built exactly as `mokvd` and `mokv` ship (their
    /// packages' dependencies and features, nothing of the test crate's). Cargo does not build
    /// another package's binaries for an integration test, and `CARGO_BIN_EXE_*` names only the
    /// test's own package's, hence this step.
    pub fn get() -> Bins {
        static BUILT: OnceLock<Result<Bins, String>> = OnceLock::new();
        match BUILT.get_or_init(build_bins) {
            Ok(bins) => bins.clone(),
            Err(e) => panic!("building the binaries under test: {e}"),
        }
    }
}

/// Runs cargo once for both binaries (see [`Bins::get`]).
fn build_bins() -> Result<Bins, String> {
    // This test runs as <target dir>/<profile dir>/deps/<test>-<hash>; cargo puts binaries into
    // <target dir>/<profile dir>. The profile dir is named after the profile, except `debug`
    // for `dev` (and `test`, which builds into it).
    let exe = std::env::current_exe().map_err(|e| format!("the test's own path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a cargo target dir", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} is not in a cargo target dir", exe.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err(format!("no profile dir in {}", exe.display())),
    };
    // The cargo running this test (cargo sets CARGO for the processes it runs), else the one
    // that built it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the test crate is not inside the workspace")?;
    let status = Command::new(&cargo)
        // The workspace's `.cargo/config.toml` applies (cargo reads it from the working dir).
        .current_dir(workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--profile", profile])
        .args(["-p", "mokv-shell", "--bin", "mokvd", "-p", "mokv-client", "--bin", "mokv"])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", Path::new(&cargo).display()))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status}); its errors are above"));
    }
    let bins = Bins { mokvd: profile_dir.join("mokvd"), mokv: profile_dir.join("mokv") };
    for bin in [&bins.mokvd, &bins.mokv] {
        if !bin.is_file() {
            return Err(format!("cargo build made no {}", bin.display()));
        }
    }
    Ok(bins)
}

/// Retries `f` every [`POLL`] until it returns `Some`; panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, f).await
}

/// [`eventually`] with an explicit bound.
pub async fn eventually_within<T, F, Fut>(what: &str, bound: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < bound, "timed out after {bound:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A command with no `MOKV_*` variables inherited from the caller's environment.
fn clean_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MOKV_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Certificates made by `mokvd certs` in one directory.
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// Runs `mokvd certs --out DIR --node .. --client ..`.
    pub fn generate(bins: &Bins, dir: &Path, nodes: &[&str], clients: &[&str]) -> Certs {
        let mut cmd = clean_command(&bins.mokvd);
        cmd.arg("certs").arg("--out").arg(dir);
        for n in nodes {
            cmd.args(["--node", n]);
        }
        for c in clients {
            cmd.args(["--client", c]);
        }
        let out = cmd.output().expect("running mokvd certs");
        assert!(
            out.status.success(),
            "mokvd certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs { dir: dir.to_path_buf() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"))
    }

    /// The client library's TLS files for identity `who`.
    pub fn tls(&self, who: &str) -> TlsFiles {
        TlsFiles {
            ca: self.path("ca.pem"),
            cert: self.path(&format!("{who}.pem")),
            key: self.path(&format!("{who}-key.pem")),
        }
    }

    /// A raw (lazy) channel to `addr` trusting this CA, presenting `who`'s certificate if any.
    pub fn channel(&self, addr: &str, who: Option<&str>) -> Channel {
        let identity =
            who.map(|w| (self.read(&format!("{w}.pem")), self.read(&format!("{w}-key.pem"))));
        channel(addr, self.read("ca.pem"), identity)
    }

    /// A raw `KV` client (the workspace's proto) as `root`.
    pub fn kv(&self, addr: &str) -> KvClient<Channel> {
        KvClient::new(self.channel(addr, Some("root")))
    }

    /// `GetServers` of the node at `addr` (a fresh connection; `None`: no answer in a second).
    pub async fn servers(&self, addr: &str) -> Option<Vec<Server>> {
        servers(&self.kv(addr)).await
    }

    /// A library client that knows only `endpoints`.
    pub fn client(&self, endpoints: &[&str]) -> Client {
        let endpoints = endpoints.iter().map(|e| (*e).to_owned()).collect();
        Client::connect(ClientConfig::new(endpoints, self.tls("root"))).expect("client config")
    }
}

/// A raw channel: trusts `ca`, presents `identity` (cert, key PEM) if given.
pub fn channel(addr: &str, ca: Vec<u8>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// `GetServers` through `kv` (as answered by that one node, from its own view); `None` when
/// it does not answer within a second.
pub async fn servers(kv: &KvClient<Channel>) -> Option<Vec<Server>> {
    let mut kv = kv.clone();
    let r = tokio::time::timeout(Duration::from_secs(1), kv.get_servers(())).await.ok()?;
    r.ok().map(|r| r.into_inner().servers)
}

/// `n` UDP sockets bound to free ports on 127.0.0.1, for gossip addresses that must be known
/// before the nodes start; hand each to [`Mokvd::start_with_gossip_socket`].
pub fn gossip_sockets(n: usize) -> Vec<UdpSocket> {
    (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("binding a free UDP port")).collect()
}

/// The whole `/metrics` text served on 127.0.0.1:`port`, in one attempt bounded by `bound`;
/// `None` if unreachable or not answered with 200 OK.
pub async fn scrape_metrics(port: u16, bound: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let scrape = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        text.contains("200 OK").then_some(text)
    };
    tokio::time::timeout(bound, scrape).await.ok()?
}

/// The value of one Prometheus sample (`name{labels}` exactly as exported) from the plain HTTP
/// metrics endpoint on 127.0.0.1:`port`; `None` if absent or unreachable within a second.
pub async fn metric(port: u16, sample: &str) -> Option<f64> {
    let text = scrape_metrics(port, Duration::from_secs(1)).await?;
    text.lines().find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// What a node was started with (kept for restarts).
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub data_dir: PathBuf,
    /// Everything else on the command line except `--rpc-port` and `--bind-addr`.
    pub args: Vec<OsString>,
}

impl NodeSpec {
    /// A cluster node with certificate `<name>.pem` from `certs`, data in `data_root/<name>`.
    pub fn node(certs: &Certs, data_root: &Path, name: &str) -> NodeSpec {
        let data_dir = data_root.join(name);
        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |k: &str, v: OsString| {
            args.push(k.into());
            args.push(v);
        };
        arg("--data-dir", data_dir.clone().into());
        arg("--node-name", name.into());
        arg("--cluster-key-file", certs.path("cluster.key").into());
        // Failure detection in about a second (defaults: 1 s probes, 4 s suspicion).
        arg("--gossip-probe-ms", "200".into());
        arg("--gossip-suspect-ms", "1000".into());
        arg("--server-tls-cert-file", certs.path(&format!("{name}.pem")).into());
        arg("--server-tls-key-file", certs.path(&format!("{name}-key.pem")).into());
        arg("--server-tls-ca-file", certs.path("ca.pem").into());
        arg("--tick-ms", TICK_MS.to_string().into());
        // The driver's info lines say when a snapshot was installed, the server's how a stop
        // went (e.g. "server drained"); the rest stays quiet.
        arg(
            "--log-level",
            "warn,mokv_shell::node::driver=info,mokv_shell::node::server=info".into(),
        );
        NodeSpec { name: name.to_owned(), data_dir, args }
    }

    /// Adds `--flag value`.
    pub fn with(mut self, flag: &str, value: impl Into<OsString>) -> NodeSpec {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    /// Adds a bare `--flag`.
    pub fn flag(mut self, flag: &str) -> NodeSpec {
        self.args.push(flag.into());
        self
    }
}

/// A running (or killed) `mokvd` process. Dropping it SIGKILLs and reaps the process.
#[derive(Debug)]
pub struct Mokvd {
    bin: PathBuf,
    pub spec: NodeSpec,
    child: Option<Child>,
    /// The advertised rpc address (`127.0.0.1:<port>`).
    pub addr: String,
    pub port: u16,
    /// The advertised gossip address (`127.0.0.1:<udp port>`): what others join through.
    pub gossip_addr: String,
    pub gossip_port: u16,
    /// The bound `/metrics` port, when started with `--metrics-port` (0 gives a free one).
    pub metrics_port: Option<u16>,
    pub raft_id: u64,
    /// Every stdout line (after the listening line) and stderr line, of every incarnation.
    output: Arc<Mutex<Vec<String>>>,
}

/// Where a starting node's gossip socket comes from.
enum Gossip {
    /// mokvd binds this port (0: a free one).
    Port(u16),
    /// The test's bound socket, handed over on mokvd's stdin.
    Inherit(UdpSocket),
}

impl Gossip {
    fn port(&self) -> u16 {
        match self {
            Gossip::Port(p) => *p,
            Gossip::Inherit(s) => s.local_addr().expect("bound gossip socket").port(),
        }
    }

    fn flag(&self) -> &'static [&'static str] {
        match self {
            Gossip::Port(_) => &[],
            Gossip::Inherit(_) => &["--gossip-socket-on-stdin"],
        }
    }

    fn stdin(self) -> Stdio {
        match self {
            Gossip::Port(_) => Stdio::null(),
            Gossip::Inherit(s) => Stdio::from(std::os::fd::OwnedFd::from(s)),
        }
    }
}

impl Mokvd {
    /// Starts `mokvd` on ephemeral rpc and gossip ports and waits for its listening line.
    pub fn start(bin: &Path, spec: NodeSpec) -> Mokvd {
        let mut node = Mokvd::stopped(bin, spec);
        node.spawn_on(0, Gossip::Port(0));
        node
    }

    /// Starts a node whose gossip socket the test bound beforehand (to know its port before
    /// the node starts, e.g. for seeds of nodes started earlier): the bound socket is handed
    /// to mokvd on its stdin (`--gossip-socket-on-stdin`), never released and re-bound.
    pub fn start_with_gossip_socket(bin: &Path, spec: NodeSpec, socket: UdpSocket) -> Mokvd {
        let mut node = Mokvd::stopped(bin, spec);
        node.spawn_on(0, Gossip::Inherit(socket));
        node
    }

    fn stopped(bin: &Path, spec: NodeSpec) -> Mokvd {
        Mokvd {
            bin: bin.to_path_buf(),
            spec,
            child: None,
            addr: String::new(),
            port: 0,
            gossip_addr: String::new(),
            gossip_port: 0,
            metrics_port: None,
            raft_id: 0,
            output: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts a process with `--rpc-port port` and gossip on `gossip_port` (a restart on the
    /// node's own earlier ports), and reads the listening line.
    fn spawn(&mut self, port: u16, gossip_port: u16) {
        self.spawn_on(port, Gossip::Port(gossip_port));
    }

    fn spawn_on(&mut self, port: u16, gossip: Gossip) {
        assert!(self.child.is_none(), "{} is already running", self.spec.name);
        let ports_file = self.ports_file();
        match std::fs::remove_file(&ports_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", ports_file.display()),
        }
        let mut child = clean_command(&self.bin)
            .args(&self.spec.args)
            .arg("--ports-file")
            .arg(&ports_file)
            .args(["--rpc-port", &port.to_string()])
            .args(["--bind-addr", &format!("127.0.0.1:{}", gossip.port())])
            .args(gossip.flag())
            .stdin(gossip.stdin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning mokvd");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out = self.output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("mokvd listening on ") {
                    let _ = tx.send(line);
                } else {
                    out.lock().unwrap().push(line);
                }
            }
        });
        let out = self.output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let Ok(line) = rx.recv_timeout(DEADLINE) else {
            let log = self.log_tail(40);
            panic!("{} printed no listening line; output:\n{log}", self.spec.name);
        };
        // "mokvd listening on 127.0.0.1:PORT (advertised 127.0.0.1:PORT, gossip
        // 127.0.0.1:UDP, raft id N)"
        let advertised = line
            .split("(advertised ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("unexpected listening line: {line}"));
        let raft_id = line
            .rsplit("raft id ")
            .next()
            .and_then(|r| r.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("unexpected listening line: {line}"));
        let gossip = line
            .split("gossip ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("unexpected listening line: {line}"));
        self.gossip_addr = gossip.to_owned();
        self.gossip_port = gossip.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        self.addr = advertised.to_owned();
        self.port = advertised.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        self.raft_id = raft_id;
        // mokvd writes the ports file (atomically) before it prints the listening line.
        let ports = std::fs::read_to_string(&ports_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", ports_file.display()));
        let bound = |what: &str| {
            ports.lines().find_map(|l| {
                let addr = l.strip_prefix(what)?.strip_prefix(' ')?;
                addr.rsplit(':').next()?.parse::<u16>().ok()
            })
        };
        assert_eq!(bound("rpc"), Some(self.port), "ports file: {ports}");
        assert_eq!(bound("gossip"), Some(self.gossip_port), "ports file: {ports}");
        self.metrics_port = bound("metrics");
    }

    /// Where this node reports its bound addresses (`--ports-file`): next to its data dir.
    fn ports_file(&self) -> PathBuf {
        let mut name = self.spec.data_dir.as_os_str().to_owned();
        name.push(".ports");
        PathBuf::from(name)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// kill -9, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (a graceful stop) without waiting.
    pub fn signal_term(&self) {
        let pid = self.pid().unwrap_or_else(|| panic!("{} is not running", self.spec.name));
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(status.success(), "kill -TERM {pid} ({}) failed", self.spec.name);
    }

    /// Waits (polling, at most `bound`) for the process to exit and reaps it.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            let child =
                self.child.as_mut().unwrap_or_else(|| panic!("{} has no process", self.spec.name));
            if let Some(status) = child.try_wait().expect("waiting for mokvd") {
                self.child = None;
                return status;
            }
            if start.elapsed() >= bound {
                let log = self.log_tail(40);
                panic!("{} did not exit within {bound:?}; output:\n{log}", self.spec.name);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then waits (at most `bound`) for the exit.
    pub async fn terminate(&mut self, bound: Duration) -> ExitStatus {
        self.signal_term();
        self.wait_exit(bound).await
    }

    /// kill -9, deletes the data dir and starts the node again with the same flags and ports:
    /// the same name under a new raft id.
    pub fn wipe_and_start(&mut self) {
        self.kill();
        match std::fs::remove_dir_all(&self.spec.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("wiping {}: {e}", self.spec.data_dir.display()),
        }
        let (port, gossip_port) = (self.port, self.gossip_port);
        self.spawn(port, gossip_port);
    }

    /// kill -9, then starts the node again on the same data dir, flags and gossip port but a
    /// new (ephemeral) rpc port: peers find its new address through gossip.
    pub fn restart_on_new_rpc_port(&mut self) {
        self.kill();
        let (gossip_port, id) = (self.gossip_port, self.raft_id);
        self.spawn(0, gossip_port);
        assert_eq!(self.raft_id, id, "{} came back with another raft id", self.spec.name);
    }

    /// Starts the node again on the same data dir, flags and port (its peers know it by its
    /// address).
    pub fn restart(&mut self) {
        self.kill();
        let (port, gossip_port, id) = (self.port, self.gossip_port, self.raft_id);
        self.spawn(port, gossip_port);
        assert_eq!(self.raft_id, id, "{} came back with another raft id", self.spec.name);
    }

    /// Whether some output line contains `needle`.
    pub fn output_contains(&self, needle: &str) -> bool {
        self.output_count(needle) > 0
    }

    /// How many output lines contain `needle`.
    pub fn output_count(&self, needle: &str) -> usize {
        self.output.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// The last `n` output lines.
    pub fn log_tail(&self, n: usize) -> String {
        let out = self.output.lock().unwrap();
        out[out.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Mokvd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ({}) output tail ---\n{}",
                self.spec.name,
                self.addr,
                self.log_tail(30)
            );
        }
    }
}

/// Three nodes: n1 bootstraps, n2 and n3 join through n1's gossip address.
#[derive(Debug)]
pub struct Cluster {
    pub bins: Bins,
    pub certs: Certs,
    pub nodes: Vec<Mokvd>,
    // Dropped last: the processes are killed before their directories go.
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts n1..n3 with `extra` flags each (e.g. `--snapshot-threshold 50`) and waits until
    /// all three are voters and one is the leader.
    pub async fn start(bins: Bins, extra: &[(&str, &str)]) -> Cluster {
        let tmp = tempfile::tempdir().expect("temp dir");
        let certs = Certs::generate(
            &bins,
            &tmp.path().join("certs"),
            &["n1", "n2", "n3"],
            &["root", "nobody"],
        );
        let spec = |name: &str| {
            let mut s = NodeSpec::node(&certs, &tmp.path().join("data"), name);
            for (k, v) in extra {
                s = s.with(k, *v);
            }
            s
        };
        let n1 = Mokvd::start(&bins.mokvd, spec("n1").flag("--bootstrap"));
        let join = n1.gossip_addr.clone();
        let n2 = Mokvd::start(&bins.mokvd, spec("n2").with("--start-join-addrs", &join));
        let n3 = Mokvd::start(&bins.mokvd, spec("n3").with("--start-join-addrs", &join));
        let cluster = Cluster { bins, certs, nodes: vec![n1, n2, n3], _tmp: tmp };
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        let certs = cluster.certs.clone();
        eventually("three voters and a leader", || {
            let certs = certs.clone();
            let addrs = addrs.clone();
            async move {
                let mut kv = certs.kv(&addrs[0]);
                let servers = kv.get_servers(()).await.ok()?.into_inner().servers;
                let voters = servers
                    .iter()
                    .filter(|s| s.suffrage == mokv_proto::api::Suffrage::Voter as i32)
                    .count();
                let leaders = servers.iter().filter(|s| s.is_leader).count();
                (voters == 3 && leaders == 1).then_some(())
            }
        })
        .await;
        cluster
    }

    pub fn addrs(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.addr.as_str()).collect()
    }

    /// A library client that knows every node.
    pub fn client(&self) -> Client {
        self.certs.client(&self.addrs())
    }

    /// Index of the leader among the running nodes: the node that reports itself as leader in
    /// its own `GetServers` answer. Polls until there is one.
    pub async fn leader(&mut self) -> usize {
        let live: Vec<(usize, String)> = self
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| n.is_running().then(|| (i, n.addr.clone())))
            .collect();
        let certs = self.certs.clone();
        eventually("a leader", || {
            let live = live.clone();
            let certs = certs.clone();
            async move { find_leader(&certs, &live).await }
        })
        .await
    }
}

/// The index of the first node of `live` whose `GetServers` names itself leader.
pub async fn find_leader(certs: &Certs, live: &[(usize, String)]) -> Option<usize> {
    for (i, addr) in live {
        let mut kv = certs.kv(addr);
        let Ok(r) = tokio::time::timeout(Duration::from_secs(1), kv.get_servers(())).await else {
            continue;
        };
        let Ok(r) = r else { continue };
        if r.into_inner().servers.iter().any(|s| s.is_leader && &s.rpc_addr == addr) {
            return Some(*i);
        }
    }
    None
}

/// Every key under `prefix` with its value, paging through `Range` on `client`.
pub async fn read_all(
    client: &mut Client,
    prefix: &str,
    mode: mokv_client::ReadMode,
) -> Result<BTreeMap<String, Vec<u8>>, mokv_client::ClientError> {
    let mut all = BTreeMap::new();
    let mut token = String::new();
    loop {
        let (entries, next) = client.range(prefix, 1000, &token, false, mode).await?;
        for e in entries {
            all.insert(e.key, e.value);
        }
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// One run of the `mokv` CLI ([`mokv_cli`]).
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout as one JSON document; panics (with the run) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// Runs `mokv` as `who` (its certificate from `certs`) against `endpoint`, with `args` after
/// the connection flags and no `MOKV_*` variable of the test's environment. Blocks until it
/// exits.
pub fn mokv_cli(bins: &Bins, certs: &Certs, who: &str, endpoint: &str, args: &[&str]) -> CliRun {
    let mut cmd = clean_command(&bins.mokv);
    cmd.arg("--endpoints").arg(endpoint);
    cmd.arg("--ca").arg(certs.path("ca.pem"));
    cmd.arg("--cert").arg(certs.path(&format!("{who}.pem")));
    cmd.arg("--key").arg(certs.path(&format!("{who}-key.pem")));
    let out = cmd.args(args).output().expect("running mokv");
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `mokv` command as root (a watch, a keep-alive loop) whose stdout lines are
/// collected as they come; killed when dropped.
#[derive(Debug)]
pub struct MokvProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl MokvProcess {
    /// Starts `mokv <args>` against `endpoints` with the root client certificate.
    pub fn start(bins: &Bins, certs: &Certs, endpoints: &[&str], args: &[&str]) -> MokvProcess {
        let mut child = Command::new(&bins.mokv)
            .args(["--endpoints", &endpoints.join(","), "--ca"])
            .arg(certs.path("ca.pem"))
            .arg("--cert")
            .arg(certs.path("root.pem"))
            .arg("--key")
            .arg(certs.path("root-key.pem"))
            .args(args)
            .env_remove("MOKV_ENDPOINTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mokv");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        MokvProcess { child, lines }
    }

    /// The stdout lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many printed lines start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.lines().iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Whether the process has not exited.
    pub fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MokvProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
