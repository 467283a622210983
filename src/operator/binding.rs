//! The tenant's ZITADEL binding: the machine user the SCIM server writes
//! with, its instance roles and its credential. Done with the operator's
//! admin credential; every step reads first and writes only what is missing,
//! so a periodic pass repairs drift (roles removed, user or key deleted).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::build::CredentialRef;
use super::status::Check;
use crate::zitadel::admin::NewMachineKey;
use crate::zitadel::auth::Credential;
use crate::zitadel::client::Client;
use crate::zitadel::config::ZitadelConfig;
use crate::zitadel::error::{Code, ZitadelError};

/// The instance roles the SCIM server needs (reference §5.2).
pub const SERVICE_ROLES: [&str; 2] = ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"];
/// The key in the managed credential Secret.
pub const KEY_FILE: &str = "key.json";

/// What a binding pass found or did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bound {
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
pub fn key_file_ids(text: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((v.get("keyId")?.as_str()?.to_string(), v.get("userId")?.as_str()?.to_string()))
}

pub fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// A Secret payload as `data` (never `stringData`, see build.rs).
pub fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

/// How a ZITADEL failure shows in `ZitadelBound`.
pub fn classify(e: &ZitadelError, whose: &str) -> Check {
    let message = format!("{whose}: {e}");
    if e.is_transient() {
        return Check::Pending { reason: "ZitadelUnavailable", message };
    }
    match e {
        ZitadelError::Credentials(_) => Check::Failed { reason: "ZitadelUnauthorized", message },
        _ if matches!(e.code(), Some(Code::Unauthenticated | Code::PermissionDenied)) => {
            Check::Failed { reason: "ZitadelUnauthorized", message }
        }
        _ => Check::Failed { reason: "ZitadelRejected", message },
    }
}

/// The machine user's username: unique per tenant (a namespace has no dot,
/// so `ns.name` cannot collide), readable in the console.
pub fn service_username(namespace: &str, name: &str) -> String {
    format!("scim-{namespace}.{name}")
}

/// The tenant's managed machine user, if it exists: by the id last recorded
/// (only if it still is that user) or by its username.
pub async fn find_managed(
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
pub async fn ensure_managed(
    admin: &Client,
    org: &str,
    namespace: &str,
    name: &str,
    known_id: Option<&str>,
    stored_key: Option<&str>,
) -> Result<Bound, ZitadelError> {
    let mut b = Bound::default();
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
            b.events.push(("ServiceUserCreated", format!("ZITADEL machine user {username} ({id}) {why}")));
            (id, true)
        }
    };
    let roles = if created { None } else { admin.instance_roles(&user_id).await? };
    ensure_roles(admin, &user_id, roles, &mut b).await?;
    let stored = stored_key.and_then(key_file_ids).filter(|(_, uid)| *uid == user_id);
    let keys = if created { Vec::new() } else { admin.list_machine_keys(&user_id).await? };
    if stored.as_ref().is_none_or(|(kid, _)| !keys.contains(kid)) {
        let k = admin.add_machine_key(&user_id).await?;
        b.events.push(("ServiceUserKeyIssued", format!("new machine key {} for {username}", k.key_id)));
        b.new_key = Some(k);
        b.stale_keys = keys;
    } else if let Some((kid, _)) = &stored {
        b.stale_keys = keys.into_iter().filter(|k| k != kid).collect();
    }
    b.user_id = user_id;
    Ok(b)
}

/// Revokes keys no Secret holds any more.
pub async fn revoke_keys(admin: &Client, user_id: &str, keys: &[String]) -> Result<(), ZitadelError> {
    for k in keys {
        admin.remove_machine_key(user_id, k).await?;
    }
    Ok(())
}

async fn ensure_roles(
    admin: &Client,
    user_id: &str,
    have: Option<Vec<String>>,
    b: &mut Bound,
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
    b.events.push(("RolesGranted", format!("instance roles {} granted to {user_id}", SERVICE_ROLES.join(", "))));
    Ok(())
}

/// For `existingSecretRef`: the credential must work, and its user gets the
/// same roles a managed user would.
pub async fn ensure_existing(admin: &Client, admin_cfg: &ZitadelConfig, credential: &str) -> Result<Bound, Check> {
    let cred = Credential::parse(credential).map_err(|e| Check::Failed {
        reason: "InvalidCredential",
        message: format!("spec.zitadel.serviceUser.existingSecretRef: {e}"),
    })?;
    let tenant_client = Client::with_credential(admin_cfg, cred)
        .map_err(|e| Check::Failed { reason: "InvalidCredential", message: e.to_string() })?;
    let user_id = match tenant_client.whoami().await {
        Ok(id) => id,
        Err(e) if !e.is_transient() => {
            return Err(Check::Failed {
                reason: "ServiceUserCredentialRejected",
                message: format!("ZITADEL rejected the credential in existingSecretRef: {e}"),
            });
        }
        Err(e) => return Err(classify(&e, "the service user's credential")),
    };
    let mut b = Bound { user_id: user_id.clone(), ..Default::default() };
    let admin_err = |e: ZitadelError| classify(&e, "the operator's admin credential");
    let roles = admin.instance_roles(&user_id).await.map_err(admin_err)?;
    ensure_roles(admin, &user_id, roles, &mut b).await.map_err(admin_err)?;
    Ok(b)
}

/// Where the SCIM server reads its ZITADEL credential from.
pub fn credential_ref(secret_name: String, key: String, text: Option<&str>) -> CredentialRef {
    let is_key_file = text.map(|t| t.trim_start().starts_with('{')).unwrap_or(key.ends_with(".json"));
    CredentialRef { secret_name, key, is_key_file }
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
