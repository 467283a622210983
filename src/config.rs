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
}
