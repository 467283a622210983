//! The admin `/metrics` (OpenMetrics text): request metrics kept as
//! requests are served, the store's and ZITADEL's state read at each scrape,
//! and the counters `/status` reports.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::{Counts, WriterStats};

/// Every family name starts with this (`scim_http_requests_total`, ...).
const PREFIX: &str = "scim";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub resource: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LatencyLabels {
    pub resource: &'static str,
    pub method: &'static str,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    /// "scim" or "admin".
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SelfServiceLabels {
    /// `ok`, `unauthenticated`, `forbidden`, `rate_limited`, `key_limit`,
    /// `zitadel_unavailable`, `bad_request`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyChangeLabels {
    /// `created` or `deleted`.
    pub change: &'static str,
}

/// The SCIM port's request metrics and the registry `/metrics` encodes.
pub(crate) struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    self_service: Family<SelfServiceLabels, Counter>,
    key_changes: Family<KeyChangeLabels, Counter>,
    total: AtomicU64,
    failed: AtomicU64,
    last_request_ms: AtomicI64,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("http_requests", "SCIM requests by resource, method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "SCIM request latency by resource and method",
            latency.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register("connections_open", "Open connections by listener", connections_open.clone());
        registry.register(
            "connections_refused",
            "Connections refused with a 503 because the listener had its maximum open",
            connections_refused.clone(),
        );
        for listener in ["scim", "admin"] {
            let _ = connections_open.get_or_create(&ListenerLabels { listener });
            let _ = connections_refused.get_or_create(&ListenerLabels { listener });
        }
        let self_service = Family::<SelfServiceLabels, Counter>::default();
        let key_changes = Family::<KeyChangeLabels, Counter>::default();
        registry.register(
            "self_service_requests",
            "Requests to the self-service key API (/graphql) by outcome",
            self_service.clone(),
        );
        registry.register(
            "self_service_key_changes",
            "Self-service SCIM keys created and deleted",
            key_changes.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            connections_open,
            connections_refused,
            self_service,
            key_changes,
            total: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_request_ms: AtomicI64::new(0),
        }
    }

    /// Labels are static strings so the hot path allocates nothing.
    pub(crate) fn record(&self, resource: &'static str, method: &'static str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { resource, method, status }).inc();
        self.latency.get_or_create(&LatencyLabels { resource, method }).observe(seconds);
        self.total.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        self.last_request_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Counts an open connection until the returned guard is dropped.
    pub(crate) fn connection_opened(&self, listener: &'static str) -> OpenConnection {
        let gauge = self.connections_open.get_or_create(&ListenerLabels { listener }).clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    pub(crate) fn connection_refused(&self, listener: &'static str) {
        self.connections_refused.get_or_create(&ListenerLabels { listener }).inc();
    }

    pub(crate) fn self_service_request(&self, outcome: &'static str) {
        self.self_service.get_or_create(&SelfServiceLabels { outcome }).inc();
    }

    pub(crate) fn key_change(&self, change: &'static str) {
        self.key_changes.get_or_create(&KeyChangeLabels { change }).inc();
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Unix milliseconds of the last SCIM request, if any.
    pub(crate) fn last_request_ms(&self) -> Option<i64> {
        Some(self.last_request_ms.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    /// The whole exposition: the request metrics, then `state` as it was
    /// read for this scrape.
    pub(crate) fn encode(&self, state: &StateSnapshot) -> String {
        // A registry per scrape: the snapshot belongs to this scrape only, so
        // concurrent scrapes never see each other's values.
        let mut scrape = Registry::with_prefix(PREFIX);
        scrape.register_collector(Box::new(state.clone()));
        let mut out = String::new();
        if encode_registry(&mut out, &self.registry).and_then(|()| encode_registry(&mut out, &scrape)).is_err() {
            out.clear();
        }
        out.push_str("# EOF\n");
        out
    }
}

/// One open connection on `scim_connections_open`.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What `/metrics` reports beside the request metrics. The store and the
/// projector keep these numbers themselves; they are read at scrape time
/// (some only asynchronously) and encoded from here.
#[derive(Debug, Clone, Default)]
pub(crate) struct StateSnapshot {
    pub resources: Counts,
    /// `None` when the store has no writer of its own.
    pub writer: Option<WriterStats>,
    /// `None` when ZITADEL is not configured: its families are then absent.
    pub zitadel: Option<ZitadelSnapshot>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ZitadelSnapshot {
    /// Outbox entries waiting to be projected into ZITADEL.
    pub pending: usize,
    /// Pending entries that failed at least once.
    pub failing: usize,
    pub oldest_pending_seconds: f64,
    /// ZITADEL API requests made since start.
    pub requests: u64,
    pub reachable: bool,
    /// ZITADEL requests per second now allowed (the share of the cluster's budget).
    pub rate_limit: f64,
}

impl Collector for StateSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut resources =
            encoder.encode_descriptor("resources", "Resources in the store.", None, MetricType::Gauge)?;
        for (kind, n) in [("User", self.resources.users), ("Group", self.resources.groups)] {
            ConstGauge::new(n).encode(resources.encode_family(&[("kind", kind)])?)?;
        }
        if let Some(w) = &self.writer {
            encode_writer(&mut encoder, w)?;
        }
        if let Some(z) = &self.zitadel {
            encode_zitadel(&mut encoder, z)?;
        }
        Ok(())
    }
}

/// Commands per commit is the group-commit size, and so the writes each
/// fsync carries.
fn encode_writer(encoder: &mut DescriptorEncoder, w: &WriterStats) -> Result<(), std::fmt::Error> {
    counter(encoder, "store_commits", "Transactions the store's writer ran (one fsync each when durable).", w.batches)?;
    counter(encoder, "store_commands", "Writes the store's writer carried out.", w.commands)?;
    let mut checkpoints = encoder.encode_descriptor(
        "store_checkpoints",
        "WAL checkpoints, by the checkpoint thread or the writer itself.",
        None,
        MetricType::Counter,
    )?;
    for (by, n) in [("thread", w.checkpoints_by_thread), ("writer", w.checkpoints_by_writer)] {
        ConstCounter::new(n).encode(checkpoints.encode_family(&[("by", by)])?)?;
    }
    gauge(
        encoder,
        "store_writable",
        "Whether the store can write (0 while writes fail, e.g. on a full disk).",
        u32::from(w.writable),
    )
}

fn encode_zitadel(encoder: &mut DescriptorEncoder, z: &ZitadelSnapshot) -> Result<(), std::fmt::Error> {
    gauge(encoder, "projection_pending", "Users waiting to be projected into ZITADEL.", z.pending)?;
    gauge(encoder, "projection_failing", "Pending projections that failed at least once.", z.failing)?;
    gauge(
        encoder,
        "projection_oldest_pending_seconds",
        "Age of the oldest pending projection.",
        z.oldest_pending_seconds,
    )?;
    counter(encoder, "zitadel_requests", "ZITADEL API requests made.", z.requests)?;
    gauge(encoder, "zitadel_rate_limit", "ZITADEL requests per second now allowed.", z.rate_limit)?;
    gauge(encoder, "zitadel_reachable", "Whether ZITADEL answered the last check.", u32::from(z.reachable))
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// The method label; anything unusual is "other", so a client cannot grow the
/// label set.
pub(crate) fn method_label(m: &axum::http::Method) -> &'static str {
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
pub(crate) fn resource_of(path: &str) -> &'static str {
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
        "graphql" | "scope-management" => "graphql",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_requests_and_encodes_prometheus_text() {
        let m = ServerMetrics::new();
        m.record("Users", "POST", 201, 0.002);
        m.record("Users", "GET", 404, 0.001);
        assert_eq!(m.total(), 2);
        assert_eq!(m.failed(), 1);
        assert!(m.last_request_ms().is_some());
        let text = m.encode(&StateSnapshot::default());
        assert!(text.contains(r#"scim_http_requests_total{resource="Users",method="POST",status="201"} 1"#), "{text}");
        assert!(text.contains("scim_http_request_duration_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(resource_of("/scim/v2/Users/abc"), "Users");
        assert_eq!(resource_of("/scim/v2/Groups"), "Groups");
        assert_eq!(resource_of("/nope"), "other");
    }

    #[test]
    fn every_state_family_is_scraped_with_its_value() {
        let state = StateSnapshot {
            resources: Counts { users: 3, groups: 1 },
            writer: Some(WriterStats {
                batches: 5,
                commands: 32,
                checkpoints_by_thread: 2,
                checkpoints_by_writer: 1,
                writable: true,
            }),
            zitadel: Some(ZitadelSnapshot {
                pending: 4,
                failing: 1,
                oldest_pending_seconds: 2.5,
                requests: 17,
                reachable: true,
                rate_limit: 2.0,
            }),
        };
        let text = ServerMetrics::new().encode(&state);
        for line in [
            "# HELP scim_resources Resources in the store.",
            "# TYPE scim_resources gauge",
            r#"scim_resources{kind="User"} 3"#,
            r#"scim_resources{kind="Group"} 1"#,
            "# TYPE scim_store_commits counter",
            "scim_store_commits_total 5",
            "scim_store_commands_total 32",
            "# TYPE scim_store_checkpoints counter",
            r#"scim_store_checkpoints_total{by="thread"} 2"#,
            r#"scim_store_checkpoints_total{by="writer"} 1"#,
            "# TYPE scim_store_writable gauge",
            "scim_store_writable 1",
            "scim_projection_pending 4",
            "scim_projection_failing 1",
            "scim_projection_oldest_pending_seconds 2.5",
            "# TYPE scim_zitadel_requests counter",
            "scim_zitadel_requests_total 17",
            "scim_zitadel_rate_limit 2.0",
            "scim_zitadel_reachable 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));

        let standalone = ServerMetrics::new().encode(&StateSnapshot::default());
        assert!(standalone.contains(r#"scim_resources{kind="User"} 0"#), "{standalone}");
        assert!(!standalone.contains("scim_store_"), "{standalone}");
        assert!(!standalone.contains("scim_zitadel_"), "{standalone}");
    }
}
