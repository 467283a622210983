//! The ZITADEL fake keeps the rules of `docs/zitadel-contract.md`
//! that the projector and the operator depend on: uniqueness, the domain rule, error
//! bodies of both transports, 429 with Retry-After, list lag, JWT-profile tokens.
//! Its response shapes are checked against the official SDK by tests/contract/.

use std::time::Duration;

use base64::Engine;
use scim_test_support::zitadel_fake::{FakeResource, ZitadelFake, jwt_assertion};
use serde_json::{Value, json};

const OWNER: &str = "pat-owner";
const VIEWER: &str = "pat-viewer";
const MANAGER: &str = "pat-manager";
const ORG: &str = "100000000000000001";
const OTHER_ORG: &str = "100000000000000002";
const PROJECT_ORG: &str = "100000000000000003";
const PROJECT: &str = "200000000000000001";
const IDP: &str = "400000000000000001";
const OTHER_IDP: &str = "400000000000000002";

async fn fake() -> ZitadelFake {
    let f = ZitadelFake::start().await;
    f.add_org(ORG, "Contoso", &["contoso.com"]);
    f.add_org(OTHER_ORG, "Fabrikam", &["fabrikam.com"]);
    f.add_org(PROJECT_ORG, "Cluster IAM", &[]);
    f.add_project(PROJECT, PROJECT_ORG, &["Chat.User", "Chat.Admin.All"]);
    f.add_idp(IDP, None);
    f.add_idp(OTHER_IDP, Some(OTHER_ORG));
    f.add_service_user_with_pat("500000000000000001", PROJECT_ORG, OWNER, &["IAM_OWNER"]);
    f.add_service_user_with_pat("500000000000000002", PROJECT_ORG, VIEWER, &["IAM_OWNER_VIEWER"]);
    f.add_service_user_with_pat("500000000000000003", PROJECT_ORG, MANAGER, &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    f
}

struct Resp {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.expect("request to the fake");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), headers }
}

