//! An in-process fake of the ZITADEL API, for tests and benchmarks.
//!
//! It follows the contract in `docs/zitadel-contract.md` (its sections are cited
//! by number in the code) for the calls the SCIM projector and the operator make:
//! Connect paths `POST /{package}.{Service}/{Method}` with protojson bodies, a few REST
//! gateway paths of `UserService`, the Management API v1's API applications and their keys
//! (§9.1), token introspection with client secret or private-key JWT (§9.2, `introspect`),
//! the JWT-profile token endpoint, the error bodies and
//! status codes of both transports, org scoping and the username and IdP-link rules.
//! Response shapes were checked against the official Python SDK (`zitadel-client`
//! 4.1.9) by `tests/contract/zitadel_sdk_contract.py`.
//!
//! The server runs on its own thread and runtime, so it keeps answering while a test
//! blocks its own thread (e.g. waiting for a child process).
//!
//! What it does not model is listed in `tests/contract/README.md` (fidelity gaps).

mod apps;
mod authz;
mod introspect;
mod keys;
mod oauth;
mod self_service;
mod state;
mod users;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};
use time::OffsetDateTime;

use state::*;
use wire::*;

pub use oauth::jwt_assertion;
pub use self_service::{FakeApp, UserTokenOptions};

/// Who is calling, for handlers that default to the caller's org (docs/zitadel-contract.md §2.4).
pub(crate) struct Ctx {
    pub caller: String,
    pub caller_org: String,
    pub org_header: Option<String>,
    /// ListAuthorizations / ListAdministrators without the read permission list the
    /// caller's own entries only (SDK 4.1.9 docs: "no permissions required for listing own").
    pub own_only: bool,
}

type Handler = fn(&mut State, &Ctx, &Value) -> ApiResult;

const USER_SVC: &str = "zitadel.user.v2.UserService/";
const AUTHZ_SVC: &str = "zitadel.authorization.v2.AuthorizationService/";
const PERM_SVC: &str = "zitadel.internal_permission.v2.InternalPermissionService/";
const ORG_SVC: &str = "zitadel.org.v2.OrganizationService/";
/// v1, REST only: `GET /auth/v1/users/me` tells a credential's owner.
const AUTH_SVC: &str = "zitadel.auth.v1.AuthService/";

