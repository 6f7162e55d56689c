//! `mokv bench`: a closed-loop load generator for a running cluster.
//!
//! `--clients` tasks (each one request in flight) share a few HTTP/2 connections per node
//! (`--connections`), on a multi-threaded runtime. Connection set-up, leader discovery and the
//! preload of `--keys` keys happen before any clock starts; each workload then runs
//! `--warmup-seconds` unmeasured and `--seconds` measured. Workloads:
//!
//! - `put`: `Set` of a random preloaded key, to the leader;
//! - `get`: linearizable `Get` of a random key, clients spread over every node;
//! - `sget`: serializable `Get`, spread over every node;
//! - `mix`: 90 % linearizable `Get` (every node), 10 % `Set` (leader).
//!
//! With `--pid NAME=PID` (repeatable) it also reads `/proc/PID/stat` at the start and end of
//! each measured window and reports the CPU time each process spent per operation, and each
//! process's resident memory at the end (`/proc/PID/status`); the generator itself is always
//! listed as `bench`. The result is one table, also printed as `mokv-bench-json: {...}` lines
//! for scripts; with `--output json` it is one JSON document (`{"results": [...]}`, the same
//! objects) instead.
//!
//! The generator talks to the generated gRPC client directly (no retries, no routing): an
//! error is counted and the client backs off briefly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{GetRequest, ReadConsistency, SetRequest};
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::output::{json_line, Output};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients (each one request in flight).
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured seconds before each workload's window.
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Workloads to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "put,get,sget,mix")]
    workloads: Vec<Workload>,
    /// Distinct keys (all written once before the first workload, unless --no-preload).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    key_bytes: usize,
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// HTTP/2 connections per node.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Skip writing the keys first (they exist from an earlier run).
    #[arg(long)]
    no_preload: bool,
    /// Worker threads of the generator's runtime (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Before anything else, wait (up to 60 s) until the cluster has this many voters and a
    /// leader.
    #[arg(long)]
    wait_voters: Option<usize>,
    /// A process to account CPU and memory to, as NAME=PID (repeatable). Given once per
    /// endpoint and in the same order, the leader's is marked.
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Put,
    Get,
    Sget,
    Mix,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get (linearizable)",
            Workload::Sget => "get (serializable)",
            Workload::Mix => "mix 90% get / 10% put",
        }
    }
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|_| format!("bad pid in {s}"))?;
    Ok((name.to_owned(), pid))
}

/// Where the generator connects and with which certificate.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs the benchmark on its own multi-threaded runtime; prints the table.
pub fn main(target: &Target, args: &BenchArgs, output: Output) -> Result<(), String> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(run(target, args, output))
}

struct Setup {
    /// `connections` channels per node, in endpoint order.
    nodes: Vec<Vec<Channel>>,
    /// Channels to the leader.
    leader: Vec<Channel>,
    leader_addr: String,
}

fn tls(target: &Target) -> Result<ClientTlsConfig, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&target.ca)?))
        .identity(Identity::from_pem(read(&target.cert)?, read(&target.key)?)))
}

