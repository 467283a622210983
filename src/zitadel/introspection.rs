//! ZITADEL's token introspection (RFC 7662, `POST {url}/oauth/v2/introspect`),
//! called as an API application of the project: client secret (Basic) or
//! private-key JWT. What the answer says about a token is [`TokenInfo`]; the
//! decision what it may do is the caller's.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::auth::JwtSigner;
use super::config::ZitadelConfig;
use crate::config::IntrospectionConfig;

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Client assertions are used once, at once: a short life limits a leaked one.
const ASSERTION_LIFETIME_SECS: u64 = 60;
/// Answers larger than this are not ZITADEL's (a token's claims are a few KiB).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum IntrospectionError {
    #[error("ZITADEL's token introspection could not be reached: {0}")]
    Unreachable(String),
    #[error(
        "ZITADEL refused the server's introspection client (HTTP {status}): {detail}; check selfService.introspection (client id, secret or key file) and that the API application still exists"
    )]
    ClientRejected { status: u16, detail: String },
    #[error("ZITADEL's token introspection answered HTTP {0}")]
    Status(u16),
    #[error("ZITADEL's token introspection answer is not valid: {0}")]
    Invalid(String),
    #[error("the introspection credentials are unusable: {0}")]
    Credentials(String),
}

enum ClientAuth {
    Basic { client_id: String, secret: String },
    PrivateKeyJwt(Box<JwtSigner>),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Basic { client_id, .. } => write!(f, "Basic({client_id}, <redacted>)"),
            ClientAuth::PrivateKeyJwt(s) => write!(f, "PrivateKeyJwt({s:?})"),
        }
    }
}

/// What introspection said about a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    pub active: bool,
    /// The user id.
    pub sub: Option<String>,
    pub username: Option<String>,
    /// Unix seconds.
    pub exp: Option<i64>,
    /// `urn:zitadel:iam:user:resourceowner:id`, when the token's scopes asked for it.
    pub org_id: Option<String>,
    /// The role keys on the project, when the answer carries a project-roles claim.
    pub project_roles: Option<BTreeSet<String>>,
}