/// The RPCs the fake serves, with the permission each needs.
fn rpc(name: &str) -> Option<(Handler, Perm)> {
    use Perm::*;
    let (svc, m) = name.split_at(name.find('/')? + 1);
    Some(match (svc, m) {
        (USER_SVC, "AddHumanUser") => (users::add_human_user as Handler, UserWrite),
        (USER_SVC, "CreateUser") => (users::create_user, UserWrite),
        (USER_SVC, "GetUserByID") => (users::get_user_by_id, Read),
        (USER_SVC, "ListUsers") => (users::list_users, Read),
        (USER_SVC, "UpdateHumanUser") => (users::update_human_user, UserWrite),
        (USER_SVC, "UpdateUser") => (users::update_user, UserWrite),
        (USER_SVC, "DeactivateUser") => (users::deactivate_user, UserWrite),
        (USER_SVC, "ReactivateUser") => (users::reactivate_user, UserWrite),
        (USER_SVC, "DeleteUser") => (users::delete_user, UserWrite),
        (USER_SVC, "RemovePhone") => (users::remove_phone, UserWrite),
        (USER_SVC, "SetUserMetadata") => (users::set_user_metadata, UserWrite),
        (USER_SVC, "ListUserMetadata") => (users::list_user_metadata, Read),
        (USER_SVC, "DeleteUserMetadata") => (users::delete_user_metadata, UserWrite),
        (USER_SVC, "AddIDPLink") => (users::add_idp_link, UserWrite),
        (USER_SVC, "ListIDPLinks") => (users::list_idp_links, Read),
        (USER_SVC, "RemoveIDPLink") => (users::remove_idp_link, UserWrite),
        // Machine keys and PATs need `user.write` (SDK 4.1.9 docs), not an IAM_OWNER-only permission.
        (USER_SVC, "AddKey") => (users::add_key, UserWrite),
        (USER_SVC, "RemoveKey") => (users::remove_key, UserWrite),
        (USER_SVC, "ListKeys") => (users::list_keys, Read),
        (USER_SVC, "AddPersonalAccessToken") => (users::add_personal_access_token, UserWrite),
        (USER_SVC, "RemovePersonalAccessToken") => (users::remove_personal_access_token, UserWrite),
        (AUTHZ_SVC, "CreateAuthorization") => (authz::create_authorization, UserWrite),
        (AUTHZ_SVC, "UpdateAuthorization") => (authz::update_authorization, UserWrite),
        (AUTHZ_SVC, "DeleteAuthorization") => (authz::delete_authorization, UserWrite),
        (AUTHZ_SVC, "ActivateAuthorization") => (authz::activate_authorization, UserWrite),
        (AUTHZ_SVC, "DeactivateAuthorization") => (authz::deactivate_authorization, UserWrite),
        (AUTHZ_SVC, "ListAuthorizations") => (authz::list_authorizations, Read),
        (PERM_SVC, "CreateAdministrator") => (authz::create_administrator, Owner),
        (PERM_SVC, "UpdateAdministrator") => (authz::update_administrator, Owner),
        (PERM_SVC, "DeleteAdministrator") => (authz::delete_administrator, Owner),
        (PERM_SVC, "ListAdministrators") => (authz::list_administrators, MemberRead),
        (ORG_SVC, "ListOrganizations") => (authz::list_organizations, Read),
        (ORG_SVC, "ListOrganizationDomains") => (authz::list_organization_domains, Read),
        (AUTH_SVC, "GetMyUser") => (users::get_my_user, Authenticated),
        (apps::MGMT_SVC, "AddAPIApp") => (apps::add_api_app, ProjectWrite),
        (apps::MGMT_SVC, "GetAppByID") => (apps::get_app_by_id, ProjectRead),
        (apps::MGMT_SVC, "ListApps") => (apps::list_apps, ProjectRead),
        (apps::MGMT_SVC, "RemoveApp") => (apps::remove_app, ProjectWrite),
        (apps::MGMT_SVC, "AddAppKey") => (apps::add_app_key, ProjectWrite),
        (apps::MGMT_SVC, "ListAppKeys") => (apps::list_app_keys, ProjectRead),
        (apps::MGMT_SVC, "RemoveAppKey") => (apps::remove_app_key, ProjectWrite),
        _ => return None,
    })
}

/// REST gateway routes of UserService v2 (docs/zitadel-contract.md §3.1): (RPC, body, success status).
fn rest_route(method: &Method, path: &str, body: Value) -> Option<(String, Value, u16)> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let with = |mut b: Value, k: &str, v: &str| {
        if !b.is_object() {
            b = json!({});
        }
        b[k] = json!(v);
        b
    };
    if seg.first() == Some(&"management") {
        return apps::rest_route(method.as_str(), &seg, body);
    }
    let rpc = |m: &str| format!("{USER_SVC}{m}");
    Some(match (method.as_str(), seg.as_slice()) {
        ("POST", ["v2", "users", "human"]) => (rpc("AddHumanUser"), body, 201),
        ("POST", ["v2", "users"]) => (rpc("ListUsers"), body, 200),
        ("GET", ["v2", "users", id]) => (rpc("GetUserByID"), json!({"userId": id}), 200),
        ("DELETE", ["v2", "users", id]) => (rpc("DeleteUser"), json!({"userId": id}), 200),
        ("PUT", ["v2", "users", "human", id]) => (rpc("UpdateHumanUser"), with(body, "userId", id), 200),
        ("PATCH", ["v2", "users", id]) => (rpc("UpdateUser"), with(body, "userId", id), 200),
        ("POST", ["v2", "users", id, "deactivate"]) => (rpc("DeactivateUser"), json!({"userId": id}), 200),
        ("POST", ["v2", "users", id, "reactivate"]) => (rpc("ReactivateUser"), json!({"userId": id}), 200),
        ("POST", ["v2", "users", id, "metadata"]) => (rpc("SetUserMetadata"), with(body, "userId", id), 200),
        ("POST", ["v2", "users", id, "links"]) => (rpc("AddIDPLink"), with(body, "userId", id), 200),
        ("GET", ["auth", "v1", "users", "me"]) => (format!("{AUTH_SVC}GetMyUser"), json!({}), 200),
        _ => return None,
    })
}

struct Shared {
    state: Mutex<State>,
}

// ---------------------------------------------------------------------------
// Public API

