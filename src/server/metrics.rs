//! Request metrics (Prometheus text on the admin port) and the counters
//! `/status` reports.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub resource: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub resource: &'static str,
    pub method: &'static str,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    total: AtomicU64,
    failed: AtomicU64,
    last_request_ms: AtomicI64,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("scim");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("http_requests", "SCIM requests by resource, method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "SCIM request latency by resource and method",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_request_ms: AtomicI64::new(0),
        }
    }

    /// Labels are static strings so the hot path allocates nothing.
    pub fn record(&self, resource: &'static str, method: &'static str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { resource, method, status }).inc();
        self.latency.get_or_create(&LatencyLabels { resource, method }).observe(seconds);
        self.total.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        self.last_request_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Unix milliseconds of the last SCIM request, if any.
    pub fn last_request_ms(&self) -> Option<i64> {
        Some(self.last_request_ms.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    pub fn encode(&self, extra: &str) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out.push_str(extra);
        out.push_str("# EOF\n");
        out
    }
}

/// The method label; anything unusual is "other", so a client cannot grow the
/// label set.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// The resource label for a request path under the SCIM base.
pub fn resource_of(path: &str) -> &'static str {
    let rest = path.split("/scim/v2").nth(1).unwrap_or(path);
    let first = rest.trim_start_matches('/').split('/').next().unwrap_or_default();
    match first {
        "Users" => "Users",
        "Groups" => "Groups",
        "ServiceProviderConfig" => "ServiceProviderConfig",
        "ResourceTypes" => "ResourceTypes",
        "Schemas" => "Schemas",
        ".search" => "search",
        "Bulk" => "Bulk",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_requests_and_encodes_prometheus_text() {
        let m = Metrics::new();
        m.record("Users", "POST", 201, 0.002);
        m.record("Users", "GET", 404, 0.001);
        assert_eq!(m.total(), 2);
        assert_eq!(m.failed(), 1);
        assert!(m.last_request_ms().is_some());
        let text = m.encode("");
        assert!(text.contains(r#"scim_http_requests_total{resource="Users",method="POST",status="201"} 1"#), "{text}");
        assert!(text.contains("scim_http_request_duration_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(resource_of("/scim/v2/Users/abc"), "Users");
        assert_eq!(resource_of("/scim/v2/Groups"), "Groups");
        assert_eq!(resource_of("/nope"), "other");
    }
}
