//! Authorization: the single seam every request passes through (Casbin).
//!
//! ## Identities
//! The subject is the CN of the caller's verified client certificate ([`crate::security::identity::Identity`]):
//! `root`, `nobody`, an application name, or a node name. No certificate → UNAUTHENTICATED
//! (normally the TLS handshake already refuses such a client).
//!
//! ## Requests checked (subject, object, action)
//! | rpc | object | action |
//! |---|---|---|
//! | `Set`, `Delete` | the key | `produce` |
//! | `Set`, `Delete` with a `condition` | the key | `produce` and `consume` |
//! | `Get` | the key | `consume` |
//! | `Range` | the prefix followed by `*` (`app/` → `app/*`; empty prefix → `*`) | `consume` |
//! | `List` | `*` (every key) | `consume` |
//! | `Txn` | each compared key, each key read (a range: its prefix followed by `*`) | `consume` |
//! | `Txn` | each key written (`set`, `delete`), in either branch | `produce` |
//! | `Watch` of a key | the key | `consume` |
//! | `Watch` of a prefix | the prefix followed by `*`, as for `Range` | `consume` |
//! | `Lease` service `Grant`, `Revoke`, `KeepAlive` | `lease` | `produce` |
//! | `Lease` service `TimeToLive` | `lease` | `consume` |
//! | `Set` with a `lease` | the key | `produce` (as any `Set`) |
//! | `GetServers` | [`CLUSTER_OBJECT`] (`cluster`) | `discover` |
//! | `RegisterSession` | none: any authenticated caller (its sessions count against its own quota) | — |
//! | `Cluster` service (`MemberStatus`, `MemberList`, `MemberRemove`, `TransferLeader`) | [`CLUSTER_OBJECT`] (`cluster`) | `admin` |
//!
//! A denial is PERMISSION_DENIED with the fixed message "permission denied" (no key text).
//!
//! `Range` and `List` are refused unless the caller may consume the whole requested pattern:
//! with the default `keyMatch` model, `p, app, app/*, consume` allows `Range` of the prefixes
//! `app/`, `app/x`, ... but not of `ap` or `""`, and not `List` (use `Range` with a prefix). In
//! addition, every returned key is checked with `(cn, key, consume)` and the keys the caller
//! may not consume are left out (silently): this only matters for models whose rules are not
//! plain prefixes (deny rules, regexes). A filtered `Range` page may therefore hold fewer items
//! than `limit` (even none) while `next_page_token` is set; keep paging. `List` and each `Range`
//! page use the policy in force when the rpc started.
//!
//! `GetServers` (cluster membership and addresses, what clients discover the members with)
//! needs the `discover` action on the object `cluster`. The default model allows it to every
//! identity that holds any permission (has at least one rule of its own), so an application
//! limited to its prefix can still find the nodes; an identity without rules, such as
//! `nobody`, is denied. A custom model decides for itself (keep the matcher's `discover`
//! clause to keep this behaviour). The `admin` action is reserved for cluster operations and
//! never used for keys.
//!
//! The peer service (Raft, snapshots) is not subject to the Casbin policy: it accepts only
//! node identities, i.e. certificates valid for server authentication as `mokvd certs` issues
//! them to nodes ([`authorize_peer`]); a client certificate is PERMISSION_DENIED there,
//! whatever the policy grants. Raft batches from a known member must come with that member's
//! certificate (CN = its node name). Gossip (UDP) is authenticated by the cluster key.
//!
//! ## Model and policy
//! `acl-model-file` and `acl-policy-file` name the Casbin model and policy (CSV). Each one not
//! configured falls back to the default compiled in from the repository's `certs/model.conf` /
//! `certs/policy.csv` ([`DEFAULT_MODEL`], [`DEFAULT_POLICY`]): request `r = sub, obj, act`,
//! allow-only effect, matcher `r.sub == p.sub && ((keyMatch(r.obj, p.obj) && (r.act == p.act ||
//! p.act == "*")) || (r.obj == "cluster" && r.act == "discover"))`, and the single rule
//! `p, root, *, *` — `root` may do everything, any other identity nothing. This is what `--dev` uses, so its `root` certificate keeps working.
//!
//! Example policy: an application limited to its prefix, a read-only identity, an operator:
//! ```text
//! p, root, *, *
//! p, app, app/*, produce
//! p, app, app/*, consume
//! p, reader, pub/*, consume
//! p, ops, cluster, admin
//! ```
//!
//! `keyMatch` is replaced by a byte-wise equivalent (same semantics: `*` in the pattern matches
//! any rest of the key), because Casbin's own slices strings and would panic on a key whose
//! multi-byte character straddles the pattern's `*` position.
//!
//! ## Reloading
//! When at least one of the files is configured, a task ([`watch`]) re-reads the configured
//! files every [`RELOAD_INTERVAL`]; when their content changed it builds a new enforcer and
//! swaps it in (requests in flight finish with the old one). A file that cannot be read, or a
//! model/policy that does not load or fails a probe enforcement, is logged as an error and the
//! previous policy stays in force. Write the files atomically (write a temporary file, then
//! rename it over the old one) so that a half-written file is never picked up. At startup a bad
//! file is a startup error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use casbin::function_map::{dynamic_to_str, OperatorFunction};
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use tonic::Status;

