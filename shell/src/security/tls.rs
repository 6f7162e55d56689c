//! Mutual TLS for both gRPC directions.
//!
//! The server terminates TLS 1.3 itself (tokio-rustls, ring) and hands tonic the established
//! streams: a server certificate plus the CA that every client certificate must chain to; a
//! client without a certificate, or with one that does not verify (other CA, expired, not yet
//! valid), fails the handshake. Both come from [`ReloadableServerTls`], re-read from disk on
//! change or SIGHUP ([`watch`]), which tonic's fixed `ServerTlsConfig` could not do. The
//! caller's identity (the subject CN of the verified end-entity certificate) is parsed ONCE
//! per connection, right after the handshake ([`MtlsConn`]), and every request of that
//! connection carries it ([`crate::security::identity`]).
//!
//! Peer connections present the node's own certificate (`peer-tls-*`, read at start, reloaded
//! by [`watch_peer`]).

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::config::TlsFiles;
use crate::security::identity::{identity_from_der, ConnIdentity};

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

/// Client side: trusts `files.ca` and presents `files.cert` (the node certificate for peers).
pub fn client_config(files: &TlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let cert = read("reading certificate", &files.cert)?;
    let key = read("reading private key", &files.key)?;
    let ca = read("reading CA certificate", &files.ca)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key)))
}

/// A server-side mTLS connection with its client's identity.
#[derive(Debug)]
pub struct MtlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    identity: ConnIdentity,
}

impl MtlsConn {
    fn new(stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Self {
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| identity_from_der(der.as_ref()))
            .map(Arc::new);
        Self { stream, identity: ConnIdentity(identity) }
    }
}

impl tonic::transport::server::Connected for MtlsConn {
    type ConnectInfo = ConnIdentity;

    fn connect_info(&self) -> ConnIdentity {
        self.identity.clone()
    }
}

impl tokio::io::AsyncRead for MtlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for MtlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Server TLS that can be reloaded from disk without a restart.

/// How often the server certificate, key and CA files are checked for changes.
pub const CERT_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// Bound on one TLS handshake (a client that stalls it is dropped).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn invalid(what: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError {
        what,
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = read("reading certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("parsing certificate", &files.cert, e))?;
    if chain.is_empty() {
        return Err(invalid("parsing certificate", &files.cert, "no certificate in the file"));
    }
    // The key's parse error is not shown: it could quote key material.
    let key = read("reading private key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|_| invalid("parsing private key", &files.key, "not a PEM private key"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| invalid("loading private key", &files.key, "unsupported private key"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| invalid("matching certificate and key", &files.key, e))?;
    let ca = read("reading CA certificate", &files.ca)?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| invalid("parsing CA certificate", &files.ca, e))?;
        roots.add(c).map_err(|e| invalid("adding CA certificate", &files.ca, e))?;
    }
    // A client without a certificate completes the handshake and gets UNAUTHENTICATED from
    // every KV and Peer rpc (a clear status instead of a closed connection its library would
    // retry); only health and reflection answer it. A certificate that does not verify is still
    // refused in the handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| invalid("CA certificate", &files.ca, e))?;
    Ok(Loaded { key: Arc::new(certified), verifier })
}

/// The server's certificate and client-certificate verifier, swappable at runtime: rustls asks
/// this for both on every handshake, so a reload applies to every new connection (existing
/// connections keep the certificates they were made with).
pub struct ReloadableServerTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ReloadableServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ReloadableServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ReloadableServerTls {
    /// Loads `files` (presented certificate and key, CA that client certificates must chain to).
    pub fn load(files: &TlsFiles) -> Result<Arc<ReloadableServerTls>, TlsError> {
        let loaded = load(files)?;
        Ok(Arc::new(ReloadableServerTls {
            files: files.clone(),
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Re-reads the files; on error the previous certificates stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(load(&self.files)?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A rustls server configuration (TLS 1.3, h2) that uses this for every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| invalid("TLS configuration", &self.files.cert, e))?
            .with_client_cert_verifier(self.clone())
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

type FilesStamp = Vec<Option<(u64, std::time::SystemTime, u64)>>;

/// Modification stamp of a certificate, key and CA file: inode (a rename), modification time
/// and length.
fn files_stamp(files: &TlsFiles) -> FilesStamp {
    use std::os::unix::fs::MetadataExt as _;
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.ino(), m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Re-reads the node's outgoing (peer) certificate, key and CA when they change (checked every
/// `interval`) or on SIGHUP, and hands each new client configuration to `reloaded` (mokvd's
/// server passes it on to the peer links). A set of files that does not load is logged and the
/// previous configuration stays.
pub async fn watch_peer(
    files: TlsFiles,
    interval: std::time::Duration,
    reloaded: impl Fn(ClientTlsConfig) + Send + 'static,
) {
    let mut trigger = ReloadTrigger::new(&files);
    loop {
        trigger.next(&files, interval).await;
        match client_config(&files) {
            Ok(c) => {
                reloaded(c);
                tracing::info!(cert = %files.cert.display(), "peer certificates reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer certificate reload failed; keeping the previous ones")
            }
        }
    }
}

/// When to re-read a set of certificate files: they changed (polled every `interval`) or the
/// process got SIGHUP.
struct ReloadTrigger {
    hup: Option<tokio::signal::unix::Signal>,
    last: FilesStamp,
}

impl ReloadTrigger {
    fn new(files: &TlsFiles) -> Self {
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; certificates reload on file change");
                None
            }
        };
        Self { hup, last: files_stamp(files) }
    }

    async fn next(&mut self, files: &TlsFiles, interval: std::time::Duration) {
        loop {
            let signalled = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                Some(()) = async {
                    match self.hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let stamp = files_stamp(files);
            if signalled || stamp != self.last {
                self.last = stamp;
                return;
            }
        }
    }
}

impl ResolvesServerCert for ReloadableServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl ClientCertVerifier for ReloadableServerTls {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // See `load`: no certificate → UNAUTHENTICATED from the services, not a handshake
        // failure. A presented certificate is still verified here.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints only (the CA list cannot be borrowed out of the lock); clients send the
        // certificate they are configured with.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current().verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().verifier.supported_verify_schemes()
    }
}

/// Reloads `tls` when its files change (checked every `interval`) or on SIGHUP. A failed
/// reload is logged and the previous certificates stay in use.
pub async fn watch(tls: Arc<ReloadableServerTls>, interval: std::time::Duration) {
    let mut trigger = ReloadTrigger::new(&tls.files);
    loop {
        trigger.next(&tls.files, interval).await;
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.files.cert.display(), "server certificates reloaded")
            }
            Err(e) => tracing::warn!(
                cert = %tls.files.cert.display(),
                error = %e,
                "certificate reload failed; keeping the previous ones"
            ),
        }
    }
}

/// TLS connections accepted on `listener`, each with its client's identity parsed once
/// ([`MtlsConn`]): handshakes run concurrently (each bounded), failed ones are dropped. Ends
/// when the receiver is dropped (the server stopped).
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
) -> tokio_stream::wrappers::ReceiverStream<Result<MtlsConn, std::io::Error>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(MtlsConn::new(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
