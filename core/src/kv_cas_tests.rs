//! Conditional writes (`SetIf` / `DeleteIf`) against the state machine: each condition, the
//! answer kept in sessions (applied exactly once), and replicas that decide identically.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::codec::{Reader, Writer};
use crate::command::{Condition, KeyRevisions, ProposalSession};

fn apply(
    sm: &mut StateMachine,
    session: Option<ProposalSession>,
    command: Command,
) -> WriteOutcome {
    let index = sm.applied_index() + 1;
    sm.apply(index, &Proposal { session, proposed_at_ms: 0, quota_state_bytes: None, command })
        .unwrap()
}

fn set(sm: &mut StateMachine, key: &str, value: &[u8]) -> WriteOutcome {
    apply(sm, None, Command::Set { key: key.into(), value: value.into() })
}

fn set_if(sm: &mut StateMachine, key: &str, value: &[u8], condition: Condition) -> WriteOutcome {
    apply(sm, None, Command::SetIf { key: key.into(), value: value.into(), condition })
}

fn delete_if(sm: &mut StateMachine, key: &str, condition: Condition) -> WriteOutcome {
    apply(sm, None, Command::DeleteIf { key: key.into(), condition })
}

fn revs(create_index: u64, mod_index: u64, version: u64) -> Option<KeyRevisions> {
    Some(KeyRevisions { create_index, mod_index, version })
}

#[test]
fn if_absent_creates_once() {
    let mut sm = StateMachine::default();
    assert_eq!(set_if(&mut sm, "k", b"1", Condition::Absent), WriteOutcome::Set { revision: 1 });
    assert_eq!(
        set_if(&mut sm, "k", b"2", Condition::Absent),
        WriteOutcome::ConditionFailed { revision: 2, current: revs(1, 1, 1) }
    );
    assert_eq!(sm.get("k").unwrap().value(), b"1");
    // The failed write consumed its index but changed nothing.
    assert_eq!(sm.applied_index(), 2);
    assert_eq!(sm.get("k").unwrap().mod_index(), 1);
}

#[test]
fn if_version() {
    let mut sm = StateMachine::default();
    set(&mut sm, "k", b"a");
    set(&mut sm, "k", b"b");
    assert_eq!(
        set_if(&mut sm, "k", b"x", Condition::Version(1)),
        WriteOutcome::ConditionFailed { revision: 3, current: revs(1, 2, 2) }
    );
    assert_eq!(
        set_if(&mut sm, "k", b"c", Condition::Version(2)),
        WriteOutcome::Set { revision: 4 }
    );
    assert_eq!(sm.get("k").unwrap().version(), 3);
    // Version 0 means absent.
    assert_eq!(
        set_if(&mut sm, "new", b"n", Condition::Version(0)),
        WriteOutcome::Set { revision: 5 }
    );
    assert_eq!(
        set_if(&mut sm, "new", b"n", Condition::Version(0)),
        WriteOutcome::ConditionFailed { revision: 6, current: revs(5, 5, 1) }
    );
}

#[test]
fn if_mod_revision() {
    let mut sm = StateMachine::default();
    set(&mut sm, "k", b"a");
    set(&mut sm, "other", b"o");
    assert_eq!(
        set_if(&mut sm, "k", b"x", Condition::ModRevision(2)),
        WriteOutcome::ConditionFailed { revision: 3, current: revs(1, 1, 1) }
    );
    assert_eq!(
        set_if(&mut sm, "k", b"b", Condition::ModRevision(1)),
        WriteOutcome::Set { revision: 4 }
    );
    assert_eq!(
        delete_if(&mut sm, "k", Condition::ModRevision(1)),
        WriteOutcome::ConditionFailed { revision: 5, current: revs(1, 4, 2) }
    );
    assert_eq!(
        delete_if(&mut sm, "k", Condition::ModRevision(4)),
        WriteOutcome::Deleted { existed: true, revision: 6 }
    );
    assert!(sm.get("k").is_none());
    // Absent now: mod revision 0 holds, any other fails with "absent".
    assert_eq!(
        delete_if(&mut sm, "k", Condition::ModRevision(4)),
        WriteOutcome::ConditionFailed { revision: 7, current: None }
    );
    assert_eq!(
        set_if(&mut sm, "k", b"again", Condition::ModRevision(0)),
        WriteOutcome::Set { revision: 8 }
    );
}

