//! What the controller is configured with (flags of `scim-operator controller`).

use std::path::PathBuf;
use std::time::Duration;

use super::build::TenantDefaults;
use crate::zitadel::config::ZitadelConfig;

/// Everything the controller is configured with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub settings: TenantDefaults,
    /// The operator's own ZITADEL credential (PAT or machine key JSON).
    pub admin_credential_file: PathBuf,
    /// Empty: every namespace.
    pub watch_namespaces: Vec<String>,
    /// How often ZITADEL is checked for drift.
    pub resync: Duration,
    /// Where a tenant server's `/status` is read (`{service}`, `{namespace}`, `{name}`).
    pub status_url_template: String,
    pub status_poll: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `reportingInstance` of events (the pod name).
    pub instance: String,
    /// Most ZITADEL requests per second from the operator (default 40).
    pub zitadel_rate: Option<f64>,
    /// The cluster-wide ZITADEL budget in requests per second, divided
    /// between the operator and the tenant servers (`rate_budget.rs`);
    /// `None`: every server runs at its own rate.
    pub zitadel_budget: Option<f64>,
    /// How often every server with a share is asked whether it has work.
    pub budget_poll: Duration,
}

impl ControllerConfig {
    pub fn new(settings: TenantDefaults, admin_credential_file: PathBuf) -> Self {
        ControllerConfig {
            settings,
            admin_credential_file,
            watch_namespaces: Vec::new(),
            resync: Duration::from_secs(600),
            status_url_template: "http://{service}.{namespace}.svc:9090/status".into(),
            status_poll: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| "scim-operator".into()),
            zitadel_rate: None,
            zitadel_budget: None,
            budget_poll: Duration::from_secs(5),
        }
    }

    /// The operator's own rate: its flag, held to its slice of the budget.
    pub(crate) fn own_rate(&self) -> Option<f64> {
        let slice = self.zitadel_budget.map(|total| super::rate_budget::Budget { total }.operator_share());
        match (self.zitadel_rate, slice) {
            (Some(r), Some(s)) => Some(r.min(s)),
            (r, s) => r.or(s),
        }
    }

    /// How the operator itself talks to ZITADEL (its credential is added by the caller).
    pub(crate) fn admin_zitadel(&self) -> ZitadelConfig {
        ZitadelConfig {
            url: self.settings.zitadel_url.clone(),
            instance_host: self.settings.zitadel_instance_host.clone(),
            max_requests_per_second: self.own_rate(),
            ..Default::default()
        }
    }
}
