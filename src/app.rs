//! The composition root of `serve`: opens the store, sets up the bearer
//! keys, builds the ZITADEL projector and the provisioning service, starts the
//! background tasks, and serves the SCIM and admin ports until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{
    ConnectionsConfig, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DurabilityConfig, SelfServiceConfig,
    ServeConfig,
};
use crate::keys::{self, KeyError, KeyHash};
use crate::provisioning::Provisioning;
use crate::server::auth::{self, DevKey, KeyRing};
use crate::server::listener::{self, ConnLimits};
use crate::server::metrics::ServerMetrics;
use crate::server::self_service::SelfService;
use crate::server::self_service::access::{Access, Rules};
use crate::server::self_service::keys::KeyManager;
use crate::server::{AppState, BASE_PATH, admin_router, scim_router};
use crate::store::Durability;
use crate::store::{Store, StoreError};
use crate::zitadel::config::ZitadelConfig;
use crate::zitadel::introspection::Introspector;
use crate::zitadel::projector::Projector;

/// How often the keys file is re-read; a removed key stops working within this.
pub(crate) const KEYS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How often a reachable ZITADEL is checked again.
const ZITADEL_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How soon an unreachable ZITADEL is checked again.
const ZITADEL_RECHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source} (choose another address with --listen / --admin-listen)")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot create the data directory {path}: {source} (choose another with --data-dir)")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
    #[error("zitadel: {0}")]
    Zitadel(#[from] crate::zitadel::error::ZitadelError),
    #[error("selfService: {0}")]
    SelfService(String),
}

/// Effective settings of `serve`: the config file with flags applied.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: String,
    pub admin_listen: String,
    pub data_dir: PathBuf,
    pub keys_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub durability: DurabilityConfig,
    pub max_body: usize,
    /// A plaintext key from the environment (SCIM_TOKEN), for local use.
    pub env_token: Option<String>,
    pub zitadel: Option<ZitadelConfig>,
    /// Connection timeouts and limits; unset fields take the defaults below.
    pub connections: ConnectionsConfig,
    /// The self-service key API (needs `zitadel`).
    pub self_service: Option<SelfServiceConfig>,
}

/// Defaults of `connections` (documented in README, "Running `serve`").
pub(crate) mod conn_defaults {
    use std::time::Duration;
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_CONNECTIONS: usize = 512;
    pub const ADMIN_MAX_CONNECTIONS: usize = 64;
    pub const MAX_CONCURRENT_REQUESTS: usize = 64;
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    pub const DRAIN: Duration = Duration::from_secs(10);
}

impl ServeSettings {
    pub fn from_config(c: ServeConfig, env_token: Option<String>) -> Self {
        ServeSettings {
            listen: c.listen.unwrap_or_else(|| DEFAULT_LISTEN.into()),
            admin_listen: c.admin_listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.into()),
            data_dir: c.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            keys_file: c.keys_file,
            public_url: c.public_url,
            durability: c.durability.unwrap_or_default(),
            max_body: c.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
            env_token: env_token.filter(|t| !t.is_empty()),
            zitadel: c.zitadel,
            connections: c.connections.unwrap_or_default(),
            self_service: c.self_service,
        }
    }

    /// The limits of the SCIM port and of the admin port.
    fn conn_limits(&self) -> (ConnLimits, ConnLimits) {
        use conn_defaults as d;
        let c = &self.connections;
        let secs = |v: Option<u64>, default: Duration| v.map(Duration::from_secs).unwrap_or(default);
        let scim = ConnLimits {
            header_timeout: secs(c.header_read_timeout_seconds, d::HEADER_READ_TIMEOUT),
            idle_timeout: secs(c.idle_timeout_seconds, d::IDLE_TIMEOUT),
            body_timeout: secs(c.body_timeout_seconds, d::BODY_TIMEOUT),
            write_timeout: secs(c.write_timeout_seconds, d::WRITE_TIMEOUT),
            max_connections: c.max_connections.unwrap_or(d::MAX_CONNECTIONS),
            max_concurrent_requests: Some(c.max_concurrent_requests.unwrap_or(d::MAX_CONCURRENT_REQUESTS)),
            max_header_bytes: c.max_header_bytes.unwrap_or(d::MAX_HEADER_BYTES),
            drain: secs(c.drain_seconds, d::DRAIN),
        };
        let admin = ConnLimits {
            max_connections: c.admin_max_connections.unwrap_or(d::ADMIN_MAX_CONNECTIONS),
            max_concurrent_requests: None,
            ..scim
        };
        (scim, admin)
    }
}

/// The key ring and what to tell the operator about a standalone key.
struct Keys {
    ring: Arc<KeyRing>,
    notice: Option<String>,
}

