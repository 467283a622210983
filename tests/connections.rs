//! Connection hygiene: idle, slow and oversized clients are closed or refused
//! with a SCIM error within the configured limits, the admin port keeps
//! answering meanwhile, and SIGTERM completes while such a client is open.

use std::time::{Duration, Instant};

use scim_test_support::{Options, Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

/// Short limits, so the test sees each one fire; the bounds asserted below
/// are generous multiples of them.
const CONFIG: &str = "connections:
  headerReadTimeoutSeconds: 1
  idleTimeoutSeconds: 2
  bodyTimeoutSeconds: 2
  writeTimeoutSeconds: 2
  maxConnections: 40
  adminMaxConnections: 8
  maxHeaderBytes: 4096
  drainSeconds: 3
";
/// Every limit above is at most 3 s; a closed connection must be seen well within this.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

fn config_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("serve.yaml");
    std::fs::write(&p, CONFIG).unwrap();
    p
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap().to_string()
}

/// Reads until the server closes the connection; what it sent, and whether
/// that happened within `limit`.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|_| String::from_utf8_lossy(&out).into_owned())
}

/// A SCIM error response on the wire: status line, media type, schema, status as a string.
fn assert_scim_error(raw: &str, status: u16) {
    assert!(raw.starts_with(&format!("HTTP/1.1 {status} ")), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("content-type: application/scim+json"), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(v["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{raw}");
    assert_eq!(v["status"], status.to_string(), "{raw}");
    assert!(v["detail"].as_str().is_some_and(|d| d.len() > 10), "{raw}");
}

/// Sends `head` one byte at a time (a slow client) until the server closes.
fn trickle(mut s: TcpStream, bytes: Vec<u8>) -> tokio::task::JoinHandle<TcpStream> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        for b in bytes {
            tick.tick().await;
            if s.write_all(&[b]).await.is_err() {
                break;
            }
        }
        s
    })
}

