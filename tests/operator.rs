//! The real controller (kube-runtime `Controller`) against the fake
//! Kubernetes API server and the ZITADEL fake in tests/support: a tenant's
//! whole life, drift and failures, and silence at steady state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use scim_operator::operator::build::TenantDefaults;
use scim_operator::operator::controller::ControllerConfig;
use scim_operator::operator::crd::ScimTenant;
use scim_operator::operator::leader::LeaseConfig;
use scim_operator::operator::run::{RunOptions, run_with};
use scim_test_support::kstatus::{self, Status as KStatus};
use scim_test_support::kube_fake::KubeFake;
use scim_test_support::wait_until;
use scim_test_support::zitadel_fake::{FakeResource, ZitadelFake};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NS: &str = "tenants";
const ORG: &str = "310000000000000001";
const IAM_ORG: &str = "310000000000000002";
const PROJECT: &str = "320000000000000001";
const ADMIN_ID: &str = "340000000000000001";
const ADMIN_PAT: &str = "operator-admin-pat-91c2";
const WAIT: Duration = Duration::from_secs(30);

/// The fakes, a `/status` endpoint standing in for the tenants' servers, and
/// the controller under test.
struct Env {
    kube: KubeFake,
    zitadel: ZitadelFake,
    client: Client,
    /// What every tenant server's `/status` answers.
    server_status: Arc<Mutex<Value>>,
    /// What one server (by Service name) answers instead.
    server_status_of: Arc<Mutex<BTreeMap<String, Value>>>,
    status_url: String,
    credential: tempfile::NamedTempFile,
    controllers: Vec<Controller>,
}

struct Controller {
    admin: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn status_server(state: Arc<Mutex<Value>>, of: Arc<Mutex<BTreeMap<String, Value>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/status/{ns}/{svc}",
        axum::routing::get(move |axum::extract::Path((_ns, svc)): axum::extract::Path<(String, String)>| {
            let s = state.clone();
            let of = of.clone();
            async move { axum::Json(of.lock().get(&svc).cloned().unwrap_or_else(|| s.lock().clone())) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("{url}/status/{{namespace}}/{{service}}")
}

impl Env {
    async fn new() -> Env {
        // The controller runs in this process; its log shows only if the test fails.
        scim_test_support::init_tracing();
        let kube = KubeFake::start().await;
        let zitadel = ZitadelFake::start().await;
        zitadel.add_org(ORG, "Contoso", &["contoso.com"]);
        zitadel.add_org(IAM_ORG, "Cluster IAM", &[]);
        zitadel.add_project(PROJECT, IAM_ORG, &["Chat.User", "Chat.Admin.All"]);
        zitadel.add_service_user_with_pat(ADMIN_ID, IAM_ORG, ADMIN_PAT, &["IAM_OWNER"]);
        let credential = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(credential.path(), format!("{ADMIN_PAT}\n")).unwrap();
        let server_status = Arc::new(Mutex::new(json!({
            "users": 0, "groups": 0, "failedRequests": 0,
            "zitadel": {"reachable": true, "rate": {"limit": 1.0, "waiting": 0, "busy": false}},
            "projection": {"pendingOperations": 0, "failingOperations": 0}
        })));
        let server_status_of = Arc::new(Mutex::new(BTreeMap::new()));
        let status_url = status_server(server_status.clone(), server_status_of.clone()).await;
        let client = kube.client();
        Env { kube, zitadel, client, server_status, server_status_of, status_url, credential, controllers: vec![] }
    }

    fn config(&self) -> ControllerConfig {
        let settings = TenantDefaults {
            image: "ghcr.io/unique-app/scim-operator:test".into(),
            zitadel_url: self.zitadel.url.clone(),
            ..Default::default()
        };
        let mut c = ControllerConfig::new(settings, self.credential.path().to_path_buf());
        c.resync = Duration::from_secs(2);
        c.status_poll = Duration::from_secs(1);
        c.backoff_base = Duration::from_millis(200);
        c.backoff_max = Duration::from_secs(2);
        c.status_url_template = self.status_url.clone();
        c.zitadel_rate = Some(1000.0);
        c
    }

    async fn start_controller(&mut self, config: ControllerConfig, lease: Option<LeaseConfig>) -> usize {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Its own identity in the fake's access log (see the RBAC test).
        let client = self.kube.client_as("controller");
        let task = tokio::spawn(async move {
            let r = run_with(client, listener, RunOptions { config, lease }, async move {
                let _ = rx.await;
            })
            .await;
            if let Err(e) = r {
                eprintln!("controller stopped: {e}");
            }
        });
        self.controllers.push(Controller { admin, stop: Some(tx), task });
        self.controllers.len() - 1
    }

    async fn start(&mut self) {
        let c = self.config();
        self.start_controller(c, None).await;
    }

    fn tenants(&self) -> Api<ScimTenant> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// `kubectl apply --server-side` of a tenant.
    async fn apply(&self, name: &str, spec: Value) {
        let body = json!({"apiVersion": "scim.unique.app/v1alpha1", "kind": "ScimTenant",
            "metadata": {"name": name, "namespace": NS}, "spec": spec});
        self.tenants().patch(name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&body)).await.unwrap();
    }

    async fn tenant(&self, name: &str) -> Option<ScimTenant> {
        self.tenants().get_opt(name).await.unwrap()
    }

    async fn condition(&self, name: &str, ty: &str) -> Option<(String, String)> {
        let t = self.tenant(name).await?;
        let s = t.status?;
        s.conditions.iter().find(|c| c.type_ == ty).map(|c| (c.status.clone(), c.reason.clone()))
    }

    /// Waits until the condition has this status (and reason, if given).
    async fn wait_condition(&self, name: &str, ty: &str, status: &str, reason: Option<&str>) {
        let ok = wait_until(WAIT, || async {
            self.condition(name, ty).await.is_some_and(|(s, r)| s == status && reason.is_none_or(|want| want == r))
        })
        .await;
        assert!(
            ok,
            "{name}: {ty} never became {status} {reason:?}; status: {:#?}",
            self.tenant(name).await.and_then(|t| t.status)
        );
    }

    /// `kubectl apply --server-side` of a tenant with these annotations (a manifest in Git).
    async fn apply_annotated(&self, name: &str, annotations: Value, spec: Value) {
        let body = json!({"apiVersion": "scim.unique.app/v1alpha1", "kind": "ScimTenant",
            "metadata": {"name": name, "namespace": NS, "annotations": annotations}, "spec": spec});
        self.tenants().patch(name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&body)).await.unwrap();
    }

    /// Waits until controller `i` has completed `n` more successful passes.
    async fn wait_passes(&self, i: usize, n: u64) {
        let start = ok_reconciles(&self.metrics(i).await);
        let ok = wait_until(WAIT, || async { ok_reconciles(&self.metrics(i).await) >= start + n }).await;
        assert!(ok, "controller {i} did not complete {n} passes");
    }

    async fn last_handled_rotate(&self, name: &str) -> Option<String> {
        self.tenant(name).await?.status?.last_handled_rotate_at
    }

    /// The tenant as the API server stores it.
    fn raw(&self, name: &str) -> Value {
        self.kube.get("scim.unique.app/v1alpha1", "scimtenants", Some(NS), name).unwrap_or(Value::Null)
    }

    /// Waits until kstatus (cli-utils' rules) computes `want` for the tenant.
    async fn wait_kstatus(&self, name: &str, want: KStatus) -> kstatus::Result {
        let ok = wait_until(WAIT, || async { kstatus::compute(&self.raw(name)).status == want }).await;
        assert!(ok, "{name}: kstatus never became {want:?}; object: {:#}", self.raw(name));
        kstatus::compute(&self.raw(name))
    }

    /// Stops controller `i` and waits until it has shut down.
    async fn stop_controller(&mut self, i: usize) {
        if let Some(stop) = self.controllers[i].stop.take() {
            let _ = stop.send(());
        }
        let stopped = wait_until(WAIT, || async { self.controllers[i].task.is_finished() }).await;
        assert!(stopped, "controller {i} did not stop");
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), NS).get_opt(name).await.unwrap()
    }

    async fn secret_text(&self, name: &str, key: &str) -> Option<String> {
        let s = self.secret(name).await?;
        s.data?.get(key).map(|b| String::from_utf8(b.0.clone()).unwrap())
    }

    fn machine_user(&self, name: &str) -> Option<scim_test_support::zitadel_fake::FakeUser> {
        let username = format!("scim-{NS}.{name}");
        self.zitadel.users().into_iter().find(|u| u.username == username && u.is_machine)
    }

    fn instance_roles(&self, user: &str) -> Vec<String> {
        let mut r: Vec<String> = self
            .zitadel
            .administrators()
            .into_iter()
            .filter(|a| a.user_id == user && a.resource == FakeResource::Instance)
            .flat_map(|a| a.roles)
            .collect();
        r.sort();
        r
    }

    async fn metrics(&self, i: usize) -> String {
        reqwest::get(format!("{}/metrics", self.controllers[i].admin)).await.unwrap().text().await.unwrap()
    }

