//! The ZITADEL fake of the tests as a standalone server, for the SDK contract check
//! (`tests/contract/zitadel_sdk_contract.py`) and for benchmarks.
//!
//! Seeds a customer org, a project-owning org with a project and roles, an IdP and an
//! `IAM_OWNER` machine user with a PAT, then prints
//!
//! ```text
//! ZITADEL URL: http://127.0.0.1:PORT
//! ZITADEL PAT: <token>
//! ZITADEL ORG: <customer org id>
//! ZITADEL PROJECT ORG: <project org id>
//! ZITADEL PROJECT: <project id>
//! ZITADEL IDP: <idp id>
//! ```
//!
//! and serves until killed. `--latency-ms N` adds N ms to every request;
//! `--instance-host H` makes API calls without `x-zitadel-instance-host: H` (or
//! `Host: H`) fail as for an unknown instance; `--key-file PATH` also writes the key
//! file of a second machine user (IAM_OWNER_VIEWER + IAM_USER_MANAGER).

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use scim_test_support::zitadel_fake;

#[derive(Parser)]
#[command(about = "In-process ZITADEL fake, served standalone")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// The customer org users are provisioned into.
    #[arg(long, default_value = "300000000000000001")]
    org_id: String,
    #[arg(long, default_value = "Contoso")]
    org_name: String,
    /// Verified domains of the customer org (repeatable).
    #[arg(long = "org-domain", default_values_t = ["contoso.com".to_string()])]
    org_domains: Vec<String>,
    /// The org that owns the project (and the service user).
    #[arg(long, default_value = "300000000000000002")]
    project_org_id: String,
    #[arg(long, default_value = "300000000000000003")]
    project_id: String,
    /// Role keys of the project (comma separated).
    #[arg(long, default_value = "Chat.User,Chat.Admin.All", value_delimiter = ',')]
    roles: Vec<String>,
    /// An IdP of the customer org.
    #[arg(long, default_value = "300000000000000004")]
    idp_id: String,
    /// The machine user whose PAT is printed.
    #[arg(long, default_value = "300000000000000005")]
    user_id: String,
    #[arg(long, default_value = "fake-pat-admin-3c1e0b7d9a")]
    pat: String,
    /// Its instance roles (comma separated).
    #[arg(long, default_value = "IAM_OWNER", value_delimiter = ',')]
    instance_roles: Vec<String>,
    /// Require this instance host in `x-zitadel-instance-host` (or `Host`) on API calls.
    #[arg(long)]
    instance_host: Option<String>,
    /// Also create a machine user with IAM_OWNER_VIEWER + IAM_USER_MANAGER and write its key file here.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let fake = zitadel_fake::ZitadelFake::start_on(&a.listen)?;
    fake.set_latency(Duration::from_millis(a.latency_ms));
    fake.set_instance_host(a.instance_host.as_deref());
    let domains: Vec<&str> = a.org_domains.iter().map(String::as_str).collect();
    fake.add_org(&a.org_id, &a.org_name, &domains);
    fake.add_org(&a.project_org_id, "Cluster IAM", &[]);
    let roles: Vec<&str> = a.roles.iter().map(String::as_str).collect();
    fake.add_project(&a.project_id, &a.project_org_id, &roles);
    fake.add_idp(&a.idp_id, Some(&a.org_id));
    let instance_roles: Vec<&str> = a.instance_roles.iter().map(String::as_str).collect();
    fake.add_service_user_with_pat(&a.user_id, &a.project_org_id, &a.pat, &instance_roles);

    let mut out = std::io::stdout().lock();
    writeln!(out, "ZITADEL URL: {}", fake.url)?;
    writeln!(out, "ZITADEL PAT: {}", a.pat)?;
    writeln!(out, "ZITADEL ORG: {}", a.org_id)?;
    writeln!(out, "ZITADEL PROJECT ORG: {}", a.project_org_id)?;
    writeln!(out, "ZITADEL PROJECT: {}", a.project_id)?;
    writeln!(out, "ZITADEL IDP: {}", a.idp_id)?;
    if let Some(path) = &a.key_file {
        let key = fake.add_service_user_with_key(
            "300000000000000006",
            &a.project_org_id,
            &["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"],
        );
        std::fs::write(path, key)?;
        writeln!(out, "ZITADEL KEY FILE: {}", path.display())?;
    }
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}
