//! Step 4b, self-service: the ZITADEL API application the tenant's server
//! introspects its admins' access tokens with. Managed (the default): the
//! operator finds or creates the application in the tenant's project, keeps
//! one key of it in `<tenant>-scim-introspection`, and removes both when
//! self-service is switched off or the tenant is deleted. With
//! `introspectionSecretRef` the named Secret is checked and mounted instead.
//! Like the binding, every step reads first and writes only what is missing.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::apply::{self, ApplyError};
use super::binding::{classify, data};
use super::build::self_service::{CLIENT_ID_KEY, CLIENT_SECRET_KEY, KEY_FILE_KEY, enabled};
use super::build::{self, IntrospectionMount, introspection_secret_name};
use super::context::{ReconcileContext, SelfServiceMemo};
use super::crd::ScimTenant;
use super::names::{annotation, event, reason};
use super::observe::{self, ObserveError, secret_text};
use super::status::Check;
use crate::zitadel::apps::{ApiApp, NewAppKey};
use crate::zitadel::client::Client;
use crate::zitadel::error::{Code, ZitadelError};

/// What this pass found or did for self-service.
#[derive(Debug, Default)]
pub(crate) struct SelfServiceOutcome {
    /// `SelfServiceReady`; `None` while self-service is off.
    pub check: Option<Check>,
    /// The credential the server mounts, once there is one.
    pub mount: Option<IntrospectionMount>,
    /// The managed application, for status (kept while its removal is pending).
    pub app: Option<ApiApp>,
    pub events: Vec<(&'static str, String)>,
    /// A newly issued key's Secret.
    new_secret: Option<Secret>,
    /// Keys of the managed application to revoke once the Secret is written.
    stale_keys: Vec<String>,
    /// The managed application is gone: its Secret goes too.
    remove_secret: bool,
}

/// The managed application's name in the project, one per tenant (the
/// project is shared by every customer organisation).
pub(crate) fn app_name(namespace: &str, name: &str) -> String {
    format!("scim-self-service-{namespace}.{name}")
}

/// The key the managed Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredKey {
    key_id: String,
    app_id: String,
    client_id: String,
}

/// From the Secret's annotations (written with it), else from the key JSON.
fn stored_key(secret: &Option<Secret>) -> Option<StoredKey> {
    let secret = secret.as_ref()?;
    let key_file = secret_text(secret, KEY_FILE_KEY)?;
    let parsed: serde_json::Value = serde_json::from_str(&key_file).ok()?;
    let field = |k: &str| parsed.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let annotations = secret.annotations();
    Some(StoredKey {
        key_id: annotations.get(annotation::ZITADEL_KEY_ID).cloned().or_else(|| field("keyId"))?,
        app_id: annotations.get(annotation::ZITADEL_APP_ID).cloned().or_else(|| field("appId"))?,
        client_id: secret_text(secret, CLIENT_ID_KEY).or_else(|| field("clientId"))?,
    })
}

fn managed_mount(tenant: &ScimTenant, client_id: &str, key_id: &str) -> IntrospectionMount {
    IntrospectionMount {
        secret_name: introspection_secret_name(tenant),
        client_id: client_id.into(),
        is_key_file: true,
        version: key_id.into(),
    }
}

