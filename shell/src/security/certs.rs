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
}

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

/// Loads `ca.pem`/`ca-key.pem` from `dir`, or creates them.
pub fn load_or_create_ca(dir: &Path) -> Result<Ca, CertsError> {
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

/// Writes `<name>.pem` and `<name>-key.pem`: a node certificate (server + client auth).
pub fn write_node_cert(
    ca: &Ca,
    dir: &Path,
    name: &str,
    hosts: &[String],
) -> Result<(PathBuf, PathBuf), CertsError> {
    check_name(name)?;
    let mut sans: Vec<String> =
        vec![name.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    let params = CertificateParams::new(sans).map_err(rc(format!("node {name}: names")))?;
    let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    issue(ca, dir, name, params, usages)
}

/// Writes `<cn>.pem` and `<cn>-key.pem`: a client certificate (client auth only).
pub fn write_client_cert(ca: &Ca, dir: &Path, cn: &str) -> Result<(PathBuf, PathBuf), CertsError> {
    check_name(cn)?;
    let params = CertificateParams::new(Vec::new()).map_err(rc(format!("client {cn}")))?;
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
    let ca = load_or_create_ca(&args.out)?;
    println!("CA: {}", args.out.join("ca.pem").display());
    println!("cluster key: {}", ensure_cluster_key(&args.out)?.display());
    for n in &args.nodes {
        let (c, _) = write_node_cert(&ca, &args.out, n, &args.hosts)?;
        println!("node {n}: {}", c.display());
    }
    for cn in &args.clients {
        let (c, _) = write_client_cert(&ca, &args.out, cn)?;
        println!("client {cn}: {}", c.display());
    }
    Ok(())
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
    fn refuses_path_like_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path()).unwrap();
        assert!(write_client_cert(&ca, dir.path(), "../evil").is_err());
        assert!(write_client_cert(&ca, dir.path(), "ca").is_err());
    }
}
