//! The `zitadel:` section of the `serve` config.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every field defaults, so a config missing several keys gets all of them
/// named at once by `problems()` rather than the first by serde.
///
/// The operator serialises this into each tenant's `serve.yaml`. Field order
/// is the order of the keys there, and the pod template carries a hash of that
/// text: reordering fields restarts every tenant's server on upgrade.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZitadelConfig {
    /// API base, e.g. https://id.example.com (an in-cluster http:// URL works
    /// with `instanceHost`).
    pub url: String,
    pub credentials: Credentials,
    /// The customer organisation users are created in.
    pub organization_id: String,
    /// The product project whose roles users get.
    pub project_id: String,
    /// The organisation owning the project; authorizations are created there.
    pub project_organization_id: String,
    #[serde(default)]
    pub default_roles: Vec<String>,
    #[serde(default)]
    pub group_roles: Vec<GroupRoles>,
    /// Sent as Host / x-zitadel-instance-host when `url` is not the external domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_host: Option<String>,
    /// IdP users are linked to (link userId = SCIM externalId = Entra objectId).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_id: Option<String>,
    /// Most ZITADEL requests per second (default 40; ZITADEL Cloud bans above 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_second: Option<f64>,
    /// Per-request timeout in seconds (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Longest wait between retries of a failed projection (default 300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retry_delay_seconds: Option<u64>,
    /// A file holding the current requests-per-second limit, re-read while
    /// running (the operator writes each server's share of the cluster's
    /// ZITADEL budget there); overrides `maxRequestsPerSecond` while usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_second_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Credentials {
    /// A file holding a personal access token of the service user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pat_file: Option<PathBuf>,
    /// A machine key file (JSON, as ZITADEL's console downloads it) for the JWT profile grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

// Roles granted to members of a SCIM group. One type for the server's config
// and the `ScimTenant` spec. Plain comments here: doc comments would become
// descriptions in the CRD schema, which is checked in byte for byte
// (`deny_unknown_fields`, for the server's config file, leaves it unchanged).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupRoles {
    /// SCIM group displayName (case-insensitive).
    pub group: String,
    pub roles: Vec<String>,
}

pub(crate) const DEFAULT_RATE: f64 = 40.0;
pub(crate) const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

impl ZitadelConfig {
    /// The HTTP client every caller of this ZITADEL uses: its timeout, and a
    /// short connect timeout so an unreachable instance fails fast.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
    }

    /// Every problem at once, each naming the key and the fix.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let url = self.url.trim();
        if url.is_empty() {
            p.push("zitadel.url is missing: set it to the ZITADEL API base, e.g. https://id.example.com".into());
        } else if !(url.starts_with("https://") || url.starts_with("http://")) {
            p.push(format!("zitadel.url '{url}' must start with https:// (or http:// for an in-cluster address)"));
        }
        match (&self.credentials.pat_file, &self.credentials.key_file) {
            (None, None) => p.push(
                "zitadel.credentials needs patFile (a personal access token) or keyFile (a machine key JSON)".into(),
            ),
            (Some(_), Some(_)) => {
                p.push("zitadel.credentials: set patFile or keyFile, not both".into());
            }
            _ => {}
        }
        for (key, v) in [
            ("organizationId", &self.organization_id),
            ("projectId", &self.project_id),
            ("projectOrganizationId", &self.project_organization_id),
        ] {
            if v.trim().is_empty() {
                p.push(format!("zitadel.{key} is missing: copy the id from the ZITADEL console"));
            }
        }
        if self.idp_id.as_deref().is_some_and(|s| s.trim().is_empty()) {
            p.push("zitadel.idpId is empty: remove the key or set the IdP id".into());
        }
        for (i, g) in self.group_roles.iter().enumerate() {
            if g.group.trim().is_empty() {
                p.push(format!("zitadel.groupRoles[{i}].group is empty: set the SCIM group's displayName"));
            }
            if g.roles.is_empty() || g.roles.iter().any(|r| r.trim().is_empty()) {
                p.push(format!("zitadel.groupRoles[{i}].roles must list one or more non-empty role keys"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for g in &self.group_roles {
            if !seen.insert(g.group.to_lowercase()) {
                p.push(format!("zitadel.groupRoles lists group '{}' twice: merge the entries", g.group));
            }
        }
        if let Some(r) = self.max_requests_per_second
            && !(r > 0.0 && r.is_finite())
        {
            p.push("zitadel.maxRequestsPerSecond must be a positive number".into());
        }
        if self.max_retry_delay_seconds == Some(0) {
            p.push("zitadel.maxRetryDelaySeconds must be at least 1".into());
        }
        if self.timeout_seconds == Some(0) {
            p.push("zitadel.timeoutSeconds must be at least 1".into());
        }
        p
    }

    pub(crate) fn rate(&self) -> f64 {
        self.max_requests_per_second.unwrap_or(DEFAULT_RATE)
    }

    /// Roles a user gets from the groups (by displayName) it belongs to.
    pub(crate) fn roles_for(&self, groups: &[String]) -> std::collections::BTreeSet<String> {
        let mut roles: std::collections::BTreeSet<String> = self.default_roles.iter().cloned().collect();
        for gr in &self.group_roles {
            if groups.iter().any(|g| g.to_lowercase() == gr.group.to_lowercase()) {
                roles.extend(gr.roles.iter().cloned());
            }
        }
        roles
    }

    /// Whether a group (by displayName) maps to roles at all.
    pub(crate) fn maps_group(&self, name: &str) -> bool {
        let n = name.to_lowercase();
        self.group_roles.iter().any(|g| g.group.to_lowercase() == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ZitadelConfig {
        serde_yaml::from_str(
            "url: https://id.example.com\ncredentials: {patFile: /pat}\norganizationId: o1\nprojectId: p1\nprojectOrganizationId: o0\ndefaultRoles: [Chat.User]\ngroupRoles: [{group: Admins, roles: [Chat.Admin]}]\n",
        )
        .unwrap()
    }

    #[test]
    fn valid_config_has_no_problems_and_maps_roles() {
        let c = valid();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let roles = c.roles_for(&["admins".into(), "Other".into()]);
        assert_eq!(roles.into_iter().collect::<Vec<_>>(), ["Chat.Admin", "Chat.User"]);
        assert!(c.maps_group("ADMINS"));
    }

    #[test]
    fn problems_name_the_key_and_the_fix() {
        let mut c = valid();
        c.url = "id.example.com".into();
        c.credentials = Credentials::default();
        c.project_id = String::new();
        c.group_roles.push(GroupRoles { group: "admins".into(), roles: vec![] });
        let p = c.problems().join("\n");
        assert!(p.contains("zitadel.url 'id.example.com' must start with https://"), "{p}");
        assert!(p.contains("patFile"), "{p}");
        assert!(p.contains("zitadel.projectId is missing"), "{p}");
        assert!(p.contains("groupRoles[1].roles"), "{p}");
        assert!(p.contains("twice"), "{p}");
        assert!(serde_yaml::from_str::<ZitadelConfig>("url: x\nbogus: 1\n").is_err());
    }
}
