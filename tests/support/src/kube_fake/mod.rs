//! An in-process fake Kubernetes API server, for running the real kube-runtime machinery
//! (Controller, watcher, finalizer, event Recorder, server-side apply) without a cluster.
//!
//! It serves the REST paths kube-client builds, over HTTP/1.1 on 127.0.0.1, with the
//! apiserver's semantics where kube depends on them: resourceVersions, watch history and
//! 410 Expired, no-op writes that emit nothing, the status subresource, finalizers and
//! owner-reference garbage collection. What it approximates is listed in README.md.
//!
//! Every mutating request is recorded (`writes()`), so tests can assert an operator makes
//! no writes once it has converged.

mod patch;
mod rbac;
mod select;
mod store;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use parking_lot::Mutex;
use serde_json::{Value, json};

use select::{FieldSelector, LabelSelector};
use store::{ApiError, Done, Filter, Gvr, Key, Managers, PatchType, State};

/// One mutating request, as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub method: String,
    /// `v1` or `group/version`.
    pub api_version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub field_manager: Option<String>,
    /// False for no-op writes (nothing stored, no event) and for failed requests.
    pub changed: bool,
    pub status: u16,
}

/// One request as an authorizer sees it: who, which verb, on what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// From the `x-fake-user` header (see `client_as`); empty for `client()`.
    pub user: String,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group, "" for core.
    pub group: String,
    /// `plural` or `plural/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    /// What RBAC decided (`enforce_rbac`); true when RBAC is not enforced.
    pub allowed: bool,
}

const USER_HEADER: &str = "x-fake-user";

#[derive(Debug, Clone)]
pub struct Options {
    /// Watch events kept for resuming watches; older resourceVersions get 410 Expired.
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { history: 50_000 }
    }
}

/// How often an idle watch sends a BOOKMARK (when the client allows them).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Shared {
    state: Mutex<State>,
    access: Mutex<Vec<Access>>,
    open_watches: AtomicUsize,
    enforce_rbac: AtomicBool,
}

pub struct KubeFake {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KubeFake {
    pub async fn start() -> KubeFake {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> KubeFake {
        Self::start_on("127.0.0.1:0", opts).await.expect("bind kube fake")
    }

    /// Serves on `addr` (e.g. `127.0.0.1:0`), for the fake run as a process
    /// (`examples/kube_fake.rs`).
    pub async fn start_on(addr: &str, opts: Options) -> std::io::Result<KubeFake> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts.history)),
            access: Mutex::new(Vec::new()),
            open_watches: AtomicUsize::new(0),
            enforce_rbac: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(KubeFake { shared, addr, stop: Some(stop) })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> kube::Client {
        self.client_as("")
    }

    /// A client whose requests are logged under `user` in `access()`, to
    /// check what a component does against the RBAC it ships with.
    pub fn client_as(&self, user: &str) -> kube::Client {
        let uri = self.url().parse().expect("kube fake URL");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        if !user.is_empty() {
            config.headers.push((
                axum::http::HeaderName::from_static(USER_HEADER),
                axum::http::HeaderValue::from_str(user).expect("a header-safe user name"),
            ));
        }
        kube::Client::try_from(config).expect("kube client for the fake")
    }

    /// From now on, requests of clients with a user (`client_as`) are allowed
    /// only as the stored RBAC objects allow them (see `rbac.rs`); denied ones
    /// get the apiserver's 403 and are logged with `allowed: false`.
    pub fn enforce_rbac(&self, on: bool) {
        self.shared.enforce_rbac.store(on, Ordering::SeqCst);
    }

    /// Every request with a route, in order (reads included).
    pub fn access(&self) -> Vec<Access> {
        self.shared.access.lock().clone()
    }

    pub fn writes(&self) -> Vec<Write> {
        self.shared.state.lock().writes.clone()
    }

    pub fn mark(&self) -> usize {
        self.shared.state.lock().writes.len()
    }

