//! The fake's whole state: one struct behind one mutex.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::wire::*;

#[derive(Clone, Debug)]
pub struct Domain {
    pub name: String,
    pub verified: bool,
    pub primary: bool,
}

#[derive(Clone, Debug)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub domains: Vec<Domain>,
    pub created: OffsetDateTime,
    pub sequence: u64,
}

impl Org {
    pub fn primary_domain(&self) -> &str {
        self.domains.iter().find(|d| d.primary).map(|d| d.name.as_str()).unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct Project {
    pub name: String,
    pub owner_org: String,
    pub roles: Vec<String>,
    /// Project grants: granted org → (grant id, role keys granted to it) (docs/zitadel-contract.md §4.1 (b)).
    pub grants: BTreeMap<String, (String, Vec<String>)>,
}

#[derive(Clone, Debug)]
pub struct Idp {
    /// `None`: instance IdP, usable by users of every org (docs/zitadel-contract.md §3.1 idpLinks).
    pub org: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub given_name: String,
    pub family_name: String,
    pub nick_name: String,
    pub display_name: String,
    pub preferred_language: String,
    pub gender: String,
}

#[derive(Clone, Debug)]
pub struct Link {
    pub idp_id: String,
    pub user_id: String,
    pub user_name: String,
}

#[derive(Clone, Debug)]
pub struct MachineKey {
    pub id: String,
    pub public_der: Vec<u8>,
    pub expiration: OffsetDateTime,
    pub created: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub struct Pat {
    pub id: String,
    pub token: String,
    pub expiration: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub struct MetaEntry {
    pub value: Vec<u8>,
    pub changed: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Human {
        profile: Profile,
        email: String,
        email_verified: bool,
        phone: String,
        phone_verified: bool,
        password_set: bool,
    },
    Machine {
        name: String,
        description: String,
    },
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub org: String,
    pub username: String,
    pub kind: Kind,
    pub state: &'static str,
    pub metadata: BTreeMap<String, MetaEntry>,
    pub links: Vec<Link>,
    pub keys: Vec<MachineKey>,
    pub pats: Vec<Pat>,
    pub created: OffsetDateTime,
    pub changed: OffsetDateTime,
    pub sequence: u64,
    /// For the list lag (eventual consistency, docs/zitadel-contract.md §8.3).
    pub written: Instant,
    /// Deleted users stay as tombstones that lagging lists still show.
    pub deleted: Option<Instant>,
    /// Position in creation order (set by `State::insert_user`).
    pub order: u64,
}

pub const ACTIVE: &str = "USER_STATE_ACTIVE";
pub const INACTIVE: &str = "USER_STATE_INACTIVE";

impl User {
    /// A new active user with nothing attached; `written` is when lagging
    /// lists start to show it (seeded users: long ago).
    pub fn new(id: String, org: String, username: String, kind: Kind, written: Instant) -> User {
        let now = OffsetDateTime::now_utc();
        User {
            id,
            org,
            username,
            kind,
            state: ACTIVE,
            metadata: BTreeMap::new(),
            links: Vec::new(),
            keys: Vec::new(),
            pats: Vec::new(),
            created: now,
            changed: now,
            sequence: 1,
            written,
            deleted: None,
            order: 0,
        }
    }

    pub fn is_machine(&self) -> bool {
        matches!(self.kind, Kind::Machine { .. })
    }

    pub fn display_name(&self) -> String {
        match &self.kind {
            Kind::Human { profile, .. } => profile.display_name.clone(),
            Kind::Machine { name, .. } => name.clone(),
        }
    }

    pub fn email(&self) -> &str {
        match &self.kind {
            Kind::Human { email, .. } => email,
            Kind::Machine { .. } => "",
        }
    }

    pub fn touch(&mut self) {
        self.changed = OffsetDateTime::now_utc();
        self.sequence += 1;
    }

    pub fn details(&self) -> Value {
        json!({
            "sequence": i64s(self.sequence),
            "changeDate": ts(self.changed),
            "resourceOwner": self.org,
            "creationDate": ts(self.created),
        })
    }

    /// `zitadel.user.v2.User` (docs/zitadel-contract.md §3.1 GetUserByID; SDK `UserServiceUser`).
    pub fn to_json(&self) -> Value {
        let login_names = json!([self.username]);
        let mut u = json!({
            "userId": self.id,
            "details": self.details(),
            "state": self.state,
            "username": self.username,
            "loginNames": login_names,
            "preferredLoginName": self.username,
        });
        match &self.kind {
            Kind::Human { profile, email, email_verified, phone, phone_verified, .. } => {
                let phone =
                    if phone.is_empty() { Value::Null } else { json!({"phone": phone, "isVerified": phone_verified}) };
                u["human"] = json!({
                    "userId": self.id,
                    "state": self.state,
                    "username": self.username,
                    "loginNames": login_names,
                    "preferredLoginName": self.username,
                    "profile": {
                        "givenName": profile.given_name,
                        "familyName": profile.family_name,
                        "nickName": profile.nick_name,
                        "displayName": profile.display_name,
                        "preferredLanguage": profile.preferred_language,
                        "gender": if profile.gender == "GENDER_UNSPECIFIED" { "" } else { &profile.gender },
                    },
                    "email": {"email": email, "isVerified": email_verified},
                    "phone": phone,
                });
            }
            Kind::Machine { name, description } => {
                u["machine"] = json!({
                    "name": name,
                    "description": description,
                    "accessTokenType": "ACCESS_TOKEN_TYPE_BEARER",
                });
            }
        }
        prune(u)
    }
}

#[derive(Clone, Debug)]
pub struct Authorization {
    pub id: String,
    pub user_id: String,
    pub project_id: String,
    pub org_id: String,
    pub project_grant_id: Option<String>,
    pub roles: Vec<String>,
    pub active: bool,
    pub created: OffsetDateTime,
    pub changed: OffsetDateTime,
    pub written: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Instance,
    Org(String),
    Project(String),
    ProjectGrant { project_id: String, org_id: String },
}

#[derive(Clone, Debug)]
pub struct Admin {
    pub user_id: String,
    pub resource: Resource,
    pub roles: Vec<String>,
    pub created: OffsetDateTime,
    pub changed: OffsetDateTime,
    pub written: Instant,
}

pub struct AccessToken {
    pub user_id: String,
    pub expires: Instant,
}

/// An API application (Management API v1 `AddAPIApp`, docs/zitadel-contract.md §9.1).
#[derive(Clone, Debug)]
pub struct App {
    pub id: String,
    pub project_id: String,
    /// The resource owner: the project's org.
    pub org: String,
    pub name: String,
    pub client_id: String,
    /// Only for `API_AUTH_METHOD_TYPE_BASIC`.
    pub client_secret: Option<String>,
    pub auth_method: String,
    pub keys: Vec<AppKey>,
    pub created: OffsetDateTime,
    pub changed: OffsetDateTime,
    pub sequence: u64,
}

#[derive(Clone, Debug)]
pub struct AppKey {
    pub id: String,
    pub public_der: Vec<u8>,
    pub expiration: OffsetDateTime,
    pub created: OffsetDateTime,
}

/// A human user's access token, issued by the fake-only `issue_user_token` (what a login
/// through an app of the project would give the user, docs/zitadel-contract.md §9.2).
#[derive(Clone, Debug)]
pub struct UserToken {
    pub user_id: String,
    pub jti: String,
    pub scopes: Vec<String>,
    /// Project ids (and client ids) the token is meant for.
    pub audience: Vec<String>,
    pub client_id: String,
    /// Unix seconds.
    pub issued: i64,
    pub expires: i64,
    pub revoked: bool,
}

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub transport: &'static str,
    pub host: Option<String>,
    pub instance_host: Option<String>,
    pub caller: Option<String>,
    pub status: u16,
    /// When the request arrived (before any injected latency).
    pub received: Instant,
}

#[derive(Default)]
pub struct Faults {
    pub latency: Duration,
    pub down: bool,
    pub fail_next: Vec<u16>,
    pub fail_after_commit: Vec<u16>,
    pub rate_limit_next: Vec<u64>,
    pub list_lag: Duration,
}

pub struct State {
    pub url: String,
    pub orgs: BTreeMap<String, Org>,
    pub projects: BTreeMap<String, Project>,
    pub idps: BTreeMap<String, Idp>,
    /// Deleted users linger as tombstones while a list lag is set.
    pub users: BTreeMap<String, User>,
    /// Creation order → user id.
    pub user_order: BTreeMap<u64, String>,
    pub next_order: u64,
    pub tombstones: usize,
    /// Indexes over live users: lowercased username → id; (IdP id, IdP user id) → id.
    pub usernames: HashMap<String, String>,
    pub link_index: HashMap<(String, String), String>,
    pub authorizations: Vec<Authorization>,
    pub admins: Vec<Admin>,
    /// PAT token → (user id, PAT id).
    pub pats: HashMap<String, (String, String)>,
    pub access_tokens: HashMap<String, AccessToken>,
    pub apps: BTreeMap<String, App>,
    /// Token (opaque string or compact JWT) → the user token it stands for.
    pub user_tokens: HashMap<String, UserToken>,
    pub introspections: usize,
    pub tokens_issued: usize,
    pub token_expires_in: u64,
    pub next_id: u64,
    pub key_pool_next: usize,
    pub calls: Vec<Call>,
    pub faults: Faults,
    /// If set, requests must name this instance in `x-zitadel-instance-host` or `Host`.
    pub instance_host: Option<String>,
}

impl State {
    pub fn new(url: String) -> State {
        // 18-digit numeric ids like ZITADEL's, starting at a random point so that two
        // fakes never hand out the same ids.
        let base = 300_000_000_000_000_000u64 + (rand::random::<u64>() % 100_000_000_000) * 1000;
        State {
            url,
            orgs: BTreeMap::new(),
            projects: BTreeMap::new(),
            idps: BTreeMap::new(),
            users: BTreeMap::new(),
            user_order: BTreeMap::new(),
            next_order: 0,
            tombstones: 0,
            usernames: HashMap::new(),
            link_index: HashMap::new(),
            authorizations: Vec::new(),
            admins: Vec::new(),
            pats: HashMap::new(),
            access_tokens: HashMap::new(),
            apps: BTreeMap::new(),
            user_tokens: HashMap::new(),
            introspections: 0,
            tokens_issued: 0,
            token_expires_in: 43199,
            next_id: base,
            key_pool_next: 0,
            calls: Vec::new(),
            faults: Faults::default(),
            instance_host: None,
        }
    }

    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// Whether a list issued now sees an object written at `written` (list lag).
    pub fn visible(&self, written: Instant) -> bool {
        written.elapsed() >= self.faults.list_lag
    }

    /// A live (not deleted) user.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id).filter(|u| u.deleted.is_none())
    }

    pub fn user_mut(&mut self, id: &str) -> Option<&mut User> {
        self.users.get_mut(id).filter(|u| u.deleted.is_none())
    }

    pub fn live_users(&self) -> impl Iterator<Item = &User> {
        self.user_order.values().filter_map(|id| self.user(id))
    }

    /// Adds a user (replacing a tombstone with the same id) and indexes it.
    pub fn insert_user(&mut self, mut user: User) {
        if let Some(old) = self.users.remove(&user.id) {
            self.user_order.remove(&old.order);
            if old.deleted.is_some() {
                self.tombstones -= 1;
            } else {
                self.unindex(&old);
            }
        }
        self.next_order += 1;
        user.order = self.next_order;
        self.user_order.insert(user.order, user.id.clone());
        self.usernames.insert(user.username.to_lowercase(), user.id.clone());
        for l in &user.links {
            self.link_index.insert((l.idp_id.clone(), l.user_id.clone()), user.id.clone());
        }
        self.users.insert(user.id.clone(), user);
    }

    fn unindex(&mut self, u: &User) {
        if self.usernames.get(&u.username.to_lowercase()) == Some(&u.id) {
            self.usernames.remove(&u.username.to_lowercase());
        }
        for l in &u.links {
            self.link_index.remove(&(l.idp_id.clone(), l.user_id.clone()));
        }
    }

    /// Deletes a user: a tombstone while a list lag is set, else gone at once.
    pub fn remove_user(&mut self, id: &str) {
        let Some(u) = self.users.get(id).filter(|u| u.deleted.is_none()).cloned() else { return };
        self.unindex(&u);
        if self.faults.list_lag.is_zero() {
            self.users.remove(id);
            self.user_order.remove(&u.order);
        } else if let Some(u) = self.users.get_mut(id) {
            u.deleted = Some(Instant::now());
            self.tombstones += 1;
        }
    }

    pub fn rename_user(&mut self, id: &str, username: String) {
        let Some(u) = self.users.get_mut(id) else { return };
        let old = std::mem::replace(&mut u.username, username.clone());
        if self.usernames.get(&old.to_lowercase()).map(String::as_str) == Some(id) {
            self.usernames.remove(&old.to_lowercase());
        }
        self.usernames.insert(username.to_lowercase(), id.to_string());
    }

    pub fn username_owner(&self, username: &str) -> Option<&String> {
        self.usernames.get(&username.to_lowercase())
    }

    pub fn org_by_domain(&self, domain: &str) -> Option<&Org> {
        self.orgs.values().find(|o| o.domains.iter().any(|d| d.verified && d.name.eq_ignore_ascii_case(domain)))
    }

    /// Instance roles of a user (its administrator entry on the instance).
    pub fn instance_roles(&self, user_id: &str) -> Vec<String> {
        self.admins
            .iter()
            .filter(|a| a.user_id == user_id && a.resource == Resource::Instance)
            .flat_map(|a| a.roles.clone())
            .collect()
    }

    /// Drops tombstones older than the list lag.
    pub fn purge(&mut self) {
        if self.tombstones == 0 {
            return;
        }
        let lag = self.faults.list_lag;
        let gone: Vec<String> = self
            .users
            .values()
            .filter(|u| u.deleted.is_some_and(|d| d.elapsed() >= lag))
            .map(|u| u.id.clone())
            .collect();
        for id in gone {
            if let Some(u) = self.users.remove(&id) {
                self.user_order.remove(&u.order);
                self.tombstones -= 1;
            }
        }
    }

    pub fn next_pool_key(&mut self) -> &'static str {
        let k = super::keys::POOL[self.key_pool_next % super::keys::POOL.len()];
        self.key_pool_next += 1;
        k
    }
}

/// The permission a method needs (docs/zitadel-contract.md §5.2 role → permission mappings, simplified
/// to instance roles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// `user.read`, `user.grant.read`, `org.read`, `iam.member.read`…
    Read,
    /// `user.write`, `user.delete`, `user.grant.write`, `user.grant.delete`.
    UserWrite,
    /// `iam.member.write`, `org.member.write`: IAM_OWNER only.
    Owner,
    /// `iam.member.read`: not in IAM_USER_MANAGER.
    MemberRead,
    /// Any active user about itself.
    Authenticated,
    /// `project.app.read`.
    ProjectRead,
    /// `project.app.write`, `project.app.delete`: IAM_OWNER (or an org/project owner, not modelled).
    ProjectWrite,
}

pub fn allowed(roles: &[String], perm: Perm) -> bool {
    let has = |r: &str| roles.iter().any(|x| x == r);
    if has("IAM_OWNER") {
        return true;
    }
    match perm {
        Perm::Read => has("IAM_OWNER_VIEWER") || has("IAM_USER_MANAGER"),
        Perm::MemberRead => has("IAM_OWNER_VIEWER"),
        Perm::UserWrite => has("IAM_USER_MANAGER"),
        Perm::Owner => false,
        Perm::Authenticated => true,
        Perm::ProjectRead => has("IAM_OWNER_VIEWER"),
        Perm::ProjectWrite => false,
    }
}
