//! Object storage and the write semantics of the apiserver: metadata, generation,
//! optimistic concurrency, status subresources, no-op detection, finalizers and
//! owner-reference garbage collection. Everything here runs under one lock, so each
//! request (with its side effects) is atomic and the watch history is totally ordered.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::Write;
use super::patch::{self, FieldSet, JsonPatchError, SYSTEM_METADATA};
use super::select::{FieldSelector, LabelSelector};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl Gvr {
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Gvr { group: group.into(), version: version.into(), plural: plural.into() }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `secrets` or `deployments.apps`, as the apiserver names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

#[derive(Clone, Debug)]
pub struct ResInfo {
    pub gvr: Gvr,
    pub kind: String,
    pub namespaced: bool,
    pub status: bool,
    /// Unknown CRDs learn their kind from the first body that names one,
    pub kind_guessed: bool,
    /// and their scope from the first path that names an object.
    pub scope_guessed: bool,
}

/// (group, version, plural, kind, namespaced, has status subresource)
const BUILTIN: &[(&str, &str, &str, &str, bool, bool)] = &[
    ("", "v1", "namespaces", "Namespace", false, true),
    ("", "v1", "secrets", "Secret", true, false),
    ("", "v1", "configmaps", "ConfigMap", true, false),
    ("", "v1", "services", "Service", true, true),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, true),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, false),
    ("", "v1", "events", "Event", true, false),
    ("", "v1", "pods", "Pod", true, true),
    ("apps", "v1", "deployments", "Deployment", true, true),
    ("apps", "v1", "statefulsets", "StatefulSet", true, true),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", true, true),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true, false),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    ("events.k8s.io", "v1", "events", "Event", true, false),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, true),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, false),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false, false),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false, true),
    ("scim.unique.app", "v1alpha1", "scimtenants", "ScimTenant", true, true),
];

pub fn builtin_groups() -> BTreeSet<(&'static str, &'static str)> {
    BUILTIN.iter().map(|b| (b.0, b.1)).collect()
}

pub fn builtin_resources(group: &str, version: &str) -> Vec<(&'static str, &'static str, bool, bool)> {
    BUILTIN.iter().filter(|b| b.0 == group && b.1 == version).map(|b| (b.2, b.3, b.4, b.5)).collect()
}

/// An apiserver error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError { code: 400, reason: "BadRequest", message: msg.into(), details: None }
    }

    pub fn not_found_path() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})),
        }
    }

    fn details(gvr: &Gvr, name: &str, kind: &str) -> Value {
        let mut d = json!({"name": name});
        if !gvr.group.is_empty() {
            d["group"] = json!(gvr.group);
        }
        d["kind"] = json!(kind);
        d
    }

    pub fn not_found(res: &ResInfo, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", res.gvr.qualified()),
            details: Some(Self::details(&res.gvr, name, &res.gvr.plural)),
        }
    }

    fn already_exists(res: &ResInfo, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", res.gvr.qualified()),
            details: Some(Self::details(&res.gvr, name, &res.gvr.plural)),
        }
    }

    pub fn conflict(res: &ResInfo, name: &str, why: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {} \"{name}\": {why}", res.gvr.qualified()),
            details: Some(Self::details(&res.gvr, name, &res.gvr.plural)),
        }
    }

    pub fn invalid(res: &ResInfo, name: &str, field: &str, why: &str) -> Self {
        let group = if res.gvr.group.is_empty() { String::new() } else { format!(".{}", res.gvr.group) };
        let mut details = Self::details(&res.gvr, name, &res.kind);
        details["causes"] = json!([{"reason": "FieldValueInvalid", "message": why, "field": field}]);
        ApiError {
            code: 422,
            reason: "Invalid",
            message: if field.is_empty() {
                format!("{}{group} \"{name}\" is invalid: {why}", res.kind)
            } else {
                format!("{}{group} \"{name}\" is invalid: {field}: {why}", res.kind)
            },
            details: Some(details),
        }
    }

    pub fn unavailable() -> Self {
        ApiError {
            code: 503,
            reason: "ServiceUnavailable",
            message: "the server is currently unable to handle the request (simulated outage)".into(),
            details: None,
        }
    }

    pub fn expired(rv: u64, oldest: u64) -> Self {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {rv} ({oldest})"),
            details: None,
        }
    }
}

