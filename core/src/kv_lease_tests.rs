//! Leases in the state machine: grants, attaching keys, revokes and expiries that delete the
//! attached keys at one revision, detaching by plain writes, and the snapshot encoding.

use super::*;
use crate::codec::{Reader, Writer};
use crate::command::{ProposalSession, SessionRef};
use crate::snapshot::SnapshotImage;

fn apply(sm: &mut StateMachine, command: Command) -> Result<WriteOutcome, Error> {
    let index = sm.applied_index() + 1;
    sm.apply(
        index,
        &Proposal { session: None, proposed_at_ms: 0, quota_state_bytes: None, command },
    )
}

fn grant(sm: &mut StateMachine, id: Option<u64>) -> u64 {
    match apply(sm, Command::LeaseGrant { id, ttl_ms: 1_000, max_leases: 100 }) {
        Ok(WriteOutcome::LeaseGranted { id, .. }) => id,
        other => panic!("{other:?}"),
    }
}

fn set_leased(sm: &mut StateMachine, key: &str, lease: u64) -> Result<WriteOutcome, Error> {
    apply(sm, Command::SetLeased { key: key.into(), value: b"v".to_vec(), lease, condition: None })
}

#[test]
fn revoke_deletes_every_attached_key_at_one_revision() {
    let mut sm = StateMachine::default();
    let lease = grant(&mut sm, None);
    assert_eq!(lease, 1, "derived from the grant's log index");
    set_leased(&mut sm, "a", lease).unwrap();
    set_leased(&mut sm, "b", lease).unwrap();
    apply(&mut sm, Command::Set { key: "plain".into(), value: vec![1] }).unwrap();
    let bytes_before = sm.state_bytes();
    sm.take_events().for_each(drop);
    let out = apply(&mut sm, Command::LeaseRevoke { id: lease });
    assert_eq!(out, Ok(WriteOutcome::LeaseRevoked { existed: true, revision: 5 }));
    assert!(sm.get("a").is_none() && sm.get("b").is_none());
    assert!(sm.get("plain").is_some());
    assert!(sm.state_bytes() < bytes_before);
    assert_eq!(sm.state_bytes(), key_state_bytes("plain", &[1]));
    let events: Vec<_> =
        sm.take_events().map(|e| (e.key().to_owned(), e.kind, e.revision)).collect();
    assert_eq!(
        events,
        vec![
            ("a".to_owned(), crate::WatchEventKind::Delete, 5),
            ("b".to_owned(), crate::WatchEventKind::Delete, 5)
        ]
    );
    assert_eq!(sm.lease_count(), 0);
    // A second revoke is an error; an expiry of a gone lease is not.
    assert_eq!(
        apply(&mut sm, Command::LeaseRevoke { id: lease }),
        Err(LeaseError::NotFound.into())
    );
    assert_eq!(
        apply(&mut sm, Command::LeaseExpire { id: lease }),
        Ok(WriteOutcome::LeaseRevoked { existed: false, revision: 7 })
    );
}

#[test]
fn plain_writes_and_deletes_detach_and_unknown_leases_write_nothing() {
    let mut sm = StateMachine::default();
    let lease = grant(&mut sm, Some(42));
    assert_eq!(lease, 42);
    for key in ["set", "deleted", "txn", "kept"] {
        set_leased(&mut sm, key, lease).unwrap();
    }
    apply(&mut sm, Command::Set { key: "set".into(), value: vec![2] }).unwrap();
    apply(&mut sm, Command::Delete { key: "deleted".into() }).unwrap();
    let txn = crate::txn::Txn {
        success: vec![crate::txn::TxnOp::Set { key: "txn".into(), value: vec![3] }],
        ..crate::txn::Txn::default()
    };
    apply(&mut sm, Command::Txn(txn)).unwrap();
    assert_eq!(sm.lease_of("set"), None);
    assert_eq!(sm.lease_of("txn"), None);
    assert_eq!(sm.lease_of("kept"), Some(42));
    // Recreating the deleted key without a lease keeps it past the revoke.
    apply(&mut sm, Command::Set { key: "deleted".into(), value: vec![] }).unwrap();
    apply(&mut sm, Command::LeaseExpire { id: lease }).unwrap();
    let keys: Vec<_> = sm.data().iter().map(Entry::key).collect();
    assert_eq!(keys, ["deleted", "set", "txn"]);
    // A write with an unknown lease is refused and changes nothing.
    let before = sm.clone();
    assert_eq!(set_leased(&mut sm, "new", 42), Err(LeaseError::NotFound.into()));
    assert_eq!(sm.data(), before.data());
}

