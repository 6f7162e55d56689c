//! Loading the client's mTLS material.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::ClientError;

/// PEM files: the cluster CA, and this client's certificate and key (its CN is its identity).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM): the nodes' certificates must chain to it.
    pub ca: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `mokvd --dev` generates in its data dir for the `root` identity.
    pub fn dev(dir: &std::path::Path) -> Self {
        Self { ca: dir.join("ca.pem"), cert: dir.join("root.pem"), key: dir.join("root-key.pem") }
    }

    pub(crate) fn load(&self) -> Result<ClientTlsConfig, ClientError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| ClientError::Config(format!("{}: {e}", p.display())))
        };
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key)))
    }
}

/// `$HOME/.mokv-dev`, where `mokvd --dev` keeps its data and certificates.
pub fn default_dev_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".mokv-dev"),
        _ => PathBuf::from(".mokv-dev"),
    }
}
