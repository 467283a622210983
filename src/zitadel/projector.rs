//! Mirrors the SCIM store into ZITADEL, keeping the rules of
//! `docs/ARCHITECTURE.md` ("Nothing acknowledged is lost"):
//!
//! 1. A permanent ZITADEL rejection fails the SCIM request with a 4xx whose
//!    detail says what to fix, and nothing is stored.
//! 2. A transient failure (timeout, 5xx, 429, credentials ZITADEL does not
//!    accept right now) does not fail the request: the write is committed
//!    with an outbox entry and projected in the background with backoff.
//! 3. Every step is idempotent: projecting means "make ZITADEL match the
//!    store's current state", so retries and restarts converge; a ZITADEL user
//!    left by an interrupted attempt (same id, or same username in the
//!    customer organisation) is adopted, not duplicated.
//! 4. Backlog, oldest pending age and last error are reported.
//!
//! Writes to one user are serialised (a striped lock per id) across SCIM
//! requests and the outbox worker, so ZITADEL never sees an older state after
//! a newer one.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, OwnedMutexGuard};

use super::client::Client;
use super::config::ZitadelConfig;
use super::desired::{DesiredUser, desired_user};
use super::error::{Code, ZitadelError};
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceKind;
use crate::store::{
    Enqueue, MutateFn, Mutation, OutboxEntry, ProjectionNote, Record, SideEffects, Store, StoreError, now_ms,
};

const LOCK_STRIPES: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Outbox entries projected at once.
const WORKER_CONCURRENCY: usize = 8;

/// What was last projected for a user, kept in the store beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProjectedState {
    pub user: DesiredUser,
    pub authorization_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    /// ZITADEL answered the last connectivity check with our credentials.
    pub reachable: bool,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
}

pub(crate) struct Projector {
    client: Client,
    cfg: ZitadelConfig,
    store: Arc<dyn Store>,
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    wake: Notify,
    health: Mutex<Health>,
}

enum Outcome {
    Projected(Box<ProjectedState>),
    Deferred,
}