/// A user as the fake stores it. Empty strings mean "not set".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUser {
    pub id: String,
    pub org: String,
    pub username: String,
    pub given_name: String,
    pub family_name: String,
    pub display_name: String,
    pub nick_name: String,
    pub preferred_language: String,
    pub email: String,
    pub email_verified: bool,
    /// `USER_STATE_ACTIVE` or `USER_STATE_INACTIVE`.
    pub state: String,
    /// Metadata values decoded from base64.
    pub metadata: BTreeMap<String, Vec<u8>>,
    pub idp_links: Vec<FakeIdpLink>,
    pub is_machine: bool,
    pub password_set: bool,
    /// Ids of the machine keys.
    pub key_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeIdpLink {
    pub idp_id: String,
    pub user_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeAuthorization {
    pub id: String,
    pub user_id: String,
    pub project_id: String,
    /// The org the authorization was created on (project owner or granted org).
    pub org_id: String,
    pub roles: Vec<String>,
    /// `STATE_ACTIVE` or `STATE_INACTIVE`.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeResource {
    Instance,
    Organization(String),
    Project(String),
    ProjectGrant { project_id: String, org_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeAdministrator {
    pub user_id: String,
    pub resource: FakeResource,
    pub roles: Vec<String>,
}

/// One API request as the fake received it.
#[derive(Clone, Debug)]
pub struct FakeCall {
    /// RPC name, e.g. `zitadel.user.v2.UserService/AddHumanUser` (REST calls are
    /// recorded under the RPC they map to).
    pub method: String,
    /// `connect` or `rest`.
    pub transport: &'static str,
    pub host: Option<String>,
    pub instance_host: Option<String>,
    /// The authenticated user id, if authentication succeeded.
    pub caller: Option<String>,
    pub status: u16,
    /// When the request arrived: ZITADEL's rate limits count requests in time windows.
    pub received: Instant,
}

pub struct ZitadelFake {
    /// `http://127.0.0.1:PORT`, also the OIDC issuer.
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ZitadelFake {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn slug(name: &str) -> String {
    let s: String = name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.trim_matches('-').to_string()
}

impl ZitadelFake {
    /// Starts the fake on `127.0.0.1:0`; it serves until dropped.
    pub async fn start() -> ZitadelFake {
        Self::start_on("127.0.0.1:0").expect("bind the ZITADEL fake")
    }

    /// Starts the fake on a given address (`127.0.0.1:0` for any free port).
    pub fn start_on(addr: &str) -> std::io::Result<ZitadelFake> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared { state: Mutex::new(State::new(url.clone())) });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app_shared = shared.clone();
        let thread = std::thread::Builder::new().name("zitadel-fake".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("fake runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("fake listener");
                let app = Router::new().fallback(move |req: Request| {
                    let shared = app_shared.clone();
                    async move { handle(shared, req).await }
                });
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = rx => {}
                }
            });
        })?;
        Ok(ZitadelFake { url, shared, shutdown: Some(tx), thread: Some(thread) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.shared.state.lock())
    }

    // --- seeding ---------------------------------------------------------------------

    /// An org with a generated primary domain `<name>.fake-zitadel.localhost` (verified)
    /// plus `verified_domains`; the first of those becomes the primary domain.
    pub fn add_org(&self, id: &str, name: &str, verified_domains: &[&str]) {
        self.with(|s| {
            let mut domains = vec![Domain {
                name: format!("{}.fake-zitadel.localhost", slug(name)),
                verified: true,
                primary: verified_domains.is_empty(),
            }];
            for (i, d) in verified_domains.iter().enumerate() {
                domains.push(Domain { name: d.to_string(), verified: true, primary: i == 0 });
            }
            let org =
                Org { id: id.into(), name: name.into(), domains, created: OffsetDateTime::now_utc(), sequence: 1 };
            s.orgs.insert(id.into(), org);
        })
    }

    pub fn add_project(&self, id: &str, owner_org: &str, role_keys: &[&str]) {
        self.with(|s| {
            s.projects.insert(
                id.into(),
                Project {
                    name: format!("Project {id}"),
                    owner_org: owner_org.into(),
                    roles: role_keys.iter().map(|r| r.to_string()).collect(),
                    grants: BTreeMap::new(),
                },
            );
        })
    }

    /// Grants `project_id` to `granted_org` with a subset of its roles (docs/zitadel-contract.md §4.1 (b)).
    pub fn add_project_grant(&self, project_id: &str, granted_org: &str, role_keys: &[&str]) {
        self.with(|s| {
            let id = s.new_id();
            if let Some(p) = s.projects.get_mut(project_id) {
                p.grants.insert(granted_org.into(), (id, role_keys.iter().map(|r| r.to_string()).collect()));
            }
        })
    }

    /// An IdP of `org`, or an instance IdP when `org` is `None`.
    pub fn add_idp(&self, id: &str, org: Option<&str>) {
        self.with(|s| {
            s.idps.insert(id.into(), Idp { org: org.map(str::to_string) });
        })
    }

    /// A human user, as if created earlier (e.g. before the SCIM bridge existed).
    pub fn add_human(&self, org: &str, user_id: &str, username: &str, email: &str) {
        let kind = Kind::Human {
            profile: Profile {
                given_name: "Existing".into(),
                family_name: "User".into(),
                display_name: "Existing User".into(),
                ..Profile::default()
            },
            email: email.into(),
            email_verified: true,
            phone: String::new(),
            phone_verified: false,
            password_set: false,
        };
        self.with(|s| users::insert_user(s, User::new(user_id.into(), org.into(), username.into(), kind, long_ago())))
    }

    fn add_machine(s: &mut State, user_id: &str, org: &str, instance_roles: &[&str]) {
        let kind = Kind::Machine { name: user_id.into(), description: "seeded by the fake".into() };
        users::insert_user(s, User::new(user_id.into(), org.into(), user_id.into(), kind, long_ago()));
        set_roles(s, user_id, instance_roles);
    }

    /// A machine user with a PAT and instance roles, e.g. `["IAM_OWNER"]` or
    /// `["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"]`.
    pub fn add_service_user_with_pat(&self, user_id: &str, org: &str, pat: &str, instance_roles: &[&str]) {
        self.with(|s| {
            Self::add_machine(s, user_id, org, instance_roles);
            let id = s.new_id();
            if let Some(u) = s.users.get_mut(user_id) {
                u.pats.push(Pat {
                    id: id.clone(),
                    token: pat.into(),
                    expiration: time::macros::datetime!(9999-12-31 23:59:59 UTC),
                });
            }
            s.pats.insert(pat.into(), (user_id.into(), id));
        })
    }

    /// A machine user with a key; returns the key file JSON
    /// `{"type":"serviceaccount","keyId","key","expirationDate","userId"}` for JWT-profile auth.
    pub fn add_service_user_with_key(&self, user_id: &str, org: &str, instance_roles: &[&str]) -> String {
        self.with(|s| {
            Self::add_machine(s, user_id, org, instance_roles);
            let key_id = s.new_id();
            let pem = s.next_pool_key();
            let exp = time::macros::datetime!(9999-12-31 23:59:59 UTC);
            let public_der = oauth::public_key_of_private_pem(pem).expect("pool key");
            if let Some(u) = s.users.get_mut(user_id) {
                u.keys.push(MachineKey {
                    id: key_id.clone(),
                    public_der,
                    expiration: exp,
                    created: OffsetDateTime::now_utc(),
                });
            }
            json!({"type": "serviceaccount", "keyId": key_id, "key": pem, "expirationDate": ts(exp), "userId": user_id})
                .to_string()
        })
    }

    /// Replaces a user's instance roles (empty removes its instance membership): drift.
    pub fn set_instance_roles(&self, user_id: &str, roles: &[&str]) {
        self.with(|s| set_roles(s, user_id, roles))
    }

    /// Requests must then name this instance in `x-zitadel-instance-host` (or `Host`),
    /// else they get NotFound, as a ZITADEL that cannot find the instance (docs/zitadel-contract.md §1).
    pub fn set_instance_host(&self, host: Option<&str>) {
        self.with(|s| s.instance_host = host.map(str::to_string))
    }

    /// `expires_in` of access tokens issued from now on (default 43199 s).
    pub fn set_token_expires_in(&self, secs: u64) {
        self.with(|s| s.token_expires_in = secs)
    }

    pub fn tokens_issued(&self) -> usize {
        self.with(|s| s.tokens_issued)
    }

    // --- fault injection ---------------------------------------------------------------

    /// Added to every request before it is handled.
    pub fn set_latency(&self, d: Duration) {
        self.with(|s| s.faults.latency = d)
    }

    /// While down, every request (API, discovery, token) gets 503 `unavailable`.
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.faults.down = down)
    }

    /// The next `n` API calls fail with `http_status` (503, 500, 504…) and the matching
    /// Connect code, without being applied.
    pub fn fail_next(&self, n: usize, http_status: u16) {
        self.with(|s| s.faults.fail_next.extend(std::iter::repeat_n(http_status, n)))
    }

    /// The next `n` API calls are applied, but answer `http_status` (e.g. 504): the
    /// client's view of a timeout after ZITADEL committed the write.
    pub fn fail_next_after_commit(&self, n: usize, http_status: u16) {
        self.with(|s| s.faults.fail_after_commit.extend(std::iter::repeat_n(http_status, n)))
    }

    /// The next `n` API calls get 429 `resource_exhausted` with `Retry-After`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        self.with(|s| s.faults.rate_limit_next.extend(std::iter::repeat_n(retry_after_secs, n)))
    }

    /// Eventual consistency: List* calls (users, authorizations, administrators) do not
    /// see objects created less than `d` ago, and still see users deleted less than `d` ago.
    pub fn set_list_lag(&self, d: Duration) {
        self.with(|s| s.faults.list_lag = d)
    }

    // --- inspection ----------------------------------------------------------------------

    pub fn users(&self) -> Vec<FakeUser> {
        self.with(|s| s.live_users().map(fake_user).collect())
    }

    pub fn user(&self, id: &str) -> Option<FakeUser> {
        self.with(|s| s.user(id).map(fake_user))
    }

    pub fn authorizations(&self) -> Vec<FakeAuthorization> {
        self.with(|s| {
            s.authorizations
                .iter()
                .map(|a| FakeAuthorization {
                    id: a.id.clone(),
                    user_id: a.user_id.clone(),
                    project_id: a.project_id.clone(),
                    org_id: a.org_id.clone(),
                    roles: a.roles.clone(),
                    state: if a.active { "STATE_ACTIVE" } else { "STATE_INACTIVE" }.into(),
                })
                .collect()
        })
    }

    pub fn administrators(&self) -> Vec<FakeAdministrator> {
        self.with(|s| {
            s.admins
                .iter()
                .map(|a| FakeAdministrator {
                    user_id: a.user_id.clone(),
                    resource: match &a.resource {
                        Resource::Instance => FakeResource::Instance,
                        Resource::Org(o) => FakeResource::Organization(o.clone()),
                        Resource::Project(p) => FakeResource::Project(p.clone()),
                        Resource::ProjectGrant { project_id, org_id } => {
                            FakeResource::ProjectGrant { project_id: project_id.clone(), org_id: org_id.clone() }
                        }
                    },
                    roles: a.roles.clone(),
                })
                .collect()
        })
    }

    /// RPC names of the API calls received, in order of completion.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.iter().map(|c| c.method.clone()).collect())
    }

    pub fn call_log(&self) -> Vec<FakeCall> {
        self.with(|s| {
            s.calls
                .iter()
                .map(|c| FakeCall {
                    method: c.method.clone(),
                    transport: c.transport,
                    host: c.host.clone(),
                    instance_host: c.instance_host.clone(),
                    caller: c.caller.clone(),
                    status: c.status,
                    received: c.received,
                })
                .collect()
        })
    }

    /// Calls whose RPC name ends with `method_suffix` (e.g. `"AddHumanUser"`).
    pub fn call_count(&self, method_suffix: &str) -> usize {
        self.with(|s| s.calls.iter().filter(|c| c.method.ends_with(method_suffix)).count())
    }

    pub fn reset_calls(&self) {
        self.with(|s| s.calls.clear())
    }
}

