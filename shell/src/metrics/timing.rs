//! How long the core takes to answer the requests the driver hands it: writes from proposal
//! to the answer after apply (`mokv_write_commit_seconds`), linearizable reads from arrival to
//! the answer after their ReadIndex round and apply (`mokv_read_index_seconds`).

use std::collections::HashMap;

use mokv_core::{Consistency, Request, RequestId};
use tokio::time::Instant;

/// What a timed request was.
#[derive(Debug, Clone, Copy)]
enum Timed {
    Write,
    LinearizableRead,
}

/// Start times of the requests in the core that are timed. Holds at most one entry per request
/// the driver waits for (every request is answered exactly once, and the driver forgets them
/// all when it stops), so it is bounded like the driver's own table of waiting callers.
#[derive(Debug, Default)]
pub struct RequestTimes {
    started: HashMap<RequestId, (Timed, Instant)>,
}

impl RequestTimes {
    /// `request` was handed to the core as `id`.
    pub fn start(&mut self, id: RequestId, request: &Request) {
        let kind = match request {
            Request::Set { .. }
            | Request::Delete { .. }
            | Request::SetIf { .. }
            | Request::DeleteIf { .. } => Timed::Write,
            Request::Get { consistency: Consistency::Linearizable, .. }
            | Request::Range { consistency: Consistency::Linearizable, .. } => {
                Timed::LinearizableRead
            }
            _ => return,
        };
        self.started.insert(id, (kind, Instant::now()));
    }

    /// The core answered `id`; `ok`: with success.
    pub fn answered(&mut self, id: RequestId, ok: bool) {
        let Some((kind, started)) = self.started.remove(&id) else { return };
        if !ok {
            return;
        }
        let seconds = started.elapsed().as_secs_f64();
        match kind {
            Timed::Write => metrics::histogram!("mokv_write_commit_seconds").record(seconds),
            Timed::LinearizableRead => {
                metrics::histogram!("mokv_read_index_seconds").record(seconds);
            }
        }
    }

    /// The driver stopped: nobody will be answered.
    pub fn clear(&mut self) {
        self.started.clear();
    }
}
