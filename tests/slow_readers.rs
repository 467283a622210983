//! Clients that pipeline requests and never read their responses cost the
//! server bounded memory: 2,000 of them keep its RSS under 150 MB.

use std::time::{Duration, Instant};

use scim_test_support::{Options, Server, TOKEN};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// The binary under test (`make bench` passes the release build in
/// `SCIM_SERVER_BIN`); only integration tests of the root package can name it.
fn bin() -> String {
    std::env::var("SCIM_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_scim-operator").to_owned())
}
const CONNECTIONS: usize = 2000;
const USERS: usize = 1000;
const RSS_LIMIT_KB: u64 = 150 * 1024;
/// How long the server's memory is watched while the clients hold on.
const WATCH: Duration = Duration::from_secs(15);

fn start(dir: &std::path::Path) -> Server {
    let cfg = dir.join("serve.yaml");
    std::fs::write(&cfg, "connections:\n  maxConnections: 2100\n  writeTimeoutSeconds: 5\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    Server::start_with(
        &bin(),
        Options { extra_args: &["--durability", "process", "--config", cfg], ..Default::default() },
    )
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn raise_open_files() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: only reads and writes the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn populate(base: &str) {
    let http = reqwest::Client::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..USERS {
        let body = json!({
            "userName": format!("user{i:05}@contoso.example.com"),
            "displayName": format!("User Number {i} of the Slow Reader Test"),
            "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
            "emails": [{"value": format!("user{i:05}@contoso.example.com"), "type": "work", "primary": true}],
            "externalId": format!("ext-{i:08}-0000-0000-0000-000000000000"),
        });
        pending.push(
            http.post(format!("{base}/Users"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send(),
        );
        if pending.len() >= 16 {
            assert_eq!(pending.next().await.unwrap().unwrap().status(), 201);
        }
    }
    while let Some(r) = pending.next().await {
        assert_eq!(r.unwrap().status(), 201);
    }
}

/// A client with a small receive buffer that sends five list requests and
/// never reads.
async fn non_reader(addr: std::net::SocketAddr, host: &str) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    let mut s = socket.connect(addr).await.ok()?;
    let req =
        format!("GET /scim/v2/Users?count=1000 HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    s.write_all(req.repeat(5).as_bytes()).await.ok()?;
    Some(s)
}

// About two minutes on a debug build (1,000 users to create, 2,000 sockets):
// run it with `cargo test --test slow_readers -- --ignored --nocapture`.
#[ignore = "slow: about two minutes; run with --ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_that_never_read_keep_the_server_under_150_mb() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    populate(&server.base).await;
    let host = server.base.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let addr: std::net::SocketAddr = host.parse().unwrap();
    let pid = server.pid();
    let before = rss_kb(pid);

    let mut clients = Vec::with_capacity(CONNECTIONS);
    let mut peak = before;
    for _ in 0..CONNECTIONS {
        if let Some(c) = non_reader(addr, &host).await {
            clients.push(c);
        }
        peak = peak.max(rss_kb(pid));
    }
    assert!(clients.len() > CONNECTIONS * 9 / 10, "only {} clients connected", clients.len());
    let started = Instant::now();
    while started.elapsed() < WATCH {
        peak = peak.max(rss_kb(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::get(format!("{}/healthz", server.admin)).await.expect("healthz answers");
    assert_eq!(r.status(), 200);
    println!(
        "bench: {} clients each pipelining 5 × `GET /Users?count=1000` ({USERS} users) and never reading: \
         server RSS {:.1} MiB before, peak {:.1} MiB (limit {} MiB); `/healthz` answered 200 meanwhile. \
         Binary: `{}`.",
        clients.len(),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        RSS_LIMIT_KB / 1024,
        bin()
    );
    assert!(peak < RSS_LIMIT_KB, "peak RSS {peak} kB with {} non-reading clients", clients.len());
    drop(clients);
}
