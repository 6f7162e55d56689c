//! Authorization (Casbin by certificate CN) on a real in-process node over mTLS: the default
//! policy (`root` everything, others nothing), an identity limited to a prefix, and policy /
//! model changes applied without a restart. Waits poll with deadlines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::{DeleteRequest, GetRequest, RangeRequest, SetRequest};
use mokv_shell::config::{NodeConfig, Settings};
use mokv_shell::RunningNode;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

mod common;
use common::{capture_logs, logged};
use tonic::{Code, Status};

const DEADLINE: Duration = Duration::from_secs(30);

/// Root, an application limited to `app/`.
const APP_POLICY: &str = "p, root, *, *\np, app, app/*, produce\np, app, app/*, consume\n";

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(dir: &Path) -> Certs {
        let ca = mokv_shell::certs::load_or_create_ca(dir).unwrap();
        mokv_shell::certs::write_node_cert(&ca, dir, "n1", &[]).unwrap();
        for c in ["root", "nobody", "app"] {
            mokv_shell::certs::write_client_cert(&ca, dir, c).unwrap();
        }
        Certs { dir: dir.to_path_buf() }
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
    fn kv(&self, addr: &str, who: &str) -> KvClient<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .identity(Identity::from_pem(
                self.read(&format!("{who}.pem")),
                self.read(&format!("{who}-key.pem")),
            ));
        KvClient::new(
            Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .timeout(Duration::from_secs(5))
                .connect_lazy(),
        )
    }
}

async fn start(certs: &Certs, data: &Path, acl: Option<(PathBuf, PathBuf)>) -> RunningNode {
    capture_logs();
    mokv_shell::install_crypto_provider();
    let (acl_model_file, acl_policy_file) = acl.unzip();
    let s = Settings {
        data_dir: Some(data.join("n1")),
        node_name: Some("n1".to_owned()),
        bind_addr: Some("127.0.0.1:0".to_owned()),
        rpc_port: Some(0),
        bootstrap: Some(true),
        server_tls_cert_file: Some(certs.dir.join("n1.pem")),
        server_tls_key_file: Some(certs.dir.join("n1-key.pem")),
        server_tls_ca_file: Some(certs.dir.join("ca.pem")),
        acl_model_file,
        acl_policy_file,
        tick_ms: Some(20),
        log_level: Some("warn".to_owned()),
        cluster_key: Some("authz-tests-cluster-key".to_owned()),
        ..Settings::default()
    };
    mokv_shell::start(&NodeConfig::resolve(s).unwrap()).await.unwrap()
}

/// Retries `f` until it returns `Some`, or panics at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn set(c: &mut KvClient<Channel>, key: &str, value: &str) -> Result<u64, Status> {
    let r = c
        .set(SetRequest {
            key: key.into(),
            value: value.into(),
            session: None,
            condition: None,
            lease: 0,
        })
        .await?
        .into_inner();
    Ok(r.revision)
}

async fn get(c: &mut KvClient<Channel>, key: &str) -> Result<Vec<u8>, Status> {
    Ok(c.get(GetRequest { key: key.into(), consistency: 0 }).await?.into_inner().value)
}

async fn delete(c: &mut KvClient<Channel>, key: &str) -> Result<bool, Status> {
    Ok(c.delete(DeleteRequest { key: key.into(), session: None, condition: None })
        .await?
        .into_inner()
        .ok)
}

/// Keys of one `Range` page over `prefix`.
async fn range(c: &mut KvClient<Channel>, prefix: &str) -> Result<Vec<String>, Status> {
    let r = c
        .range(RangeRequest { prefix: prefix.into(), limit: 100, ..Default::default() })
        .await?
        .into_inner();
    Ok(r.kvs.into_iter().map(|kv| kv.key).collect())
}

/// Every key `List` streams.
async fn list(c: &mut KvClient<Channel>) -> Result<Vec<String>, Status> {
    let mut stream = c.list(()).await?.into_inner();
    let mut keys = Vec::new();
    while let Some(item) = stream.message().await? {
        keys.push(item.key);
    }
    Ok(keys)
}

