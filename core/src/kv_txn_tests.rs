//! Transactions against the state machine: the branch taken, one revision for every write,
//! reads inside the entry, atomic refusal by the quota, exactly-once through sessions, and a
//! snapshot that carries a transaction's session outcome.

use super::*;
use crate::codec::{Reader, Writer};
use crate::command::ProposalSession;
use crate::txn::{Compare, Txn, TxnOp, TxnOpResult};

fn run(
    sm: &mut StateMachine,
    session: Option<ProposalSession>,
    quota: Option<u64>,
    txn: &Txn,
) -> (Result<WriteOutcome, Error>, Option<Vec<TxnOpResult>>) {
    let index = sm.applied_index() + 1;
    let p = Proposal {
        session,
        proposed_at_ms: 0,
        quota_state_bytes: quota,
        command: Command::Txn(txn.clone()),
    };
    sm.apply_with_reads(index, &p, usize::MAX)
}

fn set(sm: &mut StateMachine, key: &str, value: &[u8]) {
    let index = sm.applied_index() + 1;
    let command = Command::Set { key: key.into(), value: value.into() };
    sm.apply(
        index,
        &Proposal { session: None, proposed_at_ms: 0, quota_state_bytes: None, command },
    )
    .unwrap();
}

fn set_op(key: &str, value: &[u8]) -> TxnOp {
    TxnOp::Set { key: key.into(), value: value.into() }
}

fn get_op(key: &str) -> TxnOp {
    TxnOp::Get { key: key.into() }
}

/// Moves `amount` from `from` to `to` if both still hold the values read.
fn transfer(from: (&str, u64), to: (&str, u64), amount: u64) -> Txn {
    let cmp = |(k, v): (&str, u64)| Compare {
        key: k.into(),
        condition: Condition::ValueEquals(v.to_string().into_bytes()),
    };
    Txn {
        compares: vec![cmp(from), cmp(to)],
        success: vec![
            set_op(from.0, (from.1 - amount).to_string().as_bytes()),
            set_op(to.0, (to.1 + amount).to_string().as_bytes()),
        ],
        failure: vec![get_op(from.0), get_op(to.0)],
    }
}

#[test]
fn compares_choose_the_branch_and_writes_share_one_revision() {
    let mut sm = StateMachine::default();
    set(&mut sm, "a", b"10");
    set(&mut sm, "b", b"0");
    let (outcome, results) = run(&mut sm, None, None, &transfer(("a", 10), ("b", 0), 3));
    assert_eq!(outcome, Ok(WriteOutcome::Txn { succeeded: true, revision: 3 }));
    assert_eq!(results, Some(vec![TxnOpResult::Set, TxnOpResult::Set]));
    let (a, b) = (sm.get("a").unwrap(), sm.get("b").unwrap());
    assert_eq!((a.value(), b.value()), (&b"7"[..], &b"3"[..]));
    assert_eq!((a.mod_index(), b.mod_index()), (3, 3), "one revision for the whole transaction");
    assert_eq!((a.version(), b.version()), (2, 2));

    // Stale compares: the failure branch runs, reading the state at this entry.
    let (outcome, results) = run(&mut sm, None, None, &transfer(("a", 10), ("b", 0), 3));
    assert_eq!(outcome, Ok(WriteOutcome::Txn { succeeded: false, revision: 4 }));
    let results = results.unwrap();
    assert!(
        matches!(&results[0], TxnOpResult::Get(Some(v)) if v.value == b"7" && v.mod_index == 3)
    );
    assert!(matches!(&results[1], TxnOpResult::Get(Some(v)) if v.value == b"3"));
    assert_eq!(sm.get("a").unwrap().mod_index(), 3, "the failure branch wrote nothing");
    assert_eq!(sm.applied_index(), 4);
}

