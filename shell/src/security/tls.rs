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
//! by [`watch_peer`]). A reload parses both sides completely (certificate chain, private key,
//! the key matches the certificate, CA, CRL) before anything is swapped; a set of files that
//! fails any step is refused (a warning, `mokv_tls_reload_failures_total{role}`) and the
//! previous identity stays, so a half-written file cannot cut a node off its peers.
//!
//! Revocation: `server-tls-crl-file` lists revoked certificates (`mokvd certs --revoke`); it is
//! reloaded with the CA. After every successful reload, and every [`EXPIRY_CHECK_INTERVAL`],
//! each open connection's client certificate is verified again against the verifier in force
//! ([`ConnRegistry`]) and the connections whose certificate is revoked, expired or no longer
//! chains to the CA are closed at once (an active close rather than a maximum connection age:
//! a revocation takes effect within one reload, and idle trusted connections are not churned).
//!
//! Expiry: `mokv_tls_cert_expiry_seconds{role="server"|"peer"|"ca"}` is the time left, and
//! a warning is logged when it falls below [`EXPIRY_WARNING`].

use std::collections::BTreeMap;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::config::TlsFiles;
use crate::net::conn_gate::{ConnClass, ConnGate, ConnPermit};
use crate::security::identity::{identity_from_der, ConnIdentity, Identity};

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
/// The files are parsed and the key matched to the certificate first: tonic would accept any
/// bytes here and fail every later handshake.
pub fn client_config(files: &TlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let cert = read("reading certificate", &files.cert)?;
    let key = read("reading private key", &files.key)?;
    let ca = read("reading CA certificate", &files.ca)?;
    certified_key(files, &cert, &key)?;
    roots(files, &ca)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key)))
}

/// Expiry (`notAfter`, seconds since the epoch) of the first certificate of `files.cert`.
fn cert_not_after(files: &TlsFiles) -> Option<i64> {
    let pem = std::fs::read(&files.cert).ok()?;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    not_after_of(&der)
}

fn not_after_of(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::FromDer as _;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(c.validity().not_after.timestamp())
}

/// Parses the certificate chain and key, and checks that they belong together.
fn certified_key(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("parsing certificate", &files.cert, e))?;
    if chain.is_empty() {
        return Err(invalid("parsing certificate", &files.cert, "no certificate in the file"));
    }
    // The key's parse error is not shown: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|_| invalid("parsing private key", &files.key, "not a PEM private key"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| invalid("loading private key", &files.key, "unsupported private key"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| invalid("matching certificate and key", &files.key, e))?;
    Ok(certified)
}

/// Parses the CA file into a root store (at least one certificate).
fn roots(files: &TlsFiles, ca: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        let c = c.map_err(|e| invalid("parsing CA certificate", &files.ca, e))?;
        roots.add(c).map_err(|e| invalid("adding CA certificate", &files.ca, e))?;
    }
    if roots.is_empty() {
        return Err(invalid("parsing CA certificate", &files.ca, "no certificate in the file"));
    }
    Ok(roots)
}

/// A server-side mTLS connection with its client's identity.
#[derive(Debug)]
pub struct MtlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    identity: ConnIdentity,
    _registered: Option<Registered>,
    /// Its place in the connection bounds, released when the connection closes.
    _permit: Option<ConnPermit>,
    /// Ends the connection at its maximum age (cert-less connections only).
    _age: Option<AgeLimit>,
}

impl MtlsConn {
    /// The identity of the verified client certificate of `stream`, if it presented one.
    fn identity_of(
        stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ) -> Option<Arc<Identity>> {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| identity_from_der(der.as_ref()))
            .map(Arc::new)
    }
}

/// Shuts a connection's socket down when its maximum age is reached, unless the connection
/// ended first (dropping this ends the timer and releases the duplicated socket, which would
/// otherwise keep the connection open).
#[derive(Debug)]
struct AgeLimit {
    _cancel: tokio::sync::oneshot::Sender<()>,
}

impl AgeLimit {
    fn start(socket: std::net::TcpStream, age: Duration) -> AgeLimit {
        let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(age) => {
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                }
                _ = cancelled => {}
            }
        });
        AgeLimit { _cancel: cancel }
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
    /// `notAfter` of the presented certificate and of the CA that expires first.
    cert_not_after: Option<i64>,
    ca_not_after: Option<i64>,
}

