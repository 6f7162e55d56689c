//! `mokv member list | remove NAME [--force] | transfer-leader [NAME]`: the operator's
//! membership commands (the `Cluster` service; see `mokv_client::Admin`).

use clap::Subcommand;
use mokv_client::{Admin, MemberEntry};
use serde::Serialize;

use crate::output::{json_line, Output};
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members of the Raft configuration (as the answering node knows them).
    List,
    /// Remove the member NAME from the cluster. A voter whose removal would leave no live
    /// majority of voters is refused (exit code 1) unless --force.
    Remove {
        name: String,
        /// Skip the strict-quorum guard: the cluster may stall until the missing voters are
        /// back.
        #[arg(long)]
        force: bool,
    },
    /// Hand leadership to the voter NAME (default: the most caught-up live voter).
    TransferLeader { name: Option<String> },
}

/// One member in `member list --output json`.
#[derive(Debug, Serialize)]
struct MemberJson<'a> {
    name: &'a str,
    /// In hex, as in the table and `members`.
    raft_id: String,
    rpc_addr: &'a str,
    leader: bool,
    /// `voter` or `learner`.
    role: &'static str,
    /// `alive`, `suspect`, `down` or `unknown`.
    health: String,
}

#[derive(Debug, Serialize)]
struct MemberListJson<'a> {
    members: Vec<MemberJson<'a>>,
}

#[derive(Debug, Serialize)]
struct RemovedJson<'a> {
    name: &'a str,
    /// The Raft index at which the removal was applied.
    index: u64,
}

#[derive(Debug, Serialize)]
struct TransferJson<'a> {
    /// `null`: the cluster picked the most caught-up live voter.
    to: Option<&'a str>,
    started: bool,
}

pub async fn run(admin: &Admin, command: &MemberCommand, output: Output) -> Result<(), Failure> {
    let json = output == Output::Json;
    match command {
        MemberCommand::List => {
            let members = admin.members().await?;
            if json {
                let members = members.iter().map(member_json).collect();
                json_line(&MemberListJson { members });
            } else {
                print_members(&members);
            }
        }
        MemberCommand::Remove { name, force } => {
            let index = admin.remove(name, *force).await?;
            if json {
                json_line(&RemovedJson { name, index });
            } else {
                println!("removed {name} (at index {index})");
            }
        }
        MemberCommand::TransferLeader { name } => {
            admin.transfer_leader(name.as_deref()).await?;
            if json {
                json_line(&TransferJson { to: name.as_deref(), started: true });
            } else {
                match name {
                    Some(n) => println!("leadership transfer to {n} started"),
                    None => println!("leadership transfer started"),
                }
            }
        }
    }
    Ok(())
}

fn member_json(m: &MemberEntry) -> MemberJson<'_> {
    MemberJson {
        name: &m.name,
        raft_id: format!("{:x}", m.raft_id),
        rpc_addr: &m.rpc_addr,
        leader: m.is_leader,
        role: if m.voter { "voter" } else { "learner" },
        health: m.health.to_string(),
    }
}

fn print_members(members: &[MemberEntry]) {
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
