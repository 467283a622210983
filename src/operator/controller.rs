//! The reconcile loop: read (caches, ZITADEL) → validate → plan keys → bind
//! ZITADEL → build children (pure) → apply what differs (server-side apply,
//! one field manager) → compute status (pure) → write status only if it
//! changed. A pass that finds everything as it should be sends nothing.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::binding::{self, Bound};
use super::build::{self, CredentialRef, MANAGER, Settings};
use super::crd::{FINALIZER, KeyStatus, ProvisioningStatus, ROTATE_ANNOTATION, ScimTenant, ScimTenantStatus};
use super::diff;
use super::keys::{self, FoundKey, KeyPlan};
use super::metrics::Metrics;
use super::provisioning;
use super::status::{self, Check, Observed};
use super::validate::validate;
use crate::zitadel::auth::Credential;
use crate::zitadel::client::Client as Zitadel;
use crate::zitadel::config::ZitadelConfig;

const MANAGED_BY: &str = "app.kubernetes.io/managed-by=scim-operator";
const RECONCILE_CONCURRENCY: u16 = 32;
/// `scim.unique.app/skip-zitadel-cleanup=true`: delete the tenant without
/// touching ZITADEL (when ZITADEL is gone for good).
pub const SKIP_CLEANUP_ANNOTATION: &str = "scim.unique.app/skip-zitadel-cleanup";
/// Child caches that never sync (a missing RBAC grant, usually) fail the pass
/// instead of holding it.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the controller is configured with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub settings: Settings,
    /// The operator's own ZITADEL credential (PAT or machine key JSON).
    pub admin_credential_file: std::path::PathBuf,
    /// Empty: every namespace.
    pub watch_namespaces: Vec<String>,
    /// How often ZITADEL is checked for drift.
    pub resync: Duration,
    /// Where a tenant server's `/status` is read (`{service}`, `{namespace}`, `{name}`).
    pub status_url_template: String,
    pub status_poll: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `reportingInstance` of events (the pod name).
    pub instance: String,
    /// Most ZITADEL requests per second from the operator (default 40).
    pub zitadel_rate: Option<f64>,
}

impl ControllerConfig {
    pub fn new(settings: Settings, admin_credential_file: std::path::PathBuf) -> Self {
        ControllerConfig {
            settings,
            admin_credential_file,
            watch_namespaces: Vec::new(),
            resync: Duration::from_secs(600),
            status_url_template: "http://{service}.{namespace}.svc:9090/status".into(),
            status_poll: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "scim-operator".into()),
            zitadel_rate: None,
        }
    }

    fn admin_zitadel(&self) -> ZitadelConfig {
        ZitadelConfig {
            url: self.settings.zitadel_url.clone(),
            instance_host: self.settings.zitadel_instance_host.clone(),
            max_requests_per_second: self.zitadel_rate,
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("ZITADEL cleanup: {0}")]
    Cleanup(String),
    #[error("cannot encode {what}: {source}")]
    Encode { what: String, source: serde_json::Error },
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error(
        "the caches of Secrets, ConfigMaps, PVCs, Deployments, Services and Ingresses did not sync within a minute: check the operator's RBAC"
    )]
    CachesNotSynced,
}

impl Error {
    /// The metrics label.
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.reason()
                }
                _ => "Finalizer",
            },
            Error::Cleanup(_) => "ZitadelCleanup",
            Error::Encode { .. } | Error::MissingField(_) => "Internal",
            Error::CachesNotSynced => "CachesNotSynced",
        }
    }
}

/// The caches of children, filled by the controller's watches.
#[derive(Clone)]
struct Stores {
    secrets: Store<Secret>,
    configmaps: Store<ConfigMap>,
    pvcs: Store<PersistentVolumeClaim>,
    deployments: Store<Deployment>,
    services: Store<Service>,
    ingresses: Store<Ingress>,
}

impl Stores {
    async fn ready(&self) {
        let _ = futures::join!(
            self.secrets.wait_until_ready(),
            self.configmaps.wait_until_ready(),
            self.pvcs.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.ingresses.wait_until_ready(),
        );
    }
}

/// What is remembered per tenant between passes.
#[derive(Default)]
struct Memo {
    bound: Option<BoundMemo>,
    provisioning: Option<(Instant, Option<ProvisioningStatus>, Check)>,
    failures: u32,
    /// The tenant resourceVersion whose rotate annotation was acted on.
    rotated_at: Option<String>,
}

/// Shared by the controllers of every watched namespace.
pub struct Shared {
    pub client: Client,
    pub cfg: ControllerConfig,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    http: reqwest::Client,
    admin: Mutex<Option<(String, Arc<Zitadel>)>>,
    memo: Mutex<HashMap<String, Memo>>,
}