    pub fn writes_since(&self, mark: usize) -> Vec<Write> {
        self.shared.state.lock().writes.get(mark..).map(<[Write]>::to_vec).unwrap_or_default()
    }

    pub fn get(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let gvr = gvr_of(api_version, plural);
        let key: Key = (namespace.unwrap_or_default().to_string(), name.to_string());
        self.shared.state.lock().lookup(&gvr, &key).map(|s| (*s.obj).clone())
    }

    pub fn list(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let gvr = gvr_of(api_version, plural);
        let filter = Filter { ns: namespace.map(str::to_string), ..Filter::default() };
        self.shared.state.lock().snapshot(&gvr, &filter).into_iter().map(|o| (*o).clone()).collect()
    }

    pub fn set_deployments_ready(&self, ready: bool) {
        let mut st = self.shared.state.lock();
        st.deployments_ready = ready;
        st.simulate_all_deployments();
    }

    pub fn set_down(&self, down: bool) {
        let mut st = self.shared.state.lock();
        st.down = down;
        // Wakes every watch so it sees the outage and ends.
        st.notify.send_modify(|_| {});
    }

    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state.lock().rv
    }
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.shutdown = true;
        st.notify.send_modify(|_| {});
        drop(st);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn gvr_of(api_version: &str, plural: &str) -> Gvr {
    match api_version.split_once('/') {
        Some((g, v)) => Gvr::new(g, v, plural),
        None => Gvr::new("", api_version, plural),
    }
}

/// A parsed resource path.
struct Route {
    gvr: Gvr,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// The verb an authorizer would check for this request.
fn access_of(user: String, method: &Method, r: &Route, query: &HashMap<String, String>) -> Access {
    let verb = match (method.as_str(), r.name.is_some()) {
        ("GET", _) if is_true(query.get("watch")) => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => other,
    };
    let resource = match &r.sub {
        Some(sub) => format!("{}/{sub}", r.gvr.plural),
        None => r.gvr.plural.clone(),
    };
    Access { user, verb: verb.into(), group: r.gvr.group.clone(), resource, namespace: r.ns.clone(), allowed: true }
}

fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let own = |s: &&str| Some(s.to_string());
    let (ns, plural, name, sub) = match rest {
        // /api/v1/namespaces/{name}/status is the namespace's own subresource.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, "namespaces", own(name), own(sub))
        }
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            (own(ns), *plural, tail.first().and_then(own), tail.get(1).and_then(own))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            (None, *plural, tail.first().and_then(own), tail.get(1).and_then(own))
        }
        _ => return None,
    };
    Some(Route { gvr: Gvr::new(group, version, plural), ns, name, sub })
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn discovery(path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match segs.as_slice() {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-kubefake", "gitCommit": "", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        }),
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ["apis"] => {
            let groups: Vec<Value> = store::builtin_groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["api", v] | ["apis", _, v] => {
            let group = if segs[0] == "api" { "" } else { segs[1] };
            let resources = store::builtin_resources(group, v);
            if resources.is_empty() {
                return None;
            }
            let list: Vec<Value> = resources
                .into_iter()
                .flat_map(|(plural, kind, namespaced, status)| {
                    let verbs = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
                    let main = json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs});
                    let sub = status.then(|| {
                        json!({"name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]})
                    });
                    std::iter::once(main).chain(sub)
                })
                .collect();
            let gv = if group.is_empty() { v.to_string() } else { format!("{group}/{v}") };
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
        }
        _ => return None,
    })
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default();
    // kube's metadata-only calls (`Api<PartialObjectMeta<K>>`, metadata_watcher) ask for this.
    let as_meta = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    let user = req.headers().get(USER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading the request body: {e}"))),
    };
    let mutating = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let route = parse_route(&path);
    if let Some(r) = &route {
        let mut access = access_of(user, &method, r, &query);
        if !access.user.is_empty() && shared.enforce_rbac.load(Ordering::SeqCst) {
            let req = rbac::Request {
                user: &access.user,
                verb: &access.verb,
                group: &access.group,
                resource: &access.resource,
                namespace: access.namespace.as_deref(),
                name: r.name.as_deref(),
            };
            let mut st = shared.state.lock();
            if !rbac::allowed(&st, &req) {
                let e = rbac::forbidden(&req);
                if mutating {
                    st.writes.push(write_record(&method, r, r.name.clone(), &query, false, e.code));
                }
                access.allowed = false;
                drop(st);
                shared.access.lock().push(access);
                return error_response(&e);
            }
        }
        shared.access.lock().push(access);
    }

    {
        let mut st = shared.state.lock();
        if st.down {
            let e = ApiError::unavailable();
            if mutating && let Some(r) = &route {
                st.writes.push(write_record(&method, r, r.name.clone(), &query, false, e.code));
            }
            return error_response(&e);
        }
    }
    if method == Method::GET
        && let Some(v) = discovery(&path)
    {
        return json_response(200, &v);
    }
    let Some(route) = route else { return error_response(&ApiError::not_found_path()) };

    if method == Method::GET {
        return read(&shared, &route, &query, as_meta);
    }
    if !mutating {
        return error_response(&ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("the server does not allow this method on the requested resource ({method})"),
            details: None,
        });
    }
    let mut st = shared.state.lock();
    let (result, name) = write(&mut st, &method, &route, &query, &content_type, &body);
    let (code, changed) = match &result {
        Ok(d) => (d.code, d.changed),
        Err(e) => (e.code, false),
    };
    st.writes.push(write_record(&method, &route, name, &query, changed, code));
    drop(st);
    match result {
        Ok(d) if as_meta => json_response(d.code, &partial_metadata(&d.obj)),
        Ok(d) => json_response(d.code, &d.obj),
        Err(e) => error_response(&e),
    }
}

