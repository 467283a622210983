//! The tenant's ZITADEL binding: the machine user the SCIM server writes
//! with, its instance roles and its credential. Done with the operator's
//! admin credential; every step reads first and writes only what is missing,
//! so a periodic pass repairs drift (roles removed, user or key deleted).

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::apply::{self, ApplyError};
use super::build::{self, CredentialRef};
use super::context::{BoundMemo, ReconcileContext};
use super::crd::{ScimTenant, SecretKeyRef};
use super::names::{annotation, event, reason};
use super::observe::{self, ObserveError, secret_text};
use super::status::Check;
use super::status::checks::bound_ok;
use crate::zitadel::admin::NewMachineKey;
use crate::zitadel::auth::Credential;
use crate::zitadel::client::Client;
use crate::zitadel::config::ZitadelConfig;
use crate::zitadel::error::{Code, ZitadelError};

pub(crate) use super::names::SERVICE_ROLES;
/// The key in the managed credential Secret.
pub(crate) const KEY_FILE: &str = "key.json";

/// What a binding pass found or did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Bound {
    pub user_id: String,
    /// A new key file to store (managed users only); its old keys are removed
    /// once the Secret holds the new one.
    pub new_key: Option<NewMachineKey>,
    /// Keys of the user that no Secret holds (revoked once the Secret is written).
    pub stale_keys: Vec<String>,
    /// Notes for events: (reason, message).
    pub events: Vec<(&'static str, String)>,
}

/// The key id and user id in a stored key file.
pub(crate) fn key_file_ids(text: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((v.get("keyId")?.as_str()?.to_string(), v.get("userId")?.as_str()?.to_string()))
}

/// A Secret payload as `data` (never `stringData`, see build.rs).
pub(crate) fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

/// How a ZITADEL failure shows in `ZitadelBound`.
pub(crate) fn classify(e: &ZitadelError, whose: &str) -> Check {
    let message = format!("{whose}: {e}");
    if e.is_transient() {
        return Check::Pending { reason: reason::ZITADEL_UNAVAILABLE, message };
    }
    match e {
        ZitadelError::Credentials(_) => Check::Failed { reason: reason::ZITADEL_UNAUTHORIZED, message },
        _ if matches!(e.code(), Some(Code::Unauthenticated | Code::PermissionDenied)) => {
            Check::Failed { reason: reason::ZITADEL_UNAUTHORIZED, message }
        }
        _ => Check::Failed { reason: reason::ZITADEL_REJECTED, message },
    }
}

/// The machine user's username: unique per tenant (a namespace has no dot,
/// so `ns.name` cannot collide), readable in the console.
pub(crate) fn service_username(namespace: &str, name: &str) -> String {
    format!("scim-{namespace}.{name}")
}

/// The tenant's managed machine user, if it exists: by the id last recorded
/// (only if it still is that user) or by its username.
pub(crate) async fn find_managed(
    admin: &Client,
    org: &str,
    username: &str,
    known_id: Option<&str>,
) -> Result<Option<String>, ZitadelError> {
    if let Some(id) = known_id
        && let Some(u) = admin.get_user(id).await?
        && u.organization_id == org
        && !u.is_human
        && u.username.eq_ignore_ascii_case(username)
    {
        return Ok(Some(u.id));
    }
    admin.find_user_in_org(org, username).await
}

/// Ensures the managed machine user, its roles and a working key.
/// `known_id` is the id from the last status; `stored_key` the key file in the
/// credential Secret, if any. A user created in this pass has no roles and no
/// keys to read back, which keeps a new tenant at four calls.
pub(crate) async fn ensure_managed(
    admin: &Client,
    org: &str,
    namespace: &str,
    name: &str,
    known_id: Option<&str>,
    stored_key: Option<&str>,
) -> Result<Bound, ZitadelError> {
    let mut bound = Bound::default();
    let username = service_username(namespace, name);
    let (user_id, created) = match find_managed(admin, org, &username, known_id).await? {
        Some(id) => (id, false),
        None => {
            let id = admin
                .create_machine_user(
                    org,
                    &username,
                    &format!("SCIM {namespace}/{name}"),
                    "Writes users provisioned by Entra ID over SCIM (managed by scim-operator)",
                )
                .await?;
            let why = if known_id.is_some() { "was missing and is created again" } else { "created" };
            bound.events.push((event::SERVICE_USER_CREATED, format!("ZITADEL machine user {username} ({id}) {why}")));
            (id, true)
        }
    };
    let roles = if created { None } else { admin.instance_roles(&user_id).await? };
    ensure_roles(admin, &user_id, roles, &mut bound).await?;
    let stored = stored_key.and_then(key_file_ids).filter(|(_, uid)| *uid == user_id);
    let keys = if created { Vec::new() } else { admin.list_machine_keys(&user_id).await? };
    if stored.as_ref().is_none_or(|(kid, _)| !keys.contains(kid)) {
        let issued = admin.add_machine_key(&user_id).await?;
        bound
            .events
            .push((event::SERVICE_USER_KEY_ISSUED, format!("new machine key {} for {username}", issued.key_id)));
        bound.new_key = Some(issued);
        bound.stale_keys = keys;
    } else if let Some((kid, _)) = &stored {
        bound.stale_keys = keys.into_iter().filter(|k| k != kid).collect();
    }
    bound.user_id = user_id;
    Ok(bound)
}

