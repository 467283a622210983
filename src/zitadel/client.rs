//! A thin typed ZITADEL client on reqwest, speaking the Connect protocol
//! (`POST /{package}.{Service}/{Method}`, JSON), which every v2 service
//! supports, including the ones without REST paths.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::{CachedToken, Credential, TOKEN_SCOPE};
use super::config::ZitadelConfig;
use super::error::{Code, ZitadelError, parse_error_body};
use super::rate::RateLimiter;

pub(crate) const USER_SERVICE: &str = "zitadel.user.v2.UserService";
pub(crate) const AUTHZ_SERVICE: &str = "zitadel.authorization.v2.AuthorizationService";
pub(crate) const ORG_SERVICE: &str = "zitadel.org.v2.OrganizationService";

pub struct Client {
    http: reqwest::Client,
    base: String,
    instance_host: Option<String>,
    credential: Credential,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    limiter: std::sync::Arc<RateLimiter>,
    calls: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
}

/// Names the instance when `url` reaches ZITADEL by an address its own
/// domain does not match (in-cluster Service).
pub(crate) fn with_instance_host(rb: reqwest::RequestBuilder, host: Option<&str>) -> reqwest::RequestBuilder {
    match host {
        Some(h) => rb.header("x-zitadel-instance-host", h),
        None => rb,
    }
}

impl Client {
    pub fn new(cfg: &ZitadelConfig) -> Result<Self, ZitadelError> {
        let credential = Credential::load(cfg.credentials.pat_file.as_deref(), cfg.credentials.key_file.as_deref())?;
        Self::with_credential(cfg, credential)
    }

