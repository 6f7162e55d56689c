//! Who may talk to a node: the caller's identity ([`identity`]), mutual TLS ([`tls`]),
//! authorization ([`authz`]), certificates for `mokvd certs` and `--dev` ([`certs`]), and the cluster key that
//! seals gossip datagrams ([`gossip_crypto`]).

pub mod authz;
pub mod certs;
pub mod gossip_crypto;
pub mod identity;
pub mod tls;