#[test]
fn reads_see_earlier_writes_of_the_branch_and_ranges_are_bounded() {
    let mut sm = StateMachine::default();
    set(&mut sm, "p/1", b"x");
    let txn = Txn {
        compares: vec![Compare { key: "p/2".into(), condition: Condition::Absent }],
        success: vec![
            get_op("p/2"),
            set_op("p/2", b"y"),
            TxnOp::Delete { key: "p/1".into() },
            set_op("p/3", b"z"),
            get_op("p/2"),
            TxnOp::Range { prefix: "p/".into(), limit: 1 },
            TxnOp::Range { prefix: "p/".into(), limit: 10 },
            TxnOp::Delete { key: "missing".into() },
        ],
        failure: vec![],
    };
    let (outcome, results) = run(&mut sm, None, None, &txn);
    assert_eq!(outcome, Ok(WriteOutcome::Txn { succeeded: true, revision: 2 }));
    let r = results.unwrap();
    assert_eq!(r.len(), 8);
    assert_eq!(r[0], TxnOpResult::Get(None));
    assert_eq!(r[1], TxnOpResult::Set);
    assert_eq!(r[2], TxnOpResult::Delete { existed: true });
    assert!(matches!(&r[4], TxnOpResult::Get(Some(v)) if v.value == b"y" && v.mod_index == 2));
    let keys = |r: &TxnOpResult| match r {
        TxnOpResult::Range { items, more } => {
            (items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(), *more)
        }
        _ => panic!("not a range"),
    };
    assert_eq!(keys(&r[5]), (vec!["p/2".to_string()], true));
    assert_eq!(keys(&r[6]), (vec!["p/2".to_string(), "p/3".to_string()], false));
    assert_eq!(r[7], TxnOpResult::Delete { existed: false });
    let state_bytes: u64 =
        ["p/2", "p/3"].iter().map(|k| key_state_bytes(k, sm.get(k).unwrap().value())).sum();
    assert_eq!(sm.state_bytes(), state_bytes);
}

#[test]
fn the_quota_refuses_the_whole_transaction_by_its_net_growth() {
    let mut sm = StateMachine::default();
    set(&mut sm, "old", &[0; 100]);
    let quota = sm.state_bytes() + key_state_bytes("n1", &[0; 10]);
    // Two new keys: over the quota together, though each alone would fit.
    let grow =
        Txn { success: vec![set_op("n1", &[0; 10]), set_op("n2", &[0; 10])], ..Txn::default() };
    let before = sm.clone();
    let (outcome, results) = run(&mut sm, None, Some(quota), &grow);
    assert!(matches!(outcome, Err(Error::QuotaExceeded(_))), "{outcome:?}");
    assert_eq!(results, None);
    assert!(sm.get("n1").is_none() && sm.get("n2").is_none(), "nothing of it was applied");
    assert_eq!(sm.state_bytes(), before.state_bytes());
    // Deleting as much as it adds: no net growth, applied under the same quota.
    let swap = Txn {
        success: vec![
            TxnOp::Delete { key: "old".into() },
            set_op("n1", &[0; 10]),
            set_op("n2", &[0; 10]),
        ],
        ..Txn::default()
    };
    let (outcome, _) = run(&mut sm, None, Some(quota), &swap);
    assert_eq!(outcome, Ok(WriteOutcome::Txn { succeeded: true, revision: 3 }));
    assert!(sm.state_bytes() <= quota);
}

#[test]
fn a_session_retry_returns_the_first_outcome_and_applies_once() {
    let mut sm = StateMachine::default();
    set(&mut sm, "a", b"10");
    set(&mut sm, "b", b"0");
    let s = Some(ProposalSession::Legacy { client_id: 7, seq: 1, first_unacked_seq: 1 });
    let txn = transfer(("a", 10), ("b", 0), 4);
    let (first, results) = run(&mut sm, s.clone(), None, &txn);
    assert_eq!(first, Ok(WriteOutcome::Txn { succeeded: true, revision: 3 }));
    assert!(results.is_some());
    // The answer was lost; the retry arrives after the values changed back, so applying it
    // again would succeed and transfer twice.
    set(&mut sm, "a", b"10");
    set(&mut sm, "b", b"0");
    let (again, results) = run(&mut sm, s.clone(), None, &txn);
    assert_eq!(again, first);
    assert_eq!(results, None, "answered from the session, not applied");
    assert_eq!(sm.get("a").unwrap().value(), b"10");
    assert_eq!(sm.get("a").unwrap().mod_index(), 4);
}

#[test]
fn a_snapshot_carries_transaction_outcomes_and_their_writes() {
    let mut sm = StateMachine::default();
    set(&mut sm, "a", b"10");
    set(&mut sm, "b", b"0");
    let s = Some(ProposalSession::Legacy { client_id: 3, seq: 1, first_unacked_seq: 1 });
    let txn = transfer(("a", 10), ("b", 0), 1);
    run(&mut sm, s.clone(), None, &txn).0.unwrap();
    let mut w = Writer::new();
    sm.encode_to(&mut w);
    let bytes = w.finish();
    let mut r = Reader::new(&bytes);
    let mut restored = StateMachine::decode_from(&mut r).unwrap();
    r.finish().unwrap();
    assert_eq!(restored, sm);
    assert_eq!(restored.digest(), sm.digest());
    // The restored replica answers the retry from the session like the original.
    let (a, _) = run(&mut sm, s.clone(), None, &txn);
    let (b, _) = run(&mut restored, s, None, &txn);
    assert_eq!(a, Ok(WriteOutcome::Txn { succeeded: true, revision: 3 }));
    assert_eq!(a, b);
    assert_eq!(restored, sm);
}