/// Revokes keys no Secret holds any more.
pub(crate) async fn revoke_keys(admin: &Client, user_id: &str, keys: &[String]) -> Result<(), ZitadelError> {
    for k in keys {
        admin.remove_machine_key(user_id, k).await?;
    }
    Ok(())
}

async fn ensure_roles(
    admin: &Client,
    user_id: &str,
    have: Option<Vec<String>>,
    bound: &mut Bound,
) -> Result<(), ZitadelError> {
    let held = have.clone().unwrap_or_default();
    if SERVICE_ROLES.iter().all(|r| held.iter().any(|h| h == r)) {
        return Ok(());
    }
    let mut roles = held;
    for r in SERVICE_ROLES {
        if !roles.iter().any(|h| h == r) {
            roles.push(r.to_string());
        }
    }
    admin.set_instance_roles(user_id, &roles, have.is_some()).await?;
    bound
        .events
        .push((event::ROLES_GRANTED, format!("instance roles {} granted to {user_id}", SERVICE_ROLES.join(", "))));
    Ok(())
}

/// For `existingSecretRef`: the credential must work, and its user gets the
/// same roles a managed user would.
pub(crate) async fn ensure_existing(
    admin: &Client,
    admin_cfg: &ZitadelConfig,
    credential: &str,
) -> Result<Bound, Check> {
    let cred = Credential::parse(credential).map_err(|e| Check::Failed {
        reason: reason::INVALID_CREDENTIAL,
        message: format!("spec.zitadel.serviceUser.existingSecretRef: {e}"),
    })?;
    let tenant_client = Client::with_credential(admin_cfg, cred)
        .map_err(|e| Check::Failed { reason: reason::INVALID_CREDENTIAL, message: e.to_string() })?;
    let user_id = match tenant_client.whoami().await {
        Ok(id) => id,
        Err(e) if !e.is_transient() => {
            return Err(Check::Failed {
                reason: reason::SERVICE_USER_CREDENTIAL_REJECTED,
                message: format!("ZITADEL rejected the credential in existingSecretRef: {e}"),
            });
        }
        Err(e) => return Err(classify(&e, "the service user's credential")),
    };
    let mut bound = Bound { user_id: user_id.clone(), ..Default::default() };
    let admin_err = |e: ZitadelError| classify(&e, "the operator's admin credential");
    let roles = admin.instance_roles(&user_id).await.map_err(admin_err)?;
    ensure_roles(admin, &user_id, roles, &mut bound).await.map_err(admin_err)?;
    Ok(bound)
}

