//! The controller at scale, against the fakes of the tests: N tenants
//! applied at once to the fake Kubernetes API, the real `scim-operator
//! controller` process reconciling them into the ZITADEL fake. Prints a
//! Markdown section: time until all are Ready, the controller's peak RSS, and
//! API writes per tenant during a quiet minute (must be 0).
//!
//! `operator_bench --bin target/release/scim-operator [--tenants 1000] [--quiet-seconds 60]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use kube::Api;
use kube::api::{Patch, PatchParams};
use scim_operator::operator::crd::ScimTenant;
use scim_test_support::{kube_fake, zitadel_fake};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The scim-operator binary.
    #[arg(long)]
    bin: String,
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    #[arg(long, default_value_t = 60)]
    quiet_seconds: u64,
    /// The operator's ZITADEL request rate (its default is 40/s, what ZITADEL Cloud allows).
    #[arg(long, default_value_t = 40.0)]
    zitadel_rps: f64,
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

async fn ready_count(api: &Api<ScimTenant>) -> usize {
    match api.list(&Default::default()).await {
        Ok(l) => l
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count(),
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let kube = kube_fake::KubeFake::start().await;
    let z = zitadel_fake::ZitadelFake::start().await;
    z.add_org("1", "Customer", &["customer.example"]);
    z.add_org("2", "Cluster IAM", &[]);
    z.add_project("3", "2", &["Chat.User"]);
    z.add_service_user_with_pat("4", "2", "bench-admin-pat", &["IAM_OWNER"]);
    // The tenants' servers answer /status here.
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let status_url = format!("http://{}/status/{{namespace}}/{{service}}", status.local_addr()?);
    let app = axum::Router::new().route(
        "/status/{ns}/{svc}",
        axum::routing::get(|| async {
            axum::Json(json!({"users": 0, "groups": 0, "zitadel": {"reachable": true},
                "projection": {"pendingOperations": 0, "failingOperations": 0}}))
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(status, app).await;
    });
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{token: fake}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\ncurrent-context: fake\n",
            kube.url()
        ),
    )?;
    let cred = dir.path().join("credential");
    std::fs::write(&cred, "bench-admin-pat")?;

    let client = kube.client();
    let api: Api<ScimTenant> = Api::all(client.clone());
    let started = Instant::now();
    for i in 0..args.tenants {
        let ns = format!("team-{}", i % 20);
        let name = format!("t{i:04}");
        let body = json!({"apiVersion": "scim.unique.app/v1alpha1", "kind": "ScimTenant",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"zitadel": {"organizationId": "1", "projectId": "3", "projectOrganizationId": "2",
                "defaultRoles": ["Chat.User"]}, "keys": [{"name": "entra"}]}});
        Api::<ScimTenant>::namespaced(client.clone(), &ns)
            .patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&body))
            .await?;
    }
    let mut child = Command::new(&args.bin)
        .arg("controller")
        .env("KUBECONFIG", &kubeconfig)
        .env("ZITADEL_URL", &z.url)
        .env("ZITADEL_CREDENTIAL_FILE", &cred)
        .env("SCIM_SERVER_IMAGE", "ghcr.io/unique-app/scim-operator:bench")
        .env("ADMIN_LISTEN", "127.0.0.1:0")
        .env("STATUS_URL_TEMPLATE", &status_url)
        .env("ZITADEL_MAX_REQUESTS_PER_SECOND", args.zitadel_rps.to_string())
        // The operator alone, at --zitadel-rps: no tenant server shares the
        // budget here (tests/rate_budget.rs measures the division).
        .env("ZITADEL_BUDGET", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut ready = 0;
    while Instant::now() < deadline {
        ready = ready_count(&api).await;
        if ready == args.tenants {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let to_ready = started.elapsed();
    let z_calls = z.calls().len();
    let mark = kube.mark();
    tokio::time::sleep(Duration::from_secs(args.quiet_seconds)).await;
    let quiet_writes = kube.writes_since(mark).len();
    let rss = peak_rss_kib(pid).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();

    println!("## Operator: {} tenants against the fakes, ZITADEL at {} requests/s\n", args.tenants, args.zitadel_rps);
    println!(
        "The controller process (`scim-operator controller`, release build) against the in-process fake Kubernetes API and ZITADEL fake; tenants applied before it starts, spread over 20 namespaces.\n"
    );
    println!("| measure | value |\n|---|---:|");
    println!("| tenants Ready | {ready} of {} |", args.tenants);
    println!("| time until all Ready | {:.1} s |", to_ready.as_secs_f64());
    println!("| ZITADEL calls until Ready | {z_calls} ({:.1} per tenant) |", z_calls as f64 / args.tenants as f64);
    println!("| controller peak RSS | {:.1} MiB |", rss as f64 / 1024.0);
    println!(
        "| API writes in {} s of steady state | {quiet_writes} ({:.3} per tenant) |",
        args.quiet_seconds,
        quiet_writes as f64 / args.tenants as f64
    );
    println!();
    println!(
        "ZITADEL's rate alone needs {z_calls} calls / {} per second = {:.1} s for the first sync; the controller reads its children from watch caches and writes nothing at steady state, although it polls every server's /status each minute and checks ZITADEL every 10 minutes.\n",
        args.zitadel_rps,
        z_calls as f64 / args.zitadel_rps
    );
    if ready != args.tenants || quiet_writes != 0 {
        std::process::exit(1);
    }
    Ok(())
}
