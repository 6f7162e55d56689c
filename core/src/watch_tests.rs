use super::*;
use crate::command::{Command, Condition, Proposal};
use crate::kv::{Entry, StateMachine};
use proptest::prelude::*;

/// A write of a key that did not exist (events compare kind, revision, key and values only).
fn put(revision: u64, key: &str, value: &[u8]) -> WatchEvent {
    WatchEvent::put(revision, Entry::new(key, value, revision, revision, 1), None)
}

fn history(max_bytes: u64, max_revisions: u64) -> WatchHistory {
    WatchHistory::new(HistoryLimits { max_bytes, max_revisions }, 0)
}

fn revisions(page: &WatchPage) -> Vec<u64> {
    page.events.iter().map(|e| e.revision).collect()
}

#[test]
fn the_byte_bound_evicts_whole_old_revisions() {
    let one = put(1, "k", &[0; 52]).size_bytes() as u64;
    assert_eq!(one, 1 + 52 + EVENT_OVERHEAD_BYTES as u64);
    let mut h = history(3 * one, 1_000);
    h.record([put(1, "k", &[0; 52])]);
    // Revision 2 is a transaction of two changes.
    h.record([put(2, "a", &[0; 52]), put(2, "b", &[0; 52])]);
    assert_eq!((h.len(), h.first_revision()), (3, 1));
    h.record([put(3, "k", &[0; 52])]);
    // Over by one event: revision 1 goes; revision 2 stays whole.
    assert_eq!((h.len(), h.bytes(), h.first_revision()), (3, 3 * one, 2));
    h.record([put(4, "k", &[0; 52])]);
    // Revision 2 goes as a whole, never half.
    assert_eq!((h.len(), h.first_revision()), (2, 3));
    assert!(h.events_from(0).all(|e| e.revision >= 3));
}

#[test]
fn the_revision_bound_keeps_a_window_of_log_indices() {
    let mut h = history(u64::MAX, 10);
    for r in (1..=40).step_by(3) {
        h.record([put(r, "k", b"v")]);
    }
    // Newest is 40: revisions 31..=40 are kept.
    assert_eq!(h.first_revision(), 31);
    assert_eq!(h.events_from(0).map(|e| e.revision).collect::<Vec<_>>(), vec![31, 34, 37, 40]);
}

#[test]
fn a_start_before_the_window_is_compacted_with_the_oldest_revision() {
    let mut h = history(u64::MAX, 5);
    for r in 1..=20 {
        h.record([put(r, "k", b"v")]);
    }
    let all = KeyFilter::Prefix(String::new());
    let err = h.page(&all, 15, usize::MAX, 20).unwrap_err();
    assert_eq!(err, Compacted { oldest_revision: 16 });
    assert_eq!(
        err.to_string(),
        "the requested revision is compacted; the oldest available revision is 16"
    );
    assert_eq!(revisions(&h.page(&all, 16, usize::MAX, 20).unwrap()), vec![16, 17, 18, 19, 20]);
    // After a snapshot install the history restarts past it.
    h.restart_at(30);
    assert_eq!(h.page(&all, 20, usize::MAX, 30), Err(Compacted { oldest_revision: 31 }));
    let page = h.page(&all, 31, usize::MAX, 30).unwrap();
    assert_eq!((page.events.len(), page.next_revision), (0, 31));
}

#[test]
fn pages_filter_and_end_at_revision_boundaries() {
    let mut h = history(u64::MAX, 1_000);
    h.record([put(2, "a/1", b"x")]);
    h.record([put(3, "b", b"x")]);
    h.record([put(5, "a/2", b"x"), put(5, "a/3", b"x")]);
    h.record([put(6, "a/1", b"y")]);
    let prefix = KeyFilter::Prefix("a/".into());
    let page = h.page(&prefix, 1, usize::MAX, 7).unwrap();
    assert_eq!(revisions(&page), vec![2, 5, 5, 6]);
    assert_eq!(page.next_revision, 8);
    // A tiny byte bound: one revision per page, the two events of revision 5 together.
    let mut from = 1;
    let mut seen = Vec::new();
    loop {
        let page = h.page(&prefix, from, 1, 7).unwrap();
        seen.push(revisions(&page));
        from = page.next_revision;
        if from == 8 {
            break;
        }
    }
    // Revision 3 (another key) is passed over inside a page, not sent as an empty one.
    assert_eq!(seen, vec![vec![2], vec![5, 5], vec![6]]);
    let key = KeyFilter::Key("a/1".into());
    assert_eq!(revisions(&h.page(&key, 3, usize::MAX, 7).unwrap()), vec![6]);
    // A replica behind the requested revision has nothing yet and waits there.
    assert_eq!(h.page(&key, 20, usize::MAX, 7).unwrap().next_revision, 20);
}

