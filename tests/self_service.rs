//! The self-service key API of `serve` (`POST /graphql`, `/scope-management/graphql`),
//! through the real binary and the ZITADEL fake: the request of Unique's Entra guide
//! creates a SCIM key that works at once, the key is listed without its secret, deleted
//! keys stop working, keys survive restarts, and every refusal stores nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scim_test_support::zitadel_fake::{UserTokenOptions, ZitadelFake};
use scim_test_support::{Options, Server, wait_until};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

const ORG: &str = "310000000000000001";
const IAM_ORG: &str = "310000000000000002";
const OTHER_ORG: &str = "310000000000000003";
const PROJECT: &str = "320000000000000001";
const PAT: &str = "svc-pat-9d1e4a";
const ADMIN: &str = "330000000000000001";
const PLAIN_USER: &str = "330000000000000002";
const STRANGER: &str = "330000000000000003";

/// The body of the guide's curl, byte for byte.
const GUIDE_BODY: &str = r#"{"query":"mutation ScimKeyCreate {\n scimKeyCreate {\n id\n key\n }\n}","variables":{}}"#;

struct Env {
    fake: ZitadelFake,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let fake = ZitadelFake::start().await;
    fake.add_org(ORG, "Contoso", &["contoso.com"]);
    fake.add_org(IAM_ORG, "Cluster IAM", &[]);
    fake.add_org(OTHER_ORG, "Fabrikam", &["fabrikam.com"]);
    fake.add_project(PROJECT, IAM_ORG, &["Chat.User", "Chat.Admin.All"]);
    fake.add_service_user_with_pat("340000000000000001", IAM_ORG, PAT, &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    fake.add_human(ORG, ADMIN, "admin@contoso.com", "admin@contoso.com");
    fake.add_human(ORG, PLAIN_USER, "user@contoso.com", "user@contoso.com");
    fake.add_human(OTHER_ORG, STRANGER, "admin@fabrikam.com", "admin@fabrikam.com");
    // As the projector grants roles: in the project's organisation.
    fake.add_authorization(ADMIN, PROJECT, IAM_ORG, &["Chat.Admin.All"]);
    fake.add_authorization(PLAIN_USER, PROJECT, IAM_ORG, &["Chat.User"]);
    fake.add_authorization(STRANGER, PROJECT, IAM_ORG, &["Chat.Admin.All"]);
    Env { fake, dir: tempfile::tempdir().unwrap() }
}

/// `introspection` is the YAML of `selfService.introspection`.
fn config(env: &Env, introspection: &str, extra: &str) -> PathBuf {
    let pat = env.dir.path().join("pat");
    std::fs::write(&pat, PAT).unwrap();
    let keys = env.dir.path().join("keys.yaml");
    std::fs::write(&keys, keys_file()).unwrap();
    let path = env.dir.path().join("serve.yaml");
    std::fs::write(
        &path,
        format!(
            "keysFile: {}\nzitadel:\n  url: {}\n  credentials: {{patFile: {}}}\n  organizationId: \"{ORG}\"\n  projectId: \"{PROJECT}\"\n  projectOrganizationId: \"{IAM_ORG}\"\n  maxRequestsPerSecond: 1000\nselfService:\n  introspection: {introspection}\n{extra}",
            keys.display(),
            env.fake.url,
            pat.display()
        ),
    )
    .unwrap();
    path
}

/// A keys file with one Kubernetes-managed key, `KUBE_KEY`, named `entra`.
const KUBE_KEY: &str = "scim_kubernetes-managed-key-for-tests";
fn keys_file() -> String {
    use sha2::Digest;
    format!("keys:\n  - {{name: entra, sha256: {}}}\n", hex::encode(sha2::Sha256::digest(KUBE_KEY.as_bytes())))
}

fn basic_introspection(env: &Env) -> String {
    let (client_id, secret) = env.fake.add_api_app_basic(PROJECT, "scim-introspection");
    let secret_file = env.dir.path().join("introspection-secret");
    std::fs::write(&secret_file, secret).unwrap();
    format!("{{clientId: \"{client_id}\", clientSecretFile: {}}}", secret_file.display())
}

fn jwt_introspection(env: &Env) -> String {
    let key = env.fake.add_api_app_with_key(PROJECT, "scim-introspection");
    let key_file = env.dir.path().join("introspection-key.json");
    std::fs::write(&key_file, key).unwrap();
    format!("{{keyFile: {}}}", key_file.display())
}

fn start(cfg: &Path, data: Option<&Path>) -> Server {
    let args = ["--config", cfg.to_str().unwrap()];
    Server::start_with(BIN, Options { token: None, extra_args: &args, data_dir: data, ..Default::default() })
}

/// The server's origin (`http://127.0.0.1:PORT`).
fn origin(s: &Server) -> String {
    s.base.trim_end_matches("/scim/v2").to_string()
}

struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

async fn graphql(s: &Server, path: &str, authorization: Option<&str>, body: &str) -> Answer {
    let mut rb = reqwest::Client::new()
        .post(format!("{}{path}", origin(s)))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        rb = rb.header("authorization", a);
    }
    let r = rb.send().await.expect("graphql request");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), retry_after }
}