/// Seeded data is written long before any test lists it, so the list lag
/// never hides it.
fn long_ago() -> Instant {
    Instant::now() - Duration::from_secs(3600)
}

fn set_roles(s: &mut State, user_id: &str, roles: &[&str]) {
    s.admins.retain(|a| !(a.user_id == user_id && a.resource == Resource::Instance));
    if !roles.is_empty() {
        let now = OffsetDateTime::now_utc();
        s.admins.push(Admin {
            user_id: user_id.into(),
            resource: Resource::Instance,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            created: now,
            changed: now,
            written: long_ago(),
        });
    }
}

fn fake_user(u: &User) -> FakeUser {
    let (p, email, ev, pw) = match &u.kind {
        Kind::Human { profile, email, email_verified, password_set, .. } => {
            (profile.clone(), email.clone(), *email_verified, *password_set)
        }
        Kind::Machine { name, .. } => {
            (Profile { display_name: name.clone(), ..Profile::default() }, String::new(), false, false)
        }
    };
    FakeUser {
        id: u.id.clone(),
        org: u.org.clone(),
        username: u.username.clone(),
        given_name: p.given_name,
        family_name: p.family_name,
        display_name: p.display_name,
        nick_name: p.nick_name,
        preferred_language: p.preferred_language,
        email,
        email_verified: ev,
        state: u.state.to_string(),
        metadata: u.metadata.iter().map(|(k, e)| (k.clone(), e.value.clone())).collect(),
        idp_links: u
            .links
            .iter()
            .map(|l| FakeIdpLink { idp_id: l.idp_id.clone(), user_id: l.user_id.clone() })
            .collect(),
        is_machine: u.is_machine(),
        password_set: pw,
        key_ids: u.keys.iter().map(|k| k.id.clone()).collect(),
    }
}

