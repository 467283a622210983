//! The controller's own metrics and its admin endpoints (`/metrics`,
//! `/healthz`, `/readyz`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: &'static str,
}

/// One tenant, for alerts that must say which.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    namespace: String,
    name: String,
    key: String,
}

/// `namespace/name` → its labels.
fn tenant_label(tenant: &str) -> TenantLabel {
    let (namespace, name) = tenant.split_once('/').unwrap_or(("", tenant));
    TenantLabel { namespace: namespace.into(), name: name.into() }
}

pub(crate) struct OperatorMetrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    tenants: Family<ReadyLabel, Gauge>,
    leader: Gauge,
    /// 1 while a tenant is Ready (the alert on a tenant not Ready for long).
    tenant_ready: Family<TenantLabel, Gauge>,
    /// When each SCIM key expires, in Unix seconds (the alert on keys about to).
    key_expiry: Family<KeyLabel, Gauge>,
    /// The keys exported per tenant, to drop those that are gone.
    key_series: Mutex<HashMap<String, Vec<KeyLabel>>>,
    /// Each tenant's last `Ready` status, to count tenants by readiness.
    readiness: Mutex<HashMap<String, &'static str>>,
    /// Caches synced (or standing by without leadership).
    pub ready: AtomicBool,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("scim_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let tenants = Family::<ReadyLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by reason", errors.clone());
        for reason in super::error::Error::REASONS {
            let _ = errors.get_or_create(&ReasonLabel { reason: reason.to_string() });
        }
        registry.register("reconcile_duration_seconds", "Time per reconcile", duration.clone());
        registry.register("tenants", "ScimTenants by Ready condition", tenants.clone());
        registry.register("leader", "1 while this replica holds the lease", leader.clone());
        let tenant_ready = Family::<TenantLabel, Gauge>::default();
        let key_expiry = Family::<KeyLabel, Gauge>::default();
        registry.register("tenant_ready", "1 while the ScimTenant is Ready, 0 otherwise", tenant_ready.clone());
        registry.register(
            "key_expiry_timestamp_seconds",
            "When a SCIM key of a ScimTenant expires (Unix time); keys without expiry are absent",
            key_expiry.clone(),
        );
        OperatorMetrics {
            registry,
            reconciles,
            errors,
            duration,
            tenants,
            leader,
            tenant_ready,
            key_expiry,
            key_series: Mutex::new(HashMap::new()),
            readiness: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn reconciled(&self, ok: bool, seconds: f64) {
        self.reconciles.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
        self.duration.observe(seconds);
    }

    pub(crate) fn failed(&self, reason: &str) {
        self.errors.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// `ready` is the Ready condition's status ("True", "False", "Unknown"), or None once the tenant is gone.
    pub(crate) fn set_readiness(&self, tenant: &str, ready: Option<&str>) {
        let mut m = self.readiness.lock();
        let state = ready.map(|r| match r {
            "True" => "true",
            "False" => "false",
            _ => "unknown",
        });
        if m.get(tenant).copied() == state {
            // Every pass reports; only a change needs the counts redone.
            return;
        }
        match state {
            Some(s) => {
                self.tenant_ready.get_or_create(&tenant_label(tenant)).set(i64::from(s == "true"));
            }
            None => {
                self.tenant_ready.remove(&tenant_label(tenant));
                self.set_key_expiries(tenant, &[]);
            }
        }
        match state {
            Some(s) => m.insert(tenant.to_string(), s),
            None => m.remove(tenant),
        };
        for state in ["true", "false", "unknown"] {
            let n = m.values().filter(|v| **v == state).count();
            self.tenants.get_or_create(&ReadyLabel { ready: state }).set(n as i64);
        }
    }

    /// The tenant's keys with an expiry, as (key name, Unix seconds); keys no
    /// longer listed leave the metric.
    pub(crate) fn set_key_expiries(&self, tenant: &str, keys: &[(String, i64)]) {
        let t = tenant_label(tenant);
        let labels: Vec<KeyLabel> = keys
            .iter()
            .map(|(key, _)| KeyLabel { namespace: t.namespace.clone(), name: t.name.clone(), key: key.clone() })
            .collect();
        let mut series = self.key_series.lock();
        for gone in series.get(tenant).into_iter().flatten().filter(|l| !labels.contains(l)) {
            self.key_expiry.remove(gone);
        }
        for (label, (_, at)) in labels.iter().zip(keys) {
            self.key_expiry.get_or_create(label).set(*at);
        }
        if labels.is_empty() {
            series.remove(tenant);
        } else {
            series.insert(tenant.to_string(), labels);
        }
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub(crate) fn router(metrics: Arc<OperatorMetrics>) -> Router {
    let m = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
                    }
                }
            }),
        )
}
