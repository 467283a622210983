//! The chart's alerts (charts/scim-operator/files/prometheus-rules.yaml, the
//! PrometheusRule's rules) name only metrics that exist: every metric in every
//! expression is looked up in what a running operator (against the fakes)
//! and a running SCIM server with ZITADEL actually expose on `/metrics`.
//! promtool is not available; a small PromQL tokenizer finds the names.
//! (tests/manifests/check.py renders the chart with these options on.)

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use scim_operator::operator::build::TenantDefaults;
use scim_operator::operator::controller::ControllerConfig;
use scim_operator::operator::crd::ScimTenant;
use scim_operator::operator::run::{RunOptions, run_with};
use scim_test_support::kube_fake::KubeFake;
use scim_test_support::zitadel_fake::ZitadelFake;
use scim_test_support::{Options, Server, wait_until};
use serde_json::{Value, json};

const ORG: &str = "310000000000000001";
const IAM_ORG: &str = "310000000000000002";
const PROJECT: &str = "320000000000000001";
const ADMIN_PAT: &str = "operator-admin-pat-5d0b";
const WAIT: Duration = Duration::from_secs(30);

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Skips from `open` to its matching `close` (no nesting in what we skip).
fn skip_until(chars: &[char], mut i: usize, close: char) -> usize {
    while i < chars.len() && chars[i] != close {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names (in `{}` or after `by`/`without`/`on`/
/// `ignoring`/`group_*`), strings, numbers or durations.
fn metric_names(expr: &str) -> Vec<String> {
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    const OPERATORS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "atan2"];
    // Aggregations may put `by (...)` between their name and their argument.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_until(&chars, i + 1, c);
        } else if c == '{' {
            i = skip_until(&chars, i + 1, '}');
        } else if c == '[' {
            i = skip_until(&chars, i + 1, ']');
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers and durations: 14, 86400, 1e3, 0.5, 5m.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = chars.get(j) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if called {
                    i = skip_until(&chars, j + 1, ')');
                }
            } else if !called && !OPERATORS.contains(&word.as_str()) && !AGGREGATIONS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every series name a `/metrics` text can hold: the samples, and for each
/// declared family the names its type gives its samples.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["_sum", "_count", "_created"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn the_tokenizer_finds_metric_names_only() {
    assert_eq!(
        metric_names(
            r#"sum by (reason) (increase(scim_operator_reconcile_errors_total{job="x", a=~"b|c"}[10m])) > 0 and on(pod) up offset 5m"#
        ),
        ["scim_operator_reconcile_errors_total", "up"]
    );
    assert_eq!(
        metric_names("scim_operator_key_expiry_timestamp_seconds - time() < 14 * 86400"),
        ["scim_operator_key_expiry_timestamp_seconds"]
    );
    assert_eq!(metric_names("rate(a[5m]) / ignoring(code) group_left b"), ["a", "b"]);
}

/// The alerts, as the PrometheusRule carries them.
fn rules() -> Vec<Value> {
    let template = read("charts/scim-operator/templates/prometheusrule.yaml");
    assert!(template.contains(r#".Files.Get "files/prometheus-rules.yaml""#), "the PrometheusRule carries the file");
    let file: Value = serde_yaml::from_str(&read("charts/scim-operator/files/prometheus-rules.yaml")).unwrap();
    file["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect()
}

async fn operator_metrics() -> (String, KubeFake, ZitadelFake) {
    scim_test_support::init_tracing();
    let kube = KubeFake::start().await;
    let zitadel = ZitadelFake::start().await;
    zitadel.add_org(ORG, "Contoso", &["contoso.com"]);
    zitadel.add_org(IAM_ORG, "Cluster IAM", &[]);
    zitadel.add_project(PROJECT, IAM_ORG, &["Chat.User"]);
    zitadel.add_service_user_with_pat("340000000000000001", IAM_ORG, ADMIN_PAT, &["IAM_OWNER"]);
    let credential = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(credential.path(), ADMIN_PAT).unwrap();
    let mut config = ControllerConfig::new(
        TenantDefaults {
            image: "ghcr.io/unique-app/scim-operator:test".into(),
            zitadel_url: zitadel.url.clone(),
            ..Default::default()
        },
        credential.path().to_path_buf(),
    );
    config.zitadel_rate = Some(1000.0);
    config.zitadel_budget = Some(2000.0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let client: Client = kube.client();
    tokio::spawn(run_with(client.clone(), listener, RunOptions { config, lease: None }, std::future::pending()));
    // A tenant with an expiring key: the per-tenant series appear.
    let tenants: Api<ScimTenant> = Api::namespaced(client, "tenants");
    let body = json!({"apiVersion": "scim.unique.app/v1alpha1", "kind": "ScimTenant",
        "metadata": {"name": "acme", "namespace": "tenants"},
        "spec": {"zitadel": {"organizationId": ORG, "projectId": PROJECT, "projectOrganizationId": IAM_ORG},
            "keys": [{"name": "entra", "expiresAfter": "2160h"}]}});
    tenants.patch("acme", &PatchParams::apply("kubectl").force(), &Patch::Apply(&body)).await.unwrap();
    let scrape = || async { reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap() };
    let complete = |m: &str| {
        m.contains("scim_operator_key_expiry_timestamp_seconds{") && m.contains(r#"scim_operator_tenant_ready{"#)
    };
    assert!(wait_until(WAIT, || async { complete(&scrape().await) }).await, "{}", scrape().await);
    let text = scrape().await;
    let _ = credential.keep();
    (text, kube, zitadel)
}

async fn server_metrics(zitadel: &ZitadelFake) -> (String, Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pat = dir.path().join("pat");
    std::fs::write(&pat, ADMIN_PAT).unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "zitadel:\n  url: {}\n  credentials: {{patFile: {}}}\n  organizationId: \"{ORG}\"\n  projectId: \"{PROJECT}\"\n  projectOrganizationId: \"{IAM_ORG}\"\n",
            zitadel.url,
            pat.display()
        ),
    )
    .unwrap();
    let server = tokio::task::spawn_blocking(move || {
        let args = ["--config", config.to_str().unwrap()];
        Server::start_with(env!("CARGO_BIN_EXE_scim-operator"), Options { extra_args: &args, ..Options::default() })
    })
    .await
    .unwrap();
    let text = reqwest::get(format!("{}/metrics", server.admin)).await.unwrap().text().await.unwrap();
    (text, server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_names_metrics_the_operator_or_a_server_exposes() {
    let (operator, _kube, zitadel) = operator_metrics().await;
    let (server, _server, _dir) = server_metrics(&zitadel).await;
    let known: BTreeSet<String> = exposed(&operator).into_iter().chain(exposed(&server)).collect();
    let rules = rules();
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alerts,
        BTreeSet::from([
            "ScimKeyExpiringSoon",
            "ScimOperatorReconcileErrors",
            "ScimProjectionBacklog",
            "ScimTenantNotReady",
            "ScimZitadelUnreachable",
        ])
    );
    let mut unknown = Vec::new();
    for r in &rules {
        let alert = r["alert"].as_str().unwrap_or_default();
        let expr = r["expr"].as_str().unwrap_or_default();
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{alert}: no metric in '{expr}'");
        unknown.extend(names.into_iter().filter(|n| !known.contains(n)).map(|n| format!("{alert}: {n}")));
        assert!(r["for"].as_str().is_some(), "{alert} has a for:");
        assert!(r["labels"]["severity"].as_str().is_some(), "{alert} has a severity");
        assert!(r["annotations"]["summary"].as_str().is_some(), "{alert} has a summary");
    }
    assert!(unknown.is_empty(), "alerts name metrics nobody exposes: {unknown:?}\nexposed: {known:?}");
}
