//! What a failed attempt means, and how long to wait before the next one.

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

use crate::transport::Rng;

/// First backoff of a call.
const BACKOFF_BASE: Duration = Duration::from_millis(20);
/// Largest backoff of a call.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The node answered with this status: it was reached, and a write it refused with
    /// UNAVAILABLE was not applied.
    Server(Status),
    /// The connection failed (could not connect, or broke during the call), or no answer came
    /// before the attempt's deadline. Unless the connection was refused (the request never
    /// left), a write may have been applied.
    Local { why: String, maybe_sent: bool },
}

/// Splits a status from tonic into an answer of the node and a failure of the connection.
///
/// tonic makes a status of its own, with the underlying error as its source, for failures of
/// the transport (connecting, a reset stream, a broken connection); a status the server sent
/// has no source.
pub(crate) fn classify(s: Status) -> Failure {
    if std::error::Error::source(&s).is_some() || s.code() == Code::Unknown {
        let maybe_sent = !connection_refused(&s);
        Failure::Local { why: format!("{:?}: {}", s.code(), s.message()), maybe_sent }
    } else {
        Failure::Server(s)
    }
}

/// Whether the failure was a refused connection (nothing was sent).
fn connection_refused(s: &Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The leader's address from the hint metadata of an UNAVAILABLE answer.
pub(crate) fn leader_hint(s: &Status) -> Option<String> {
    s.metadata()
        .get(mokv_proto::LEADER_HINT_ADDR)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}

/// Sleeps before retry number `n` (0-based): exponential from [`BACKOFF_BASE`] up to
/// [`BACKOFF_MAX`], each delay drawn uniformly from its upper half (jitter, so that clients
/// failing together do not retry together), never past `deadline`.
pub(crate) async fn backoff(n: u32, rng: &std::sync::Mutex<Rng>, deadline: Instant) {
    let delay = backoff_delay(n, &mut crate::lock(rng));
    let until = (Instant::now() + delay).min(deadline);
    tokio::time::sleep_until(until).await;
}

fn backoff_delay(n: u32, rng: &mut Rng) -> Duration {
    let ceiling = (BACKOFF_BASE * (1u32 << n.min(16))).min(BACKOFF_MAX);
    let half = ceiling.as_micros() as u64 / 2;
    Duration::from_micros(half + rng.up_to(half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_and_transport_failures_are_told_apart() {
        assert!(matches!(classify(Status::unavailable("not the leader")), Failure::Server(_)));
        assert!(matches!(classify(Status::deadline_exceeded("x")), Failure::Server(_)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let mut s = Status::unavailable("transport error");
        s.set_source(std::sync::Arc::new(io));
        assert!(matches!(classify(s), Failure::Local { maybe_sent: true, .. }));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let mut s = Status::unavailable("transport error");
        s.set_source(std::sync::Arc::new(io));
        assert!(matches!(classify(s), Failure::Local { maybe_sent: false, .. }));
        let unknown = classify(Status::unknown("h2 protocol error"));
        assert!(matches!(unknown, Failure::Local { maybe_sent: true, .. }));
    }

    #[test]
    fn backoff_grows_and_is_jittered() {
        let mut rng = Rng::seeded(9);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..20 {
            let ceiling = (BACKOFF_BASE * (1u32 << n.min(16))).min(BACKOFF_MAX);
            for _ in 0..20 {
                let d = backoff_delay(n, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "retry {n}: {d:?}");
                seen.insert(d);
            }
        }
        assert!(seen.len() > 100, "no jitter");
        assert_eq!(backoff_delay(40, &mut rng).max(BACKOFF_MAX), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn backoff_stops_at_the_deadline() {
        let rng = std::sync::Mutex::new(Rng::seeded(9));
        let start = Instant::now();
        backoff(12, &rng, start + Duration::from_millis(5)).await;
        assert!(start.elapsed() < Duration::from_millis(400));
    }
}
