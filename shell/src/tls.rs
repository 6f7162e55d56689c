//! Mutual TLS for both gRPC directions, and the caller's identity.
//!
//! Servers use tonic's rustls integration (ring provider): a server certificate plus the CA
//! that every client certificate must chain to; a client without a certificate, or with one
//! that does not verify, fails the handshake. Handlers then read the verified chain with
//! `Request::peer_certs()`, and [`Identity`] is the subject CN of its end-entity certificate.
//!
//! Peer connections present the node's own certificate (`peer-tls-*`).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::TlsFiles;

/// Installs ring as rustls's process-wide crypto provider (idempotent). tonic picks ring itself
/// with `tls-ring`; this covers rustls helpers that ask for the process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct TlsError {
    what: &'static str,
    path: String,
    source: std::io::Error,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Server side: presents `files.cert`, requires a client certificate signed by `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    let cert = read("reading certificate", &files.cert)?;
    let key = read("reading private key", &files.key)?;
    let ca = read("reading CA certificate", &files.ca)?;
    Ok(ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .timeout(std::time::Duration::from_secs(10)))
}

/// Client side: trusts `files.ca` and presents `files.cert` (the node certificate for peers).
pub fn client_config(files: &TlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let cert = read("reading certificate", &files.cert)?;
    let key = read("reading private key", &files.key)?;
    let ca = read("reading CA certificate", &files.ca)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key)))
}

/// Who is calling, from the verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Subject common name: `root`, `nobody`, a node name, ...
    pub name: String,
    /// The certificate is also valid for server authentication: a node certificate (as
    /// `mokvd certs` makes them). Client certificates carry client auth only. Only nodes may
    /// call the peer service.
    pub is_node: bool,
}

/// The identity of a request's caller; `None` without a verified certificate.
pub fn identity_of<T>(req: &tonic::Request<T>) -> Option<Identity> {
    let certs = req.peer_certs()?;
    identity_from_der(certs.first()?.as_ref())
}

/// Parses the subject CN and extended key usage of a DER certificate.
pub fn identity_from_der(der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    let is_node = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.server_auth || eku.value.any,
        _ => false,
    };
    Some(Identity { name, is_node })
}