impl Projector {
    pub(crate) fn new(client: Client, cfg: ZitadelConfig, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Projector {
            client,
            cfg,
            store,
            locks: (0..LOCK_STRIPES).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect(),
            wake: Notify::new(),
            health: Mutex::new(Health::default()),
        })
    }

    pub(crate) fn config(&self) -> &ZitadelConfig {
        &self.cfg
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn health(&self) -> Health {
        self.health.lock().clone()
    }

    async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let stripe = &self.locks[(h % LOCK_STRIPES as u64) as usize];
        Arc::clone(stripe).lock_owned().await
    }

    fn note(&self, result: &Result<(), &ZitadelError>) {
        let mut h = self.health.lock();
        match result {
            Ok(()) => {
                h.last_success_ms = Some(now_ms());
                h.reachable = true;
            }
            Err(e) => {
                h.last_error = Some(e.to_string());
                h.last_error_ms = Some(now_ms());
                if matches!(e, ZitadelError::Transport { .. } | ZitadelError::Credentials(_) | ZitadelError::Token(_))
                    || matches!(e.code(), Some(Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable))
                {
                    h.reachable = false;
                }
            }
        }
    }

    /// Checks that ZITADEL answers with our credentials and the organisation
    /// exists; the result is what `/readyz` and `/status` report.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let r = self.client.org_exists(&self.cfg.organization_id).await;
        match r {
            Ok(true) => {
                self.note(&Ok(()));
                Ok(())
            }
            Ok(false) => {
                let msg = format!(
                    "organisation {} does not exist or the service user cannot read it: check zitadel.organizationId and the user's IAM_OWNER_VIEWER role",
                    self.cfg.organization_id
                );
                let mut h = self.health.lock();
                h.reachable = false;
                h.last_error = Some(msg.clone());
                h.last_error_ms = Some(now_ms());
                Err(msg)
            }
            Err(e) => {
                self.note(&Err(&e));
                Err(e.to_string())
            }
        }
    }

    fn kick(&self) {
        self.wake.notify_one();
    }

    async fn group_names(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.store.groups_of(user_id).await?.into_iter().map(|g| g.display_name).collect())
    }

    async fn last_state(&self, id: &str) -> Result<Option<ProjectedState>, StoreError> {
        Ok(self.store.projection(id).await?.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Projects one desired user: `Err` only for a permanent rejection.
    async fn project(&self, d: &DesiredUser, last: Option<ProjectedState>) -> Result<Outcome, ScimError> {
        match self.sync(d, last).await {
            Ok(state) => {
                self.note(&Ok(()));
                Ok(Outcome::Projected(Box::new(state)))
            }
            Err(e) if e.is_transient() || matches!(e.code(), Some(Code::Unauthenticated | Code::PermissionDenied)) => {
                // Credentials and permissions are the operator's to fix, not the
                // data's: keep the write and retry.
                tracing::warn!(user = %d.id, error = %e, "ZITADEL projection deferred to the outbox");
                self.note(&Err(&e));
                Ok(Outcome::Deferred)
            }
            Err(e) => {
                self.note(&Err(&e));
                Err(rejection(&e, d))
            }
        }
    }

    // ------------------------------------------------------- SCIM writes

    /// Creates a user: ZITADEL first (a rejection stores nothing), then the store.
    pub(crate) async fn create_user(&self, mut doc: Value) -> Result<Record, StoreError> {
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let guard = self.lock(&id).await;
        let d = desired_user(&doc, &[], &self.cfg)?;
        let outcome = match self.project(&d, None).await {
            Ok(o) => o,
            Err(e) if e.status == 409 => {
                // The username exists in ZITADEL. If it is a user of the
                // customer organisation that no SCIM user holds (one an
                // interrupted create left behind, or one made before
                // provisioning began), this create matches it.
                let Some(existing) = self.adoptable(&d.username).await? else { return Err(e.into()) };
                drop(guard);
                let _guard = self.lock(&existing).await;
                if let Some(o) = doc.as_object_mut() {
                    o.insert("id".into(), Value::String(existing.clone()));
                }
                let d = desired_user(&doc, &[], &self.cfg)?;
                let outcome = self.project(&d, None).await?;
                return self.commit_create(doc, &existing, outcome).await;
            }
            Err(e) => return Err(e.into()),
        };
        let r = self.commit_create(doc, &id, outcome).await;
        drop(guard);
        r
    }

    async fn commit_create(&self, doc: Value, id: &str, outcome: Outcome) -> Result<Record, StoreError> {
        let projected = matches!(outcome, Outcome::Projected(_));
        let side = side_effects(id, outcome);
        match self.store.create_with(ResourceKind::User, doc, side).await {
            Ok(r) => {
                if !projected {
                    self.kick();
                }
                Ok(r)
            }
            Err(e) => {
                if projected {
                    // ZITADEL has a user the store refused (a SCIM uniqueness
                    // race): the outbox finds no SCIM user and removes it.
                    let _ = self
                        .store
                        .apply_side_effects(SideEffects { enqueue: vec![Enqueue::user(id)], ..Default::default() })
                        .await;
                    self.kick();
                }
                Err(e)
            }
        }
    }

    /// A ZITADEL user of the customer organisation with this username that no
    /// SCIM user is bound to.
    async fn adoptable(&self, username: &str) -> Result<Option<String>, StoreError> {
        let found = match self.client.find_users_by_username(username).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "looking up an existing ZITADEL user failed");
                return Ok(None);
            }
        };
        for u in found {
            if u.organization_id == self.cfg.organization_id
                && u.is_human
                && u.username.to_lowercase() == username.to_lowercase()
                && self.store.get(ResourceKind::User, &u.id).await?.is_none()
            {
                return Ok(Some(u.id));
            }
        }
        Ok(None)
    }

    /// Updates a user: `compute` turns the current record into the new one, as
    /// for an unprojected update; ZITADEL is brought in line before the store
    /// commits.
    pub(crate) async fn update_user(&self, id: &str, compute: MutateFn) -> Result<Record, StoreError> {
        let _guard = self.lock(id).await;
        let current = self
            .store
            .get(ResourceKind::User, id)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))?;
        let version = current.version;
        let new_doc = match compute(&current, version + 1)? {
            Mutation::Replace(doc) => doc,
            _ => return Ok(current),
        };
        let groups = self.group_names(id).await?;
        let d = desired_user(&new_doc, &groups, &self.cfg)?;
        let last = self.last_state(id).await?;
        let outcome = self.project(&d, last).await?;
        let deferred = matches!(outcome, Outcome::Deferred);
        let side = side_effects(id, outcome);
        let rec = self
            .store
            .update(
                ResourceKind::User,
                id,
                Box::new(move |rec, _| {
                    // The per-user lock keeps other user writes out; a change
                    // here would mean one slipped past it.
                    if rec.version != version {
                        return Err(ScimError::new(409, None, "the user changed during the update; retry"));
                    }
                    Ok(Mutation::WithSideEffects { mutation: Box::new(Mutation::Replace(new_doc)), side })
                }),
            )
            .await?;
        if deferred {
            self.kick();
        }
        Ok(rec)
    }

    /// Deletes a user: from ZITADEL now if it answers, else through the outbox.
    pub(crate) async fn delete_user(&self, id: &str) -> Result<(), StoreError> {
        let _guard = self.lock(id).await;
        if self.store.get(ResourceKind::User, id).await?.is_none() {
            return Err(ScimError::not_found(format!("User {id} not found")).into());
        }
        let r = self.client.delete_user(id).await;
        let side = match &r {
            Ok(()) => {
                self.note(&Ok(()));
                SideEffects {
                    projection: vec![ProjectionNote { id: id.to_string(), state: None }],
                    ..Default::default()
                }
            }
            Err(e) => {
                tracing::warn!(user = %id, error = %e, "ZITADEL delete deferred to the outbox");
                self.note(&Err(e));
                SideEffects { enqueue: vec![Enqueue::user(id)], ..Default::default() }
            }
        };
        self.store.delete_with(ResourceKind::User, id, Box::new(move |_| side)).await?;
        if r.is_err() {
            self.kick();
        }
        Ok(())
    }

    /// The users whose roles a group change affects: members before and after,
    /// when the group maps to roles under its old or new name.
    pub(crate) fn group_side_effects(&self, before: Option<&Value>, after: Option<&Value>) -> SideEffects {
        let name = |d: Option<&Value>| d.and_then(|d| d.get("displayName")).and_then(Value::as_str).map(str::to_string);
        let mapped = [name(before), name(after)].iter().flatten().any(|n| self.cfg.maps_group(n));
        if !mapped {
            return SideEffects::default();
        }
        let members = |d: Option<&Value>| -> Vec<String> {
            d.and_then(|d| d.get("members"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|m| m.get("value").and_then(Value::as_str)).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let (old, new) = (members(before), members(after));
        let renamed = name(before).map(|n| n.to_lowercase()) != name(after).map(|n| n.to_lowercase());
        let mut ids: Vec<String> = if renamed || before.is_none() || after.is_none() {
            old.iter().chain(new.iter()).cloned().collect()
        } else {
            // Same name: only members who joined or left change roles.
            old.iter().filter(|m| !new.contains(m)).chain(new.iter().filter(|m| !old.contains(m))).cloned().collect()
        };
        ids.sort();
        ids.dedup();
        SideEffects { enqueue: ids.into_iter().map(Enqueue::user).collect(), ..Default::default() }
    }

    /// Tells the outbox worker new entries are waiting.
    pub(crate) fn wake_outbox(&self) {
        self.kick();
    }

    // ------------------------------------------------------------ outbox

    /// Drains the outbox until `shutdown` resolves.
    pub(crate) async fn run_outbox(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        use futures::StreamExt;
        tokio::pin!(shutdown);
        loop {
            let due = match self.store.outbox_due(now_ms(), 256).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox failed");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.wake.notified() => {},
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                }
                continue;
            }
            let work = futures::stream::iter(due).for_each_concurrent(WORKER_CONCURRENCY, |e| {
                let this = Arc::clone(&self);
                async move { this.process(e).await }
            });
            tokio::select! {
                _ = &mut shutdown => return,
                _ = work => {},
            }
        }
    }

    async fn process(&self, entry: OutboxEntry) {
        if entry.kind != ResourceKind::User {
            let _ = self.store.outbox_complete(&entry, None).await;
            return;
        }
        let id = entry.id.clone();
        let _guard = self.lock(&id).await;
        let result: Result<Option<ProjectionNote>, String> = async {
            match self.store.get(ResourceKind::User, &id).await.map_err(|e| e.to_string())? {
                None => {
                    self.client.delete_user(&id).await.map_err(|e| {
                        self.note(&Err(&e));
                        e.to_string()
                    })?;
                    self.note(&Ok(()));
                    Ok(Some(ProjectionNote { id: id.clone(), state: None }))
                }
                Some(rec) => {
                    let groups = self.group_names(&id).await.map_err(|e| e.to_string())?;
                    let d = desired_user(&rec.doc, &groups, &self.cfg).map_err(|e| e.detail)?;
                    let last = self.last_state(&id).await.map_err(|e| e.to_string())?;
                    match self.sync(&d, last).await {
                        Ok(state) => {
                            self.note(&Ok(()));
                            Ok(Some(ProjectionNote { id: id.clone(), state: serde_json::to_string(&state).ok() }))
                        }
                        Err(e) => {
                            self.note(&Err(&e));
                            Err(e.to_string())
                        }
                    }
                }
            }
        }
        .await;
        match result {
            Ok(projection) => {
                if let Err(e) = self.store.outbox_complete(&entry, projection).await {
                    tracing::error!(error = %e, user = %id, "recording a projected user failed");
                }
            }
            Err(error) => {
                let cap = self.cfg.max_retry_delay_seconds.map(Duration::from_secs).unwrap_or(MAX_BACKOFF);
                let backoff = Duration::from_secs(1u64 << entry.attempts.min(8)).min(cap);
                let next = now_ms() + backoff.as_millis() as u64;
                tracing::warn!(user = %id, attempts = entry.attempts + 1, %error, "projection failed; will retry");
                if let Err(e) = self.store.outbox_retry(&entry, next, error).await {
                    tracing::error!(error = %e, user = %id, "recording a failed projection failed");
                }
            }
        }
    }

    // -------------------------------------------------------- projection

    async fn sync(&self, d: &DesiredUser, last: Option<ProjectedState>) -> Result<ProjectedState, ZitadelError> {
        let (prev_roles, mut authz) = match &last {
            Some(l) => (Some(l.user.roles.clone()), l.authorization_id.clone()),
            None => (None, None),
        };
        match &last {
            None => self.create_or_adopt(d).await?,
            Some(prev) => match self.update_changed(&prev.user, d).await {
                // Deleted in ZITADEL behind our back: create it again.
                Err(e) if e.code() == Some(Code::NotFound) => {
                    self.create_or_adopt(d).await?;
                    authz = None;
                }
                r => r?,
            },
        }
        let roles = d.roles_vec();
        authz = match authz {
            Some(id) if roles.is_empty() => {
                self.client.delete_authorization(&id).await?;
                None
            }
            Some(id) if prev_roles.as_ref() == Some(&d.roles) => Some(id),
            Some(id) => match self.client.update_authorization(&id, &roles).await {
                Err(e) if e.code() == Some(Code::NotFound) => self.ensure_authorization(d, &roles).await?,
                r => r.map(|()| Some(id))?,
            },
            None if roles.is_empty() && last.is_none() => None,
            None => self.ensure_authorization(d, &roles).await?,
        };
        Ok(ProjectedState { user: d.clone(), authorization_id: authz })
    }

    async fn ensure_authorization(&self, d: &DesiredUser, roles: &[String]) -> Result<Option<String>, ZitadelError> {
        let (project, org) = (&self.cfg.project_id, &self.cfg.project_organization_id);
        if roles.is_empty() {
            if let Some(a) = self.client.find_authorization(&d.id, project, org).await? {
                self.client.delete_authorization(&a.id).await?;
            }
            return Ok(None);
        }
        match self.client.create_authorization(&d.id, project, org, roles).await {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.code() == Some(Code::AlreadyExists) => {
                let Some(a) = self.client.find_authorization(&d.id, project, org).await? else { return Err(e) };
                let mut have = a.roles.clone();
                have.sort();
                if have != roles {
                    self.client.update_authorization(&a.id, roles).await?;
                }
                Ok(Some(a.id))
            }
            Err(e) => Err(e),
        }
    }

    async fn create_or_adopt(&self, d: &DesiredUser) -> Result<(), ZitadelError> {
        match self.client.add_human_user(&d.new_human(&self.cfg.organization_id)).await {
            Ok(()) => {
                if !d.active {
                    self.client.deactivate_user(&d.id).await?;
                }
                Ok(())
            }
            Err(e) if e.is(Code::FailedPrecondition, "Errors.User.AlreadyExisting") => self.adopt(d).await,
            Err(e) => Err(e),
        }
    }

    /// Makes an existing ZITADEL user with our id match `d`.
    async fn adopt(&self, d: &DesiredUser) -> Result<(), ZitadelError> {
        let Some(z) = self.client.get_user(&d.id).await? else {
            return Err(ZitadelError::Transport {
                method: "GetUserByID".into(),
                reason: "the user ZITADEL reported as existing is not readable yet".into(),
            });
        };
        let profile = d.profile();
        self.client
            .update_human_user(
                &d.id,
                (z.username != d.username).then_some(d.username.as_str()),
                (z.profile != profile).then_some(&profile),
                (z.email != d.email).then_some(d.email.as_str()),
                phone_change(&z.phone, &d.phone),
            )
            .await?;
        let have = self.client.list_metadata(&d.id).await?;
        let missing: Vec<(String, String)> = d.metadata.iter().filter(|m| !have.contains(m)).cloned().collect();
        if !missing.is_empty() {
            self.client.set_metadata(&d.id, &missing).await?;
        }
        if let Some(link) = d.link() {
            self.client.add_idp_link(&d.id, &link).await?;
        }
        if z.active() != d.active {
            self.set_active(&d.id, d.active).await?;
        }
        Ok(())
    }

    async fn set_active(&self, id: &str, active: bool) -> Result<(), ZitadelError> {
        if active { self.client.reactivate_user(id).await } else { self.client.deactivate_user(id).await }
    }

    /// Sends only what changed since `prev` was projected.
    async fn update_changed(&self, prev: &DesiredUser, d: &DesiredUser) -> Result<(), ZitadelError> {
        let profile = d.profile();
        let phone = phone_change(&prev.phone, &d.phone);
        if prev.username != d.username || prev.profile() != profile || prev.email != d.email || phone.is_some() {
            self.client
                .update_human_user(
                    &d.id,
                    (prev.username != d.username).then_some(d.username.as_str()),
                    (prev.profile() != profile).then_some(&profile),
                    (prev.email != d.email).then_some(d.email.as_str()),
                    phone,
                )
                .await?;
        }
        if prev.metadata != d.metadata {
            let changed: Vec<(String, String)> =
                d.metadata.iter().filter(|m| !prev.metadata.contains(m)).cloned().collect();
            if !changed.is_empty() {
                self.client.set_metadata(&d.id, &changed).await?;
            }
            let removed: Vec<String> = prev
                .metadata
                .iter()
                .filter(|(k, _)| !d.metadata.iter().any(|(k2, _)| k2 == k))
                .map(|(k, _)| k.clone())
                .collect();
            if !removed.is_empty() {
                self.client.delete_metadata(&d.id, &removed).await?;
            }
        }
        if prev.idp_link != d.idp_link {
            if let Some(old) = prev.link() {
                self.client.remove_idp_link(&d.id, &old.idp_id, &old.user_id).await?;
            }
            if let Some(new) = d.link() {
                self.client.add_idp_link(&d.id, &new).await?;
            }
        }
        if prev.active != d.active {
            self.set_active(&d.id, d.active).await?;
        }
        Ok(())
    }
}

