//! The `serve` configuration: a camelCase YAML file, overridden by flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_yaml::Error },
    #[error("{key} is invalid: {why}")]
    Invalid { key: &'static str, why: String },
}

/// How durable an acknowledged write is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DurabilityConfig {
    /// fsync before acknowledging: survives power loss.
    #[default]
    Full,
    /// Written to the OS before acknowledging: survives a crash or kill -9 of the
    /// server, not a power loss of the machine.
    Process,
}

/// Also what the operator writes into each tenant's ConfigMap, so both sides
/// share one schema. Field order is the order of keys in that file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeConfig {
    /// SCIM listener, default 127.0.0.1:8080.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Admin listener (/healthz /readyz /metrics /status), default 127.0.0.1:9090.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Where the embedded store keeps its files, default ./data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// YAML `keys: [{name, sha256}]`, reloaded when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// The externally visible SCIM base URL (for `meta.location` and the
    /// printed Tenant URL), e.g. https://scim.example.com/scim/v2. Default:
    /// derived from the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<DurabilityConfig>,
    /// Largest request body accepted, default 1 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Project users into ZITADEL; without it the server is standalone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zitadel: Option<crate::zitadel::config::ZitadelConfig>,
    /// Timeouts and limits of the SCIM and admin connections; every field
    /// has a default (see [`ConnectionsConfig`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionsConfig>,
    /// The self-service key API (`POST /graphql`, `/scope-management/graphql`):
    /// an organisation's admin creates and deletes SCIM keys with a ZITADEL
    /// access token. Needs `zitadel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_service: Option<SelfServiceConfig>,
}

/// `selfService:` of the `serve` config.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfServiceConfig {
    /// The project role an admin needs on `zitadel.projectId`, default `Chat.Admin.All`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_role: Option<String>,
    /// Most active self-service keys at once, default 16.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<usize>,
    /// How the server authenticates to ZITADEL's token introspection, as an
    /// API application of the project.
    pub introspection: IntrospectionConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The API application's client id. With `keyFile` it may be left empty:
    /// the key file names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// A file holding the client secret (Basic client authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The API application's key JSON (private-key JWT client authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

pub(crate) const DEFAULT_ADMIN_ROLE: &str = "Chat.Admin.All";
pub(crate) const DEFAULT_MAX_KEYS: usize = 16;

impl SelfServiceConfig {
    pub(crate) fn admin_role(&self) -> &str {
        self.admin_role.as_deref().unwrap_or(DEFAULT_ADMIN_ROLE)
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys.unwrap_or(DEFAULT_MAX_KEYS)
    }

    /// Every problem at once, each naming the key and the fix.
    pub(crate) fn problems(&self, has_zitadel: bool) -> Vec<String> {
        let mut p = Vec::new();
        if !has_zitadel {
            p.push(
                "selfService needs the zitadel: section (tokens are checked with ZITADEL and the keys belong to its organisationId); add zitadel: {url, credentials, organizationId, projectId, projectOrganizationId} or remove selfService".into(),
            );
        }
        if self.admin_role.as_deref().is_some_and(|r| r.trim().is_empty()) {
            p.push(format!(
                "selfService.adminRole is empty: remove it for the default {DEFAULT_ADMIN_ROLE} or name a project role"
            ));
        }
        if self.max_keys == Some(0) {
            p.push("selfService.maxKeys must be at least 1 (default 16)".into());
        }
        let i = &self.introspection;
        match (&i.client_secret_file, &i.key_file) {
            (None, None) => p.push(
                "selfService.introspection needs clientSecretFile (Basic) or keyFile (the API application's key JSON)"
                    .into(),
            ),
            (Some(_), Some(_)) => p.push("selfService.introspection: set clientSecretFile or keyFile, not both".into()),
            (Some(_), None) if i.client_id.trim().is_empty() => p.push(
                "selfService.introspection.clientId is missing: copy the API application's client id from ZITADEL"
                    .into(),
            ),
            _ => {}
        }
        p
    }
}

