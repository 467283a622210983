//! API applications and their keys: the Management API v1 (`zitadel.management.v1.ManagementService`,
//! grpc-gateway REST under `/management/v1`, docs/zitadel-contract.md §9.1). The org context is
//! `x-zitadel-orgid` or the caller's org, and the project must belong to it, as in ZITADEL, whose
//! commands look the project up with the context's resource owner.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Ctx;
use super::oauth;
use super::state::*;
use super::wire::*;

pub const AUTH_BASIC: &str = "API_AUTH_METHOD_TYPE_BASIC";
pub const AUTH_PRIVATE_KEY_JWT: &str = "API_AUTH_METHOD_TYPE_PRIVATE_KEY_JWT";
const AUTH_METHODS: [&str; 2] = [AUTH_BASIC, AUTH_PRIVATE_KEY_JWT];
const KEY_TYPES: [&str; 2] = ["KEY_TYPE_UNSPECIFIED", "KEY_TYPE_JSON"];

fn org_of(ctx: &Ctx) -> String {
    ctx.org_header.clone().unwrap_or_else(|| ctx.caller_org.clone())
}

fn project_not_found() -> ApiError {
    err(Code::NotFound, "PROJECT-3M9sd", "Errors.Project.NotFound", "Project not found")
}

fn app_not_found() -> ApiError {
    err(Code::NotFound, "APP-ii9K0", "Errors.Project.App.NotFound", "App not found")
}

/// The project, if it exists and belongs to the context's org.
fn project<'a>(s: &'a State, ctx: &Ctx, req: &Value) -> ApiResult<(String, &'a Project)> {
    let id = string(req, "projectId")?;
    let p = s.projects.get(&id).filter(|p| p.owner_org == org_of(ctx)).ok_or_else(project_not_found)?;
    Ok((id, p))
}

fn app_mut<'a>(s: &'a mut State, ctx: &Ctx, req: &Value) -> ApiResult<&'a mut App> {
    let (project_id, _) = project(s, ctx, req)?;
    let app_id = string(req, "appId")?;
    s.apps.get_mut(&app_id).filter(|a| a.project_id == project_id).ok_or_else(app_not_found)
}

fn object_details(sequence: u64, changed: OffsetDateTime, owner: &str) -> Value {
    json!({"sequence": i64s(sequence), "changeDate": ts(changed), "resourceOwner": owner})
}

/// `zitadel.app.v1.App` with its `apiConfig`.
fn app_json(a: &App) -> Value {
    prune(json!({
        "id": a.id,
        "details": {
            "sequence": i64s(a.sequence),
            "creationDate": ts(a.created),
            "changeDate": ts(a.changed),
            "resourceOwner": a.org,
        },
        "state": "APP_STATE_ACTIVE",
        "name": a.name,
        // BASIC is enum value 0: protojson omits it.
        "apiConfig": {"clientId": a.client_id, "authMethodType": if a.auth_method == AUTH_BASIC { "" } else { &a.auth_method }},
    }))
}

/// AddAPIApp `POST /management/v1/projects/{projectId}/apps/api` `{name, authMethodType}` →
/// `{appId, details, clientId, clientSecret}`; the secret only for BASIC.
pub fn add_api_app(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let (project_id, p) = project(s, ctx, req)?;
    let project_name = p.name.clone();
    let org = p.owner_org.clone();
    let name = string(req, "name")?.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(err(Code::InvalidArgument, "FAKE-app-name", "Errors.Invalid.Argument", "name must be 1-200 chars"));
    }
    let auth_method = enum_name(req, "authMethodType", &AUTH_METHODS)?;
    if !AUTH_METHODS.contains(&auth_method.as_str()) {
        return Err(invalid("authMethodType"));
    }
    // App names are unique in a project (ZITADEL: `Errors.Project.App.AlreadyExists`).
    if s.apps.values().any(|a| a.project_id == project_id && a.name == name) {
        return Err(err(
            Code::AlreadyExists,
            "PROJECT-3Kdsa",
            "Errors.Project.App.AlreadyExists",
            "App already exists",
        ));
    }
    let id = s.new_id();
    // ZITADEL's client ids are `<generated id>@<project name>`.
    let client_id = format!("{}@{}", s.new_id(), super::slug(&project_name));
    let secret = (auth_method == AUTH_BASIC).then(oauth::random_token);
    let now = OffsetDateTime::now_utc();
    s.apps.insert(
        id.clone(),
        App {
            id: id.clone(),
            project_id,
            org: org.clone(),
            name,
            client_id: client_id.clone(),
            client_secret: secret.clone(),
            auth_method,
            keys: Vec::new(),
            created: now,
            changed: now,
            sequence: 1,
        },
    );
    Ok(prune(json!({
        "appId": id,
        "details": object_details(1, now, &org),
        "clientId": client_id,
        "clientSecret": secret,
    })))
}