    pub(crate) fn with_credential(cfg: &ZitadelConfig, credential: Credential) -> Result<Self, ZitadelError> {
        let http =
            cfg.http_client().map_err(|e| ZitadelError::Credentials(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: cfg.url.trim_end_matches('/').to_string(),
            instance_host: cfg.instance_host.clone(),
            credential,
            token: tokio::sync::Mutex::new(None),
            limiter: std::sync::Arc::new(RateLimiter::new(cfg.rate())),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The request rate, which a reloader may change while the client runs.
    pub(crate) fn limiter(&self) -> &std::sync::Arc<RateLimiter> {
        &self.limiter
    }

    /// API calls made (token requests excluded).
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn with_host(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        with_instance_host(rb, self.instance_host.as_deref())
    }

    async fn bearer(&self, force_new: bool) -> Result<String, ZitadelError> {
        let signer = match &self.credential {
            Credential::Pat(p) => return Ok(p.clone()),
            Credential::Key(k) => k,
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| !force_new && t.fresh(Instant::now())) {
            return Ok(t.token.clone());
        }
        let token_err = |what: &str, e: String| ZitadelError::Token(format!("{what}: {e}"));
        // The assertion's audience is the issuer, which differs from `url` when
        // ZITADEL is reached through an in-cluster address.
        let disc: Discovery = self
            .with_host(self.http.get(format!("{}/.well-known/openid-configuration", self.base)))
            .send()
            .await
            .map_err(|e| token_err("discovery request failed", e.to_string()))?
            .error_for_status()
            .map_err(|e| token_err("discovery failed", e.to_string()))?
            .json()
            .await
            .map_err(|e| token_err("discovery answer is not JSON", e.to_string()))?;
        let assertion = signer.assertion(disc.issuer.trim_end_matches('/'), SystemTime::now())?;
        let resp = self
            .with_host(self.http.post(format!("{}/oauth/v2/token", self.base)))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("scope", TOKEN_SCOPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| token_err("token request failed", e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let msg = format!("the token endpoint answered {status}: {}", body.chars().take(200).collect::<String>());
            // A rejected key will not start working by retrying.
            return Err(if status.is_client_error() {
                ZitadelError::Credentials(msg)
            } else {
                ZitadelError::Token(msg)
            });
        }
        let t: TokenResponse = resp.json().await.map_err(|e| token_err("token answer is not JSON", e.to_string()))?;
        let fresh =
            CachedToken::new(t.access_token.clone(), Duration::from_secs(t.expires_in.unwrap_or(3600)), Instant::now());
        *cached = Some(fresh);
        Ok(t.access_token)
    }

    /// Calls `{service}/{method}` with a JSON body.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        body: &Value,
    ) -> Result<T, ZitadelError> {
        let name = format!("{service}/{method}");
        let url = format!("{}/{name}", self.base);
        self.exchange(&name, || self.http.post(&url).header("content-type", "application/json").body(body.to_string()))
            .await
    }

    /// `GET {path}` on a REST endpoint (the v1 APIs without a Connect form).
    pub(crate) async fn get_rest<T: DeserializeOwned>(&self, path: &str) -> Result<T, ZitadelError> {
        let url = format!("{}{path}", self.base);
        self.exchange(path, || self.http.get(&url)).await
    }

    /// `{verb} {path}` on a v1 REST endpoint in organisation `org` (the
    /// `x-zitadel-orgid` context the v1 management API acts in).
    pub(crate) async fn rest_in_org<T: DeserializeOwned>(
        &self,
        verb: reqwest::Method,
        path: &str,
        org: &str,
        body: Option<&Value>,
    ) -> Result<T, ZitadelError> {
        let url = format!("{}{path}", self.base);
        let name = format!("{verb} {path}");
        self.exchange(&name, || {
            let rb = self.http.request(verb.clone(), &url).header("x-zitadel-orgid", org);
            match body {
                Some(b) => rb.header("content-type", "application/json").body(b.to_string()),
                None => rb,
            }
        })
        .await
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        name: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ZitadelError> {
        let mut retried_auth = false;
        loop {
            self.limiter.acquire().await;
            let token = self.bearer(retried_auth).await?;
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let resp = self
                .with_host(request())
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| ZitadelError::Transport { method: name.to_string(), reason: e.to_string() })?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ZitadelError::Transport { method: name.to_string(), reason: e.to_string() })?;
            if (200..300).contains(&status) {
                let bytes = if bytes.is_empty() { &b"{}"[..] } else { &bytes[..] };
                return serde_json::from_slice(bytes)
                    .map_err(|e| ZitadelError::Decode { method: name.to_string(), reason: e.to_string() });
            }
            let err = parse_error_body(name, status, &bytes, retry_after);
            if status == 429 {
                self.limiter.pause(retry_after.unwrap_or(Duration::from_secs(1)));
            }
            // An access token can expire or be revoked between calls: get a
            // new one once. A PAT that is rejected stays rejected.
            if err.code() == Some(Code::Unauthenticated)
                && !retried_auth
                && matches!(self.credential, Credential::Key(_))
            {
                retried_auth = true;
                continue;
            }
            return Err(err);
        }
    }
}

// ------------------------------------------------------------------ users

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub given_name: String,
    pub family_name: String,
    pub display_name: Option<String>,
    pub nick_name: Option<String>,
    pub preferred_language: Option<String>,
}

impl Profile {
    fn to_json(&self) -> Value {
        let mut p = json!({"givenName": self.given_name, "familyName": self.family_name});
        for (k, v) in [
            ("displayName", &self.display_name),
            ("nickName", &self.nick_name),
            ("preferredLanguage", &self.preferred_language),
        ] {
            if let Some(v) = v {
                p[k] = Value::String(v.clone());
            }
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdpLink {
    pub idp_id: String,
    pub user_id: String,
    pub user_name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct NewHumanUser {
    pub user_id: String,
    pub username: String,
    pub organization_id: String,
    pub profile: Profile,
    pub email: String,
    pub phone: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub idp_link: Option<IdpLink>,
}

/// The parts of a ZITADEL user we compare against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZUser {
    pub id: String,
    pub organization_id: String,
    pub state: String,
    pub username: String,
    pub profile: Profile,
    pub email: String,
    pub phone: Option<String>,
    pub is_human: bool,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn opt_str(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

impl ZUser {
    fn from_json(u: &Value) -> ZUser {
        let s = |p: &str| opt_str(u, p).unwrap_or_default();
        ZUser {
            id: s("/userId"),
            organization_id: s("/details/resourceOwner"),
            state: s("/state"),
            username: s("/username"),
            profile: Profile {
                given_name: s("/human/profile/givenName"),
                family_name: s("/human/profile/familyName"),
                display_name: opt_str(u, "/human/profile/displayName"),
                nick_name: opt_str(u, "/human/profile/nickName"),
                preferred_language: opt_str(u, "/human/profile/preferredLanguage"),
            },
            email: s("/human/email/email"),
            phone: opt_str(u, "/human/phone/phone"),
            is_human: u.get("human").is_some(),
        }
    }
    pub(crate) fn active(&self) -> bool {
        self.state != "USER_STATE_INACTIVE"
    }
}

impl Client {
    pub(crate) async fn add_human_user(&self, u: &NewHumanUser) -> Result<(), ZitadelError> {
        let mut body = json!({
            "userId": u.user_id,
            "username": u.username,
            "organization": {"orgId": u.organization_id},
            "profile": u.profile.to_json(),
            // Entra-provisioned users get no verification mail.
            "email": {"email": u.email, "isVerified": true},
            "metadata": u.metadata.iter().map(|(k, v)| json!({"key": k, "value": b64(v)})).collect::<Vec<_>>(),
        });
        if let Some(p) = &u.phone {
            body["phone"] = json!({"phone": p, "isVerified": true});
        }
        if let Some(l) = &u.idp_link {
            body["idpLinks"] = json!([{"idpId": l.idp_id, "userId": l.user_id, "userName": l.user_name}]);
        }
        let _: Value = self.call(USER_SERVICE, "AddHumanUser", &body).await?;
        Ok(())
    }

    pub(crate) async fn get_user(&self, id: &str) -> Result<Option<ZUser>, ZitadelError> {
        match self.call::<Value>(USER_SERVICE, "GetUserByID", &json!({"userId": id})).await {
            Ok(v) => Ok(v.get("user").map(ZUser::from_json)),
            Err(e) if e.code() == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Changes only the parts given.
    pub(crate) async fn update_human_user(
        &self,
        id: &str,
        username: Option<&str>,
        profile: Option<&Profile>,
        email: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> Result<(), ZitadelError> {
        let mut body = json!({"userId": id});
        if let Some(u) = username {
            body["username"] = Value::String(u.to_string());
        }
        if let Some(p) = profile {
            body["profile"] = p.to_json();
        }
        if let Some(e) = email {
            body["email"] = json!({"email": e, "isVerified": true});
        }
        match phone {
            Some(Some(p)) => body["phone"] = json!({"phone": p, "isVerified": true}),
            Some(None) => {
                // Removing a phone is its own call.
                let r: Result<Value, _> = self.call(USER_SERVICE, "RemovePhone", &json!({"userId": id})).await;
                match r {
                    Ok(_) => {}
                    Err(e) if matches!(e.code(), Some(Code::NotFound | Code::FailedPrecondition)) => {}
                    Err(e) => return Err(e),
                }
            }
            None => {}
        }
        if body.as_object().is_some_and(|o| o.len() > 1) {
            let _: Value = self.call(USER_SERVICE, "UpdateHumanUser", &body).await?;
        }
        Ok(())
    }

    /// Deactivates; an already inactive user is fine.
    pub(crate) async fn deactivate_user(&self, id: &str) -> Result<(), ZitadelError> {
        match self.call::<Value>(USER_SERVICE, "DeactivateUser", &json!({"userId": id})).await {
            Err(e) if e.is(Code::FailedPrecondition, "Errors.User.AlreadyInactive") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Reactivates; an already active user is fine.
    pub(crate) async fn reactivate_user(&self, id: &str) -> Result<(), ZitadelError> {
        match self.call::<Value>(USER_SERVICE, "ReactivateUser", &json!({"userId": id})).await {
            Err(e) if e.is(Code::FailedPrecondition, "Errors.User.NotInactive") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Deletes; a user that is already gone is fine.
    pub(crate) async fn delete_user(&self, id: &str) -> Result<(), ZitadelError> {
        match self.call::<Value>(USER_SERVICE, "DeleteUser", &json!({"userId": id})).await {
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    pub(crate) async fn set_metadata(&self, id: &str, entries: &[(String, String)]) -> Result<(), ZitadelError> {
        let md: Vec<Value> = entries.iter().map(|(k, v)| json!({"key": k, "value": b64(v)})).collect();
        let _: Value = self.call(USER_SERVICE, "SetUserMetadata", &json!({"userId": id, "metadata": md})).await?;
        Ok(())
    }

    pub(crate) async fn delete_metadata(&self, id: &str, keys: &[String]) -> Result<(), ZitadelError> {
        match self.call::<Value>(USER_SERVICE, "DeleteUserMetadata", &json!({"userId": id, "keys": keys})).await {
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Current metadata, decoded.
    pub(crate) async fn list_metadata(&self, id: &str) -> Result<Vec<(String, String)>, ZitadelError> {
        let v: Value =
            self.call(USER_SERVICE, "ListUserMetadata", &json!({"userId": id, "pagination": {"limit": 100}})).await?;
        Ok(v.get("metadata")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        let k = m.get("key")?.as_str()?.to_string();
                        let raw = m.get("value").and_then(Value::as_str).unwrap_or_default();
                        let val = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
                        Some((k, String::from_utf8_lossy(&val).into_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Adds a link; the same link already present is fine.
    pub(crate) async fn add_idp_link(&self, id: &str, link: &IdpLink) -> Result<(), ZitadelError> {
        let body = json!({"userId": id, "idpLink": {"idpId": link.idp_id, "userId": link.user_id, "userName": link.user_name}});
        match self.call::<Value>(USER_SERVICE, "AddIDPLink", &body).await {
            Err(e) if e.code() == Some(Code::AlreadyExists) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    pub(crate) async fn remove_idp_link(
        &self,
        id: &str,
        idp_id: &str,
        linked_user_id: &str,
    ) -> Result<(), ZitadelError> {
        let body = json!({"userId": id, "idpId": idp_id, "linkedUserId": linked_user_id});
        match self.call::<Value>(USER_SERVICE, "RemoveIDPLink", &body).await {
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// One page of an organisation's users (for preflight).
    pub(crate) async fn list_org_users(
        &self,
        org: &str,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<ZUser>), ZitadelError> {
        let v: Value = self
            .call(
                USER_SERVICE,
                "ListUsers",
                &json!({
                    "query": {"offset": offset.to_string(), "limit": limit, "asc": true},
                    "sortingColumn": "USER_FIELD_NAME_CREATION_DATE",
                    "queries": [{"organizationIdQuery": {"organizationId": org}}]
                }),
            )
            .await?;
        let total = v.pointer("/details/totalResult").and_then(json_u64).unwrap_or(0);
        let users = v
            .get("result")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(ZUser::from_json).collect())
            .unwrap_or_default();
        Ok((total, users))
    }

    /// Users anywhere in the instance with this username (case-insensitive).
    pub(crate) async fn find_users_by_username(&self, username: &str) -> Result<Vec<ZUser>, ZitadelError> {
        let v: Value = self
            .call(
                USER_SERVICE,
                "ListUsers",
                &json!({
                    "query": {"limit": 10},
                    "queries": [{"userNameQuery": {"userName": username, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}]
                }),
            )
            .await?;
        Ok(v.get("result")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(ZUser::from_json).collect())
            .unwrap_or_default())
    }

    /// Organisations owning a verified domain (to tell whether a username's
    /// domain belongs to another organisation).
    pub(crate) async fn orgs_with_domain(&self, domain: &str) -> Result<Vec<String>, ZitadelError> {
        let v: Value = self
            .call(
                ORG_SERVICE,
                "ListOrganizations",
                &json!({"query": {"limit": 10}, "queries": [{"domainQuery": {"domain": domain, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}]}),
            )
            .await?;
        Ok(v.get("result")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|o| opt_str(o, "/id")).collect())
            .unwrap_or_default())
    }

    pub(crate) async fn org_exists(&self, org: &str) -> Result<bool, ZitadelError> {
        let v: Value = self
            .call(
                ORG_SERVICE,
                "ListOrganizations",
                &json!({"query": {"limit": 1}, "queries": [{"idQuery": {"id": org}}]}),
            )
            .await?;
        Ok(v.get("result").and_then(Value::as_array).is_some_and(|a| !a.is_empty()))
    }
}

fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

// --------------------------------------------------------- authorizations

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub id: String,
    pub roles: Vec<String>,
}

impl Client {
    /// The user's authorization on the project in the project's organisation, if any.
    pub(crate) async fn find_authorization(
        &self,
        user_id: &str,
        project_id: &str,
        org_id: &str,
    ) -> Result<Option<Authorization>, ZitadelError> {
        let v: Value = self
            .call(
                AUTHZ_SERVICE,
                "ListAuthorizations",
                &json!({
                    "pagination": {"limit": 10},
                    "filters": [
                        {"inUserIds": {"ids": [user_id]}},
                        {"projectId": {"id": project_id}},
                        {"organizationId": {"id": org_id}}
                    ]
                }),
            )
            .await?;
        let found = v.get("authorizations").and_then(Value::as_array).and_then(|a| {
            a.iter()
                .find(|x| {
                    opt_str(x, "/user/id").as_deref() == Some(user_id)
                        && opt_str(x, "/project/id").as_deref().is_none_or(|p| p == project_id)
                })
                .map(|x| Authorization {
                    id: opt_str(x, "/id").unwrap_or_default(),
                    roles: x
                        .get("roles")
                        .and_then(Value::as_array)
                        .map(|r| {
                            r.iter()
                                .filter_map(|r| r.get("key").and_then(Value::as_str).or_else(|| r.as_str()))
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
        });
        Ok(found)
    }

    /// The role keys of the user's active authorizations on the project, in any
    /// organisation (the self-service API's check when a token carries no roles claim).
    pub(crate) async fn active_project_roles(
        &self,
        user_id: &str,
        project_id: &str,
    ) -> Result<std::collections::BTreeSet<String>, ZitadelError> {
        let v: Value = self
            .call(
                AUTHZ_SERVICE,
                "ListAuthorizations",
                &json!({
                    "pagination": {"limit": 100},
                    "filters": [{"inUserIds": {"ids": [user_id]}}, {"projectId": {"id": project_id}}]
                }),
            )
            .await?;
        let authorizations = v.get("authorizations").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(authorizations
            .iter()
            .filter(|x| opt_str(x, "/user/id").as_deref() == Some(user_id))
            .filter(|x| opt_str(x, "/project/id").as_deref().is_none_or(|p| p == project_id))
            .filter(|x| opt_str(x, "/state").as_deref().is_none_or(|s| s == "STATE_ACTIVE"))
            .flat_map(|x| x.get("roles").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|r| r.get("key").and_then(Value::as_str).or_else(|| r.as_str()).map(str::to_string))
            .collect())
    }

    pub(crate) async fn create_authorization(
        &self,
        user_id: &str,
        project_id: &str,
        org_id: &str,
        roles: &[String],
    ) -> Result<String, ZitadelError> {
        let v: Value = self
            .call(
                AUTHZ_SERVICE,
                "CreateAuthorization",
                &json!({"userId": user_id, "projectId": project_id, "organizationId": org_id, "roleKeys": roles}),
            )
            .await?;
        opt_str(&v, "/id").ok_or_else(|| ZitadelError::Decode {
            method: format!("{AUTHZ_SERVICE}/CreateAuthorization"),
            reason: "no id in the answer".into(),
        })
    }

    pub(crate) async fn update_authorization(&self, id: &str, roles: &[String]) -> Result<(), ZitadelError> {
        let _: Value = self.call(AUTHZ_SERVICE, "UpdateAuthorization", &json!({"id": id, "roleKeys": roles})).await?;
        Ok(())
    }

    pub(crate) async fn delete_authorization(&self, id: &str) -> Result<(), ZitadelError> {
        let _: Value = self.call(AUTHZ_SERVICE, "DeleteAuthorization", &json!({"id": id})).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_requests_and_holds_them_after_a_429() {
        let limiter = RateLimiter::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        // The first starts at once, each next one 100 ms later.
        assert!(start.elapsed() >= Duration::from_millis(390), "{:?}", start.elapsed());
        limiter.pause(Duration::from_secs(3));
        let before = tokio::time::Instant::now();
        limiter.acquire().await;
        assert!(before.elapsed() >= Duration::from_millis(2900), "Retry-After is honoured: {:?}", before.elapsed());
    }
}
