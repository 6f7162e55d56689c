use super::*;
use crate::kv::tests::{arb_op, build, Op};
use proptest::prelude::*;

fn file(state: &StateMachine, cluster_id: Option<u64>, chunk_bytes: usize) -> Vec<u8> {
    BackupSource::copy_of(state, cluster_id).encoder(chunk_bytes).flatten().collect()
}

fn sample() -> StateMachine {
    build(&[
        Op::Set("a".into(), b"1".to_vec()),
        Op::Set("b".into(), vec![7; 300]),
        Op::Set("a".into(), b"2".to_vec()),
        Op::Delete("b".into()),
        Op::Set("c".into(), Vec::new()),
    ])
}

#[test]
fn round_trip_keeps_every_key_and_revision() {
    let state = sample();
    let bytes = file(&state, Some(42), 7);
    let backup = Backup::decode(&bytes).unwrap();
    let info = *backup.info();
    assert_eq!(info.cluster_id, Some(42));
    assert_eq!(info.applied_index, state.applied_index());
    assert_eq!(info.keys, 2);
    assert_eq!(info.file_bytes(), bytes.len() as u64);
    assert_eq!(info.max_mod_revision, 5);
    let got: Vec<(&str, Versioned)> = backup.entries().map(|(k, v)| (k, v.clone())).collect();
    let want: Vec<(&str, Versioned)> =
        state.data().iter().map(|e| (e.key(), e.to_versioned())).collect();
    assert_eq!(got, want);
    assert_eq!(backup.entries().next().unwrap().1.version, 2, "a was written twice");
    assert_eq!(Backup::verify(&bytes).unwrap(), info);
}

#[test]
fn chunks_are_bounded_and_concatenate_to_the_file() {
    let state = build(&[Op::Set("big".into(), vec![1; 10_000]), Op::Set("s".into(), vec![2])]);
    let whole = file(&state, None, usize::MAX);
    for chunk_bytes in [1, 3, 64, 4096, 20_000] {
        let chunks: Vec<Vec<u8>> =
            BackupSource::copy_of(&state, None).encoder(chunk_bytes).collect();
        let (last, full) = chunks.split_last().unwrap();
        assert!(full.iter().all(|c| c.len() == chunk_bytes), "every chunk but the last is full");
        assert!(!last.is_empty() && last.len() <= chunk_bytes);
        assert_eq!(chunks.concat(), whole);
    }
}

#[test]
fn empty_state_is_a_valid_backup() {
    let bytes = file(&StateMachine::default(), None, 1 << 20);
    let b = Backup::decode(&bytes).unwrap();
    assert_eq!((b.info().keys, b.info().cluster_id, b.info().applied_index), (0, None, 0));
}

#[test]
fn corrupt_and_truncated_files_get_their_own_errors() {
    let good = file(&sample(), Some(1), 1 << 20);
    let mut flipped = good.clone();
    let mid = HEADER_BYTES + 3;
    flipped[mid] ^= 0x10;
    assert_eq!(Backup::decode(&flipped), Err(BackupError::ChecksumMismatch));
    let cut = &good[..good.len() - 1];
    assert!(matches!(Backup::decode(cut), Err(BackupError::Truncated { .. })));
    assert!(matches!(Backup::decode(&good[..5]), Err(BackupError::Truncated { .. })));
    assert!(matches!(Backup::decode(&[]), Err(BackupError::Truncated { .. })));
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(Backup::decode(&longer), Err(BackupError::TrailingBytes { extra_bytes: 1 }));
    assert_eq!(Backup::decode(b"MOKVSNAP........"), Err(BackupError::NotABackup));
    let mut newer = good.clone();
    newer[8] = 9;
    assert_eq!(Backup::decode(&newer), Err(BackupError::UnsupportedVersion(9)));
}

#[test]
fn a_valid_checksum_over_bad_records_is_still_refused() {
    let state = build(&[Op::Set("b".into(), vec![1]), Op::Set("a".into(), vec![2])]);
    let mut bytes = file(&state, None, 1 << 20);
    // Swap the two one-byte keys: same lengths, keys now descending; re-checksummed.
    let first_key = HEADER_BYTES + 4;
    let second_key = first_key + 1 + 4 + 1 + 24 + 4;
    bytes.swap(first_key, second_key);
    let body = bytes.len() - TRAILER_BYTES;
    let crc = crc32fast::hash(&bytes[..body]).to_le_bytes();
    bytes[body..].copy_from_slice(&crc);
    assert!(matches!(Backup::decode(&bytes), Err(BackupError::Invalid(_))));
}

proptest! {
    #[test]
    fn any_state_round_trips(ops in proptest::collection::vec(arb_op(), 0..60), chunk in 1usize..200) {
        let state = build(&ops);
        let bytes = file(&state, Some(3), chunk);
        let b = Backup::decode(&bytes).unwrap();
        prop_assert!(b
            .entries()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .eq(state.data().iter().map(|e| (e.key().to_owned(), e.to_versioned()))));
    }

    #[test]
    fn any_flipped_byte_or_truncation_is_refused(
        ops in proptest::collection::vec(arb_op(), 0..30),
        at in any::<usize>(),
        x in 1u8..,
    ) {
        let bytes = file(&build(&ops), Some(3), 64);
        let mut bad = bytes.clone();
        let i = at % bad.len();
        bad[i] ^= x;
        prop_assert!(Backup::decode(&bad).is_err());
        prop_assert!(Backup::decode(&bytes[..at % bytes.len()]).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Backup::decode(&bytes);
    }
}