/// The phone argument of `update_human_user`: `None` leaves it, `Some(None)` removes it.
fn phone_change<'a>(from: &Option<String>, to: &'a Option<String>) -> Option<Option<&'a str>> {
    match (from, to) {
        (a, b) if a == b => None,
        (_, Some(p)) => Some(Some(p.as_str())),
        (Some(_), None) => Some(None),
        (None, None) => None,
    }
}

fn side_effects(id: &str, outcome: Outcome) -> SideEffects {
    match outcome {
        Outcome::Projected(state) => SideEffects {
            projection: vec![ProjectionNote { id: id.to_string(), state: serde_json::to_string(&state).ok() }],
            ..Default::default()
        },
        Outcome::Deferred => SideEffects {
            enqueue: vec![Enqueue::user(id)],
            projection: vec![ProjectionNote { id: id.to_string(), state: None }],
        },
    }
}

/// The SCIM error for a permanent ZITADEL rejection: what happened and what to
/// change, in words an Entra admin can act on from the provisioning log.
fn rejection(e: &ZitadelError, d: &DesiredUser) -> ScimError {
    let key = e.key().unwrap_or_default();
    let domain = d.username.rsplit_once('@').map(|(_, dom)| dom).unwrap_or_default();
    match (e.code(), key) {
        (_, "Errors.User.DomainNotAllowedAsUsername") => ScimError::invalid_value(format!(
            "ZITADEL refused userName '{}': '{domain}' is a verified domain of another ZITADEL organisation. Verify the domain in the customer's organisation, or map a userName with another domain in Entra",
            d.username
        )),
        (Some(Code::AlreadyExists), "Errors.User.ExternalIDP.AlreadyExists") => ScimError::uniqueness(
            "another ZITADEL user is already linked to this Entra objectId (externalId) through the IdP; remove that link or user in ZITADEL first",
        ),
        (Some(Code::AlreadyExists), _) => ScimError::uniqueness(format!(
            "ZITADEL already has a user named '{}' in another organisation (usernames are unique across the instance). Remove or rename that user in ZITADEL, or map a different userName in Entra",
            d.username
        )),
        (_, k) if k.starts_with("Errors.Project.Role") => ScimError::invalid_value(format!(
            "ZITADEL does not know one of the roles {:?} in the project: fix zitadel.defaultRoles / groupRoles or create the roles in ZITADEL ({k})",
            d.roles
        )),
        (_, k) if k.starts_with("Errors.IDPConfig") || k.starts_with("Errors.IDP") => {
            ScimError::invalid_value(format!(
                "ZITADEL does not accept the IdP link: check zitadel.idpId (the IdP must exist in the instance or the customer organisation) ({k})"
            ))
        }
        (Some(Code::InvalidArgument), _) => ScimError::invalid_value(format!(
            "ZITADEL rejected the user '{}': {} ({key}). Fix the attribute in Entra and retry",
            d.username,
            message_of(e)
        )),
        _ => ScimError::invalid_value(format!("ZITADEL rejected the user '{}': {}", d.username, message_of(e))),
    }
}

fn message_of(e: &ZitadelError) -> String {
    match e {
        ZitadelError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