async fn connect(f: &ZitadelFake, token: Option<&str>, method: &str, body: Value) -> Resp {
    let mut rb = reqwest::Client::new()
        .post(format!("{}/zitadel.{method}", f.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

fn human(id: Option<&str>, username: &str, org: &str) -> Value {
    let mut b = json!({
        "username": username,
        "organization": {"orgId": org},
        "profile": {"givenName": "Alice", "familyName": "Smith"},
        "email": {"email": "alice@contoso.com", "isVerified": true},
    });
    if let Some(id) = id {
        b["userId"] = json!(id);
    }
    b
}

const ADD: &str = "user.v2.UserService/AddHumanUser";
const LIST: &str = "user.v2.UserService/ListUsers";

/// Asserts a Connect error body, including the protobuf `zitadel.v1.ErrorDetail` value.
fn assert_connect_error(r: &Resp, status: u16, code: &str, key: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["code"], code, "{}", r.body);
    let d = &r.body["details"][0];
    assert_eq!(d["type"], "zitadel.v1.ErrorDetail");
    assert_eq!(d["debug"]["message"], key);
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(d["value"].as_str().unwrap()).unwrap();
    let id = d["debug"]["id"].as_str().unwrap();
    let mut expected = vec![0x0a, id.len() as u8];
    expected.extend_from_slice(id.as_bytes());
    expected.extend_from_slice(&[0x12, key.len() as u8]);
    expected.extend_from_slice(key.as_bytes());
    assert_eq!(raw, expected, "ErrorDetail{{id=1, message=2}} as protobuf");
}

#[tokio::test]
async fn username_rules_and_connect_errors() {
    let f = fake().await;
    let r = connect(&f, Some(OWNER), ADD, human(Some("u1"), "alice@contoso.com", ORG)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["userId"], "u1");
    assert!(r.body["details"]["sequence"].is_string(), "64-bit ints are strings: {}", r.body);

    // Unique instance-wide, case-insensitive: 409 AlreadyExists.
    let r = connect(&f, Some(OWNER), ADD, human(None, "ALICE@Contoso.com", ORG)).await;
    assert_connect_error(&r, 409, "already_exists", "Errors.User.AlreadyExists");
    // The same supplied id: FailedPrecondition (400), not 409.
    let r = connect(&f, Some(OWNER), ADD, human(Some("u1"), "bob@contoso.com", ORG)).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.User.AlreadyExisting");
    // A verified domain of another org is not allowed as username.
    let r = connect(&f, Some(OWNER), ADD, human(None, "carol@fabrikam.com", ORG)).await;
    assert_connect_error(&r, 400, "invalid_argument", "Errors.User.DomainNotAllowedAsUsername");
    // ...but is fine in that org itself.
    let r = connect(&f, Some(OWNER), ADD, human(None, "carol@fabrikam.com", OTHER_ORG)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Username defaults to the email; given name is required.
    let mut b = human(None, "", ORG);
    b.as_object_mut().unwrap().remove("username");
    b["email"]["email"] = json!("dave@contoso.com");
    let r = connect(&f, Some(OWNER), ADD, b.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(f.user(r.body["userId"].as_str().unwrap()).unwrap().username, "dave@contoso.com");
    b["profile"] = json!({"familyName": "X"});
    b["username"] = json!("erin@contoso.com");
    assert_eq!(connect(&f, Some(OWNER), ADD, b).await.status, 400);
    // An org that does not exist: PermissionDenied.
    let r = connect(&f, Some(OWNER), ADD, human(None, "frank@contoso.com", "404")).await;
    assert_eq!((r.status, r.body["code"].as_str()), (403, Some("permission_denied")));

    // IdP links: instance IdPs or the user's org only; (idp, external id) unique.
    let mut b = human(Some("u2"), "gina@contoso.com", ORG);
    b["idpLinks"] = json!([{"idpId": OTHER_IDP, "userId": "oid-1", "userName": "gina"}]);
    let r = connect(&f, Some(OWNER), ADD, b.clone()).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.IDPConfig.NotExisting");
    b["idpLinks"] = json!([{"idpId": IDP, "userId": "oid-1", "userName": "gina"}]);
    b["metadata"] = json!([{"key": "entra.objectId", "value": "b2lkLTE="}]);
    assert_eq!(connect(&f, Some(OWNER), ADD, b).await.status, 200);
    let link = json!({"userId": "u1", "idpLink": {"idpId": IDP, "userId": "oid-1", "userName": "x"}});
    let r = connect(&f, Some(OWNER), "user.v2.UserService/AddIDPLink", link).await;
    assert_connect_error(&r, 409, "already_exists", "Errors.User.ExternalIDP.AlreadyExists");
    let u = f.user("u2").unwrap();
    assert_eq!(u.metadata["entra.objectId"], b"oid-1");
    assert_eq!(u.idp_links[0].user_id, "oid-1");
    assert!(u.email_verified);

    // Delete frees the username and cascades authorizations.
    let auth = json!({"userId": "u1", "projectId": PROJECT, "organizationId": PROJECT_ORG, "roleKeys": ["Chat.User"]});
    let r = connect(&f, Some(OWNER), "authorization.v2.AuthorizationService/CreateAuthorization", auth).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(f.authorizations().len(), 1);
    assert_eq!(connect(&f, Some(OWNER), "user.v2.UserService/DeleteUser", json!({"userId": "u1"})).await.status, 200);
    assert!(f.authorizations().is_empty());
    let r = connect(&f, Some(OWNER), "user.v2.UserService/DeleteUser", json!({"userId": "u1"})).await;
    assert_connect_error(&r, 404, "not_found", "Errors.User.NotFound");
    assert_eq!(connect(&f, Some(OWNER), ADD, human(None, "alice@contoso.com", ORG)).await.status, 200);
}

#[tokio::test]
async fn state_changes_and_metadata() {
    let f = fake().await;
    assert_eq!(connect(&f, Some(MANAGER), ADD, human(Some("u1"), "alice@contoso.com", ORG)).await.status, 200);
    let deactivate = "user.v2.UserService/DeactivateUser";
    assert_eq!(connect(&f, Some(MANAGER), deactivate, json!({"userId": "u1"})).await.status, 200);
    let r = connect(&f, Some(MANAGER), deactivate, json!({"user_id": "u1"})).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.User.AlreadyInactive");
    assert_eq!(f.user("u1").unwrap().state, "USER_STATE_INACTIVE");
    let reactivate = "user.v2.UserService/ReactivateUser";
    assert_eq!(connect(&f, Some(MANAGER), reactivate, json!({"userId": "u1"})).await.status, 200);
    let r = connect(&f, Some(MANAGER), reactivate, json!({"userId": "u1"})).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.User.NotInactive");

    // Partial update: absent profile fields keep their values.
    let upd = json!({"userId": "u1", "human": {"profile": {"nickName": "ali", "preferredLanguage": "de"}}});
    let r = connect(&f, Some(MANAGER), "user.v2.UserService/UpdateUser", upd).await;
    assert!(r.body["changeDate"].is_string(), "{}", r.body);
    let upd = json!({"userId": "u1", "profile": {"givenName": "Alicia", "familyName": "Smith"}});
    assert_eq!(connect(&f, Some(MANAGER), "user.v2.UserService/UpdateHumanUser", upd).await.status, 200);
    let u = f.user("u1").unwrap();
    assert_eq!((u.given_name.as_str(), u.nick_name.as_str(), u.preferred_language.as_str()), ("Alicia", "ali", "de"));

    let set = json!({"userId": "u1", "metadata": [{"key": "k", "value": "dmFsdWU="}]});
    assert_eq!(connect(&f, Some(MANAGER), "user.v2.UserService/SetUserMetadata", set).await.status, 200);
    let empty = json!({"userId": "u1", "metadata": [{"key": "k", "value": ""}]});
    assert_eq!(connect(&f, Some(MANAGER), "user.v2.UserService/SetUserMetadata", empty).await.status, 400);
    let r = connect(&f, Some(MANAGER), "user.v2.UserService/ListUserMetadata", json!({"userId": "u1"})).await;
    assert_eq!(r.body["metadata"], json!([{"key": "k", "value": "dmFsdWU="}]), "{}", r.body);
    assert_eq!(r.body["pagination"]["totalResult"], "1");
    let del = json!({"userId": "u1", "keys": ["nope"]});
    let r = connect(&f, Some(MANAGER), "user.v2.UserService/DeleteUserMetadata", del).await;
    assert_connect_error(&r, 404, "not_found", "Errors.Metadata.KeyNotExisting");

    // Zero values are omitted: an empty list has no totalResult and no result.
    let q = json!({"queries": [{"userNameQuery": {"userName": "nobody"}}]});
    let r = connect(&f, Some(MANAGER), LIST, q).await;
    assert!(r.body["details"].get("totalResult").is_none() && r.body.get("result").is_none(), "{}", r.body);
    let q = json!({"queries": [{"andQuery": {"queries": [
        {"metadataKeyFilter": {"key": "k"}},
        {"metadataValueFilter": {"value": "dmFsdWU=", "method": "BYTE_FILTER_METHOD_EQUALS"}}]}}]});
    let r = connect(&f, Some(MANAGER), LIST, q).await;
    assert_eq!(r.body["result"][0]["userId"], "u1", "{}", r.body);
}

#[tokio::test]
async fn authentication_and_permissions() {
    let f = fake().await;
    let r = connect(&f, None, LIST, json!({})).await;
    assert_connect_error(&r, 401, "unauthenticated", "auth header missing");
    assert_eq!(connect(&f, Some("nope"), LIST, json!({})).await.status, 401);
    assert_eq!(connect(&f, Some(VIEWER), LIST, json!({})).await.status, 200);
    let r = connect(&f, Some(VIEWER), ADD, human(None, "a@contoso.com", ORG)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (403, Some("permission_denied")));
    let admin = json!({"userId": "500000000000000002", "resource": {"instance": true}, "roles": ["IAM_OWNER"]});
    let create_admin = "internal_permission.v2.InternalPermissionService/CreateAdministrator";
    assert_eq!(connect(&f, Some(MANAGER), create_admin, admin.clone()).await.status, 403);
    let r = connect(&f, Some(OWNER), create_admin, admin).await;
    assert_connect_error(&r, 409, "already_exists", "Errors.Instance.Member.AlreadyExists");
    // Without iam.member.read, ListAdministrators lists the caller's own roles only.
    f.add_service_user_with_pat("500000000000000004", PROJECT_ORG, "pat-um", &["IAM_USER_MANAGER"]);
    let list_admins = "internal_permission.v2.InternalPermissionService/ListAdministrators";
    let r = connect(&f, Some("pat-um"), list_admins, json!({})).await;
    assert_eq!(r.body["administrators"].as_array().map(Vec::len), Some(1), "{}", r.body);
    assert_eq!(r.body["administrators"][0]["user"]["id"], "500000000000000004");
    let r = connect(&f, Some(VIEWER), list_admins, json!({})).await;
    assert_eq!(r.body["pagination"]["totalResult"], "4", "{}", r.body);
    // Keys need user.write: the SCIM service user's IAM_USER_MANAGER suffices, a viewer's roles do not.
    let r = connect(&f, Some(VIEWER), "user.v2.UserService/AddKey", json!({"userId": "500000000000000001"})).await;
    assert_eq!(r.status, 403);
    let r = connect(&f, Some(MANAGER), "user.v2.UserService/AddKey", json!({"userId": "500000000000000001"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Drift: roles removed in ZITADEL take effect at once.
    f.set_instance_roles("500000000000000003", &[]);
    assert_eq!(connect(&f, Some(MANAGER), LIST, json!({})).await.status, 403);
    assert!(!f.administrators().iter().any(|a| a.user_id == "500000000000000003"));
    assert!(f.administrators().iter().any(|a| a.resource == FakeResource::Instance && a.roles == ["IAM_OWNER"]));

    // Instance routing: with an instance host set, it must be named.
    f.set_instance_host(Some("id.example.com"));
    assert_eq!(connect(&f, Some(OWNER), LIST, json!({})).await.status, 404);
    let r = send(
        reqwest::Client::new()
            .post(format!("{}/zitadel.{LIST}", f.url))
            .bearer_auth(OWNER)
            .header("x-zitadel-instance-host", "id.example.com")
            .json(&json!({})),
    )
    .await;
    assert_eq!(r.status, 200);
    let log = f.call_log();
    let last = log.last().unwrap();
    assert_eq!(last.instance_host.as_deref(), Some("id.example.com"));
    assert!(last.host.as_deref().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(last.caller.as_deref(), Some("500000000000000001"));
}

#[tokio::test]
async fn rest_gateway() {
    let f = fake().await;
    let c = reqwest::Client::new();
    let body = human(Some("u1"), "alice@contoso.com", ORG);
    let r = send(c.post(format!("{}/v2/users/human", f.url)).bearer_auth(OWNER).json(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(c.get(format!("{}/v2/users/u1", f.url)).bearer_auth(OWNER)).await;
    assert_eq!(r.body["user"]["human"]["profile"]["givenName"], "Alice", "{}", r.body);
    assert_eq!(r.body["user"]["details"]["resourceOwner"], ORG);
    let r = send(c.post(format!("{}/v2/users/human", f.url)).bearer_auth(OWNER).json(&body)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], 9, "numeric gRPC code: {}", r.body);
    assert_eq!(r.body["details"][0]["@type"], "type.googleapis.com/zitadel.v1.ErrorDetail");
    assert_eq!(r.body["details"][0]["message"], "Errors.User.AlreadyExisting");
    assert!(r.body["message"].as_str().unwrap().ends_with(')'), "{}", r.body);
    assert_eq!(send(c.delete(format!("{}/v2/users/u1", f.url)).bearer_auth(OWNER)).await.status, 200);
    let r = send(c.get(format!("{}/v2/users/u1", f.url)).bearer_auth(OWNER)).await;
    assert_eq!((r.status, &r.body["code"]), (404, &json!(5)));
    assert_eq!(f.call_count("UserService/GetUserByID"), 2);
    assert_eq!(f.call_log()[0].transport, "rest");
}

#[tokio::test]
async fn fault_injection() {
    let f = fake().await;
    f.rate_limit_next(2, 7);
    for _ in 0..2 {
        let r = connect(&f, Some(OWNER), LIST, json!({})).await;
        assert_eq!((r.status, r.body["code"].as_str()), (429, Some("resource_exhausted")));
        assert_eq!(r.headers.get("retry-after").unwrap(), "7");
    }
    assert_eq!(connect(&f, Some(OWNER), LIST, json!({})).await.status, 200);

    f.fail_next(1, 503);
    f.fail_next(1, 504);
    let r = connect(&f, Some(OWNER), ADD, human(Some("u1"), "a@contoso.com", ORG)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (503, Some("unavailable")));
    let r = connect(&f, Some(OWNER), ADD, human(Some("u1"), "a@contoso.com", ORG)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (504, Some("deadline_exceeded")));
    assert!(f.users().iter().all(|u| u.id != "u1"), "failed calls are not applied");

    // A timeout after the commit: the retry must adopt, not duplicate.
    f.fail_next_after_commit(1, 504);
    let r = connect(&f, Some(OWNER), ADD, human(Some("u1"), "a@contoso.com", ORG)).await;
    assert_eq!(r.status, 504);
    assert!(f.user("u1").is_some());
    let r = connect(&f, Some(OWNER), ADD, human(Some("u1"), "a@contoso.com", ORG)).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.User.AlreadyExisting");

    f.set_down(true);
    assert_eq!(connect(&f, Some(OWNER), LIST, json!({})).await.status, 503);
    let r = send(reqwest::Client::new().get(format!("{}/.well-known/openid-configuration", f.url))).await;
    assert_eq!(r.status, 503);
    f.set_down(false);

    f.set_latency(Duration::from_millis(150));
    let t = std::time::Instant::now();
    assert_eq!(connect(&f, Some(OWNER), LIST, json!({})).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    f.set_latency(Duration::ZERO);
    assert_eq!(f.call_count("AddHumanUser"), 4);
    f.reset_calls();
    assert!(f.calls().is_empty());
}

#[tokio::test]
async fn list_lag() {
    let f = fake().await;
    f.set_list_lag(Duration::from_millis(400));
    assert_eq!(connect(&f, Some(OWNER), ADD, human(Some("u1"), "a@contoso.com", ORG)).await.status, 200);
    let q = json!({"queries": [{"inUserIdsQuery": {"userIds": ["u1"]}}]});
    assert!(connect(&f, Some(OWNER), LIST, q.clone()).await.body.get("result").is_none(), "young write not listed");
    let get = "user.v2.UserService/GetUserByID";
    assert_eq!(connect(&f, Some(OWNER), get, json!({"userId": "u1"})).await.status, 200, "get is consistent");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(connect(&f, Some(OWNER), LIST, q.clone()).await.body["result"][0]["userId"], "u1");
    assert_eq!(connect(&f, Some(OWNER), "user.v2.UserService/DeleteUser", json!({"userId": "u1"})).await.status, 200);
    assert_eq!(
        connect(&f, Some(OWNER), LIST, q.clone()).await.body["result"][0]["userId"],
        "u1",
        "deleted, still listed"
    );
    assert_eq!(connect(&f, Some(OWNER), get, json!({"userId": "u1"})).await.status, 404);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(connect(&f, Some(OWNER), LIST, q).await.body.get("result").is_none());
}

#[tokio::test]
async fn authorizations() {
    let f = fake().await;
    assert_eq!(connect(&f, Some(OWNER), ADD, human(Some("u1"), "a@contoso.com", ORG)).await.status, 200);
    let create = "authorization.v2.AuthorizationService/CreateAuthorization";
    let body = |org: &str, roles: Value| json!({"userId": "u1", "projectId": PROJECT, "organizationId": org, "roleKeys": roles});
    // The org must own the project (or hold a project grant).
    let r = connect(&f, Some(MANAGER), create, body(ORG, json!(["Chat.User"]))).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.Project.Grant.NotFound");
    let r = connect(&f, Some(MANAGER), create, body(PROJECT_ORG, json!(["Nope"]))).await;
    assert_connect_error(&r, 400, "failed_precondition", "Errors.Project.Role.NotFound");
    let r = connect(&f, Some(MANAGER), create, json!({"userId": "u1", "projectId": PROJECT, "roleKeys": []})).await;
    assert_eq!(r.status, 400, "organizationId is required");
    let r = connect(&f, Some(MANAGER), create, body(PROJECT_ORG, json!(["Chat.User"]))).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = connect(&f, Some(MANAGER), create, body(PROJECT_ORG, json!(["Chat.User"]))).await;
    assert_connect_error(&r, 409, "already_exists", "Errors.UserGrant.AlreadyExists");
    f.add_project_grant(PROJECT, ORG, &["Chat.User"]);
    assert_eq!(connect(&f, Some(MANAGER), create, body(ORG, json!(["Chat.User"]))).await.status, 200);

    let update = json!({"id": id, "roleKeys": ["Chat.User", "Chat.Admin.All"]});
    assert_eq!(
        connect(&f, Some(MANAGER), "authorization.v2.AuthorizationService/UpdateAuthorization", update).await.status,
        200
    );
    let list = json!({"filters": [{"inUserIds": {"ids": ["u1"]}}, {"organizationId": {"id": PROJECT_ORG}}]});
    let r = connect(&f, Some(VIEWER), "authorization.v2.AuthorizationService/ListAuthorizations", list).await;
    let a = &r.body["authorizations"][0];
    assert_eq!(
        a["roles"],
        json!([{"key": "Chat.User", "displayName": "Chat.User"}, {"key": "Chat.Admin.All", "displayName": "Chat.Admin.All"}])
    );
    assert_eq!((a["state"].as_str(), a["user"]["organizationId"].as_str()), (Some("STATE_ACTIVE"), Some(ORG)));
    assert_eq!(r.body["pagination"]["totalResult"], "1");
    let del = "authorization.v2.AuthorizationService/DeleteAuthorization";
    assert!(connect(&f, Some(MANAGER), del, json!({"id": id})).await.body["deletionDate"].is_string());
    assert_eq!(connect(&f, Some(MANAGER), del, json!({"id": id})).await.status, 200, "idempotent");
    assert_eq!(f.authorizations().len(), 1);
}

#[tokio::test]
async fn jwt_profile_tokens() {
    let f = fake().await;
    let key = f.add_service_user_with_key("600000000000000001", PROJECT_ORG, &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    let kf: Value = serde_json::from_str(&key).unwrap();
    assert_eq!(kf["type"], "serviceaccount");
    assert!(kf["key"].as_str().unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let c = reqwest::Client::new();
    let d = send(c.get(format!("{}/.well-known/openid-configuration", f.url))).await;
    assert_eq!(d.body["issuer"], f.url);
    let token_url = d.body["token_endpoint"].as_str().unwrap().to_string();
    let scope = "openid urn:zitadel:iam:org:project:id:zitadel:aud";
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let post = |assertion: String, scope: &'static str| {
        let form = format!("grant_type={}&scope={}&assertion={assertion}", urlencode(grant), urlencode(scope));
        c.post(&token_url).header("content-type", "application/x-www-form-urlencoded").body(form)
    };

    let r = send(post(jwt_assertion(&key, &f.url, 0, 3600), scope)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["token_type"].as_str(), r.body["expires_in"].as_u64()), (Some("Bearer"), Some(43199)));
    let token = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(connect(&f, Some(&token), LIST, json!({})).await.status, 200);
    assert_eq!(f.tokens_issued(), 1);

    let r = send(post(jwt_assertion(&key, &f.url, 0, 3600), "openid")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_scope")));
    for bad in [
        jwt_assertion(&key, "https://elsewhere.example", 0, 3600),
        jwt_assertion(&key, &f.url, -3700, 7200),
        jwt_assertion(&key, &f.url, -120, 60),
        jwt_assertion(&key, &f.url, 0, 3600).replace('.', ".x"),
    ] {
        let r = send(post(bad, scope)).await;
        assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_grant")), "{}", r.body);
    }
    // An aud with a trailing slash is fine.
    let trailing = format!("{}/", f.url);
    assert_eq!(send(post(jwt_assertion(&key, &trailing, 0, 3600), scope)).await.status, 200);

    // Short-lived tokens expire: clients must re-issue.
    f.set_token_expires_in(1);
    let r = send(post(jwt_assertion(&key, &f.url, 0, 3600), scope)).await;
    let short = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(r.body["expires_in"], 1);
    assert_eq!(connect(&f, Some(&short), LIST, json!({})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(connect(&f, Some(&short), LIST, json!({})).await.status, 401);
    assert_eq!(f.tokens_issued(), 3);

    // A key added through the API works the same way; removing it stops new tokens.
    let add = json!({"userId": "600000000000000001"});
    let r = connect(&f, Some(OWNER), "user.v2.UserService/AddKey", add).await;
    let content = base64::engine::general_purpose::STANDARD.decode(r.body["keyContent"].as_str().unwrap()).unwrap();
    let key2 = String::from_utf8(content).unwrap();
    assert_eq!(send(post(jwt_assertion(&key2, &f.url, 0, 3600), scope)).await.status, 200);
    let rm = json!({"userId": "600000000000000001", "keyId": r.body["keyId"]});
    assert_eq!(connect(&f, Some(OWNER), "user.v2.UserService/RemoveKey", rm).await.status, 200);
    assert_eq!(send(post(jwt_assertion(&key2, &f.url, 0, 3600), scope)).await.status, 400);
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