fn apply(sm: &mut StateMachine, command: Command) -> Vec<WatchEvent> {
    let index = sm.applied_index() + 1;
    let p = Proposal { session: None, proposed_at_ms: 0, quota_state_bytes: None, command };
    sm.apply(index, &p).unwrap();
    sm.take_events().collect()
}

#[test]
fn the_state_machine_records_one_event_per_change_with_the_previous_value() {
    let mut sm = StateMachine::default();
    let set = |k: &str, v: &[u8]| Command::Set { key: k.into(), value: v.to_vec() };
    assert_eq!(apply(&mut sm, set("k", b"1")), vec![put(1, "k", b"1")]);
    let over = apply(&mut sm, set("k", b"2"));
    let replaced = Some(Entry::new("k", b"1", 1, 1, 1));
    assert_eq!(over, vec![WatchEvent::put(2, Entry::new("k", b"2", 1, 2, 2), replaced)]);
    assert_ne!(over, vec![put(2, "k", b"2")], "the previous value is part of the event");
    let del = apply(&mut sm, Command::Delete { key: "k".into() });
    let deleted = WatchEvent::delete(3, Entry::new("k", b"2", 1, 2, 2));
    assert_eq!((deleted.value(), deleted.prev_value()), (&b""[..], Some(&b"2"[..])));
    assert_eq!(del, vec![deleted]);
    // Nothing changed, nothing to watch.
    assert_eq!(apply(&mut sm, Command::Delete { key: "k".into() }), vec![]);
    let failed = Command::SetIf {
        key: "k".into(),
        value: b"x".to_vec(),
        condition: Condition::ValueEquals(b"no".to_vec()),
    };
    assert_eq!(apply(&mut sm, failed), vec![]);
    let held =
        Command::SetIf { key: "k".into(), value: b"x".to_vec(), condition: Condition::Absent };
    assert_eq!(apply(&mut sm, held), vec![put(6, "k", b"x")]);
}

proptest! {
    /// Paging from any retained revision with any byte bound yields exactly the retained
    /// matching events after it, in order: no gaps, no duplicates.
    #[test]
    fn paging_is_complete_and_ordered(
        writes in proptest::collection::vec((1u64..4, "[ab]{1,2}", 0usize..40), 1..60),
        max_bytes in 1usize..400,
        max_history_bytes in 100u64..3_000,
        start_offset in 0u64..30,
    ) {
        let mut h = history(max_history_bytes, 1_000);
        let mut revision = 0;
        for (gap, key, len) in &writes {
            revision += gap;
            h.record([put(revision, key, &vec![1; *len])]);
        }
        let applied = revision + 1;
        let filter = KeyFilter::Prefix("a".into());
        let from = h.first_revision() + start_offset;
        let expected: Vec<WatchEvent> =
            h.events_from(from).filter(|e| e.key().starts_with('a')).cloned().collect();
        let mut got = Vec::new();
        let mut cursor = from;
        for _ in 0..1_000 {
            let page = h.page(&filter, cursor, max_bytes, applied).unwrap();
            prop_assert!(page.next_revision > cursor || page.next_revision == cursor.max(applied + 1));
            got.extend(page.events);
            if page.next_revision == cursor.max(applied + 1) {
                break;
            }
            cursor = page.next_revision;
        }
        prop_assert_eq!(got, expected);
        prop_assert!(h.bytes() <= max_history_bytes);
    }
}
