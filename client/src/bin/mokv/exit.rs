//! The exit codes of `mokv`: a stable contract for scripts, listed in `mokv --help` and the
//! README. A code's meaning never changes; new situations get new codes.

use std::process::ExitCode;

use mokv_client::ClientError;
use tonic::Code;

/// How a `mokv` command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what it was asked (also `delete` of a key that did not exist).
    Ok,
    /// Any failure without a code of its own: unreadable certificate files, a request the
    /// cluster refused as invalid (a key too long, ...), an internal error.
    Error,
    /// The key does not exist (`get`).
    NotFound,
    /// A conditional write whose condition did not hold.
    ConditionFailed,
    /// The command line is wrong (unknown flag, missing argument, bad value).
    Usage,
    /// No node answered within the deadline (`--call-timeout-ms`): unreachable, no leader, no
    /// quorum. Nothing was applied.
    Unavailable,
    /// The client certificate was refused, or its identity may not do this.
    PermissionDenied,
    /// A write whose outcome is unknown: it may or may not have been applied (at most once).
    Indeterminate,
}

impl Exit {
    /// Every code, in the order of the help text.
    pub const ALL: [Exit; 8] = [
        Exit::Ok,
        Exit::Error,
        Exit::NotFound,
        Exit::ConditionFailed,
        Exit::Usage,
        Exit::Unavailable,
        Exit::PermissionDenied,
        Exit::Indeterminate,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::NotFound => 2,
            Exit::ConditionFailed => 3,
            Exit::Usage => 4,
            Exit::Unavailable => 5,
            Exit::PermissionDenied => 6,
            Exit::Indeterminate => 7,
        }
    }

    /// The name in `--output json` error objects (`"error": "<name>"`).
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Error => "error",
            Exit::NotFound => "not_found",
            Exit::ConditionFailed => "condition_failed",
            Exit::Usage => "usage",
            Exit::Unavailable => "unavailable",
            Exit::PermissionDenied => "permission_denied",
            Exit::Indeterminate => "indeterminate",
        }
    }

    /// What a failed call means for the caller.
    pub fn of(e: &ClientError) -> Exit {
        match e {
            ClientError::Unavailable { .. } => Exit::Unavailable,
            ClientError::Indeterminate => Exit::Indeterminate,
            ClientError::Refused { code, .. } => match code {
                Code::NotFound => Exit::NotFound,
                Code::PermissionDenied | Code::Unauthenticated => Exit::PermissionDenied,
                Code::Unavailable | Code::DeadlineExceeded => Exit::Unavailable,
                _ => Exit::Error,
            },
            _ => Exit::Error,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// The exit-code table at the end of `mokv --help`. A unit test checks it against [`Exit`].
pub const HELP: &str = "\
Exit codes:
  0  ok
  1  error (bad certificate files, a request refused as invalid, anything without its own code)
  2  not found (get of a missing key)
  3  condition failed (set --if-*, delete --if-mod-revision)
  4  usage error (unknown flag, missing or bad argument)
  5  unavailable: no node answered in time (unreachable, no leader, no quorum); nothing applied
  6  permission denied (certificate refused, or the identity may not do this)
  7  indeterminate: a write may or may not have been applied (at most once)

With --output json, results go to stdout as JSON and a failure also prints one JSON object to
stderr: {\"error\": \"<name>\", \"exit_code\": N, \"message\": \"...\"}.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_code_once_and_codes_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for e in Exit::ALL {
            assert!(seen.insert(e.code()), "{e:?} reuses code {}", e.code());
            let prefix = format!("  {}  ", e.code());
            let line = HELP.lines().find(|l| l.starts_with(&prefix));
            let line = line.unwrap_or_else(|| panic!("help does not list {e:?}"));
            let words = e.name().replace('_', " ");
            assert!(line.contains(&words), "help line for {e:?} does not say {words}: {line}");
        }
    }

    #[test]
    fn client_errors_map_to_their_codes() {
        let refused = |code| ClientError::Refused { code, message: String::new() };
        assert_eq!(Exit::of(&refused(Code::NotFound)), Exit::NotFound);
        assert_eq!(Exit::of(&refused(Code::PermissionDenied)), Exit::PermissionDenied);
        assert_eq!(Exit::of(&refused(Code::Unauthenticated)), Exit::PermissionDenied);
        assert_eq!(Exit::of(&refused(Code::InvalidArgument)), Exit::Error);
        let unavailable = ClientError::Unavailable { attempts: 3, last: String::new() };
        assert_eq!(Exit::of(&unavailable), Exit::Unavailable);
        assert_eq!(Exit::of(&ClientError::Indeterminate), Exit::Indeterminate);
        assert_eq!(Exit::of(&ClientError::Config(String::new())), Exit::Error);
    }
}
