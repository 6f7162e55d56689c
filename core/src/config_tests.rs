//! Tests of `Config::validate`.

use super::*;

#[test]
fn defaults_are_valid() {
    assert_eq!(Config::new(1, 7).validate(), Ok(()));
}

#[test]
fn each_check_names_its_field() {
    type BreakIt = fn(&mut Config);
    let cases: [(&str, BreakIt); 10] = [
        ("id", |c| c.id = 0),
        ("election_ticks", |c| c.election_ticks = 1),
        ("heartbeat_ticks", |c| c.heartbeat_ticks = c.election_ticks),
        ("max_key_bytes", |c| c.max_key_bytes = 0),
        ("snapshot_threshold_entries", |c| c.snapshot_threshold_entries = 0),
        ("snapshot_threshold_bytes", |c| c.snapshot_threshold_bytes = 0),
        ("max_snapshot_bytes_per_log_byte", |c| c.max_snapshot_bytes_per_log_byte = 0),
        ("max_in_memory_log_bytes", |c| c.max_in_memory_log_bytes = c.max_append_bytes - 1),
        ("max_uncommitted_log_bytes", |c| c.max_uncommitted_log_bytes = c.max_append_bytes - 1),
        ("max_page_bytes", |c| c.max_page_bytes = 0),
    ];
    for (field, break_it) in cases {
        let mut c = Config::new(1, 0);
        break_it(&mut c);
        assert_eq!(c.validate().map_err(|e| e.field), Err(field));
    }
}

#[test]
fn node_refuses_what_validate_refuses() {
    let mut c = Config::new(1, 0);
    c.heartbeat_ticks = 0;
    let e = crate::Node::new(c, crate::persist::DurableState::default()).err();
    assert!(
        matches!(
            e,
            Some(crate::RecoveryError::Config(InvalidConfig { field: "heartbeat_ticks", .. }))
        ),
        "{e:?}"
    );
}