struct Context {
    shared: Arc<Shared>,
    stores: Stores,
}

impl Shared {
    pub fn new(client: Client, cfg: ControllerConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "scim-operator".into(), instance: Some(cfg.instance.clone()) },
        );
        Arc::new(Shared {
            client,
            cfg,
            metrics,
            recorder,
            http: reqwest::Client::new(),
            admin: Mutex::new(None),
            memo: Mutex::new(HashMap::new()),
        })
    }

    /// The admin client, rebuilt whenever the credential file changes (a
    /// rotated Secret is picked up without a restart).
    fn admin(&self) -> Result<Arc<Zitadel>, Check> {
        let unusable = |message: String| Check::Failed { reason: "ZitadelUnauthorized", message };
        let text = std::fs::read_to_string(&self.cfg.admin_credential_file).map_err(|e| {
            unusable(format!(
                "the operator's ZITADEL credential {} cannot be read: {e}",
                self.cfg.admin_credential_file.display()
            ))
        })?;
        let mut admin = self.admin.lock();
        if let Some((t, c)) = admin.as_ref()
            && *t == text
        {
            return Ok(c.clone());
        }
        let cred = Credential::parse(&text)
            .map_err(|e| unusable(format!("the operator's ZITADEL credential is unusable: {e}")))?;
        let client =
            Arc::new(Zitadel::with_credential(&self.cfg.admin_zitadel(), cred).map_err(|e| unusable(e.to_string()))?);
        *admin = Some((text, client.clone()));
        Ok(client)
    }

    async fn event(&self, t: &ScimTenant, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &t.object_ref(&())).await {
            tracing::debug!(error = %e, "cannot publish an event");
        }
    }

    fn backoff(&self, uid: &str) -> Duration {
        let mut memo = self.memo.lock();
        let m = memo.entry(uid.to_string()).or_default();
        m.failures = m.failures.saturating_add(1);
        let exp = self.cfg.backoff_base.saturating_mul(1u32 << m.failures.saturating_sub(1).min(16));
        let d = exp.min(self.cfg.backoff_max);
        // Spread retries of many tenants failing together by up to 10%.
        d + d.mul_f64(rand::random::<f64>() * 0.1)
    }

    fn succeeded(&self, uid: &str) {
        if let Some(m) = self.memo.lock().get_mut(uid) {
            m.failures = 0;
        }
    }
}

fn now_time() -> (OffsetDateTime, Time) {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let ts = k8s_openapi::jiff::Timestamp::from_second(now.unix_timestamp())
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    (now, Time(ts))
}

fn to_value<T: Serialize>(what: &str, obj: &T) -> Result<Value, Error> {
    serde_json::to_value(obj).map_err(|source| Error::Encode { what: what.into(), source })
}

/// Applies `desired` unless the cached live object already matches it.
/// Returns the live object afterwards.
async fn ensure<K>(client: &Client, store: &Store<K>, desired: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let name = desired.meta().name.clone().ok_or(Error::MissingField("metadata.name"))?;
    let ns = desired.meta().namespace.clone().ok_or(Error::MissingField("metadata.namespace"))?;
    let mut d = to_value(&name, desired)?;
    d["apiVersion"] = json!(K::api_version(&()));
    d["kind"] = json!(K::kind(&()));
    diff::stamp(&mut d);
    let live = store.get(&ObjectRef::new(&name).within(&ns));
    if let Some(l) = &live {
        let lv = to_value(&name, l.as_ref())?;
        if diff::up_to_date(Some(&lv), &d) {
            return Ok(l.as_ref().clone());
        }
    }
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    Ok(api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&d)).await?)
}