async fn healthz_fast(admin: &str) {
    let started = Instant::now();
    let r = reqwest::get(format!("{admin}/healthz")).await.expect("healthz answers");
    assert_eq!(r.status(), 200);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(100), "/healthz took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_stuck_connections_are_closed_within_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir);
    let server = start_with_config(&cfg);
    let scim = addr(&server.base);

    // Idle: connected, never sends anything.
    let mut idle = TcpStream::connect(&scim).await.unwrap();
    // Kept alive after one request.
    let mut kept = TcpStream::connect(&scim).await.unwrap();
    let req =
        format!("GET /scim/v2/ServiceProviderConfig HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    kept.write_all(req.as_bytes()).await.unwrap();
    // Headers at 5 bytes/s.
    let slow_head = trickle(
        TcpStream::connect(&scim).await.unwrap(),
        b"GET /scim/v2/Users HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n".to_vec(),
    );
    // A body that never completes.
    let mut slow_body = TcpStream::connect(&scim).await.unwrap();
    let head = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/scim+json\r\ncontent-length: 100\r\n\r\n{{\"userName\""
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();

    healthz_fast(&server.admin).await;
    let idle_out = read_until_closed(&mut idle, CLOSED_WITHIN).await;
    assert_eq!(idle_out.as_deref(), Some(""), "an idle connection is closed");
    let kept_out = read_until_closed(&mut kept, CLOSED_WITHIN).await.expect("a kept-alive connection is closed");
    assert!(kept_out.starts_with("HTTP/1.1 200"), "{kept_out}");
    let body_out = read_until_closed(&mut slow_body, CLOSED_WITHIN).await.expect("a stalled body is closed");
    assert_scim_error(&body_out, 408);
    let mut slow = tokio::time::timeout(CLOSED_WITHIN, slow_head).await.expect("slow headers are cut off").unwrap();
    assert!(read_until_closed(&mut slow, CLOSED_WITHIN).await.is_some(), "slow headers are closed");
    healthz_fast(&server.admin).await;
}

/// The idle timeout counts from the end of the last response, not from the
/// connection's start: a connection busy for longer than it stays open, and
/// is closed once it falls silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_counts_from_the_last_response() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir);
    let server = start_with_config(&cfg);
    let mut conn = TcpStream::connect(addr(&server.base)).await.unwrap();
    let req =
        format!("GET /scim/v2/ServiceProviderConfig HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    // 6 s of requests on one connection, three times the idle timeout (2 s).
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..12 {
        tick.tick().await;
        conn.write_all(req.as_bytes()).await.expect("the busy connection is still open");
        let n = tokio::time::timeout(CLOSED_WITHIN, conn.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "answered while busy");
    }
    let out = read_until_closed(&mut conn, CLOSED_WITHIN).await;
    assert_eq!(out.as_deref(), Some(""), "closed once idle: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_and_the_admin_port_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir);
    let server = start_with_config(&cfg);
    let scim = addr(&server.base);
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(&scim).await.unwrap());
    }
    // The server has taken them all (their slots) once an extra one is refused.
    let mut refused = None;
    for _ in 0..50 {
        let mut extra = TcpStream::connect(&scim).await.unwrap();
        let out = read_until_closed(&mut extra, CLOSED_WITHIN).await.expect("closed");
        if !out.is_empty() {
            refused = Some(out);
            break;
        }
    }
    assert_scim_error(&refused.expect("a connection past the cap is refused with a response"), 503);
    healthz_fast(&server.admin).await;
    let (_, metrics) = server.admin_get("/metrics").await;
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(value(r#"scim_connections_refused_total{listener="scim"}"#) >= 1, "refusals are counted: {metrics}");
    assert_eq!(value(r#"scim_connections_open{listener="scim"}"#), 40, "{metrics}");
    drop(held);
    // Until the server has seen the held connections close, a new one may
    // still be refused, with the 503 written before the request is even sent:
    // a transport error here means "not yet", not a failure.
    let url = format!("{}/Users", server.base);
    let http = reqwest::Client::new();
    assert!(
        scim_test_support::wait_until(CLOSED_WITHIN, || async {
            http.get(&url).bearer_auth(scim_test_support::TOKEN).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the port serves again once connections are released"
    );
}

#[tokio::test]
async fn oversized_heads_and_undecodable_paths_get_scim_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir);
    let server = start_with_config(&cfg);
    let scim = addr(&server.base);

    let mut s = TcpStream::connect(&scim).await.unwrap();
    let big = format!("GET /scim/v2/Users HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    assert_scim_error(&read_until_closed(&mut s, CLOSED_WITHIN).await.expect("closed"), 431);

    let mut s = TcpStream::connect(&scim).await.unwrap();
    let long = format!("GET /scim/v2/Users?filter={} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(8 * 1024));
    let _ = s.write_all(long.as_bytes()).await;
    assert_scim_error(&read_until_closed(&mut s, CLOSED_WITHIN).await.expect("closed"), 414);

    // What hyper itself refuses: a malformed request line, a header field
    // that is not one, more than 100 header fields.
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    for (raw, status) in [
        ("GET /scim/v2/Users HTTP/1.1 trailing\r\nhost: x\r\n\r\n".to_owned(), 400),
        ("GET /scim/v2/Users HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_owned(), 400),
        (format!("GET /scim/v2/Users HTTP/1.1\r\nhost: x\r\n{many}\r\n"), 431),
    ] {
        let mut s = TcpStream::connect(&scim).await.unwrap();
        let _ = s.write_all(raw.as_bytes()).await;
        assert_scim_error(&read_until_closed(&mut s, CLOSED_WITHIN).await.expect("closed"), status);
    }
    // A legitimate empty-bodied answer is left alone (the admin port's 404).
    let r = reqwest::get(format!("{}/no-such-page", server.admin)).await.unwrap();
    assert_eq!(r.status(), 404);

    let r = server.client().get("/Users/%ff").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.content_type, "application/scim+json");
    assert_eq!(r.body["status"], "400");
}

fn start_with_config(cfg: &std::path::Path) -> Server {
    let cfg = cfg.to_str().unwrap();
    Server::start_with(BIN, Options { extra_args: &["--durability", "process", "--config", cfg], ..Default::default() })
}

#[tokio::test]
async fn sigterm_completes_within_the_drain_time_while_a_client_holds_a_partial_head() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.yaml");
    // Timeouts longer than the drain, so only the drain can end the connection.
    std::fs::write(
        &cfg,
        "connections:\n  headerReadTimeoutSeconds: 600\n  idleTimeoutSeconds: 600\n  drainSeconds: 2\n",
    )
    .unwrap();
    let mut server = start_with_config(&cfg);
    let scim = addr(&server.base);
    let mut partial = TcpStream::connect(&scim).await.unwrap();
    partial.write_all(b"GET /scim/v2/Users HTTP/1.1\r\nhost: x\r\nx-part").await.unwrap();
    let _idle = TcpStream::connect(&scim).await.unwrap();
    // The partial head has reached the server once a request after it is answered.
    let mut probe = TcpStream::connect(&scim).await.unwrap();
    probe.write_all(b"GET /scim/v2/Users HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut probe, CLOSED_WITHIN).await.is_some());

    let pid = i32::try_from(server.pid()).unwrap();
    let started = Instant::now();
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = server.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = status.expect("the server exits within 15 s of SIGTERM (drain 2 s)");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