/// The SCIM and admin listeners, bound before anything is announced so a
/// taken port fails the start.
struct Listeners {
    scim: TcpListener,
    admin: TcpListener,
    scim_addr: SocketAddr,
    admin_addr: SocketAddr,
}

/// Runs the server until SIGINT/SIGTERM. Prints the SCIM base URL (and, for a
/// newly created standalone key, the key) on stdout.
pub async fn run(settings: ServeSettings) -> Result<(), ServeError> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|source| ServeError::DataDir { path: settings.data_dir.clone(), source })?;
    let keys = key_ring(&settings)?;
    let store = open_store(&settings).await?;
    let listeners = Listeners::bind(&settings).await?;
    let stop_rx = shutdown_channel()?;
    let base_url = settings
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{}{BASE_PATH}", listeners.scim_addr));

    let projector = match &settings.zitadel {
        Some(cfg) => Some(Projector::new(crate::zitadel::client::Client::new(cfg)?, cfg.clone(), store.clone())),
        None => None,
    };
    let metrics = Arc::new(ServerMetrics::new());
    let self_service =
        self_service(&settings, projector.as_ref(), &store, &keys.ring, &metrics, stop_rx.clone()).await?;
    let state = Arc::new(AppState {
        store: store.clone(),
        provisioning: Provisioning::new(store.clone(), projector.clone()),
        zitadel: projector.clone(),
        base_url: base_url.clone(),
        max_body: settings.max_body,
        keys: keys.ring,
        metrics: metrics.clone(),
        self_service: self_service.clone(),
    });

    println!("SCIM base URL: {base_url}");
    println!("Admin URL: http://{}", listeners.admin_addr);
    if let Some(n) = keys.notice {
        println!("{n}");
    }
    tracing::info!(
        scim_addr = %listeners.scim_addr,
        admin_addr = %listeners.admin_addr,
        data_dir = %settings.data_dir.display(),
        "scim server started"
    );
    if let Some(p) = &projector {
        spawn_zitadel_tasks(p, stop_rx.clone());
        println!("ZITADEL: {} (organisation {})", p.config().url, p.config().organization_id);
    }

    let (scim_limits, admin_limits) = settings.conn_limits();
    fit_file_limit(&scim_limits, &admin_limits);
    let scim = listener::Listener {
        name: "scim",
        listener: listeners.scim,
        router: scim_router(state.clone()),
        limits: scim_limits,
        metrics: metrics.clone(),
    };
    let admin = listener::Listener {
        name: "admin",
        listener: listeners.admin,
        router: admin_router(state),
        limits: admin_limits,
        metrics,
    };
    tokio::join!(listener::serve(scim, stop_rx.clone()), listener::serve(admin, stop_rx));
    if let Some(s) = &self_service {
        s.keys.flush_last_used().await;
    }
    store.close();
    tracing::info!("scim server stopped");
    Ok(())
}

/// How often the self-service keys' last use is written to the store.
const LAST_USED_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// The self-service key API, when configured: its introspection client, the
/// stored keys loaded into the ring, and the task that stores their last use.
async fn self_service(
    settings: &ServeSettings,
    projector: Option<&Arc<Projector>>,
    store: &Arc<dyn Store>,
    ring: &Arc<KeyRing>,
    metrics: &Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Arc<SelfService>>, ServeError> {
    let Some(cfg) = &settings.self_service else { return Ok(None) };
    let (Some(projector), Some(z)) = (projector, &settings.zitadel) else {
        return Err(ServeError::SelfService("selfService needs the zitadel: section".into()));
    };
    let introspector = Introspector::new(z, &cfg.introspection).map_err(|e| ServeError::SelfService(e.to_string()))?;
    let rules = Rules {
        organization_id: z.organization_id.clone(),
        project_id: z.project_id.clone(),
        admin_role: cfg.admin_role().to_string(),
    };
    let access = Access::new(rules, introspector, Arc::clone(projector));
    let keys = Arc::new(KeyManager::start(store.clone(), ring.clone(), metrics.clone(), cfg.max_keys()).await?);
    let flusher = keys.spawn_last_used_flusher(LAST_USED_FLUSH_INTERVAL);
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        flusher.abort();
    });
    println!("Self-service keys: POST {{SCIM host}}/graphql and /scope-management/graphql (role {})", cfg.admin_role());
    Ok(Some(Arc::new(SelfService::new(access, keys))))
}