async fn servers(c: &mut KvClient<Channel>) -> Result<usize, Status> {
    Ok(c.get_servers(()).await?.into_inner().servers.len())
}

/// PERMISSION_DENIED, without the key in the message.
#[track_caller]
fn denied<T: std::fmt::Debug>(r: Result<T, Status>, key: &str) {
    let e = r.expect_err("allowed, expected PERMISSION_DENIED");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(key.is_empty() || !e.message().contains(key), "message echoes the key: {e:?}");
}

/// Writes `text` to `path` atomically (temporary file + rename), as operators should.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn first_write(root: &KvClient<Channel>) {
    eventually("the first write", || {
        let mut c = root.clone();
        async move { set(&mut c, "ready", "1").await.ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_root_may_do_everything_nobody_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let node = start(&certs, tmp.path(), None).await;
    let addr = node.rpc_addr.clone();
    let mut root = certs.kv(&addr, "root");
    first_write(&root).await;

    // root: everything.
    set(&mut root, "secret/a", "1").await.unwrap();
    set(&mut root, "secret/b", "2").await.unwrap();
    assert_eq!(get(&mut root, "secret/a").await.unwrap(), b"1");
    assert_eq!(range(&mut root, "secret/").await.unwrap(), ["secret/a", "secret/b"]);
    assert_eq!(list(&mut root).await.unwrap(), ["ready", "secret/a", "secret/b"]);
    assert_eq!(servers(&mut root).await.unwrap(), 1);
    assert!(delete(&mut root, "secret/b").await.unwrap());

    // nobody (and an identity the policy does not know): nothing.
    for who in ["nobody", "app"] {
        let mut c = certs.kv(&addr, who);
        denied(set(&mut c, "secret/a", "x").await, "secret/a");
        denied(get(&mut c, "secret/a").await, "secret/a");
        denied(get(&mut c, "missing-key").await, "missing-key");
        denied(delete(&mut c, "secret/a").await, "secret/a");
        denied(range(&mut c, "secret/").await, "secret/");
        denied(range(&mut c, "").await, "");
        denied(list(&mut c).await, "");
        denied(servers(&mut c).await, "");
    }

    // Nothing changed, and the node keeps serving.
    assert_eq!(get(&mut root, "secret/a").await.unwrap(), b"1");
    set(&mut root, "after", "denials").await.unwrap();
    assert_eq!(get(&mut root, "after").await.unwrap(), b"denials");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_identity_and_policy_reload_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let model = tmp.path().join("model.conf");
    let policy = tmp.path().join("policy.csv");
    std::fs::write(&model, mokv_shell::DEFAULT_ACL_MODEL).unwrap();
    std::fs::write(&policy, APP_POLICY).unwrap();
    let node = start(&certs, tmp.path(), Some((model.clone(), policy.clone()))).await;
    let addr = node.rpc_addr.clone();
    let mut root = certs.kv(&addr, "root");
    let mut app = certs.kv(&addr, "app");
    let mut nobody = certs.kv(&addr, "nobody");
    first_write(&root).await;
    set(&mut root, "other", "o").await.unwrap();
    set(&mut root, "pub/x", "p").await.unwrap();
    set(&mut root, "pub/secret/1", "s").await.unwrap();

    // app: its prefix only.
    set(&mut app, "app/x", "1").await.unwrap();
    set(&mut app, "app/y", "2").await.unwrap();
    assert_eq!(get(&mut app, "app/x").await.unwrap(), b"1");
    assert_eq!(range(&mut app, "app/").await.unwrap(), ["app/x", "app/y"]);
    assert_eq!(range(&mut app, "app/y").await.unwrap(), ["app/y"]);
    assert!(delete(&mut app, "app/y").await.unwrap());
    denied(set(&mut app, "other", "x").await, "other");
    denied(get(&mut app, "other").await, "other");
    denied(delete(&mut app, "other").await, "other");
    denied(set(&mut app, "app", "x").await, "");
    denied(range(&mut app, "ap").await, "");
    denied(range(&mut app, "").await, "");
    denied(list(&mut app).await, "");
    // Any identity holding a permission may discover the members (GetServers: cluster,
    // discover); nobody, without rules, may not.
    assert_eq!(servers(&mut app).await.unwrap(), 1);
    assert_eq!(get(&mut root, "other").await.unwrap(), b"o");
    denied(get(&mut nobody, "pub/x").await, "pub/x");
    denied(servers(&mut nobody).await, "");

    // A policy change applies without a restart: nobody may now consume pub/*.
    write_atomically(&policy, &format!("{APP_POLICY}p, nobody, pub/*, consume\n"));
    eventually("the new policy", || {
        let mut c = nobody.clone();
        async move { get(&mut c, "pub/x").await.ok() }
    })
    .await;
    assert_eq!(range(&mut nobody, "pub/").await.unwrap(), ["pub/secret/1", "pub/x"]);
    denied(set(&mut nobody, "pub/x", "y").await, "pub/x");
    denied(get(&mut nobody, "other").await, "other");
    denied(list(&mut nobody).await, "");
    // Holding a permission now, nobody may discover the members too.
    assert_eq!(servers(&mut nobody).await.unwrap(), 1);

    // A broken policy is rejected: the previous one stays in force.
    let rejected = "authorization model/policy rejected";
    let before = logged(&[rejected]);
    write_atomically(&policy, "p, nobody\n");
    eventually("the broken policy rejected", || async move {
        (logged(&[rejected]) > before).then_some(())
    })
    .await;
    assert_eq!(get(&mut nobody, "pub/x").await.unwrap(), b"p");
    assert_eq!(get(&mut app, "app/x").await.unwrap(), b"1");
    denied(get(&mut nobody, "other").await, "other");

    // A model change applies too: deny rules, and Range leaves out what may not be consumed.
    let deny_model = mokv_shell::DEFAULT_ACL_MODEL
        .replace("p = sub, obj, act", "p = sub, obj, act, eft")
        .replace(
            "e = some(where (p.eft == allow))",
            "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))",
        );
    assert_ne!(deny_model, mokv_shell::DEFAULT_ACL_MODEL);
    write_atomically(
        &policy,
        "p, root, *, *, allow\n\
         p, nobody, pub/*, consume, allow\n\
         p, nobody, pub/secret/*, consume, deny\n",
    );
    write_atomically(&model, &deny_model);
    eventually("the deny rule", || {
        let mut c = nobody.clone();
        async move {
            let e = get(&mut c, "pub/secret/1").await.err()?;
            (e.code() == Code::PermissionDenied).then_some(())
        }
    })
    .await;
    assert_eq!(get(&mut nobody, "pub/x").await.unwrap(), b"p");
    assert_eq!(range(&mut nobody, "pub/").await.unwrap(), ["pub/x"]);
    // app lost its rules with this policy.
    denied(get(&mut app, "app/x").await, "app/x");

    // root still works for everything, and the node kept serving.
    assert_eq!(get(&mut root, "app/x").await.unwrap(), b"1");
    set(&mut root, "app/z", "3").await.unwrap();
    assert_eq!(range(&mut root, "app/").await.unwrap(), ["app/x", "app/z"]);
    assert_eq!(list(&mut root).await.unwrap().len(), 6);
    assert_eq!(servers(&mut root).await.unwrap(), 1);
    assert!(delete(&mut root, "other").await.unwrap());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_file_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let policy = tmp.path().join("policy.csv");
    std::fs::write(&policy, "p, root\n").unwrap();
    mokv_shell::install_crypto_provider();
    let s = Settings {
        data_dir: Some(tmp.path().join("n1")),
        node_name: Some("n1".to_owned()),
        bind_addr: Some("127.0.0.1:0".to_owned()),
        rpc_port: Some(0),
        bootstrap: Some(true),
        server_tls_cert_file: Some(certs.dir.join("n1.pem")),
        server_tls_key_file: Some(certs.dir.join("n1-key.pem")),
        server_tls_ca_file: Some(certs.dir.join("ca.pem")),
        acl_policy_file: Some(policy),
        cluster_key: Some("authz-tests-cluster-key".to_owned()),
        ..Settings::default()
    };
    let e = mokv_shell::start(&NodeConfig::resolve(s).unwrap()).await.unwrap_err();
    assert!(matches!(e, mokv_shell::StartError::Authz(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let node = start(&certs, tmp.path(), None).await;
    let addr = node.rpc_addr.clone();
    let root = certs.kv(&addr, "root");
    first_write(&root).await;

    // Same CA, CN root (allowed everything by the policy), but outside the validity period.
    let ca = mokv_shell::certs::load_or_create_ca(&certs.dir).unwrap();
    for (name, from, to) in
        [("expired", (2020, 1, 1), (2021, 1, 1)), ("future", (2090, 1, 1), (2091, 1, 1))]
    {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(certs.dir.join("ca.pem"), dir.join("ca.pem")).unwrap();
        mokv_shell::certs::write_client_cert_with_validity(&ca, &dir, "root", from, to).unwrap();
        let mut c = Certs { dir }.kv(&addr, "root");
        let e = set(&mut c, "k", "v").await.expect_err("a certificate outside its validity got in");
        assert_ne!(e.code(), Code::Ok, "{name}");
        let e = get(&mut c, "ready").await.expect_err("a certificate outside its validity got in");
        assert_ne!(e.code(), Code::PermissionDenied, "{name}: refused only after the handshake");
    }

    // Nothing was written, and the valid root certificate still works.
    let mut root = root;
    assert_eq!(get(&mut root, "k").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(get(&mut root, "ready").await.unwrap(), b"1");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_invalid_argument_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let node = start(&certs, tmp.path(), None).await;
    let mut root = certs.kv(&node.rpc_addr, "root");
    first_write(&root).await;

    // Over max-value-bytes: refused by the core.
    let e = set(&mut root, "big", &"v".repeat((1 << 20) + 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Far over it (beyond the gRPC decode limit): refused by the decoder, same code.
    let e = set(&mut root, "huge", &"h".repeat(3 << 20)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!e.message().contains("hhh"), "the error echoes the value: {e:?}");

    assert_eq!(get(&mut root, "huge").await.unwrap_err().code(), Code::NotFound);
    set(&mut root, "after", "ok").await.unwrap();
    assert_eq!(get(&mut root, "after").await.unwrap(), b"ok");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_from_disk_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let node = start(&certs, tmp.path(), None).await;
    let addr = node.rpc_addr.clone();
    first_write(&certs.kv(&addr, "root")).await;

    // Rotate to a new CA: new server certificate and key, new CA for client certificates.
    let rotated = Certs::new(&tmp.path().join("rotated"));
    // A broken certificate file first: refused, the old certificates stay.
    let cert = certs.dir.join("n1.pem").display().to_string();
    let failed = "certificate reload refused";
    write_atomically(&certs.dir.join("n1.pem"), "not a certificate");
    eventually("the broken certificate refused", || {
        let cert = cert.clone();
        async move { (logged(&[failed, &cert]) > 0).then_some(()) }
    })
    .await;
    assert_eq!(get(&mut certs.kv(&addr, "root"), "ready").await.unwrap(), b"1");
    for f in ["n1-key.pem", "ca.pem", "n1.pem"] {
        let text = String::from_utf8(rotated.read(f)).unwrap();
        write_atomically(&certs.dir.join(f), &text);
    }
    // Clients of the new CA get in (new connections), clients of the old one no longer.
    let v = eventually("the rotated certificates", || {
        let mut c = rotated.kv(&addr, "root");
        async move { get(&mut c, "ready").await.ok() }
    })
    .await;
    assert_eq!(v, b"1");
    // certs.dir now trusts the new CA but still holds the old CA's root client certificate.
    let e = get(&mut certs.kv(&addr, "root"), "ready").await.unwrap_err();
    assert_ne!(e.code(), Code::PermissionDenied, "{e:?}");
    node.shutdown().await.unwrap();
}