/// The `PartialObjectMetadata` (or `...List`) form of an object or list.
pub(crate) fn partial_metadata(v: &Value) -> Value {
    match v.get("items").and_then(Value::as_array) {
        Some(items) => json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        None => json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

fn write_record(
    method: &Method,
    route: &Route,
    name: Option<String>,
    query: &HashMap<String, String>,
    changed: bool,
    status: u16,
) -> Write {
    Write {
        method: method.to_string(),
        api_version: route.gvr.api_version(),
        plural: route.gvr.plural.clone(),
        namespace: route.ns.clone(),
        name,
        subresource: route.sub.clone(),
        field_manager: query.get("fieldManager").cloned(),
        changed,
        status,
    }
}

/// Resolves the resource and checks the path's scope against it.
fn resolve(st: &mut State, route: &Route, body_kind: Option<&str>) -> Result<store::ResInfo, ApiError> {
    let res = st
        .resolve(&route.gvr, route.ns.is_some(), route.name.is_some(), body_kind)
        .ok_or_else(ApiError::not_found_path)?;
    let scoped_ok = if res.scope_guessed {
        route.name.is_none()
    } else if res.namespaced {
        route.ns.is_some() || route.name.is_none()
    } else {
        route.ns.is_none()
    };
    let sub_ok = match route.sub.as_deref() {
        None => true,
        Some("status") => res.status,
        Some(_) => false,
    };
    if !scoped_ok || !sub_ok {
        return Err(ApiError::not_found_path());
    }
    Ok(res)
}

fn key_of(route: &Route, name: &str) -> Key {
    (route.ns.clone().unwrap_or_default(), name.to_string())
}

fn filter_of(route: &Route, query: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
    let mut filter = Filter { ns: route.ns.clone(), name: route.name.clone(), labels, fields };
    if filter.name.is_none() {
        filter.name = filter.fields.name().map(str::to_string);
    }
    Ok(filter)
}

fn read(shared: &Arc<Shared>, route: &Route, query: &HashMap<String, String>, as_meta: bool) -> Response {
    let mut st = shared.state.lock();
    let res = match resolve(&mut st, route, None) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let filter = match filter_of(route, query) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    if is_true(query.get("watch")) {
        drop(st);
        let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
        let req = watch::WatchRequest {
            res,
            filter,
            resource_version: query.get("resourceVersion").cloned(),
            send_initial_events: is_true(query.get("sendInitialEvents")),
            bookmarks: is_true(query.get("allowWatchBookmarks")),
            as_meta,
            timeout: Duration::from_secs(timeout),
        };
        return match watch::start(shared.clone(), req) {
            Ok(body) => {
                let mut resp = Response::new(body);
                resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                resp
            }
            Err(e) => error_response(&e),
        };
    }
    let result = match &route.name {
        Some(name) => st.get(&res, &key_of(route, name)).map(|o| (*o).clone()),
        None => {
            let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            st.list(&res, &filter, limit, query.get("continue").map(String::as_str).filter(|c| !c.is_empty()))
        }
    };
    match result {
        Ok(v) if as_meta => json_response(200, &partial_metadata(&v)),
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}

/// Applies one mutating request; returns the outcome and the object name for the record.
fn write(
    st: &mut State,
    method: &Method,
    route: &Route,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> (Result<Done, ApiError>, Option<String>) {
    if query.get("dryRun").is_some_and(|d| !d.is_empty()) {
        return (Err(ApiError::bad_request("dryRun is not supported by the kube fake")), route.name.clone());
    }
    let status_sub = route.sub.as_deref() == Some("status");
    let name = route.name.clone();
    let result = (|| -> Result<Done, ApiError> {
        match (method, &route.name) {
            (&Method::POST, None) => {
                let obj = store::parse_object(body)?;
                let res = resolve(st, route, obj.get("kind").and_then(Value::as_str))?;
                st.create(&res, route.ns.as_deref().unwrap_or_default(), obj, Managers::new())
            }
            (&Method::PUT, Some(n)) => {
                let obj = store::parse_object(body)?;
                let res = resolve(st, route, obj.get("kind").and_then(Value::as_str))?;
                st.replace(&res, &key_of(route, n), obj, status_sub)
            }
            (&Method::PATCH, Some(n)) => {
                let pt = match content_type {
                    "application/merge-patch+json" | "application/strategic-merge-patch+json" => PatchType::Merge,
                    "application/json-patch+json" => PatchType::Json,
                    "application/apply-patch+yaml" => PatchType::Apply {
                        manager: query.get("fieldManager").cloned(),
                        force: is_true(query.get("force")),
                    },
                    other => {
                        return Err(ApiError {
                            code: 415,
                            reason: "UnsupportedMediaType",
                            message: format!(
                                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                            ),
                            details: None,
                        });
                    }
                };
                let body_kind = match pt {
                    PatchType::Apply { .. } => serde_json::from_slice::<Value>(body)
                        .ok()
                        .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_string)),
                    _ => None,
                };
                let res = resolve(st, route, body_kind.as_deref())?;
                st.patch(&res, &key_of(route, n), pt, body, status_sub)
            }
            (&Method::DELETE, Some(n)) if route.sub.is_none() => {
                let res = resolve(st, route, None)?;
                let opts = if body.is_empty() { None } else { serde_json::from_slice::<Value>(body).ok() };
                st.delete(&res, &key_of(route, n), opts.as_ref())
            }
            (&Method::DELETE, None) => {
                let res = resolve(st, route, None)?;
                let filter = filter_of(route, query)?;
                let mut items = Vec::new();
                for obj in st.snapshot(&res.gvr, &filter) {
                    let key: Key = (
                        obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string(),
                        obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    );
                    if let Ok(d) = st.delete(&res, &key, None) {
                        items.push((*d.obj).clone());
                    }
                }
                let list = json!({
                    "kind": format!("{}List", res.kind), "apiVersion": res.gvr.api_version(),
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items,
                });
                Ok(Done { code: 200, obj: Arc::new(list), changed: true })
            }
            _ => Err(ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: format!("the server does not allow this method on the requested resource ({method})"),
                details: None,
            }),
        }
    })();
    let name = name.or_else(|| {
        result.as_ref().ok().and_then(|d| d.obj.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
    });
    (result, name)
}