/// The fixed keys (SCIM_TOKEN, or a standalone key kept in the data
/// directory when no keys file is configured) and the keys file, reloaded
/// while the server runs.
fn key_ring(settings: &ServeSettings) -> Result<Keys, ServeError> {
    let mut fixed: Vec<KeyHash> = Vec::new();
    if let Some(t) = &settings.env_token {
        fixed.push(KeyHash { name: "SCIM_TOKEN".into(), sha256: keys::hash_token(t) });
    }
    let file_keys = match &settings.keys_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| KeyError::Read { path: p.clone(), source })?;
            match keys::parse_keys_file(p, &text) {
                // Nothing to keep yet: start without keys from the file, and
                // take its keys as soon as it has some.
                Err(e @ KeyError::Empty { .. }) => {
                    tracing::warn!(error = %e, "starting without keys from the keys file");
                    Vec::new()
                }
                other => other?,
            }
        }
        None => Vec::new(),
    };
    let mut notice = None;
    if settings.keys_file.is_none() && settings.env_token.is_none() {
        match auth::load_or_create_dev_key(&settings.data_dir)? {
            DevKey::Created { token, hash, path } => {
                fixed.push(hash);
                notice = Some(format!("Bearer key (shown once, only its hash is kept in {}): {token}", path.display()));
            }
            DevKey::Existing { hash, path } => {
                fixed.push(hash);
                notice = Some(format!(
                    "Bearer key: the one printed on first start (its hash is in {}); delete that file and restart for a new one",
                    path.display()
                ));
            }
        }
    }
    let ring = Arc::new(KeyRing::new(fixed, file_keys));
    if let Some(p) = &settings.keys_file {
        auth::spawn_reloader(ring.clone(), p.clone(), KEYS_RELOAD_INTERVAL);
    }
    Ok(Keys { ring, notice })
}

async fn open_store(settings: &ServeSettings) -> Result<Arc<dyn Store>, ServeError> {
    let durability = match settings.durability {
        DurabilityConfig::Full => Durability::Full,
        DurabilityConfig::Process => Durability::Normal,
    };
    let dir = settings.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || crate::store::open_embedded(&dir, durability))
        .await
        .map_err(|e| StoreError::Backend(format!("store open task failed: {e}")))??;
    Ok(store)
}

impl Listeners {
    async fn bind(settings: &ServeSettings) -> Result<Self, ServeError> {
        let scim = bind(&settings.listen).await?;
        let admin = bind(&settings.admin_listen).await?;
        let scim_addr = scim.local_addr()?;
        let admin_addr = admin.local_addr()?;
        Ok(Listeners { scim, admin, scim_addr, admin_addr })
    }
}

async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.into(), source })
}

/// The connectivity check behind `/readyz` and `/status`, and the outbox
/// worker. Unreachable ZITADEL or rejected credentials are reported there,
/// not turned into a crash loop.
fn spawn_zitadel_tasks(projector: &Arc<Projector>, stop: watch::Receiver<bool>) {
    let checker = Arc::clone(projector);
    tokio::spawn(async move {
        loop {
            let ok = checker.check().await;
            if let Err(e) = &ok {
                tracing::warn!(error = %e, "ZITADEL check failed");
            }
            tokio::time::sleep(if ok.is_ok() { ZITADEL_CHECK_INTERVAL } else { ZITADEL_RECHECK_INTERVAL }).await;
        }
    });
    tokio::spawn(Arc::clone(projector).run_outbox(stopped(stop)));
    if let Some(path) = &projector.config().max_requests_per_second_file {
        let limiter = projector.client().limiter();
        match crate::zitadel::rate::read_rate(path) {
            Some(rate) => limiter.set_rate(rate),
            None => {
                tracing::warn!(path = %path.display(), rate = limiter.rate(), "the ZITADEL rate file is missing or unusable; starting at maxRequestsPerSecond")
            }
        }
        crate::zitadel::rate::spawn_rate_reloader(limiter.clone(), path.clone(), crate::zitadel::rate::RELOAD_INTERVAL);
    }
}

/// Raises the soft limit on open files to the hard limit, and warns when the
/// connection caps do not fit below it (accepting would then fail before the
/// cap is reached, and the admin port with it).
fn fit_file_limit(scim: &ConnLimits, admin: &ConnLimits) {
    /// Files the server needs besides connections: store, WAL, logs, clients.
    const RESERVE: u64 = 64;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let needed = (scim.max_connections + admin.max_connections) as u64 + RESERVE;
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            needed,
            "the open-file limit is below connections.maxConnections + adminMaxConnections + {RESERVE}; lower them or raise the limit"
        );
    }
}

/// Registers SIGINT and SIGTERM now, before the URLs are printed, so a
/// signal sent as soon as the server is up is not lost; the returned channel
/// turns true at the first of them.
fn shutdown_channel() -> Result<watch::Receiver<bool>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::info!("shutting down: draining open requests");
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
