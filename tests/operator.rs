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
            zitadel_instance_host: None,
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
        assert_eq!(st.conditions.iter().find(|c| c.type_ == ty).unwrap().status, "False");
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

    // Rotate now: a new token, the annotation is consumed.
    let patch = json!({"metadata": {"annotations": {"scim.unique.app/rotate": "next"}}});
    env.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            env.secret_text("acme-scim-key-next", "token").await.is_some_and(|t| t != next)
                && env.tenant("acme").await.unwrap().metadata.annotations.unwrap_or_default().is_empty()
        })
        .await
    );
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
    assert_eq!(env.condition("acme", "Stalled").await.unwrap().0, "False", "an outage is not a stall");
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
    assert_eq!(env.condition("acme", "Reconciling").await.unwrap().0, "False");
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
    env.wait_condition("acme", "Ready", "False", Some("Suspended")).await;
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
    let reconciles = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("scim_operator_reconciles_total{result=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = reconciles(&env.metrics(0).await);
    let mark = env.kube.mark();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = env.kube.writes_since(mark);
    assert!(
        writes.is_empty(),
        "{} writes at steady state, e.g. {:?}",
        writes.len(),
        writes.iter().take(5).collect::<Vec<_>>()
    );
    let after = reconciles(&env.metrics(0).await);
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
    // A life that touches every kind of child: ingress, keys added, rotated and removed, deletion.
    let mut s = spec(json!([{"name": "entra"}, {"name": "next"}]));
    s["server"] = json!({"ingress": {"host": "scim.acme.example.com"}});
    env.apply("acme", s).await;
    env.wait_condition("acme", "Ready", "True", None).await;
    let patch = json!({"metadata": {"annotations": {"scim.unique.app/rotate": "next"}}});
    env.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_event("Normal", "KeyRotated").await;
    env.apply("acme", spec(json!([{"name": "next"}]))).await;
    assert!(
        wait_until(WAIT, || async {
            env.kube.get("networking.k8s.io/v1", "ingresses", Some(NS), "acme-scim").is_none()
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