// ---------------------------------------------------------------------------
// Request handling

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn unavailable() -> ApiError {
    err(Code::Unavailable, "FAKE-down", "Errors.Unavailable", "service unavailable")
}

/// Bearer token → user id (docs/zitadel-contract.md §2, §8.1): PATs and issued access tokens.
fn authenticate(s: &State, auth: Option<&str>) -> ApiResult<String> {
    let Some(auth) = auth else {
        return Err(err(Code::Unauthenticated, "AUTH-7fs1e", "auth header missing", "auth header missing"));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err(Code::Unauthenticated, "AUTH-dsg3D", "invalid auth header", "invalid auth header"))?;
    let invalid_token = || err(Code::Unauthenticated, "AUTH-7fs1e", "Errors.Token.Invalid", "token is invalid");
    let user_id = if let Some((uid, pat_id)) = s.pats.get(token) {
        let u = s.user(uid).ok_or_else(invalid_token)?;
        let pat = u.pats.iter().find(|p| &p.id == pat_id).ok_or_else(invalid_token)?;
        if pat.expiration <= OffsetDateTime::now_utc() {
            return Err(invalid_token());
        }
        uid.clone()
    } else if let Some(t) = s.access_tokens.get(token) {
        if t.expires <= Instant::now() {
            return Err(invalid_token());
        }
        t.user_id.clone()
    } else {
        return Err(invalid_token());
    };
    match s.user(&user_id) {
        Some(u) if u.state == ACTIVE => Ok(user_id),
        _ => Err(invalid_token()),
    }
}