fn load(files: &TlsFiles, crl: Option<&Path>) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = read("reading certificate", &files.cert)?;
    let key = read("reading private key", &files.key)?;
    let certified = certified_key(files, &cert, &key)?;
    let cert_not_after = certified.cert.first().and_then(|c| not_after_of(c));
    let ca = read("reading CA certificate", &files.ca)?;
    let ca_not_after =
        CertificateDer::pem_slice_iter(&ca).filter_map(|c| not_after_of(&c.ok()?)).min();
    let roots = roots(files, &ca)?;
    // A client without a certificate completes the handshake and gets UNAUTHENTICATED from
    // every KV and Peer rpc (a clear status instead of a closed connection its library would
    // retry); only health and reflection answer it. A certificate that does not verify is still
    // refused in the handshake.
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated();
    if let Some(path) = crl {
        let pem = read("reading CRL", path)?;
        let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("parsing CRL", path, e))?;
        if crls.is_empty() {
            return Err(invalid("parsing CRL", path, "no CRL in the file"));
        }
        // The CRL covers the certificates the CA issued (end entities: the CA is the trust
        // anchor); a certificate of an issuer without a CRL here is not refused for that.
        builder = builder
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = builder.build().map_err(|e| invalid("CA certificate or CRL", &files.ca, e))?;
    Ok(Loaded { key: Arc::new(certified), verifier, cert_not_after, ca_not_after })
}

/// The server's certificate and client-certificate verifier, swappable at runtime: rustls asks
/// this for both on every handshake, so a reload applies to every new connection (existing
/// connections keep the certificates they were made with).
pub struct ReloadableServerTls {
    files: TlsFiles,
    crl: Option<PathBuf>,
    current: RwLock<Arc<Loaded>>,
    conns: Arc<ConnRegistry>,
}