use crate::net::status;
use crate::security::identity::Identity;

/// The default model (the repository's `certs/model.conf`).
pub const DEFAULT_MODEL: &str = include_str!("../../../certs/model.conf");
/// The default policy (the repository's `certs/policy.csv`): `root` may do everything.
pub const DEFAULT_POLICY: &str = include_str!("../../../certs/policy.csv");
/// The object of cluster operations (`GetServers`: [`Action::Discover`]).
pub const CLUSTER_OBJECT: &str = "cluster";
/// How often the reload task (`watch`) looks at the model and policy files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What a client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A write (Set, Delete).
    Produce,
    /// A read (Get, List, Range).
    Consume,
    /// Reserved for cluster operations: policies may grant it, no rpc asks for it yet.
    #[allow(dead_code)]
    Admin,
    /// Learning the members and their addresses (GetServers).
    Discover,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
            Action::Discover => "discover",
        }
    }
}

/// The object checked for a `Range` over `prefix` (and `List`: the empty prefix): `prefix*`.
pub fn range_object(prefix: &str) -> String {
    format!("{prefix}*")
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("loading the Casbin model/policy: {0}")]
    Casbin(String),
}

/// One loaded model + policy; cheap to clone, immutable.
#[derive(Clone)]
pub struct Policy {
    enforcer: Arc<Enforcer>,
    /// The model and policy texts it was built from.
    sources: Arc<(String, String)>,
    /// The compiled-in default model and policy: `root` may do everything, nobody else
    /// anything. Decided without running Casbin's matcher (per request it costs more than the
    /// rest of a read).
    root_only: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policy")
    }
}

impl Policy {
    /// Builds an enforcer from the text of a model and a policy, and probes it once so that
    /// errors that Casbin reports only when enforcing (a matcher that does not compile, a rule
    /// with the wrong number of fields) are found now.
    pub async fn from_texts(model: &str, policy: &str) -> Result<Policy, AuthzError> {
        let casbin = |e: casbin::Error| AuthzError::Casbin(e.to_string());
        let m = DefaultModel::from_str(model).await.map_err(casbin)?;
        let mut e = Enforcer::new(m, StringAdapter::new(policy)).await.map_err(casbin)?;
        e.add_function("keyMatch", OperatorFunction::Arg2(key_match_dynamic));
        e.enforce(("\u{0}mokv-probe", "\u{0}", "\u{0}")).map_err(casbin)?;
        Ok(Policy {
            enforcer: Arc::new(e),
            sources: Arc::new((model.to_owned(), policy.to_owned())),
            root_only: model == DEFAULT_MODEL && policy == DEFAULT_POLICY,
        })
    }

    /// Whether `sub` may do `act` on `obj`. An enforcement error denies (and is logged).
    pub fn allows(&self, sub: &str, obj: &str, act: Action) -> bool {
        if self.root_only {
            return sub == "root";
        }
        self.enforce(sub, obj, act)
    }

    /// Casbin's answer (what [`Policy::allows`] returns for every policy but the default).
    fn enforce(&self, sub: &str, obj: &str, act: Action) -> bool {
        match self.enforcer.enforce((sub, obj, act.as_str())) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, "authorization check failed; denying");
                false
            }
        }
    }

    /// [`Policy::allows`] as a status: the identity on success, PERMISSION_DENIED otherwise.
    pub fn check(
        &self,
        identity: Option<Identity>,
        action: Action,
        obj: &str,
    ) -> Result<Identity, Status> {
        let id = identity.ok_or_else(status::unauthenticated)?;
        if self.allows(&id.name, obj, action) {
            Ok(id)
        } else {
            Err(status::permission_denied())
        }
    }
}

/// The policy in force, swapped as a whole on reload. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Authorizer {
    current: Arc<RwLock<Policy>>,
}

impl Authorizer {
    pub fn new(policy: Policy) -> Self {
        Self { current: Arc::new(RwLock::new(policy)) }
    }

    /// The compiled-in defaults (`root` may do everything, nobody else anything).
    pub async fn defaults() -> Result<Self, AuthzError> {
        Ok(Self::new(Policy::from_texts(DEFAULT_MODEL, DEFAULT_POLICY).await?))
    }

