//! `mokv status`: one table for the whole cluster (every member asked for its own numbers; see
//! `mokv_client::Admin::cluster_status`), once or, with `--watch`, every `--interval-ms`.

use std::time::Duration;

use mokv_client::{Admin, ClusterStatus, MemberStatus};
use serde::Serialize;

use crate::output::{json_line, Output};
use crate::Failure;

/// `mokv status` flags.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Refresh the table until interrupted (JSON: one document per refresh, one per line).
    #[arg(long)]
    watch: bool,
    /// Time between two refreshes with --watch.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(100..))]
    interval_ms: u64,
}

/// One member in `status --output json`.
#[derive(Debug, Serialize)]
struct MemberStatusJson<'a> {
    name: &'a str,
    /// In hex, as in the table and `members` (a string: JSON numbers lose u64 precision).
    raft_id: String,
    rpc_addr: &'a str,
    /// `voter` or `learner`.
    suffrage: &'static str,
    /// `leader`, `follower`, `pre-candidate`, `candidate`; `null`: it did not answer.
    role: Option<&'static str>,
    term: Option<u64>,
    commit_index: Option<u64>,
    applied_index: Option<u64>,
    /// The leader's commit index minus this member's applied index.
    lag_entries: Option<u64>,
    /// `alive`, `suspect`, `down` or `unknown`, in the leader's gossip view.
    health: String,
    /// Since the leader last heard from it over Raft; `null` for the leader itself.
    last_contact_ms: Option<u64>,
    version: Option<&'a str>,
    /// Why it did not answer.
    error: Option<&'a str>,
}

impl<'a> MemberStatusJson<'a> {
    fn new(m: &'a MemberStatus) -> Self {
        MemberStatusJson {
            name: &m.name,
            raft_id: format!("{:x}", m.raft_id),
            rpc_addr: &m.rpc_addr,
            suffrage: if m.voter { "voter" } else { "learner" },
            role: m.role.map(|r| r.as_str()),
            term: m.term,
            commit_index: m.commit_index,
            applied_index: m.applied_index,
            lag_entries: m.lag_entries,
            health: m.health.to_string(),
            last_contact_ms: m.last_contact_ms,
            version: m.version.as_deref(),
            error: m.error.as_deref(),
        }
    }
}

/// `status --output json`.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    /// In hex (`0`: not known).
    cluster_id: String,
    members: Vec<MemberStatusJson<'a>>,
}

pub async fn run(admin: &Admin, args: &StatusArgs, output: Output) -> Result<(), Failure> {
    if !args.watch {
        let status = admin.cluster_status().await?;
        print(&status, output);
        return Ok(());
    }
    let mut interval = tokio::time::interval(Duration::from_millis(args.interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match admin.cluster_status().await {
            Ok(status) => {
                if output == Output::Table {
                    println!("--- {}", unix_time());
                }
                print(&status, output);
            }
            // A watch rides out a cluster that does not answer for a while.
            Err(e) => crate::output::report(output, crate::exit::Exit::of(&e), &e.to_string()),
        }
    }
}

/// Seconds since the Unix epoch, for the header of each refresh.
fn unix_time() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or_else(|_| "-".to_owned(), |d| format!("{}.{:03}", d.as_secs(), d.subsec_millis()))
}

fn print(status: &ClusterStatus, output: Output) {
    match output {
        Output::Json => json_line(&StatusJson {
            cluster_id: format!("{:x}", status.cluster_id),
            members: status.members.iter().map(MemberStatusJson::new).collect(),
        }),
        Output::Table => print_table(status),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn print_table(status: &ClusterStatus) {
    let header = [
        "NAME",
        "ID",
        "RPC ADDRESS",
        "SUFFRAGE",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LAG",
        "HEALTH",
        "LAST CONTACT",
        "VERSION",
    ];
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                format!("{:x}", m.raft_id),
                m.rpc_addr.clone(),
                (if m.voter { "voter" } else { "learner" }).to_owned(),
                m.role.map_or_else(|| "unreachable".to_owned(), |r| r.as_str().to_owned()),
                opt(m.term),
                opt(m.commit_index),
                opt(m.applied_index),
                opt(m.lag_entries),
                m.health.to_string(),
                m.last_contact_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms ago")),
                opt(m.version.as_deref()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    for m in status.members.iter().filter(|m| m.error.is_some()) {
        println!("{}: {}", m.name, m.error.as_deref().unwrap_or_default());
    }
}
