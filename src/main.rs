//! `scim-operator`: the SCIM server (`serve`) and its tools.

// The store's writer builds documents that request handlers drop on another
// thread; glibc's arenas make every later allocation sweep those up again,
// mimalloc frees across threads cheaply (figures: BENCHMARKS.md; the commit
// setting that keeps RSS low is in .cargo/config.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scim_operator::app::{self, ServeSettings};
use scim_operator::config::{DurabilityConfig, ServeConfig};
use scim_operator::keys;

#[derive(Parser)]
#[command(
    name = "scim-operator",
    version,
    about = "SCIM 2.0 server for Microsoft Entra ID → ZITADEL, and its Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SCIM server (standalone on the embedded store unless configured otherwise).
    Serve(ServeArgs),
    /// Before the first provisioning cycle: which Entra users match existing ZITADEL users, which will be created, which conflict.
    Preflight {
        /// The serve config file (its zitadel section is used).
        #[arg(long)]
        config: PathBuf,
        /// Entra users export: CSV with userPrincipalName, mail, objectId columns, or JSON.
        #[arg(long)]
        users: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the ScimTenant CustomResourceDefinition (YAML).
    Crd,
    /// Print every object the controller would apply for a ScimTenant (with placeholder key material).
    Render {
        /// The ScimTenant manifest (YAML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The SCIM server image when the tenant names none.
        #[arg(long, default_value = concat!("ghcr.io/unique-app/scim-operator:", env!("CARGO_PKG_VERSION")))]
        image: String,
        /// The ZITADEL API URL the server is configured with.
        #[arg(long, default_value = "https://zitadel.example.com")]
        zitadel_url: String,
        /// The operator's namespace (allowed on the admin port by the NetworkPolicy).
        #[arg(long, default_value = "scim-operator-system")]
        operator_namespace: String,
    },
    /// Run the ScimTenant controller (in the cluster, or against the current kubeconfig).
    Controller(Box<ControllerArgs>),
    /// Manage SCIM bearer keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML config file (camelCase keys: listen, adminListen, dataDir, keysFile, publicUrl, durability, maxBodyBytes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// SCIM listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Admin listen address for /healthz /readyz /metrics /status [default: 127.0.0.1:9090].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Directory of the embedded store [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keys file (`keys: [{name, sha256}]`), reloaded when it changes.
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// Externally visible SCIM base URL, e.g. https://scim.example.com/scim/v2.
    #[arg(long)]
    public_url: Option<String>,
    /// full: fsync before acknowledging (default); process: survives kill -9, not power loss.
    #[arg(long, value_parser = ["full", "process"])]
    durability: Option<String>,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// ZITADEL API base URL, e.g. https://id.example.com.
    #[arg(long, env = "ZITADEL_URL")]
    zitadel_url: String,
    /// Instance host to send when the URL is an in-cluster address.
    #[arg(long, env = "ZITADEL_INSTANCE_HOST")]
    zitadel_instance_host: Option<String>,
    /// The operator's ZITADEL admin credential: a PAT or a machine key JSON (needs IAM_OWNER).
    #[arg(long, env = "ZITADEL_CREDENTIAL_FILE")]
    zitadel_credential_file: PathBuf,
    /// Image of the SCIM server pods (normally the operator's own).
    #[arg(long, env = "SCIM_SERVER_IMAGE")]
    server_image: String,
    /// Namespaces to watch, comma-separated; empty: all.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    watch_namespaces: Vec<String>,
    /// Address of /metrics /healthz /readyz.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: String,
    /// Take a Lease before reconciling (for more than one replica).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "scim-operator")]
    lease_name: String,
    /// The operator's own namespace: it holds the Lease, and the tenants' NetworkPolicies admit it on the admin port.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in events.
    #[arg(long, env = "POD_NAME", default_value = "scim-operator")]
    identity: String,
    /// How often ZITADEL bindings are checked for drift, e.g. 10m.
    #[arg(long, env = "RESYNC", default_value = "10m")]
    resync: String,
    /// Most ZITADEL requests per second from the operator (ZITADEL Cloud bans above 50).
    #[arg(long, env = "ZITADEL_MAX_REQUESTS_PER_SECOND", default_value_t = 40.0)]
    zitadel_max_requests_per_second: f64,
    /// The cluster's ZITADEL budget in requests per second, divided between the
    /// operator and the tenant servers with work (all of them leave through the
    /// same address; ZITADEL Cloud bans it above 50/s). 0 turns the division off.
    #[arg(long, env = "ZITADEL_BUDGET", default_value_t = 40.0)]
    zitadel_budget: f64,
    /// How often every tenant server is asked whether it has work, to divide the budget, e.g. 5s.
    #[arg(long, env = "ZITADEL_BUDGET_POLL", default_value = "5s")]
    zitadel_budget_poll: String,
    /// Where a tenant server's /status is read; {service}, {namespace} and {name} are filled in.
    #[arg(long, env = "STATUS_URL_TEMPLATE", default_value = "http://{service}.{namespace}.svc:9090/status")]
    status_url_template: String,
    /// Pull secrets of tenant pods that name none (comma-separated names; the operator's own).
    #[arg(long, env = "SERVER_IMAGE_PULL_SECRETS", value_delimiter = ',', default_value = "")]
    server_image_pull_secrets: Vec<String>,
    #[command(flatten)]
    network_policy: NetworkPolicyArgs,
}

