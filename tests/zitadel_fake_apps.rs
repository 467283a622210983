//! The ZITADEL fake's API applications (Management API v1) and token introspection keep
//! the contract of `docs/zitadel-contract.md` §9: what the operator provisions and what the
//! SCIM server's self-service API checks tokens with.

use std::time::Duration;

use base64::Engine;
use scim_test_support::zitadel_fake::{UserTokenOptions, ZitadelFake, jwt_assertion};
use serde_json::{Value, json};

const OWNER: &str = "pat-owner";
const VIEWER: &str = "pat-viewer";
const ORG: &str = "100000000000000001";
const PROJECT_ORG: &str = "100000000000000003";
const PROJECT: &str = "200000000000000001";
const OTHER_PROJECT: &str = "200000000000000002";
const ADMIN: &str = "600000000000000001";

async fn fake() -> ZitadelFake {
    let f = ZitadelFake::start().await;
    f.add_org(ORG, "Contoso", &["contoso.com"]);
    f.add_org(PROJECT_ORG, "Cluster IAM", &[]);
    f.add_project(PROJECT, PROJECT_ORG, &["Chat.User", "Chat.Admin.All"]);
    f.add_project(OTHER_PROJECT, PROJECT_ORG, &["Other"]);
    f.add_service_user_with_pat("500000000000000001", PROJECT_ORG, OWNER, &["IAM_OWNER"]);
    f.add_service_user_with_pat("500000000000000002", PROJECT_ORG, VIEWER, &["IAM_OWNER_VIEWER"]);
    f.add_human(ORG, ADMIN, "admin@contoso.com", "admin@contoso.com");
    f.add_authorization(ADMIN, PROJECT, PROJECT_ORG, &["Chat.Admin.All"]);
    f
}

async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let r = rb.send().await.expect("request to the fake");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn mgmt(f: &ZitadelFake, token: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let rb = reqwest::Client::new()
        .request(method, format!("{}/management/v1{path}", f.url))
        .bearer_auth(token)
        .header("x-zitadel-orgid", PROJECT_ORG)
        .header("content-type", "application/json")
        .body(body.to_string());
    send(rb).await
}

