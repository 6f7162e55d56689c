//! Peer streams refused because the caller is not the node it claims to be: a counter
//! (`mokv_peer_refused_total{stream}`) and one warning in the log, then at most one a minute
//! (with how many were refused) while it goes on. Names are logged (certificate CNs and Raft
//! ids are not secrets); message contents never are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mokv_core::NodeId;
use tonic::Status;

/// Shortest time between two warnings.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Refusals seen by one node's peer service since its last warning.
#[derive(Debug, Default)]
pub struct PeerRefusals {
    state: Mutex<RefusalLog>,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last_warning: Option<Instant>,
    unreported: u64,
}

impl PeerRefusals {
    /// Counts and (rate-limited) logs one refusal of `caller` sending as `from` on `stream`
    /// (`raft` or `snapshot`); the status to end the stream with.
    pub fn refuse(&self, stream: &'static str, caller: &str, from: Option<NodeId>) -> Status {
        crate::metrics::peer_refused(stream);
        let mut log = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.unreported += 1;
        let now = Instant::now();
        if log.last_warning.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
            tracing::warn!(
                stream,
                caller,
                claimed_from = ?from,
                refused_streams = log.unreported,
                "peer stream refused: the caller's certificate is not the member it claims to be"
            );
            log.last_warning = Some(now);
            log.unreported = 0;
        }
        Status::permission_denied("the caller's certificate is not the member it claims to be")
    }
}
