//! SCIM users and groups projected into ZITADEL (the fake in tests/support),
//! through the real binary, with the failures the projector must survive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scim_test_support::zitadel_fake::ZitadelFake;
use scim_test_support::{Options, Server, patch_ops, wait_until};
use serde_json::{Value, json};

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

const ORG: &str = "210000000000000001";
const IAM_ORG: &str = "210000000000000002";
const OTHER_ORG: &str = "210000000000000003";
const PROJECT: &str = "220000000000000001";
const IDP: &str = "230000000000000001";
const PAT: &str = "svc-pat-6b7c2f";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn seed(fake: &ZitadelFake) {
    fake.add_org(ORG, "Contoso", &["contoso.com"]);
    fake.add_org(IAM_ORG, "Cluster IAM", &[]);
    fake.add_org(OTHER_ORG, "Fabrikam", &["fabrikam.com"]);
    fake.add_project(PROJECT, IAM_ORG, &["Chat.User", "Chat.Admin.All"]);
    fake.add_idp(IDP, None);
    fake.add_service_user_with_pat("240000000000000001", IAM_ORG, PAT, &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
}

fn config(dir: &Path, fake: &ZitadelFake, credentials: &str) -> PathBuf {
    let path = dir.join("serve.yaml");
    std::fs::write(
        &path,
        format!(
            "zitadel:\n  url: {}\n  credentials: {credentials}\n  organizationId: \"{ORG}\"\n  projectId: \"{PROJECT}\"\n  projectOrganizationId: \"{IAM_ORG}\"\n  idpId: \"{IDP}\"\n  defaultRoles: [Chat.User]\n  groupRoles:\n    - {{group: Unique Admins, roles: [Chat.Admin.All]}}\n  maxRetryDelaySeconds: 1\n  maxRequestsPerSecond: 1000\n",
            fake.url
        ),
    )
    .unwrap();
    path
}

fn pat_config(dir: &Path, fake: &ZitadelFake) -> PathBuf {
    let pat = dir.join("pat");
    std::fs::write(&pat, format!("{PAT}\n")).unwrap();
    config(dir, fake, &format!("{{patFile: {}}}", pat.display()))
}

fn start(cfg: &Path, data: Option<&Path>) -> Server {
    let args = ["--config", cfg.to_str().unwrap()];
    Server::start_with(BIN, Options { extra_args: &args, data_dir: data, ..Default::default() })
}

fn entra_user(upn: &str, object_id: &str) -> Value {
    let local = upn.split('@').next().unwrap();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": object_id, "userName": upn, "active": "True",
        "displayName": format!("{local} Tester"),
        "name": {"givenName": local, "familyName": "Tester"},
        "emails": [{"primary": true, "type": "work", "value": upn}],
        ENTERPRISE: {"employeeNumber": "E-1"}
    })
}

async fn status(server: &Server) -> Value {
    serde_json::from_str(&server.admin_get("/status").await.1).unwrap()
}

async fn drained(server: &Server) -> bool {
    wait_until(Duration::from_secs(60), || async { status(server).await["projection"]["pendingOperations"] == 0 }).await
}