async fn introspect_basic(f: &ZitadelFake, client_id: &str, secret: &str, token: &str) -> (u16, Value) {
    let rb = reqwest::Client::new()
        .post(format!("{}/oauth/v2/introspect", f.url))
        .basic_auth(client_id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"));
    send(rb).await
}

async fn introspect_jwt(f: &ZitadelFake, assertion: &str, token: &str) -> (u16, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        .append_pair("client_assertion", assertion)
        .append_pair("token", token)
        .finish();
    let rb = reqwest::Client::new()
        .post(format!("{}/oauth/v2/introspect", f.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    send(rb).await
}

#[tokio::test]
async fn api_apps_are_created_found_keyed_and_removed() {
    let f = fake().await;
    let post = reqwest::Method::POST;
    let (st, basic) = mgmt(
        &f,
        OWNER,
        post.clone(),
        &format!("/projects/{PROJECT}/apps/api"),
        json!({"name": "scim-basic", "authMethodType": "API_AUTH_METHOD_TYPE_BASIC"}),
    )
    .await;
    assert_eq!(st, 200, "{basic}");
    assert!(basic["appId"].is_string() && basic["clientSecret"].is_string(), "{basic}");
    assert!(basic["clientId"].as_str().is_some_and(|c| c.contains('@')), "{basic}");

    // Names are unique in a project.
    let body = json!({"name": "scim-basic"});
    let (st, e) = mgmt(&f, OWNER, post.clone(), &format!("/projects/{PROJECT}/apps/api"), body).await;
    assert_eq!((st, e["code"].as_i64()), (409, Some(6)), "{e}");

    // A viewer may read but not create; a project of another org is not found.
    let body = json!({"name": "x"});
    let (st, _) = mgmt(&f, VIEWER, post.clone(), &format!("/projects/{PROJECT}/apps/api"), body).await;
    assert_eq!(st, 403);
    let rb = reqwest::Client::new()
        .post(format!("{}/management/v1/projects/{PROJECT}/apps/api", f.url))
        .bearer_auth(OWNER)
        .header("x-zitadel-orgid", ORG)
        .body(json!({"name": "x"}).to_string());
    assert_eq!(send(rb).await.0, 404);

    let (st, jwt_app) = mgmt(
        &f,
        OWNER,
        post.clone(),
        &format!("/projects/{PROJECT}/apps/api"),
        json!({"name": "scim-jwt", "authMethodType": "API_AUTH_METHOD_TYPE_PRIVATE_KEY_JWT"}),
    )
    .await;
    assert_eq!(st, 200, "{jwt_app}");
    assert!(jwt_app.get("clientSecret").is_none(), "no secret for private-key JWT: {jwt_app}");
    let app_id = jwt_app["appId"].as_str().unwrap_or_default();

    let (st, found) = mgmt(
        &f,
        VIEWER,
        post.clone(),
        &format!("/projects/{PROJECT}/apps/_search"),
        json!({"queries": [{"nameQuery": {"name": "scim-jwt", "method": "TEXT_QUERY_METHOD_EQUALS"}}]}),
    )
    .await;
    assert_eq!(st, 200, "{found}");
    assert_eq!(found["details"]["totalResult"], "1");
    assert_eq!(found["result"][0]["id"], app_id);
    assert_eq!(found["result"][0]["apiConfig"]["clientId"], jwt_app["clientId"]);
    assert_eq!(found["result"][0]["apiConfig"]["authMethodType"], "API_AUTH_METHOD_TYPE_PRIVATE_KEY_JWT");

    // Keys only for private-key JWT apps; the key file is base64 JSON of type "application".
    let basic_id = basic["appId"].as_str().unwrap_or_default();
    let (st, _) = mgmt(
        &f,
        OWNER,
        post.clone(),
        &format!("/projects/{PROJECT}/apps/{basic_id}/keys"),
        json!({"type": "KEY_TYPE_JSON"}),
    )
    .await;
    assert_eq!(st, 400);
    let (st, key) =
        mgmt(&f, OWNER, post, &format!("/projects/{PROJECT}/apps/{app_id}/keys"), json!({"type": "KEY_TYPE_JSON"}))
            .await;
    assert_eq!(st, 200, "{key}");
    let raw = base64::engine::general_purpose::STANDARD.decode(key["keyDetails"].as_str().unwrap_or_default());
    let file: Value = serde_json::from_slice(&raw.unwrap_or_default()).unwrap_or(Value::Null);
    assert_eq!(file["type"], "application");
    assert_eq!(file["keyId"], key["id"]);
    assert_eq!(file["appId"], app_id);
    assert_eq!(file["clientId"], jwt_app["clientId"]);
    assert!(file["key"].as_str().is_some_and(|k| k.contains("PRIVATE KEY")));

    // The key authenticates introspection until the app is removed.
    let token = f.issue_user_token(ADMIN, UserTokenOptions::for_project(PROJECT));
    let assertion = jwt_assertion(&file.to_string(), &f.url, 0, 60);
    let (st, r) = introspect_jwt(&f, &assertion, &token).await;
    assert_eq!((st, &r["active"]), (200, &json!(true)), "{r}");
    let (st, _) =
        mgmt(&f, OWNER, reqwest::Method::DELETE, &format!("/projects/{PROJECT}/apps/{app_id}"), json!({})).await;
    assert_eq!(st, 200);
    let (st, r) = introspect_jwt(&f, &assertion, &token).await;
    assert_eq!((st, r["error"].as_str()), (401, Some("invalid_client")), "{r}");
    let (st, _) = mgmt(&f, OWNER, reqwest::Method::GET, &format!("/projects/{PROJECT}/apps/{app_id}"), json!({})).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn introspection_reports_zitadel_claims_for_active_tokens_only() {
    let f = fake().await;
    let (client_id, secret) = f.add_api_app_basic(PROJECT, "scim");
    for opts in [UserTokenOptions::for_project(PROJECT), UserTokenOptions::for_project(PROJECT).jwt()] {
        let jwt = opts.jwt;
        let token = f.issue_user_token(ADMIN, opts);
        assert_eq!(token.split('.').count() == 3, jwt, "JWT tokens are compact JWS");
        let (st, r) = introspect_basic(&f, &client_id, &secret, &token).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["active"], true);
        assert_eq!(r["sub"], ADMIN);
        assert_eq!(r["username"], "admin@contoso.com");
        assert_eq!(r["urn:zitadel:iam:user:resourceowner:id"], ORG);
        assert!(r["exp"].as_i64() > r["iat"].as_i64());
        let roles = json!({"Chat.Admin.All": {PROJECT_ORG: "cluster-iam.fake-zitadel.localhost"}});
        assert_eq!(r["urn:zitadel:iam:org:project:roles"], roles);
        assert_eq!(r[format!("urn:zitadel:iam:org:project:{PROJECT}:roles")], roles);
    }

    // Without the roles scope, no roles claim.
    let token = f.issue_user_token(
        ADMIN,
        UserTokenOptions::for_project(PROJECT).without_scope("urn:zitadel:iam:org:projects:roles"),
    );
    let (_, r) = introspect_basic(&f, &client_id, &secret, &token).await;
    assert_eq!(r["active"], true);
    assert!(r.get("urn:zitadel:iam:org:project:roles").is_none(), "{r}");

    // Inactive: revoked, expired, another project's token, a deactivated user, unknown.
    let inactive = json!({"active": false});
    let revoked = f.issue_user_token(ADMIN, UserTokenOptions::for_project(PROJECT));
    f.revoke_user_token(&revoked);
    let expired = f.issue_user_token(ADMIN, UserTokenOptions::for_project(PROJECT).lifetime(Duration::ZERO));
    let other = f.issue_user_token(ADMIN, UserTokenOptions::for_project(OTHER_PROJECT));
    for t in [revoked.as_str(), expired.as_str(), other.as_str(), "not-a-token"] {
        assert_eq!(introspect_basic(&f, &client_id, &secret, t).await, (200, inactive.clone()), "{t}");
    }
    let live = f.issue_user_token(ADMIN, UserTokenOptions::for_project(PROJECT));
    f.set_user_active(ADMIN, false);
    assert_eq!(introspect_basic(&f, &client_id, &secret, &live).await, (200, inactive));

    // A wrong secret or no client authentication: 401 invalid_client.
    let (st, r) = introspect_basic(&f, &client_id, "wrong", &live).await;
    assert_eq!((st, r["error"].as_str()), (401, Some("invalid_client")));
    let rb = reqwest::Client::new().post(format!("{}/oauth/v2/introspect", f.url)).body(format!("token={live}"));
    assert_eq!(send(rb).await.0, 401);

    // A key of another app (or a service user's key) does not authenticate as this client.
    let user_key = f.add_service_user_with_key("500000000000000009", PROJECT_ORG, &[]);
    let (st, _) = introspect_jwt(&f, &jwt_assertion(&user_key, &f.url, 0, 60), &live).await;
    assert_eq!(st, 401);
    let app_key = f.add_api_app_with_key(PROJECT, "scim-jwt");
    let (st, _) = introspect_jwt(&f, &jwt_assertion(&app_key, "https://elsewhere", 0, 60), &live).await;
    assert_eq!(st, 401, "aud must be the issuer");
    f.set_user_active(ADMIN, true);
    let (st, r) = introspect_jwt(&f, &jwt_assertion(&app_key, &f.url, 0, 60), &live).await;
    assert_eq!((st, &r["active"]), (200, &json!(true)), "{r}");
}