/// The tenants' NetworkPolicies (README, "Network policies").
#[derive(clap::Args)]
struct NetworkPolicyArgs {
    /// Give every tenant a NetworkPolicy unless its spec.server.networkPolicy.enabled says otherwise.
    #[arg(long, env = "TENANT_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    tenant_network_policy: bool,
    /// Who may reach the SCIM port: a JSON list of NetworkPolicy peers (the Ingress controller's pods); [] allows any source.
    #[arg(long, env = "TENANT_NETWORK_POLICY_SCIM_FROM", default_value = "[]")]
    tenant_network_policy_scim_from: String,
    /// Namespaces besides the operator's own whose pods may read the admin port (/metrics, /status), comma-separated.
    #[arg(long, env = "TENANT_NETWORK_POLICY_MONITORING_NAMESPACES", value_delimiter = ',', default_value = "")]
    tenant_network_policy_monitoring_namespaces: Vec<String>,
    /// Where ZITADEL is for egress: a JSON list of NetworkPolicy peers (ipBlock CIDRs, namespaces); [] allows any destination on the ZITADEL port.
    #[arg(long, env = "TENANT_NETWORK_POLICY_ZITADEL_TO", default_value = "[]")]
    tenant_network_policy_zitadel_to: String,
    /// The ZITADEL port as the pod reaches it (an in-cluster Service's targetPort); default: the port of --zitadel-url.
    #[arg(long, env = "TENANT_NETWORK_POLICY_ZITADEL_PORT")]
    tenant_network_policy_zitadel_port: Option<u16>,
}

