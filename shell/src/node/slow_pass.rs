//! How long one pass of the driver kept it busy, and a warning when that was long enough to
//! hold up the whole node.
//!
//! A pass takes the inputs already waiting and drains the outputs they made (applying
//! committed entries, answering, sending). While it runs, no request, Raft message or tick of
//! this node is looked at, so a slow pass delays all of them by as much — on a leader, every
//! write of the cluster. Waiting for room in the disk writer's queue is left out: that is the
//! disk being slow, which the writer's own warning reports.

use std::time::Duration;

use tokio::time::Instant;

/// A pass at least this long (waits for the disk left out) is reported: the same bound as the
/// disk writer's slow-write warning, and well above a healthy pass (tens of µs to a few ms).
pub(crate) const SLOW_PASS: Duration = Duration::from_millis(100);

/// The clock of the pass under way.
#[derive(Debug, Default)]
pub(crate) struct PassClock {
    /// When the pass under way started; `None` between passes.
    started: Option<Instant>,
    /// Time this pass spent waiting for room in the disk writer's queue.
    disk_wait: Duration,
    /// The applied index at the end of the last pass.
    applied_index: u64,
}

/// A pass that kept the driver busy for at least [`SLOW_PASS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlowPass {
    /// Time the pass kept the driver busy, waits for the disk left out.
    pub busy: Duration,
    /// Time it waited for room in the disk writer's queue.
    pub disk_wait: Duration,
    /// Log entries applied during the pass.
    pub applied_entries: u64,
}

impl PassClock {
    /// A pass starts at `now`.
    pub(crate) fn start(&mut self, now: Instant) {
        self.started = Some(now);
        self.disk_wait = Duration::ZERO;
    }

    /// The pass waited this long for room in the disk writer's queue.
    pub(crate) fn waited_for_disk(&mut self, waited: Duration) {
        self.disk_wait += waited;
    }

    /// Outputs were drained by `now`, leaving `applied_index` applied: what the pass cost, if
    /// one was under way and slow.
    #[must_use]
    pub(crate) fn finish(&mut self, now: Instant, applied_index: u64) -> Option<SlowPass> {
        let applied_entries = applied_index.saturating_sub(self.applied_index);
        self.applied_index = applied_index;
        let started = self.started.take()?;
        let busy = now.saturating_duration_since(started).saturating_sub(self.disk_wait);
        (busy >= SLOW_PASS).then_some(SlowPass { busy, disk_wait: self.disk_wait, applied_entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_slow_from_the_bound_on_with_disk_waits_left_out() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut clock = PassClock::default();
        assert_eq!(clock.finish(ms(0), 10), None, "the drain at start is no pass");
        clock.start(ms(0));
        assert_eq!(clock.finish(ms(99), 12), None, "just under the bound");

        clock.start(ms(1_000));
        let slow = clock.finish(ms(1_100), 40).expect("at the bound");
        assert_eq!(
            slow,
            SlowPass { busy: SLOW_PASS, disk_wait: Duration::ZERO, applied_entries: 28 }
        );

        // 150 ms, 60 of them waiting for the disk: 90 ms busy, not slow.
        clock.start(ms(2_000));
        clock.waited_for_disk(Duration::from_millis(60));
        assert_eq!(clock.finish(ms(2_150), 41), None);

        // The waits of one pass do not carry over to the next.
        clock.start(ms(3_000));
        let slow = clock.finish(ms(3_150), 41).expect("150 ms busy");
        assert_eq!(slow.busy, Duration::from_millis(150));
        assert_eq!((slow.disk_wait, slow.applied_entries), (Duration::ZERO, 0));
    }
}