#[test]
fn a_conditional_leased_write_is_decided_like_set_if() {
    let mut sm = StateMachine::default();
    let lease = grant(&mut sm, None);
    let lock = |sm: &mut StateMachine| {
        apply(
            sm,
            Command::SetLeased {
                key: "lock".into(),
                value: b"me".to_vec(),
                lease,
                condition: Some(Condition::Absent),
            },
        )
    };
    assert_eq!(lock(&mut sm), Ok(WriteOutcome::Set { revision: 2 }));
    assert!(matches!(lock(&mut sm), Ok(WriteOutcome::ConditionFailed { revision: 3, .. })));
    assert_eq!(sm.lease_of("lock"), Some(lease));
}

#[test]
fn a_retried_grant_gets_its_first_id() {
    let mut sm = StateMachine::default();
    let owner = "app".to_owned();
    let register = Command::RegisterSession { owner: owner.clone(), max_sessions_per_identity: 2 };
    let Ok(WriteOutcome::SessionRegistered { client_id }) = apply(&mut sm, register) else {
        panic!("registration refused")
    };
    let session = SessionRef { owner, client_id, seq: 1, first_unacked_seq: 1 };
    let p = Proposal {
        session: Some(ProposalSession::Registered(session)),
        proposed_at_ms: 0,
        quota_state_bytes: None,
        command: Command::LeaseGrant { id: None, ttl_ms: 1_000, max_leases: 10 },
    };
    let first = sm.apply(2, &p);
    assert_eq!(sm.apply(3, &p), first);
    assert_eq!(sm.lease_count(), 1);
}

#[test]
fn snapshots_keep_leases_and_old_encodings_still_decode() {
    let mut sm = StateMachine::default();
    let lease = grant(&mut sm, None);
    set_leased(&mut sm, "a", lease).unwrap();
    grant(&mut sm, Some(9));
    let image = SnapshotImage { index: sm.applied_index(), term: 2, state: sm.clone() };
    let restored = SnapshotImage::decode(&image.encode()).unwrap();
    assert_eq!(restored, image);
    assert_eq!(restored.state.lease_of("a"), Some(lease));
    assert_eq!(restored.state.digest(), sm.digest());

    // Formats 1 (no leases) and 2 (leases), both with sessions from before registration:
    // a state with a legacy session and, for format 2, a lease with a key.
    for (version, leases) in [(1u32, false), (2, true)] {
        let mut old = StateMachine::default();
        let at = |sm: &mut StateMachine, session, command| {
            let index = sm.applied_index() + 1;
            let p = Proposal { session, proposed_at_ms: 5_000, quota_state_bytes: None, command };
            sm.apply(index, &p)
        };
        let legacy = Some(ProposalSession::Legacy { client_id: 7, seq: 1, first_unacked_seq: 1 });
        at(&mut old, legacy, Command::Set { key: "k".into(), value: vec![1] }).unwrap();
        if leases {
            let grant = Command::LeaseGrant { id: None, ttl_ms: 1_000, max_leases: 10 };
            let Ok(WriteOutcome::LeaseGranted { id, .. }) = at(&mut old, None, grant) else {
                panic!("grant refused")
            };
            let set =
                Command::SetLeased { key: "l".into(), value: vec![2], lease: id, condition: None };
            at(&mut old, None, set).unwrap();
        }
        let format = crate::snapshot::StateFormat { leases, registered_sessions: false };
        let mut body = Writer::new();
        body.put_u64(old.applied_index());
        body.put_u64(1);
        old.encode_format_to(&mut body, format);
        let body = body.finish();
        let mut frame = Writer::new();
        frame.put_raw(b"MOKVSNAP");
        frame.put_u32(version);
        frame.put_u64(body.len() as u64);
        frame.put_raw(&body);
        frame.put_u32(crc32fast::hash(&body));
        let decoded = SnapshotImage::decode(&frame.finish()).unwrap();
        assert_eq!(decoded.state, old, "format {version}");
        assert_eq!(decoded.state.lease_count(), usize::from(leases), "format {version}");
        assert!(decoded.state.sessions().get_legacy(7).is_some(), "format {version}");
    }

    // An encoding that attaches a key the data does not hold is refused.
    let mut w = Writer::new();
    sm.encode_to(&mut w);
    let mut bytes = w.finish();
    let at = bytes.len() - 1 - (8 + 8 + 8); // the last byte of key "a"'s string in the table
    bytes[at] = b'z';
    assert!(StateMachine::decode_from(&mut Reader::new(&bytes)).is_err());
}