#[test]
fn if_value_equals() {
    let mut sm = StateMachine::default();
    assert_eq!(
        set_if(&mut sm, "k", b"x", Condition::ValueEquals(Vec::new())),
        WriteOutcome::ConditionFailed { revision: 1, current: None }
    );
    set(&mut sm, "k", b"");
    assert_eq!(
        set_if(&mut sm, "k", b"1", Condition::ValueEquals(Vec::new())),
        WriteOutcome::Set { revision: 3 }
    );
    assert_eq!(
        delete_if(&mut sm, "k", Condition::ValueEquals(b"2".to_vec())),
        WriteOutcome::ConditionFailed { revision: 4, current: revs(2, 3, 2) }
    );
    assert_eq!(
        delete_if(&mut sm, "k", Condition::ValueEquals(b"1".to_vec())),
        WriteOutcome::Deleted { existed: true, revision: 5 }
    );
}

/// A retried conditional write gets its first answer and is not evaluated again: a success
/// is not applied twice, and a failure stays a failure even once the condition would hold.
#[test]
fn retried_conditional_write_is_applied_exactly_once() {
    let mut sm = StateMachine::default();
    let s = |seq| Some(ProposalSession::Legacy { client_id: 5, seq, first_unacked_seq: 1 });
    let incr = |value: &[u8], version| Command::SetIf {
        key: "n".into(),
        value: value.to_vec(),
        condition: Condition::Version(version),
    };
    assert_eq!(apply(&mut sm, s(1), incr(b"1", 0)), WriteOutcome::Set { revision: 1 });
    // The same request again (a lost answer): first answer, no second write.
    assert_eq!(apply(&mut sm, s(1), incr(b"1", 0)), WriteOutcome::Set { revision: 1 });
    assert_eq!(sm.get("n").unwrap().version(), 1);

    // A failed one, then the key moves to where it would hold: the retry still fails.
    let failed = apply(&mut sm, s(2), incr(b"3", 2));
    assert_eq!(failed, WriteOutcome::ConditionFailed { revision: 3, current: revs(1, 1, 1) });
    set(&mut sm, "n", b"2");
    assert_eq!(sm.get("n").unwrap().version(), 2);
    assert_eq!(apply(&mut sm, s(2), incr(b"3", 2)), failed);
    assert_eq!(sm.get("n").unwrap().value(), b"2");

    // The failed outcome survives a snapshot of the sessions.
    let restored = round_trip(&sm);
    assert_eq!(restored.sessions().get_legacy(5).unwrap().result(2), Some(failed));
}

fn round_trip(sm: &StateMachine) -> StateMachine {
    let mut w = Writer::new();
    sm.encode_to(&mut w);
    let bytes = w.finish();
    let mut r = Reader::new(&bytes);
    let restored = StateMachine::decode_from(&mut r).unwrap();
    r.finish().unwrap();
    assert_eq!(&restored, sm);
    restored
}

/// The model of one key: (value, create, mod, version).
type Model = BTreeMap<String, (Vec<u8>, u64, u64, u64)>;

#[derive(Debug, Clone)]
enum Write {
    Set(String, Vec<u8>),
    Delete(String),
    SetIf(String, Vec<u8>, Condition),
    DeleteIf(String, Condition),
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    // Small numbers so that conditions hold often.
    prop_oneof![
        Just(Condition::Absent),
        (0u64..4).prop_map(Condition::Version),
        (0u64..12).prop_map(Condition::ModRevision),
        proptest::collection::vec(0u8..2, 0..2).prop_map(Condition::ValueEquals),
    ]
}