/// Where the SCIM server reads its ZITADEL credential from.
pub(crate) fn credential_ref(secret_name: String, key: String, text: Option<&str>) -> CredentialRef {
    let is_key_file = text.map(|t| t.trim_start().starts_with('{')).unwrap_or(key.ends_with(".json"));
    CredentialRef { secret_name, key, is_key_file }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BindError {
    #[error(transparent)]
    Read(#[from] ObserveError),
}

/// The ZITADEL binding for this pass: a check, the server's credential, and
/// what to do once the credential Secret is stored.
pub(crate) struct BindOutcome {
    pub check: Check,
    pub cred: CredentialRef,
    pub user_id: Option<String>,
    /// A new managed key's Secret.
    pub new_key: Option<Secret>,
    /// Machine keys to revoke once the credential Secret is written.
    pub stale_keys: Vec<String>,
    pub events: Vec<(&'static str, String)>,
}

impl BindOutcome {
    fn not_bound(check: Check, cred: CredentialRef, previous_user: Option<String>) -> Self {
        BindOutcome { check, cred, user_id: previous_user, new_key: None, stale_keys: vec![], events: vec![] }
    }

    fn bound(cred: CredentialRef, user_id: String) -> Self {
        BindOutcome {
            check: bound_ok(&user_id),
            cred,
            user_id: Some(user_id),
            new_key: None,
            stale_keys: vec![],
            events: vec![],
        }
    }
}

/// One tenant's binding pass. A binding made for the same generation and
/// credential within `resync` is trusted without asking ZITADEL again.
struct BindPass<'a> {
    ctx: &'a ReconcileContext,
    tenant: &'a ScimTenant,
    namespace: String,
    uid: &'a str,
    generation: i64,
    previous_user: Option<String>,
    remembered: Option<BoundMemo>,
}

impl BindPass<'_> {
    fn fresh(&self, credential: &Option<String>) -> Option<BoundMemo> {
        let resync = self.ctx.operator.cfg.resync;
        self.remembered
            .clone()
            .filter(|m| m.at.elapsed() < resync && m.generation == self.generation && m.credential == *credential)
    }

    fn remember(&self, credential: Option<String>, user_id: &str) {
        let memo = BoundMemo { at: Instant::now(), generation: self.generation, credential, user_id: user_id.into() };
        self.ctx.operator.memo.lock().entry(self.uid.into()).or_default().bound = Some(memo);
    }

    fn not_bound(&self, check: Check, cred: CredentialRef) -> BindOutcome {
        BindOutcome::not_bound(check, cred, self.previous_user.clone())
    }
}

/// Step 4, bind ZITADEL: the machine user the tenant's server writes with,
/// either managed by the operator or named by `existingSecretRef`.
pub(crate) async fn bind(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    uid: &str,
    generation: i64,
) -> Result<BindOutcome, BindError> {
    let pass = BindPass {
        ctx,
        tenant,
        namespace: tenant.namespace().unwrap_or_default(),
        uid,
        generation,
        previous_user: tenant.status.as_ref().and_then(|s| s.service_user_id.clone()),
        remembered: ctx.operator.memo.lock().get(uid).and_then(|m| m.bound.clone()),
    };
    let service_user = tenant.spec.zitadel.service_user.clone().unwrap_or_default();
    match service_user.existing_secret_ref {
        Some(secret_ref) => bind_existing(&pass, &secret_ref).await,
        None => bind_managed(&pass).await,
    }
}

async fn bind_existing(pass: &BindPass<'_>, secret_ref: &SecretKeyRef) -> Result<BindOutcome, BindError> {
    let secret = observe::secret_from_api(pass.ctx, &pass.namespace, &secret_ref.name).await?;
    let text = secret.as_ref().and_then(|s| secret_text(s, &secret_ref.key));
    let cred = credential_ref(secret_ref.name.clone(), secret_ref.key.clone(), text.as_deref());
    let Some(text) = text else {
        let check = Check::Failed {
            reason: reason::CREDENTIAL_SECRET_MISSING,
            message: format!(
                "Secret {}/{} has no key '{}' (spec.zitadel.serviceUser.existingSecretRef)",
                pass.namespace, secret_ref.name, secret_ref.key
            ),
        };
        return Ok(pass.not_bound(check, cred));
    };
    let version = secret.and_then(|s| s.metadata.resource_version);
    if let Some(memo) = pass.fresh(&version) {
        return Ok(BindOutcome::bound(cred, memo.user_id));
    }
    let admin = match pass.ctx.operator.admin() {
        Ok(admin) => admin,
        Err(check) => return Ok(pass.not_bound(check, cred)),
    };
    Ok(match ensure_existing(&admin, &pass.ctx.operator.cfg.admin_zitadel(), &text).await {
        Ok(mut bound) => {
            remove_unused_managed_user(&admin, pass, &bound.user_id, &mut bound.events).await;
            pass.remember(version, &bound.user_id);
            BindOutcome { events: bound.events, ..BindOutcome::bound(cred, bound.user_id) }
        }
        Err(check) => pass.not_bound(check, cred),
    })
}

/// A tenant switched from a managed user to its own credential leaves no
/// privileged machine user behind. Failures only delay that to a later pass.
async fn remove_unused_managed_user(
    admin: &Client,
    pass: &BindPass<'_>,
    in_use: &str,
    events: &mut Vec<(&'static str, String)>,
) {
    let org = &pass.tenant.spec.zitadel.project_organization_id;
    let managed = service_username(&pass.namespace, &pass.tenant.name_any());
    match admin.find_user_in_org(org, &managed).await {
        Ok(Some(id)) if id != in_use => match admin.delete_user(&id).await {
            Ok(()) => events.push((
                event::SERVICE_USER_DELETED,
                format!("the managed machine user {managed} ({id}) is no longer used and was removed"),
            )),
            Err(e) => tracing::warn!(error = %e, "cannot remove the unused managed machine user"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot look for an unused managed machine user"),
    }
}

/// The stored key file's text and key id.
fn stored_key_file(secret: &Option<Secret>) -> (Option<String>, Option<String>) {
    let text = secret.as_ref().and_then(|s| secret_text(s, KEY_FILE));
    let key_id = text.as_deref().and_then(key_file_ids).map(|(key_id, _)| key_id);
    (text, key_id)
}

/// Managed: the operator's machine user with a key in `<tenant>-scim-zitadel`.
async fn bind_managed(pass: &BindPass<'_>) -> Result<BindOutcome, BindError> {
    let tenant = pass.tenant;
    let secret_name = build::credential_secret_name(tenant);
    let cred = CredentialRef { secret_name: secret_name.clone(), key: KEY_FILE.into(), is_key_file: true };
    let (mut stored_text, mut stored_id) =
        stored_key_file(&observe::secret_now(pass.ctx, &pass.namespace, &secret_name).await?);
    if pass.remembered.as_ref().is_some_and(|m| m.credential != stored_id) {
        // Either someone changed the Secret or the cache has not seen our
        // own write yet; only the API server can tell, and issuing a key on a
        // stale view would revoke the one just stored.
        (stored_text, stored_id) =
            stored_key_file(&observe::secret_from_api(pass.ctx, &pass.namespace, &secret_name).await?);
    }
    if let Some(memo) = pass.fresh(&stored_id) {
        return Ok(BindOutcome::bound(cred, memo.user_id));
    }
    let admin = match pass.ctx.operator.admin() {
        Ok(admin) => admin,
        Err(check) => return Ok(pass.not_bound(check, cred)),
    };
    let org = &tenant.spec.zitadel.project_organization_id;
    let name = tenant.name_any();
    let ensured =
        ensure_managed(&admin, org, &pass.namespace, &name, pass.previous_user.as_deref(), stored_text.as_deref())
            .await;
    match ensured {
        Ok(Bound { user_id, new_key, events, stale_keys }) => {
            pass.remember(new_key.as_ref().map(|k| k.key_id.clone()).or(stored_id), &user_id);
            let new_key = new_key.map(|key| {
                let mut secret = build::credential_secret(tenant, &data(&[(KEY_FILE, &key.key_file)]));
                secret.metadata.annotations =
                    Some(BTreeMap::from([(annotation::ZITADEL_KEY_ID.to_string(), key.key_id.clone())]));
                secret
            });
            Ok(BindOutcome { new_key, stale_keys, events, ..BindOutcome::bound(cred, user_id) })
        }
        Err(e) => Ok(pass.not_bound(classify(&e, "the operator's admin credential"), cred)),
    }
}

/// Stores a newly issued machine key, then revokes the user's older keys.
/// Storing first means a later failure cannot make the next pass issue yet
/// another key.
pub(crate) async fn store_credential(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    outcome: &BindOutcome,
) -> Result<(), ApplyError> {
    if let Some(secret) = &outcome.new_key {
        apply::ensure(&ctx.operator.client, &ctx.stores.secrets, secret).await?;
    }
    if !outcome.stale_keys.is_empty()
        && let (Ok(admin), Some(user)) = (ctx.operator.admin(), &outcome.user_id)
        && let Err(e) = revoke_keys(&admin, user, &outcome.stale_keys).await
    {
        // The next ZITADEL pass removes them; a stale key is harmless meanwhile.
        tracing::warn!(tenant = %tenant.name_any(), error = %e, "cannot remove old machine keys");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_retry_and_rejections_stall() {
        let unavailable = ZitadelError::Transport { method: "m".into(), reason: "connection refused".into() };
        assert!(matches!(classify(&unavailable, "x"), Check::Pending { reason: "ZitadelUnavailable", .. }));
        let denied = ZitadelError::Api {
            method: "m".into(),
            http_status: 401,
            code: Code::Unauthenticated,
            key: None,
            message: "token is invalid".into(),
            retry_after: None,
        };
        assert!(matches!(classify(&denied, "x"), Check::Failed { reason: "ZitadelUnauthorized", .. }));
    }

    #[test]
    fn key_file_ids_and_credential_kind() {
        assert_eq!(
            key_file_ids(r#"{"type":"serviceaccount","keyId":"k1","key":"-----","userId":"u1"}"#),
            Some(("k1".into(), "u1".into()))
        );
        assert_eq!(key_file_ids("pat-text"), None);
        assert!(credential_ref("s".into(), "k".into(), Some("{\"keyId\":1}")).is_key_file);
        assert!(!credential_ref("s".into(), "pat".into(), Some("abc")).is_key_file);
    }
}
