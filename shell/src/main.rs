//! `mokvd`: one mokv node. `mokvd --config config.yaml`, `mokvd --dev`, `mokvd certs ...`,
//! `mokvd config reference`.

use std::process::ExitCode;

use mokv_shell::config::{self, Cli, Command, ConfigCommand, NodeConfig, Settings};

/// jemalloc with ONE arena (`narenas:1`, with a background thread returning freed pages after
/// about a second: `.cargo/config.toml` bakes the configuration in; `_RJEM_MALLOC_CONF` in the
/// environment overrides it). The map's key blocks are allocated on several threads — at a start
/// by the thread decoding the snapshot file, after a transfer by the threads that received it,
/// otherwise by the driver — and freed by the driver when their keys are written again. An
/// allocator that hands each thread an arena of its own (glibc's default, jemalloc's) keeps
/// freed blocks for reuse by their own arena's threads only, so a node that rewrote the keys
/// it loaded held them twice: 748–758 MiB after a restart and a rewrite of 1M keys, against
/// 454–462 MiB before the restart (README, Performance).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often jemalloc's statistics are refreshed and published.
const ALLOCATOR_STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// jemalloc's allocated, resident and retained bytes, refreshed (`epoch`) first.
fn allocator_stats() -> Option<(u64, u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let read = |r: Result<usize, tikv_jemalloc_ctl::Error>| r.ok().map(|b| b as u64);
    Some((
        read(stats::allocated::read())?,
        read(stats::resident::read())?,
        read(stats::retained::read())?,
    ))
}

/// Publishes [`allocator_stats`] now and every [`ALLOCATOR_STATS_INTERVAL`] (with metrics on):
/// beside the process's RSS, they tell live data (allocated) from pages the allocator keeps.
fn spawn_allocator_metrics() {
    tokio::spawn(async {
        loop {
            if let Some((allocated, resident, retained)) = allocator_stats() {
                mokv_shell::metrics::allocator_bytes(allocated, resident, retained);
            }
            tokio::time::sleep(ALLOCATOR_STATS_INTERVAL).await;
        }
    });
}

fn main() -> ExitCode {
    let cli = config::parse_cli();
    if let Some(Command::Config(ConfigCommand::Reference)) = &cli.command {
        println!("{}", config::markdown_reference());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Certs(args)) = &cli.command {
        return match mokv_shell::certs::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mokvd certs: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Restore(args)) = &cli.command {
        return restore(args);
    }
    if let Some(Command::Recover(args)) = &cli.command {
        return recover(args);
    }
    let cfg = match resolve(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mokvd: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::new(&cfg.0.log_level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    mokv_shell::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mokvd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg.0, cfg.1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mokvd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mokvd restore`: exit code 0, or 1 with the reason on stderr.
fn restore(args: &config::RestoreArgs) -> ExitCode {
    let path = config::expand_path(&args.data_dir);
    match mokv_shell::restore::restore(&config::expand_path(&args.from), &path, &args.name) {
        Ok(r) => {
            println!(
                "restored {} keys at revision {} into {} (node {} id {:016x}, new cluster {:016x}); \
                 start mokvd with --data-dir {} --node-name {}",
                r.info.keys,
                r.info.applied_index,
                path.display(),
                args.name,
                r.node_id,
                r.cluster_id,
                path.display(),
                args.name,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mokvd restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mokvd recover --force-new-cluster`: exit code 0, or 1 with the reason on stderr.
fn recover(args: &config::RecoverArgs) -> ExitCode {
    let path = config::expand_path(&args.data_dir);
    match mokv_shell::restore::force_new_cluster(&path, args.name.as_deref()) {
        Ok(f) => {
            println!(
                "recovered {}: one-voter cluster with {} keys at index {} (removed voters {:?}, \
                 dropped {} uncommitted log entries); start mokvd on it",
                path.display(),
                f.keys,
                f.applied_index,
                f.removed_voters,
                f.dropped_entries,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mokvd recover: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Flags > environment (both via clap) > file > (`--dev` defaults) > built-in defaults.
fn resolve(cli: Cli) -> Result<(NodeConfig, Option<mokv_shell::certs::DevCerts>), String> {
    let run = cli.run;
    let file = match &run.config {
        Some(p) => Settings::from_file(&config::expand_path(p)).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    let mut settings = run.settings.over(file).expand_paths();
    let mut dev = None;
    if run.dev {
        let dir = settings.data_dir.clone().unwrap_or_else(config::default_dev_dir);
        let defaults = config::dev_settings(&dir);
        let name = settings.node_name.clone().unwrap_or_else(|| "dev".to_owned());
        dev = Some(mokv_shell::certs::ensure_dev_certs(&dir, &name).map_err(|e| e.to_string())?);
        let mut defaults = defaults;
        defaults.server_tls_cert_file = Some(dir.join(format!("{name}.pem")));
        defaults.server_tls_key_file = Some(dir.join(format!("{name}-key.pem")));
        settings = settings.over(defaults);
    }
    let cfg = NodeConfig::resolve(settings).map_err(|e| e.to_string())?;
    Ok((cfg, dev))
}

async fn run(
    cfg: NodeConfig,
    dev: Option<mokv_shell::certs::DevCerts>,
) -> Result<(), Box<dyn std::error::Error>> {
    let metrics_addr = match cfg.metrics_port {
        Some(port) => {
            let addr = std::net::SocketAddr::new(cfg.listen_host, port);
            use mokv_shell::metrics::MetricsTransport;
            let transport = if cfg.metrics_plain_http {
                MetricsTransport::PlainHttp
            } else {
                let tls = mokv_shell::ReloadableServerTls::load(
                    &cfg.server_tls,
                    cfg.server_tls_crl_file.as_deref(),
                )?;
                MetricsTransport::Https { tls, client_auth: cfg.metrics_client_auth }
            };
            let bound = mokv_shell::metrics::install(addr, transport).await?;
            spawn_allocator_metrics();
            Some(bound)
        }
        None => None,
    };
    let mut node = mokv_shell::start(&cfg).await?;
    if let Some(path) = &cfg.ports_file {
        write_ports_file(path, &node, metrics_addr)
            .map_err(|e| format!("writing ports-file {}: {e}", path.display()))?;
    }
    // One machine-readable line on stdout, for scripts and tests started with port 0.
    println!(
        "mokvd listening on {} (advertised {}, gossip {}, raft id {})",
        node.local_addr, node.rpc_addr, node.gossip_addr, node.id
    );
    if let Some(d) = dev {
        println!(
            "dev node ready. Connect with:\n  endpoint: {}\n  ca:       {}\n  cert:     {}\n  key:      {}\n\
             e.g. grpcurl -cacert {} -cert {} -key {} {} list",
            node.rpc_addr,
            d.ca.display(),
            d.client_cert.display(),
            d.client_key.display(),
            d.ca.display(),
            d.client_cert.display(),
            d.client_key.display(),
            node.rpc_addr,
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = node.wait_failed() => {
            r?;
            return Err("the node stopped unexpectedly".into());
        }
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    node.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Writes `rpc`, `gossip` and (if on) `metrics` bound addresses to `path`: first to a temp file
/// next to it, synced, then renamed, so a reader sees the whole file or none.
fn write_ports_file(
    path: &std::path::Path,
    node: &mokv_shell::RunningNode,
    metrics: Option<std::net::SocketAddr>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut text = format!("rpc {}\n", node.local_addr);
    if let Some(g) = node.gossip_local_addr {
        text.push_str(&format!("gossip {g}\n"));
    }
    if let Some(m) = metrics {
        text.push_str(&format!("metrics {m}\n"));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