/// GetAppByID `GET /management/v1/projects/{projectId}/apps/{appId}` → `{app}`.
pub fn get_app_by_id(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let a = app_mut(s, ctx, req)?;
    Ok(json!({"app": app_json(a)}))
}

/// ListApps `POST /management/v1/projects/{projectId}/apps/_search`
/// `{query:{offset,limit,asc}, queries:[{nameQuery:{name, method}}]}` → `{details:{totalResult}, result}`.
pub fn list_apps(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let (project_id, _) = project(s, ctx, req)?;
    let page = page(req, "query")?;
    let mut filters = Vec::new();
    for q in array(req, "queries")? {
        let Some(nq) = field(q, "nameQuery") else { return Err(invalid("queries")) };
        filters.push((text_method(nq)?, string(nq, "name")?));
    }
    let mut apps: Vec<&App> = s
        .apps
        .values()
        .filter(|a| a.project_id == project_id)
        .filter(|a| filters.iter().all(|(m, n)| text_match(m, &a.name, n)))
        .collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    if !page.asc {
        // ZITADEL sorts by name; the default direction is descending.
        apps.reverse();
    }
    let total = apps.len() as u64;
    let result: Vec<Value> = page.apply(apps).into_iter().map(app_json).collect();
    Ok(prune(json!({
        "details": {"totalResult": i64s(total), "viewTimestamp": ts(OffsetDateTime::now_utc())},
        "result": result,
    })))
}

/// RemoveApp `DELETE /management/v1/projects/{projectId}/apps/{appId}` → `{details}`; its keys
/// and secret stop working at once.
pub fn remove_app(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let id = app_mut(s, ctx, req)?.id.clone();
    let Some(a) = s.apps.remove(&id) else { return Err(app_not_found()) };
    Ok(json!({"details": object_details(a.sequence + 1, OffsetDateTime::now_utc(), &a.org)}))
}

/// AddAppKey `POST /management/v1/projects/{projectId}/apps/{appId}/keys`
/// `{type: KEY_TYPE_JSON, expirationDate?}` → `{id, details, keyDetails}` where `keyDetails` is
/// the base64 key file `{"type":"application","keyId","key","appId","clientId"}`. Only apps
/// using private-key JWT take keys.
pub fn add_app_key(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let kind = enum_name(req, "type", &KEY_TYPES)?;
    if kind != "KEY_TYPE_JSON" {
        return Err(err(
            Code::InvalidArgument,
            "FAKE-keytype",
            "Errors.Invalid.Argument",
            "type must be KEY_TYPE_JSON",
        ));
    }
    let expiration = timestamp(req, "expirationDate")?.unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC));
    if expiration <= OffsetDateTime::now_utc() {
        return Err(err(Code::InvalidArgument, "KEY-dv3t5", "Errors.AuthNKey.ExpireBeforeNow", "expired"));
    }
    let key_id = s.new_id();
    let pem = s.next_pool_key();
    let public_der =
        oauth::public_key_of_private_pem(pem).map_err(|e| err(Code::Internal, "FAKE-key", "Errors.Internal", &e))?;
    let now = OffsetDateTime::now_utc();
    let a = app_mut(s, ctx, req)?;
    if a.auth_method != AUTH_PRIVATE_KEY_JWT {
        return Err(err(
            Code::FailedPrecondition,
            "COMMAND-Dbaf2",
            "Errors.Project.App.AuthMethodNoPrivateKeyJWT",
            "Application does not use private key JWT",
        ));
    }
    a.keys.push(AppKey { id: key_id.clone(), public_der, expiration, created: now });
    a.sequence += 1;
    a.changed = now;
    let file = json!({"type": "application", "keyId": key_id, "key": pem, "appId": a.id, "clientId": a.client_id});
    Ok(json!({
        "id": key_id,
        "details": object_details(a.sequence, now, &a.org),
        "keyDetails": b64(file.to_string().as_bytes()),
    }))
}