fn code(a: &Answer) -> Option<&str> {
    a.body["errors"][0]["extensions"]["code"].as_str()
}

const LIST: &str =
    r#"{"query":"{ scimKeys { id name source createdAt createdBy lastUsedAt expiresAt fingerprint } }"}"#;

async fn api_keys(s: &Server, token: &str) -> Vec<Value> {
    let a = graphql(s, "/graphql", Some(&format!("Bearer {token}")), LIST).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let all = a.body["data"]["scimKeys"].as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|k| k["source"] == "API").collect()
}

async fn scim_status(s: &Server, key: &str) -> u16 {
    s.client_with(Some(key)).get("/Users").await.status
}

fn admin_token(env: &Env) -> String {
    env.fake.issue_user_token(ADMIN, UserTokenOptions::for_project(PROJECT))
}

#[tokio::test]
async fn the_guides_request_creates_a_key_that_works_at_once_and_stops_when_deleted() {
    let env = env().await;
    let cfg = config(&env, &basic_introspection(&env), "");
    let server = start(&cfg, None);
    let token = admin_token(&env);

    // Exactly the guide's curl: the bare token in Authorization, the guide's path and body.
    let a = graphql(&server, "/scope-management/graphql", Some(&token), GUIDE_BODY).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let created = &a.body["data"]["scimKeyCreate"];
    let key = created["key"].as_str().expect("a key").to_string();
    let id = created["id"].as_str().expect("an id").to_string();
    assert!(key.starts_with("scim_") && key.len() >= 48, "{key}");

    // It opens the SCIM endpoints at once, beside the keys file's key.
    assert_eq!(scim_status(&server, &key).await, 200);
    assert_eq!(scim_status(&server, KUBE_KEY).await, 200);

    // Listed without the key itself, with its last use; the Kubernetes key beside it.
    let a = graphql(&server, "/graphql", Some(&format!("Bearer {token}")), LIST).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.to_string().contains(&key), "the key is never shown again");
    let keys = a.body["data"]["scimKeys"].as_array().cloned().unwrap_or_default();
    let mine = keys.iter().find(|k| k["id"] == id.as_str()).expect("the new key is listed");
    assert_eq!(mine["source"], "API");
    assert_eq!(mine["createdBy"], ADMIN);
    assert!(mine["lastUsedAt"].is_string(), "{mine}");
    assert!(mine["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:")), "{mine}");
    let kube = keys.iter().find(|k| k["source"] == "KUBERNETES").expect("the keys file's key");
    assert_eq!(kube["name"], "entra");

    // A Kubernetes key cannot be deleted here; the error says where it is managed.
    let del = |id: &str| json!({"query": "mutation($id: ID!) { scimKeyDelete(id: $id) }", "variables": {"id": id}});
    let kube_id = kube["id"].as_str().unwrap_or_default();
    let a = graphql(&server, "/graphql", Some(&token), &del(kube_id).to_string()).await;
    assert_eq!(code(&a), Some("MANAGED_IN_KUBERNETES"), "{}", a.body);
    assert!(a.body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("Kubernetes")));
    assert_eq!(scim_status(&server, KUBE_KEY).await, 200);

    // Delete: the next SCIM request with the key is refused.
    let a = graphql(&server, "/graphql", Some(&format!("Bearer {token}")), &del(&id).to_string()).await;
    assert_eq!((a.status, &a.body["data"]["scimKeyDelete"]), (200, &json!(true)), "{}", a.body);
    assert_eq!(scim_status(&server, &key).await, 401);
    assert!(api_keys(&server, &token).await.is_empty());

    // /status and /metrics tell what happened.
    let (_, status) = server.admin_get("/status").await;
    let status: Value = serde_json::from_str(&status).unwrap_or(Value::Null);
    let ss = &status["selfServiceKeys"];
    assert_eq!((ss["count"].as_u64(), ss["lastCreatedBy"].as_str()), (Some(0), Some(ADMIN)), "{status}");
    assert_eq!(ss["lastDeletedBy"], ADMIN);
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(metrics.contains(r#"scim_self_service_key_changes_total{change="created"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"scim_self_service_key_changes_total{change="deleted"} 1"#), "{metrics}");
}

#[tokio::test]
async fn keys_survive_a_restart_and_work_with_private_key_jwt_and_jwt_tokens() {
    let env = env().await;
    let cfg = config(&env, &jwt_introspection(&env), "");
    let data = env.dir.path().join("data");
    let server = start(&cfg, Some(&data));
    // A JWT access token whose scopes asked for neither the organisation nor the roles:
    // the server reads both from ZITADEL with its own credential.
    let opts = UserTokenOptions::for_project(PROJECT)
        .jwt()
        .without_scope("urn:zitadel:iam:user:resourceowner")
        .without_scope("urn:zitadel:iam:org:projects:roles");
    let token = env.fake.issue_user_token(ADMIN, opts);
    let body = json!({"query": "mutation($n: String, $d: Int) { k: scimKeyCreate(name: $n, expiresInDays: $d) { id key name expiresAt ...on ScimKey { createdAt } __typename } }",
        "variables": {"n": "entra-prod", "d": 30}});
    let a = graphql(&server, "/graphql", Some(&format!("Bearer {token}")), &body.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let k = &a.body["data"]["k"];
    assert_eq!((k["name"].as_str(), k["__typename"].as_str()), (Some("entra-prod"), Some("ScimKey")));
    assert!(k["expiresAt"].is_string() && k["createdAt"].is_string(), "{k}");
    let key = k["key"].as_str().unwrap_or_default().to_string();
    assert_eq!(scim_status(&server, &key).await, 200);
    assert!(env.fake.call_count("ListAuthorizations") >= 1, "roles came from ZITADEL's authorizations");

    drop(server);
    let server = start(&cfg, Some(&data));
    assert_eq!(scim_status(&server, &key).await, 200, "a stored key works after a restart");
    let listed = api_keys(&server, &token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "entra-prod");
}

#[tokio::test]
async fn every_refusal_has_its_answer_and_stores_nothing() {
    let env = env().await;
    let cfg = config(&env, &basic_introspection(&env), "");
    let server = start(&cfg, None);
    let create = GUIDE_BODY;

    // No token, an unknown token, a revoked one, an expired one, one of a deactivated user.
    let a = graphql(&server, "/graphql", None, create).await;
    assert_eq!((a.status, code(&a)), (401, Some("UNAUTHENTICATED")), "{}", a.body);
    let a = graphql(&server, "/graphql", Some("Bearer not-a-token"), create).await;
    assert_eq!((a.status, code(&a)), (401, Some("UNAUTHENTICATED")), "{}", a.body);
    let revoked = admin_token(&env);
    env.fake.revoke_user_token(&revoked);
    let expired = env.fake.issue_user_token(ADMIN, UserTokenOptions::for_project(PROJECT).lifetime(Duration::ZERO));
    for t in [&revoked, &expired] {
        let a = graphql(&server, "/graphql", Some(t), create).await;
        assert_eq!((a.status, code(&a)), (401, Some("UNAUTHENTICATED")), "{}", a.body);
        assert!(!a.body.to_string().contains(t.as_str()), "the token is never echoed");
    }

    // Another organisation's admin; a user of the organisation without the admin role.
    let stranger = env.fake.issue_user_token(STRANGER, UserTokenOptions::for_project(PROJECT));
    let a = graphql(&server, "/graphql", Some(&stranger), create).await;
    assert_eq!((a.status, code(&a)), (403, Some("FORBIDDEN")), "{}", a.body);
    assert!(a.body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("organisation")), "{}", a.body);
    assert!(!a.body.to_string().contains(&stranger));
    let plain = env.fake.issue_user_token(PLAIN_USER, UserTokenOptions::for_project(PROJECT));
    let a = graphql(&server, "/graphql", Some(&plain), create).await;
    assert_eq!((a.status, code(&a)), (403, Some("FORBIDDEN")), "{}", a.body);
    assert!(a.body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("Chat.Admin.All")), "{}", a.body);

    // Malformed GraphQL, JSON that is no GraphQL request, an unknown field.
    let token = admin_token(&env);
    for bad in [r#"{"query":"mutation { scimKeyCreate { id key "}"#, "[1,2]", "{not json", r#"{"query":"{ nope }"}"#] {
        let a = graphql(&server, "/graphql", Some(&token), bad).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.body["errors"][0]["message"].is_string(), "{}", a.body);
    }
    // Introspection of the schema is off.
    let a = graphql(&server, "/graphql", Some(&token), r#"{"query":"{ __schema { types { name } } }"}"#).await;
    assert!(a.body["data"]["__schema"].is_null(), "{}", a.body);

    // A deactivated user's token, once its cached answer is gone, is refused: a fresh one is.
    let before_deactivation = admin_token(&env);
    env.fake.set_user_active(ADMIN, false);
    let a = graphql(&server, "/graphql", Some(&before_deactivation), create).await;
    assert_eq!((a.status, code(&a)), (401, Some("UNAUTHENTICATED")), "{}", a.body);
    env.fake.set_user_active(ADMIN, true);

    // ZITADEL down: 503, never allowed.
    let fresh = admin_token(&env);
    env.fake.set_down(true);
    let a = graphql(&server, "/graphql", Some(&fresh), create).await;
    assert_eq!((a.status, code(&a)), (503, Some("ZITADEL_UNAVAILABLE")), "{}", a.body);
    env.fake.set_down(false);

    // Nothing was stored by any of them.
    assert!(api_keys(&server, &fresh).await.is_empty());
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(!metrics.contains("change=\"created\""), "{metrics}");
    assert!(metrics.contains(r#"scim_self_service_requests_total{outcome="forbidden"} 2"#), "{metrics}");
}

#[tokio::test]
async fn key_and_rate_limits_hold() {
    let env = env().await;
    let cfg = config(&env, &basic_introspection(&env), "  maxKeys: 3\n");
    let server = start(&cfg, None);
    let token = admin_token(&env);
    for _ in 0..3 {
        let a = graphql(&server, "/graphql", Some(&token), GUIDE_BODY).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body["data"]["scimKeyCreate"]["key"].is_string());
    }
    // At the maximum: KEY_LIMIT, and no fourth key.
    let a = graphql(&server, "/graphql", Some(&token), GUIDE_BODY).await;
    assert_eq!(code(&a), Some("KEY_LIMIT"), "{}", a.body);
    assert!(a.body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("maxKeys")), "{}", a.body);
    // Ten creations a minute per user, counted whether they succeed or not: the 11th is 429.
    for _ in 5..=10 {
        let a = graphql(&server, "/graphql", Some(&token), GUIDE_BODY).await;
        assert_eq!(code(&a), Some("KEY_LIMIT"), "{}", a.body);
    }
    let a = graphql(&server, "/graphql", Some(&token), GUIDE_BODY).await;
    assert_eq!((a.status, code(&a)), (429, Some("RATE_LIMITED")), "{}", a.body);
    let retry: u64 = a.retry_after.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {retry:?}");
    assert_eq!(api_keys(&server, &token).await.len(), 3);
    // Reads are not rate limited.
    assert!(wait_until(Duration::from_secs(5), || async { api_keys(&server, &token).await.len() == 3 }).await);
}

#[test]
fn self_service_without_zitadel_is_a_config_error_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.yaml");
    std::fs::write(&cfg, "selfService:\n  introspection: {clientId: x, clientSecretFile: /s}\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("selfService needs the zitadel: section"), "{err}");
}