async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    let received = Instant::now();
    let (latency, down) = {
        let s = shared.state.lock();
        (s.faults.latency, s.faults.down)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let rest_like = path.starts_with("/v2/") || path.starts_with("/auth/v1/") || path.starts_with("/management/v1/");
    if down {
        return unavailable().into_response(rest_like);
    }
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();

    if parts.method == Method::GET && path == "/.well-known/openid-configuration" {
        let d = oauth::discovery(&shared.state.lock());
        return json_response(200, &d);
    }
    if parts.method == Method::POST && path == "/oauth/v2/token" {
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let (status, v) = oauth::token(&mut shared.state.lock(), &form);
        return json_response(status, &v);
    }
    if parts.method == Method::POST && path == "/oauth/v2/introspect" {
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let auth = header_str(&parts.headers, "authorization");
        let (status, v) = introspect::introspect(&mut shared.state.lock(), auth.as_deref(), &form);
        return json_response(status, &v);
    }

    // Which RPC, which transport, which request message.
    let connect_name = path.strip_prefix('/').filter(|p| p.starts_with("zitadel.") && p.contains('/'));
    let (name, transport, req_body, success) = if let Some(name) = connect_name {
        if parts.method != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
        }
        let ct = header_str(&parts.headers, "content-type").unwrap_or_default();
        if !ct.is_empty() && !ct.starts_with("application/json") {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, [("accept-post", "application/json")]).into_response();
        }
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(json!({}))
        } else {
            serde_json::from_slice::<Value>(&body)
        };
        match parsed {
            Ok(v) if v.is_object() => (name.to_string(), "connect", v, 200),
            _ => {
                return err(
                    Code::InvalidArgument,
                    "FAKE-json",
                    "Errors.Invalid.Argument",
                    "unmarshal request: invalid JSON",
                )
                .into_response(false);
            }
        }
    } else {
        let parsed: Value =
            if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        match rest_route(&parts.method, &path, parsed) {
            Some((name, b, status)) if b.is_object() => (name, "rest", b, status),
            Some(_) => {
                return err(Code::InvalidArgument, "FAKE-json", "Errors.Invalid.Argument", "invalid JSON body")
                    .into_response(true);
            }
            None => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
        }
    };
    let rest = transport == "rest";
    let host = header_str(&parts.headers, "host");
    let instance_host = header_str(&parts.headers, "x-zitadel-instance-host");
    let org_header = header_str(&parts.headers, "x-zitadel-orgid");
    let auth = header_str(&parts.headers, "authorization");

    let mut s = shared.state.lock();
    s.purge();
    let mut call = Call {
        method: name.clone(),
        transport,
        host: host.clone(),
        instance_host: instance_host.clone(),
        caller: None,
        status: 0,
        received,
    };
    let result = serve_call(&mut s, &mut call, &name, auth.as_deref(), org_header, &req_body, host, instance_host);
    let resp = match result {
        Ok(v) => {
            if let Some(status) = (!s.faults.fail_after_commit.is_empty()).then(|| s.faults.fail_after_commit.remove(0))
            {
                Err(err(Code::from_http(status), "FAKE-injected", "Errors.Internal", "injected failure after commit"))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(e),
    };
    let response = match resp {
        Ok(v) => {
            call.status = success;
            json_response(success, &v)
        }
        Err(e) => {
            call.status = e.code.http();
            e.into_response(rest)
        }
    };
    s.calls.push(call);
    response
}

#[allow(clippy::too_many_arguments)]
fn serve_call(
    s: &mut State,
    call: &mut Call,
    name: &str,
    auth: Option<&str>,
    org_header: Option<String>,
    body: &Value,
    host: Option<String>,
    instance_host: Option<String>,
) -> ApiResult {
    if !s.faults.rate_limit_next.is_empty() {
        let secs = s.faults.rate_limit_next.remove(0);
        let mut e =
            err(Code::ResourceExhausted, "FAKE-ratelimit", "Errors.Quota.RequestsExhausted", "too many requests");
        e.retry_after = Some(secs);
        return Err(e);
    }
    if !s.faults.fail_next.is_empty() {
        let status = s.faults.fail_next.remove(0);
        return Err(err(Code::from_http(status), "FAKE-injected", "Errors.Internal", "injected failure"));
    }
    // Instance routing (docs/zitadel-contract.md §1): Host or x-zitadel-instance-host must name the instance.
    let effective = instance_host.or(host);
    let Some(effective) = effective else {
        return Err(err(Code::NotFound, "FAKE-instance", "Errors.IAM.NotFound", "instance not found: no host"));
    };
    if let Some(want) = &s.instance_host {
        let strip = |h: &str| h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !effective.eq_ignore_ascii_case(want) && strip(&effective) != strip(want) {
            return Err(err(
                Code::NotFound,
                "FAKE-instance",
                "Errors.IAM.NotFound",
                &format!("unable to set instance using origin {effective}"),
            ));
        }
    }
    let caller = authenticate(s, auth)?;
    call.caller = Some(caller.clone());
    let Some((handler, perm)) = rpc(name) else {
        return Err(err(Code::Unimplemented, "FAKE-unimpl", "Errors.Unimplemented", &format!("{name} is not faked")));
    };
    let own_listing =
        name == format!("{AUTHZ_SVC}ListAuthorizations") || name == format!("{PERM_SVC}ListAdministrators");
    let own_only = !allowed(&s.instance_roles(&caller), perm);
    if own_only && !own_listing {
        return Err(err(
            Code::PermissionDenied,
            "AUTH-5mWD2",
            "Errors.PermissionDenied",
            "No matching permissions found",
        ));
    }
    let caller_org = s.user(&caller).map(|u| u.org.clone()).unwrap_or_default();
    let ctx = Ctx { caller, caller_org, org_header, own_only };
    handler(s, &ctx, body)
}