    async fn events(&self) -> Vec<(String, String)> {
        self.kube
            .list("events.k8s.io/v1", "events", Some(NS))
            .into_iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    async fn wait_event(&self, ty: &str, reason: &str) {
        let ok = wait_until(WAIT, || async { self.events().await.iter().any(|(t, r)| t == ty && r == reason) }).await;
        assert!(ok, "no {ty} event {reason}; events: {:?}", self.events().await);
    }
}

fn spec(keys: Value) -> Value {
    json!({
        "zitadel": {
            "organizationId": ORG, "projectId": PROJECT, "projectOrganizationId": IAM_ORG,
            "defaultRoles": ["Chat.User"],
            "groupRoles": [{"group": "Unique Admins", "roles": ["Chat.Admin.All"]}]
        },
        "keys": keys
    })
}

/// `scim_operator_reconciles_total{result="ok"}` in a metrics page.
fn ok_reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("scim_operator_reconciles_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn owner_uid(o: &impl kube::Resource) -> Option<String> {
    o.meta().owner_references.as_ref().and_then(|r| r.first()).map(|r| r.uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_becomes_ready_with_every_child_and_its_zitadel_binding() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", Some("Ready")).await;

    let t = env.tenant("acme").await.unwrap();
    let uid = t.metadata.uid.clone().unwrap();
    let st = t.status.clone().unwrap();
    for ty in ["Ready", "KeysReady", "ZitadelBound", "ServerAvailable", "ProvisioningHealthy"] {
        let c = st.conditions.iter().find(|c| c.type_ == ty).unwrap();
        assert_eq!(c.status, "True", "{ty}: {c:?}");
        assert_eq!(c.observed_generation, t.metadata.generation);
    }
    for ty in ["Reconciling", "Stalled"] {
        assert!(st.conditions.iter().all(|c| c.type_ != ty), "{ty} is present only while True");
    }
    assert_eq!(st.endpoint.as_deref(), Some("http://acme-scim.tenants.svc/scim/v2"));
    assert!(t.metadata.finalizers.unwrap_or_default().contains(&"scim.unique.app/zitadel-cleanup".to_string()));

    // The key: a Secret for the admin, only its hash in the server's file.
    let token = env.secret_text("acme-scim-key-entra", "token").await.unwrap();
    assert!(token.len() >= 32);
    assert_eq!(st.keys[0].fingerprint, sha(&token)[..12]);
    let keys_file = env.secret_text("acme-scim-keys", "keys.yaml").await.unwrap();
    assert!(keys_file.contains(&sha(&token)) && !keys_file.contains(&token), "{keys_file}");

    // ZITADEL: the machine user in the project's org, with both instance roles and one key,
    // whose key file the server mounts.
    let user = env.machine_user("acme").expect("machine user");
    assert_eq!(user.org, IAM_ORG);
    assert_eq!(st.service_user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(env.instance_roles(&user.id), ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    let key_file: Value =
        serde_json::from_str(&env.secret_text("acme-scim-zitadel", "key.json").await.unwrap()).unwrap();
    assert_eq!(key_file["userId"], json!(user.id));
    assert_eq!(user.key_ids, [key_file["keyId"].as_str().unwrap().to_string()]);

    // Workload: owned children; the store's PVC is kept on purpose.
    let dep = Api::<Deployment>::namespaced(env.client.clone(), NS).get("acme-scim").await.unwrap();
    assert_eq!(owner_uid(&dep).as_deref(), Some(uid.as_str()));
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some("ghcr.io/unique-app/scim-operator:test"));
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), NS).get("acme-scim-config").await.unwrap();
    let serve = &cm.data.unwrap()["serve.yaml"];
    assert!(serve.contains(&env.zitadel.url) && serve.contains("keyFile: /etc/scim/zitadel/key.json"), "{serve}");
    let pvc = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), NS).get("acme-scim-data").await.unwrap();
    assert_eq!(owner_uid(&pvc), None);
    assert!(env.kube.get("v1", "services", Some(NS), "acme-scim").is_some());

    env.wait_event("Normal", "Ready").await;
    let m = env.metrics(0).await;
    assert!(m.contains("scim_operator_tenants{ready=\"true\"} 1"), "{m}");
    assert!(m.contains("scim_operator_reconciles_total{result=\"ok\"}"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_added_removed_rotated_and_expire() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let first = env.secret_text("acme-scim-key-entra", "token").await.unwrap();

    // Add: a second key, the first untouched, both hashes served.
    env.apply("acme", spec(json!([{"name": "entra"}, {"name": "next"}]))).await;
    assert!(wait_until(WAIT, || async { env.secret("acme-scim-key-next").await.is_some() }).await);
    let next = env.secret_text("acme-scim-key-next", "token").await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            let f = env.secret_text("acme-scim-keys", "keys.yaml").await.unwrap_or_default();
            f.contains(&sha(&first)) && f.contains(&sha(&next))
        })
        .await
    );
    assert_eq!(env.secret_text("acme-scim-key-entra", "token").await.unwrap(), first, "never regenerated");

    // Remove the old one: its Secret and hash go.
    env.apply("acme", spec(json!([{"name": "next"}]))).await;
    assert!(wait_until(WAIT, || async { env.secret("acme-scim-key-entra").await.is_none() }).await);
    assert!(
        wait_until(WAIT, || async {
            !env.secret_text("acme-scim-keys", "keys.yaml").await.unwrap_or_default().contains(&sha(&first))
        })
        .await
    );
    env.wait_event("Normal", "KeyRemoved").await;

    // Rotate now: a new token; the annotation stays (it is a request token).
    let patch = json!({"metadata": {"annotations": {"scim.unique.app/rotate": "next"}}});
    env.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            env.secret_text("acme-scim-key-next", "token").await.is_some_and(|t| t != next)
                && env.tenant("acme").await.and_then(|t| t.status?.last_handled_rotate_at).as_deref() == Some("next")
        })
        .await
    );
    let annotations = env.tenant("acme").await.unwrap().metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("scim.unique.app/rotate").map(String::as_str), Some("next"));
    let rotated = env.secret_text("acme-scim-key-next", "token").await.unwrap();
    let file = env.secret_text("acme-scim-keys", "keys.yaml").await.unwrap();
    assert!(file.contains(&sha(&rotated)) && !file.contains(&sha(&next)), "{file}");
    env.wait_event("Normal", "KeyRotated").await;

    // Expiry: a short-lived key is warned about, then dropped from the hash file.
    // 12 s: warned from 9 s (a quarter of its life ahead), dropped at 12 s.
    env.apply("acme", spec(json!([{"name": "next"}, {"name": "brief", "expiresAfter": "12s"}]))).await;
    env.wait_condition("acme", "KeysReady", "True", Some("KeyExpiringSoon")).await;
    env.wait_event("Warning", "KeyExpiringSoon").await;
    env.wait_condition("acme", "KeysReady", "True", Some("KeyExpired")).await;
    let brief = env.secret_text("acme-scim-key-brief", "token").await.unwrap();
    let file = env.secret_text("acme-scim-keys", "keys.yaml").await.unwrap();
    assert!(!file.contains(&sha(&brief)) && file.contains(&sha(&rotated)), "{file}");
    env.wait_event("Warning", "KeyExpired").await;
    // With only expired keys left, the tenant needs a human.
    env.apply("acme", spec(json!([{"name": "brief", "expiresAfter": "12s"}]))).await;
    env.wait_condition("acme", "Stalled", "True", Some("KeysExpired")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_or_edited_children_are_restored() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let c = env.client.clone();
    let deps: Api<Deployment> = Api::namespaced(c.clone(), NS);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let uid0 = deps.get("acme-scim").await.unwrap().metadata.uid;

    deps.delete("acme-scim", &DeleteParams::default()).await.unwrap();
    assert!(
        wait_until(WAIT, || async { deps.get_opt("acme-scim").await.unwrap().is_some_and(|d| d.metadata.uid != uid0) })
            .await,
        "the Deployment is recreated"
    );

    let edit = json!({"data": {"serve.yaml": "listen: 0.0.0.0:1\n"}});
    cms.patch("acme-scim-config", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            cms.get("acme-scim-config").await.unwrap().data.unwrap()["serve.yaml"].contains("keyFile")
        })
        .await,
        "the edited ConfigMap is restored"
    );

    let scale = json!({"spec": {"replicas": 3}});
    deps.patch("acme-scim", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    assert!(
        wait_until(WAIT, || async { deps.get("acme-scim").await.unwrap().spec.unwrap().replicas == Some(1) }).await,
        "replicas are set back to 1"
    );

    // The hash file and a key file are restored; the token survives (it lives in its own Secret).
    let token = env.secret_text("acme-scim-key-entra", "token").await.unwrap();
    secrets.delete("acme-scim-keys", &DeleteParams::default()).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            env.secret_text("acme-scim-keys", "keys.yaml").await.is_some_and(|f| f.contains(&sha(&token)))
        })
        .await
    );

    // The ZITADEL key file: a new machine key is issued and the old one revoked.
    let user = env.machine_user("acme").unwrap();
    let old_key = user.key_ids.clone();
    secrets.delete("acme-scim-zitadel", &DeleteParams::default()).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            let Some(text) = env.secret_text("acme-scim-zitadel", "key.json").await else { return false };
            let kid = serde_json::from_str::<Value>(&text).unwrap()["keyId"].as_str().unwrap().to_string();
            env.zitadel.user(&user.id).unwrap().key_ids == [kid.clone()] && [kid] != old_key[..]
        })
        .await,
        "a new key replaces the lost one in ZITADEL"
    );
    env.wait_condition("acme", "Ready", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zitadel_down_reports_reconciling_then_ready() {
    let mut env = Env::new().await;
    env.zitadel.set_down(true);
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "ZitadelBound", "False", Some("ZitadelUnavailable")).await;
    env.wait_condition("acme", "Reconciling", "True", Some("ZitadelUnavailable")).await;
    assert_eq!(env.condition("acme", "Ready").await.unwrap().0, "False");
    assert_eq!(env.condition("acme", "Stalled").await, None, "an outage is not a stall");
    // Keys and the workload do not wait for ZITADEL.
    assert!(env.secret("acme-scim-key-entra").await.is_some());
    env.zitadel.set_down(false);
    env.wait_condition("acme", "Ready", "True", None).await;
    assert!(env.machine_user("acme").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_admin_credential_stalls_without_hot_retries() {
    let mut env = Env::new().await;
    std::fs::write(env.credential.path(), "not-a-valid-pat").unwrap();
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Stalled", "True", Some("ZitadelUnauthorized")).await;
    assert_eq!(env.condition("acme", "Reconciling").await, None);
    // Backoff, not a hot loop: over 3 s with a 2 s backoff cap, a handful of attempts.
    env.zitadel.reset_calls();
    let mark = env.kube.mark();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = env.zitadel.calls().len();
    assert!(calls <= 6, "{calls} ZITADEL calls in 3 s");
    let status_writes = env.kube.writes_since(mark).iter().filter(|w| w.plural == "scimtenants" && w.changed).count();
    assert_eq!(status_writes, 0, "an unchanged failure writes no status");
    // Fixing the operator's credential (a rotated Secret) recovers without a restart.
    std::fs::write(env.credential.path(), ADMIN_PAT).unwrap();
    env.wait_condition("acme", "Ready", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zitadel_drift_is_repaired() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let user = env.machine_user("acme").unwrap();
    env.zitadel.set_instance_roles(&user.id, &[]);
    assert!(
        wait_until(WAIT, || async { env.instance_roles(&user.id) == ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"] }).await,
        "removed roles are granted again at the next periodic pass"
    );
    // The user itself deleted: created again, with a new key, and the status follows.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/zitadel.user.v2.UserService/DeleteUser", env.zitadel.url))
        .bearer_auth(ADMIN_PAT)
        .json(&json!({"userId": user.id}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(
        wait_until(WAIT, || async {
            let Some(u) = env.machine_user("acme") else { return false };
            let status_id = env.tenant("acme").await.unwrap().status.unwrap().service_user_id;
            u.id != user.id && status_id.as_deref() == Some(u.id.as_str()) && env.instance_roles(&u.id).len() == 2
        })
        .await
    );
    let u = env.machine_user("acme").unwrap();
    assert!(
        wait_until(WAIT, || async {
            env.secret_text("acme-scim-zitadel", "key.json").await.is_some_and(|k| k.contains(&u.id))
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_reconciling_and_resume_restores() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let mut s = spec(json!([{"name": "entra"}]));
    s["suspend"] = json!(true);
    env.apply("acme", s).await;
    env.wait_condition("acme", "Ready", "True", Some("Suspended")).await;
    // Current to kstatus (Flux, kubectl wait): suspended is not "in progress forever".
    env.wait_kstatus("acme", KStatus::Current).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), NS);
    cms.delete("acme-scim-config", &DeleteParams::default()).await.unwrap();
    let restored =
        wait_until(Duration::from_secs(2), || async { cms.get_opt("acme-scim-config").await.unwrap().is_some() }).await;
    assert!(!restored, "a suspended tenant is left alone");
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    assert!(wait_until(WAIT, || async { cms.get_opt("acme-scim-config").await.unwrap().is_some() }).await);
    env.wait_condition("acme", "Ready", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_removes_its_machine_user_but_never_end_users_or_data() {
    let mut env = Env::new().await;
    env.zitadel.add_human(ORG, "350000000000000001", "alice@contoso.com", "alice@contoso.com");
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let user = env.machine_user("acme").unwrap();
    env.tenants().delete("acme", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { env.tenant("acme").await.is_none() }).await, "the finalizer completes");
    assert!(env.zitadel.user(&user.id).is_none(), "the machine user and its keys are gone");
    assert!(env.zitadel.user("350000000000000001").is_some(), "provisioned users stay");
    assert!(
        wait_until(WAIT, || async {
            env.kube.get("apps/v1", "deployments", Some(NS), "acme-scim").is_none()
                && env.secret("acme-scim-key-entra").await.is_none()
        })
        .await,
        "owned children are collected"
    );
    assert!(env.kube.get("v1", "persistentvolumeclaims", Some(NS), "acme-scim-data").is_some(), "the store is kept");
    env.wait_event("Normal", "ServiceUserDeleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_stall_once_and_existing_credentials_are_verified() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("dup", spec(json!([{"name": "a"}, {"name": "a"}]))).await;
    env.wait_condition("dup", "Stalled", "True", Some("InvalidSpec")).await;
    env.wait_event("Warning", "InvalidSpec").await;
    let mark = env.kube.mark();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.kube.writes_since(mark).iter().all(|w| !w.changed), "an invalid spec is not retried");

    // A key Secret that exists but is not the tenant's is never overwritten.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let mut imported = Secret::default();
    imported.metadata.name = Some("imp-scim-key-entra".into());
    imported.data = Some(BTreeMap::from([("token".to_string(), k8s_openapi::ByteString(b"their-token".to_vec()))]));
    secrets.create(&PostParams::default(), &imported).await.unwrap();
    env.apply("imp", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("imp", "Stalled", "True", Some("SecretConflict")).await;
    assert_eq!(env.secret_text("imp-scim-key-entra", "token").await.as_deref(), Some("their-token"));

    // existingSecretRef: a user-provided PAT is checked and its user gets the roles.
    env.zitadel.add_service_user_with_pat("360000000000000001", IAM_ORG, "tenant-pat-1", &[]);
    let mut s = Secret::default();
    s.metadata.name = Some("own-cred".into());
    s.data = Some(BTreeMap::from([("pat".to_string(), k8s_openapi::ByteString(b"tenant-pat-1".to_vec()))]));
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let mut own = spec(json!([{"name": "entra"}]));
    own["zitadel"]["serviceUser"] = json!({"existingSecretRef": {"name": "own-cred", "key": "pat"}});
    env.apply("own", own.clone()).await;
    env.wait_condition("own", "Ready", "True", None).await;
    assert_eq!(env.instance_roles("360000000000000001"), ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    let dep = Api::<Deployment>::namespaced(env.client.clone(), NS).get("own-scim").await.unwrap();
    let vols = dep.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    assert!(vols.iter().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("own-cred")));
    assert!(env.machine_user("own").is_none(), "no managed user for an existing credential");

    // A credential ZITADEL rejects stalls the tenant with a reason.
    own["zitadel"]["serviceUser"] = json!({"existingSecretRef": {"name": "bad-cred", "key": "pat"}});
    s.metadata.name = Some("bad-cred".into());
    s.data = Some(BTreeMap::from([("pat".to_string(), k8s_openapi::ByteString(b"wrong".to_vec()))]));
    secrets.create(&PostParams::default(), &s).await.unwrap();
    env.apply("own", own).await;
    env.wait_condition("own", "Stalled", "True", Some("ServiceUserCredentialRejected")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_health_comes_from_the_server_status() {
    let mut env = Env::new().await;
    *env.server_status.lock() = json!({"users": 42, "groups": 3, "failedRequests": 1,
        "lastRequestTime": "2026-11-28T10:00:00Z",
        "zitadel": {"reachable": true}, "projection": {"pendingOperations": 0, "failingOperations": 0}});
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "ProvisioningHealthy", "True", None).await;
    let p = env.tenant("acme").await.unwrap().status.unwrap().provisioning.unwrap();
    assert_eq!((p.users, p.groups, p.failed_requests), (42, 3, 1));
    *env.server_status.lock() = json!({"users": 42, "groups": 3, "zitadel": {"reachable": true},
        "projection": {"pendingOperations": 9, "failingOperations": 0, "oldestPendingAgeSeconds": 1200}});
    env.wait_condition("acme", "ProvisioningHealthy", "False", Some("ProjectionBacklog")).await;
    assert_eq!(env.condition("acme", "Ready").await.unwrap().0, "True", "a backlog does not make the tenant unready");
    // Pods that are not ready: the server is unavailable, the tenant is not Ready.
    env.kube.set_deployments_ready(false);
    env.wait_condition("acme", "ServerAvailable", "False", Some("MinimumReplicasUnavailable")).await;
    env.wait_condition("acme", "Ready", "False", None).await;
    env.kube.set_deployments_ready(true);
    env.wait_condition("acme", "Ready", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotate_request_is_acted_on_once_per_value_across_restarts() {
    let mut env = Env::new().await;
    env.start().await;
    let keys = || spec(json!([{"name": "entra"}]));
    let rotate = |value: &str| json!({"scim.unique.app/rotate": value});
    // The request is in the manifest from the start: the key is created under it, not rotated after.
    env.apply_annotated("acme", rotate("entra@1"), keys()).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    assert!(wait_until(WAIT, || async { env.last_handled_rotate("acme").await.as_deref() == Some("entra@1") }).await);
    let first = entra_token(&env).await;
    env.wait_passes(0, 3).await;
    assert_eq!(entra_token(&env).await, first, "a key created under a request is not rotated again");

    // A new value in Git is a new request: one rotation, and the annotation stays as applied.
    env.apply_annotated("acme", rotate("entra@2"), keys()).await;
    assert!(
        wait_until(WAIT, || async {
            env.last_handled_rotate("acme").await.as_deref() == Some("entra@2") && entra_token(&env).await != first
        })
        .await
    );
    let second = entra_token(&env).await;
    env.wait_event("Normal", "KeyRotated").await;
    env.wait_passes(0, 3).await;
    assert_eq!(entra_token(&env).await, second, "the same value never rotates twice");
    let annotations = env.tenant("acme").await.unwrap().metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("scim.unique.app/rotate").map(String::as_str), Some("entra@2"), "never removed");

    // A restart: status is the memory. Even a status that lost the last
    // request (the controller died between rotating and writing status) does
    // not rotate again, because the key Secret records its request.
    env.stop_controller(0).await;
    let lost = json!({"status": {"lastHandledRotateAt": "entra@1"}});
    env.tenants().patch_status("acme", &PatchParams::default(), &Patch::Merge(&lost)).await.unwrap();
    let c = env.config();
    let i = env.start_controller(c, None).await;
    assert!(wait_until(WAIT, || async { env.last_handled_rotate("acme").await.as_deref() == Some("entra@2") }).await);
    env.wait_passes(i, 3).await;
    assert_eq!(entra_token(&env).await, second, "a restart does not serve the same request again");

    // `kubectl annotate --overwrite` with a new value rotates once more.
    env.apply_annotated("acme", rotate("entra@3"), keys()).await;
    assert!(
        wait_until(WAIT, || async {
            env.last_handled_rotate("acme").await.as_deref() == Some("entra@3") && entra_token(&env).await != second
        })
        .await
    );
    let third = entra_token(&env).await;
    let file = env.secret_text("acme-scim-keys", "keys.yaml").await.unwrap();
    assert!(file.contains(&sha(&third)) && !file.contains(&sha(&second)), "{file}");
}

async fn entra_token(env: &Env) -> String {
    env.secret_text("acme-scim-key-entra", "token").await.unwrap_or_default()
}

/// The Argo CD health check's fixtures (tests/argocd-health) are the
/// operator's own output: each state here must match its fixture in
/// condition types, statuses and reasons. `SCIM_UPDATE_FIXTURES=1` rewrites
/// them from the live object.
fn check_fixture(env: &Env, name: &str, fixture: &str) {
    let path = format!("{}/tests/argocd-health/testdata/{fixture}.yaml", env!("CARGO_MANIFEST_DIR"));
    let live = fixture_of(env, &env.raw(name));
    if std::env::var_os("SCIM_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, serde_yaml::to_string(&live).unwrap()).unwrap();
        return;
    }
    let stored: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let summary = |o: &Value| -> Vec<(String, String, String)> {
        o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let f = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (f("type"), f("status"), f("reason"))
            })
            .collect()
    };
    assert_eq!(
        (summary(&live), &live["spec"]["suspend"], kstatus::compute(&live)),
        (summary(&stored), &stored["spec"]["suspend"], kstatus::compute(&stored)),
        "{path} no longer matches the operator's status: regenerate it with SCIM_UPDATE_FIXTURES=1 \
         cargo test --test operator kstatus_, then check cargo test --test argocd_health"
    );
}

/// A live tenant without what differs between runs (uids, times, ports).
fn fixture_of(env: &Env, live: &Value) -> Value {
    let mut o = json!({"apiVersion": live["apiVersion"], "kind": live["kind"],
        "metadata": {"name": live["metadata"]["name"], "namespace": live["metadata"]["namespace"],
            "generation": live["metadata"]["generation"]},
        "spec": live["spec"], "status": live["status"]});
    for c in o["status"]["conditions"].as_array_mut().into_iter().flatten() {
        c["lastTransitionTime"] = json!("2026-12-01T10:00:00Z");
    }
    for k in o["status"]["keys"].as_array_mut().into_iter().flatten() {
        k["createdAt"] = json!("2026-12-01T10:00:00Z");
        k["fingerprint"] = json!("0123456789ab");
    }
    let mut text = o.to_string().replace(&env.zitadel.url, "https://zitadel.example.com");
    if let Some(user) = o["status"]["serviceUserId"].as_str() {
        text = text.replace(user, "300000000000000001");
    }
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_reads_stalled_ready_reconciling_and_suspended_tenants_as_intended() {
    let mut env = Env::new().await;
    std::fs::write(env.credential.path(), "not-a-valid-pat").unwrap();
    env.start().await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;

    // Stalled: a human must act. kstatus Failed; Argo CD Degraded.
    env.wait_condition("acme", "Stalled", "True", Some("ZitadelUnauthorized")).await;
    let r = env.wait_kstatus("acme", KStatus::Failed).await;
    assert_eq!(r.reason, "ZitadelUnauthorized");
    check_fixture(&env, "acme", "degraded");

    // Ready: Current; Healthy.
    std::fs::write(env.credential.path(), ADMIN_PAT).unwrap();
    env.wait_condition("acme", "Ready", "True", Some("Ready")).await;
    env.wait_kstatus("acme", KStatus::Current).await;
    check_fixture(&env, "acme", "healthy");

    // Reconciling: the pods are not ready yet. InProgress; Progressing.
    env.kube.set_deployments_ready(false);
    env.wait_condition("acme", "Reconciling", "True", Some("MinimumReplicasUnavailable")).await;
    let r = env.wait_kstatus("acme", KStatus::InProgress).await;
    assert_eq!(r.reason, "MinimumReplicasUnavailable");
    check_fixture(&env, "acme", "progressing");

    // Suspended while not ready: Current all the same (nothing is in progress); Argo CD Suspended.
    let mut s = spec(json!([{"name": "entra"}]));
    s["suspend"] = json!(true);
    env.apply("acme", s).await;
    env.wait_condition("acme", "Ready", "True", Some("Suspended")).await;
    env.wait_kstatus("acme", KStatus::Current).await;
    let st = env.tenant("acme").await.unwrap().status.unwrap();
    assert!(st.conditions.iter().all(|c| c.type_ != "Reconciling" && c.type_ != "Stalled"), "{st:?}");
    check_fixture(&env, "acme", "suspended");
    // Every condition says which generation it describes.
    let generation = env.tenant("acme").await.unwrap().metadata.generation;
    assert!(st.conditions.iter().all(|c| c.observed_generation == generation), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over() {
    let mut env = Env::new().await;
    let lease = |id: &str| LeaseConfig {
        name: "scim-operator".into(),
        namespace: "operators".into(),
        identity: id.into(),
        // Long enough that a loaded machine never lets a's lease lapse; the
        // failover below is quick anyway because a releases the lease.
        duration: Duration::from_secs(15),
        renew_every: Duration::from_millis(500),
    };
    let c = env.config();
    env.start_controller(c, Some(lease("a"))).await;
    assert!(wait_until(WAIT, || async { env.metrics(0).await.contains("scim_operator_leader 1") }).await);
    let c = env.config();
    env.start_controller(c, Some(lease("b"))).await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    assert!(env.metrics(1).await.contains("scim_operator_leader 0"), "b stands by");
    assert!(!env.metrics(1).await.contains("scim_operator_reconciles_total"), "b has not reconciled");
    // a stops (and releases the lease): b takes over and reconciles.
    let _ = env.controllers[0].stop.take().unwrap().send(());
    assert!(wait_until(WAIT, || async { env.metrics(1).await.contains("scim_operator_leader 1") }).await);
    env.apply("beta", spec(json!([{"name": "entra"}]))).await;
    env.wait_condition("beta", "Ready", "True", None).await;
    let lease = env.kube.get("coordination.k8s.io/v1", "leases", Some("operators"), "scim-operator").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tenants_become_ready_then_a_minute_passes_without_a_write() {
    let mut env = Env::new().await;
    // With the ZITADEL budget divided (every idle server at 1/s, as the
    // servers' /status confirm): dividing it writes nothing at steady state.
    let mut c = env.config();
    c.zitadel_budget = Some(4000.0);
    env.start_controller(c, None).await;
    for i in 0..100 {
        env.apply(&format!("t{i:03}"), spec(json!([{"name": "entra"}]))).await;
    }
    let ready = wait_until(Duration::from_secs(120), || async {
        env.tenants()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count()
            == 100
    })
    .await;
    assert!(ready, "100 tenants Ready");
    // Ready is written before the same pass's events, and a pass already
    // queued behind the last status write may still run: convergence is
    // every tenant Ready and then 5 s without a write (bounded, so an
    // operator that never stops writing fails here).
    let settled = wait_until(Duration::from_secs(60), || async {
        let mark = env.kube.mark();
        tokio::time::sleep(Duration::from_secs(5)).await;
        env.kube.writes_since(mark).is_empty()
    })
    .await;
    assert!(settled, "the operator stops writing once every tenant is Ready");
    let before = ok_reconciles(&env.metrics(0).await);
    let mark = env.kube.mark();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = env.kube.writes_since(mark);
    assert!(
        writes.is_empty(),
        "{} writes at steady state, e.g. {:?}",
        writes.len(),
        writes.iter().take(5).collect::<Vec<_>>()
    );
    let after = ok_reconciles(&env.metrics(0).await);
    // Periodic passes did run (status polls every second, ZITADEL every 2 s): silence is not idleness.
    assert!(after >= before + 100, "only {} reconciles in 60 s", after - before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespaces_limits_the_controller_to_those_namespaces() {
    let mut env = Env::new().await;
    let mut c = env.config();
    c.watch_namespaces = vec![NS.to_string()];
    env.start_controller(c, None).await;
    env.apply("acme", spec(json!([{"name": "entra"}]))).await;
    let elsewhere: Api<ScimTenant> = Api::namespaced(env.client.clone(), "other");
    let body = json!({"apiVersion": "scim.unique.app/v1alpha1", "kind": "ScimTenant",
        "metadata": {"name": "stray", "namespace": "other"}, "spec": spec(json!([{"name": "entra"}]))});
    elsewhere.patch("stray", &PatchParams::apply("kubectl").force(), &Patch::Apply(&body)).await.unwrap();
    env.wait_condition("acme", "Ready", "True", None).await;
    // acme being Ready shows the controller ran well past the stray tenant's creation.
    let stray = elsewhere.get("stray").await.unwrap();
    assert!(stray.status.is_none() && stray.metadata.finalizers.is_none(), "a namespace not watched is not touched");
    assert!(env.kube.get("v1", "secrets", Some("other"), "stray-scim-key-entra").is_none());
}

/// (apiGroup, resource, verb) triples a Role or ClusterRole file grants.
fn granted(path: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let role: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.push((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_allows_every_request_the_controller_makes() {
    let mut env = Env::new().await;
    let lease = LeaseConfig {
        name: "scim-operator".into(),
        namespace: "operators".into(),
        identity: "a".into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_millis(300),
    };
    let c = env.config();
    env.start_controller(c, Some(lease)).await;
    // A life that touches every kind of child: ingress and NetworkPolicy added and removed,
    // keys added, rotated and removed, deletion.
    let mut s = spec(json!([{"name": "entra"}, {"name": "next"}]));
    s["server"] = json!({"ingress": {"host": "scim.acme.example.com"}});
    env.apply("acme", s).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let patch = json!({"metadata": {"annotations": {"scim.unique.app/rotate": "next"}}});
    env.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_event("Normal", "KeyRotated").await;
    let mut s = spec(json!([{"name": "next"}]));
    s["server"] = json!({"networkPolicy": {"enabled": false}});
    env.apply("acme", s).await;
    assert!(
        wait_until(WAIT, || async {
            env.kube.get("networking.k8s.io/v1", "ingresses", Some(NS), "acme-scim").is_none()
                && env.kube.get("networking.k8s.io/v1", "networkpolicies", Some(NS), "acme-scim").is_none()
        })
        .await
    );
    env.tenants().delete("acme", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { env.tenant("acme").await.is_none() }).await);

    let cluster = granted("config/rbac/role.yaml");
    let leader = granted("config/rbac/leader_election_role.yaml");
    let mut seen: Vec<_> = env.kube.access().into_iter().filter(|a| a.user == "controller").collect();
    seen.sort();
    seen.dedup();
    assert!(seen.iter().any(|a| a.resource == "leases"), "leader election ran: {seen:?}");
    for a in &seen {
        let want = (a.group.clone(), a.resource.clone(), a.verb.clone());
        let ok = if a.resource == "leases" {
            a.namespace.as_deref() == Some("operators") && leader.contains(&want)
        } else {
            cluster.contains(&want)
        };
        assert!(ok, "the shipped RBAC does not allow {a:?}");
    }
    // Every verb the ClusterRole grants on children is one the controller needs.
    // And nothing more: every grant is used, except what only a real API
    // server asks for (the fake creates by apply under `patch`; setting
    // blockOwnerDeletion needs `update` on the owner's finalizers).
    let unused: Vec<_> = cluster
        .iter()
        .filter(|(g, r, v)| !seen.iter().any(|a| &a.group == g && &a.resource == r && &a.verb == v))
        .filter(|(_, r, v)| v != "create" && !(r == "scimtenants/finalizers" && v == "update"))
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_and_pod_settings_are_applied_repaired_and_quiet() {
    let mut env = Env::new().await;
    let mut c = env.config();
    c.settings.image_pull_secrets = vec!["operator-registry".into()];
    c.settings.network_policy.admin_from_namespaces = vec!["scim-operator".into(), "monitoring".into()];
    c.settings.network_policy.scim_from = vec![
        serde_json::from_value(
            json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}),
        )
        .unwrap(),
    ];
    env.start_controller(c, None).await;
    let mut s = spec(json!([{"name": "entra"}]));
    s["server"] = json!({
        "nodeSelector": {"pool": "identity"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "identity", "effect": "NoSchedule"}],
        "priorityClassName": "tenant-critical",
        "podLabels": {"team": "identity"},
        "podAnnotations": {"example.com/owner": "identity"},
        "ingress": {"host": "scim.acme.example.com", "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}}
    });
    env.apply("acme", s.clone()).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let st = env.tenant("acme").await.unwrap().status.unwrap();
    assert_eq!(st.endpoint.as_deref(), Some("http://scim.acme.example.com/scim/v2"), "no TLS on the Ingress");

    let deps: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let pod = deps.get("acme-scim").await.unwrap().spec.unwrap().template;
    let pod_spec = pod.spec.unwrap();
    assert_eq!(pod_spec.image_pull_secrets.unwrap()[0].name, "operator-registry", "the operator's own by default");
    assert_eq!(pod_spec.node_selector.unwrap()["pool"], "identity");
    assert_eq!(pod_spec.tolerations.unwrap()[0].value.as_deref(), Some("identity"));
    assert_eq!(pod_spec.priority_class_name.as_deref(), Some("tenant-critical"));
    let meta = pod.metadata.unwrap();
    assert_eq!(meta.labels.unwrap()["team"], "identity");
    assert_eq!(meta.annotations.unwrap()["example.com/owner"], "identity");
    let ingress = env.kube.get("networking.k8s.io/v1", "ingresses", Some(NS), "acme-scim").unwrap();
    assert_eq!(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt");

    let policy = || env.kube.get("networking.k8s.io/v1", "networkpolicies", Some(NS), "acme-scim");
    let np = policy().expect("a NetworkPolicy per tenant");
    let uid = env.tenant("acme").await.unwrap().metadata.uid.unwrap();
    assert_eq!(np["metadata"]["ownerReferences"][0]["uid"], json!(uid));
    assert_eq!(np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"], "acme");
    assert_eq!(np["spec"]["ingress"][0]["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    assert_eq!(np["spec"]["ingress"][1]["ports"], json!([{"port": 9090, "protocol": "TCP"}]));
    let zitadel_port: i64 = env.zitadel.url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    assert_eq!(np["spec"]["egress"][1]["ports"], json!([{"port": zitadel_port, "protocol": "TCP"}]));

    // Someone opens the admin port to the whole cluster: closed again.
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> = Api::namespaced(env.client.clone(), NS);
    let open = json!({"spec": {"ingress": [{"ports": [{"port": 9090, "protocol": "TCP"}]}]}});
    policies.patch("acme-scim", &PatchParams::default(), &Patch::Merge(&open)).await.unwrap();
    assert!(
        wait_until(WAIT, || async { policy().is_some_and(|p| p["spec"]["ingress"] == np["spec"]["ingress"]) }).await,
        "the edited NetworkPolicy is restored"
    );
    policies.delete("acme-scim", &DeleteParams::default()).await.unwrap();
    assert!(
        wait_until(WAIT, || async { policy().is_some_and(|p| p["metadata"]["uid"] != np["metadata"]["uid"]) }).await,
        "the deleted NetworkPolicy is recreated"
    );
    // Someone drops the tolerations: the pod could not be scheduled on its pool; restored.
    let edit = json!({"spec": {"template": {"spec": {"tolerations": null, "nodeSelector": null}}}});
    deps.patch("acme-scim", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            let p = deps.get("acme-scim").await.unwrap().spec.unwrap().template.spec.unwrap();
            p.tolerations.is_some_and(|t| t.len() == 1) && p.node_selector.is_some_and(|n| n["pool"] == "identity")
        })
        .await,
        "the pod settings are restored"
    );

    // Repaired, the operator is quiet again: passes run (status every second), nothing is written.
    let quiet = wait_until(WAIT, || async {
        let mark = env.kube.mark();
        tokio::time::sleep(Duration::from_secs(3)).await;
        env.kube.writes_since(mark).is_empty()
    })
    .await;
    assert!(quiet, "writes at steady state: {:?}", env.kube.writes().iter().rev().take(5).collect::<Vec<_>>());

    // Switched off in the spec: the policy goes.
    s["server"]["networkPolicy"] = json!({"enabled": false});
    env.apply("acme", s).await;
    assert!(wait_until(WAIT, || async { policy().is_none() }).await, "networkPolicy.enabled: false removes it");
}

/// The built-in ClusterRoles as Kubernetes ships them: empty, filled by aggregation.
fn builtin_aggregated_role(name: &str) -> k8s_openapi::api::rbac::v1::ClusterRole {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}
        ]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_admin_manages_tenants_through_the_aggregated_roles_and_viewers_never_read_secrets() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
    let mut env = Env::new().await;
    let roles: Api<ClusterRole> = Api::all(env.client.clone());
    for name in ["admin", "edit", "view"] {
        roles.create(&PostParams::default(), &builtin_aggregated_role(name)).await.unwrap();
    }
    for file in ["role.yaml", "scimtenant_editor_role.yaml", "scimtenant_viewer_role.yaml"] {
        let text = std::fs::read_to_string(format!("{}/config/rbac/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        roles.create(&PostParams::default(), &serde_yaml::from_str(&text).unwrap()).await.unwrap();
    }
    let bind = |kind: &str, user: &str, role: &str| -> Value {
        json!({"metadata": {"name": format!("{user}-{role}")}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}], "kind": kind})
    };
    let controller_binding: ClusterRoleBinding =
        serde_json::from_value(bind("ClusterRoleBinding", "controller", "scim-operator")).unwrap();
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .create(&PostParams::default(), &controller_binding)
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(env.client.clone(), NS);
    for (user, role) in [("alice", "admin"), ("bob", "view")] {
        bindings
            .create(&PostParams::default(), &serde_json::from_value(bind("RoleBinding", user, role)).unwrap())
            .await
            .unwrap();
    }
    env.kube.enforce_rbac(true);
    env.start().await;

    // alice administers the namespace: she creates, edits, reads and deletes ScimTenants.
    let alice: Api<ScimTenant> = Api::namespaced(env.kube.client_as("alice"), NS);
    let body = |keys: Value| {
        json!({"apiVersion": "scim.unique.app/v1alpha1", "kind": "ScimTenant",
        "metadata": {"name": "acme", "namespace": NS}, "spec": spec(keys)})
    };
    alice
        .patch("acme", &PatchParams::apply("alice").force(), &Patch::Apply(&body(json!([{"name": "entra"}]))))
        .await
        .unwrap();
    env.wait_condition("acme", "Ready", "True", None).await;
    alice
        .patch(
            "acme",
            &PatchParams::apply("alice").force(),
            &Patch::Apply(&body(json!([{"name": "entra"}, {"name": "next"}]))),
        )
        .await
        .unwrap();
    assert!(alice.get_status("acme").await.unwrap().status.is_some(), "alice reads the status");
    assert_eq!(alice.list(&Default::default()).await.unwrap().items.len(), 1);
    let elsewhere: Api<ScimTenant> = Api::namespaced(env.kube.client_as("alice"), "other");
    let denied = elsewhere.list(&Default::default()).await.unwrap_err();
    assert!(matches!(&denied, kube::Error::Api(s) if s.code == 403), "{denied:?}: her RoleBinding is for {NS} only");

    // bob views: ScimTenants and their status, no writes, no Secrets.
    let bob: Api<ScimTenant> = Api::namespaced(env.kube.client_as("bob"), NS);
    let seen = bob.get_status("acme").await.unwrap().status.unwrap();
    assert!(seen.endpoint.is_some() && !seen.keys.is_empty(), "bob sees the endpoint and key fingerprints");
    let mut other = body(json!([{"name": "entra"}]));
    other["metadata"]["name"] = json!("bobs");
    let denied = bob.patch("bobs", &PatchParams::apply("bob"), &Patch::Apply(&other)).await.unwrap_err();
    assert!(matches!(&denied, kube::Error::Api(s) if s.code == 403 && s.reason == "Forbidden"), "{denied:?}");
    let token = Api::<Secret>::namespaced(env.kube.client_as("bob"), NS).get("acme-scim-key-entra").await.unwrap_err();
    assert!(matches!(&token, kube::Error::Api(s) if s.code == 403), "a viewer never reads a key Secret: {token:?}");
    assert!(bob.delete("acme", &DeleteParams::default()).await.is_err());

    alice.delete("acme", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { env.tenant("acme").await.is_none() }).await, "the finalizer completes");

    // The fake's RBAC log: every decision as the authorizer made it.
    let log = env.kube.access();
    let decided = |user: &str, verb: &str, resource: &str| {
        log.iter()
            .filter(|a| a.user == user && a.verb == verb && a.resource == resource)
            .map(|a| a.allowed)
            .collect::<Vec<_>>()
    };
    for (verb, resource) in
        [("patch", "scimtenants"), ("get", "scimtenants/status"), ("list", "scimtenants"), ("delete", "scimtenants")]
    {
        assert!(
            decided("alice", verb, resource).contains(&true),
            "alice {verb} {resource}: {:?}",
            decided("alice", verb, resource)
        );
    }
    assert_eq!(decided("bob", "get", "secrets"), [false]);
    assert_eq!(decided("bob", "patch", "scimtenants"), [false]);
    assert_eq!(decided("bob", "delete", "scimtenants"), [false]);
    assert!(decided("bob", "get", "scimtenants/status").iter().all(|a| *a));
    let refused: Vec<_> = log.iter().filter(|a| a.user == "controller" && !a.allowed).collect();
    assert!(refused.is_empty(), "the controller needs more than config/rbac grants: {refused:?}");
}

/// The self-service application the operator made for tenant `name`.
fn self_service_app(env: &Env, name: &str) -> Option<scim_test_support::zitadel_fake::FakeApp> {
    let app_name = format!("scim-self-service-{NS}.{name}");
    env.zitadel.apps().into_iter().find(|a| a.name == app_name)
}

async fn serve_yaml(env: &Env, name: &str) -> serde_yaml::Value {
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), NS).get(&format!("{name}-scim-config")).await.unwrap();
    serde_yaml::from_str(&cm.data.unwrap()["serve.yaml"]).unwrap()
}

async fn ingress_paths(env: &Env, name: &str) -> Vec<String> {
    let Some(ing) = env.kube.get("networking.k8s.io/v1", "ingresses", Some(NS), &format!("{name}-scim")) else {
        return vec![];
    };
    ing["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["path"].as_str().unwrap(),
                p["pathType"].as_str().unwrap(),
                p["backend"]["service"]["port"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// Secret names the Deployment mounts, with their mount paths.
async fn mounted_secrets(env: &Env, name: &str) -> Vec<(String, String)> {
    let dep = Api::<Deployment>::namespaced(env.client.clone(), NS).get(&format!("{name}-scim")).await.unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    let volumes = pod.volumes.unwrap_or_default();
    pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v.name == m.name)?;
            Some((v.secret.as_ref()?.secret_name.clone()?, m.mount_path))
        })
        .collect()
}

fn self_service_spec(self_service: Value) -> Value {
    let mut s = spec(json!([{"name": "entra"}]));
    s["server"] = json!({"ingress": {"host": "scim.acme.example.com"}});
    s["selfService"] = self_service;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_gets_an_api_application_that_goes_when_switched_off_and_with_the_tenant() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", self_service_spec(json!({"enabled": true, "maxKeys": 5}))).await;
    env.wait_condition("acme", "SelfServiceReady", "True", Some("ApplicationReady")).await;
    env.wait_condition("acme", "Ready", "True", None).await;

    // ZITADEL: a private-key JWT API application in the tenant's project, with exactly the key
    // the operator-owned Secret holds.
    let app = self_service_app(&env, "acme").expect("the API application");
    assert_eq!((app.project_id.as_str(), app.org.as_str()), (PROJECT, IAM_ORG));
    assert_eq!(app.auth_method, "API_AUTH_METHOD_TYPE_PRIVATE_KEY_JWT");
    let key_file: Value =
        serde_json::from_str(&env.secret_text("acme-scim-introspection", "key.json").await.unwrap()).unwrap();
    assert_eq!((key_file["type"].as_str(), key_file["appId"].as_str()), (Some("application"), Some(app.id.as_str())));
    assert_eq!(app.key_ids, [key_file["keyId"].as_str().unwrap().to_string()]);
    assert_eq!(env.secret_text("acme-scim-introspection", "clientId").await.as_deref(), Some(app.client_id.as_str()));
    let secret = env.secret("acme-scim-introspection").await.unwrap();
    let t = env.tenant("acme").await.unwrap();
    assert_eq!(owner_uid(&secret), t.metadata.uid, "the Secret goes with the tenant");

    // The server: the Secret mounted, serve.yaml's selfService section pointing at it, and the
    // Ingress routing both GraphQL paths to the SCIM port.
    assert!(
        mounted_secrets(&env, "acme")
            .await
            .contains(&("acme-scim-introspection".into(), "/etc/scim/introspection".into()))
    );
    let serve = serve_yaml(&env, "acme").await;
    let ss = &serve["selfService"];
    assert_eq!(ss["maxKeys"].as_u64(), Some(5));
    assert_eq!(ss["introspection"]["clientId"].as_str(), Some(app.client_id.as_str()));
    assert_eq!(ss["introspection"]["keyFile"].as_str(), Some("/etc/scim/introspection/key.json"));
    let parsed: scim_operator::config::ServeConfig = serde_yaml::from_value(serve.clone()).unwrap();
    parsed.validate().unwrap();
    assert_eq!(
        ingress_paths(&env, "acme").await,
        ["/scim/v2 Prefix scim", "/graphql Exact scim", "/scope-management/graphql Exact scim"]
    );
    let st = t.status.unwrap().self_service.expect("status.selfService");
    assert_eq!(
        (st.application_id.as_deref(), st.client_id.as_deref()),
        (Some(app.id.as_str()), Some(app.client_id.as_str()))
    );

    // The number of keys the organisation's admins made comes from the server's /status.
    env.server_status.lock()["selfServiceKeys"] =
        json!({"count": 2, "lastCreatedAt": "2026-12-02T09:00:00Z", "lastCreatedBy": "u1", "lastDeletedAt": null});
    assert!(
        wait_until(WAIT, || async {
            let s = env.tenant("acme").await.and_then(|t| t.status?.self_service);
            s.is_some_and(|s| s.api_keys == Some(2) && s.last_key_created_at.as_deref() == Some("2026-12-02T09:00:00Z"))
        })
        .await,
        "status.selfService.apiKeys follows /status"
    );

    // Steady state: periodic passes (resync 2 s) write nothing and make no application or key.
    let settled = wait_until(WAIT, || async {
        let mark = env.kube.mark();
        tokio::time::sleep(Duration::from_secs(1)).await;
        env.kube.writes_since(mark).is_empty()
    })
    .await;
    assert!(settled);
    env.zitadel.reset_calls();
    let mark = env.kube.mark();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = env.kube.writes_since(mark);
    assert!(
        writes.is_empty(),
        "{} writes at steady state: {:?}",
        writes.len(),
        writes.iter().take(5).collect::<Vec<_>>()
    );
    for call in ["AddAPIApp", "AddAppKey", "RemoveAppKey", "RemoveApp"] {
        assert_eq!(env.zitadel.call_count(call), 0, "{call} at steady state");
    }
    assert!(env.zitadel.call_count("ListAppKeys") >= 1, "the application is still checked against ZITADEL");

    // A lost Secret: a new key, and the old one revoked once the new one is stored.
    let old_key = app.key_ids.clone();
    Api::<Secret>::namespaced(env.client.clone(), NS)
        .delete("acme-scim-introspection", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        wait_until(WAIT, || async {
            let Some(text) = env.secret_text("acme-scim-introspection", "key.json").await else { return false };
            let kid = serde_json::from_str::<Value>(&text).unwrap()["keyId"].as_str().unwrap().to_string();
            self_service_app(&env, "acme").is_some_and(|a| a.key_ids == [kid.clone()] && a.id == app.id)
                && [kid] != old_key[..]
        })
        .await,
        "a new key replaces the lost one in the same application"
    );

    // Switched off: the application and its Secret go, and so do the mount, the section and the routes.
    env.apply("acme", self_service_spec(json!({"enabled": false}))).await;
    assert!(
        wait_until(WAIT, || async {
            self_service_app(&env, "acme").is_none()
                && env.secret("acme-scim-introspection").await.is_none()
                && ingress_paths(&env, "acme").await == ["/scim/v2 Prefix scim"]
                && serve_yaml(&env, "acme").await.get("selfService").is_none()
                && env.tenant("acme").await.and_then(|t| t.status).is_some_and(|s| {
                    s.self_service.is_none() && s.conditions.iter().all(|c| c.type_ != "SelfServiceReady")
                })
        })
        .await,
        "switching self-service off removes what it added"
    );
    assert!(mounted_secrets(&env, "acme").await.iter().all(|(s, _)| s != "acme-scim-introspection"));
    env.wait_event("Normal", "IntrospectionAppDeleted").await;
    env.wait_condition("acme", "Ready", "True", None).await;

    // On again, then the tenant deleted: the finalizer removes the new application.
    env.apply("acme", self_service_spec(json!({"enabled": true}))).await;
    env.wait_condition("acme", "SelfServiceReady", "True", Some("ApplicationReady")).await;
    let again = self_service_app(&env, "acme").expect("made again");
    assert_ne!(again.id, app.id);
    env.tenants().delete("acme", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { env.tenant("acme").await.is_none() }).await, "the finalizer completes");
    assert!(self_service_app(&env, "acme").is_none(), "the finalizer removed the application");
    assert!(env.zitadel.apps().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_with_your_own_application_mounts_your_secret() {
    let mut env = Env::new().await;
    env.start().await;
    // No Secret yet: the tenant says which one it waits for.
    let own = json!({"enabled": true, "adminRole": "Chat.Admin.All", "introspectionSecretRef": {"name": "acme-introspection"}});
    env.apply("acme", self_service_spec(own)).await;
    env.wait_condition("acme", "SelfServiceReady", "False", Some("IntrospectionSecretMissing")).await;
    env.wait_condition("acme", "Stalled", "True", Some("IntrospectionSecretMissing")).await;
    assert!(serve_yaml(&env, "acme").await.get("selfService").is_none(), "no section without a credential");

    // A client id without a credential is named as the problem.
    let (client_id, client_secret) = env.zitadel.add_api_app_basic(PROJECT, "their-introspection");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let mut s = Secret::default();
    s.metadata.name = Some("acme-introspection".into());
    s.data = Some(BTreeMap::from([("clientId".to_string(), k8s_openapi::ByteString(client_id.clone().into_bytes()))]));
    secrets.create(&PostParams::default(), &s).await.unwrap();
    env.wait_condition("acme", "SelfServiceReady", "False", Some("IntrospectionSecretInvalid")).await;

    // The client secret added: mounted and rendered; the operator makes no application of its own.
    let patch = json!({"data": {"clientSecret": base64_text(&client_secret)}});
    secrets.patch("acme-introspection", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_condition("acme", "SelfServiceReady", "True", Some("IntrospectionSecretReady")).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    assert!(
        mounted_secrets(&env, "acme").await.contains(&("acme-introspection".into(), "/etc/scim/introspection".into()))
    );
    let ss = serve_yaml(&env, "acme").await["selfService"].clone();
    assert_eq!(ss["introspection"]["clientId"].as_str(), Some(client_id.as_str()));
    assert_eq!(ss["introspection"]["clientSecretFile"].as_str(), Some("/etc/scim/introspection/clientSecret"));
    assert_eq!(ss["adminRole"].as_str(), Some("Chat.Admin.All"));
    assert_eq!(env.zitadel.apps().len(), 1, "only theirs");
    assert_eq!(env.zitadel.call_count("AddAPIApp"), 0, "the operator makes none");
    assert_eq!(ingress_paths(&env, "acme").await.len(), 3);
    // Deleting the tenant leaves their application alone.
    env.tenants().delete("acme", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { env.tenant("acme").await.is_none() }).await);
    assert_eq!(env.zitadel.apps().len(), 1, "their application stays");
}

fn base64_text(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Writes what the tenant's pod would mount (serve.yaml and the Secrets) below `dir`, with
/// the mount paths moved there: the config the operator rendered, unchanged otherwise
/// (but for publicUrl).
async fn materialise_pod(env: &Env, name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("etc/scim");
    let mounts = [
        ("keys", format!("{name}-scim-keys")),
        ("zitadel", format!("{name}-scim-zitadel")),
        ("introspection", format!("{name}-scim-introspection")),
    ];
    for (mount, secret) in mounts {
        std::fs::create_dir_all(root.join(mount)).unwrap();
        for (k, v) in env.secret(&secret).await.unwrap().data.unwrap() {
            std::fs::write(root.join(mount).join(k), v.0).unwrap();
        }
    }
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), NS).get(&format!("{name}-scim-config")).await.unwrap();
    let serve = cm.data.unwrap()["serve.yaml"].replace("/etc/scim/", &format!("{}/", root.display()));
    // The Ingress host does not resolve here; without publicUrl the server prints where it listens.
    let serve: String = serve.lines().filter(|l| !l.starts_with("publicUrl:")).map(|l| format!("{l}\n")).collect();
    let path = root.join("serve.yaml");
    std::fs::write(&path, serve).unwrap();
    path
}

/// The customer guide's whole path on what the operator provisions: the real server, run
/// with the rendered serve.yaml and the operator's Secrets, creates a key for the org admin's
/// access token (introspected with the operator's API application key), the key opens the
/// SCIM endpoints, and the server's own /status feeds the tenant's key count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_curl_works_against_the_server_the_operator_configured() {
    use scim_test_support::zitadel_fake::UserTokenOptions;
    use scim_test_support::{Options, Server};
    const GUIDE_BODY: &str =
        r#"{"query":"mutation ScimKeyCreate {\n scimKeyCreate {\n id\n key\n }\n}","variables":{}}"#;
    let mut env = Env::new().await;
    let org_admin = "350000000000000009";
    env.zitadel.add_human(ORG, org_admin, "admin@contoso.com", "admin@contoso.com");
    env.zitadel.add_authorization(org_admin, PROJECT, IAM_ORG, &["Chat.Admin.All"]);
    env.start().await;
    let mut s = self_service_spec(json!({"enabled": true}));
    s["keys"] = json!([]);
    env.apply("acme", s).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    env.wait_condition("acme", "KeysReady", "True", Some("SelfServiceKeysOnly")).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = materialise_pod(&env, "acme", dir.path()).await;
    let args = ["--config", cfg.to_str().unwrap()];
    let server = Server::start_with(
        env!("CARGO_BIN_EXE_scim-operator"),
        Options { token: None, extra_args: &args, ..Default::default() },
    );
    let origin = server.base.trim_end_matches("/scim/v2").to_string();
    let http = reqwest::Client::new();
    let graphql = |authorization: String, body: String| {
        http.post(format!("{origin}/scope-management/graphql"))
            .header("content-type", "application/json")
            .header("authorization", authorization)
            .body(body)
            .send()
    };

    // The guide's curl, with the org admin's token as it is.
    let token = env.zitadel.issue_user_token(org_admin, UserTokenOptions::for_project(PROJECT));
    let r = graphql(token.clone(), GUIDE_BODY.into()).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let key = body["data"]["scimKeyCreate"]["key"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let id = body["data"]["scimKeyCreate"]["id"].as_str().unwrap().to_string();
    assert!(env.zitadel.introspections() >= 1, "checked with ZITADEL");
    // Entra's Secret token: the SCIM endpoints answer it.
    assert_eq!(server.client_with(Some(&key)).get("/Users").await.status, 200);

    // The server's own /status, as the operator reads it, shows the key on the tenant.
    let (code, text) = server.admin_get("/status").await;
    assert_eq!(code, 200);
    *env.server_status.lock() = serde_json::from_str(&text).unwrap();
    assert!(
        wait_until(WAIT, || async {
            env.tenant("acme").await.and_then(|t| t.status?.self_service).is_some_and(|s| s.api_keys == Some(1))
        })
        .await,
        "status.selfService.apiKeys from the server's /status: {text}"
    );

    // Later, the old key deleted: the next SCIM request with it is refused.
    let delete = json!({"query": "mutation($id: ID!) { scimKeyDelete(id: $id) }", "variables": {"id": id}});
    let r = graphql(format!("Bearer {token}"), delete.to_string()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.client_with(Some(&key)).get("/Users").await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zitadel_outage_leaves_the_self_service_credential_in_place() {
    let mut env = Env::new().await;
    env.start().await;
    env.apply("acme", self_service_spec(json!({"enabled": true}))).await;
    env.wait_condition("acme", "SelfServiceReady", "True", Some("ApplicationReady")).await;
    let deps: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let template = |d: Deployment| d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    let before = template(deps.get("acme-scim").await.unwrap());
    assert!(before.contains_key("scim.unique.app/introspection-version"), "{before:?}");

    env.zitadel.set_down(true);
    env.wait_condition("acme", "SelfServiceReady", "False", Some("ZitadelUnavailable")).await;
    assert!(env.condition("acme", "Stalled").await.is_none(), "an outage is not a stall (Stalled only while True)");
    // The server keeps its key, section and pod: nothing restarts for an outage.
    assert!(serve_yaml(&env, "acme").await.get("selfService").is_some());
    assert_eq!(template(deps.get("acme-scim").await.unwrap()), before);
    assert!(env.secret("acme-scim-introspection").await.is_some());

    env.zitadel.set_down(false);
    env.wait_condition("acme", "SelfServiceReady", "True", Some("ApplicationReady")).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    assert_eq!(template(deps.get("acme-scim").await.unwrap()), before, "the same key after the outage");
    assert_eq!(env.zitadel.apps().len(), 1);
}

/// Tenant servers as the operator sees them through the ConfigMap and
/// `/status`: each runs at the share in its ConfigMap once the kubelet and
/// the server's reload have taken it, `LAG` later, and reports that rate.
struct BudgetServers {
    names: Vec<String>,
    busy: std::collections::BTreeSet<String>,
    /// (rate it runs at, share seen in the ConfigMap and since when)
    running: BTreeMap<String, (f64, Option<(f64, std::time::Instant)>)>,
    /// The most the servers together ran at, at any tick.
    peak: f64,
}

impl BudgetServers {
    const LAG: Duration = Duration::from_millis(800);

    fn share_in_configmap(kube: &KubeFake, name: &str) -> Option<f64> {
        let cm = kube.get("v1", "configmaps", Some(NS), &format!("{name}-scim-config"))?;
        cm["data"]["zitadel-rate"].as_str()?.trim().parse().ok()
    }

    fn tick(&mut self, env: &Env) {
        let now = std::time::Instant::now();
        for name in &self.names {
            let Some(share) = Self::share_in_configmap(&env.kube, name) else { continue };
            let (rate, seen) = self.running.entry(name.clone()).or_insert((share, None));
            if share != *rate {
                match *seen {
                    Some((s, since)) if s == share && now - since >= Self::LAG => {
                        *rate = share;
                        *seen = None;
                    }
                    Some((s, _)) if s == share => {}
                    _ => *seen = Some((share, now)),
                }
            } else {
                *seen = None;
            }
            let status = json!({"users": 0, "groups": 0, "failedRequests": 0,
                "zitadel": {"reachable": true, "rate": {"limit": *rate, "waiting": 0, "busy": self.busy.contains(name)}},
                "projection": {"pendingOperations": 0, "failingOperations": 0}});
            env.server_status_of.lock().insert(format!("{name}-scim"), status);
        }
        self.peak = self.peak.max(self.running.values().map(|(r, _)| r).sum());
    }

    fn shares(&self) -> Vec<f64> {
        self.names.iter().map(|n| self.running.get(n).map(|(r, _)| *r).unwrap_or(0.0)).collect()
    }

    /// Ticks until the servers' rates (by name order) are as wanted.
    async fn settle(&mut self, env: &Env, want: impl Fn(&[f64]) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !want(&self.shares()) && std::time::Instant::now() < deadline {
            self.tick(env);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(want(&self.shares()), "the servers' rates: {:?}", self.shares());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zitadel_budget_goes_to_busy_servers_and_is_never_exceeded_while_shares_move() {
    let mut env = Env::new().await;
    let mut c = env.config();
    // 20/s: 1 for the operator, 4 fixed for "fixed", 15 for the other four.
    c.zitadel_budget = Some(20.0);
    // The operator's own 1/s is for binding tenants, not for re-checking them every 2 s.
    c.resync = Duration::from_secs(300);
    env.start_controller(c, None).await;
    let names: Vec<String> = ["fixed", "t0", "t1", "t2", "t3"].map(String::from).to_vec();
    for n in &names {
        let mut s = spec(json!([{"name": "entra"}]));
        if n == "fixed" {
            s["zitadel"]["maxRequestsPerSecond"] = json!(4);
        }
        env.apply(n, s).await;
    }
    for n in &names {
        env.wait_condition(n, "Ready", "True", None).await;
    }
    let mut servers = BudgetServers { names, busy: Default::default(), running: BTreeMap::new(), peak: 0.0 };
    // Nobody has work: 1/s each but the override.
    servers.settle(&env, |r| r == [4.0, 1.0, 1.0, 1.0, 1.0]).await;
    // t0 gets work: it takes what the idle ones leave.
    servers.busy.insert("t0".into());
    servers.settle(&env, |r| r == [4.0, 12.0, 1.0, 1.0, 1.0]).await;
    // t1 too: t0 must come down (and say so) before t1 may go up.
    servers.busy.insert("t1".into());
    // 13/s between them: one gets 7, the other 6 (by uid).
    servers
        .settle(&env, |r| r[0] == 4.0 && r[1] + r[2] == 13.0 && r[1].min(r[2]) == 6.0 && r[3] == 1.0 && r[4] == 1.0)
        .await;
    // t0 is done: t1 takes its part.
    servers.busy.remove("t0");
    servers.settle(&env, |r| r == [4.0, 1.0, 12.0, 1.0, 1.0]).await;
    assert!(
        servers.peak <= 19.0,
        "the servers together ran at {}/s, above the 19/s left by the operator",
        servers.peak
    );

    // Settled: the shares stay, and nothing is written.
    let mark = env.kube.mark();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        servers.tick(&env);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes: Vec<_> = env.kube.writes_since(mark).into_iter().filter(|w| w.plural != "events").collect();
    assert!(writes.is_empty(), "writes at steady state: {writes:?}");

    // The tenant with the fixed 4/s is deleted: once its ConfigMap is gone, t1 gets that too.
    env.tenants().delete("fixed", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { env.tenant("fixed").await.is_none() }).await);
    servers.names.retain(|n| n != "fixed");
    servers.running.remove("fixed");
    servers.settle(&env, |r| r == [1.0, 16.0, 1.0, 1.0]).await;
    assert!(servers.peak <= 19.0, "the servers together ran at {}/s", servers.peak);
}
