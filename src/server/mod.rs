//! The SCIM server: axum routes under `/scim/v2`, bearer-key auth, request
//! metrics, and the admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DurabilityConfig, ServeConfig};
use crate::provisioning::Provisioning;
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceKind;
use crate::store::sqlite::{Durability, SqliteStore};
use crate::store::{Store, StoreError, now_ms};
use crate::zitadel::config::ZitadelConfig;
use crate::zitadel::projector::Projector;

pub mod auth;
pub mod http;
pub mod metrics;
pub mod resources;

use auth::{DevKey, KeyError, KeyHash, KeyRing};
use http::ApiError;
use metrics::{ServerMetrics, StateSnapshot, ZitadelSnapshot};

pub const BASE_PATH: &str = "/scim/v2";
/// How often the keys file is re-read; a removed key stops working within this.
pub const KEYS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

pub struct AppState {
    /// Reads, readiness and status; every write goes through `provisioning`.
    pub store: Arc<dyn Store>,
    pub provisioning: Provisioning,
    /// Set when ZITADEL is configured, for its health and backlog on the
    /// admin port.
    pub projector: Option<Arc<Projector>>,
    pub base_url: String,
    pub max_body: usize,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<ServerMetrics>,
}

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
}

/// Effective settings: the config file with flags applied.
#[derive(Debug, Clone)]
pub struct Settings {
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
}

impl Settings {
    pub fn from_config(c: ServeConfig, env_token: Option<String>) -> Self {
        Settings {
            listen: c.listen.unwrap_or_else(|| DEFAULT_LISTEN.into()),
            admin_listen: c.admin_listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.into()),
            data_dir: c.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            keys_file: c.keys_file,
            public_url: c.public_url,
            durability: c.durability.unwrap_or_default(),
            max_body: c.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
            env_token: env_token.filter(|t| !t.is_empty()),
            zitadel: c.zitadel,
        }
    }
}

fn scim_error(e: ScimError) -> Response {
    ApiError(e).into_response()
}

async fn not_found(OriginalUri(uri): OriginalUri) -> Response {
    scim_error(ScimError::not_found(format!(
        "no SCIM endpoint at {}; this server serves {BASE_PATH}/Users, /Groups, /ServiceProviderConfig, /ResourceTypes and /Schemas",
        uri.path()
    )))
}

async fn method_not_allowed(OriginalUri(uri): OriginalUri, req: Request) -> Response {
    scim_error(ScimError::new(405, None, format!("{} is not allowed on {}", req.method(), uri.path())))
}

async fn bulk_not_supported() -> Response {
    scim_error(ScimError::new(501, None, "bulk operations are not supported (see /ServiceProviderConfig)"))
}

/// Bearer-key check for every SCIM endpoint.
async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match token {
        None => scim_error(ScimError::unauthorized(
            "missing bearer token: send 'Authorization: Bearer <key>' with the key issued for this server",
        )),
        Some(t) => match st.keys.verify(t) {
            Some(_) => next.run(req).await,
            None => scim_error(ScimError::unauthorized(
                "the bearer token is not a valid key for this server (it may have been removed or rotated)",
            )),
        },
    }
}