impl NetworkPolicyArgs {
    /// The settings, with the operator's own namespace allowed on the admin port.
    fn defaults(
        self,
        operator_namespace: &str,
    ) -> Result<scim_operator::operator::build::NetworkPolicyDefaults, String> {
        use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
        let peers = |flag: &str, json: &str| -> Result<Vec<NetworkPolicyPeer>, String> {
            let example =
                r#"e.g. [{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress-nginx"}}}]"#;
            let list: Vec<NetworkPolicyPeer> = serde_json::from_str(json)
                .map_err(|e| format!("--{flag} is not a JSON list of NetworkPolicy peers ({e}), {example}"))?;
            match list
                .iter()
                .position(|p| p.ip_block.is_none() && p.namespace_selector.is_none() && p.pod_selector.is_none())
            {
                Some(i) => {
                    Err(format!("--{flag}: peer {i} has none of ipBlock, namespaceSelector, podSelector, {example}"))
                }
                None => Ok(list),
            }
        };
        let mut admin_from_namespaces = vec![operator_namespace.to_string()];
        for ns in self.tenant_network_policy_monitoring_namespaces.into_iter().map(|n| n.trim().to_string()) {
            if !ns.is_empty() && !admin_from_namespaces.contains(&ns) {
                admin_from_namespaces.push(ns);
            }
        }
        Ok(scim_operator::operator::build::NetworkPolicyDefaults {
            enabled: self.tenant_network_policy,
            scim_from: peers("tenant-network-policy-scim-from", &self.tenant_network_policy_scim_from)?,
            admin_from_namespaces,
            zitadel_to: peers("tenant-network-policy-zitadel-to", &self.tenant_network_policy_zitadel_to)?,
            zitadel_port: self.tenant_network_policy_zitadel_port.filter(|p| *p > 0).map(i32::from),
        })
    }
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a new random key and the line to add to the keys file.
    Generate {
        /// Name of the key in the keys file.
        #[arg(long, default_value = "entra")]
        name: String,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: logs collected from a pod or a file stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = match &args.config {
        Some(p) => ServeConfig::load(p).map_err(|e| e.to_string())?,
        None => ServeConfig::default(),
    };
    // The operator's share of the cluster's ZITADEL budget sits beside serve.yaml.
    if let (Some(p), Some(z)) = (&args.config, config.zitadel.as_mut())
        && z.max_requests_per_second_file.is_none()
    {
        z.max_requests_per_second_file = scim_operator::zitadel::rate::beside_config(p);
    }
    if args.listen.is_some() {
        config.listen = args.listen;
    }
    if args.admin_listen.is_some() {
        config.admin_listen = args.admin_listen;
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir;
    }
    if args.keys_file.is_some() {
        config.keys_file = args.keys_file;
    }
    if args.public_url.is_some() {
        config.public_url = args.public_url;
    }
    match args.durability.as_deref() {
        Some("full") => config.durability = Some(DurabilityConfig::Full),
        Some("process") => config.durability = Some(DurabilityConfig::Process),
        _ => {}
    }
    config.validate().map_err(|e| e.to_string())?;
    let settings = ServeSettings::from_config(config, std::env::var("SCIM_TOKEN").ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(app::run(settings)).map_err(|e| e.to_string())
}

fn preflight(config: &std::path::Path, users: &std::path::Path, json: bool) -> Result<(), String> {
    use scim_operator::preflight;
    let cfg = ServeConfig::load(config).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    let z = cfg.zitadel.ok_or_else(|| {
        format!("{} has no zitadel section; preflight checks a ZITADEL organisation", config.display())
    })?;
    let entra = preflight::read_export(users).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let results = rt.block_on(async {
        let client = scim_operator::zitadel::client::Client::new(&z).map_err(|e| e.to_string())?;
        let known = preflight::gather(&client, &z, &entra).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(preflight::classify(&entra, &known))
    })?;
    if json {
        let out: Vec<serde_json::Value> = results
            .iter()
            .map(|(u, v)| serde_json::json!({"userPrincipalName": u.user_principal_name, "mail": u.mail, "objectId": u.object_id, "verdict": v}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    } else {
        print!("{}", preflight::render(&results));
    }
    let conflicts = results.iter().filter(|(_, v)| v.is_conflict()).count();
    if conflicts > 0 {
        return Err(format!("{conflicts} conflicts: resolve them in ZITADEL before the first provisioning cycle"));
    }
    Ok(())
}

fn render(
    file: &std::path::Path,
    image: String,
    zitadel_url: String,
    operator_namespace: String,
) -> Result<(), String> {
    use scim_operator::operator::build::{self, CredentialRef, KeyMaterial, TenantDefaults};
    use scim_operator::operator::crd::ScimTenant;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut tenant: ScimTenant =
        serde_yaml::from_str(&text).map_err(|e| format!("{} is not a ScimTenant: {e}", file.display()))?;
    if tenant.metadata.namespace.is_none() {
        tenant.metadata.namespace = Some("default".into());
    }
    // Owner references need a uid; the API server assigns the real one.
    tenant.metadata.uid.get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    let keys: Vec<KeyMaterial> = tenant
        .spec
        .keys
        .iter()
        .map(|k| KeyMaterial {
            name: k.name.clone(),
            token: format!("placeholder-{}", k.name),
            created_at: "1970-01-01T00:00:00Z".into(),
            expires_at: None,
            expired: false,
            rotated_for: None,
        })
        .collect();
    let cred = CredentialRef {
        secret_name: build::credential_secret_name(&tenant),
        key: "key.json".into(),
        is_key_file: true,
    };
    let mut settings = TenantDefaults { image, zitadel_url, ..Default::default() };
    settings.network_policy.admin_from_namespaces = vec![operator_namespace];
    // Self-service: the credential is known only at reconcile time.
    let self_service = tenant.spec.self_service.as_ref().filter(|s| s.enabled);
    let introspection = self_service.map(|s| build::IntrospectionMount {
        secret_name: s
            .introspection_secret_ref
            .as_ref()
            .map_or_else(|| build::introspection_secret_name(&tenant), |r| r.name.clone()),
        client_id: "<client id of the API application>".into(),
        is_key_file: true,
        version: "rendered".into(),
    });
    let d = build::build(&tenant, &settings, &keys, &cred, introspection.as_ref());
    let mut docs: Vec<String> = Vec::new();
    let mut push = |v: Result<String, serde_yaml::Error>| v.map(|y| docs.push(y)).map_err(|e| e.to_string());
    for s in &d.key_secrets {
        push(serde_yaml::to_string(&with_kind(s, "v1", "Secret")))?;
    }
    push(serde_yaml::to_string(&with_kind(&d.hash_secret, "v1", "Secret")))?;
    if tenant.spec.zitadel.service_user.as_ref().is_none_or(|s| s.existing_secret_ref.is_none()) {
        // The managed machine user's key, issued by ZITADEL at reconcile time.
        let placeholder = BTreeMap::from([(
            "key.json".to_string(),
            k8s_openapi::ByteString(b"<machine key issued by ZITADEL when the tenant is reconciled>".to_vec()),
        )]);
        push(serde_yaml::to_string(&with_kind(&build::credential_secret(&tenant, &placeholder), "v1", "Secret")))?;
    }
    if self_service.is_some_and(|s| s.introspection_secret_ref.is_none()) {
        let placeholder = BTreeMap::from([(
            "key.json".to_string(),
            k8s_openapi::ByteString(b"<API application key issued by ZITADEL when the tenant is reconciled>".to_vec()),
        )]);
        push(serde_yaml::to_string(&with_kind(&build::introspection_secret(&tenant, &placeholder), "v1", "Secret")))?;
    }
    push(serde_yaml::to_string(&with_kind(&d.config, "v1", "ConfigMap")))?;
    push(serde_yaml::to_string(&with_kind(&d.pvc, "v1", "PersistentVolumeClaim")))?;
    push(serde_yaml::to_string(&with_kind(&d.deployment, "apps/v1", "Deployment")))?;
    push(serde_yaml::to_string(&with_kind(&d.service, "v1", "Service")))?;
    if let Some(i) = &d.ingress {
        push(serde_yaml::to_string(&with_kind(i, "networking.k8s.io/v1", "Ingress")))?;
    }
    if let Some(p) = &d.network_policy {
        push(serde_yaml::to_string(&with_kind(p, "networking.k8s.io/v1", "NetworkPolicy")))?;
    }
    print!("---\n{}", docs.join("---\n"));
    Ok(())
}

fn with_kind<T: serde::Serialize>(obj: &T, api_version: &str, kind: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), api_version.into());
        o.insert("kind".into(), kind.into());
    }
    v
}

fn controller(a: ControllerArgs) -> Result<(), String> {
    use scim_operator::operator::{build, controller::ControllerConfig, leader::LeaseConfig, run, validate};
    let resync = validate::parse_duration(&a.resync)
        .ok_or_else(|| format!("--resync '{}' is not a duration like 10m or 1h", a.resync))?;
    if !(a.zitadel_url.starts_with("https://") || a.zitadel_url.starts_with("http://")) {
        return Err(format!("--zitadel-url '{}' must start with https:// (or http:// in-cluster)", a.zitadel_url));
    }
    let settings = build::TenantDefaults {
        image: a.server_image,
        zitadel_url: a.zitadel_url,
        zitadel_instance_host: a.zitadel_instance_host.filter(|h| !h.is_empty()),
        image_pull_secrets: a
            .server_image_pull_secrets
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        // POD_NAMESPACE: the operator's own namespace, which reads the tenants' /status.
        network_policy: a.network_policy.defaults(&a.lease_namespace)?,
    };
    let mut config = ControllerConfig::new(settings, a.zitadel_credential_file);
    config.watch_namespaces =
        a.watch_namespaces.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    config.resync = resync;
    config.status_url_template = a.status_url_template;
    config.instance = a.identity.clone();
    if a.zitadel_max_requests_per_second.is_nan() || a.zitadel_max_requests_per_second <= 0.0 {
        return Err("--zitadel-max-requests-per-second must be above 0".into());
    }
    config.zitadel_rate = Some(a.zitadel_max_requests_per_second);
    if !(a.zitadel_budget >= 0.0 && a.zitadel_budget.is_finite()) {
        return Err("--zitadel-budget must be 0 (off) or a number of requests per second".into());
    }
    config.zitadel_budget = (a.zitadel_budget > 0.0).then_some(a.zitadel_budget);
    config.budget_poll = validate::parse_duration(&a.zitadel_budget_poll)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--zitadel-budget-poll '{}' is not a duration like 5s", a.zitadel_budget_poll))?;
    let lease = a.leader_election.then(|| LeaseConfig {
        name: a.lease_name,
        namespace: a.lease_namespace,
        identity: a.identity,
        duration: std::time::Duration::from_secs(15),
        renew_every: std::time::Duration::from_secs(2),
    });
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(run::run(run::RunOptions { config, lease }, &a.admin_listen)).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing();
            serve(args)
        }
        Command::Preflight { config, users, json } => preflight(&config, &users, json),
        Command::Crd => scim_operator::operator::crd::crd_yaml().map(|y| print!("{y}")).map_err(|e| e.to_string()),
        Command::Render { file, image, zitadel_url, operator_namespace } => {
            render(&file, image, zitadel_url, operator_namespace)
        }
        Command::Controller(args) => {
            init_tracing();
            controller(*args)
        }
        Command::Key { command: KeyCommand::Generate { name } } => {
            let token = keys::generate_token();
            println!("Key (paste into Entra as \"Secret token\"; it is not stored anywhere): {token}");
            println!("Add this line under 'keys:' in the keys file:");
            println!("{}", keys::keys_file_line(&name, &token));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
