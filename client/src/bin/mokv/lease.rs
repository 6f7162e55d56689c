//! `mokv lease ...`: grant, keep alive, revoke and inspect leases.

use std::time::Duration;

use mokv_client::{Client, ClientError};
use serde::Serialize;

use crate::output::json_line;

#[derive(Debug, clap::Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL_SECONDS; prints its id (attach keys with `mokv set --lease ID`).
    Grant {
        #[arg(value_name = "TTL_SECONDS")]
        ttl_seconds: u64,
    },
    /// Keep lease ID alive until interrupted (a keep-alive every third of its TTL, one line
    /// each); exits with code 2 (not found) once the lease is gone.
    Keepalive {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Revoke lease ID: its keys are deleted.
    Revoke {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Print lease ID's granted TTL, the time it has left and its keys.
    Ttl {
        #[arg(value_name = "ID")]
        id: u64,
    },
}

#[derive(Debug, Serialize)]
struct GrantJson {
    id: u64,
    ttl_ms: u64,
    revision: u64,
}

#[derive(Debug, Serialize)]
struct TtlJson<'a> {
    id: u64,
    granted_ttl_ms: u64,
    remaining_ms: u64,
    keys: &'a [String],
}

pub async fn run(client: &Client, command: LeaseCommand, json: bool) -> Result<(), ClientError> {
    match command {
        LeaseCommand::Grant { ttl_seconds } => {
            let lease = client.lease_grant(Duration::from_secs(ttl_seconds)).await?;
            if json {
                let ttl_ms = u64::try_from(lease.ttl.as_millis()).unwrap_or(u64::MAX);
                json_line(&GrantJson { id: lease.id, ttl_ms, revision: lease.revision });
            } else {
                println!("{}", lease.id);
            }
        }
        LeaseCommand::Keepalive { id } => loop {
            let ttl = client.lease_keep_alive_once(id).await?;
            if json {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                json_line(&GrantJson { id, ttl_ms, revision: 0 });
            } else {
                println!("lease {id} kept alive, TTL {} ms", ttl.as_millis());
            }
            tokio::time::sleep((ttl / 3).max(Duration::from_millis(50))).await;
        },
        LeaseCommand::Revoke { id } => {
            let revision = client.lease_revoke(id).await?;
            if json {
                json_line(&GrantJson { id, ttl_ms: 0, revision });
            } else {
                println!("OK (revision {revision})");
            }
        }
        LeaseCommand::Ttl { id } => {
            let t = client.lease_time_to_live(id, true).await?;
            if json {
                json_line(&TtlJson {
                    id,
                    granted_ttl_ms: u64::try_from(t.granted_ttl.as_millis()).unwrap_or(u64::MAX),
                    remaining_ms: u64::try_from(t.remaining.as_millis()).unwrap_or(u64::MAX),
                    keys: &t.keys,
                });
            } else {
                println!(
                    "lease {id}: granted TTL {} ms, remaining {} ms, {} keys",
                    t.granted_ttl.as_millis(),
                    t.remaining.as_millis(),
                    t.keys.len()
                );
                for key in &t.keys {
                    println!("{key}");
                }
            }
        }
    }
    Ok(())
}
