//! The `Txn` rpc's conversions between the wire messages and the core's [`Txn`], and which key
//! each part of a transaction needs which action on (see [`crate::security::authz`]).

use mokv_core::{Compare, RangeItem, Txn, TxnOp, TxnOpResult, TxnResponse, Versioned};
use mokv_proto::api;
use mokv_proto::api::txn_op::Op;
use mokv_proto::api::txn_op_result::Result as OpResult;
use tonic::Status;

use crate::net::kv_service::condition;
use crate::security::authz::{range_object, Action};

/// The core's transaction for a wire one. An operation or compare with nothing set is refused
/// (INVALID_ARGUMENT), never skipped.
pub(crate) fn from_wire(r: &api::TxnRequest) -> Result<Txn, Status> {
    let compares = r
        .compare
        .iter()
        .map(|c| {
            let cond = c
                .condition
                .clone()
                .ok_or_else(|| Status::invalid_argument("compare: condition is required"))?;
            Ok(Compare { key: c.key.clone(), condition: condition(cond)? })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let branch = |ops: &[api::TxnOp]| -> Result<Vec<TxnOp>, Status> {
        ops.iter()
            .map(|op| match &op.op {
                Some(Op::Set(s)) => Ok(TxnOp::Set { key: s.key.clone(), value: s.value.clone() }),
                Some(Op::Delete(d)) => Ok(TxnOp::Delete { key: d.key.clone() }),
                Some(Op::Get(g)) => Ok(TxnOp::Get { key: g.key.clone() }),
                Some(Op::Range(q)) => Ok(TxnOp::Range { prefix: q.prefix.clone(), limit: q.limit }),
                None => {
                    Err(Status::invalid_argument("txn operation: set exactly one of its fields"))
                }
            })
            .collect()
    };
    Ok(Txn { compares, success: branch(&r.success)?, failure: branch(&r.failure)? })
}

/// Every (object, action) the transaction needs: `consume` on each compared key and each key
/// read (a range: its prefix pattern), `produce` on each key written. Both branches count:
/// which one runs is decided only when the transaction is applied.
pub(crate) fn permissions(txn: &Txn) -> Vec<(String, Action)> {
    let mut needed: Vec<(String, Action)> =
        txn.compares.iter().map(|c| (c.key.clone(), Action::Consume)).collect();
    for op in txn.success.iter().chain(&txn.failure) {
        needed.push(match op {
            TxnOp::Set { key, .. } | TxnOp::Delete { key } => (key.clone(), Action::Produce),
            TxnOp::Get { key } => (key.clone(), Action::Consume),
            TxnOp::Range { prefix, .. } => (range_object(prefix), Action::Consume),
            // An operation kind this code does not know: the strongest permission there is.
            _ => (range_object(""), Action::Admin),
        });
    }
    needed.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    needed.dedup();
    needed
}

fn key_value(key: String, v: Versioned) -> api::KeyValue {
    api::KeyValue {
        key,
        value: v.value,
        create_revision: v.create_index,
        mod_revision: v.mod_index,
        version: v.version,
    }
}

fn item(i: RangeItem) -> api::KeyValue {
    api::KeyValue {
        key: i.key,
        value: i.value,
        create_revision: i.create_index,
        mod_revision: i.mod_index,
        version: i.version,
    }
}

/// The wire answer. `ops` is the branch that ran (for the keys of `Get` results); `visible`
/// says whether the caller may consume a key a range returned (others are left out, as in
/// `Range`).
pub(crate) fn to_wire(
    r: TxnResponse,
    txn: &Txn,
    visible: impl Fn(&str) -> bool,
) -> api::TxnResponse {
    let ops = if r.succeeded { &txn.success } else { &txn.failure };
    let replayed = r.results.is_none();
    let results = r
        .results
        .unwrap_or_default()
        .into_iter()
        .zip(ops)
        .map(|(res, op)| {
            let result = match res {
                TxnOpResult::Set => OpResult::Set(api::TxnSetResult {}),
                TxnOpResult::Delete { existed } => {
                    OpResult::Delete(api::TxnDeleteResult { existed })
                }
                TxnOpResult::Get(v) => OpResult::Get(api::TxnGetResult {
                    found: v.is_some(),
                    kv: v.map(|v| key_value(op.key().to_owned(), v)),
                }),
                TxnOpResult::Range { items, more } => OpResult::Range(api::TxnRangeResult {
                    kvs: items.into_iter().filter(|i| visible(&i.key)).map(item).collect(),
                    more,
                }),
                _ => return api::TxnOpResult { result: None },
            };
            api::TxnOpResult { result: Some(result) }
        })
        .collect();
    api::TxnResponse { succeeded: r.succeeded, revision: r.revision, results, replayed }
}
