//! What a program that runs a node can do with it: [`NodeHandle`].

use mokv_core::{Error, NodeId, Request, Response};

use crate::node::driver::{CallError, DriverHandle, View};

/// A cheap, cloneable handle on a running node: its view, and requests to its core. Obtained
/// from [`RunningNode::handle`](crate::RunningNode::handle).
#[derive(Clone, Debug)]
pub struct NodeHandle(DriverHandle);

impl NodeHandle {
    pub(crate) fn new(driver: DriverHandle) -> Self {
        Self(driver)
    }

    /// The node's Raft id (fixed for the life of the process).
    pub fn id(&self) -> NodeId {
        self.0.id()
    }

    /// The node's latest view (status, members, leader, gossip).
    pub fn view(&self) -> View {
        self.0.view()
    }

    /// Hands a request to the core and waits for its answer. `Err` when it did not reach the
    /// core (nothing was applied); `Ok(Err(_))` carries the core's error.
    pub async fn call(&self, request: Request) -> Result<Result<Response, Error>, CallError> {
        self.0.call(request).await
    }

    /// Records where a node that is not in the member table yet can be reached: an embedding
    /// program without gossip tells a new learner where its leader is.
    pub async fn learn_address(&self, id: NodeId, addr: String) {
        self.0.learn_address(id, addr).await;
    }
}
