//! The real `scim-operator` binary started on port 0 with its own data
//! directory, and a small SCIM client for it.
//!
//! The server's stderr (its log, at WARN) is kept in memory and printed only
//! if the test panics while the server is running, so a passing run is quiet
//! and a failing one shows what the server said; `SCIM_TEST_LOG` streams it
//! instead (see the `logs` module).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use crate::logs;

pub const TOKEN: &str = "test-token-7f3a9c";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    child: Child,
    pub base: String,
    pub admin: String,
    _tmp: Option<tempfile::TempDir>,
    pub stdout_lines: Vec<String>,
    log: Option<CapturedLog>,
}

pub struct Options<'a> {
    pub token: Option<&'a str>,
    pub keys_file: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub extra_args: &'a [&'a str],
    /// A command that runs the server (e.g. `nsenter … --`): the binary and
    /// its arguments follow it. It must exec the server, so the process id
    /// stays the server's.
    pub wrapper: &'a [&'a str],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { token: Some(TOKEN), keys_file: None, data_dir: None, extra_args: &[], wrapper: &[] }
    }
}

impl Server {
    /// Starts `bin`, the server under test: integration tests of the root
    /// package pass `env!("CARGO_BIN_EXE_scim-operator")`, which only they can
    /// expand.
    pub fn start(bin: &str) -> Server {
        Self::start_with(bin, Options::default())
    }

    pub fn start_with(bin: &str, opts: Options<'_>) -> Server {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let streamed = logs::streamed_filter();
        let mut cmd = match opts.wrapper.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(opts.extra_args)
            .env_remove("SCIM_TOKEN")
            .env("RUST_LOG", streamed.as_deref().unwrap_or(logs::CAPTURED_FILTER))
            .stdout(Stdio::piped())
            .stderr(if streamed.is_some() { Stdio::inherit() } else { Stdio::piped() });
        if let Some(t) = opts.token {
            cmd.env("SCIM_TOKEN", t);
        }
        if let Some(k) = opts.keys_file {
            cmd.arg("--keys-file").arg(k);
        }
        let mut child = cmd.spawn().expect("start scim-operator");
        let log = child.stderr.take().map(CapturedLog::start);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut base = None;
        let mut admin = None;
        let mut lines = Vec::new();
        while base.is_none() || admin.is_none() {
            let line = match rx.recv_timeout(START_TIMEOUT) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = log.map(CapturedLog::finish).unwrap_or_default();
                    panic!("server did not print its URLs within {START_TIMEOUT:?}; got {lines:?}; its log:\n{log}");
                }
            };
            if let Some(u) = line.strip_prefix("SCIM base URL: ") {
                base = Some(u.to_string());
            }
            if let Some(u) = line.strip_prefix("Admin URL: ") {
                admin = Some(u.to_string());
            }
            lines.push(line);
        }
        // The key line, if any, follows the URLs immediately.
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
        Server {
            child,
            base: base.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
            _tmp: tmp,
            stdout_lines: lines,
            log,
        }
    }

    pub fn client(&self) -> Client {
        self.client_with(Some(TOKEN))
    }

    pub fn client_with(&self, token: Option<&str>) -> Client {
        Client { http: reqwest::Client::new(), base: self.base.clone(), token: token.map(str::to_string) }
    }

    /// The server's process id (to signal it or read its /proc entries).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the server has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(mut self) -> Option<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self._tmp.take()
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.admin)).await.expect("admin request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Dropped while unwinding: the test failed with this server running.
        if std::thread::panicking()
            && let Some(log) = self.log.take()
        {
            let log = log.finish();
            // eprintln goes to libtest's capture, so it appears in the failure report.
            eprintln!("---- scim-operator serve log ({}) ----\n{log}---- end of log ----", self.base);
        }
    }
}

/// A child's stderr, read into memory as it comes so the child never blocks on
/// a full pipe.
struct CapturedLog {
    buf: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
}

impl CapturedLog {
    fn start(mut stderr: ChildStderr) -> CapturedLog {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk)
                && n > 0
            {
                sink.lock().extend_from_slice(&chunk[..n]);
            }
        });
        CapturedLog { buf, reader }
    }

    /// The log so far; call after the child has exited, so it is complete.
    fn finish(self) -> String {
        // The pipe closes when the child exits, unless something it started
        // still holds it: then take what has arrived rather than hang the test.
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        String::from_utf8_lossy(&self.buf.lock()).into_owned()
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Client {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut rb = self.http.request(method, url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, content_type, headers, body, text }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn json(&self, method: reqwest::Method, path: &str, body: &Value) -> Resp {
        self.send(
            self.request(method, path)
                .header("content-type", "application/scim+json; charset=utf-8")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.json(reqwest::Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.json(reqwest::Method::PATCH, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.json(reqwest::Method::PUT, path, body).await
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn patch_ops(ops: Value) -> Value {
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}
