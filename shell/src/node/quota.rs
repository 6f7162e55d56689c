//! The state quota as an operator sees it: one warning in the log when the quota starts
//! refusing writes, then at most one a minute (with how many were refused) while it goes on.
//! The gauges (`mokv_state_bytes`, `mokv_quota_state_bytes`) are in [`crate::metrics`].

use std::time::{Duration, Instant};

use mokv_core::QuotaExceeded;

/// Shortest time between two warnings.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Refusals seen by one node's driver since its last warning.
#[derive(Debug, Default)]
pub struct QuotaRefusals {
    last_warning: Option<Instant>,
    unreported: u64,
}

impl QuotaRefusals {
    /// One write was refused by the quota.
    pub fn refused(&mut self, q: &QuotaExceeded) {
        crate::metrics::quota_refused();
        self.unreported += 1;
        let now = Instant::now();
        if self.last_warning.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            state_bytes = q.state_bytes,
            quota_state_bytes = q.quota_bytes,
            refused_writes = self.unreported,
            "state quota reached: writes that grow the data are refused (RESOURCE_EXHAUSTED) \
             until keys are deleted or quota-state-bytes is raised on the leader"
        );
        self.last_warning = Some(now);
        self.unreported = 0;
    }
}