/// How long a client may take and how much it may hold, per listener. A
/// connection past a limit is closed (or refused with a SCIM error body), so
/// slow or stuck clients cannot exhaust file descriptors or memory.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Time from a request's first byte to the end of its headers, default 10 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_seconds: Option<u64>,
    /// How long a connection may wait for its next request, default 60 s
    /// (Entra reuses connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// Time to receive a whole request body, default 30 s; then 408.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout_seconds: Option<u64>,
    /// How long a response write may make no progress (a client that does
    /// not read), default 30 s; then the connection is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout_seconds: Option<u64>,
    /// Open SCIM connections at most, default 512; beyond it a new
    /// connection gets a 503 and is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Open admin connections at most, default 64, counted apart from the
    /// SCIM port so probes are answered while it is saturated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_max_connections: Option<usize>,
    /// SCIM requests being handled or sending their response at once,
    /// default 64; more wait for a turn. Bounds the memory of responses
    /// that clients do not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<usize>,
    /// Largest request line plus headers, default 32 KiB; then 431 (414
    /// for the request line alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    /// On SIGTERM, how long requests in progress may finish before the
    /// remaining connections are closed, default 10 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<u64>,
}

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub(crate) const DEFAULT_MAX_BODY: usize = 1024 * 1024;

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    pub(crate) fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "publicUrl",
                why: format!("'{u}' must start with http:// or https://, e.g. https://scim.example.com/scim/v2"),
            });
        }
        if self.max_body_bytes == Some(0) {
            return Err(ConfigError::Invalid { key: "maxBodyBytes", why: "must be greater than 0".into() });
        }
        if let Some(c) = &self.connections {
            c.validate()?;
        }
        if let Some(z) = &self.zitadel {
            let problems = z.problems();
            if !problems.is_empty() {
                return Err(ConfigError::Invalid { key: "zitadel", why: format!("\n  - {}", problems.join("\n  - ")) });
            }
        }
        if let Some(s) = &self.self_service {
            let problems = s.problems(self.zitadel.is_some());
            if !problems.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "selfService",
                    why: format!("\n  - {}", problems.join("\n  - ")),
                });
            }
        }
        Ok(())
    }
}

impl ConnectionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let zero = |key: &'static str| ConfigError::Invalid { key, why: "must be greater than 0".into() };
        let secs = [
            ("connections.headerReadTimeoutSeconds", self.header_read_timeout_seconds),
            ("connections.idleTimeoutSeconds", self.idle_timeout_seconds),
            ("connections.bodyTimeoutSeconds", self.body_timeout_seconds),
            ("connections.writeTimeoutSeconds", self.write_timeout_seconds),
        ];
        if let Some((key, _)) = secs.iter().find(|(_, v)| *v == Some(0)) {
            return Err(zero(key));
        }
        let counts = [
            ("connections.maxConnections", self.max_connections),
            ("connections.adminMaxConnections", self.admin_max_connections),
            ("connections.maxConcurrentRequests", self.max_concurrent_requests),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, v)| *v == Some(0)) {
            return Err(zero(key));
        }
        if self.max_header_bytes.is_some_and(|b| b < 1024) {
            return Err(ConfigError::Invalid {
                key: "connections.maxHeaderBytes",
                why: "must be at least 1024 (Entra's requests carry a bearer token and several headers)".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_camel_case_and_rejects_unknown_keys() {
        let c = ServeConfig::parse("listen: 0.0.0.0:8080\nadminListen: 0.0.0.0:9090\ndataDir: /data\nkeysFile: /keys/keys.yaml\ndurability: process\n").unwrap();
        assert_eq!(c.admin_listen.as_deref(), Some("0.0.0.0:9090"));
        assert_eq!(c.durability, Some(DurabilityConfig::Process));
        let e = ServeConfig::parse("listenn: x\n").unwrap_err().to_string();
        assert!(e.contains("listenn"), "{e}");
        assert!(ServeConfig::parse("").is_ok());
        let c = ServeConfig::parse("publicUrl: ftp://x\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("publicUrl"));
    }

    #[test]
    fn self_service_is_parsed_with_defaults_and_needs_zitadel() {
        let c = ServeConfig::parse("selfService:\n  introspection:\n    clientId: \"1@p\"\n    clientSecretFile: /s\n")
            .unwrap();
        let s = c.self_service.as_ref().unwrap();
        assert_eq!((s.admin_role(), s.max_keys()), ("Chat.Admin.All", 16));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("selfService needs the zitadel: section"), "{e}");
        let e = ServeConfig::parse("selfService:\n  adminRol: x\n  introspection: {}\n").unwrap_err().to_string();
        assert!(e.contains("adminRol"), "{e}");
        let e =
            ServeConfig::parse("selfService:\n  introspection: {clientId: a, secret: b}\n").unwrap_err().to_string();
        assert!(e.contains("secret"), "{e}");
        let c = ServeConfig::parse("selfService:\n  maxKeys: 0\n  introspection: {}\n").unwrap();
        let p = c.self_service.unwrap().problems(true).join("\n");
        assert!(p.contains("maxKeys") && p.contains("clientSecretFile"), "{p}");
    }
}
