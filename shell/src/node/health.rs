//! What `grpc.health.v1` reports for a node: SERVING only while it can answer linearizable
//! requests as a full member.

use mokv_core::Status;

/// SERVING: the node knows a leader, has applied everything it knows to be committed, and is
/// a voter. A learner is a node being caught up (mokvd promotes each learner once it is close
/// to the leader's log), and a node outside the configuration (not added yet, or removed)
/// serves nobody.
pub(crate) fn serving(s: &Status) -> bool {
    let voter = s.conf.voters.contains(&s.id) || s.conf.voters_outgoing.contains(&s.id);
    s.can_serve() && voter
}

#[cfg(test)]
mod tests {
    use mokv_core::{Conf, Role, Status};

    use super::serving;

    fn status(leader: Option<u64>, commit: u64, applied: u64, conf: Conf) -> Status {
        Status {
            id: 2,
            term: 3,
            role: Role::Follower,
            leader,
            commit_index: commit,
            applied_index: applied,
            last_index: commit,
            conf,
        }
    }

    fn conf(voters: &[u64], learners: &[u64]) -> Conf {
        Conf {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            ..Conf::default()
        }
    }

    #[test]
    fn a_voter_with_a_leader_and_everything_applied_serves() {
        assert!(serving(&status(Some(1), 10, 10, conf(&[1, 2, 3], &[]))));
    }

    #[test]
    fn no_leader_apply_behind_a_learner_or_no_member_does_not_serve() {
        assert!(!serving(&status(None, 10, 10, conf(&[1, 2, 3], &[]))), "no leader");
        assert!(!serving(&status(Some(1), 10, 9, conf(&[1, 2, 3], &[]))), "applying");
        assert!(!serving(&status(Some(1), 10, 10, conf(&[1, 3], &[2]))), "catching up");
        assert!(!serving(&status(Some(1), 10, 10, conf(&[1, 3], &[]))), "not a member");
    }
}