pub type Key = (String, String);
/// Field sets per (manager, applied to the status subresource).
pub type Managers = BTreeMap<(String, bool), FieldSet>;

pub struct Stored {
    pub obj: Arc<Value>,
    pub managers: Managers,
}

pub struct HEvent {
    pub rv: u64,
    pub gvr: Gvr,
    pub ns: String,
    pub etype: &'static str,
    pub obj: Arc<Value>,
    /// The version before a MODIFIED, so selector watches can turn it into ADDED or DELETED.
    pub prev: Option<Arc<Value>>,
}

/// The result of a write: HTTP code, body, and whether anything was stored.
pub struct Done {
    pub code: u16,
    pub obj: Arc<Value>,
    pub changed: bool,
}

pub enum PatchType {
    Merge,
    Json,
    Apply { manager: Option<String>, force: bool },
}

pub struct State {
    pub res: HashMap<Gvr, ResInfo>,
    pub objs: HashMap<Gvr, BTreeMap<Key, Stored>>,
    pub rv: u64,
    pub history: VecDeque<Arc<HEvent>>,
    pub history_cap: usize,
    /// Watches from a resourceVersion below this get 410 Expired: their events were dropped.
    pub expired_rv: u64,
    uids: HashMap<String, (Gvr, Key)>,
    owners: HashMap<String, BTreeSet<(Gvr, Key)>>,
    pub writes: Vec<Write>,
    pub deployments_ready: bool,
    pub down: bool,
    pub shutdown: bool,
    pub notify: tokio::sync::watch::Sender<()>,
}

fn now() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc().format(&f).unwrap_or_default()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The apiserver decodes metadata into a typed ObjectMeta, which drops empty collections.
fn normalize_metadata(obj: &mut Value) {
    let m = meta_mut(obj);
    m.remove("managedFields");
    m.remove("selfLink");
    for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let empty = match m.get(f) {
            Some(Value::Object(x)) => x.is_empty(),
            Some(Value::Array(x)) => x.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            m.remove(f);
        }
    }
}

/// Generation tracks everything but metadata and status.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let skip = |k: &str| matches!(k, "metadata" | "status" | "apiVersion" | "kind");
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else { return old != new };
    a.iter().any(|(k, v)| !skip(k) && b.get(k) != Some(v)) || b.keys().any(|k| !skip(k) && !a.contains_key(k))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// The status subresource splits an object in two: writes to the main resource keep the
/// live status, writes to `/status` keep everything else.
fn scope(res: &ResInfo, live: &Value, mut new: Value, status_sub: bool) -> Value {
    let keep_from = |src: &Value, dst: &mut Value| match src.get("status") {
        Some(s) => dst["status"] = s.clone(),
        None => {
            if let Some(o) = dst.as_object_mut() {
                o.remove("status");
            }
        }
    };
    if !new.is_object() {
        // Refused later by `update`; indexing a non-object here would panic.
        return new;
    }
    if status_sub {
        let mut out = live.clone();
        keep_from(&new, &mut out);
        out
    } else {
        if res.status {
            keep_from(live, &mut new);
        }
        new
    }
}

