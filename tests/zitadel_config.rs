//! ZITADEL configuration problems stop `serve` with a message naming the key;
//! an unreachable ZITADEL is reported on /readyz and /status, not a crash.

use std::time::Duration;

use scim_test_support::{Options, Server, wait_until};
use serde_json::{Value, json};

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

#[test]
fn missing_or_inconsistent_zitadel_config_stops_serve_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "zitadel:\n  url: id.example.com\n  credentials: {}\n  organizationId: o1\n  projectOrganizationId: o0\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zitadel.url 'id.example.com' must start with https://"), "{err}");
    assert!(err.contains("patFile"), "{err}");
    assert!(err.contains("zitadel.projectId is missing"), "{err}");

    std::fs::write(&cfg, "zitadel:\n  url: https://id.example.com\n  credentials: {patFile: /nonexistent/pat}\n  organizationId: o1\n  projectId: p\n  projectOrganizationId: o0\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pat"));
}

#[tokio::test]
async fn unreachable_zitadel_is_reported_not_a_crash_and_writes_wait_in_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let pat = dir.path().join("pat");
    std::fs::write(&pat, "some-pat\n").unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "zitadel:\n  url: http://127.0.0.1:{port}\n  credentials: {{patFile: {}}}\n  organizationId: o1\n  projectId: p\n  projectOrganizationId: o0\n  defaultRoles: [User]\n",
            pat.display()
        ),
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let server = Server::start_with(BIN, Options { extra_args: &args, ..Default::default() });
    let not_ready = wait_until(Duration::from_secs(10), || async { server.admin_get("/readyz").await.0 == 503 }).await;
    assert!(not_ready);
    let (_, body) = server.admin_get("/readyz").await;
    assert!(body.contains("ZITADEL not reachable"), "{body}");

    let c = server.client();
    let r = c.post("/Users", &json!({"userName": "alice@contoso.com"})).await;
    assert_eq!(r.status, 201, "a transient failure does not fail the request: {}", r.text);
    let (_, status) = server.admin_get("/status").await;
    let s: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(s["zitadel"]["reachable"], false);
    assert_eq!(s["projection"]["pendingOperations"], 1);
    assert!(s["zitadel"]["lastError"].as_str().unwrap().contains("could not be reached"), "{status}");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(metrics.contains("scim_projection_pending 1"), "{metrics}");
    assert!(metrics.contains("scim_zitadel_reachable 0"), "{metrics}");
}
