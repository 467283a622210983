//! Benchmark of an initial Entra provisioning cycle projected into ZITADEL:
//! N users, then G groups with M members each (added in PATCH batches), through
//! the real server against the in-process ZITADEL fake with added latency.
//! Prints a Markdown section for BENCHMARKS.md.
//!
//! cargo run --release --example projection_bench -- --server target/release/scim-operator

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use scim_test_support::zitadel_fake;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The scim-operator binary.
    #[arg(long)]
    server: String,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 200)]
    groups: usize,
    #[arg(long, default_value_t = 100)]
    members_per_group: usize,
    /// Groups mapped to project roles (the rest cost ZITADEL nothing).
    #[arg(long, default_value_t = 20)]
    mapped_groups: usize,
    /// Members per PATCH.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Latency the fake adds to every ZITADEL call.
    #[arg(long, default_value_t = 5)]
    latency_ms: u64,
    /// Concurrent SCIM requests (Entra's connections).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const ORG: &str = "310000000000000001";
const IAM: &str = "310000000000000002";
const PROJECT: &str = "320000000000000001";
const IDP: &str = "330000000000000001";
const TOKEN: &str = "bench-token";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let fake = zitadel_fake::ZitadelFake::start().await;
    fake.add_org(ORG, "Contoso", &["contoso.com"]);
    fake.add_org(IAM, "Cluster IAM", &[]);
    fake.add_project(PROJECT, IAM, &["Chat.User", "Chat.Admin"]);
    fake.add_idp(IDP, None);
    fake.add_service_user_with_pat("340000000000000001", IAM, "bench-pat", &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]);
    fake.set_latency(Duration::from_millis(a.latency_ms));

    let dir = tempfile::tempdir()?;
    let pat = dir.path().join("pat");
    std::fs::write(&pat, "bench-pat")?;
    let mapped: Vec<String> =
        (0..a.mapped_groups).map(|g| format!("  - {{group: \"Group {g:03}\", roles: [Chat.Admin]}}")).collect();
    let cfg = dir.path().join("serve.yaml");
    std::fs::write(
        &cfg,
        format!(
            "zitadel:\n  url: {}\n  credentials: {{patFile: {}}}\n  organizationId: \"{ORG}\"\n  projectId: \"{PROJECT}\"\n  projectOrganizationId: \"{IAM}\"\n  idpId: \"{IDP}\"\n  defaultRoles: [Chat.User]\n  maxRequestsPerSecond: 100000\n  groupRoles:\n{}\n",
            fake.url,
            pat.display(),
            mapped.join("\n")
        ),
    )?;
    let mut child = Command::new(&a.server)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("SCIM_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let (mut base, mut admin) = (String::new(), String::new());
    while base.is_empty() || admin.is_empty() {
        let line = lines.next().ok_or("server exited")??;
        if let Some(u) = line.strip_prefix("SCIM base URL: ") {
            base = u.to_string();
        }
        if let Some(u) = line.strip_prefix("Admin URL: ") {
            admin = u.to_string();
        }
    }
    let http = reqwest::Client::new();
    let send = |m: reqwest::Method, path: String, body: Option<Value>| {
        let mut rb = http.request(m, format!("{base}{path}")).bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b.to_string());
        }
        async move {
            let r = rb.send().await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            Ok::<(u16, Value), reqwest::Error>((status, v))
        }
    };

    let started = Instant::now();
    let mut scim_requests = 0usize;
    // Users: match by userName, then create.
    let results: Vec<Result<String, String>> = futures::stream::iter(0..a.users)
        .map(|i| {
            let send = &send;
            async move {
                let upn = format!("user{i:05}@contoso.com");
                let (s, v) = send(
                    reqwest::Method::GET,
                    format!("/Users?filter=userName+eq+%22{}%22", upn.replace('@', "%40")),
                    None,
                )
                .await
                .map_err(|e| e.to_string())?;
                if s != 200 || v["totalResults"] != 0 {
                    return Err(format!("match {upn}: {s}"));
                }
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "externalId": format!("oid-{i:05}"), "userName": upn, "active": "True",
                    "displayName": format!("User {i}"), "name": {"givenName": "User", "familyName": format!("{i}")},
                    "emails": [{"primary": true, "type": "work", "value": upn}]
                });
                let (s, v) =
                    send(reqwest::Method::POST, "/Users".into(), Some(body)).await.map_err(|e| e.to_string())?;
                if s != 201 {
                    return Err(format!("create {upn}: {s} {v}"));
                }
                Ok(v["id"].as_str().unwrap_or_default().to_string())
            }
        })
        .buffered(a.concurrency)
        .collect()
        .await;
    scim_requests += 2 * a.users;
    let ids: Vec<String> = results.into_iter().collect::<Result<_, _>>()?;
    let users_done = started.elapsed();

    // Groups: match by displayName, create without members, add members in batches.
    let group_results: Vec<Result<usize, String>> = futures::stream::iter(0..a.groups)
        .map(|g| {
            let (send, ids) = (&send, &ids);
            let (m, batch) = (a.members_per_group, a.batch);
            async move {
                let name = format!("Group {g:03}");
                let (s, _) = send(
                    reqwest::Method::GET,
                    format!("/Groups?excludedAttributes=members&filter=displayName+eq+%22{}%22", name.replace(' ', "+")),
                    None,
                )
                .await
                .map_err(|e| e.to_string())?;
                if s != 200 {
                    return Err(format!("match {name}: {s}"));
                }
                let (s, v) = send(reqwest::Method::POST, "/Groups".into(), Some(json!({"displayName": name, "externalId": format!("gid-{g}")})))
                    .await
                    .map_err(|e| e.to_string())?;
                if s != 201 {
                    return Err(format!("create {name}: {s}"));
                }
                let gid = v["id"].as_str().unwrap_or_default().to_string();
                let members: Vec<&String> = (0..m).map(|k| &ids[(g * 50 + k * 7) % ids.len()]).collect();
                let mut requests = 2;
                for chunk in members.chunks(batch) {
                    let value: Vec<Value> = chunk.iter().map(|id| json!({"$ref": null, "value": id})).collect();
                    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Add", "path": "members", "value": value}]});
                    let (s, _) = send(reqwest::Method::PATCH, format!("/Groups/{gid}?excludedAttributes=members"), Some(body))
                        .await
                        .map_err(|e| e.to_string())?;
                    if s != 200 && s != 204 {
                        return Err(format!("members of {name}: {s}"));
                    }
                    requests += 1;
                }
                Ok(requests)
            }
        })
        .buffered(a.concurrency)
        .collect()
        .await;
    for r in group_results {
        scim_requests += r?;
    }
    let scim_done = started.elapsed();

    // The outbox drains the role changes of mapped groups' members.
    loop {
        let s: Value = http.get(format!("{admin}/status")).send().await?.json().await?;
        if s["projection"]["pendingOperations"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    let calls = fake.calls();
    let count = |suffix: &str| calls.iter().filter(|c| c.ends_with(suffix)).count();
    let humans = fake.users().iter().filter(|u| !u.is_machine).count();
    let _ = child.kill();
    let _ = child.wait();

    let memberships = a.groups * a.members_per_group;
    println!("### Initial Entra cycle projected into ZITADEL\n");
    println!(
        "Command: `target/release/examples/projection_bench --server {}` (part of `make bench`), {} UTC, on the machine above.\n",
        a.server,
        time::OffsetDateTime::now_utc()
            .format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]"))
            .unwrap_or_default()
    );
    println!(
        "{} users, {} groups, {} memberships ({} per PATCH), {} of the groups mapped to a role; ZITADEL fake with {} ms latency per call; {} concurrent SCIM connections; rate limiter raised out of the way (`maxRequestsPerSecond: 100000`).\n",
        a.users, a.groups, memberships, a.batch, a.mapped_groups, a.latency_ms, a.concurrency
    );
    println!("| measure | value |\n|---|---:|");
    println!("| users phase (match + create) | {:.1} s |", users_done.as_secs_f64());
    println!("| groups phase (match + create + member PATCHes) | {:.1} s |", (scim_done - users_done).as_secs_f64());
    println!("| outbox drained after the last SCIM request | {:.1} s |", (total - scim_done).as_secs_f64());
    println!("| wall time, all | {:.1} s |", total.as_secs_f64());
    println!("| SCIM requests | {scim_requests} |");
    println!("| SCIM requests/s | {:.0} |", scim_requests as f64 / scim_done.as_secs_f64());
    println!("| ZITADEL calls | {} |", calls.len());
    println!("| ZITADEL calls per user | {:.2} |", calls.len() as f64 / a.users as f64);
    println!(
        "| of which AddHumanUser / CreateAuthorization / UpdateAuthorization | {} / {} / {} |",
        count("AddHumanUser"),
        count("CreateAuthorization"),
        count("UpdateAuthorization")
    );
    println!("| ZITADEL users at the end | {humans} |");
    println!("| projected wall time at the default 40 requests/s | {:.0} s |\n", calls.len() as f64 / 40.0);
    if humans != a.users {
        return Err(format!("expected {} ZITADEL users, found {humans}", a.users).into());
    }
    Ok(())
}
