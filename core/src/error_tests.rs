//! The classification every consumer of core errors relies on (the shell's status codes, the
//! simulator's workload): one row per variant.

use super::*;

#[test]
fn every_error_has_its_class() {
    let hint = LeaderHint { id: 2, name: "n2".into(), rpc_addr: "a:1".into() };
    let rows: Vec<(Error, ErrorClass)> = vec![
        (InvalidArgument::EmptyKey.into(), ErrorClass::Misuse),
        (InvalidArgument::BadPageToken.into(), ErrorClass::Misuse),
        (Error::NotLeader { leader: None }, ErrorClass::Retryable),
        (Error::NotLeader { leader: Some(hint) }, ErrorClass::Retryable),
        (Unavailable::Busy.into(), ErrorClass::Retryable),
        (Unavailable::ReadTimedOut.into(), ErrorClass::Retryable),
        (Unavailable::ConfChangeInProgress.into(), ErrorClass::Retryable),
        (Unavailable::LeadershipTransfer.into(), ErrorClass::Retryable),
        (Unavailable::Dropped.into(), ErrorClass::Retryable),
        (Unavailable::Removed.into(), ErrorClass::Retryable),
        (Error::Indeterminate, ErrorClass::Indeterminate),
        (SessionError::Expired.into(), ErrorClass::Misuse),
        (SessionError::Unknown.into(), ErrorClass::Misuse),
        (SessionError::TooManySessions.into(), ErrorClass::Retryable),
        (SessionError::ResultDiscarded.into(), ErrorClass::Indeterminate),
        (
            QuotaExceeded { state_bytes: 10, growth_bytes: 2, quota_bytes: 11 }.into(),
            ErrorClass::Retryable,
        ),
    ];
    for (error, class) in rows {
        assert_eq!(error.class(), class, "{error:?}");
    }
}
