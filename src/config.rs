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
        if let Some(z) = &self.zitadel {
            let problems = z.problems();
            if !problems.is_empty() {
                return Err(ConfigError::Invalid { key: "zitadel", why: format!("\n  - {}", problems.join("\n  - ")) });
            }
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