async fn record_metrics(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(req.method());
    let resource = metrics::resource_of(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    st.metrics.record(resource, method, status, started.elapsed().as_secs_f64());
    tracing::debug!(%method, resource, status, "scim request");
    resp
}

type Routes = MethodRouter<Arc<AppState>>;

/// The collection, item and `.search` routes of one resource type.
fn resource_routes(kind: ResourceKind) -> (Routes, Routes, Routes) {
    let collection = get(move |State(st): State<Arc<AppState>>, RawQuery(q): RawQuery| async move {
        resources::list(&st, kind, q.as_deref()).await
    })
    .post(move |State(st): State<Arc<AppState>>, req: Request| async move { resources::create(&st, kind, req).await })
    .fallback(method_not_allowed);
    let item = get(move |State(st): State<Arc<AppState>>, Path(id): Path<String>, req: Request| async move {
        resources::get(&st, kind, &id, req).await
    })
    .put(move |State(st): State<Arc<AppState>>, Path(id): Path<String>, req: Request| async move {
        resources::replace(&st, kind, &id, req).await
    })
    .patch(move |State(st): State<Arc<AppState>>, Path(id): Path<String>, req: Request| async move {
        resources::patch(&st, kind, &id, req).await
    })
    .delete(move |State(st): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap| async move {
        resources::delete(&st, kind, &id, &headers).await
    })
    .fallback(method_not_allowed);
    let search = post(move |State(st): State<Arc<AppState>>, req: Request| async move {
        let (parts, body) = req.into_parts();
        resources::search(&st, Some(kind), &parts.headers, body).await
    })
    .fallback(method_not_allowed);
    (collection, item, search)
}

/// The SCIM router (mounted at `/scim/v2`).
pub fn scim_router(state: Arc<AppState>) -> Router {
    let (users, user, users_search) = resource_routes(ResourceKind::User);
    let (groups, group, groups_search) = resource_routes(ResourceKind::Group);
    let scim = Router::new()
        .route("/Users", users)
        .route("/Users/.search", users_search)
        .route("/Users/{id}", user)
        .route("/Groups", groups)
        .route("/Groups/.search", groups_search)
        .route("/Groups/{id}", group)
        .route(
            "/.search",
            post(|State(st): State<Arc<AppState>>, req: Request| async move {
                let (parts, body) = req.into_parts();
                resources::search(&st, None, &parts.headers, body).await
            })
            .fallback(method_not_allowed),
        )
        .route("/ServiceProviderConfig", get(resources::service_provider_config).fallback(method_not_allowed))
        .route("/ResourceTypes", get(resources::resource_types).fallback(method_not_allowed))
        .route("/ResourceTypes/{id}", get(resources::resource_type).fallback(method_not_allowed))
        .route("/Schemas", get(resources::schemas).fallback(method_not_allowed))
        .route("/Schemas/{id}", get(resources::schema).fallback(method_not_allowed))
        .route("/Bulk", any(bulk_not_supported))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .nest(BASE_PATH, scim)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The admin router: health, readiness, metrics and status.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(|State(st): State<Arc<AppState>>| async move {
                if let Err(e) = st.store.counts().await {
                    return (StatusCode::SERVICE_UNAVAILABLE, format!("store not ready: {e}\n")).into_response();
                }
                if let Some(p) = &st.projector {
                    let h = p.health();
                    if !h.reachable {
                        let why = h.last_error.unwrap_or_else(|| "not checked yet".into());
                        return (StatusCode::SERVICE_UNAVAILABLE, format!("ZITADEL not reachable: {why}\n"))
                            .into_response();
                    }
                }
                (StatusCode::OK, "ready\n").into_response()
            }),
        )
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

async fn status(State(st): State<Arc<AppState>>) -> Response {
    let counts = match st.store.counts().await {
        Ok(c) => c,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let ms_to_time = |ms: u64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(crate::scim::resource::timestamp)
    };
    let last = st.metrics.last_request_ms().and_then(|ms| u64::try_from(ms).ok()).and_then(ms_to_time);
    let (zitadel, projection) = match &st.projector {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(p) => {
            let h = p.health();
            let o = st.store.outbox_stats().await.unwrap_or_default();
            (
                json!({
                    "reachable": h.reachable,
                    "lastError": h.last_error,
                    "lastErrorTime": h.last_error_ms.and_then(ms_to_time),
                    "lastSuccessTime": h.last_success_ms.and_then(ms_to_time),
                    "requests": p.client().calls(),
                }),
                json!({
                    "pendingOperations": o.pending,
                    "failingOperations": o.failing,
                    "oldestPendingAgeSeconds": o.oldest_enqueued_ms.map(|t| now_ms().saturating_sub(t) / 1000),
                    "lastError": o.last_error,
                }),
            )
        }
    };
    axum::Json(json!({
        "zitadel": zitadel,
        "projection": projection,
        "users": counts.users,
        "groups": counts.groups,
        "requests": st.metrics.total(),
        "failedRequests": st.metrics.failed(),
        "lastRequestTime": last,
        "keys": st.keys.len(),
        "keysReloadFailures": st.keys.reload_failures(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let state = scrape(&st).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.metrics.encode(&state))
        .into_response()
}

/// The store's and ZITADEL's state for one scrape. A store that cannot
/// answer reports zeros rather than failing the scrape.
async fn scrape(st: &AppState) -> StateSnapshot {
    let resources = st.store.counts().await.unwrap_or_default();
    let zitadel = match &st.projector {
        None => None,
        Some(p) => {
            let o = st.store.outbox_stats().await.unwrap_or_default();
            Some(ZitadelSnapshot {
                pending: o.pending,
                failing: o.failing,
                oldest_pending_seconds: o
                    .oldest_enqueued_ms
                    .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
                    .unwrap_or(0.0),
                requests: p.client().calls(),
                reachable: p.health().reachable,
            })
        }
    };
    StateSnapshot { resources, writer: st.store.writer_stats(), zitadel }
}

async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.into(), source })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs the server until SIGINT/SIGTERM. Prints the SCIM base URL (and, for a
/// newly created standalone key, the key) on stdout.
pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|source| ServeError::DataDir { path: settings.data_dir.clone(), source })?;

    let mut fixed: Vec<KeyHash> = Vec::new();
    if let Some(t) = &settings.env_token {
        fixed.push(KeyHash { name: "SCIM_TOKEN".into(), sha256: auth::hash_token(t) });
    }
    let file_keys = match &settings.keys_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| KeyError::Read { path: p.clone(), source })?;
            auth::parse_keys_file(p, &text)?
        }
        None => Vec::new(),
    };
    let mut key_notice = None;
    if settings.keys_file.is_none() && settings.env_token.is_none() {
        match auth::load_or_create_dev_key(&settings.data_dir)? {
            DevKey::Created { token, hash, path } => {
                fixed.push(hash);
                key_notice =
                    Some(format!("Bearer key (shown once, only its hash is kept in {}): {token}", path.display()));
            }
            DevKey::Existing { hash, path } => {
                fixed.push(hash);
                key_notice = Some(format!(
                    "Bearer key: the one printed on first start (its hash is in {}); delete that file and restart for a new one",
                    path.display()
                ));
            }
        }
    }
    let keys = Arc::new(KeyRing::new(fixed, file_keys));
    if let Some(p) = &settings.keys_file {
        auth::spawn_reloader(keys.clone(), p.clone(), KEYS_RELOAD_INTERVAL);
    }

    let durability = match settings.durability {
        DurabilityConfig::Full => Durability::Full,
        DurabilityConfig::Process => Durability::Normal,
    };
    let dir = settings.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, durability))
        .await
        .map_err(|e| StoreError::Backend(format!("store open task failed: {e}")))??;
    let store = Arc::new(store);

    let scim_listener = bind(&settings.listen).await?;
    let admin_listener = bind(&settings.admin_listen).await?;
    let scim_addr: SocketAddr = scim_listener.local_addr()?;
    let admin_addr: SocketAddr = admin_listener.local_addr()?;
    let base_url = settings
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{scim_addr}{BASE_PATH}"));

    let projector = match &settings.zitadel {
        Some(cfg) => {
            let client = crate::zitadel::client::Client::new(cfg)?;
            let store_dyn: Arc<dyn Store> = store.clone();
            Some(Projector::new(client, cfg.clone(), store_dyn))
        }
        None => None,
    };
    let state = Arc::new(AppState {
        provisioning: Provisioning::new(store.clone(), projector.clone()),
        projector: projector.clone(),
        store: store.clone(),
        base_url: base_url.clone(),
        max_body: settings.max_body,
        keys,
        metrics: Arc::new(ServerMetrics::new()),
    });

    println!("SCIM base URL: {base_url}");
    println!("Admin URL: http://{admin_addr}");
    if let Some(n) = key_notice {
        println!("{n}");
    }
    tracing::info!(%scim_addr, %admin_addr, data_dir = %settings.data_dir.display(), "scim server started");

    if let Some(p) = &projector {
        // Unreachable ZITADEL or rejected credentials are reported on
        // /readyz and /status, not a crash loop.
        let checker = Arc::clone(p);
        tokio::spawn(async move {
            loop {
                let ok = checker.check().await;
                if let Err(e) = &ok {
                    tracing::warn!(error = %e, "ZITADEL check failed");
                }
                tokio::time::sleep(if ok.is_ok() { Duration::from_secs(60) } else { Duration::from_secs(5) }).await;
            }
        });
        tokio::spawn(Arc::clone(p).run_outbox(shutdown_signal()));
        println!("ZITADEL: {} (organisation {})", p.config().url, p.config().organization_id);
    }
    let scim = axum::serve(scim_listener, scim_router(state.clone())).with_graceful_shutdown(shutdown_signal());
    let admin = axum::serve(admin_listener, admin_router(state)).with_graceful_shutdown(shutdown_signal());
    let (a, b) = tokio::join!(async { scim.await }, async { admin.await });
    a?;
    b?;
    store.close();
    tracing::info!("scim server stopped");
    Ok(())
}
