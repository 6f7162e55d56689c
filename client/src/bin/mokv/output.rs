//! What `mokv` prints: today's plain text (`--output table`, the default) or JSON
//! (`--output json`) with stable field names.
//!
//! JSON: one document per command on stdout; a stream (`list --all`) prints one object per
//! line instead. Keys are always text (the API's keys are UTF-8 strings). A value is shown as
//! `"value": "<text>"` when it is valid UTF-8 and as `"value_base64": "<standard, padded
//! base64>"` otherwise: exactly one of the two is present (neither for `--keys-only`), so a
//! script never mistakes base64 for text.

use std::io::Write as _;

use base64::Engine as _;
use clap::ValueEnum;
use mokv_client::{Entry, Member};
use serde::Serialize;

use crate::exit::Exit;

/// The output format of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text (what `mokv` always printed).
    #[value(alias = "plain")]
    Table,
    /// JSON: one document per command, one object per line for streams.
    Json,
}

/// One key as JSON.
#[derive(Debug, Serialize)]
pub struct EntryJson<'a> {
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

impl<'a> EntryJson<'a> {
    pub fn new(e: &'a Entry, keys_only: bool) -> Self {
        let (value, value_base64) = if keys_only {
            (None, None)
        } else {
            match std::str::from_utf8(&e.value) {
                Ok(text) => (Some(text), None),
                Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&e.value))),
            }
        };
        EntryJson {
            key: &e.key,
            value,
            value_base64,
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
        }
    }
}

/// `set`.
#[derive(Debug, Serialize)]
pub struct SetJson<'a> {
    pub key: &'a str,
    pub revision: u64,
}

/// `set`/`delete` whose condition did not hold (exit code 3): the key as the condition saw it.
#[derive(Debug, Serialize)]
pub struct ConditionFailedJson<'a> {
    pub key: &'a str,
    /// Revision at which the condition was evaluated.
    pub revision: u64,
    /// `null` when the key did not exist.
    pub current: Option<KeyRevisionsJson>,
}

/// A key's revisions.
#[derive(Debug, Serialize)]
pub struct KeyRevisionsJson {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// `delete`.
#[derive(Debug, Serialize)]
pub struct DeleteJson<'a> {
    pub key: &'a str,
    /// Whether the key existed (and is now gone).
    pub deleted: bool,
}

/// `list` without `--all`: one page.
#[derive(Debug, Serialize)]
pub struct PageJson<'a> {
    pub kvs: Vec<EntryJson<'a>>,
    /// Pass to `--page-token` for the next page; `null` after the last page.
    pub next_page_token: Option<&'a str>,
}

/// One member in `members`.
#[derive(Debug, Serialize)]
pub struct MemberJson<'a> {
    pub name: &'a str,
    /// The raft id in hex, as in the table (a string: JSON numbers lose u64 precision in many
    /// parsers).
    pub raft_id: String,
    pub rpc_addr: &'a str,
    pub leader: bool,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// `alive`, `suspect`, `down` or `unknown`.
    pub health: String,
}

impl<'a> MemberJson<'a> {
    pub fn new(m: &'a Member) -> Self {
        MemberJson {
            name: &m.name,
            raft_id: format!("{:x}", m.raft_id),
            rpc_addr: &m.rpc_addr,
            leader: m.is_leader,
            role: if m.voter { "voter" } else { "learner" },
            health: m.health.to_string(),
        }
    }
}

/// `members`.
#[derive(Debug, Serialize)]
pub struct MembersJson<'a> {
    pub members: Vec<MemberJson<'a>>,
}

/// A failure, on stderr (`--output json`).
#[derive(Debug, Serialize)]
struct ErrorJson<'a> {
    error: &'static str,
    exit_code: u8,
    message: &'a str,
}

/// Prints `doc` as one line of JSON on stdout.
pub fn json_line<T: Serialize>(doc: &T) {
    // Serialising these plain structs cannot fail; a closed stdout is not worth a panic.
    if let Ok(text) = serde_json::to_string(doc) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }
}

/// Reports a failure on stderr: `mokv: <message>` as text, or one JSON object.
pub fn report(output: Output, exit: Exit, message: &str) {
    match output {
        Output::Table => eprintln!("mokv: {message}"),
        Output::Json => {
            let doc = ErrorJson { error: exit.name(), exit_code: exit.code(), message };
            if let Ok(text) = serde_json::to_string(&doc) {
                eprintln!("{text}");
            }
        }
    }
}

/// `get`/`list` text: the value, lossily as UTF-8 (today's format).
pub fn print_entry(e: &Entry, keys_only: bool) {
    if keys_only {
        println!("{}", e.key);
    } else {
        println!("{}\t{}", e.key, String::from_utf8_lossy(&e.value));
    }
}

/// `members` as a table.
pub fn print_members(members: &[Member]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8]) -> Entry {
        Entry {
            key: "k".into(),
            value: value.to_vec(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
        }
    }

    #[test]
    fn text_values_are_strings_and_other_bytes_base64() {
        let text = serde_json::to_value(EntryJson::new(&entry(b"h\xc3\xa9"), false)).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"key": "k", "value": "hé", "create_revision": 3,
                "mod_revision": 5, "version": 2})
        );
        let bin = serde_json::to_value(EntryJson::new(&entry(&[0xff, 0, 0xfe]), false)).unwrap();
        assert_eq!(bin["value_base64"], "/wD+");
        assert!(bin.get("value").is_none(), "{bin}");
        let keys = serde_json::to_value(EntryJson::new(&entry(b"v"), true)).unwrap();
        assert!(keys.get("value").is_none() && keys.get("value_base64").is_none(), "{keys}");
        // An empty value is text.
        let empty = serde_json::to_value(EntryJson::new(&entry(b""), false)).unwrap();
        assert_eq!(empty["value"], "");
    }
}