async fn connect(addr: &str, tls: &ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .tls_config(tls.clone())
        .map_err(|e| format!("{addr}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))
}

async fn setup(target: &Target, args: &BenchArgs) -> Result<Setup, String> {
    let tls = tls(target)?;
    let conns = args.connections.max(1);
    let mut nodes = Vec::new();
    for addr in &target.endpoints {
        let mut chans = Vec::new();
        for _ in 0..conns {
            chans.push(connect(addr, &tls).await?);
        }
        nodes.push(chans);
    }
    let first = nodes.first().and_then(|c| c.first()).ok_or("no endpoint given")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let voters_wanted = args.wait_voters.unwrap_or(0);
    let leader_addr = loop {
        let servers = KvClient::new(first.clone()).get_servers(()).await;
        let found = servers.ok().and_then(|r| {
            let servers = r.into_inner().servers;
            let voters = servers
                .iter()
                .filter(|s| s.suffrage == mokv_proto::api::Suffrage::Voter as i32)
                .count();
            let leader = servers.into_iter().find(|s| s.is_leader).map(|s| s.rpc_addr);
            leader.filter(|_| voters >= voters_wanted)
        });
        match found {
            Some(a) => break a,
            None if Instant::now() > deadline => return Err("no leader found".into()),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let leader = match target.endpoints.iter().position(|e| *e == leader_addr) {
        Some(i) => nodes[i].clone(),
        None => {
            let mut chans = Vec::new();
            for _ in 0..conns {
                chans.push(connect(&leader_addr, &tls).await?);
            }
            chans
        }
    };
    Ok(Setup { nodes, leader, leader_addr })
}

fn key(i: u64, bytes: usize) -> String {
    let width = bytes.saturating_sub(1).max(1);
    format!("k{i:0width$}")
}

/// xorshift64*: cheap per-client randomness (no shared state).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A write slower than this during the preload counts as a stall (the scale target: loading
/// 0 → 1M keys with no stall over 100 ms).
const PRELOAD_STALL_US: u64 = 100_000;
/// Stalled writes the preload keeps for its report of stall episodes.
const MAX_STALLS_KEPT: usize = 100_000;
/// Stalled writes sent at most this far apart belong to one episode.
const STALL_EPISODE_GAP_MS: u64 = 100;
/// Episodes listed at most (the largest, in time order).
const MAX_EPISODES_LISTED: usize = 20;

/// `stalls` ((sent ms, latency µs)) grouped into episodes: "start+length ms: count, max ms".
fn stall_episodes(stalls: &mut [(u64, u64)]) -> String {
    stalls.sort_unstable();
    // (start ms, last sent ms, count, max latency µs)
    let mut episodes: Vec<(u64, u64, u64, u64)> = Vec::new();
    for &(sent_ms, us) in stalls.iter() {
        match episodes.last_mut() {
            Some(e) if sent_ms - e.1 <= STALL_EPISODE_GAP_MS => {
                e.1 = sent_ms;
                e.2 += 1;
                e.3 = e.3.max(us);
            }
            _ => episodes.push((sent_ms, sent_ms, 1, us)),
        }
    }
    let total = episodes.len();
    if total > MAX_EPISODES_LISTED {
        let mut by_count: Vec<usize> = (0..total).collect();
        by_count.sort_by_key(|&i| std::cmp::Reverse(episodes[i].2));
        let mut keep: Vec<usize> = by_count[..MAX_EPISODES_LISTED].to_vec();
        keep.sort_unstable();
        episodes = keep.into_iter().map(|i| episodes[i]).collect();
    }
    let mut out: Vec<String> = episodes
        .iter()
        .map(|(start, last, n, us)| format!("{start}+{}: {n}, max {} ms", last - start, us / 1000))
        .collect();
    if total > MAX_EPISODES_LISTED {
        out.push(format!("({} smaller episodes not listed)", total - MAX_EPISODES_LISTED));
    }
    out.join("; ")
}
/// The preload gives up when no write succeeded for this long.
const PRELOAD_GIVE_UP: Duration = Duration::from_secs(30);

async fn preload(s: &Setup, args: &BenchArgs) -> Result<(), String> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Milliseconds since `started` of the last write that succeeded: the preload gives up
    // once no write has succeeded for PRELOAD_GIVE_UP (a cluster that stopped accepting
    // writes), not after some number of errors (an election alone fails thousands).
    let progress_ms = Arc::new(AtomicU64::new(0));
    // Retried errors by status code, to say why a preload gave up.
    let codes = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let gave_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stalled writes (sent at ms since `started`, latency in µs), to line them up with what
    // the nodes log (snapshots, elections, flushes); at most MAX_STALLS_KEPT of them.
    let stalls_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut tasks = Vec::new();
    for c in 0..args.clients.max(1) {
        let mut kv = KvClient::new(s.leader[c % s.leader.len()].clone());
        // After an error the client tries the next node: a leader change during the load must
        // not end it (the leader changes are what the load is meant to show, not hide).
        let fallbacks: Vec<Channel> =
            s.nodes.iter().filter_map(|n| n.get(c % n.len().max(1)).cloned()).collect();
        let mut fallback = c;
        let (next, errors, codes) = (next.clone(), errors.clone(), codes.clone());
        let progress_ms = progress_ms.clone();
        let gave_up = gave_up.clone();
        let stalls_seen = stalls_seen.clone();
        let (keys, key_bytes) = (args.keys, args.key_bytes);
        let value = vec![b'v'; args.value_bytes];
        tasks.push(tokio::spawn(async move {
            // Latency of each key's write, retries included (what a loader waits).
            let mut hist = new_hist();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return hist;
                }
                let req = SetRequest {
                    key: key(i, key_bytes),
                    value: value.clone(),
                    session: None,
                    condition: None,
                    lease: 0,
                };
                let sent = Instant::now();
                // Retried until it succeeds: later reads should find every key.
                while let Err(status) = kv.set(req.clone()).await {
                    codes.lock().map(|mut c| *c.entry(status.code() as i32).or_insert(0) += 1).ok();
                    errors.fetch_add(1, Ordering::Relaxed);
                    let now_ms = started.elapsed().as_millis() as u64;
                    if gave_up.load(Ordering::Relaxed)
                        || now_ms.saturating_sub(progress_ms.load(Ordering::Relaxed))
                            > PRELOAD_GIVE_UP.as_millis() as u64
                    {
                        gave_up.store(true, Ordering::Relaxed);
                        return hist;
                    }
                    if !fallbacks.is_empty() {
                        fallback += 1;
                        kv = KvClient::new(fallbacks[fallback % fallbacks.len()].clone());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = hist.record(us.max(1));
                if us >= PRELOAD_STALL_US {
                    let sent_ms = sent.duration_since(started).as_millis() as u64;
                    if let Ok(mut seen) = stalls_seen.lock() {
                        if seen.len() < MAX_STALLS_KEPT {
                            seen.push((sent_ms, us));
                        }
                    }
                }
                progress_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }));
    }
    let mut hist = new_hist();
    for t in tasks {
        if let Ok(h) = t.await {
            hist.add(&h).map_err(|e| format!("merging histograms: {e}"))?;
        }
    }
    let codes: Vec<String> = codes
        .lock()
        .map(|c| c.iter().map(|(code, n)| format!("{n} {:?}", tonic::Code::from(*code))).collect())
        .unwrap_or_default();
    if gave_up.load(Ordering::Relaxed) {
        return Err(format!(
            "preload: no write succeeded for {} s after {} keys ({})",
            PRELOAD_GIVE_UP.as_secs(),
            next.load(Ordering::Relaxed).min(args.keys),
            codes.join(", ")
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    let stalls = hist.count_between(PRELOAD_STALL_US, hist.high());
    eprintln!(
        "preloaded {} keys in {secs:.1} s ({:.0}/s, {} errors retried); write latency p50 {:.2} \
         ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {stalls} writes over {} ms",
        args.keys,
        args.keys as f64 / secs.max(1e-9),
        errors.load(Ordering::Relaxed),
        ms(&hist, 0.5),
        ms(&hist, 0.99),
        ms(&hist, 0.999),
        hist.max() as f64 / 1000.0,
        PRELOAD_STALL_US / 1000,
    );
    if stalls > 0 {
        let mut seen = stalls_seen.lock().map(|s| s.clone()).unwrap_or_default();
        eprintln!(
            "stalls (writes over {} ms sent within {STALL_EPISODE_GAP_MS} ms of each other; \
             ms since unix ms {started_unix_ms}): {}",
            PRELOAD_STALL_US / 1000,
            stall_episodes(&mut seen)
        );
    }
    Ok(())
}

/// CPU time (user + system) of a process in microseconds, from `/proc/PID/stat`.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its ')' are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 for every /proc interface on Linux.
    Some((utime + stime) * 10_000)
}

/// Resident memory in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Row {
    workload: Workload,
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
    /// (process name, CPU µs per op, RSS KiB at the end)
    procs: Vec<(String, Option<f64>, Option<u64>)>,
}

async fn run_workload(
    s: &Setup,
    args: &BenchArgs,
    w: Workload,
    procs: &[(String, u32)],
) -> Result<Row, String> {
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs(args.warmup_seconds);
    let end = measure_from + Duration::from_secs(args.seconds.max(1));
    let mut tasks = Vec::new();
    let n_nodes = s.nodes.len();
    for c in 0..args.clients.max(1) {
        let node = &s.nodes[c % n_nodes];
        let mut reader = KvClient::new(node[(c / n_nodes) % node.len()].clone());
        let mut writer = KvClient::new(s.leader[c % s.leader.len()].clone());
        let value = vec![b'v'; args.value_bytes];
        let (keys, key_bytes) = (args.keys.max(1), args.key_bytes);
        let mut rng =
            Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut hist = new_hist();
            let mut errors = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let r = rng.next();
                let k = key(r % keys, key_bytes);
                let put = match w {
                    Workload::Put => true,
                    Workload::Mix => (r >> 40).is_multiple_of(10),
                    Workload::Get | Workload::Sget => false,
                };
                let ok = if put {
                    let req = SetRequest {
                        key: k,
                        value: value.clone(),
                        session: None,
                        condition: None,
                        lease: 0,
                    };
                    writer.set(req).await.is_ok()
                } else {
                    let consistency = if w == Workload::Sget {
                        ReadConsistency::Serializable
                    } else {
                        ReadConsistency::Linearizable
                    };
                    let req = GetRequest { key: k, consistency: consistency as i32 };
                    reader.get(req).await.is_ok()
                };
                let measured = began >= measure_from;
                if ok {
                    if measured {
                        let us = began.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                        let _ = hist.record(us.max(1));
                    }
                } else {
                    if measured {
                        errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (hist, errors)
        }));
    }
    // CPU of every accounted process over the measured window.
    let me = std::process::id();
    let mut all: Vec<(String, u32)> = procs.to_vec();
    all.push(("bench".into(), me));
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before: Vec<Option<u64>> = all.iter().map(|(_, p)| cpu_us(*p)).collect();
    tokio::time::sleep_until(end.into()).await;
    let cpu_after: Vec<Option<u64>> = all.iter().map(|(_, p)| cpu_us(*p)).collect();
    let window = end.duration_since(measure_from).as_secs_f64();
    let mut hist = new_hist();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(|e| format!("client task failed: {e}"))?;
        hist.add(&h).map_err(|e| format!("merging histograms: {e}"))?;
        errors += e;
    }
    let ops = hist.len();
    let procs = all
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|((name, pid), (b, a))| {
            let per_op = match (b, a) {
                (Some(b), Some(a)) if ops > 0 => Some(a.saturating_sub(*b) as f64 / ops as f64),
                _ => None,
            };
            (name.clone(), per_op, rss_kib(*pid))
        })
        .collect();
    Ok(Row { workload: w, ops, errors, secs: window, hist, procs })
}

async fn run(target: &Target, args: &BenchArgs, output: Output) -> Result<(), String> {
    let s = setup(target, args).await?;
    eprintln!(
        "bench: {} clients, {} connection(s) per node, {} node(s), leader {}, {} keys of {} bytes, \
         {}-byte values, {} s warm-up + {} s per workload",
        args.clients,
        args.connections,
        s.nodes.len(),
        s.leader_addr,
        args.keys,
        args.key_bytes,
        args.value_bytes,
        args.warmup_seconds,
        args.seconds
    );
    let mut procs = args.pids.clone();
    if procs.len() == target.endpoints.len() {
        if let Some(i) = target.endpoints.iter().position(|e| *e == s.leader_addr) {
            procs[i].0.push_str(" (leader)");
        }
    }
    if !args.no_preload {
        preload(&s, args).await?;
    }
    let mut rows = Vec::new();
    for w in &args.workloads {
        let row = run_workload(&s, args, *w, &procs).await?;
        eprintln!(
            "{}: {:.0} ops/s, p99 {:.2} ms, {} errors",
            w.name(),
            row.ops as f64 / row.secs,
            row.hist.value_at_quantile(0.99) as f64 / 1000.0,
            row.errors
        );
        rows.push(row);
    }
    match output {
        Output::Table => print_table(&rows),
        Output::Json => json_line(&BenchJson { results: rows.iter().map(RowJson::new).collect() }),
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print_table(rows: &[Row]) {
    let Some(first) = rows.first() else { return };
    let names: Vec<&str> = first.procs.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut header = format!(
        "| {:<22} | {:>9} | {:>8} | {:>8} | {:>8} | {:>6} |",
        "workload", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    let mut rule =
        format!("|{:-<24}|{:->11}|{:->10}|{:->10}|{:->10}|{:->8}|", "", ":", ":", ":", ":", ":");
    let widths: Vec<usize> =
        names.iter().map(|n| format!("CPU µs/op {n}").chars().count()).collect();
    for (n, w) in names.iter().zip(&widths) {
        let col = format!("CPU µs/op {n}");
        header.push_str(&format!(" {col:>w$} |"));
        rule.push_str(&format!("{:->width$}|", ":", width = w + 2));
    }
    println!("{header}");
    println!("{rule}");
    for r in rows {
        let mut line = format!(
            "| {:<22} | {:>9.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>6} |",
            r.workload.name(),
            r.ops as f64 / r.secs,
            ms(&r.hist, 0.5),
            ms(&r.hist, 0.99),
            ms(&r.hist, 0.999),
            r.errors
        );
        for ((_, per_op, _), w) in r.procs.iter().zip(&widths) {
            match per_op {
                Some(v) => line.push_str(&format!(" {v:>w$.1} |")),
                None => line.push_str(&format!(" {:>w$} |", "-")),
            }
        }
        println!("{line}");
    }
    // Memory at the end of the last workload.
    if let Some(last) = rows.last() {
        let rss: Vec<String> = last
            .procs
            .iter()
            .map(|(n, _, kib)| match kib {
                Some(k) => format!("{n} {:.0} MiB", *k as f64 / 1024.0),
                None => format!("{n} -"),
            })
            .collect();
        println!("\nRSS after the last workload: {}", rss.join(", "));
    }
    for r in rows {
        let procs: Vec<String> = r
            .procs
            .iter()
            .map(|(n, c, k)| {
                format!(
                    "{{\"name\":\"{n}\",\"cpu_us_per_op\":{},\"rss_kib\":{}}}",
                    c.map_or("null".into(), |v| format!("{v:.1}")),
                    k.map_or("null".into(), |v| v.to_string())
                )
            })
            .collect();
        println!(
            "mokv-bench-json: {{\"workload\":\"{:?}\",\"ops_per_s\":{:.0},\"p50_ms\":{:.2},\
             \"p99_ms\":{:.2},\"p999_ms\":{:.2},\"errors\":{},\"procs\":[{}]}}",
            r.workload,
            r.ops as f64 / r.secs,
            ms(&r.hist, 0.5),
            ms(&r.hist, 0.99),
            ms(&r.hist, 0.999),
            r.errors,
            procs.join(",")
        );
    }
}

/// `--output json`: every workload's row.
#[derive(Debug, Serialize)]
struct BenchJson<'a> {
    results: Vec<RowJson<'a>>,
}

/// One workload (the fields of the `mokv-bench-json:` lines).
#[derive(Debug, Serialize)]
struct RowJson<'a> {
    workload: String,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    procs: Vec<ProcJson<'a>>,
}

#[derive(Debug, Serialize)]
struct ProcJson<'a> {
    name: &'a str,
    cpu_us_per_op: Option<f64>,
    rss_kib: Option<u64>,
}

impl<'a> RowJson<'a> {
    fn new(r: &'a Row) -> Self {
        RowJson {
            workload: format!("{:?}", r.workload),
            ops_per_s: r.ops as f64 / r.secs,
            p50_ms: ms(&r.hist, 0.5),
            p99_ms: ms(&r.hist, 0.99),
            p999_ms: ms(&r.hist, 0.999),
            errors: r.errors,
            procs: r
                .procs
                .iter()
                .map(|(name, cpu, rss)| ProcJson { name, cpu_us_per_op: *cpu, rss_kib: *rss })
                .collect(),
        }
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}