fn key_json(k: &AppKey, org: &str) -> Value {
    json!({
        "id": k.id,
        "details": {"sequence": "1", "creationDate": ts(k.created), "changeDate": ts(k.created), "resourceOwner": org},
        "type": "KEY_TYPE_JSON",
        "expirationDate": ts(k.expiration),
    })
}

/// ListAppKeys `POST /management/v1/projects/{projectId}/apps/{appId}/keys/_search` → `{details, result}`.
pub fn list_app_keys(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let page = page(req, "query")?;
    let a = app_mut(s, ctx, req)?;
    let total = a.keys.len() as u64;
    let result: Vec<Value> = page.apply(a.keys.iter().collect()).into_iter().map(|k| key_json(k, &a.org)).collect();
    Ok(prune(json!({"details": {"totalResult": i64s(total)}, "result": result})))
}

/// RemoveAppKey `DELETE /management/v1/projects/{projectId}/apps/{appId}/keys/{keyId}` → `{details}`.
pub fn remove_app_key(s: &mut State, ctx: &Ctx, req: &Value) -> ApiResult {
    let key_id = string(req, "keyId")?;
    let a = app_mut(s, ctx, req)?;
    let before = a.keys.len();
    a.keys.retain(|k| k.id != key_id);
    if a.keys.len() == before {
        return Err(err(Code::NotFound, "COMMAND-4m77G", "Errors.Project.App.Key.NotFound", "Key not found"));
    }
    a.sequence += 1;
    a.changed = OffsetDateTime::now_utc();
    Ok(json!({"details": object_details(a.sequence, a.changed, &a.org)}))
}

/// REST routes of the Management API's app calls: (RPC, request with the path parameters, status).
pub fn rest_route(method: &str, seg: &[&str], body: Value) -> Option<(String, Value, u16)> {
    let with = |mut b: Value, kv: &[(&str, &str)]| {
        if !b.is_object() {
            b = json!({});
        }
        for (k, v) in kv {
            b[*k] = json!(v);
        }
        b
    };
    let rpc = |m: &str| format!("{MGMT_SVC}{m}");
    Some(match (method, seg) {
        ("POST", ["management", "v1", "projects", p, "apps", "api"]) => {
            (rpc("AddAPIApp"), with(body, &[("projectId", p)]), 200)
        }
        ("POST", ["management", "v1", "projects", p, "apps", "_search"]) => {
            (rpc("ListApps"), with(body, &[("projectId", p)]), 200)
        }
        ("GET", ["management", "v1", "projects", p, "apps", a]) => {
            (rpc("GetAppByID"), with(json!({}), &[("projectId", p), ("appId", a)]), 200)
        }
        ("DELETE", ["management", "v1", "projects", p, "apps", a]) => {
            (rpc("RemoveApp"), with(json!({}), &[("projectId", p), ("appId", a)]), 200)
        }
        ("POST", ["management", "v1", "projects", p, "apps", a, "keys"]) => {
            (rpc("AddAppKey"), with(body, &[("projectId", p), ("appId", a)]), 200)
        }
        ("POST", ["management", "v1", "projects", p, "apps", a, "keys", "_search"]) => {
            (rpc("ListAppKeys"), with(body, &[("projectId", p), ("appId", a)]), 200)
        }
        ("DELETE", ["management", "v1", "projects", p, "apps", a, "keys", k]) => {
            (rpc("RemoveAppKey"), with(json!({}), &[("projectId", p), ("appId", a), ("keyId", k)]), 200)
        }
        _ => return None,
    })
}

pub const MGMT_SVC: &str = "zitadel.management.v1.ManagementService/";
