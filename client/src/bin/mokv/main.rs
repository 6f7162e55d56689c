//! `mokv`: command-line client. Defaults reach the node started by `mokvd --dev`. One endpoint
//! is enough: the client discovers the other members.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mokv_client::{
    default_dev_dir, CasOutcome, Client, ClientConfig, Condition, RangeOptions, ReadFrom, ReadMode,
    ReadOptions, Stream, TlsFiles,
};

mod bench;

#[derive(Debug, Parser)]
#[command(name = "mokv", about = "mokv command-line client", version)]
struct Cli {
    /// Comma-separated client addresses of cluster nodes; one is enough (the others are
    /// discovered).
    #[arg(long, env = "MOKV_ENDPOINTS", default_value = "127.0.0.1:8400", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Cluster CA certificate (default: the --dev node's).
    #[arg(long, env = "MOKV_CA")]
    ca: Option<PathBuf>,
    /// Client certificate; its CN is your identity (default: the --dev node's `root`).
    #[arg(long, env = "MOKV_CERT")]
    cert: Option<PathBuf>,
    /// Client private key.
    #[arg(long, env = "MOKV_KEY")]
    key: Option<PathBuf>,
    /// Serve reads from the answering node's local state (may be stale).
    #[arg(long)]
    serializable: bool,
    /// Which nodes serve reads: followers (default; the leader when no follower is healthy),
    /// leader, or any.
    #[arg(long, default_value = "followers", value_parser = parse_read_from)]
    read_from: ReadFrom,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value of KEY.
    Get { key: String },
    /// Set KEY to VALUE. With a condition (compare-and-swap): only if it holds when the write
    /// is applied; otherwise exit code 3 and the key's current revision and version.
    Set {
        key: String,
        value: String,
        /// Only if KEY does not exist.
        #[arg(long, conflicts_with_all = ["if_version", "if_mod_revision"])]
        if_absent: bool,
        /// Only if KEY's version (writes since creation) is N (0: KEY does not exist).
        #[arg(long, value_name = "N", conflicts_with = "if_mod_revision")]
        if_version: Option<u64>,
        /// Only if KEY was last written at revision R (0: KEY does not exist).
        #[arg(long, value_name = "R")]
        if_mod_revision: Option<u64>,
    },
    /// Delete KEY.
    Delete {
        key: String,
        /// Only if KEY was last written at revision R; otherwise exit code 3 and the key's
        /// current revision.
        #[arg(long, value_name = "R")]
        if_mod_revision: Option<u64>,
    },
    /// List keys (and values) under a prefix, page by page.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after this page token.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Fetch every page, not just one.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        keys_only: bool,
    },
    /// Show the cluster's members.
    Members,
    /// Load the cluster (puts, linearizable and serializable gets, a mix) and print
    /// throughput, latency percentiles and per-process CPU cost.
    Bench(bench::BenchArgs),
}

fn parse_read_from(s: &str) -> Result<ReadFrom, String> {
    match s {
        "followers" => Ok(ReadFrom::Followers),
        "leader" => Ok(ReadFrom::Leader),
        "any" => Ok(ReadFrom::Any),
        _ => Err("expected followers, leader or any".into()),
    }
}

/// The next item of a stream.
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

fn print_entry(e: &mokv_client::Entry, keys_only: bool) {
    if keys_only {
        println!("{}", e.key);
    } else {
        println!("{}\t{}", e.key, String::from_utf8_lossy(&e.value));
    }
}

/// Exit code of a conditional write whose condition did not hold.
const EXIT_CONDITION_FAILED: u8 = 3;