    /// Loads the configured files; each one absent falls back to its default.
    pub async fn load(model: Option<&Path>, policy: Option<&Path>) -> Result<Self, AuthzError> {
        let (m, p) = read_sources(model, policy).await?;
        Ok(Self::new(Policy::from_texts(&m, &p).await?))
    }

    /// The policy in force now.
    pub fn snapshot(&self) -> Policy {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the policy in force.
    pub fn replace(&self, policy: Policy) {
        match self.current.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

/// Reads the configured files (defaults for those not configured).
async fn read_sources(
    model: Option<&Path>,
    policy: Option<&Path>,
) -> Result<(String, String), AuthzError> {
    async fn read(path: Option<&Path>, default: &str) -> Result<String, AuthzError> {
        match path {
            None => Ok(default.to_owned()),
            Some(p) => tokio::fs::read_to_string(p)
                .await
                .map_err(|source| AuthzError::Read { path: p.display().to_string(), source }),
        }
    }
    Ok((read(model, DEFAULT_MODEL).await?, read(policy, DEFAULT_POLICY).await?))
}

/// Re-reads `model` / `policy` every `interval` and swaps a changed, valid policy into `authz`
/// (see the module doc). Runs until aborted; does nothing useful when neither file is set.
pub async fn watch(
    authz: Authorizer,
    model: Option<PathBuf>,
    policy: Option<PathBuf>,
    interval: Duration,
) {
    // The texts last rejected, so that each bad version is logged once.
    let mut rejected: Option<(String, String)> = None;
    let mut read_failed = false;
    loop {
        tokio::time::sleep(interval).await;
        let now = match read_sources(model.as_deref(), policy.as_deref()).await {
            Ok(s) => {
                read_failed = false;
                s
            }
            Err(e) => {
                if !read_failed {
                    tracing::error!(error = %e, "authorization files unreadable; keeping the current policy");
                    read_failed = true;
                }
                continue;
            }
        };
        if *authz.snapshot().sources == now || rejected.as_ref() == Some(&now) {
            continue;
        }
        match Policy::from_texts(&now.0, &now.1).await {
            Ok(p) => {
                authz.replace(p);
                rejected = None;
                tracing::info!("authorization model/policy reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "authorization model/policy rejected; keeping the previous one");
                rejected = Some(now);
            }
        }
    }
}

/// Casbin's `keyMatch` without its string slicing: `key2` may contain a `*`, which matches any
/// rest of `key1` (from the `*`'s position on); without `*`, the keys must be equal.
pub fn key_match(key1: &str, key2: &str) -> bool {
    match key2.find('*') {
        Some(i) => {
            let (k1, k2) = (key1.as_bytes(), key2.as_bytes());
            if k1.len() > i {
                k1[..i] == k2[..i]
            } else {
                k1 == &k2[..i]
            }
        }
        None => key1 == key2,
    }
}

fn key_match_dynamic(a: Dynamic, b: Dynamic) -> Dynamic {
    key_match(&dynamic_to_str(&a), &dynamic_to_str(&b)).into()
}

/// Only nodes (certificates valid for server auth) may call the peer service.
pub fn authorize_peer(identity: Option<Identity>) -> Result<Identity, Status> {
    let id = identity.ok_or_else(status::unauthenticated)?;
    if id.is_node {
        Ok(id)
    } else {
        Err(status::permission_denied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const APP_POLICY: &str = "p, root, *, *\np, app, app/*, produce\np, app, app/*, consume\n";

    fn who(name: &str) -> Option<Identity> {
        Some(Identity { name: name.to_owned(), is_node: false })
    }

    #[tokio::test]
    async fn defaults_allow_root_only() {
        let p = Policy::from_texts(DEFAULT_MODEL, DEFAULT_POLICY).await.unwrap();
        for act in [Action::Produce, Action::Consume, Action::Admin, Action::Discover] {
            assert!(p.allows("root", "any/key", act));
            assert!(p.allows("root", &range_object(""), act));
            assert!(!p.allows("nobody", "any/key", act));
            assert!(!p.allows("nobody", CLUSTER_OBJECT, act));
        }
        assert_eq!(p.check(None, Action::Consume, "k").unwrap_err().code(), Code::Unauthenticated);
        let e = p.check(who("nobody"), Action::Consume, "secret-key").unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(!e.message().contains("secret"));
    }

    #[tokio::test]
    async fn default_policy_fast_path_agrees_with_casbin() {
        let p = Policy::from_texts(DEFAULT_MODEL, DEFAULT_POLICY).await.unwrap();
        assert!(p.root_only);
        for sub in ["root", "nobody", "app", "Root", "root ", "", "n1"] {
            for obj in ["k", "", "*", "app/x", CLUSTER_OBJECT, "\u{e9}*", &range_object("")] {
                for act in [Action::Produce, Action::Consume, Action::Admin] {
                    assert_eq!(p.allows(sub, obj, act), p.enforce(sub, obj, act), "{sub} {obj}");
                }
            }
        }
        // Any other text (even the same rules spelled differently) goes through Casbin.
        let other = Policy::from_texts(DEFAULT_MODEL, "p, root, *, *\n\n").await.unwrap();
        assert!(!other.root_only);
        assert!(other.allows("root", "k", Action::Produce));
        assert!(!other.allows("nobody", "k", Action::Produce));
    }

    #[tokio::test]
    async fn prefix_rules() {
        let p = Policy::from_texts(DEFAULT_MODEL, APP_POLICY).await.unwrap();
        assert!(p.allows("app", "app/x", Action::Produce));
        assert!(p.allows("app", "app/x", Action::Consume));
        assert!(!p.allows("app", "other", Action::Consume));
        assert!(!p.allows("app", "app", Action::Consume));
        assert!(!p.allows("app", CLUSTER_OBJECT, Action::Admin));
        // Any identity with a rule may discover the members; one without rules may not.
        assert!(p.allows("app", CLUSTER_OBJECT, Action::Discover));
        assert!(p.allows("root", CLUSTER_OBJECT, Action::Discover));
        assert!(!p.allows("nobody", CLUSTER_OBJECT, Action::Discover));
        // `discover` is for the cluster object only: it grants nothing on keys.
        assert!(!p.allows("app", "other", Action::Discover));
        assert!(!p.allows("app", "cluster/x", Action::Discover));
        // Range objects: only prefixes inside app/.
        assert!(p.allows("app", &range_object("app/"), Action::Consume));
        assert!(p.allows("app", &range_object("app/x"), Action::Consume));
        assert!(!p.allows("app", &range_object("ap"), Action::Consume));
        assert!(!p.allows("app", &range_object(""), Action::Consume));
        // Multi-byte characters across the '*' position: no panic, no match.
        // (Casbin's own keyMatch would slice "a\u{e9}\u{e9}"[..4], inside the second char.)
        assert!(!p.allows("app", "a\u{e9}\u{e9}", Action::Consume));
        assert!(!p.allows("app", "a\u{1f600}", Action::Consume));
    }

    #[test]
    fn key_match_is_casbins() {
        for (k, pat, want) in [
            ("app/x", "app/*", true),
            ("app/", "app/*", true),
            ("app", "app/*", false),
            ("app/*", "app/*", true),
            ("x", "*", true),
            ("*", "*", true),
            ("*", "app/*", false),
            ("a", "a", true),
            ("a", "b", false),
            ("\u{e9}", "a*", false),
        ] {
            assert_eq!(key_match(k, pat), want, "{k} ~ {pat}");
        }
    }

    #[tokio::test]
    async fn bad_files_are_rejected() {
        assert!(Policy::from_texts("not a model", DEFAULT_POLICY).await.is_err());
        let bad_matcher = DEFAULT_MODEL.replace("(keyMatch(", "(&& keyMatch(");
        assert_ne!(bad_matcher, DEFAULT_MODEL);
        assert!(Policy::from_texts(&bad_matcher, DEFAULT_POLICY).await.is_err());
        assert!(Policy::from_texts(DEFAULT_MODEL, "p, root, *\n").await.is_err());
    }

    #[tokio::test]
    async fn watch_reloads_and_keeps_the_old_policy_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.csv");
        std::fs::write(&policy, DEFAULT_POLICY).unwrap();
        let authz = Authorizer::load(None, Some(&policy)).await.unwrap();
        let task = tokio::spawn(watch(
            authz.clone(),
            None,
            Some(policy.clone()),
            Duration::from_millis(10),
        ));
        let wait = |want: bool| {
            let authz = authz.clone();
            async move {
                for _ in 0..500 {
                    if authz.snapshot().allows("app", "app/x", Action::Consume) == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("the policy did not become {want}");
            }
        };
        wait(false).await;
        std::fs::write(&policy, APP_POLICY).unwrap();
        wait(true).await;
        // A broken file: the previous policy stays.
        std::fs::write(&policy, "p, app\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(authz.snapshot().allows("app", "app/x", Action::Consume));
        std::fs::remove_file(&policy).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(authz.snapshot().allows("app", "app/x", Action::Consume));
        std::fs::write(&policy, DEFAULT_POLICY).unwrap();
        wait(false).await;
        task.abort();
    }
}
