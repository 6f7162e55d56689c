//! The server's stop, as the long-lived streams see it.
//!
//! A graceful stop of the gRPC server waits for every open stream to finish, and three kinds
//! never finish on their own: a peer's `Raft` stream (its link stays open for the node's life),
//! a `Watch` and a lease `KeepAlive`. Each of them waits on this signal too and ends when the
//! server stops: the Raft stream with UNAVAILABLE (the peer's link reopens elsewhere or later),
//! a watch and a keep-alive with UNAVAILABLE "the node is shutting down", after which clients
//! resume on another node. Otherwise every graceful stop would wait out the whole drain bound.

use tokio::sync::watch;

/// Resolves [`ServerStop::stopped`] for every clone once [`ServerStopTrigger::stop`] is
/// called (or the trigger is dropped).
#[derive(Debug)]
pub struct ServerStopTrigger(watch::Sender<bool>);

/// A receiver of the server's stop (cheap to clone: one per stream).
#[derive(Debug, Clone)]
pub struct ServerStop(watch::Receiver<bool>);

/// A new stop signal: the trigger and its first receiver.
pub fn server_stop() -> (ServerStopTrigger, ServerStop) {
    let (tx, rx) = watch::channel(false);
    (ServerStopTrigger(tx), ServerStop(rx))
}

impl ServerStopTrigger {
    /// Stops every stream waiting on a receiver (now or later).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl ServerStop {
    /// Resolves once the server stops; at once if it already has or its trigger is gone.
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_sees_the_stop_even_after_it() {
        let (trigger, stop) = server_stop();
        let early = stop.clone();
        let waiting = tokio::spawn(async move { early.stopped().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing stopped yet");
        trigger.stop();
        waiting.await.unwrap();
        // A stream opened after the stop ends at once.
        stop.clone().stopped().await;
        drop(trigger);
        stop.stopped().await;
    }
}
