//! Reading a tenant server's `/status` (admin port): for its provisioning
//! health (`provisioning_health.rs`) and for the ZITADEL budget's division
//! (`rate_share.rs`).

use std::time::Duration;

use kube::ResourceExt;
use serde_json::Value;

use super::build;
use super::crd::ScimTenant;

/// `http://{service}.{namespace}.svc:9090/status` with the placeholders filled.
pub(crate) fn status_url(template: &str, service: &str, namespace: &str, name: &str) -> String {
    template.replace("{service}", service).replace("{namespace}", namespace).replace("{name}", name)
}

/// Where `tenant`'s server answers `/status`, from the operator's template.
pub(crate) fn tenant_url(template: &str, tenant: &ScimTenant) -> String {
    status_url(template, &build::server_name(tenant), &tenant.namespace().unwrap_or_default(), &tenant.name_any())
}

/// Reads the server's `/status`.
pub(crate) async fn fetch(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = http.get(url).timeout(Duration::from_secs(3)).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            super::status_url("http://{service}.{namespace}.svc:9090/status", "a-scim", "t", "a"),
            "http://a-scim.t.svc:9090/status"
        );
    }
}
