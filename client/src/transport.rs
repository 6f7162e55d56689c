//! How the client opens its connections: mutual TLS ([`crate::Client::connect`], what every
//! application and the `mokv` CLI use), or plaintext through a connector the program supplies
//! ([`crate::Client::connect_plaintext`]). The second exists for programs that run the
//! client over a network of their own, the simulator (turmoil's simulated TCP); the CLI has no
//! flag for it.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::ClientError;

/// Turns a configured endpoint (timeouts, keepalive; scheme `http`) into a lazily connecting
/// channel, typically with `Endpoint::connect_with_connector_lazy`.
pub type ChannelFactory = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// A plaintext transport and the seed of the client's session ids: with both supplied, a
/// simulated client draws nothing from the operating system and replays from its seed.
#[derive(Clone)]
pub struct Plaintext {
    /// Makes the channel of every connection the client opens.
    pub connect: ChannelFactory,
    /// Seed of the client's randomness (session ids, backoff jitter).
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

/// Opens the connections to one node: `pool` lazily connecting channels (each one HTTP/2
/// connection, shared by every call in flight on it).
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) transport: Transport,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool: usize,
}

impl Dialer {
    /// `scheme://host:port` of an address given with or without a scheme.
    pub(crate) fn uri(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("{}://{addr}", self.transport.scheme())
        }
    }

    /// The connections to `uri` (nothing is dialed before the first call).
    pub(crate) fn dial(&self, uri: &str) -> Result<Vec<Channel>, ClientError> {
        (0..self.pool.max(1)).map(|_| self.channel(uri)).collect()
    }

    /// One lazily connecting channel to `uri` (for services other than KV).
    pub(crate) fn channel(&self, uri: &str) -> Result<Channel, ClientError> {
        let endpoint = Endpoint::from_shared(uri.to_owned())
            .map_err(|_| ClientError::Config("invalid endpoint address".into()))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(false);
        self.transport.channel(endpoint)
    }
}

/// `host:port` of a `scheme://host:port`.
pub(crate) fn addr_of(uri: &str) -> &str {
    uri.split_once("://").map_or(uri, |(_, rest)| rest)
}

/// The client's randomness (session ids, backoff jitter): splitmix64, seeded from the
/// operating system or, for a simulated client, from [`Plaintext::id_seed`] (it then replays).
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// Seeded from the operating system.
    pub(crate) fn from_os() -> Result<Rng, ClientError> {
        let seed = getrandom::u64().map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Rng { state: seed })
    }

    pub(crate) fn seeded(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A fresh non-zero session id.
    pub(crate) fn session_id(&mut self) -> u64 {
        self.next_u64().max(1)
    }

    /// Uniform in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_replays_and_ids_are_never_zero() {
        let (mut a, mut b) = (Rng::seeded(7), Rng::seeded(7));
        for _ in 0..100 {
            let id = a.session_id();
            assert_eq!(id, b.session_id());
            assert_ne!(id, 0);
            assert!(a.up_to(10) <= 10);
            b.up_to(10);
        }
        assert_eq!(Rng::seeded(0).session_id(), Rng::seeded(0).session_id());
    }
}
