//! The fake's test-side API for self-service: seeding authorizations, issuing a human
//! user's access token as a login would (there is no login UI in the fake), revoking it,
//! and inspecting API applications.

use std::time::Duration;

use time::OffsetDateTime;

use super::introspect::{SCOPE_PROJECT_ROLES, SCOPE_RESOURCEOWNER, jwt_claims};
use super::state::*;
use super::{ZitadelFake, long_ago, oauth};

/// How `issue_user_token` shapes a token.
#[derive(Clone, Debug)]
pub struct UserTokenOptions {
    /// A JWT access token (signed RS256 by the fake's instance key) instead of an opaque one.
    pub jwt: bool,
    pub lifetime: Duration,
    pub scopes: Vec<String>,
    /// The project ids the token is meant for: introspection by an app of another project
    /// answers `active: false`.
    pub audience: Vec<String>,
}

impl UserTokenOptions {
    /// An opaque token for `project_id`, valid 12 h, with the scopes a web app of the project
    /// asks for: `openid profile email`, the resource owner and the project roles.
    pub fn for_project(project_id: &str) -> UserTokenOptions {
        UserTokenOptions {
            jwt: false,
            lifetime: Duration::from_secs(12 * 3600),
            scopes: ["openid", "profile", "email", SCOPE_RESOURCEOWNER, SCOPE_PROJECT_ROLES]
                .map(str::to_string)
                .to_vec(),
            audience: vec![project_id.to_string()],
        }
    }

    pub fn jwt(mut self) -> Self {
        self.jwt = true;
        self
    }

    pub fn lifetime(mut self, d: Duration) -> Self {
        self.lifetime = d;
        self
    }

    /// Without the claims a scope would add, e.g. `SCOPE_PROJECT_ROLES`.
    pub fn without_scope(mut self, scope: &str) -> Self {
        self.scopes.retain(|s| s != scope);
        self
    }
}

/// An API application as the fake holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeApp {
    pub id: String,
    pub project_id: String,
    pub org: String,
    pub name: String,
    pub client_id: String,
    /// `API_AUTH_METHOD_TYPE_BASIC` or `API_AUTH_METHOD_TYPE_PRIVATE_KEY_JWT`.
    pub auth_method: String,
    pub key_ids: Vec<String>,
}

impl ZitadelFake {
    /// An active authorization of `user_id` on `project_id`, made on `org_id` (the project
    /// owner or a granted org), as the projector or an administrator would create it.
    pub fn add_authorization(&self, user_id: &str, project_id: &str, org_id: &str, roles: &[&str]) -> String {
        self.with(|s| {
            let id = s.new_id();
            let now = OffsetDateTime::now_utc();
            s.authorizations.push(Authorization {
                id: id.clone(),
                user_id: user_id.into(),
                project_id: project_id.into(),
                org_id: org_id.into(),
                project_grant_id: None,
                roles: roles.iter().map(|r| r.to_string()).collect(),
                active: true,
                created: now,
                changed: now,
                written: long_ago(),
            });
            id
        })
    }

    /// An API application of `project_id` using client secrets: returns (client id, secret).
    pub fn add_api_app_basic(&self, project_id: &str, name: &str) -> (String, String) {
        self.with(|s| {
            let a = Self::seed_app(s, project_id, name, super::apps::AUTH_BASIC);
            (a.client_id.clone(), a.client_secret.clone().unwrap_or_default())
        })
    }

    /// An API application of `project_id` using private-key JWT, with one key: returns its key
    /// file `{"type":"application","keyId","key","appId","clientId"}`.
    pub fn add_api_app_with_key(&self, project_id: &str, name: &str) -> String {
        self.with(|s| {
            let key_id = s.new_id();
            let pem = s.next_pool_key();
            let public_der = oauth::public_key_of_private_pem(pem).expect("pool key");
            let a = Self::seed_app(s, project_id, name, super::apps::AUTH_PRIVATE_KEY_JWT);
            let now = OffsetDateTime::now_utc();
            a.keys.push(AppKey {
                id: key_id.clone(),
                public_der,
                expiration: time::macros::datetime!(9999-12-31 23:59:59 UTC),
                created: now,
            });
            serde_json::json!({"type": "application", "keyId": key_id, "key": pem, "appId": a.id, "clientId": a.client_id})
                .to_string()
        })
    }

    fn seed_app<'a>(s: &'a mut State, project_id: &str, name: &str, auth_method: &str) -> &'a mut App {
        let id = s.new_id();
        let client_id = format!("{}@{}", s.new_id(), super::slug(project_id));
        let org = s.projects.get(project_id).map(|p| p.owner_org.clone()).unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let secret = (auth_method == super::apps::AUTH_BASIC).then(oauth::random_token);
        s.apps.insert(
            id.clone(),
            App {
                id: id.clone(),
                project_id: project_id.into(),
                org,
                name: name.into(),
                client_id,
                client_secret: secret,
                auth_method: auth_method.into(),
                keys: Vec::new(),
                created: now,
                changed: now,
                sequence: 1,
            },
        );
        s.apps.get_mut(&id).expect("just inserted")
    }

    /// Deactivates or reactivates a user (its tokens then introspect as inactive).
    pub fn set_user_active(&self, user_id: &str, active: bool) {
        self.with(|s| {
            if let Some(u) = s.user_mut(user_id) {
                u.state = if active { ACTIVE } else { INACTIVE };
                u.touch();
            }
        })
    }

    /// A human user's access token, as a login through an app of the project would issue it.
    pub fn issue_user_token(&self, user_id: &str, opts: UserTokenOptions) -> String {
        self.with(|s| {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let t = UserToken {
                user_id: user_id.into(),
                jti: s.new_id(),
                scopes: opts.scopes,
                audience: opts.audience,
                client_id: format!("{}@web", s.new_id()),
                issued: now,
                expires: now + opts.lifetime.as_secs() as i64,
                revoked: false,
            };
            let token = if opts.jwt {
                let kid = "fake-instance-key";
                oauth::sign_jwt(super::keys::POOL[0], kid, &jwt_claims(s, &t))
            } else {
                oauth::random_token()
            };
            s.user_tokens.insert(token.clone(), t);
            token
        })
    }

    /// Revokes a user token (RFC 7009 revocation or a logout, in the real thing).
    pub fn revoke_user_token(&self, token: &str) {
        self.with(|s| {
            if let Some(t) = s.user_tokens.get_mut(token) {
                t.revoked = true;
            }
        })
    }

    /// Introspection requests that authenticated and named a token.
    pub fn introspections(&self) -> usize {
        self.with(|s| s.introspections)
    }

    pub fn apps(&self) -> Vec<FakeApp> {
        self.with(|s| {
            s.apps
                .values()
                .map(|a| FakeApp {
                    id: a.id.clone(),
                    project_id: a.project_id.clone(),
                    org: a.org.clone(),
                    name: a.name.clone(),
                    client_id: a.client_id.clone(),
                    auth_method: a.auth_method.clone(),
                    key_ids: a.keys.iter().map(|k| k.id.clone()).collect(),
                })
                .collect()
        })
    }
}
