//! `mokv watch KEY | --prefix P [--from-revision R] [--prev]`: one line per change, as it
//! happens, until interrupted (or the watch fails: every node compacted past the position, no
//! node reachable for the call timeout, a refusal).
//!
//! Text: `PUT <key> <revision> <value>` / `DELETE <key> <revision>`, with ` prev=<value>`
//! appended under `--prev` when the key existed before (values printed as UTF-8, lossily).
//! JSON: one object per line, `{"type":"PUT","key":..,"revision":..,"value":..}` (values as
//! `value`/`value_base64` like every other command; `prev_value`/`prev_value_base64`).

use base64::Engine as _;
use mokv_client::{Client, ClientError, EventKind, WatchEvent, WatchOptions};
use serde::Serialize;

use crate::output::json_line;

/// What to watch.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The key to watch.
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    key: Option<String>,
    /// Watch every key starting with P ("" = every key).
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Start at revision R (e.g. the last one printed + 1); default: from now.
    #[arg(long, value_name = "R")]
    from_revision: Option<u64>,
    /// Also print each change's previous value.
    #[arg(long)]
    prev: bool,
}

#[derive(Debug, Serialize)]
struct EventJson<'a> {
    r#type: &'static str,
    key: &'a str,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_value_base64: Option<String>,
}

/// `(text, base64)`: exactly one is set.
fn json_value(v: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(v) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(v))),
    }
}

fn print(e: &WatchEvent, json: bool) {
    let kind = match e.kind {
        EventKind::Put => "PUT",
        EventKind::Delete => "DELETE",
    };
    if json {
        let (value, value_base64) = match e.kind {
            EventKind::Put => json_value(&e.value),
            EventKind::Delete => (None, None),
        };
        let (prev_value, prev_value_base64) =
            e.prev_value.as_deref().map_or((None, None), json_value);
        json_line(&EventJson {
            r#type: kind,
            key: &e.key,
            revision: e.revision,
            value,
            value_base64,
            prev_value,
            prev_value_base64,
        });
        return;
    }
    let mut line = format!("{kind} {} {}", e.key, e.revision);
    if e.kind == EventKind::Put {
        line.push(' ');
        line.push_str(&String::from_utf8_lossy(&e.value));
    }
    if let Some(prev) = &e.prev_value {
        line.push_str(" prev=");
        line.push_str(&String::from_utf8_lossy(prev));
    }
    println!("{line}");
}

/// Prints events until the watch fails.
pub async fn run(client: &Client, args: WatchArgs, json: bool) -> Result<(), ClientError> {
    let mut opts = WatchOptions::new();
    let key = match (args.key, args.prefix) {
        (_, Some(prefix)) => {
            opts = opts.prefix();
            prefix
        }
        (Some(key), None) => key,
        (None, None) => String::new(),
    };
    if let Some(r) = args.from_revision {
        opts = opts.from_revision(r);
    }
    if args.prev {
        opts = opts.prev_value();
    }
    let mut events = Box::pin(client.watch(&key, opts));
    while let Some(e) = crate::next(&mut events).await {
        print(&e?, json);
    }
    Ok(())
}
