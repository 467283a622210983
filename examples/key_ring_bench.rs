//! Benchmark of the key check with self-service keys: SCIM `GET /Users/{id}`
//! throughput of a server holding 16 self-service (API) keys plus a keys-file
//! key, against a server with one key. The key check must stay one map lookup
//! per request, so the ratio should be ~1. Prints a Markdown section for
//! BENCHMARKS.md.
//!
//! cargo run --release --example key_ring_bench -- --server target/release/scim-operator
//!
//! Needs `wrk` (and uses `taskset` when present: server on CPU 0, wrk on CPU 1,
//! as bench/run_bench.py does). The servers run one measurement at a time,
//! alternating, and the median of the rounds is reported.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::Parser;
use scim_test_support::zitadel_fake::{UserTokenOptions, ZitadelFake};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The scim-operator binary (a release build).
    #[arg(long)]
    server: String,
    /// Seconds per measured wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Measured runs per configuration (alternating); the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Self-service keys created on the first server.
    #[arg(long, default_value_t = 16)]
    api_keys: usize,
}

const ORG: &str = "410000000000000001";
const IAM: &str = "410000000000000002";
const PROJECT: &str = "420000000000000001";
/// Two admins: one user may create 10 keys a minute.
const ADMINS: [&str; 2] = ["430000000000000001", "430000000000000002"];
const FILE_KEY: &str = "scim_bench-keys-file-key-000000000000000000000";

type Error = Box<dyn std::error::Error>;

struct Served {
    child: Child,
    origin: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(cpu: u32, program: &str) -> Command {
    if Command::new("taskset").arg("-V").output().is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), program]);
        c
    } else {
        Command::new(program)
    }
}

fn serve(server: &str, cfg: &Path, data: &Path) -> Result<Served, Error> {
    let mut cmd = pinned(0, server);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .env_remove("SCIM_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().ok_or("the server exited before printing its URL")??;
        if let Some(u) = line.strip_prefix("SCIM base URL: ") {
            break u.to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Served { child, origin: base.trim_end_matches("/scim/v2").to_string() })
}

fn keys_file(dir: &Path) -> Result<PathBuf, Error> {
    use sha2::Digest;
    let path = dir.join("keys.yaml");
    let hash = hex::encode(sha2::Sha256::digest(FILE_KEY.as_bytes()));
    std::fs::write(&path, format!("keys:\n  - {{name: entra, sha256: {hash}}}\n"))?;
    Ok(path)
}

/// Users to read, written as `id<TAB>userName` lines for bench/wrk/get.lua.
async fn preload(http: &reqwest::Client, s: &Served, key: &str, n: usize, out: &Path) -> Result<(), Error> {
    let mut lines = String::new();
    for i in 0..n {
        let name = format!("bench.user{i}@contoso.com");
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "active": true});
        let r = http
            .post(format!("{}/scim/v2/Users", s.origin))
            .bearer_auth(key)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await?;
        if r.status() != 201 {
            return Err(format!("preload: {} {}", r.status(), r.text().await.unwrap_or_default()).into());
        }
        let v: Value = r.json().await?;
        lines.push_str(&format!("{}\t{name}\n", v["id"].as_str().unwrap_or_default()));
    }
    std::fs::write(out, lines)?;
    Ok(())
}