impl std::fmt::Debug for ReloadableServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ReloadableServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ReloadableServerTls {
    /// Loads `files` (presented certificate and key, CA that client certificates must chain
    /// to) and the CRL of revoked client certificates, if any.
    pub fn load(
        files: &TlsFiles,
        crl: Option<&Path>,
    ) -> Result<Arc<ReloadableServerTls>, TlsError> {
        let loaded = load(files, crl)?;
        let tls = Arc::new(ReloadableServerTls {
            files: files.clone(),
            crl: crl.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(loaded)),
            conns: Arc::default(),
        });
        tls.report_expiry(&mut ExpiryWarnings::default());
        Ok(tls)
    }

    /// Re-reads the files; on error the previous certificates stay in use. On success, the
    /// open connections whose client certificate the new verifier refuses are closed.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(load(&self.files, self.crl.as_deref())?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        self.close_untrusted();
        Ok(())
    }

    /// The open connections accepted with this configuration.
    pub fn connections(&self) -> Arc<ConnRegistry> {
        self.conns.clone()
    }

    /// Closes every open connection whose client certificate no longer verifies (revoked,
    /// expired, or not from the CA in force). Returns how many.
    pub fn close_untrusted(&self) -> usize {
        let verifier = self.current().verifier.clone();
        let closed = self.conns.close_where(|chain| {
            let Some((end, rest)) = chain.split_first() else { return false };
            verifier.verify_client_cert(end, rest, UnixTime::now()).is_err()
        });
        if closed > 0 {
            tracing::warn!(
                connections = closed,
                "closed connections whose client certificate is no longer trusted"
            );
            metrics::counter!("mokv_tls_connections_closed_untrusted_total")
                .increment(closed as u64);
        }
        closed
    }

    fn report_expiry(&self, warnings: &mut ExpiryWarnings) {
        let l = self.current();
        warnings.report("server", &self.files.cert, l.cert_not_after);
        warnings.report("ca", &self.files.ca, l.ca_not_after);
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

/// Modification stamp of certificate, key, CA (and CRL) files: inode (a rename),
/// modification time and length.
fn files_stamp(paths: &[PathBuf]) -> FilesStamp {
    use std::os::unix::fs::MetadataExt as _;
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.ino(), m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Re-reads the node's outgoing (peer) certificate, key and CA when they change (checked every
/// `interval`) or on SIGHUP, and hands each new client configuration to `reloaded` (mokvd's
/// server passes it on to the peer links). A set of files that does not parse, or whose key
/// does not match its certificate, is refused (logged, counted) and the previous identity
/// stays.
pub async fn watch_peer(
    files: TlsFiles,
    interval: Duration,
    reloaded: impl Fn(ClientTlsConfig) + Send + 'static,
) {
    let paths = vec![files.cert.clone(), files.key.clone(), files.ca.clone()];
    let mut trigger = ReloadTrigger::new(&paths);
    let mut warnings = ExpiryWarnings::default();
    let mut not_after = cert_not_after(&files);
    warnings.report("peer", &files.cert, not_after);
    loop {
        if !trigger.next_or_expiry_check(&paths, interval).await {
            warnings.report("peer", &files.cert, not_after);
            continue;
        }
        match client_config(&files) {
            Ok(c) => {
                reloaded(c);
                not_after = cert_not_after(&files);
                warnings.report("peer", &files.cert, not_after);
                tracing::info!(cert = %files.cert.display(), "peer certificates reloaded");
            }
            Err(e) => reload_refused("peer", &files.cert, &e),
        }
    }
}

fn reload_refused(role: &'static str, cert: &std::path::Path, e: &TlsError) {
    tracing::warn!(
        cert = %cert.display(),
        "{role} certificate reload refused, keeping the previous ones: {e}"
    );
    metrics::counter!("mokv_tls_reload_failures_total", "role" => role).increment(1);
}

/// How often the time left on the certificates is reported, and open connections re-verified
/// (an expired client certificate closes its connection within this).
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Below this time left, a certificate's expiry is logged as a warning (at most once an hour per
/// certificate, and at every reload).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);
const EXPIRY_WARNING_REPEAT: Duration = Duration::from_secs(3600);

/// Reports `mokv_tls_cert_expiry_seconds{role}` and rate-limits the expiry warnings.
#[derive(Default)]
struct ExpiryWarnings {
    last: BTreeMap<&'static str, std::time::Instant>,
}

impl ExpiryWarnings {
    fn report(&mut self, role: &'static str, path: &Path, not_after: Option<i64>) {
        let Some(not_after) = not_after else { return };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let left = not_after - now;
        metrics::gauge!("mokv_tls_cert_expiry_seconds", "role" => role).set(left as f64);
        if left >= EXPIRY_WARNING.as_secs() as i64 {
            self.last.remove(role);
            return;
        }
        let due = self.last.get(role).is_none_or(|t| t.elapsed() >= EXPIRY_WARNING_REPEAT);
        if due {
            self.last.insert(role, std::time::Instant::now());
            if left <= 0 {
                tracing::warn!(role, cert = %path.display(), "certificate has expired");
            } else {
                tracing::warn!(
                    role,
                    cert = %path.display(),
                    days_left = left / 86_400,
                    "certificate expires soon"
                );
            }
        }
    }
}

/// When to re-read a set of certificate files: they changed (polled every `interval`) or the
/// process got SIGHUP.
struct ReloadTrigger {
    hup: Option<tokio::signal::unix::Signal>,
    last: FilesStamp,
    next_expiry_check: tokio::time::Instant,
}

impl ReloadTrigger {
    fn new(files: &[PathBuf]) -> Self {
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; certificates reload on file change");
                None
            }
        };
        Self {
            hup,
            last: files_stamp(files),
            next_expiry_check: tokio::time::Instant::now() + EXPIRY_CHECK_INTERVAL,
        }
    }

    /// Waits until the files changed or SIGHUP (true), or [`EXPIRY_CHECK_INTERVAL`] passed
    /// since the last expiry check (false).
    async fn next_or_expiry_check(&mut self, files: &[PathBuf], interval: Duration) -> bool {
        loop {
            if tokio::time::Instant::now() >= self.next_expiry_check {
                self.next_expiry_check = tokio::time::Instant::now() + EXPIRY_CHECK_INTERVAL;
                return false;
            }
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
                return true;
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
/// reload is logged and the previous certificates stay in use. Every
/// [`EXPIRY_CHECK_INTERVAL`] the expiry metrics are refreshed and open connections re-verified.
pub async fn watch(tls: Arc<ReloadableServerTls>, interval: Duration) {
    let mut paths = vec![tls.files.cert.clone(), tls.files.key.clone(), tls.files.ca.clone()];
    paths.extend(tls.crl.clone());
    let mut trigger = ReloadTrigger::new(&paths);
    let mut warnings = ExpiryWarnings::default();
    loop {
        if !trigger.next_or_expiry_check(&paths, interval).await {
            tls.close_untrusted();
            tls.report_expiry(&mut warnings);
            continue;
        }
        match tls.reload() {
            Ok(()) => {
                warnings.last.clear();
                tls.report_expiry(&mut warnings);
                tracing::info!(cert = %tls.files.cert.display(), "server certificates reloaded")
            }
            Err(e) => reload_refused("server", &tls.files.cert, &e),
        }
    }
}

/// The open mTLS connections that presented a client certificate, with that certificate, so
/// that a reload can close those it no longer trusts.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, LiveConn>>,
}

#[derive(Debug)]
struct LiveConn {
    chain: Vec<CertificateDer<'static>>,
    /// A duplicate of the connection's socket: `shutdown(2)` on it ends the connection for
    /// every holder (the TLS stream then reads end-of-file and the server drops it).
    socket: std::net::TcpStream,
}

impl ConnRegistry {
    fn register(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
        socket: std::net::TcpStream,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, LiveConn { chain, socket });
        Registered { id, registry: self.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LiveConn>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shuts down (and forgets) the connections whose certificate chain `refused`.
    fn close_where(&self, refused: impl Fn(&[CertificateDer<'static>]) -> bool) -> usize {
        let mut conns = self.lock();
        let doomed: Vec<u64> =
            conns.iter().filter(|(_, c)| refused(&c.chain)).map(|(id, _)| *id).collect();
        for id in &doomed {
            if let Some(c) = conns.remove(id) {
                let _ = c.socket.shutdown(std::net::Shutdown::Both);
            }
        }
        doomed.len()
    }
}

/// Removes its connection from the registry when the connection is dropped.
#[derive(Debug)]
struct Registered {
    id: u64,
    registry: Arc<ConnRegistry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// Where [`incoming`] hands the accepted connections: those of callers with a certificate, and
/// those without one (served apart, with few streams and a maximum age).
#[derive(Debug)]
pub struct Incoming {
    /// Connections whose client presented a verified certificate.
    pub authenticated: tokio_stream::wrappers::ReceiverStream<Result<MtlsConn, std::io::Error>>,
    /// Connections without a client certificate.
    pub anonymous: tokio_stream::wrappers::ReceiverStream<Result<MtlsConn, std::io::Error>>,
}

/// How cert-less connections are limited (`anonymous-*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousLimits {
    /// Age at which the server sends GOAWAY.
    pub max_age: Duration,
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

/// After GOAWAY at the maximum age, the time left for in-flight rpcs before the socket of a
/// cert-less connection is shut down (a health `Watch` never ends on its own).
pub const ANONYMOUS_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// TLS connections accepted on `listener`, each with its client's identity parsed once
/// ([`MtlsConn`]): `gate` admits each TCP connection before its handshake and again with its
/// class after it (beyond a bound the connection is closed at once); handshakes run
/// concurrently (each bounded in time), failed ones are dropped. Connections that presented a
/// client certificate are registered in `conns` while open; those without one are shut down
/// [`ANONYMOUS_CLOSE_GRACE`] after `anonymous_max_age`. Ends when both receivers are dropped
/// (the server stopped).
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    conns: Arc<ConnRegistry>,
    gate: Arc<ConnGate>,
    anonymous_max_age: Duration,
) -> Incoming {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (anon_tx, anon_rx) = tokio::sync::mpsc::channel(64);
    let handshake_timeout = gate.limits().tls_handshake_timeout;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = async { tokio::join!(tx.closed(), anon_tx.closed()); } => return,
                a = listener.accept() => a,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Beyond a bound: closed at once (dropped), before any TLS work.
            let Ok(handshake) = gate.accept(from.ip()) else { continue };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let anon_tx = anon_tx.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                let dup = tcp.as_fd().try_clone_to_owned().map(std::net::TcpStream::from);
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let identity = MtlsConn::identity_of(&tls);
                        let Ok(permit) = handshake.finish(identity.as_deref()) else { return };
                        let chain =
                            tls.get_ref().1.peer_certificates().map(|c| {
                                c.iter().map(|d| d.clone().into_owned()).collect::<Vec<_>>()
                            });
                        let anonymous = permit.class() == ConnClass::Anonymous;
                        let (registered, age) = match dup {
                            Err(e) => {
                                // Without a handle to close it, a revocation (or the maximum
                                // age) could not end this connection: refuse it.
                                tracing::warn!(error = %e, "duplicating a socket; connection dropped");
                                return;
                            }
                            Ok(dup) if anonymous => (
                                None,
                                Some(AgeLimit::start(
                                    dup,
                                    anonymous_max_age + ANONYMOUS_CLOSE_GRACE,
                                )),
                            ),
                            Ok(dup) => (chain.map(|chain| conns.register(chain, dup)), None),
                        };
                        let conn = MtlsConn {
                            stream: tls,
                            identity: ConnIdentity(identity),
                            _registered: registered,
                            _permit: Some(permit),
                            _age: age,
                        };
                        let to = if anonymous { &anon_tx } else { &tx };
                        let _ = to.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        crate::metrics::tls_handshake_failed(Some(&e));
                        tracing::debug!(error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        crate::metrics::tls_handshake_failed(None);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            });
        }
    });
    Incoming {
        authenticated: tokio_stream::wrappers::ReceiverStream::new(rx),
        anonymous: tokio_stream::wrappers::ReceiverStream::new(anon_rx),
    }
}