/// What ZITADEL holds after `ensure_app`.
struct Ensured {
    app: ApiApp,
    new_key: Option<NewAppKey>,
    stale_keys: Vec<String>,
    events: Vec<(&'static str, String)>,
}

/// Finds or creates the application and makes sure `stored` is one of its
/// keys, issuing a key otherwise. An application created in this pass has no
/// keys to read back.
async fn ensure_app(
    admin: &Client,
    org: &str,
    project: &str,
    name: &str,
    stored: Option<&StoredKey>,
) -> Result<Ensured, ZitadelError> {
    let mut events = Vec::new();
    let (app, created) = match admin.find_api_app(org, project, name).await? {
        Some(app) => (app, false),
        None => {
            let app = match admin.create_api_app(org, project, name).await {
                // Made meanwhile (a list that lagged behind a create): adopt it.
                Err(e) if e.code() == Some(Code::AlreadyExists) => {
                    admin.find_api_app(org, project, name).await?.ok_or(e)?
                }
                r => r?,
            };
            let message = format!("ZITADEL API application {name} ({}) created in project {project}", app.app_id);
            events.push((event::INTROSPECTION_APP_CREATED, message));
            (app, true)
        }
    };
    let keys = if created { Vec::new() } else { admin.list_app_keys(org, project, &app.app_id).await? };
    let held = stored.filter(|s| s.app_id == app.app_id && keys.contains(&s.key_id));
    let (new_key, stale_keys) = match held {
        Some(s) => (None, keys.into_iter().filter(|k| *k != s.key_id).collect()),
        None => {
            let key = admin.add_app_key(org, project, &app.app_id).await?;
            events.push((event::INTROSPECTION_KEY_ISSUED, format!("new key {} for {name}", key.key_id)));
            (Some(key), keys)
        }
    };
    Ok(Ensured { app, new_key, stale_keys, events })
}

/// Removes the managed application: the one named for this tenant and the
/// one status recorded (they differ only if it was made again meanwhile).
/// Returns the ids removed.
pub(crate) async fn remove_app(
    admin: &Client,
    tenant: &ScimTenant,
    recorded: Option<&str>,
) -> Result<Vec<String>, ZitadelError> {
    let z = &tenant.spec.zitadel;
    let (org, project) = (&z.project_organization_id, &z.project_id);
    let name = app_name(&tenant.namespace().unwrap_or_default(), &tenant.name_any());
    let mut ids: Vec<String> = recorded.map(str::to_string).into_iter().collect();
    if let Some(found) = admin.find_api_app(org, project, &name).await?
        && !ids.contains(&found.app_id)
    {
        ids.push(found.app_id);
    }
    for id in &ids {
        admin.remove_app(org, project, id).await?;
    }
    Ok(ids)
}

/// Step 4b. Reads the Secrets it needs; ZITADEL failures become the check.
pub(crate) async fn ensure(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    uid: &str,
    generation: i64,
) -> Result<SelfServiceOutcome, ObserveError> {
    let namespace = tenant.namespace().unwrap_or_default();
    let Some(spec) = enabled(tenant) else {
        return Ok(switch_off(ctx, tenant, uid, &namespace).await);
    };
    match &spec.introspection_secret_ref {
        Some(r) => {
            let mut outcome = own_secret(ctx, &namespace, &r.name).await?;
            // Switched from a managed application to one you manage.
            let off = switch_off(ctx, tenant, uid, &namespace).await;
            outcome.events.extend(off.events);
            outcome.app = off.app;
            outcome.remove_secret = off.remove_secret;
            Ok(outcome)
        }
        None => managed(ctx, tenant, uid, generation, &namespace).await,
    }
}

/// A managed application left from before (recorded in status, or its
/// Secret still there) is removed. Nothing left means no ZITADEL call.
async fn switch_off(ctx: &ReconcileContext, tenant: &ScimTenant, uid: &str, namespace: &str) -> SelfServiceOutcome {
    let recorded = tenant.status.as_ref().and_then(|s| s.self_service.as_ref()).and_then(|s| s.application_id.clone());
    let secret_name = introspection_secret_name(tenant);
    let secret = ctx.stores.secrets.get(&ObjectRef::new(&secret_name).within(namespace));
    if recorded.is_none() && secret.is_none() {
        return SelfServiceOutcome::default();
    }
    let recorded = recorded.or_else(|| secret.and_then(|s| s.annotations().get(annotation::ZITADEL_APP_ID).cloned()));
    let kept = SelfServiceOutcome {
        app: recorded.clone().map(|app_id| ApiApp { app_id, client_id: String::new() }),
        ..Default::default()
    };
    let admin = match ctx.operator.admin() {
        Ok(admin) => admin,
        Err(check) => {
            tracing::warn!(tenant = %tenant.name_any(), reason = check.reason(), "cannot remove the self-service application yet");
            return kept;
        }
    };
    match remove_app(&admin, tenant, recorded.as_deref()).await {
        Ok(ids) => {
            if let Some(m) = ctx.operator.memo.lock().get_mut(uid) {
                m.self_service = None;
            }
            let events = ids
                .iter()
                .map(|id| {
                    let message = format!("self-service is off: ZITADEL API application {id} and its keys removed");
                    (event::INTROSPECTION_APP_DELETED, message)
                })
                .collect();
            SelfServiceOutcome { remove_secret: true, events, ..Default::default() }
        }
        Err(e) => {
            // Status keeps the application id, so a later pass tries again.
            tracing::warn!(tenant = %tenant.name_any(), error = %e, "cannot remove the self-service application");
            kept
        }
    }
}

/// `introspectionSecretRef`: `clientId` (or the key JSON's) and exactly one
/// of `key.json` and `clientSecret`.
async fn own_secret(ctx: &ReconcileContext, namespace: &str, name: &str) -> Result<SelfServiceOutcome, ObserveError> {
    let field = "spec.selfService.introspectionSecretRef";
    let failed =
        |reason, message| SelfServiceOutcome { check: Some(Check::Failed { reason, message }), ..Default::default() };
    let Some(secret) = observe::secret_from_api(ctx, namespace, name).await? else {
        let message = format!("Secret {namespace}/{name} ({field}) does not exist");
        return Ok(failed(reason::INTROSPECTION_SECRET_MISSING, message));
    };
    let text = |k: &str| secret_text(&secret, k).filter(|t| !t.trim().is_empty());
    let (key_file, client_secret) = (text(KEY_FILE_KEY), text(CLIENT_SECRET_KEY));
    let invalid = |why: &str| {
        Ok(failed(reason::INTROSPECTION_SECRET_INVALID, format!("Secret {namespace}/{name} ({field}) {why}")))
    };
    let parsed = match &key_file {
        Some(k) => match serde_json::from_str::<serde_json::Value>(k) {
            Ok(v) if v.get("keyId").is_some() && v.get("key").is_some() => Some(v),
            _ => return invalid("has a key.json that is not an API application's key JSON (keyId, key, clientId)"),
        },
        None => None,
    };
    let client_id = text(CLIENT_ID_KEY)
        .or_else(|| parsed.as_ref().and_then(|v| v.get("clientId")?.as_str().map(str::to_string)))
        .map(|c| c.trim().to_string());
    let Some(client_id) = client_id else {
        return invalid("has no clientId: add the API application's client id");
    };
    let is_key_file = match (&key_file, &client_secret) {
        (Some(_), Some(_)) => {
            return invalid("holds both key.json and clientSecret: keep the one the application authenticates with");
        }
        (None, None) => return invalid("holds neither key.json (private-key JWT) nor clientSecret (Basic)"),
        (Some(_), None) => true,
        (None, Some(_)) => false,
    };
    let mount = IntrospectionMount {
        secret_name: name.into(),
        client_id: client_id.clone(),
        is_key_file,
        version: secret.resource_version().unwrap_or_default(),
    };
    let how = if is_key_file { "private-key JWT" } else { "client secret" };
    let check = Check::Ok {
        reason: reason::INTROSPECTION_SECRET_READY,
        message: format!("access tokens are introspected as client {client_id} ({how}) from Secret {name}"),
    };
    Ok(SelfServiceOutcome { check: Some(check), mount: Some(mount), ..Default::default() })
}

/// The operator's application: trusted from memory for `resync` if the
/// Secret still holds the key it was made with.
async fn managed(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    uid: &str,
    generation: i64,
    namespace: &str,
) -> Result<SelfServiceOutcome, ObserveError> {
    let secret_name = introspection_secret_name(tenant);
    let mut stored = stored_key(&observe::secret_now(ctx, namespace, &secret_name).await?);
    let memo = ctx.operator.memo.lock().get(uid).and_then(|m| m.self_service.clone());
    if memo.as_ref().is_some_and(|m| Some(&m.key_id) != stored.as_ref().map(|s| &s.key_id)) {
        // Our own write may not be in the cache yet; only the API server can tell.
        stored = stored_key(&observe::secret_from_api(ctx, namespace, &secret_name).await?);
    }
    let resync = ctx.operator.cfg.resync;
    if let (Some(m), Some(s)) = (&memo, &stored)
        && m.at.elapsed() < resync
        && m.generation == generation
        && m.key_id == s.key_id
    {
        return Ok(ready(tenant, ApiApp { app_id: m.app_id.clone(), client_id: m.client_id.clone() }, &m.key_id));
    }
    // While ZITADEL cannot be asked, the server keeps the key it has.
    let not_ready = |check: Check| SelfServiceOutcome {
        check: Some(check),
        mount: stored.as_ref().map(|s| managed_mount(tenant, &s.client_id, &s.key_id)),
        app: stored.as_ref().map(|s| ApiApp { app_id: s.app_id.clone(), client_id: s.client_id.clone() }),
        ..Default::default()
    };
    let admin = match ctx.operator.admin() {
        Ok(admin) => admin,
        Err(check) => return Ok(not_ready(check)),
    };
    let z = &tenant.spec.zitadel;
    let name = app_name(namespace, &tenant.name_any());
    let ensured = match ensure_app(&admin, &z.project_organization_id, &z.project_id, &name, stored.as_ref()).await {
        Ok(ensured) => ensured,
        Err(e) => return Ok(not_ready(classify(&e, "the self-service API application"))),
    };
    let key_id = ensured.new_key.as_ref().map(|k| k.key_id.clone()).or(stored.map(|s| s.key_id)).unwrap_or_default();
    let memo = SelfServiceMemo {
        at: Instant::now(),
        generation,
        key_id: key_id.clone(),
        app_id: ensured.app.app_id.clone(),
        client_id: ensured.app.client_id.clone(),
    };
    ctx.operator.memo.lock().entry(uid.into()).or_default().self_service = Some(memo);
    let mut outcome = ready(tenant, ensured.app.clone(), &key_id);
    outcome.new_secret = ensured.new_key.map(|key| key_secret(tenant, &ensured.app, &key));
    outcome.stale_keys = ensured.stale_keys;
    outcome.events = ensured.events;
    Ok(outcome)
}

fn ready(tenant: &ScimTenant, app: ApiApp, key_id: &str) -> SelfServiceOutcome {
    let check = Check::Ok {
        reason: reason::APPLICATION_READY,
        message: format!(
            "ZITADEL API application {} (client {}) introspects access tokens with the key in Secret {}",
            app.app_id,
            app.client_id,
            introspection_secret_name(tenant)
        ),
    };
    SelfServiceOutcome {
        check: Some(check),
        mount: Some(managed_mount(tenant, &app.client_id, key_id)),
        app: Some(app),
        ..Default::default()
    }
}

/// The managed Secret: the key JSON and the client id, annotated with what
/// the next pass compares against ZITADEL.
fn key_secret(tenant: &ScimTenant, app: &ApiApp, key: &NewAppKey) -> Secret {
    let mut secret =
        build::introspection_secret(tenant, &data(&[(CLIENT_ID_KEY, &app.client_id), (KEY_FILE_KEY, &key.key_file)]));
    secret.metadata.annotations = Some(BTreeMap::from([
        (annotation::ZITADEL_KEY_ID.to_string(), key.key_id.clone()),
        (annotation::ZITADEL_APP_ID.to_string(), app.app_id.clone()),
    ]));
    secret
}

/// Stores a newly issued key, then revokes the application's other keys
/// (storing first, so a failure cannot make the next pass issue another);
/// deletes the Secret of an application removed.
pub(crate) async fn store(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    outcome: &SelfServiceOutcome,
) -> Result<(), ApplyError> {
    let operator = &ctx.operator;
    if let Some(secret) = &outcome.new_secret {
        apply::ensure(&operator.client, &ctx.stores.secrets, secret).await?;
    }
    if !outcome.stale_keys.is_empty()
        && let (Ok(admin), Some(app)) = (operator.admin(), &outcome.app)
    {
        let z = &tenant.spec.zitadel;
        for k in &outcome.stale_keys {
            if let Err(e) = admin.remove_app_key(&z.project_organization_id, &z.project_id, &app.app_id, k).await {
                // The next ZITADEL pass removes it; an unused key is harmless meanwhile.
                tracing::warn!(tenant = %tenant.name_any(), error = %e, "cannot remove an old self-service key");
                break;
            }
        }
    }
    if outcome.remove_secret {
        let namespace = tenant.namespace().unwrap_or_default();
        let name = introspection_secret_name(tenant);
        apply::delete_if_present(&operator.client, &ctx.stores.secrets, &namespace, &name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(entries: &[(&str, &str)], annotations: &[(&str, &str)]) -> Option<Secret> {
        let mut s = Secret {
            data: Some(entries.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Default::default()
        };
        s.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Some(s)
    }

    #[test]
    fn the_stored_key_comes_from_annotations_or_the_key_json() {
        let json = r#"{"type":"application","keyId":"k1","key":"-----BEGIN","appId":"a1","clientId":"c1"}"#;
        let want = StoredKey { key_id: "k1".into(), app_id: "a1".into(), client_id: "c1".into() };
        assert_eq!(stored_key(&secret(&[("key.json", json)], &[])), Some(want));
        let annotated = secret(
            &[("key.json", r#"{"key":"x"}"#), ("clientId", "c2")],
            &[(annotation::ZITADEL_KEY_ID, "k2"), (annotation::ZITADEL_APP_ID, "a2")],
        );
        assert_eq!(
            stored_key(&annotated).map(|s| (s.key_id, s.app_id, s.client_id)),
            Some(("k2".into(), "a2".into(), "c2".into()))
        );
        assert_eq!(stored_key(&secret(&[("key.json", "not json")], &[])), None);
        assert_eq!(stored_key(&None), None);
    }

    #[test]
    fn application_names_are_unique_per_tenant() {
        assert_eq!(app_name("tenants", "acme"), "scim-self-service-tenants.acme");
    }
}
