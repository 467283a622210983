//! The SCIM server's HTTP layer: axum routes under `/scim/v2`, bearer-key
//! auth, request metrics, and the admin port's routes.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, OriginalUri, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use serde_json::{Value, json};

use crate::provisioning::Provisioning;
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceKind;
use crate::store::{Store, now_ms};
use crate::zitadel::projector::Projector;

pub(crate) mod auth;
mod conn_body;
mod conn_io;
pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod resources;
pub(crate) mod self_service;

use auth::KeyRing;
use http::ApiError;
use metrics::{ServerMetrics, StateSnapshot, ZitadelSnapshot};

pub(crate) const BASE_PATH: &str = "/scim/v2";

/// What the handlers share. Built by the composition root (`crate::app`).
pub(crate) struct AppState {
    /// Reads, readiness and status; every write goes through `provisioning`.
    pub store: Arc<dyn Store>,
    pub provisioning: Provisioning,
    /// Set when ZITADEL is configured, for its health and backlog on the
    /// admin port.
    pub zitadel: Option<Arc<Projector>>,
    pub base_url: String,
    pub max_body: usize,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<ServerMetrics>,
    /// The self-service key API, when `selfService` is configured.
    pub self_service: Option<Arc<self_service::SelfService>>,
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
        Some(t) if st.keys.verify(t) => next.run(req).await,
        Some(_) => scim_error(ScimError::unauthorized(
            "the bearer token is not a valid key for this server (it may have been removed or rotated)",
        )),
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

/// The `{id}` of a resource path. A path that does not decode (`%ff` is not
/// UTF-8) is a SCIM 400, not axum's plain-text rejection.
struct Path<T>(T);

impl<S: Send + Sync> FromRequestParts<S> for Path<String> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(Path(id)),
            Err(e) => Err(path_rejection(&e)),
        }
    }
}

fn path_rejection(e: &PathRejection) -> Response {
    scim_error(ScimError::new(
        400,
        None,
        format!("the resource id in the path is not valid (percent-encoded UTF-8 is expected): {e}"),
    ))
}

type Routes = MethodRouter<Arc<AppState>>;

/// The routes of one resource type.
struct ResourceRoutes {
    /// `/Users`: list and create.
    collection: Routes,
    /// `/Users/{id}`: read, replace, patch, delete.
    item: Routes,
    /// `/Users/.search`.
    search: Routes,
}

fn resource_routes(kind: ResourceKind) -> ResourceRoutes {
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
    ResourceRoutes { collection, item, search }
}

/// The SCIM router (mounted at `/scim/v2`).
pub(crate) fn scim_router(state: Arc<AppState>) -> Router {
    let users = resource_routes(ResourceKind::User);
    let groups = resource_routes(ResourceKind::Group);
    let scim = Router::new()
        .route("/Users", users.collection)
        .route("/Users/.search", users.search)
        .route("/Users/{id}", users.item)
        .route("/Groups", groups.collection)
        .route("/Groups/.search", groups.search)
        .route("/Groups/{id}", groups.item)
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
        .route("/graphql", post(self_service::handle).fallback(method_not_allowed))
        .route("/scope-management/graphql", post(self_service::handle).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The admin router: health, readiness, metrics and status.
pub(crate) fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(|State(st): State<Arc<AppState>>| async move {
                if let Err(e) = st.store.counts().await {
                    return (StatusCode::SERVICE_UNAVAILABLE, format!("store not ready: {e}\n")).into_response();
                }
                if let Some(f) = st.store.write_failure() {
                    let why = if f.no_space { "the disk holding the data dir is full" } else { "storage failure" };
                    return (StatusCode::SERVICE_UNAVAILABLE, format!("store cannot write ({why}): {}\n", f.error))
                        .into_response();
                }
                if let Some(p) = &st.zitadel {
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

/// Unix milliseconds as a SCIM timestamp.
pub(crate) fn ms_to_time(ms: u64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .map(crate::scim::resource::timestamp)
}

async fn status(State(st): State<Arc<AppState>>) -> Response {
    let counts = match st.store.counts().await {
        Ok(c) => c,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let last = st.metrics.last_request_ms().and_then(|ms| u64::try_from(ms).ok()).and_then(ms_to_time);
    let zitadel = match &st.zitadel {
        None => ZitadelStatus { connection: Value::Null, projection: Value::Null },
        Some(p) => zitadel_status(st.store.as_ref(), p).await,
    };
    axum::Json(json!({
        "zitadel": zitadel.connection,
        "projection": zitadel.projection,
        "users": counts.users,
        "groups": counts.groups,
        "requests": st.metrics.total(),
        "failedRequests": st.metrics.failed(),
        "lastRequestTime": last,
        "store": store_status(st.store.as_ref()),
        "keys": st.keys.len(),
        "keysReloadFailures": st.keys.reload_failures(),
        "selfServiceKeys": st.self_service.as_ref().map(|s| s.status()),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `store` in `/status`: whether it can write, and if not since when and why.
fn store_status(store: &dyn Store) -> Value {
    match store.write_failure() {
        None => json!({ "writable": true }),
        Some(f) => json!({
            "writable": false,
            "diskFull": f.no_space,
            "since": ms_to_time(f.since_ms),
            "lastError": f.error,
        }),
    }
}

/// The ZITADEL sections of `/status`; both null when ZITADEL is not configured.
struct ZitadelStatus {
    /// `zitadel`: whether it answers, and its last error.
    connection: Value,
    /// `projection`: the outbox backlog.
    projection: Value,
}

async fn zitadel_status(store: &dyn Store, p: &Projector) -> ZitadelStatus {
    let h = p.health();
    let o = store.outbox_stats().await.unwrap_or_default();
    ZitadelStatus {
        connection: json!({
            "reachable": h.reachable,
            "lastError": h.last_error,
            "lastErrorTime": h.last_error_ms.and_then(ms_to_time),
            "lastSuccessTime": h.last_success_ms.and_then(ms_to_time),
            "requests": p.client().calls(),
            // The operator divides the cluster's ZITADEL budget by these.
            "rate": {
                "limit": p.client().limiter().effective_rate(),
                "waiting": p.client().limiter().waiting(),
                "busy": p.client().limiter().busy() || o.pending > 0,
                "reloadFailures": p.client().limiter().reload_failures(),
            },
        }),
        projection: json!({
            "pendingOperations": o.pending,
            "failingOperations": o.failing,
            "oldestPendingAgeSeconds": o.oldest_enqueued_ms.map(|t| now_ms().saturating_sub(t) / 1000),
            "lastError": o.last_error,
        }),
    }
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
    let zitadel = match &st.zitadel {
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
                rate_limit: p.client().limiter().effective_rate(),
            })
        }
    };
    StateSnapshot { resources, writer: st.store.writer_stats(), zitadel }
}