fn rv_precondition(res: &ResInfo, name: &str, live: &Value, sent: &Value) -> Result<(), ApiError> {
    match meta_str(sent, "resourceVersion") {
        Some(rv) if !rv.is_empty() && Some(rv) != meta_str(live, "resourceVersion") => Err(ApiError::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

pub fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let v = parse_json(body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

fn encode_continue(key: &Key) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\n{}", key.0, key.1))
}

fn decode_continue(token: &str) -> Option<Key> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (ns, name) = raw.split_once('\n')?;
    Some((ns.to_string(), name.to_string()))
}

/// Selects objects for list and watch: optional namespace, name, label and field selectors.
#[derive(Clone, Default)]
pub struct Filter {
    pub ns: Option<String>,
    pub name: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        self.name.as_deref().is_none_or(|n| meta_str(obj, "name") == Some(n))
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

impl State {
    pub fn new(history_cap: usize) -> Self {
        let mut res = HashMap::new();
        for &(g, v, p, k, namespaced, status) in BUILTIN {
            let gvr = Gvr::new(g, v, p);
            res.insert(
                gvr.clone(),
                ResInfo { gvr, kind: k.into(), namespaced, status, kind_guessed: false, scope_guessed: false },
            );
        }
        State {
            res,
            objs: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            expired_rv: 0,
            uids: HashMap::new(),
            owners: HashMap::new(),
            writes: Vec::new(),
            deployments_ready: true,
            down: false,
            shutdown: false,
            notify: tokio::sync::watch::channel(()).0,
        }
    }

    /// Finds the resource for a path. Unknown plurals in a non-built-in group are taken to be
    /// CRDs (with a status subresource) so tests need not register them.
    pub fn resolve(&mut self, gvr: &Gvr, ns_path: bool, object_path: bool, body_kind: Option<&str>) -> Option<ResInfo> {
        if let Some(r) = self.res.get_mut(gvr) {
            if r.kind_guessed
                && let Some(k) = body_kind
            {
                r.kind = k.to_string();
                r.kind_guessed = false;
            }
            if r.scope_guessed && (ns_path || object_path) {
                r.namespaced = ns_path;
                r.scope_guessed = false;
            }
            return Some(r.clone());
        }
        if gvr.group.is_empty() || BUILTIN.iter().any(|b| b.0 == gvr.group) || gvr.plural.is_empty() {
            return None;
        }
        let (kind, guessed) = match body_kind {
            Some(k) => (k.to_string(), false),
            None => {
                let singular = gvr.plural.strip_suffix('s').unwrap_or(&gvr.plural);
                let mut c = singular.chars();
                (c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default(), true)
            }
        };
        let info = ResInfo {
            gvr: gvr.clone(),
            kind,
            namespaced: ns_path,
            status: true,
            kind_guessed: guessed,
            scope_guessed: !ns_path && !object_path,
        };
        self.res.insert(gvr.clone(), info.clone());
        Some(info)
    }

    pub fn lookup(&self, gvr: &Gvr, key: &Key) -> Option<&Stored> {
        self.objs.get(gvr).and_then(|m| m.get(key))
    }

    fn notify(&self) {
        self.notify.send_modify(|_| {});
    }

    fn push_event(&mut self, gvr: &Gvr, ns: &str, etype: &'static str, obj: Arc<Value>, prev: Option<Arc<Value>>) {
        self.history.push_back(Arc::new(HEvent {
            rv: self.rv,
            gvr: gvr.clone(),
            ns: ns.to_string(),
            etype,
            obj,
            prev,
        }));
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.expired_rv = old.rv;
            }
        }
        self.notify();
    }

    fn index_remove(&mut self, gvr: &Gvr, key: &Key, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            self.uids.remove(uid);
        }
        for o in owner_uids(obj) {
            if let Some(set) = self.owners.get_mut(&o) {
                set.remove(&(gvr.clone(), key.clone()));
                if set.is_empty() {
                    self.owners.remove(&o);
                }
            }
        }
    }

    fn index_add(&mut self, gvr: &Gvr, key: &Key, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            self.uids.insert(uid.to_string(), (gvr.clone(), key.clone()));
        }
        for o in owner_uids(obj) {
            self.owners.entry(o).or_default().insert((gvr.clone(), key.clone()));
        }
    }

    /// Stores a new version under a fresh resourceVersion and records its watch event.
    fn commit(&mut self, gvr: &Gvr, key: &Key, mut obj: Value, managers: Managers) -> Arc<Value> {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let obj = Arc::new(obj);
        let prev = self.objs.get(gvr).and_then(|m| m.get(key)).map(|s| s.obj.clone());
        if let Some(p) = &prev {
            self.index_remove(gvr, key, p);
        }
        self.index_add(gvr, key, &obj);
        self.objs.entry(gvr.clone()).or_default().insert(key.clone(), Stored { obj: obj.clone(), managers });
        let etype = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        self.push_event(gvr, &key.0, etype, obj.clone(), prev);
        obj
    }

    /// Removes an object for good (DELETED event carrying `last`, or the stored version),
    /// then collects its dependents.
    fn remove(&mut self, gvr: &Gvr, key: &Key, last: Option<Value>) -> Option<Arc<Value>> {
        let stored = self.objs.get_mut(gvr)?.remove(key)?;
        self.index_remove(gvr, key, &stored.obj);
        self.rv += 1;
        let mut last = last.unwrap_or_else(|| (*stored.obj).clone());
        meta_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let last = Arc::new(last);
        self.push_event(gvr, &key.0, "DELETED", last.clone(), None);
        if let Some(uid) = meta_str(&last, "uid") {
            self.collect_garbage(uid);
        }
        if gvr.group.is_empty() && gvr.plural == "namespaces" {
            self.empty_namespace(&key.1);
        }
        Some(last)
    }

    /// Background-propagation GC, done synchronously: a dependent goes once none of its owners exist.
    fn collect_garbage(&mut self, owner_uid: &str) {
        let deps: Vec<(Gvr, Key)> = self.owners.get(owner_uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for (gvr, key) in deps {
            let Some(stored) = self.lookup(&gvr, &key) else { continue };
            if owner_uids(&stored.obj).iter().all(|u| !self.uids.contains_key(u)) {
                self.delete_existing(&gvr, &key);
            }
        }
    }

    fn empty_namespace(&mut self, ns: &str) {
        let keys: Vec<(Gvr, Key)> = self
            .objs
            .iter()
            .flat_map(|(gvr, m)| m.keys().filter(|k| k.0 == ns).map(move |k| (gvr.clone(), k.clone())))
            .collect();
        for (gvr, key) in keys {
            self.delete_existing(&gvr, &key);
        }
    }

    /// DELETE semantics for an object known to exist: finalizers turn it into a
    /// deletionTimestamp (once), otherwise it goes. Returns the object and whether it changed.
    fn delete_existing(&mut self, gvr: &Gvr, key: &Key) -> Option<(Arc<Value>, bool)> {
        let stored = self.lookup(gvr, key)?;
        let obj = stored.obj.clone();
        if finalizers(&obj).is_empty() {
            return self.remove(gvr, key, None).map(|o| (o, true));
        }
        if meta(&obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return Some((obj, false));
        }
        let managers = stored.managers.clone();
        let mut new = (*obj).clone();
        let m = meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(1);
        m.insert("generation".into(), json!(generation + 1));
        Some((self.commit(gvr, key, new, managers), true))
    }

    pub fn get(&self, res: &ResInfo, key: &Key) -> Result<Arc<Value>, ApiError> {
        self.lookup(&res.gvr, key).map(|s| s.obj.clone()).ok_or_else(|| ApiError::not_found(res, &key.1))
    }

    pub fn list(
        &self,
        res: &ResInfo,
        filter: &Filter,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<Value, ApiError> {
        let start = match cont {
            Some(t) => {
                Bound::Excluded(decode_continue(t).ok_or_else(|| ApiError::bad_request("invalid continue token"))?)
            }
            None => match &filter.ns {
                Some(ns) => Bound::Included((ns.clone(), String::new())),
                None => Bound::Unbounded,
            },
        };
        let mut items = Vec::new();
        let mut next = None;
        if let Some(m) = self.objs.get(&res.gvr) {
            let matching = m
                .range((start, Bound::Unbounded))
                .take_while(|(k, _)| filter.ns.as_ref().is_none_or(|ns| &k.0 == ns))
                .filter(|(_, s)| filter.matches(&s.obj));
            for (k, s) in matching {
                if limit.is_some_and(|l| items.len() >= l) {
                    next = Some(encode_continue(k));
                    break;
                }
                items.push((k, (*s.obj).clone()));
            }
        }
        // The token names the last key served; the next page starts after it.
        let token = next.and(items.last().map(|(k, _)| encode_continue(k)));
        let mut md = json!({"resourceVersion": self.rv.to_string()});
        if let Some(t) = token {
            md["continue"] = json!(t);
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.gvr.api_version(),
            "metadata": md,
            "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        }))
    }

    /// Objects currently matching a watch, for the synthetic ADDED events of an initial watch.
    pub fn snapshot(&self, gvr: &Gvr, filter: &Filter) -> Vec<Arc<Value>> {
        self.objs
            .get(gvr)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| filter.ns.as_ref().is_none_or(|ns| &k.0 == ns))
                    .filter(|(_, s)| filter.matches(&s.obj))
                    .map(|(_, s)| s.obj.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn create(&mut self, res: &ResInfo, ns: &str, mut body: Value, managers: Managers) -> Result<Done, ApiError> {
        if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        if let Some(k) = body.get("kind").and_then(Value::as_str)
            && k != res.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind {k:?} does not match the resource kind {:?}",
                res.kind
            )));
        }
        let m = meta_mut(&mut body);
        let name = match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match m.get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                    let mut rng = rand::rng();
                    let suffix: String =
                        (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
                    format!("{prefix}{suffix}")
                }
                None => return Err(ApiError::invalid(res, "", "metadata.name", "name or generateName is required")),
            },
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(res, &name, "metadata.name", "a lowercase RFC 1123 subdomain is required"));
        }
        if res.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(other) if other != ns && !other.is_empty() => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        let key: Key = (if res.namespaced { ns.to_string() } else { String::new() }, name.clone());
        if self.lookup(&res.gvr, &key).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        for f in SYSTEM_METADATA {
            m.remove(*f);
        }
        m.insert("name".into(), json!(name));
        if res.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        let Some(o) = body.as_object_mut() else { return Err(ApiError::bad_request("not an object")) };
        o.insert("apiVersion".into(), json!(res.gvr.api_version()));
        o.insert("kind".into(), json!(res.kind));
        if res.status {
            o.remove("status");
        }
        if res.gvr.group.is_empty() && res.gvr.plural == "namespaces" {
            o.insert("status".into(), json!({"phase": "Active"}));
        }
        normalize_metadata(&mut body);
        // Put apiVersion, kind and metadata first, as the apiserver serialises them.
        let body = reorder(body);
        let obj = self.commit(&res.gvr, &key, body, managers);
        self.after_write(res, &key);
        Ok(Done { code: 201, obj, changed: true })
    }

    /// The common tail of PUT, PATCH and apply on an existing object.
    fn update(
        &mut self,
        res: &ResInfo,
        key: &Key,
        mut new: Value,
        managers: Option<Managers>,
        applier: Option<&(String, bool)>,
    ) -> Result<Done, ApiError> {
        let stored = self.lookup(&res.gvr, key).ok_or_else(|| ApiError::not_found(res, &key.1))?;
        let old = stored.obj.clone();
        let mut managers = managers.unwrap_or_else(|| stored.managers.clone());
        if !new.is_object() {
            return Err(ApiError::bad_request("the patched object is not a JSON object"));
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        {
            let old_meta = meta(&old).cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in SYSTEM_METADATA {
                match old_meta.get(*f) {
                    Some(v) => m.insert(f.to_string(), v.clone()),
                    None => m.remove(*f),
                };
            }
        }
        normalize_metadata(&mut new);
        let deleting = meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp"));
        let (old_fin, new_fin) = (finalizers(&old), finalizers(&new));
        if deleting && new_fin.iter().any(|f| !old_fin.contains(f)) {
            return Err(ApiError::invalid(
                res,
                &key.1,
                "metadata.finalizers",
                "Forbidden: no new finalizers can be added if the object is being deleted",
            ));
        }
        if !managers.is_empty() {
            // A write takes ownership of every field it changes away from the appliers that held it.
            let changed = patch::changed_paths(&old, &new);
            if !changed.is_empty() {
                for (who, set) in managers.iter_mut() {
                    if Some(who) != applier {
                        set.retain(|p| !changed.iter().any(|c| patch::overlaps(p, c)));
                    }
                }
            }
        }
        let new = reorder(new);
        if new == *old {
            if let Some(s) = self.objs.get_mut(&res.gvr).and_then(|m| m.get_mut(key)) {
                s.managers = managers;
            }
            return Ok(Done { code: 200, obj: old, changed: false });
        }
        let mut new = new;
        if spec_changed(&old, &new) {
            let generation = meta(&old).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if deleting && new_fin.is_empty() {
            // The apiserver deletes inside that update: watchers see only DELETED, with the final state.
            let obj = self.remove(&res.gvr, key, Some(new)).ok_or_else(|| ApiError::not_found(res, &key.1))?;
            return Ok(Done { code: 200, obj, changed: true });
        }
        let obj = self.commit(&res.gvr, key, new, managers);
        self.after_write(res, key);
        Ok(Done { code: 200, obj, changed: true })
    }

    pub fn replace(&mut self, res: &ResInfo, key: &Key, body: Value, status_sub: bool) -> Result<Done, ApiError> {
        check_identity(res, key, &body)?;
        let live = self.get(res, key)?;
        rv_precondition(res, &key.1, &live, &body)?;
        let new = scope(res, &live, body, status_sub);
        self.update(res, key, new, None, None)
    }

    pub fn patch(
        &mut self,
        res: &ResInfo,
        key: &Key,
        pt: PatchType,
        body: &[u8],
        status_sub: bool,
    ) -> Result<Done, ApiError> {
        match pt {
            PatchType::Merge => {
                let p = parse_json(body)?;
                let live = self.get(res, key)?;
                let mut new = (*live).clone();
                patch::merge_patch(&mut new, &p);
                rv_precondition(res, &key.1, &live, &new)?;
                check_identity(res, key, &new)?;
                let new = scope(res, &live, new, status_sub);
                self.update(res, key, new, None, None)
            }
            PatchType::Json => {
                let p = parse_json(body)?;
                let live = self.get(res, key)?;
                let mut new = (*live).clone();
                patch::json_patch(&mut new, &p).map_err(|e| match e {
                    JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                    JsonPatchError::Failed(m) => ApiError::invalid(res, &key.1, "", &m),
                })?;
                rv_precondition(res, &key.1, &live, &new)?;
                check_identity(res, key, &new)?;
                let new = scope(res, &live, new, status_sub);
                self.update(res, key, new, None, None)
            }
            PatchType::Apply { manager, force } => self.apply(res, key, manager, force, body, status_sub),
        }
    }

    fn apply(
        &mut self,
        res: &ResInfo,
        key: &Key,
        manager: Option<String>,
        force: bool,
        body: &[u8],
        status_sub: bool,
    ) -> Result<Done, ApiError> {
        let Some(manager) = manager.filter(|m| !m.is_empty()) else {
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                details: None,
            });
        };
        let applied = parse_apply_body(body)?;
        match (applied.get("apiVersion").and_then(Value::as_str), applied.get("kind").and_then(Value::as_str)) {
            (Some(av), Some(k)) if av == res.gvr.api_version() && k == res.kind => {}
            (Some(av), Some(k)) => {
                return Err(ApiError::bad_request(format!(
                    "apply patch is for {av}, Kind={k} but the resource is {}, Kind={}",
                    res.gvr.api_version(),
                    res.kind
                )));
            }
            _ => return Err(ApiError::bad_request("apply patch is missing apiVersion or kind")),
        }
        check_identity(res, key, &applied)?;
        let scoped = if status_sub {
            json!({"status": applied.get("status").cloned().unwrap_or(Value::Null)})
        } else {
            let mut a = applied.clone();
            if res.status
                && let Some(o) = a.as_object_mut()
            {
                o.remove("status");
            }
            a
        };
        let leafs = patch::leaf_paths(&scoped);
        let me = (manager, status_sub);
        let Some(stored) = self.lookup(&res.gvr, key) else {
            if status_sub {
                return Err(ApiError::not_found(res, &key.1));
            }
            let mut fresh = json!({"apiVersion": res.gvr.api_version(), "kind": res.kind, "metadata": {"name": key.1}});
            patch::apply_merge(&mut fresh, &scoped);
            let managers = Managers::from([(me, leafs)]);
            return self.create(res, &key.0, fresh, managers);
        };
        let live = stored.obj.clone();
        rv_precondition(res, &key.1, &live, &applied)?;
        let mut managers = stored.managers.clone();
        let prev = managers.get(&me).cloned().unwrap_or_default();
        let mut merged = (*live).clone();
        for gone in prev.difference(&leafs) {
            let shared = managers.iter().any(|(who, set)| *who != me && set.iter().any(|p| patch::overlaps(p, gone)));
            if !shared {
                patch::remove_path(&mut merged, gone);
            }
        }
        patch::apply_merge(&mut merged, &scoped);
        let merged = scope(res, &live, merged, status_sub);
        if !force {
            let changed = patch::changed_paths(&live, &merged);
            for (who, set) in &managers {
                if *who == me {
                    continue;
                }
                if let Some(p) = set.iter().find(|p| changed.iter().any(|c| patch::overlaps(p, c))) {
                    return Err(ApiError::conflict(
                        res,
                        &key.1,
                        &format!("Apply failed with 1 conflict: conflict with \"{}\": .{}", who.0, p.join(".")),
                    ));
                }
            }
        }
        managers.insert(me.clone(), leafs);
        self.update(res, key, merged, Some(managers), Some(&me))
    }

    pub fn delete(&mut self, res: &ResInfo, key: &Key, opts: Option<&Value>) -> Result<Done, ApiError> {
        let live = self.get(res, key)?;
        if let Some(pre) = opts.and_then(|o| o.get("preconditions")) {
            for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = pre.get(field).and_then(Value::as_str)
                    && Some(want) != meta_str(&live, field)
                {
                    let have = meta_str(&live, field).unwrap_or_default();
                    return Err(ApiError::conflict(
                        res,
                        &key.1,
                        &format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"),
                    ));
                }
            }
        }
        let (obj, changed) = self.delete_existing(&res.gvr, key).ok_or_else(|| ApiError::not_found(res, &key.1))?;
        Ok(Done { code: 200, obj, changed })
    }

    fn after_write(&mut self, res: &ResInfo, key: &Key) {
        if res.gvr.group == "apps" && res.gvr.plural == "deployments" {
            self.simulate_deployment(key);
        }
    }

    /// What kube-controller-manager would write to a Deployment's status: a separate status
    /// update, only when the observed generation or the readiness changes.
    pub fn simulate_deployment(&mut self, key: &Key) {
        let gvr = Gvr::new("apps", "v1", "deployments");
        let Some(stored) = self.lookup(&gvr, key) else { return };
        let obj = stored.obj.clone();
        if meta(&obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return;
        }
        let generation = meta(&obj).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1);
        let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let rs =
            format!("{}-{}", key.1, &format!("{:x}", generation.wrapping_mul(2_654_435_761).rem_euclid(0xff_ffff)));
        let ready = self.deployments_ready;
        let mut status = Map::new();
        status.insert("observedGeneration".into(), json!(generation));
        // Go's omitempty drops zero counts, so a Deployment with nothing ready has no readyReplicas.
        let mut count = |k: &str, n: i64| {
            if n != 0 {
                status.insert(k.into(), json!(n));
            }
        };
        count("replicas", replicas);
        count("updatedReplicas", replicas);
        count("readyReplicas", if ready { replicas } else { 0 });
        count("availableReplicas", if ready { replicas } else { 0 });
        count("unavailableReplicas", if ready { 0 } else { replicas });
        let cond = |t: &str, s: &str, reason: &str, message: String| json!({"type": t, "status": s, "lastUpdateTime": "", "lastTransitionTime": "", "reason": reason, "message": message});
        let conditions = if ready {
            vec![
                cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into()),
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs}\" has successfully progressed."),
                ),
            ]
        } else {
            vec![
                cond(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
                cond("Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{rs}\" is progressing.")),
            ]
        };
        status.insert("conditions".into(), Value::Array(conditions));
        let mut status = Value::Object(status);
        let strip_times = |s: &Value| {
            let mut s = s.clone();
            if let Some(cs) = s.get_mut("conditions").and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("lastUpdateTime");
                    c.remove("lastTransitionTime");
                }
            }
            s
        };
        if obj.get("status").map(strip_times) == Some(strip_times(&status)) {
            return;
        }
        let ts = now();
        if let Some(cs) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs.iter_mut() {
                c["lastUpdateTime"] = json!(ts);
                c["lastTransitionTime"] = json!(ts);
            }
        }
        let managers = stored.managers.clone();
        let mut new = (*obj).clone();
        new["status"] = status;
        self.commit(&gvr, key, new, managers);
    }

    pub fn simulate_all_deployments(&mut self) {
        let gvr = Gvr::new("apps", "v1", "deployments");
        let keys: Vec<Key> = self.objs.get(&gvr).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for k in keys {
            self.simulate_deployment(&k);
        }
    }
}

/// A body may omit name and namespace, but must not contradict the URL.
fn check_identity(res: &ResInfo, key: &Key, body: &Value) -> Result<(), ApiError> {
    if let Some(n) = meta_str(body, "name")
        && n != key.1
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            key.1
        )));
    }
    if res.namespaced
        && let Some(ns) = meta_str(body, "namespace")
        && !ns.is_empty()
        && ns != key.0
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// kube sends apply bodies as JSON under the YAML content type; accept real YAML too.
fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    let v = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the apply patch must be an object"));
    }
    Ok(v)
}

fn reorder(v: Value) -> Value {
    let Value::Object(mut m) = v else { return v };
    let mut out = Map::new();
    for k in ["apiVersion", "kind", "metadata"] {
        if let Some(x) = m.remove(k) {
            out.insert(k.into(), x);
        }
    }
    out.extend(m);
    Value::Object(out)
}
