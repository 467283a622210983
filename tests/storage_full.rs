//! A full disk is visible and survivable: while the store cannot write,
//! `/readyz` fails and `/status` says why, writes get a SCIM 507 naming the
//! cause, reads keep working, and everything recovers by itself once space is
//! freed — also after a restart on the still-full disk.
//!
//! The data dir lives on a small tmpfs mounted in a user and mount namespace
//! of its own (`unshare`), so the test needs no privileges and leaves no
//! mount behind; the server runs inside it through `nsenter`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scim_test_support::{Options, Server, wait_until};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");
/// The store retries a failed write every 2 s by itself.
const RECOVERS_WITHIN: Duration = Duration::from_secs(20);

/// A tmpfs of a few MiB, mounted at `dir` in a namespace held open by a
/// sleeping process.
struct SmallDisk {
    holder: Child,
    dir: PathBuf,
    _mount_point: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let mount_point = tempfile::tempdir().unwrap();
        let dir = mount_point.path().to_path_buf();
        let script =
            format!("mount -t tmpfs -o size={size} scim-test {} && echo mounted && exec sleep 3600", dir.display());
        let mut holder = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "mounted", "unshare could not mount a tmpfs (user namespaces disabled?)");
        SmallDisk { holder, dir, _mount_point: mount_point }
    }

    /// `path` inside the tmpfs as this process sees it (through the holder's root).
    fn outside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}/{path}", self.holder.id(), self.dir.display()))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn nsenter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "--user", "--mount", "--preserve-credentials", "--"]
            .map(String::from)
            .to_vec()
    }

    /// Takes every free byte with a filler file.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.outside("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Smaller pieces until not one byte is left.
        while matches!(f.write(&[0u8; 512]), Ok(n) if n > 0) {}
    }

    fn free(&self) {
        std::fs::remove_file(self.outside("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn start(disk: &SmallDisk) -> Server {
    let data = disk.data_dir();
    let wrapper = disk.nsenter();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Server::start_with(BIN, Options { data_dir: Some(&data), wrapper: &wrapper, ..Default::default() })
}

/// A user big enough (~40 KB) that no slack in the store's files holds it.
fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "displayName": "x".repeat(40_000),
    })
}

async fn status_store(server: &Server) -> Value {
    let (_, body) = server.admin_get("/status").await;
    serde_json::from_str::<Value>(&body).map(|s| s["store"].clone()).unwrap_or(Value::Null)
}

async fn ready(server: &Server) -> bool {
    server.admin_get("/readyz").await.0 == 200
}

/// Creates users until the disk refuses one; returns how many were stored.
async fn write_until_full(server: &Server, prefix: &str) -> usize {
    let c = server.client();
    for i in 0..500 {
        let r = c.post("/Users", &user(&format!("{prefix}{i}"))).await;
        match r.status {
            201 => continue,
            507 => {
                assert_eq!(r.content_type, "application/scim+json", "{}", r.text);
                assert_eq!(r.body["status"], "507", "{}", r.text);
                let detail = r.body["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("disk is full"), "the 507 names the cause: {detail}");
                return i;
            }
            s => panic!("a write on a full disk answered {s}: {}", r.text),
        }
    }
    panic!("500 users of 40 KB fitted on the small disk");
}

#[tokio::test]
async fn a_full_disk_fails_readiness_refuses_writes_with_507_and_recovers_by_itself() {
    let disk = SmallDisk::mount("16m");
    let server = start(&disk);
    let c = server.client();
    assert!(ready(&server).await);
    assert_eq!(status_store(&server).await, json!({"writable": true}));
    assert_eq!(c.post("/Users", &user("before")).await.status, 201);

    disk.fill();
    let stored = write_until_full(&server, "filling").await + 1;
    let (code, why) = server.admin_get("/readyz").await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("disk holding the data dir is full"), "{why}");
    let store = status_store(&server).await;
    assert_eq!(store["writable"], false, "{store}");
    assert_eq!(store["diskFull"], true, "{store}");
    assert!(store["since"].is_string(), "{store}");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(metrics.lines().any(|l| l == "scim_store_writable 0"), "{metrics}");
    let listed = c.get("/Users?count=1&attributes=userName").await;
    assert_eq!(listed.status, 200, "reads keep working: {}", listed.text);
    assert_eq!(listed.body["totalResults"], stored);

    // Nobody writes (an unready pod gets no traffic): the store finds out itself.
    disk.free();
    assert!(wait_until(RECOVERS_WITHIN, || ready(&server)).await, "ready again once space is freed");
    assert_eq!(status_store(&server).await, json!({"writable": true}));
    assert_eq!(c.post("/Users", &user("after")).await.status, 201);
    assert_eq!(c.get("/Users?count=1").await.body["totalResults"], stored + 1);
}

#[tokio::test]
async fn a_restart_on_a_full_disk_serves_reads_refuses_writes_and_names_the_disk() {
    let disk = SmallDisk::mount("16m");
    let server = start(&disk);
    let c = server.client();
    for i in 0..3 {
        assert_eq!(c.post("/Users", &user(&format!("kept{i}"))).await.status, 201);
    }
    disk.fill();
    let stored = 3 + write_until_full(&server, "filling").await;
    server.kill9();

    let server = start(&disk);
    let c = server.client();
    let listed = c.get("/Users?filter=userName%20eq%20%22kept1%22").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["totalResults"], 1, "what was stored before is served");
    assert_eq!(c.get("/Users?count=1").await.body["totalResults"], stored);
    assert!(
        wait_until(RECOVERS_WITHIN, || async { !ready(&server).await }).await,
        "a server that cannot write is not ready"
    );
    let (_, why) = server.admin_get("/readyz").await;
    assert!(why.contains("disk holding the data dir is full"), "{why}");
    let refused = c.post("/Users", &user("refused")).await;
    assert_eq!(refused.status, 507, "{}", refused.text);
    assert!(refused.body["detail"].as_str().unwrap_or_default().contains("disk is full"), "{}", refused.text);

    disk.free();
    assert!(wait_until(RECOVERS_WITHIN, || ready(&server)).await, "ready again once space is freed");
    assert_eq!(c.post("/Users", &user("refused")).await.status, 201, "the refused write was not half-stored");
    assert_eq!(c.get("/Users?count=1").await.body["totalResults"], stored + 1);
}
