//! Keys-file reloads cannot lock Entra out: an empty, unreadable or
//! half-rewritten file keeps the keys in use (and is counted on /status);
//! only an explicit `keys: []` revokes them.

use std::io::Write;
use std::time::Duration;

use scim_test_support::{Options, Server, wait_until};

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");
const KEY: &str = "scim_entra-key-for-reload-tests";
const OTHER: &str = "scim_second-key-for-reload-tests";
/// The server polls every 2 s; a change is seen well within this.
const NOTICED: Duration = Duration::from_secs(15);

fn line(name: &str, token: &str) -> String {
    use sha2::Digest;
    format!("  - {{name: {name}, sha256: {}}}\n", hex::encode(sha2::Sha256::digest(token.as_bytes())))
}

async fn reload_failures(server: &Server) -> u64 {
    let (_, body) = server.admin_get("/status").await;
    serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|s| s["keysReloadFailures"].as_u64()).unwrap_or(0)
}

#[tokio::test]
async fn empty_or_unreadable_files_keep_the_keys_and_only_an_explicit_empty_list_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    std::fs::write(&keys, format!("keys:\n{}", line("entra", KEY))).unwrap();
    let server = Server::start_with(BIN, Options { token: None, keys_file: Some(&keys), ..Default::default() });
    let entra = server.client_with(Some(KEY));
    assert_eq!(entra.get("/Users").await.status, 200);

    std::fs::write(&keys, "").unwrap();
    assert!(wait_until(NOTICED, || async { reload_failures(&server).await == 1 }).await, "the empty file is counted");
    assert_eq!(entra.get("/Users").await.status, 200, "an empty file keeps the keys");

    std::fs::remove_file(&keys).unwrap();
    assert!(wait_until(NOTICED, || async { reload_failures(&server).await == 2 }).await, "the missing file is counted");
    assert_eq!(entra.get("/Users").await.status, 200, "a missing file keeps the keys");

    std::fs::write(&keys, "keys: []\n").unwrap();
    assert!(
        wait_until(NOTICED, || async { entra.get("/Users").await.status == 401 }).await,
        "an explicit empty list revokes every key"
    );
    assert_eq!(reload_failures(&server).await, 2, "an explicit empty list is not a failure");
}

#[tokio::test]
async fn in_place_rewrites_never_reject_a_key_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let both = format!("keys:\n{}{}", line("second", OTHER), line("entra", KEY));
    std::fs::write(&keys, &both).unwrap();
    let server = Server::start_with(BIN, Options { token: None, keys_file: Some(&keys), ..Default::default() });
    let entra = server.client_with(Some(KEY));
    assert_eq!(entra.get("/Users").await.status, 200);

    // A writer that truncates the file, leaves it empty a while, then writes
    // it back in two pieces a moment apart, over and over: a reader can see
    // it empty or with only the first key.
    let path = keys.clone();
    let writer = std::thread::spawn(move || {
        let (first, rest) = both.split_at(both.find("  - {name: entra").unwrap());
        for _ in 0..12 {
            let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            f.write_all(first.as_bytes()).unwrap();
            f.sync_all().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            f.write_all(rest.as_bytes()).unwrap();
            f.sync_all().unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let mut rejected = 0;
    while !writer.is_finished() {
        if entra.get("/Users").await.status == 401 {
            rejected += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.join().unwrap();
    assert_eq!(rejected, 0, "the key in use was rejected during in-place rewrites");
    assert_eq!(entra.get("/Users").await.status, 200);
}
