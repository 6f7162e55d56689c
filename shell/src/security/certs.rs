//! `mokvd certs`: a CA, node certificates and client certificates, with rcgen (what the
//! original's `make gencert` did with cfssl).
//!
//! Files in `--out`: `ca.pem` / `ca-key.pem`, and `<name>.pem` / `<name>-key.pem` per node or
//! client. An existing CA in `--out` is reused, so more certificates can be added later.
//! Private keys are written with mode 0600 and never logged.
//!
//! - node certificates: CN = node name, SANs = the node name, `localhost`, 127.0.0.1, ::1 and
//!   every `--host`; extended key usage server auth + client auth (one certificate serves the
//!   node's port and authenticates it to its peers; server auth marks it as a node identity).
//! - client certificates: CN = the given name (`root`, `nobody`, ...), client auth only.
//!
//! Lifetimes are bounded: node and client certificates are valid for [`DEFAULT_CERT_DAYS`]
//! (`--days`), a new CA for [`DEFAULT_CA_DAYS`] (`--ca-days`), both from the start of the
//! current UTC day. `--revoke NAME` adds the serial of `NAME.pem` to `crl.pem` (signed by the
//! CA, every earlier revocation kept), which nodes load through `server-tls-crl-file`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// A node certificate with this name as CN (repeatable).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// Extra DNS name or IP for every node certificate (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A client certificate with this CN (repeatable), e.g. root, nobody.
    #[arg(long = "client")]
    pub clients: Vec<String>,
    /// Validity of the node and client certificates made by this run, in days.
    #[arg(long, default_value_t = DEFAULT_CERT_DAYS, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Validity of a CA made by this run (an existing CA is reused as it is), in days.
    #[arg(long, default_value_t = DEFAULT_CA_DAYS, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub ca_days: u32,
    /// Revoke the certificate `<NAME>.pem` in `--out` (repeatable): its serial is added to
    /// `crl.pem`, a CRL signed by the CA that keeps every earlier revocation.
    #[arg(long = "revoke")]
    pub revoke: Vec<String>,
}

/// Default validity of node and client certificates: one year.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Default validity of a new CA: ten years.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// How long a CRL made by `--revoke` says it is current (its `nextUpdate`).
const CRL_DAYS: u32 = 365;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("{path}: not a PEM certificate or CRL")]
    Parse { path: PathBuf },
}