fn arb_write() -> impl Strategy<Value = Write> {
    let key = "[ab]";
    let value = proptest::collection::vec(0u8..2, 0..2);
    prop_oneof![
        (key, value.clone()).prop_map(|(k, v)| Write::Set(k, v)),
        key.prop_map(Write::Delete),
        (key, value, arb_condition()).prop_map(|(k, v, c)| Write::SetIf(k, v, c)),
        (key, arb_condition()).prop_map(|(k, c)| Write::DeleteIf(k, c)),
    ]
}

fn command(w: &Write) -> Command {
    match w.clone() {
        Write::Set(key, value) => Command::Set { key, value },
        Write::Delete(key) => Command::Delete { key },
        Write::SetIf(key, value, condition) => Command::SetIf { key, value, condition },
        Write::DeleteIf(key, condition) => Command::DeleteIf { key, condition },
    }
}

/// What the model says `w` at `index` answers, updating the model.
fn model_apply(model: &mut Model, index: u64, w: &Write) -> WriteOutcome {
    let holds = |model: &Model, key: &str, c: &Condition| {
        let cur = model.get(key);
        match c {
            Condition::Absent => cur.is_none(),
            Condition::Version(n) => cur.map_or(0, |e| e.3) == *n,
            Condition::ModRevision(r) => cur.map_or(0, |e| e.2) == *r,
            Condition::ValueEquals(v) => cur.is_some_and(|e| e.0 == *v),
        }
    };
    let failed = |model: &Model, key: &str| WriteOutcome::ConditionFailed {
        revision: index,
        current: model.get(key).map(|e| KeyRevisions {
            create_index: e.1,
            mod_index: e.2,
            version: e.3,
        }),
    };
    let set = |model: &mut Model, key: &str, value: &[u8]| {
        let e = model.entry(key.to_owned()).or_insert((Vec::new(), index, index, 0));
        *e = (value.to_vec(), e.1, index, e.3 + 1);
        WriteOutcome::Set { revision: index }
    };
    let delete = |model: &mut Model, key: &str| WriteOutcome::Deleted {
        existed: model.remove(key).is_some(),
        revision: index,
    };
    match w {
        Write::Set(k, v) => set(model, k, v),
        Write::Delete(k) => delete(model, k),
        Write::SetIf(k, v, c) if holds(model, k, c) => set(model, k, v),
        Write::DeleteIf(k, c) if holds(model, k, c) => delete(model, k),
        Write::SetIf(k, ..) | Write::DeleteIf(k, _) => failed(model, k),
    }
}

proptest! {
    /// Every answer and the final data match a direct model of the four conditions.
    #[test]
    fn conditional_writes_match_the_model(writes in proptest::collection::vec(arb_write(), 0..60)) {
        let mut sm = StateMachine::default();
        let mut model = Model::new();
        for w in &writes {
            let index = sm.applied_index() + 1;
            let want = model_apply(&mut model, index, w);
            prop_assert_eq!(apply(&mut sm, None, command(w)), want);
        }
        let data: Model = model;
        prop_assert_eq!(sm.len(), data.len());
        for (k, (value, create, m, version)) in &data {
            let v = sm.get(k).unwrap();
            prop_assert_eq!((v.value(), v.create_index(), v.mod_index(), v.version()), (value.as_slice(), *create, *m, *version));
        }
    }

    /// Replicas decide every condition identically: one applying everything, one restored from
    /// a snapshot taken part way (as a lagging follower is) and applying the rest, end in equal
    /// states with equal answers along the way.
    #[test]
    fn replicas_decide_conditions_identically(
        writes in proptest::collection::vec(arb_write(), 1..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(writes.len());
        let mut a = StateMachine::default();
        let session = |i: usize| Some(ProposalSession::Legacy { client_id: 1, seq: i as u64 + 1, first_unacked_seq: 1 });
        for (i, w) in writes[..cut].iter().enumerate() {
            apply(&mut a, session(i), command(w));
        }
        let mut b = round_trip(&a);
        for (i, w) in writes.iter().enumerate().skip(cut) {
            let on_a = apply(&mut a, session(i), command(w));
            let on_b = apply(&mut b, session(i), command(w));
            prop_assert_eq!(on_a, on_b);
        }
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert_eq!(a, b);
    }
}