/// Prints what a failed condition saw (one line on stdout, for scripts to retry with) and
/// returns the exit code.
fn condition_failed(outcome: &CasOutcome) -> ExitCode {
    if let CasOutcome::Failed { revision, current } = outcome {
        match current {
            Some(k) => println!(
                "condition failed: mod_revision {} version {} (at revision {revision})",
                k.mod_revision, k.version
            ),
            None => println!("condition failed: key absent (at revision {revision})"),
        }
    }
    ExitCode::from(EXIT_CONDITION_FAILED)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Bench(args) = &cli.command {
        // The generator builds its own multi-threaded runtime.
        let dev = TlsFiles::dev(&default_dev_dir());
        let target = bench::Target {
            endpoints: cli.endpoints.clone(),
            ca: cli.ca.clone().unwrap_or(dev.ca),
            cert: cli.cert.clone().unwrap_or(dev.cert),
            key: cli.key.clone().unwrap_or(dev.key),
        };
        return match bench::main(&target, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mokv bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mokv: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mokv: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, mokv_client::ClientError> {
    let dev = TlsFiles::dev(&default_dev_dir());
    let tls = TlsFiles {
        ca: cli.ca.unwrap_or(dev.ca),
        cert: cli.cert.unwrap_or(dev.cert),
        key: cli.key.unwrap_or(dev.key),
    };
    let mut config = ClientConfig::new(cli.endpoints, tls);
    config.read_from = cli.read_from;
    let mode = if cli.serializable { ReadMode::Serializable } else { ReadMode::Linearizable };
    let read = ReadOptions::new().mode(mode);
    let client = Client::connect(config)?;
    match cli.command {
        Command::Get { key } => match client.get(&key, read).await? {
            Some(e) => println!("{}", String::from_utf8_lossy(&e.value)),
            None => {
                eprintln!("mokv: key not found");
                return Ok(ExitCode::from(2));
            }
        },
        Command::Set { key, value, if_absent, if_version, if_mod_revision } => {
            let condition = match (if_absent, if_version, if_mod_revision) {
                (true, _, _) => Some(Condition::Absent),
                (_, Some(n), _) => Some(Condition::Version(n)),
                (_, _, Some(r)) => Some(Condition::ModRevision(r)),
                _ => None,
            };
            match condition {
                None => {
                    let revision = client.set(&key, value.as_bytes()).await?;
                    println!("OK (revision {revision})");
                }
                Some(c) => match client.set_if(&key, value.as_bytes(), c).await? {
                    CasOutcome::Applied { revision } => println!("OK (revision {revision})"),
                    failed => return Ok(condition_failed(&failed)),
                },
            }
        }
        Command::Delete { key, if_mod_revision: None } => {
            let existed = client.delete(&key).await?;
            println!("{}", if existed { "deleted" } else { "not found" });
        }
        Command::Delete { key, if_mod_revision: Some(r) } => {
            match client.delete_if(&key, Condition::ModRevision(r)).await? {
                // Mod revision 0 holds only for a key that does not exist.
                CasOutcome::Applied { .. } => {
                    println!("{}", if r > 0 { "deleted" } else { "not found" });
                }
                failed => return Ok(condition_failed(&failed)),
            }
        }
        Command::List { prefix, limit, page_token, all: true, keys_only } => {
            let opts = RangeOptions { page_size: limit, keys_only, page_token, read };
            let mut entries = Box::pin(client.range_stream(&prefix, opts));
            while let Some(e) = next(&mut entries).await {
                print_entry(&e?, keys_only);
            }
        }
        Command::List { prefix, limit, page_token, all: false, keys_only } => {
            let (entries, next) =
                client.range(&prefix, limit, &page_token, keys_only, read).await?;
            for e in &entries {
                print_entry(e, keys_only);
            }
            if !next.is_empty() {
                println!("next page: --page-token {next}");
            }
        }
        Command::Bench(_) => {} // ran in main, on its own runtime
        Command::Members => {
            let members = client.members().await?;
            println!(
                "{:<16} {:<16} {:<24} {:<8} {:<8} HEALTH",
                "NAME", "ID", "RPC ADDRESS", "LEADER", "ROLE"
            );
            for m in members {
                println!(
                    "{:<16} {:<16x} {:<24} {:<8} {:<8} {}",
                    m.name,
                    m.raft_id,
                    m.rpc_addr,
                    if m.is_leader { "yes" } else { "" },
                    if m.voter { "voter" } else { "learner" },
                    m.health
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
