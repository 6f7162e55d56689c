//! Who may talk to a node: mutual TLS and the caller's identity ([`tls`]), authorization
//! ([`authz`]), certificates for `mokvd certs` and `--dev` ([`certs`]), and the cluster key that
//! seals gossip datagrams ([`gossip_crypto`]).

pub mod authz;
pub mod certs;
pub mod gossip_crypto;
pub mod tls;
