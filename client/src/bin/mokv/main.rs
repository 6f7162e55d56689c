//! `mokv`: command-line client. Defaults reach the node started by `mokvd --dev`. One endpoint
//! is enough: the client discovers the other members.
//!
//! Every command prints text (`--output table`, the default) or JSON (`--output json`, see
//! [`output`]), and ends with one of the exit codes of [`exit`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
use mokv_client::{
    default_dev_dir, Admin, CasOutcome, Client, ClientConfig, ClientError, Condition, RangeOptions,
    ReadFrom, ReadMode, ReadOptions, Stream, TlsFiles,
};

use crate::exit::Exit;
use crate::output::{json_line, Output};

mod bench;
mod exit;
mod lease;
mod member;
mod output;
mod snapshot;
mod status;
mod txn_doc;
mod watch;

#[derive(Debug, Parser)]
#[command(name = "mokv", about = "mokv command-line client", version, after_help = exit::HELP)]
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
    /// Talk only to --endpoints (and the leaders they name), never to the members they list:
    /// for a cluster reached through a proxy or a port forward, whose advertised addresses
    /// are not reachable from here.
    #[arg(long, env = "MOKV_NO_DISCOVERY")]
    no_discovery: bool,
    /// Serve reads from the answering node's local state (may be stale).
    #[arg(long)]
    serializable: bool,
    /// Which nodes serve reads: followers (default; the leader when no follower is healthy),
    /// leader, or any.
    #[arg(long, default_value = "followers", value_parser = parse_read_from)]
    read_from: ReadFrom,
    /// Output format: table (text) or json (one document per command, one object per line
    /// for `list --all`).
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "MOKV_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    output: Output,
    /// Give up on a call after this many milliseconds, retries included (exit code 5, or 7
    /// for a write that may have been applied).
    #[arg(long, global = true, env = "MOKV_CALL_TIMEOUT_MS", default_value_t = 15_000)]
    call_timeout_ms: u64,
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
        /// Attach KEY to lease ID (`mokv lease grant`): it is deleted when the lease is
        /// revoked or expires.
        #[arg(long, value_name = "ID")]
        lease: Option<u64>,
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
    /// Run a transaction described by a JSON document (FILE, or - for stdin; format in the
    /// README): compares, then the success or the failure operations, atomically. Prints the
    /// branch, the revision and each operation's result; exit code 3 when the failure branch
    /// ran.
    Txn { file: PathBuf },
    /// Show the cluster's members.
    Members,
    /// One table for the whole cluster: every member's role, term, commit/applied index, lag,
    /// health, last contact and version (needs the `admin` permission on `cluster`).
    Status(status::StatusArgs),
    /// Operator membership commands (need the `admin` permission on `cluster`).
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Backup files: save one from the cluster, check one.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Print every change of KEY (or of every key under --prefix P) as it happens, one line
    /// per change: `PUT <key> <revision> <value>` / `DELETE <key> <revision>`.
    Watch(watch::WatchArgs),
    /// Leases: keys that live while their lease is kept alive.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Load the cluster (puts, linearizable and serializable gets, a mix) and print
    /// throughput, latency percentiles and per-process CPU cost.
    Bench(bench::BenchArgs),
    /// Print a shell completion script for mokv (e.g. `source <(mokv completions bash)`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn parse_read_from(s: &str) -> Result<ReadFrom, String> {
    match s {
        "followers" => Ok(ReadFrom::Followers),
        "leader" => Ok(ReadFrom::Leader),
        "any" => Ok(ReadFrom::Any),
        _ => Err("expected followers, leader or any".into()),
    }
}

/// The transaction document at `path` (`-`: stdin), at most [`txn_doc::MAX_DOC_BYTES`].
fn read_doc(path: &std::path::Path) -> Result<String, Failure> {
    use std::io::Read as _;
    let usage = |message: String| Failure { exit: Exit::Usage, message };
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(txn_doc::MAX_DOC_BYTES).read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(txn_doc::MAX_DOC_BYTES).read_to_string(&mut text))
    };
    read.map_err(|e| usage(format!("transaction document: {e}")))?;
    Ok(text)
}

