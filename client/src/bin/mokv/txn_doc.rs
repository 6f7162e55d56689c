//! `mokv txn FILE|-`: the JSON document that describes a transaction, and how its outcome is
//! printed.
//!
//! ```json
//! {"compare": [{"key": "a", "version": 3}, {"key": "b", "absent": true},
//!              {"key": "c", "mod_revision": 12}, {"key": "d", "value": "on"}],
//!  "success": [{"set": {"key": "a", "value": "1"}}, {"delete": {"key": "b"}},
//!              {"get": {"key": "c"}}, {"range": {"prefix": "app/", "limit": 10}}],
//!  "failure": [{"get": {"key": "a"}}]}
//! ```
//! Each compare names its key and exactly one condition; every part is optional (no compares:
//! the success branch runs). Values are UTF-8 text. Unknown fields are refused.

use mokv_client::{Condition, Txn, TxnOp, TxnOutcome, TxnResult};
use serde::{Deserialize, Serialize};

use crate::output::{json_line, EntryJson};

/// The largest document read (the server bounds a transaction far below this).
pub const MAX_DOC_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    compare: Vec<CompareDoc>,
    #[serde(default)]
    success: Vec<OpDoc>,
    #[serde(default)]
    failure: Vec<OpDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareDoc {
    key: String,
    absent: Option<bool>,
    version: Option<u64>,
    mod_revision: Option<u64>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDoc {
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDoc {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeDoc {
    prefix: String,
    #[serde(default)]
    limit: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OpDoc {
    Set(SetDoc),
    Delete(KeyDoc),
    Get(KeyDoc),
    Range(RangeDoc),
}

impl OpDoc {
    fn op(self) -> TxnOp {
        match self {
            OpDoc::Set(s) => TxnOp::Set { key: s.key, value: s.value.into_bytes() },
            OpDoc::Delete(k) => TxnOp::Delete { key: k.key },
            OpDoc::Get(k) => TxnOp::Get { key: k.key },
            OpDoc::Range(r) => TxnOp::Range { prefix: r.prefix, limit: r.limit },
        }
    }
}

/// The transaction a document describes; the error says what is wrong (never a key or value).
pub fn parse(text: &str) -> Result<Txn, String> {
    let doc: Doc = serde_json::from_str(text).map_err(|e| {
        format!("transaction document: {} at line {} column {}", kind(&e), e.line(), e.column())
    })?;
    let mut txn = Txn::new();
    for (i, c) in doc.compare.into_iter().enumerate() {
        let condition = match (c.absent, c.version, c.mod_revision, c.value) {
            (Some(true), None, None, None) => Condition::Absent,
            (None, Some(n), None, None) => Condition::Version(n),
            (None, None, Some(r), None) => Condition::ModRevision(r),
            (None, None, None, Some(v)) => Condition::ValueEquals(v.into_bytes()),
            _ => {
                return Err(format!(
                    "transaction document: compare {i} needs exactly one of absent (true), \
                     version, mod_revision, value"
                ))
            }
        };
        txn = txn.compare(&c.key, condition);
    }
    for op in doc.success {
        txn = txn.on_success(op.op());
    }
    for op in doc.failure {
        txn = txn.on_failure(op.op());
    }
    Ok(txn)
}

/// serde_json's error category without its message (which may quote the document).
fn kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected field or type",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

#[derive(Debug, Serialize)]
struct OutcomeJson<'a> {
    succeeded: bool,
    revision: u64,
    replayed: bool,
    results: Vec<ResultJson<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ResultJson<'a> {
    Set,
    Delete { existed: bool },
    Get { kv: Option<EntryJson<'a>> },
    Range { kvs: Vec<EntryJson<'a>>, more: bool },
}

/// Prints the outcome: a first line `succeeded|failed revision R` then one line per result
/// (table), or one JSON object.
pub fn print(outcome: &TxnOutcome, json: bool) {
    if json {
        let results = outcome
            .results
            .iter()
            .map(|r| match r {
                TxnResult::Set => ResultJson::Set,
                TxnResult::Delete { existed } => ResultJson::Delete { existed: *existed },
                TxnResult::Get(e) => {
                    ResultJson::Get { kv: e.as_ref().map(|e| EntryJson::new(e, false)) }
                }
                TxnResult::Range { entries, more } => ResultJson::Range {
                    kvs: entries.iter().map(|e| EntryJson::new(e, false)).collect(),
                    more: *more,
                },
                _ => ResultJson::Set,
            })
            .collect();
        json_line(&OutcomeJson {
            succeeded: outcome.succeeded,
            revision: outcome.revision,
            replayed: outcome.replayed,
            results,
        });
        return;
    }
    let branch = if outcome.succeeded { "succeeded" } else { "failed" };
    println!("{branch} revision {}", outcome.revision);
    if outcome.replayed {
        println!("(a retry: results of the first application are not kept)");
    }
    for r in &outcome.results {
        match r {
            TxnResult::Set => println!("set"),
            TxnResult::Delete { existed } => {
                println!("delete {}", if *existed { "deleted" } else { "not found" })
            }
            TxnResult::Get(Some(e)) => {
                println!("get\t{}\t{}", e.key, String::from_utf8_lossy(&e.value))
            }
            TxnResult::Get(None) => println!("get\t(not found)"),
            TxnResult::Range { entries, more } => {
                println!("range {} keys{}", entries.len(), if *more { " (more)" } else { "" });
                for e in entries {
                    println!("\t{}\t{}", e.key, String::from_utf8_lossy(&e.value));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part() {
        let doc = r#"{"compare":[{"key":"a","version":3},{"key":"b","absent":true},
            {"key":"c","mod_revision":12},{"key":"d","value":"on"}],
            "success":[{"set":{"key":"a","value":"1"}},{"delete":{"key":"b"}},
            {"get":{"key":"c"}},{"range":{"prefix":"app/","limit":10}}],
            "failure":[{"get":{"key":"a"}}]}"#;
        let expected = Txn::new()
            .compare("a", Condition::Version(3))
            .compare("b", Condition::Absent)
            .compare("c", Condition::ModRevision(12))
            .compare("d", Condition::ValueEquals(b"on".to_vec()))
            .on_success_set("a", b"1")
            .on_success(TxnOp::Delete { key: "b".into() })
            .on_success_get("c")
            .on_success(TxnOp::Range { prefix: "app/".into(), limit: 10 })
            .on_failure_get("a");
        assert_eq!(parse(doc).unwrap(), expected);
    }

    #[test]
    fn refuses_bad_documents_without_echoing_them() {
        for doc in [
            r#"{"compare":[{"key":"secret","version":1,"absent":true}]}"#,
            r#"{"compare":[{"key":"secret"}]}"#,
            r#"{"success":[{"put":{"key":"secret"}}]}"#,
            r#"{"success":[{"set":{"key":"secret"}}]}"#,
            r#"{"extra":1}"#,
            "{",
        ] {
            let e = parse(doc).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