impl TokenInfo {
    /// Reads ZITADEL's answer; `project_id` picks the roles claim.
    pub(crate) fn from_answer(v: &Value, project_id: &str) -> Result<TokenInfo, IntrospectionError> {
        let active = v
            .get("active")
            .and_then(Value::as_bool)
            .ok_or_else(|| IntrospectionError::Invalid("no boolean 'active'".into()))?;
        if !active {
            return Ok(TokenInfo::default());
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let roles = v
            .get(format!("urn:zitadel:iam:org:project:{project_id}:roles"))
            .or_else(|| v.get("urn:zitadel:iam:org:project:roles"))
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect());
        Ok(TokenInfo {
            active,
            sub: s("sub"),
            username: s("username"),
            exp: v.get("exp").and_then(Value::as_i64),
            org_id: s("urn:zitadel:iam:user:resourceowner:id"),
            project_roles: roles,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Introspector {
    http: reqwest::Client,
    base: String,
    instance_host: Option<String>,
    auth: ClientAuth,
    /// The issuer (the audience of client assertions), from discovery.
    issuer: OnceCell<String>,
}

impl Introspector {
    pub(crate) fn new(zitadel: &ZitadelConfig, cfg: &IntrospectionConfig) -> Result<Self, IntrospectionError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| IntrospectionError::Credentials(format!("cannot read {}: {e}", p.display())))
        };
        let auth = match (&cfg.client_secret_file, &cfg.key_file) {
            (Some(f), None) => {
                let secret = read(f)?.trim().to_string();
                if secret.is_empty() {
                    return Err(IntrospectionError::Credentials(format!("{} is empty", f.display())));
                }
                ClientAuth::Basic { client_id: cfg.client_id.trim().to_string(), secret }
            }
            (None, Some(f)) => {
                let signer = JwtSigner::from_application_key_file(&read(f)?)
                    .map_err(|e| IntrospectionError::Credentials(e.to_string()))?;
                if !cfg.client_id.trim().is_empty() && cfg.client_id.trim() != signer.user_id {
                    return Err(IntrospectionError::Credentials(format!(
                        "selfService.introspection.clientId '{}' differs from the key file's clientId '{}'",
                        cfg.client_id.trim(),
                        signer.user_id
                    )));
                }
                ClientAuth::PrivateKeyJwt(Box::new(signer))
            }
            _ => {
                return Err(IntrospectionError::Credentials("set exactly one of clientSecretFile and keyFile".into()));
            }
        };
        let http = zitadel
            .http_client()
            .map_err(|e| IntrospectionError::Credentials(format!("cannot build the HTTP client: {e}")))?;
        Ok(Introspector {
            http,
            base: zitadel.url.trim_end_matches('/').to_string(),
            instance_host: zitadel.instance_host.clone(),
            auth,
            issuer: OnceCell::new(),
        })
    }

    fn with_host(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        super::client::with_instance_host(rb, self.instance_host.as_deref())
    }

    async fn issuer(&self) -> Result<&str, IntrospectionError> {
        let issuer = self
            .issuer
            .get_or_try_init(|| async {
                let unreachable = |e: reqwest::Error| IntrospectionError::Unreachable(format!("discovery: {e}"));
                let resp = self
                    .with_host(self.http.get(format!("{}/.well-known/openid-configuration", self.base)))
                    .send()
                    .await
                    .map_err(unreachable)?;
                if !resp.status().is_success() {
                    return Err(IntrospectionError::Status(resp.status().as_u16()));
                }
                let v: Value = resp.json().await.map_err(|e| IntrospectionError::Invalid(format!("discovery: {e}")))?;
                v.get("issuer")
                    .and_then(Value::as_str)
                    .map(|s| s.trim_end_matches('/').to_string())
                    .ok_or_else(|| IntrospectionError::Invalid("discovery has no issuer".into()))
            })
            .await?;
        Ok(issuer)
    }

    /// Asks ZITADEL about `token`. Only an answer from ZITADEL is `Ok`; every
    /// failure to get one is an error (never "inactive").
    pub(crate) async fn introspect(&self, token: &str, project_id: &str) -> Result<TokenInfo, IntrospectionError> {
        let url = format!("{}/oauth/v2/introspect", self.base);
        let rb = match &self.auth {
            ClientAuth::Basic { client_id, secret } => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                self.http
                    .post(&url)
                    .basic_auth(enc(client_id), Some(enc(secret)))
                    .body(form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish())
            }
            ClientAuth::PrivateKeyJwt(signer) => {
                let issuer = self.issuer().await?;
                let assertion = signer
                    .assertion_for(issuer, SystemTime::now(), ASSERTION_LIFETIME_SECS)
                    .map_err(|e| IntrospectionError::Credentials(e.to_string()))?;
                self.http.post(&url).body(
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
                        .append_pair("client_assertion", &assertion)
                        .append_pair("token", token)
                        .finish(),
                )
            }
        };
        let resp = self
            .with_host(rb.header("content-type", "application/x-www-form-urlencoded"))
            .send()
            .await
            .map_err(|e| IntrospectionError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| IntrospectionError::Unreachable(e.without_url().to_string()))?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err(IntrospectionError::Invalid(format!("the answer has {} bytes", body.len())));
        }
        match status {
            200 => {
                let v: Value = serde_json::from_slice(&body).map_err(|e| IntrospectionError::Invalid(e.to_string()))?;
                TokenInfo::from_answer(&v, project_id)
            }
            400 | 401 | 403 => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let detail = ["error", "error_description"]
                    .iter()
                    .filter_map(|k| v.get(*k).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(": ");
                Err(IntrospectionError::ClientRejected { status, detail: detail.chars().take(200).collect() })
            }
            s => Err(IntrospectionError::Status(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_zitadel_claims_and_prefers_the_project_specific_roles() {
        let v = json!({
            "active": true, "sub": "u1", "exp": 1_900_000_000, "username": "a@b",
            "urn:zitadel:iam:user:resourceowner:id": "org1",
            "urn:zitadel:iam:org:project:roles": {"Other": {"o": "d"}},
            "urn:zitadel:iam:org:project:p1:roles": {"Chat.Admin.All": {"o": "d"}},
        });
        let t = TokenInfo::from_answer(&v, "p1").unwrap();
        assert!(t.active);
        assert_eq!((t.sub.as_deref(), t.org_id.as_deref(), t.exp), (Some("u1"), Some("org1"), Some(1_900_000_000)));
        assert_eq!(t.project_roles, Some(BTreeSet::from(["Chat.Admin.All".to_string()])));
        let t = TokenInfo::from_answer(&v, "p2").unwrap();
        assert_eq!(t.project_roles, Some(BTreeSet::from(["Other".to_string()])));
        let t = TokenInfo::from_answer(&json!({"active": true, "sub": "u"}), "p").unwrap();
        assert_eq!(t.project_roles, None, "no claim: the caller must ask ZITADEL");
        assert_eq!(TokenInfo::from_answer(&json!({"active": false, "sub": "u"}), "p").unwrap(), TokenInfo::default());
        assert!(TokenInfo::from_answer(&json!({"sub": "u"}), "p").is_err());
    }
}
