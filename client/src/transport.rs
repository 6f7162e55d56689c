//! How the client opens its connections: mutual TLS ([`crate::Client::connect`], what every
//! application and the `mokv` CLI use), or plaintext through a connector the program supplies
//! ([`crate::Client::connect_plaintext`]). The second exists for programs that run the
//! client over a network of their own, the simulator (turmoil's simulated TCP); the CLI has no
//! flag for it.

use std::sync::Arc;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::ClientError;

/// Turns a configured endpoint (timeouts, keepalive; scheme `http`) into a lazily connecting
/// channel, typically with `Endpoint::connect_with_connector_lazy`.
pub type ChannelFactory = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// A plaintext transport and the seed of the client's session ids: with both supplied, a
/// simulated client draws nothing from the operating system and replays from its seed.
#[derive(Clone)]
pub struct Plaintext {
    pub connect: ChannelFactory,
    pub id_seed: u64,
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plaintext").field("id_seed", &self.id_seed).finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub(crate) enum Transport {
    Tls(ClientTlsConfig),
    Plaintext(ChannelFactory),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tls(_) => f.write_str("Tls"),
            Transport::Plaintext(_) => f.write_str("Plaintext"),
        }
    }
}

impl Transport {
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Transport::Tls(_) => "https",
            Transport::Plaintext(_) => "http",
        }
    }

    /// A lazily connecting channel to `endpoint`.
    pub(crate) fn channel(&self, endpoint: Endpoint) -> Result<Channel, ClientError> {
        match self {
            Transport::Tls(tls) => Ok(endpoint
                .tls_config(tls.clone())
                .map_err(|e| ClientError::Config(e.to_string()))?
                .connect_lazy()),
            Transport::Plaintext(factory) => Ok(factory(endpoint)),
        }
    }
}

/// Where session ids come from: the operating system, or a seeded generator (splitmix64).
#[derive(Debug, Clone)]
pub(crate) enum Ids {
    Os,
    Seeded(u64),
}

impl Ids {
    /// A fresh non-zero session id.
    pub(crate) fn draw(&mut self) -> Result<u64, ClientError> {
        let id = match self {
            Ids::Os => getrandom::u64().map_err(|e| ClientError::Config(e.to_string()))?,
            Ids::Seeded(state) => {
                *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
        };
        Ok(id.max(1))
    }
}