async fn delete_if_present<K>(client: &Client, store: &Store<K>, ns: &str, name: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    if store.get(&ObjectRef::new(name).within(ns)).is_none() {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A Secret from the cache, or from the API server when the cache has none:
/// the cache can lag behind our own write, and acting on that lag would
/// generate a key twice.
async fn secret_now(ctx: &Context, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
    if let Some(s) = ctx.stores.secrets.get(&ObjectRef::new(name).within(ns)) {
        return Ok(Some(s.as_ref().clone()));
    }
    Ok(Api::<Secret>::namespaced(ctx.shared.client.clone(), ns).get_opt(name).await?)
}

fn owned_by(obj: &impl Resource, uid: &str) -> bool {
    obj.meta().owner_references.as_ref().is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

fn found_key(s: &Secret, now: OffsetDateTime) -> Option<FoundKey> {
    let token = binding::secret_text(s, "token").filter(|t| !t.is_empty())?;
    let created_at = s
        .annotations()
        .get(build::CREATED_AT)
        .and_then(|c| keys::parse_rfc3339(c))
        .or_else(|| {
            s.meta().creation_timestamp.as_ref().and_then(|c| OffsetDateTime::from_unix_timestamp(c.0.as_second()).ok())
        })
        .unwrap_or(now);
    let rotated_for = s.annotations().get(build::ROTATED_FOR).cloned();
    Some(FoundKey { token, created_at, rotated_for })
}

/// Key Secrets of the tenant, and the names of spec keys whose Secret exists
/// but belongs to something else (never overwritten).
struct FoundKeys {
    keys: BTreeMap<String, FoundKey>,
    conflicts: Vec<String>,
}

/// The key Secrets of this tenant, by key name: every one in the cache, and
/// each key of the spec the cache lacks, read directly.
async fn found_keys(ctx: &Context, t: &ScimTenant, uid: &str, now: OffsetDateTime) -> Result<FoundKeys, Error> {
    let ns = t.namespace().unwrap_or_default();
    let prefix = format!("{}-scim-key-", t.name_any());
    let mut keys: BTreeMap<String, FoundKey> = ctx
        .stores
        .secrets
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && owned_by(s.as_ref(), uid))
        .filter_map(|s| Some((s.name_any().strip_prefix(&prefix)?.to_string(), found_key(&s, now)?)))
        .collect();
    let mut conflicts = Vec::new();
    for k in &t.spec.keys {
        if keys.contains_key(&k.name) {
            continue;
        }
        match secret_now(ctx, &ns, &build::key_secret_name(t, &k.name)).await? {
            Some(s) if !owned_by(&s, uid) => conflicts.push(k.name.clone()),
            Some(s) => {
                if let Some(f) = found_key(&s, now) {
                    keys.insert(k.name.clone(), f);
                }
            }
            None => {}
        }
    }
    Ok(FoundKeys { keys, conflicts })
}

fn keys_check(t: &ScimTenant, plan: &KeyPlan, conflicts: &[String]) -> Check {
    if !conflicts.is_empty() {
        let names: Vec<String> = conflicts.iter().map(|k| build::key_secret_name(t, k)).collect();
        return Check::Failed {
            reason: "SecretConflict",
            message: format!(
                "Secret(s) {} exist but are not owned by this ScimTenant: rename the key or delete the Secret",
                names.join(", ")
            ),
        };
    }
    if t.spec.keys.is_empty() {
        return Check::Failed {
            reason: "NoKeys",
            message: "spec.keys is empty: add a key (e.g. {name: entra}) for Entra's Secret token".into(),
        };
    }
    if plan.valid_keys() == 0 {
        return Check::Failed {
            reason: "KeysExpired",
            message: format!(
                "every key has expired ({}): rotate one with kubectl annotate st {} {ROTATE_ANNOTATION}=<key> and paste the new token into Entra",
                plan.expired.join(", "),
                t.name_any()
            ),
        };
    }
    if !plan.expired.is_empty() {
        return Check::Ok {
            reason: "KeyExpired",
            message: format!("expired and no longer accepted: {}", plan.expired.join(", ")),
        };
    }
    if let Some((name, at)) = plan.expiring.first() {
        return Check::Ok {
            reason: "KeyExpiringSoon",
            message: format!(
                "key {name} expires at {at}: add a new key and switch Entra, or annotate {ROTATE_ANNOTATION}={name}"
            ),
        };
    }
    Check::Ok { reason: "KeysIssued", message: format!("{} key(s) valid", plan.valid_keys()) }
}

fn server_check(t: &ScimTenant, dep: Option<&Deployment>) -> Check {
    let Some(dep) = dep else {
        return Check::Pending { reason: "DeploymentMissing", message: "the Deployment is being created".into() };
    };
    let want = t.spec.server.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if want == 0 {
        return Check::Ok { reason: "ScaledToZero", message: "spec.server.replicas is 0".into() };
    }
    let st = dep.status.clone().unwrap_or_default();
    if st.observed_generation.unwrap_or(0) < dep.metadata.generation.unwrap_or(0) {
        return Check::Pending { reason: "Progressing", message: "the rollout has not been observed yet".into() };
    }
    let available = st.available_replicas.unwrap_or(0);
    if available >= want {
        Check::Ok { reason: "Available", message: format!("{available}/{want} replicas available") }
    } else {
        Check::Pending {
            reason: "MinimumReplicasUnavailable",
            message: format!("{available}/{want} replicas available"),
        }
    }
}

/// The ZITADEL binding for this pass: a check, the server's credential, and
/// what to do once the credential Secret is stored.
struct BindOutcome {
    check: Check,
    cred: CredentialRef,
    user_id: Option<String>,
    /// A new managed key's Secret.
    new_key: Option<Secret>,
    /// Machine keys to revoke once the credential Secret is written.
    stale_keys: Vec<String>,
    events: Vec<(&'static str, String)>,
}

impl BindOutcome {
    fn not_bound(check: Check, cred: CredentialRef, prev_id: Option<String>) -> Self {
        BindOutcome { check, cred, user_id: prev_id, new_key: None, stale_keys: vec![], events: vec![] }
    }

    fn bound(cred: CredentialRef, user: String) -> Self {
        BindOutcome {
            check: bound_ok(&user),
            cred,
            user_id: Some(user),
            new_key: None,
            stale_keys: vec![],
            events: vec![],
        }
    }
}

/// The last successful binding of a tenant.
#[derive(Clone)]
struct BoundMemo {
    at: Instant,
    generation: i64,
    /// What the binding was made for: the managed key id, or the existing Secret's resourceVersion.
    credential: Option<String>,
    user_id: String,
}

async fn bind(t: &ScimTenant, ctx: &Context, uid: &str, generation: i64) -> Result<BindOutcome, Error> {
    let sh = &ctx.shared;
    let ns = t.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let prev_id = t.status.as_ref().and_then(|s| s.service_user_id.clone());
    let su = t.spec.zitadel.service_user.clone().unwrap_or_default();
    let remembered = sh.memo.lock().get(uid).and_then(|m| m.bound.clone());
    let fresh = |credential: &Option<String>| {
        remembered
            .clone()
            .filter(|m| m.at.elapsed() < sh.cfg.resync && m.generation == generation && m.credential == *credential)
    };
    let remember = |credential: Option<String>, user_id: &str| {
        sh.memo.lock().entry(uid.into()).or_default().bound =
            Some(BoundMemo { at: Instant::now(), generation, credential, user_id: user_id.to_string() });
    };
    if let Some(r) = su.existing_secret_ref {
        let api: Api<Secret> = Api::namespaced(sh.client.clone(), &ns);
        let secret = api.get_opt(&r.name).await?;
        let text = secret.as_ref().and_then(|s| binding::secret_text(s, &r.key));
        let cred = binding::credential_ref(r.name.clone(), r.key.clone(), text.as_deref());
        let Some(text) = text else {
            let check = Check::Failed {
                reason: "CredentialSecretMissing",
                message: format!(
                    "Secret {ns}/{} has no key '{}' (spec.zitadel.serviceUser.existingSecretRef)",
                    r.name, r.key
                ),
            };
            return Ok(BindOutcome::not_bound(check, cred, prev_id));
        };
        let version = secret.and_then(|s| s.metadata.resource_version);
        if let Some(m) = fresh(&version) {
            return Ok(BindOutcome::bound(cred, m.user_id));
        }
        let admin = match sh.admin() {
            Ok(a) => a,
            Err(check) => return Ok(BindOutcome::not_bound(check, cred, prev_id)),
        };
        return Ok(match binding::ensure_existing(&admin, &sh.cfg.admin_zitadel(), &text).await {
            Ok(mut b) => {
                // A tenant switched from a managed user to its own credential
                // leaves no privileged machine user behind.
                let org = &t.spec.zitadel.project_organization_id;
                let managed = binding::service_username(&ns, &t.name_any());
                match admin.find_user_in_org(org, &managed).await {
                    Ok(Some(id)) if id != b.user_id => match admin.delete_user(&id).await {
                        Ok(()) => b.events.push((
                            "ServiceUserDeleted",
                            format!("the managed machine user {managed} ({id}) is no longer used and was removed"),
                        )),
                        Err(e) => tracing::warn!(error = %e, "cannot remove the unused managed machine user"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot look for an unused managed machine user"),
                }
                remember(version, &b.user_id);
                BindOutcome { events: b.events, ..BindOutcome::bound(cred, b.user_id) }
            }
            Err(check) => BindOutcome::not_bound(check, cred, prev_id),
        });
    }
    // Managed: the operator's machine user with a key in `<tenant>-scim-zitadel`.
    let secret_name = build::credential_secret_name(t);
    let cred = CredentialRef { secret_name: secret_name.clone(), key: binding::KEY_FILE.into(), is_key_file: true };
    let key_in = |s: &Option<Secret>| {
        let text = s.as_ref().and_then(|s| binding::secret_text(s, binding::KEY_FILE));
        let key = text.as_deref().and_then(binding::key_file_ids).map(|(k, _)| k);
        (text, key)
    };
    let (mut stored_text, mut stored_key) = key_in(&secret_now(ctx, &ns, &secret_name).await?);
    if remembered.as_ref().is_some_and(|m| m.credential != stored_key) {
        // Either someone changed the Secret or the cache has not seen our
        // own write yet; only the API server can tell, and issuing a key on a
        // stale view would revoke the one just stored.
        let current = Api::<Secret>::namespaced(sh.client.clone(), &ns).get_opt(&secret_name).await?;
        (stored_text, stored_key) = key_in(&current);
    }
    if let Some(m) = fresh(&stored_key) {
        return Ok(BindOutcome::bound(cred, m.user_id));
    }
    let admin = match sh.admin() {
        Ok(a) => a,
        Err(check) => return Ok(BindOutcome::not_bound(check, cred, prev_id)),
    };
    let org = &t.spec.zitadel.project_organization_id;
    match binding::ensure_managed(&admin, org, &ns, &t.name_any(), prev_id.as_deref(), stored_text.as_deref()).await {
        Ok(Bound { user_id, new_key, events, stale_keys }) => {
            remember(new_key.as_ref().map(|k| k.key_id.clone()).or(stored_key), &user_id);
            let new_key = new_key.map(|k| {
                let mut s = build::credential_secret(t, &binding::data(&[(binding::KEY_FILE, &k.key_file)]));
                s.metadata.annotations =
                    Some(BTreeMap::from([("scim.unique.app/zitadel-key-id".to_string(), k.key_id.clone())]));
                s
            });
            Ok(BindOutcome { new_key, stale_keys, events, ..BindOutcome::bound(cred, user_id) })
        }
        Err(e) => Ok(BindOutcome::not_bound(binding::classify(&e, "the operator's admin credential"), cred, prev_id)),
    }
}

fn bound_ok(user: &str) -> Check {
    Check::Ok {
        reason: "Bound",
        message: format!("machine user {user} holds {}", binding::SERVICE_ROLES.join(" and ")),
    }
}

async fn provisioning_check(
    ctx: &Context,
    t: &ScimTenant,
    uid: &str,
    server: &Check,
) -> (Option<ProvisioningStatus>, Check) {
    let sh = &ctx.shared;
    let prev = t.status.as_ref().and_then(|s| s.provisioning.clone());
    if !matches!(server, Check::Ok { reason: "Available", .. }) {
        return (
            prev,
            Check::Unknown { reason: "ServerUnavailable", message: "the SCIM server is not available".into() },
        );
    }
    if let Some((at, p, c)) = sh.memo.lock().get(uid).and_then(|m| m.provisioning.clone())
        && at.elapsed() < sh.cfg.status_poll
    {
        return (p, c);
    }
    let ns = t.namespace().unwrap_or_default();
    let url = provisioning::status_url(&sh.cfg.status_url_template, &build::server_name(t), &ns, &t.name_any());
    let (p, c) = match provisioning::fetch(&sh.http, &url).await {
        Ok(v) => {
            let (p, c) = provisioning::interpret(&v);
            (Some(p), c)
        }
        Err(e) => (prev, Check::Unknown { reason: "StatusUnreachable", message: e }),
    };
    sh.memo.lock().entry(uid.into()).or_default().provisioning = Some((Instant::now(), p.clone(), c.clone()));
    (p, c)
}

async fn write_status(ctx: &Context, t: &ScimTenant, new: ScimTenantStatus) -> Result<(), Error> {
    let prev = t.status.clone().unwrap_or_default();
    let name = t.name_any();
    let ready = new.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone());
    ctx.shared.metrics.set_readiness(&format!("{}/{name}", t.namespace().unwrap_or_default()), ready.as_deref());
    if prev == new {
        return Ok(());
    }
    let api: Api<ScimTenant> = Api::namespaced(ctx.shared.client.clone(), &t.namespace().unwrap_or_default());
    let body = json!({"apiVersion": ScimTenant::api_version(&()), "kind": ScimTenant::kind(&()), "status": new});
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await?;
    // Events on transitions of the summary conditions only.
    let cond = |s: &ScimTenantStatus, ty: &str| {
        s.conditions.iter().find(|c| c.type_ == ty).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (was_ready, is_ready) = (cond(&prev, "Ready"), cond(&new, "Ready"));
    if was_ready.as_ref().map(|c| (&c.0, &c.1)) != is_ready.as_ref().map(|c| (&c.0, &c.1))
        && let Some((status, reason, message)) = is_ready
    {
        ctx.shared.event(t, status != "True", &reason, message).await;
    }
    let (was_keys, is_keys) = (cond(&prev, "KeysReady"), cond(&new, "KeysReady"));
    if let Some((_, reason, message)) = is_keys
        && matches!(reason.as_str(), "KeyExpiringSoon" | "KeyExpired")
        && was_keys.map(|c| c.1) != Some(reason.clone())
    {
        ctx.shared.event(t, true, &reason, message).await;
    }
    Ok(())
}

/// A write to the API server failed: say so in status (when that changes
/// it), then let the error policy retry with backoff.
async fn fail_status(
    ctx: &Context,
    t: &ScimTenant,
    mut obs: Observed,
    keep: impl Fn(ScimTenantStatus, &Observed) -> ScimTenantStatus,
    e: Error,
) -> Result<Action, Error> {
    obs.server = Check::Pending { reason: "ApplyFailed", message: e.to_string() };
    let prev = t.status.clone().unwrap_or_default();
    if let Err(w) = write_status(ctx, t, keep(prev, &obs)).await {
        tracing::debug!(error = %w, "cannot record the failure in status");
    }
    Err(e)
}

async fn apply(t: Arc<ScimTenant>, ctx: &Context) -> Result<Action, Error> {
    let sh = ctx.shared.clone();
    if tokio::time::timeout(CACHE_SYNC_TIMEOUT, ctx.stores.ready()).await.is_err() {
        return Err(Error::CachesNotSynced);
    }
    let ns = t.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = t.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let generation = t.metadata.generation.unwrap_or(0);
    let prev = t.status.clone().unwrap_or_default();
    let (now, now_k8s) = now_time();
    let unknown = |reason: &'static str| Check::Unknown { reason, message: String::new() };
    let mut obs = Observed {
        generation,
        suspended: t.spec.suspend,
        invalid: None,
        keys: unknown("Suspended"),
        zitadel: unknown("Suspended"),
        server: unknown("Suspended"),
        provisioning: unknown("Suspended"),
    };
    let keep = |mut s: ScimTenantStatus, obs: &Observed| {
        s.observed_generation = Some(generation);
        s.conditions = status::conditions(&prev.conditions, obs, &now_k8s);
        s
    };
    if t.spec.suspend {
        write_status(ctx, &t, keep(prev.clone(), &obs)).await?;
        return Ok(Action::await_change());
    }
    if let Err(problems) = validate(&t.spec) {
        obs.invalid = Some(problems.join("; "));
        for c in [&mut obs.keys, &mut obs.zitadel, &mut obs.server, &mut obs.provisioning] {
            *c = unknown("InvalidSpec");
        }
        let was_invalid = prev
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.reason == "InvalidSpec" && c.observed_generation == Some(generation));
        write_status(ctx, &t, keep(prev.clone(), &obs)).await?;
        if !was_invalid {
            sh.event(&t, true, "InvalidSpec", problems.join("; ")).await;
        }
        // Nothing to retry until the spec changes.
        return Ok(Action::await_change());
    }

    // Keys.
    let found = found_keys(ctx, &t, &uid, now).await?;
    // The annotation asks once per tenant resourceVersion: the key Secret
    // records the version it served (surviving restarts), and the memo
    // covers a cache that still shows the annotation after we removed it.
    let rv = t.resource_version().unwrap_or_default();
    let rotate_key = t.annotations().get(ROTATE_ANNOTATION).cloned();
    let already = sh.memo.lock().get(&uid).is_some_and(|m| m.rotated_at.as_deref() == Some(rv.as_str()));
    let rotate = rotate_key.as_deref().filter(|_| !already).map(|key| keys::Rotate { key, tenant_version: &rv });
    // Keys whose Secret belongs to someone else are left out, never overwritten.
    let spec_keys: Vec<_> = t.spec.keys.iter().filter(|k| !found.conflicts.contains(&k.name)).cloned().collect();
    let plan = keys::plan(&spec_keys, &found.keys, rotate, now, crate::keys::generate_token);
    obs.keys = keys_check(&t, &plan, &found.conflicts);

    // ZITADEL.
    let b = bind(&t, ctx, &uid, generation).await?;
    obs.zitadel = b.check.clone();

    // The new machine key is stored first, so a later failure cannot make
    // the next pass issue yet another one; only then are older keys revoked.
    let c = &sh.client;
    let stored_key = match &b.new_key {
        Some(secret) => ensure(c, &ctx.stores.secrets, secret).await.map(|_| ()),
        None => Ok(()),
    };
    if let Err(e) = stored_key {
        return fail_status(ctx, &t, obs, keep, e).await;
    }
    if !b.stale_keys.is_empty()
        && let (Ok(admin), Some(user)) = (sh.admin(), &b.user_id)
        && let Err(e) = binding::revoke_keys(&admin, user, &b.stale_keys).await
    {
        // The next ZITADEL pass removes them; a stale key is harmless meanwhile.
        tracing::warn!(tenant = %t.name_any(), error = %e, "cannot remove old machine keys");
    }

    // Children.
    let desired = build::build(&t, &sh.cfg.settings, &plan.keys, &b.cred);
    let applied = async {
        for s in &desired.key_secrets {
            ensure(c, &ctx.stores.secrets, s).await?;
        }
        ensure(c, &ctx.stores.secrets, &desired.hash_secret).await?;
        ensure(c, &ctx.stores.configmaps, &desired.config).await?;
        ensure(c, &ctx.stores.pvcs, &desired.pvc).await?;
        let dep = ensure(c, &ctx.stores.deployments, &desired.deployment).await?;
        ensure(c, &ctx.stores.services, &desired.service).await?;
        match &desired.ingress {
            Some(i) => {
                ensure(c, &ctx.stores.ingresses, i).await?;
            }
            None => {
                delete_if_present(c, &ctx.stores.ingresses, &ns, &build::server_name(&t)).await?;
            }
        }
        Ok::<_, Error>(dep)
    }
    .await;
    let dep = match applied {
        Ok(d) => d,
        Err(e) => return fail_status(ctx, &t, obs, keep, e).await,
    };
    for gone in &plan.removed {
        if delete_if_present(c, &ctx.stores.secrets, &ns, &build::key_secret_name(&t, gone)).await? {
            sh.event(
                &t,
                false,
                "KeyRemoved",
                format!("key {gone} left spec.keys: its Secret is deleted and the server no longer accepts it"),
            )
            .await;
        }
    }
    for name in &plan.generated {
        let why = if prev.keys.iter().any(|k| &k.name == name) {
            "its Secret was missing, so a new token was generated: paste it into Entra"
        } else {
            "created"
        };
        sh.event(&t, prev.keys.iter().any(|k| &k.name == name), "KeyCreated", format!("key {name}: {why}")).await;
    }
    if rotate_key.is_some() && !already {
        if let Some(r) = &plan.rotated {
            sh.event(
                &t,
                false,
                "KeyRotated",
                format!("key {r} has a new token: paste it into Entra; the old one no longer works"),
            )
            .await;
        }
        if let Some(r) = &plan.rotate_unknown {
            sh.event(&t, true, "RotateUnknownKey", format!("{ROTATE_ANNOTATION}={r} names no entry of spec.keys"))
                .await;
        }
        sh.memo.lock().entry(uid.clone()).or_default().rotated_at = Some(rv.clone());
        let api: Api<ScimTenant> = Api::namespaced(c.clone(), &ns);
        let patch = json!({"metadata": {"annotations": {ROTATE_ANNOTATION: null}}});
        api.patch(&t.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    for (reason, note) in &b.events {
        sh.event(&t, false, reason, note.clone()).await;
    }

    // Status.
    obs.server = server_check(&t, Some(&dep));
    let (prov, prov_check) = provisioning_check(ctx, &t, &uid, &obs.server).await;
    obs.provisioning = prov_check;
    let new_status = keep(
        ScimTenantStatus {
            observed_generation: Some(generation),
            conditions: vec![],
            endpoint: Some(desired.endpoint.clone()),
            service_user_id: b.user_id.clone(),
            keys: plan
                .keys
                .iter()
                .map(|k| KeyStatus {
                    name: k.name.clone(),
                    secret_name: build::key_secret_name(&t, &k.name),
                    fingerprint: k.fingerprint(),
                    created_at: k.created_at.clone(),
                    expires_at: k.expires_at.clone(),
                })
                .collect(),
            provisioning: prov,
        },
        &obs,
    );
    write_status(ctx, &t, new_status).await?;

    // When to look again.
    let mut next = sh.cfg.resync;
    if matches!(obs.server, Check::Ok { reason: "Available", .. }) {
        next = next.min(sh.cfg.status_poll);
    }
    if let Some(at) = plan.next_change {
        let secs = (at - now).whole_seconds().max(1);
        next = next.min(Duration::from_secs(u64::try_from(secs).unwrap_or(1)));
    }
    let pending =
        [&obs.zitadel, &obs.server].into_iter().any(|c| matches!(c, Check::Pending { .. } | Check::Unknown { .. }));
    let failed = matches!(obs.zitadel, Check::Failed { .. });
    if pending || failed {
        // Not converged: retry with backoff (a rejected credential needs a human, so the backoff grows to its maximum).
        let d = sh.backoff(&uid);
        tracing::info!(tenant = %format!("{ns}/{}", t.name_any()), zitadel = obs.zitadel.reason(), server = obs.server.reason(), retry_in = ?d, "not ready yet");
        return Ok(Action::requeue(d.min(next)));
    }
    sh.succeeded(&uid);
    Ok(Action::requeue(next))
}

async fn cleanup(t: Arc<ScimTenant>, ctx: &Context) -> Result<Action, Error> {
    let sh = &ctx.shared;
    let bound_id = t.status.as_ref().and_then(|s| s.service_user_id.clone());
    let skip = t.annotations().get(SKIP_CLEANUP_ANNOTATION).is_some_and(|v| v == "true");
    let org = &t.spec.zitadel.project_organization_id;
    if skip {
        sh.event(
            &t,
            true,
            "CleanupSkipped",
            format!("{SKIP_CLEANUP_ANNOTATION}=true: the ZITADEL machine user is left in place"),
        )
        .await;
    } else if !org.trim().is_empty() {
        let admin = sh.admin().map_err(|c| Error::Cleanup(format!("{c:?}")))?;
        let username = binding::service_username(&t.namespace().unwrap_or_default(), &t.name_any());
        // Only the user this tenant manages, found by its username: never a
        // user an existingSecretRef named.
        let id = binding::find_managed(&admin, org, &username, bound_id.as_deref())
            .await
            .map_err(|e| Error::Cleanup(e.to_string()))?;
        if let Some(id) = id {
            // Deleting the user removes its keys with it; provisioned end users stay.
            admin.delete_user(&id).await.map_err(|e| Error::Cleanup(e.to_string()))?;
            sh.event(
                &t,
                false,
                "ServiceUserDeleted",
                format!("ZITADEL machine user {username} ({id}) and its keys removed"),
            )
            .await;
        }
    }
    if let Some(uid) = t.uid() {
        sh.memo.lock().remove(&uid);
    }
    sh.metrics.set_readiness(&format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any()), None);
    Ok(Action::await_change())
}

async fn reconcile(t: Arc<ScimTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = t.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ScimTenant> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, t, |ev| async {
        match ev {
            Finalized::Apply(t) => apply(t, &ctx).await,
            Finalized::Cleanup(t) => cleanup(t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.shared.metrics.reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

fn error_policy(t: Arc<ScimTenant>, e: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.metrics.failed(e.reason());
    let uid = t.uid().unwrap_or_default();
    let d = ctx.shared.backoff(&uid);
    tracing::warn!(tenant = %format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any()), error = %e, retry_in = ?d, "reconcile failed");
    let sh = ctx.shared.clone();
    let note = e.to_string();
    tokio::spawn(async move { sh.event(&t, true, "ReconcileFailed", note).await });
    Action::requeue(d)
}

fn reflect<K>(api: Api<K>) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(MANAGED_BY).any_semantic())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs the controller for one scope (a namespace, or all) until `shutdown`.
async fn run_scope(
    shared: Arc<Shared>,
    ns: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let c = shared.client.clone();
    fn api<K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>>(
        c: &Client,
        ns: &Option<String>,
    ) -> Api<K> {
        match ns {
            Some(n) => Api::namespaced(c.clone(), n),
            None => Api::all(c.clone()),
        }
    }
    let (secrets, s1) = reflect(api::<Secret>(&c, &ns));
    let (configmaps, s2) = reflect(api::<ConfigMap>(&c, &ns));
    let (pvcs, s3) = reflect(api::<PersistentVolumeClaim>(&c, &ns));
    let (deployments, s4) = reflect(api::<Deployment>(&c, &ns));
    let (services, s5) = reflect(api::<Service>(&c, &ns));
    let (ingresses, s6) = reflect(api::<Ingress>(&c, &ns));
    let stores = Stores { secrets, configmaps, pvcs, deployments, services, ingresses };
    let ctx = Arc::new(Context { shared: shared.clone(), stores: stores.clone() });
    let metrics = shared.metrics.clone();
    let ready_stores = stores.clone();
    tokio::spawn(async move {
        ready_stores.ready().await;
        metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // The PVC is kept when its tenant is deleted (it holds the store), so it
    // has no owner reference: map it to its tenant by label.
    let pvc_owner = |p: PersistentVolumeClaim| {
        let ns = p.namespace();
        p.labels()
            .get("app.kubernetes.io/instance")
            .cloned()
            .zip(ns)
            .map(|(n, ns)| ObjectRef::<ScimTenant>::new(&n).within(&ns))
    };
    Controller::new(api::<ScimTenant>(&c, &ns), watcher::Config::default().any_semantic())
        .owns_stream(s1)
        .owns_stream(s2)
        .watches_stream(s3, pvc_owner)
        .owns_stream(s4)
        .owns_stream(s5)
        .owns_stream(s6)
        // ZITADEL's rate limit, not parallelism, bounds a large initial
        // sync; many more in-flight passes would only hold memory.
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
}

/// Runs the controllers (one per watched namespace, or one for all) until `shutdown` resolves.
pub async fn run(shared: Arc<Shared>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let scopes: Vec<Option<String>> = if shared.cfg.watch_namespaces.is_empty() {
        vec![None]
    } else {
        shared.cfg.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let runs = scopes.into_iter().map(|ns| {
        let mut rx = rx.clone();
        run_scope(shared.clone(), ns, async move {
            let _ = rx.wait_for(|v| *v).await;
        })
    });
    let all = futures::future::join_all(runs);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        _ = shutdown => {
            let _ = tx.send(true);
            all.await;
        }
    }
}
