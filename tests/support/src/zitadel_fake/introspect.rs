//! Token introspection (RFC 7662) as ZITADEL serves it at `POST /oauth/v2/introspect`
//! (docs/zitadel-contract.md §9.2), and the human users' access tokens it answers about.
//!
//! The caller is an API application: `client_secret_basic` (`Authorization: Basic`, the
//! client id and secret form-urlencoded, RFC 6749 §2.3.1) or `private_key_jwt`
//! (`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//! `client_assertion` signed RS256 by one of the app's keys, `iss = sub =` client id, `aud`
//! the issuer). A failed client authentication is 401 `invalid_client`; a token that is
//! unknown, revoked, expired, of an inactive or deleted user, or not meant for the app's
//! project answers `{"active": false}` and nothing else.

use base64::Engine;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::oauth;
use super::state::*;

pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const SCOPE_RESOURCEOWNER: &str = "urn:zitadel:iam:user:resourceowner";
pub const SCOPE_PROJECT_ROLES: &str = "urn:zitadel:iam:org:projects:roles";

fn invalid_client(d: &str) -> (u16, Value) {
    (401, json!({"error": "invalid_client", "error_description": d}))
}

/// `Authorization: Basic` → (client id, secret), each form-urlencoded inside (RFC 6749 §2.3.1).
fn basic_credentials(auth: &str) -> Option<(String, String)> {
    let b64 = auth.strip_prefix("Basic ").or_else(|| auth.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((dec(id)?, dec(secret)?))
}

/// The app id of the authenticated API application.
fn authenticate_client(s: &State, auth: Option<&str>, form: &[(String, String)]) -> Result<String, String> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some((client_id, secret)) = auth.and_then(basic_credentials) {
        let app = s.apps.values().find(|a| a.client_id == client_id).ok_or("unknown client")?;
        return match &app.client_secret {
            Some(want) if want.as_bytes() == secret.as_bytes() => Ok(app.id.clone()),
            Some(_) => Err("invalid client secret".into()),
            None => Err("client does not authenticate with a secret".into()),
        };
    }
    match (get("client_assertion_type"), get("client_assertion")) {
        (Some(CLIENT_ASSERTION_TYPE), Some(assertion)) => verify_client_assertion(s, assertion),
        (Some(_), _) => Err("unsupported client_assertion_type".into()),
        _ => Err("client authentication required (Basic or private_key_jwt)".into()),
    }
}

fn verify_client_assertion(s: &State, jwt: &str) -> Result<String, String> {
    let jws = oauth::parse_jws(jwt)?;
    let kid = jws.header["kid"].as_str().ok_or("JWT header has no kid")?;
    let (app, key) =
        s.apps.values().find_map(|a| a.keys.iter().find(|k| k.id == kid).map(|k| (a, k))).ok_or("unknown key id")?;
    oauth::check_assertion_claims(s, &jws.claims, &app.client_id, "the client id", key.expiration)?;
    oauth::verify_rs256(&jws, &key.public_der)?;
    Ok(app.id.clone())
}

/// `POST /oauth/v2/introspect` with a form body. Returns (HTTP status, JSON body).
pub fn introspect(s: &mut State, auth: Option<&str>, form: &[(String, String)]) -> (u16, Value) {
    let app_id = match authenticate_client(s, auth, form) {
        Ok(id) => id,
        Err(e) => return invalid_client(&e),
    };
    let Some(token) = form.iter().find(|(n, _)| n == "token").map(|(_, v)| v.clone()) else {
        return (400, json!({"error": "invalid_request", "error_description": "token missing"}));
    };
    s.introspections += 1;
    let inactive = (200, json!({"active": false}));
    let Some(app) = s.apps.get(&app_id) else { return inactive };
    let Some(t) = s.user_tokens.get(&token) else { return inactive };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if t.revoked || t.expires <= now || !t.audience.contains(&app.project_id) {
        return inactive;
    }
    let Some(user) = s.user(&t.user_id).filter(|u| u.state == ACTIVE) else { return inactive };
    let mut out = Map::new();
    out.insert("active".into(), json!(true));
    out.insert("scope".into(), json!(t.scopes.join(" ")));
    out.insert("client_id".into(), json!(t.client_id));
    out.insert("token_type".into(), json!("Bearer"));
    out.insert("exp".into(), json!(t.expires));
    out.insert("iat".into(), json!(t.issued));
    out.insert("nbf".into(), json!(t.issued));
    out.insert("sub".into(), json!(user.id));
    out.insert("aud".into(), json!(t.audience));
    out.insert("iss".into(), json!(s.url.trim_end_matches('/')));
    out.insert("jti".into(), json!(t.jti));
    out.insert("username".into(), json!(user.username));
    let has = |scope: &str| t.scopes.iter().any(|x| x == scope);
    if let (true, Kind::Human { profile, .. }) = (has("profile"), &user.kind) {
        out.insert("name".into(), json!(profile.display_name));
        out.insert("given_name".into(), json!(profile.given_name));
        out.insert("family_name".into(), json!(profile.family_name));
    }
    if has("email") {
        out.insert("email".into(), json!(user.email()));
    }
    if has(SCOPE_RESOURCEOWNER) {
        let org = s.orgs.get(&user.org);
        out.insert("urn:zitadel:iam:user:resourceowner:id".into(), json!(user.org));
        out.insert("urn:zitadel:iam:user:resourceowner:name".into(), json!(org.map(|o| o.name.clone())));
        out.insert(
            "urn:zitadel:iam:user:resourceowner:primary_domain".into(),
            json!(org.map(|o| o.primary_domain().to_string())),
        );
    }
    if has(SCOPE_PROJECT_ROLES) {
        // `{role: {orgId: orgPrimaryDomain}}`: the orgs the user's authorizations are on, for the
        // introspecting client's project.
        let mut roles = Map::new();
        for a in s.authorizations.iter().filter(|a| a.active && a.user_id == user.id && a.project_id == app.project_id)
        {
            let domain = s.orgs.get(&a.org_id).map(|o| o.primary_domain().to_string()).unwrap_or_default();
            for r in &a.roles {
                let entry = roles.entry(r.clone()).or_insert_with(|| json!({}));
                entry[&a.org_id] = json!(domain);
            }
        }
        if !roles.is_empty() {
            let roles = Value::Object(roles);
            out.insert("urn:zitadel:iam:org:project:roles".into(), roles.clone());
            out.insert(format!("urn:zitadel:iam:org:project:{}:roles", app.project_id), roles);
        }
    }
    (200, Value::Object(out))
}

/// A JWT access token's claims (when the app's token type is JWT): what ZITADEL puts in one.
pub fn jwt_claims(s: &State, t: &UserToken) -> Value {
    let mut c = json!({
        "iss": s.url.trim_end_matches('/'),
        "sub": t.user_id,
        "aud": t.audience,
        "exp": t.expires,
        "iat": t.issued,
        "nbf": t.issued,
        "jti": t.jti,
        "client_id": t.client_id,
    });
    if let (true, Some(u)) = (t.scopes.iter().any(|x| x == SCOPE_RESOURCEOWNER), s.user(&t.user_id)) {
        c["urn:zitadel:iam:user:resourceowner:id"] = json!(u.org);
    }
    c
}
