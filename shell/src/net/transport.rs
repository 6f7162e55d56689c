//! How a node dials its peers.
//!
//! `mokvd` dials peers over mutual TLS with its node certificate ([`PeerConnector::Tls`]) and
//! accepts only TLS connections ([`crate::node::server::start`]). A program that runs nodes
//! itself over a network of its own (the simulator, over turmoil's simulated TCP) instead
//! supplies a [`ChannelFactory`] that opens plaintext connections (and vouches for the caller of
//! every connection it accepts: [`crate::security::identity::VouchedIdentity`]). Neither can be
//! selected from `mokvd`'s configuration file, flags or environment: they exist only as this
//! library API, used by [`crate::node::embedded`].

use std::sync::Arc;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Turns a configured endpoint (keepalive, timeouts; scheme `http`) into a lazily connecting
/// channel, typically with `Endpoint::connect_with_connector_lazy`.
pub type ChannelFactory = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// How outgoing peer connections (Raft links, join) are made.
#[derive(Clone)]
pub enum PeerConnector {
    /// Mutual TLS, presenting the node certificate: what `mokvd` uses.
    Tls(ClientTlsConfig),
    /// Plaintext through the embedding program's connector (see the module documentation).
    Plaintext(ChannelFactory),
}

impl std::fmt::Debug for PeerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerConnector::Tls(_) => f.write_str("PeerConnector::Tls"),
            PeerConnector::Plaintext(_) => f.write_str("PeerConnector::Plaintext"),
        }
    }
}

impl PeerConnector {
    /// The URI scheme of a peer address.
    pub fn scheme(&self) -> &'static str {
        match self {
            PeerConnector::Tls(_) => "https",
            PeerConnector::Plaintext(_) => "http",
        }
    }

    /// Adds what the connector needs to a configured endpoint (TLS settings).
    pub fn secure(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        match self {
            PeerConnector::Tls(tls) => endpoint.tls_config(tls.clone()),
            PeerConnector::Plaintext(_) => Ok(endpoint),
        }
    }

    /// A channel that connects on first use (and reconnects after a failure).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            PeerConnector::Tls(_) => endpoint.connect_lazy(),
            PeerConnector::Plaintext(factory) => factory(endpoint),
        }
    }
}