/// A snapshot job (the state encoded away from the driver, chunk by chunk) writes exactly the
/// format-3 bytes of the canonical encoding: applied index, configuration, members, registered
/// sessions, key count, the keys in order, then the leases — here spelled out field by field,
/// independently of the head/keys/tail split the job encoder uses.
#[test]
fn a_snapshot_job_writes_exactly_the_format_3_encoding() {
    let mut sm = StateMachine::default();
    let register = Command::RegisterSession { owner: "app".into(), max_sessions_per_identity: 2 };
    let Ok(WriteOutcome::SessionRegistered { client_id }) = apply(&mut sm, register) else {
        panic!("registration refused")
    };
    let lease = grant(&mut sm, None);
    for key in ["b", "d"] {
        set_leased(&mut sm, key, lease).unwrap();
    }
    grant(&mut sm, Some(77));
    for (i, key) in ["a", "c", "e\u{e9}"].into_iter().enumerate() {
        apply(&mut sm, Command::Set { key: key.into(), value: vec![i as u8; i * 300] }).unwrap();
    }
    let session = SessionRef { owner: "app".into(), client_id, seq: 1, first_unacked_seq: 1 };
    let index = sm.applied_index() + 1;
    let p = Proposal {
        session: Some(ProposalSession::Registered(session)),
        proposed_at_ms: 3_000,
        quota_state_bytes: None,
        command: Command::Set { key: "c".into(), value: b"again".to_vec() },
    };
    sm.apply(index, &p).unwrap();
    let member = crate::members::MemberInfo {
        id: 3,
        name: "n3".into(),
        peer_addr: "10.0.0.3:7001".into(),
        rpc_addr: "10.0.0.3:7000".into(),
        auto_promote: true,
    };
    sm.members_mut().insert(3, member);
    sm.set_conf(crate::members::Conf { voters: [3].into(), ..Default::default() });
    assert_eq!((sm.len(), sm.lease_count(), sm.session_count()), (5, 2, 1));

    let mut body = Writer::new();
    body.put_u64(sm.applied_index());
    body.put_u64(6); // term
    body.put_u64(sm.applied_index);
    sm.conf.encode_to(&mut body);
    body.put_u64(sm.members.len() as u64);
    for (id, info) in &sm.members {
        body.put_u64(*id);
        info.encode_to(&mut body);
    }
    sm.sessions.encode_to(&mut body);
    body.put_u64(sm.data.len() as u64);
    for e in sm.data.iter() {
        body.put_bytes(e.key_bytes());
        body.put_bytes(e.value());
        body.put_u64(e.create_index());
        body.put_u64(e.mod_index());
        body.put_u64(e.version());
    }
    sm.data.leases.encode_to(&mut body);
    let body = body.finish();
    let mut frame = Writer::new();
    frame.put_raw(b"MOKVSNAP");
    frame.put_u32(3);
    frame.put_u64(body.len() as u64);
    frame.put_raw(&body);
    frame.put_u32(crc32fast::hash(&body));
    let want = frame.finish();

    assert_eq!(crate::snapshot::encode_state(sm.applied_index(), 6, &sm), want);
    for chunk_bytes in [1, 5, 64, 301, 1 << 20] {
        let job = crate::snapshot::SnapshotJob::new(sm.applied_index(), 6, sm.clone());
        assert_eq!(job.encoded_len(), want.len() as u64);
        let got: Vec<Vec<u8>> = job.encoder(chunk_bytes).collect();
        assert_eq!(got.concat(), want, "chunk_bytes {chunk_bytes}");
    }
    let job = crate::snapshot::SnapshotJob::new(sm.applied_index(), 6, sm.clone());
    let restored = SnapshotImage::decode(&job.encode()).unwrap();
    assert_eq!(restored.state, sm);
    assert_eq!(restored.state.lease_of("d"), Some(lease));
}