fn rc(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertsError {
    let what = what.into();
    move |source| CertsError::Rcgen { what, source }
}

/// A CA able to sign certificates.
#[allow(missing_debug_implementations)] // holds a private key
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

/// Loads `ca.pem`/`ca-key.pem` from `dir`, or creates them (valid [`DEFAULT_CA_DAYS`]).
pub fn load_or_create_ca(dir: &Path) -> Result<Ca, CertsError> {
    load_or_create_ca_for(dir, DEFAULT_CA_DAYS)
}

/// Loads `ca.pem`/`ca-key.pem` from `dir`, or creates them valid for `days` from today.
pub fn load_or_create_ca_for(dir: &Path, days: u32) -> Result<Ca, CertsError> {
    create_dir(dir)?;
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca-key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(rc("loading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(rc("loading the CA"))?;
        return Ok(Ca { issuer });
    }
    let mut params = CertificateParams::new(Vec::new()).map_err(rc("CA parameters"))?;
    params.distinguished_name.push(DnType::CommonName, "mokv CA");
    params.distinguished_name.push(DnType::OrganizationName, "mokv");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    set_validity(&mut params, days);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(rc("generating the CA key"))?;
    let cert = params.self_signed(&key).map_err(rc("signing the CA"))?;
    write_key(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok(Ca { issuer: Issuer::new(params, key) })
}

fn check_name(name: &str) -> Result<(), CertsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok && name != "ca" {
        Ok(())
    } else {
        Err(CertsError::BadName(name.to_owned()))
    }
}

/// Writes `<name>.pem` and `<name>-key.pem`: a node certificate (server + client auth),
/// valid [`DEFAULT_CERT_DAYS`].
pub fn write_node_cert(
    ca: &Ca,
    dir: &Path,
    name: &str,
    hosts: &[String],
) -> Result<(PathBuf, PathBuf), CertsError> {
    write_node_cert_for(ca, dir, name, hosts, DEFAULT_CERT_DAYS)
}

/// [`write_node_cert`] valid for `days` from today.
pub fn write_node_cert_for(
    ca: &Ca,
    dir: &Path,
    name: &str,
    hosts: &[String],
    days: u32,
) -> Result<(PathBuf, PathBuf), CertsError> {
    check_name(name)?;
    let mut sans: Vec<String> =
        vec![name.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    let mut params = CertificateParams::new(sans).map_err(rc(format!("node {name}: names")))?;
    set_validity(&mut params, days);
    let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    issue(ca, dir, name, params, usages)
}

/// Writes `<cn>.pem` and `<cn>-key.pem`: a client certificate (client auth only), valid
/// [`DEFAULT_CERT_DAYS`].
pub fn write_client_cert(ca: &Ca, dir: &Path, cn: &str) -> Result<(PathBuf, PathBuf), CertsError> {
    write_client_cert_for(ca, dir, cn, DEFAULT_CERT_DAYS)
}

/// [`write_client_cert`] valid for `days` from today.
pub fn write_client_cert_for(
    ca: &Ca,
    dir: &Path,
    cn: &str,
    days: u32,
) -> Result<(PathBuf, PathBuf), CertsError> {
    check_name(cn)?;
    let mut params = CertificateParams::new(Vec::new()).map_err(rc(format!("client {cn}")))?;
    set_validity(&mut params, days);
    issue(ca, dir, cn, params, vec![ExtendedKeyUsagePurpose::ClientAuth])
}

/// Like [`write_client_cert`], valid only from `not_before` to `not_after` (UTC dates as
/// `(year, month, day)`). For tests of expired and not-yet-valid certificates.
pub fn write_client_cert_with_validity(
    ca: &Ca,
    dir: &Path,
    cn: &str,
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> Result<(PathBuf, PathBuf), CertsError> {
    check_name(cn)?;
    let mut params = CertificateParams::new(Vec::new()).map_err(rc(format!("client {cn}")))?;
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    issue(ca, dir, cn, params, vec![ExtendedKeyUsagePurpose::ClientAuth])
}

fn issue(
    ca: &Ca,
    dir: &Path,
    name: &str,
    mut params: CertificateParams,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(PathBuf, PathBuf), CertsError> {
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "mokv");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(rc(format!("{name}: key")))?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(rc(format!("{name}: signing")))?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    write_key(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok((cert_path, key_path))
}

/// Runs `mokvd certs`.
pub fn run(args: &CertsArgs) -> Result<(), CertsError> {
    let ca = load_or_create_ca_for(&args.out, args.ca_days)?;
    println!("CA: {}", args.out.join("ca.pem").display());
    println!("cluster key: {}", ensure_cluster_key(&args.out)?.display());
    for n in &args.nodes {
        let (c, _) = write_node_cert_for(&ca, &args.out, n, &args.hosts, args.days)?;
        println!("node {n}: {}", c.display());
    }
    for cn in &args.clients {
        let (c, _) = write_client_cert_for(&ca, &args.out, cn, args.days)?;
        println!("client {cn}: {}", c.display());
    }
    if !args.revoke.is_empty() {
        let crl = revoke(&ca, &args.out, &args.revoke)?;
        println!("CRL: {}", crl.display());
    }
    Ok(())
}

/// Adds the serials of `<name>.pem` (for each of `names`) to `dir/crl.pem`, keeping the
/// serials it already lists, and signs it anew with the CA (CRL number one higher). Returns
/// the CRL's path.
pub fn revoke(ca: &Ca, dir: &Path, names: &[String]) -> Result<PathBuf, CertsError> {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
    let path = dir.join("crl.pem");
    let mut serials: Vec<Vec<u8>> = Vec::new();
    let mut number: u64 = 1;
    if path.exists() {
        let pem = read(&path)?;
        let bad = || CertsError::Parse { path: path.clone() };
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| bad())?;
        let (_, crl) = x509_parser::parse_x509_crl(&parsed.contents).map_err(|_| bad())?;
        for r in crl.iter_revoked_certificates() {
            serials.push(r.raw_serial().to_vec());
        }
        number = crl.crl_number().and_then(|n| u64::try_from(n).ok()).unwrap_or(0) + 1;
    }
    for name in names {
        check_name(name)?;
        let cert_path = dir.join(format!("{name}.pem"));
        let pem = read(&cert_path)?;
        let bad = || CertsError::Parse { path: cert_path.clone() };
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| bad())?;
        let cert = parsed.parse_x509().map_err(|_| bad())?;
        let serial = cert.raw_serial().to_vec();
        if !serials.contains(&serial) {
            serials.push(serial);
        }
    }
    let today = today_utc();
    let revoked_at = rcgen::date_time_ymd(today.0, today.1, today.2);
    let next = civil_from_days(days_since_epoch() + i64::from(CRL_DAYS));
    let params = CertificateRevocationListParams {
        this_update: revoked_at,
        next_update: rcgen::date_time_ymd(next.0, next.1, next.2),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: revoked_at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.issuer).map_err(rc("signing the CRL"))?;
    write_public(&path, &crl.pem().map_err(rc("encoding the CRL"))?)?;
    Ok(path)
}

/// Valid from the start of the current UTC day for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) {
    let today = days_since_epoch();
    let (y, m, d) = civil_from_days(today);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

fn days_since_epoch() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

fn today_utc() -> (i32, u8, u8) {
    civil_from_days(days_since_epoch())
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// Makes sure `dir/cluster.key` holds a random gossip key (32 random bytes, hex; mode 0600)
/// and returns its path. An existing key is kept: every node of a cluster needs the same one.
pub fn ensure_cluster_key(dir: &Path) -> Result<PathBuf, CertsError> {
    let path = dir.join("cluster.key");
    if path.exists() {
        return Ok(path);
    }
    create_dir(dir)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| CertsError::Io {
        op: "drawing randomness for",
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&path, format!("{hex}\n").as_bytes(), 0o600)?;
    Ok(path)
}

/// Paths of the `--dev` certificates.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes sure `dir` holds a CA, a `dev` node certificate and a `root` client certificate.
pub fn ensure_dev_certs(dir: &Path, node_name: &str) -> Result<DevCerts, CertsError> {
    let ca = load_or_create_ca(dir)?;
    ensure_cluster_key(dir)?;
    if !(dir.join(format!("{node_name}.pem")).exists()
        && dir.join(format!("{node_name}-key.pem")).exists())
    {
        write_node_cert(&ca, dir, node_name, &[])?;
    }
    if !(dir.join("root.pem").exists() && dir.join("root-key.pem").exists()) {
        write_client_cert(&ca, dir, "root")?;
    }
    Ok(DevCerts {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("root.pem"),
        client_key: dir.join("root-key.pem"),
    })
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        op: "creating",
        path: dir.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        op: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn write_key(path: &Path, pem: &str) -> Result<(), CertsError> {
    write_atomic(path, pem.as_bytes(), 0o600)
}

fn write_public(path: &Path, pem: &str) -> Result<(), CertsError> {
    write_atomic(path, pem.as_bytes(), 0o644)
}

/// Writes through a temporary file created with `mode` from the start (a key is never readable
/// by others, not even for a moment), then renames it into place.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| CertsError::Io { op, path, source }
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating"))?;
    f.write_all(bytes).map_err(io("writing"))?;
    f.sync_all().map_err(io("syncing"))?;
    std::fs::rename(&tmp, path).map_err(io("renaming"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generates_reusable_ca_and_certs_with_identities() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path()).unwrap();
        let (node, node_key) =
            write_node_cert(&ca, dir.path(), "n1", &["10.0.0.1".into(), "db.local".into()])
                .unwrap();
        let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
        // A second run reuses the CA.
        let ca2 = load_or_create_ca(dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_pem);
        let (client, client_key) = write_client_cert(&ca2, dir.path(), "root").unwrap();
        for k in [&node_key, &client_key, &dir.path().join("ca-key.pem")] {
            let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", k.display());
        }
        let der = |p: &Path| {
            let pem = std::fs::read_to_string(p).unwrap();
            let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
            parsed.contents
        };
        let id = crate::security::identity::identity_from_der(&der(&node)).unwrap();
        assert_eq!((id.name.as_str(), id.is_node), ("n1", true));
        let id = crate::security::identity::identity_from_der(&der(&client)).unwrap();
        assert_eq!((id.name.as_str(), id.is_node), ("root", false));
    }

    #[test]
    fn lifetimes_are_bounded_and_revocation_lists_serials() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path()).unwrap();
        let (node, _) = write_node_cert(&ca, dir.path(), "n1", &[]).unwrap();
        let (alice, _) = write_client_cert_for(&ca, dir.path(), "alice", 30).unwrap();
        let not_after = |p: &Path| {
            let pem = std::fs::read_to_string(p).unwrap();
            let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
            let c = parsed.parse_x509().unwrap();
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400
        };
        assert_eq!(not_after(&node), i64::from(DEFAULT_CERT_DAYS));
        assert_eq!(not_after(&alice), 30);
        assert_eq!(not_after(&dir.path().join("ca.pem")), i64::from(DEFAULT_CA_DAYS));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));

        let crl = revoke(&ca, dir.path(), &["alice".into()]).unwrap();
        revoke(&ca, dir.path(), &["n1".into(), "alice".into()]).unwrap();
        let pem = std::fs::read_to_string(&crl).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, list) = x509_parser::parse_x509_crl(&parsed.contents).unwrap();
        assert_eq!(list.iter_revoked_certificates().count(), 2, "earlier revocations kept");
        assert!(revoke(&ca, dir.path(), &["nobody".into()]).is_err(), "no such certificate");
    }

    #[test]
    fn refuses_path_like_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path()).unwrap();
        assert!(write_client_cert(&ca, dir.path(), "../evil").is_err());
        assert!(write_client_cert(&ca, dir.path(), "ca").is_err());
    }
}