fn roles_of(fake: &ZitadelFake, user: &str) -> Vec<String> {
    let mut r: Vec<String> = fake
        .authorizations()
        .into_iter()
        .filter(|a| a.user_id == user && a.project_id == PROJECT && a.org_id == IAM_ORG)
        .flat_map(|a| a.roles)
        .collect();
    r.sort();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_cycle_ends_with_the_right_zitadel_state() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    let dir = tempfile::tempdir().unwrap();
    let server = start(&pat_config(dir.path(), &fake), None);
    let c = server.client();
    assert!(wait_until(Duration::from_secs(10), || async { server.admin_get("/readyz").await.0 == 200 }).await);

    let alice = c.post("/Users", &entra_user("alice@contoso.com", "0a21f0f2-0000-4000-8000-00000000000a")).await;
    assert_eq!(alice.status, 201, "{}", alice.text);
    let alice = alice.body["id"].as_str().unwrap().to_string();
    let bob = c.post("/Users", &entra_user("bob@contoso.com", "0a21f0f2-0000-4000-8000-00000000000b")).await;
    let bob = bob.body["id"].as_str().unwrap().to_string();

    // One ZITADEL user per SCIM user, same id, in the customer organisation.
    let z = fake.user(&alice).expect("alice in ZITADEL under the SCIM id");
    assert_eq!((z.org.as_str(), z.username.as_str()), (ORG, "alice@contoso.com"));
    assert_eq!(
        (z.given_name.as_str(), z.family_name.as_str(), z.display_name.as_str()),
        ("alice", "Tester", "alice Tester")
    );
    assert!(z.email_verified, "no verification mail for provisioned users");
    assert!(!z.password_set);
    assert_eq!(
        z.metadata.get("scim.externalId").map(|v| v.as_slice()),
        Some(&b"0a21f0f2-0000-4000-8000-00000000000a"[..])
    );
    assert_eq!(z.idp_links.len(), 1);
    assert_eq!(
        (z.idp_links[0].idp_id.as_str(), z.idp_links[0].user_id.as_str()),
        (IDP, "0a21f0f2-0000-4000-8000-00000000000a")
    );
    assert_eq!(roles_of(&fake, &alice), ["Chat.User"]);
    assert_eq!(fake.call_count("AddHumanUser"), 2);

    // Group membership adds the group's roles.
    let g = c.post("/Groups", &json!({"displayName": "Unique Admins", "externalId": "g-1"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.patch(
        &format!("/Groups/{g}"),
        &patch_ops(json!([{"op": "Add", "path": "members", "value": [{"value": alice}]}])),
    )
    .await;
    assert!(drained(&server).await);
    assert_eq!(roles_of(&fake, &alice), ["Chat.Admin.All", "Chat.User"]);
    assert_eq!(roles_of(&fake, &bob), ["Chat.User"]);

    // Profile change: only what changed is sent.
    fake.reset_calls();
    let r = c
        .patch(
            &format!("/Users/{alice}"),
            &patch_ops(json!([{"op": "Replace", "path": "displayName", "value": "Alice T."}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fake.user(&alice).unwrap().display_name, "Alice T.");
    assert_eq!(fake.calls().len(), 1, "one call for one changed attribute: {:?}", fake.calls());

    // Disable and enable.
    c.patch(&format!("/Users/{bob}"), &patch_ops(json!([{"op": "Replace", "path": "active", "value": "False"}]))).await;
    assert_eq!(fake.user(&bob).unwrap().state, "USER_STATE_INACTIVE");
    c.patch(&format!("/Users/{bob}"), &patch_ops(json!([{"op": "Replace", "path": "active", "value": "True"}]))).await;
    assert_eq!(fake.user(&bob).unwrap().state, "USER_STATE_ACTIVE");

    // Rename the group away from the mapping: the role goes.
    c.patch(
        &format!("/Groups/{g}"),
        &patch_ops(json!([{"op": "Replace", "path": "displayName", "value": "Former Admins"}])),
    )
    .await;
    assert!(drained(&server).await);
    assert_eq!(roles_of(&fake, &alice), ["Chat.User"]);

    // Delete.
    assert_eq!(c.delete(&format!("/Users/{bob}")).await.status, 204);
    assert!(fake.user(&bob).is_none());
    assert_eq!(fake.users().iter().filter(|u| !u.is_machine).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_rejections_are_4xx_and_store_nothing() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    fake.add_human(OTHER_ORG, "250000000000000001", "taken@contoso.com", "taken@contoso.com");
    let dir = tempfile::tempdir().unwrap();
    let server = start(&pat_config(dir.path(), &fake), None);
    let c = server.client();

    let r = c.post("/Users", &entra_user("eve@fabrikam.com", "e-1")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("verified domain of another ZITADEL organisation"),
        "{}",
        r.text
    );
    let r2 = c.post("/Users", &entra_user("taken@contoso.com", "t-1")).await;
    assert_eq!(r2.status, 409, "{}", r2.text);
    assert_eq!(r2.body["scimType"], "uniqueness");
    assert!(r2.body["detail"].as_str().unwrap().contains("another organisation"), "{}", r2.text);
    let none = c.post("/Users", &json!({"userName": "no-mail"})).await;
    assert_eq!(none.status, 400);
    assert!(none.body["detail"].as_str().unwrap().contains("email"));

    for u in ["eve@fabrikam.com", "taken@contoso.com", "no-mail"] {
        let q = c.get(&format!("/Users?filter=userName+eq+%22{}%22", u.replace('@', "%40"))).await;
        assert_eq!(q.body["totalResults"], 0, "nothing stored for {u}");
    }
    assert_eq!(status(&server).await["projection"]["pendingOperations"], 0);

    // A rejected update changes nothing either.
    let ok = c.post("/Users", &entra_user("frank@contoso.com", "f-1")).await.body["id"].as_str().unwrap().to_string();
    let r = c
        .patch(
            &format!("/Users/{ok}"),
            &patch_ops(json!([{"op": "Replace", "path": "userName", "value": "frank@fabrikam.com"}])),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(c.get(&format!("/Users/{ok}")).await.body["userName"], "frank@contoso.com");
    assert_eq!(fake.user(&ok).unwrap().username, "frank@contoso.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zitadel_outage_during_50_creates_loses_nothing() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    let dir = tempfile::tempdir().unwrap();
    let server = start(&pat_config(dir.path(), &fake), None);
    let c = server.client();
    assert!(wait_until(Duration::from_secs(10), || async { server.admin_get("/readyz").await.0 == 200 }).await);

    fake.set_down(true);
    let outage = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.post("/Users", &entra_user(&format!("user{i}@contoso.com"), &format!("oid-{i}"))).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "acknowledged during the outage: {}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let s = status(&server).await;
    assert_eq!(s["projection"]["pendingOperations"], 50);
    assert!(s["projection"]["lastError"].is_string() || s["zitadel"]["lastError"].is_string());
    assert!(wait_until(Duration::from_secs(15), || async { server.admin_get("/readyz").await.0 == 503 }).await);
    // Stay down for 30 s in all, as a real outage would.
    tokio::time::sleep_until(outage + Duration::from_secs(30)).await;
    fake.set_down(false);

    assert!(drained(&server).await, "the backlog drains after recovery");
    for id in &ids {
        let u = fake.user(id).unwrap_or_else(|| panic!("{id} projected"));
        assert_eq!(u.org, ORG);
        assert_eq!(roles_of(&fake, id), ["Chat.User"]);
    }
    assert_eq!(fake.users().iter().filter(|u| !u.is_machine).count(), 50, "no duplicates");
    assert_eq!(fake.authorizations().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_non_empty_outbox_drains_it() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = pat_config(dir.path(), &fake);
    let server = start(&cfg, Some(&data));
    let c = server.client();
    fake.set_down(true);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            c.post("/Users", &entra_user(&format!("r{i}@contoso.com"), &format!("r-{i}"))).await.body["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(status(&server).await["projection"]["pendingOperations"], 5);
    let _keep = server.kill9();
    fake.set_down(false);

    let server = start(&cfg, Some(&data));
    assert!(drained(&server).await);
    for id in &ids {
        assert!(fake.user(id).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_creates_are_adopted_not_duplicated() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = pat_config(dir.path(), &fake);

    // ZITADEL committed the create but answered with a timeout: the write is
    // kept with an outbox entry, whose retry adopts the user.
    let server = start(&cfg, Some(&data));
    let c = server.client();
    fake.fail_next_after_commit(1, 504);
    let r = c.post("/Users", &entra_user("gina@contoso.com", "g-1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let gina = r.body["id"].as_str().unwrap().to_string();
    assert!(drained(&server).await);
    assert_eq!(fake.users().iter().filter(|u| u.username == "gina@contoso.com").count(), 1);
    assert_eq!(roles_of(&fake, &gina), ["Chat.User"]);

    // kill -9 between the ZITADEL call and the local commit: ZITADEL holds a
    // user the store never recorded. Entra retries the create, which matches
    // that user instead of creating a second one.
    let _keep = server.kill9();
    fake.add_human(ORG, "260000000000000001", "hank@contoso.com", "hank@contoso.com");
    let server = start(&cfg, Some(&data));
    let c = server.client();
    let r = c.post("/Users", &entra_user("hank@contoso.com", "h-1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["id"], "260000000000000001", "the SCIM id is the adopted ZITADEL user's");
    let hank = fake.user("260000000000000001").unwrap();
    assert_eq!(fake.users().iter().filter(|u| u.username == "hank@contoso.com").count(), 1);
    assert_eq!(hank.metadata.get("scim.externalId").map(|v| v.as_slice()), Some(&b"h-1"[..]));
    assert_eq!(hank.idp_links.len(), 1);
    assert_eq!(roles_of(&fake, "260000000000000001"), ["Chat.User"]);
    // A second adoption of the same user is refused: it is bound now.
    let dup = c.post("/Users", &entra_user("HANK@contoso.com", "h-2")).await;
    assert_eq!(dup.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_profile_auth_against_the_token_endpoint() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    let key = fake.add_service_user_with_key("240000000000000009", IAM_ORG, &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, key).unwrap();
    let cfg = config(dir.path(), &fake, &format!("{{keyFile: {}}}", key_file.display()));
    let server = start(&cfg, None);
    let c = server.client();
    for i in 0..3 {
        let r = c.post("/Users", &entra_user(&format!("k{i}@contoso.com"), &format!("k-{i}"))).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(fake.users().iter().filter(|u| !u.is_machine).count(), 3);
    assert_eq!(fake.tokens_issued(), 1, "the access token is cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_and_failing_calls_are_retried_from_the_outbox() {
    let fake = ZitadelFake::start().await;
    seed(&fake);
    let dir = tempfile::tempdir().unwrap();
    let server = start(&pat_config(dir.path(), &fake), None);
    let c = server.client();
    assert!(wait_until(Duration::from_secs(10), || async { server.admin_get("/readyz").await.0 == 200 }).await);
    fake.rate_limit_next(1, 1);
    let r = c.post("/Users", &entra_user("ivy@contoso.com", "i-1")).await;
    assert_eq!(r.status, 201, "a 429 does not fail the request: {}", r.text);
    fake.fail_next(1, 500);
    let r2 = c.post("/Users", &entra_user("jack@contoso.com", "j-1")).await;
    assert_eq!(r2.status, 201, "a 500 does not fail the request: {}", r2.text);
    assert!(drained(&server).await);
    for id in [&r.body["id"], &r2.body["id"]] {
        let id = id.as_str().unwrap();
        assert!(fake.user(id).is_some());
        assert_eq!(roles_of(&fake, id), ["Chat.User"]);
    }
    assert_eq!(fake.users().iter().filter(|u| !u.is_machine).count(), 2, "no duplicates");
}