/// Requests per second of one wrk run of bench/wrk/get.lua.
fn wrk_get(a: &Args, duration: u64, s: &Served, key: &str, data: &Path, result: &Path) -> Result<f64, Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/wrk/get.lua");
    let _ = std::fs::remove_file(result);
    let out = pinned(1, "wrk")
        .args(["-t", "1", "-c", &a.connections.to_string(), "-d", &format!("{duration}s"), "-s"])
        .arg(&script)
        .arg(format!("{}/", s.origin))
        .env("BENCH_BASE_PATH", "/scim/v2")
        .env("BENCH_TOKEN", key)
        .env("BENCH_DATA", data)
        .env("BENCH_RESULT", result)
        .output()?;
    if !out.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(result)?)?;
    let errors = &r["errors"];
    let failed =
        ["status", "connect", "read", "write", "timeout"].iter().map(|k| errors[k].as_u64().unwrap_or(0)).sum::<u64>();
    if failed > 0 {
        return Err(format!("{failed} failed requests in a measured run: {errors}").into());
    }
    let requests = r["requests"].as_f64().ok_or("no request count")?;
    let us = r["duration_us"].as_f64().ok_or("no duration")?;
    Ok(requests / (us / 1e6))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let a = Args::parse();
    let fake = ZitadelFake::start().await;
    fake.add_org(ORG, "Contoso", &["contoso.com"]);
    fake.add_org(IAM, "Cluster IAM", &[]);
    fake.add_project(PROJECT, IAM, &["Chat.Admin.All"]);
    fake.add_service_user_with_pat("440000000000000001", IAM, "bench-pat", &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    for (i, admin) in ADMINS.iter().enumerate() {
        let name = format!("admin{i}@contoso.com");
        fake.add_human(ORG, admin, &name, &name);
        fake.add_authorization(admin, PROJECT, IAM, &["Chat.Admin.All"]);
    }
    let (client_id, secret) = fake.add_api_app_basic(PROJECT, "scim-introspection");

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pat"), "bench-pat")?;
    std::fs::write(dir.path().join("secret"), secret)?;
    let zitadel = format!(
        "zitadel:\n  url: {}\n  credentials: {{patFile: {}}}\n  organizationId: \"{ORG}\"\n  projectId: \"{PROJECT}\"\n  projectOrganizationId: \"{IAM}\"\n  maxRequestsPerSecond: 100000\n",
        fake.url,
        dir.path().join("pat").display()
    );
    let many_cfg = dir.path().join("many.yaml");
    std::fs::write(
        &many_cfg,
        format!(
            "keysFile: {}\n{zitadel}selfService:\n  maxKeys: {}\n  introspection: {{clientId: \"{client_id}\", clientSecretFile: {}}}\n",
            keys_file(dir.path())?.display(),
            a.api_keys,
            dir.path().join("secret").display()
        ),
    )?;

    let http = reqwest::Client::new();
    let many = serve(&a.server, &many_cfg, &dir.path().join("many-data"))?;
    let tokens: Vec<String> =
        ADMINS.iter().map(|u| fake.issue_user_token(u, UserTokenOptions::for_project(PROJECT))).collect();
    let mut api_keys = Vec::new();
    for i in 0..a.api_keys {
        let body = json!({"query": "mutation($n: String) { scimKeyCreate(name: $n) { key } }", "variables": {"n": format!("bench-{i}")}});
        let r: Value = http
            .post(format!("{}/graphql", many.origin))
            .header("authorization", &tokens[(i / 10) % tokens.len()])
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?
            .json()
            .await?;
        let key = r["data"]["scimKeyCreate"]["key"].as_str().ok_or_else(|| format!("key creation failed: {r}"))?;
        api_keys.push(key.to_string());
    }
    let api_key = api_keys.last().ok_or("no API key")?.clone();
    let many_data = dir.path().join("many-users.tsv");
    preload(&http, &many, FILE_KEY, a.users, &many_data).await?;

    // The same config and data, without self-service keys: only the keys file's key.
    let one = serve(&a.server, &many_cfg, &dir.path().join("one-data"))?;
    let one_data = dir.path().join("one-users.tsv");
    preload(&http, &one, FILE_KEY, a.users, &one_data).await?;

    let result = dir.path().join("wrk.json");
    // Warm-up of both.
    wrk_get(&a, 2, &many, &api_key, &many_data, &result)?;
    wrk_get(&a, 2, &one, FILE_KEY, &one_data, &result)?;
    let (mut with_api, mut with_file, mut single) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        single.push(wrk_get(&a, a.duration, &one, FILE_KEY, &one_data, &result)?);
        with_api.push(wrk_get(&a, a.duration, &many, &api_key, &many_data, &result)?);
        with_file.push(wrk_get(&a, a.duration, &many, FILE_KEY, &many_data, &result)?);
    }
    let (api, file, one_rps) = (median(with_api.clone()), median(with_file.clone()), median(single.clone()));
    let runs = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    println!("### The key check with self-service keys (`GET /Users/{{id}}`)\n");
    println!(
        "{} self-service keys plus one keys-file key, against the same server (config, users) with only the keys-file key; {} users each, wrk with {} connections, {} s runs, median of {} alternating rounds; command `make bench-keys`.\n",
        a.api_keys, a.users, a.connections, a.duration, a.rounds
    );
    println!("| server, key presented | req/s (median) | runs | vs one key |");
    println!("|---|---:|---|---:|");
    println!("| one key (the keys file's) | {one_rps:.0} | {} | 1.00 |", runs(&single));
    println!(
        "| {} API keys + keys file, an API key | {api:.0} | {} | {:.3} |",
        a.api_keys,
        runs(&with_api),
        api / one_rps
    );
    println!(
        "| {} API keys + keys file, the keys-file key | {file:.0} | {} | {:.3} |",
        a.api_keys,
        runs(&with_file),
        file / one_rps
    );
    println!();
    Ok(())
}