/// The next item of a stream.
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// Bound on one operator rpc (`status`, `member`): a member that does not answer within it is
/// shown as unreachable.
const ADMIN_RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a command failed: its exit code and a message without keys or values.
struct Failure {
    exit: Exit,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure { exit: Exit::of(&e), message: e.to_string() }
    }
}

/// A conditional write whose condition did not hold: what the key was then goes to stdout (one
/// line, or one JSON object), for a script to retry with; the exit code is 3.
fn condition_failed(key: &str, outcome: &CasOutcome, json: bool) -> Failure {
    if let CasOutcome::Failed { revision, current } = outcome {
        if json {
            json_line(&output::ConditionFailedJson {
                key,
                revision: *revision,
                current: current.as_ref().map(|k| output::KeyRevisionsJson {
                    create_revision: k.create_revision,
                    mod_revision: k.mod_revision,
                    version: k.version,
                }),
            });
        } else {
            match current {
                Some(k) => println!(
                    "condition failed: mod_revision {} version {} (at revision {revision})",
                    k.mod_revision, k.version
                ),
                None => println!("condition failed: key absent (at revision {revision})"),
            }
        }
    }
    Failure { exit: Exit::ConditionFailed, message: "condition failed".into() }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version end here too, successfully; clap's own code for a usage
            // error (2) would collide with "not found".
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage.into() } else { Exit::Ok.into() };
        }
    };
    let output = cli.output;
    let result = match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "mokv", &mut std::io::stdout());
            Ok(())
        }
        Command::Snapshot(snapshot::SnapshotCommand::Status { file }) => {
            snapshot::status(file, output == Output::Json)
        }
        Command::Bench(args) => {
            // The generator builds its own multi-threaded runtime.
            let dev = TlsFiles::dev(&default_dev_dir());
            let target = bench::Target {
                endpoints: cli.endpoints.clone(),
                ca: cli.ca.clone().unwrap_or(dev.ca),
                cert: cli.cert.clone().unwrap_or(dev.cert),
                key: cli.key.clone().unwrap_or(dev.key),
            };
            bench::main(&target, args, output)
                .map_err(|e| Failure { exit: Exit::Error, message: format!("bench: {e}") })
        }
        _ => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(run(cli)),
            Err(e) => Err(Failure { exit: Exit::Error, message: e.to_string() }),
        },
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(f) => {
            output::report(output, f.exit, &f.message);
            f.exit.into()
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let dev = TlsFiles::dev(&default_dev_dir());
    let tls = TlsFiles {
        ca: cli.ca.unwrap_or(dev.ca),
        cert: cli.cert.unwrap_or(dev.cert),
        key: cli.key.unwrap_or(dev.key),
    };
    if let Command::Status(_) | Command::Member(_) = &cli.command {
        let call_timeout = Duration::from_millis(cli.call_timeout_ms.max(1));
        let rpc_timeout = call_timeout.min(ADMIN_RPC_TIMEOUT);
        let admin = Admin::connect(cli.endpoints, &tls, rpc_timeout, call_timeout)?;
        return match &cli.command {
            Command::Status(args) => status::run(&admin, args, cli.output).await,
            Command::Member(command) => member::run(&admin, command, cli.output).await,
            _ => Ok(()),
        };
    }
    let mut config = ClientConfig::new(cli.endpoints, tls);
    config.read_from = cli.read_from;
    config.discovery = !cli.no_discovery;
    let call_timeout = Duration::from_millis(cli.call_timeout_ms.max(1));
    config.call_timeout = call_timeout;
    config.request_timeout = config.request_timeout.min(call_timeout);
    let json = cli.output == Output::Json;
    let mode = if cli.serializable { ReadMode::Serializable } else { ReadMode::Linearizable };
    let read = ReadOptions::new().mode(mode);
    let client = Client::connect(config)?;
    match cli.command {
        Command::Get { key } => match client.get(&key, read).await? {
            Some(e) if json => json_line(&output::EntryJson::new(&e, false)),
            Some(e) => println!("{}", String::from_utf8_lossy(&e.value)),
            None => return Err(Failure { exit: Exit::NotFound, message: "key not found".into() }),
        },
        Command::Set { key, value, if_absent, if_version, if_mod_revision, lease } => {
            let condition = match (if_absent, if_version, if_mod_revision) {
                (true, _, _) => Some(Condition::Absent),
                (_, Some(n), _) => Some(Condition::Version(n)),
                (_, _, Some(r)) => Some(Condition::ModRevision(r)),
                _ => None,
            };
            let revision = match (condition, lease) {
                (c, Some(lease)) => {
                    match client.set_with_lease(&key, value.as_bytes(), lease, c).await? {
                        CasOutcome::Applied { revision } => revision,
                        failed => return Err(condition_failed(&key, &failed, json)),
                    }
                }
                (None, None) => client.set(&key, value.as_bytes()).await?,
                (Some(c), None) => match client.set_if(&key, value.as_bytes(), c).await? {
                    CasOutcome::Applied { revision } => revision,
                    failed => return Err(condition_failed(&key, &failed, json)),
                },
            };
            if json {
                json_line(&output::SetJson { key: &key, revision });
            } else {
                println!("OK (revision {revision})");
            }
        }
        Command::Delete { key, if_mod_revision } => {
            let deleted = match if_mod_revision {
                None => client.delete(&key).await?,
                Some(r) => match client.delete_if(&key, Condition::ModRevision(r)).await? {
                    // Mod revision 0 holds only for a key that does not exist.
                    CasOutcome::Applied { .. } => r > 0,
                    failed => return Err(condition_failed(&key, &failed, json)),
                },
            };
            if json {
                json_line(&output::DeleteJson { key: &key, deleted });
            } else {
                println!("{}", if deleted { "deleted" } else { "not found" });
            }
        }
        Command::List { prefix, limit, page_token, all: true, keys_only } => {
            let opts = RangeOptions { page_size: limit, keys_only, page_token, read };
            let mut entries = Box::pin(client.range_stream(&prefix, opts));
            while let Some(e) = next(&mut entries).await {
                let e = e?;
                if json {
                    json_line(&output::EntryJson::new(&e, keys_only));
                } else {
                    output::print_entry(&e, keys_only);
                }
            }
        }
        Command::List { prefix, limit, page_token, all: false, keys_only } => {
            let (entries, next) =
                client.range(&prefix, limit, &page_token, keys_only, read).await?;
            if json {
                let kvs = entries.iter().map(|e| output::EntryJson::new(e, keys_only)).collect();
                let next_page_token = (!next.is_empty()).then_some(next.as_str());
                json_line(&output::PageJson { kvs, next_page_token });
            } else {
                for e in &entries {
                    output::print_entry(e, keys_only);
                }
                if !next.is_empty() {
                    println!("next page: --page-token {next}");
                }
            }
        }
        Command::Txn { file } => {
            let text = read_doc(&file)?;
            let txn =
                txn_doc::parse(&text).map_err(|message| Failure { exit: Exit::Usage, message })?;
            let outcome = client.txn(txn).await?;
            txn_doc::print(&outcome, json);
            if !outcome.succeeded {
                return Err(Failure {
                    exit: Exit::ConditionFailed,
                    message: "transaction compare failed: the failure branch ran".into(),
                });
            }
        }
        Command::Members => {
            let members = client.members().await?;
            if json {
                let members = members.iter().map(output::MemberJson::new).collect();
                json_line(&output::MembersJson { members });
            } else {
                output::print_members(&members);
            }
        }
        Command::Snapshot(snapshot::SnapshotCommand::Save { file }) => {
            snapshot::save(&client, &file, json).await?;
        }
        // Ran in main (bench on its own runtime; completions and snapshot status need no
        // cluster), or above (operator commands, without the key-value client).
        Command::Bench(_)
        | Command::Completions { .. }
        | Command::Snapshot(snapshot::SnapshotCommand::Status { .. })
        | Command::Status(_)
        | Command::Member(_) => {}
        Command::Watch(args) => watch::run(&client, args, json).await?,
        Command::Lease(command) => lease::run(&client, command, json).await?,
    }
    Ok(())
}
