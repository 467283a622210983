//! Bearer keys: missing, wrong, from the keys file (reloaded without a
//! restart), from SCIM_TOKEN, and the standalone key created on first start.

use std::time::Duration;

use scim_test_support::{Options, Server, wait_until};
use serde_json::json;

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

fn keys_line(name: &str, token: &str) -> String {
    let out = std::process::Command::new(BIN).args(["key", "generate", "--name", name]).output().unwrap();
    assert!(out.status.success());
    // The generator is exercised; for a known token we hash ourselves.
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("scim_"), "{text}");
    assert!(text.contains(&format!("name: {name}, sha256: ")), "{text}");
    use sha2::Digest;
    format!("  - {{name: {name}, sha256: {}}}", hex::encode(sha2::Sha256::digest(token.as_bytes())))
}

#[tokio::test]
async fn missing_and_wrong_keys_get_401_with_a_scim_body() {
    let server = Server::start(BIN);
    for token in [None, Some("wrong-token")] {
        let c = server.client_with(token);
        for path in ["/Users", "/Groups", "/ServiceProviderConfig", "/Users/x"] {
            let r = c.get(path).await;
            assert_eq!(r.status, 401, "{path}");
            assert_eq!(r.content_type, "application/scim+json");
            assert_eq!(r.body["status"], "401");
            assert!(r.headers.get("www-authenticate").is_some());
        }
    }
    let r = server
        .client()
        .send(
            server
                .client_with(None)
                .request(reqwest::Method::GET, "/Users")
                .header("authorization", "Basic Zm9vOmJhcg=="),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(server.client().get("/Users").await.status, 200);
}

#[tokio::test]
async fn keys_file_is_reloaded_and_removed_keys_stop_working() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    std::fs::write(&keys, format!("keys:\n{}\n", keys_line("entra", "first-key"))).unwrap();
    let server = Server::start_with(BIN, Options { token: None, keys_file: Some(&keys), ..Default::default() });
    let first = server.client_with(Some("first-key"));
    let second = server.client_with(Some("second-key"));
    assert_eq!(first.get("/Users").await.status, 200);
    assert_eq!(second.get("/Users").await.status, 401);

    // Rotation: add the new key (both valid), switch, remove the old one.
    std::fs::write(
        &keys,
        format!("keys:\n{}\n{}\n", keys_line("entra", "first-key"), keys_line("entra-2", "second-key")),
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(15), || async { second.get("/Users").await.status == 200 }).await);
    assert_eq!(first.get("/Users").await.status, 200);
    // Written the way Kubernetes updates a Secret volume: a new file renamed over.
    let tmp = dir.path().join("keys.yaml.new");
    std::fs::write(&tmp, format!("keys:\n{}\n", keys_line("entra-2", "second-key"))).unwrap();
    std::fs::rename(&tmp, &keys).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || async { first.get("/Users").await.status == 401 }).await,
        "a removed key stops working within 15 s"
    );
    assert_eq!(second.get("/Users").await.status, 200);

    // A broken keys file keeps the last good keys rather than locking everyone out.
    std::fs::write(&keys, "keys: [{name: x, sha256: nothex}]\n").unwrap();
    let rejected = wait_until(Duration::from_secs(15), || async {
        let (_, body) = server.admin_get("/status").await;
        serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|s| s["keysReloadFailures"] == 1)
    })
    .await;
    assert!(rejected, "the invalid keys file is noticed");
    assert_eq!(second.get("/Users").await.status, 200);
}

#[tokio::test]
async fn standalone_key_is_printed_once_and_only_its_hash_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(BIN, Options { token: None, data_dir: Some(&data), ..Default::default() });
    let line =
        server.stdout_lines.iter().find(|l| l.starts_with("Bearer key (shown once")).cloned().expect("key printed");
    let token = line.rsplit(' ').next().unwrap().to_string();
    assert!(token.starts_with("scim_"));
    assert_eq!(server.client_with(Some(&token)).get("/Users").await.status, 200);
    let stored = std::fs::read_to_string(data.join("dev-key.sha256")).unwrap();
    assert!(!stored.contains(&token));
    drop(server);

    let again = Server::start_with(BIN, Options { token: None, data_dir: Some(&data), ..Default::default() });
    assert!(again.stdout_lines.iter().all(|l| !l.contains(&token)), "shown only once");
    assert_eq!(again.client_with(Some(&token)).get("/Users").await.status, 200, "the same key keeps working");
    let r = again.client_with(Some(&token)).post("/Users", &json!({"userName": "u"})).await;
    assert_eq!(r.status, 201);
}

#[test]
fn bad_config_and_keys_stop_serve_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:0\nunknownKey: 1\n").unwrap();
    let out = std::process::Command::new(BIN).args(["serve", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknownKey"), "{err}");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--keys-file"])
        .arg(dir.path().join("missing.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
}
