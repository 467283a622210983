//! Step 1, observe: the clock and the tenant's key Secrets, as the caches
//! show them or, where the caches may lag behind our own writes, as the API
//! server does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use time::OffsetDateTime;

use super::build;
use super::context::ReconcileContext;
use super::crd::ScimTenant;
use super::keys::{self, FoundKey};
use super::names::annotation;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ObserveError {
    #[error("Kubernetes API: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Now, to the second (status timestamps have no fraction), as `time` and as
/// a Kubernetes `Time`.
pub(crate) fn now() -> (OffsetDateTime, Time) {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let timestamp = k8s_openapi::jiff::Timestamp::from_second(now.unix_timestamp())
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    (now, Time(timestamp))
}

/// A Secret value as text (`data`, which is all the operator writes).
pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// A Secret read from the API server, bypassing the cache.
pub(crate) async fn secret_from_api(
    ctx: &ReconcileContext,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, ObserveError> {
    Api::<Secret>::namespaced(ctx.operator.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| ObserveError::ReadSecret { namespace: namespace.into(), name: name.into(), source })
}

/// A Secret from the cache, or from the API server when the cache has none:
/// the cache can lag behind our own write, and acting on that lag would
/// generate a key twice.
pub(crate) async fn secret_now(
    ctx: &ReconcileContext,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, ObserveError> {
    if let Some(cached) = ctx.stores.secrets.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(Some(cached.as_ref().clone()));
    }
    secret_from_api(ctx, namespace, name).await
}

fn owned_by(obj: &impl Resource, uid: &str) -> bool {
    obj.meta().owner_references.as_ref().is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

fn found_key(secret: &Secret, now: OffsetDateTime) -> Option<FoundKey> {
    let token = secret_text(secret, "token").filter(|t| !t.is_empty())?;
    let created_at = secret
        .annotations()
        .get(annotation::CREATED_AT)
        .and_then(|c| keys::parse_rfc3339(c))
        .or_else(|| {
            let created = secret.meta().creation_timestamp.as_ref()?;
            OffsetDateTime::from_unix_timestamp(created.0.as_second()).ok()
        })
        .unwrap_or(now);
    let rotated_for = secret.annotations().get(annotation::ROTATED_FOR).cloned();
    Some(FoundKey { token, created_at, rotated_for })
}

/// Key Secrets of the tenant, and the names of spec keys whose Secret exists
/// but belongs to something else (never overwritten).
pub(crate) struct FoundKeys {
    pub keys: BTreeMap<String, FoundKey>,
    pub conflicts: Vec<String>,
}

/// The key Secrets of this tenant, by key name: every one in the cache, and
/// each key of the spec the cache lacks, read directly.
pub(crate) async fn found_keys(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    uid: &str,
    now: OffsetDateTime,
) -> Result<FoundKeys, ObserveError> {
    let namespace = tenant.namespace().unwrap_or_default();
    let prefix = format!("{}-scim-key-", tenant.name_any());
    let mut keys: BTreeMap<String, FoundKey> = ctx
        .stores
        .secrets
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()) && owned_by(s.as_ref(), uid))
        .filter_map(|s| Some((s.name_any().strip_prefix(&prefix)?.to_string(), found_key(&s, now)?)))
        .collect();
    let mut conflicts = Vec::new();
    for spec_key in &tenant.spec.keys {
        if keys.contains_key(&spec_key.name) {
            continue;
        }
        match secret_now(ctx, &namespace, &build::key_secret_name(tenant, &spec_key.name)).await? {
            Some(secret) if !owned_by(&secret, uid) => conflicts.push(spec_key.name.clone()),
            Some(secret) => {
                if let Some(found) = found_key(&secret, now) {
                    keys.insert(spec_key.name.clone(), found);
                }
            }
            None => {}
        }
    }
    Ok(FoundKeys { keys, conflicts })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn key_secret(token: &str, annotations: &[(&str, &str)], created: Option<i64>) -> Secret {
        let mut secret = Secret {
            data: Some(BTreeMap::from([("token".to_string(), ByteString(token.as_bytes().to_vec()))])),
            ..Default::default()
        };
        secret.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        secret.metadata.creation_timestamp =
            created.map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
        secret
    }

    #[test]
    fn a_keys_age_counts_from_its_created_at_annotation_then_from_the_secret() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let annotated = key_secret("scim_a", &[(annotation::CREATED_AT, "2026-01-01T00:00:00Z")], Some(1_800_000_000));
        let found = found_key(&annotated, now).unwrap();
        assert_eq!(found.created_at, keys::parse_rfc3339("2026-01-01T00:00:00Z").unwrap());
        assert_eq!(found.token, "scim_a");
        let bare = key_secret("scim_a", &[], Some(1_800_000_000));
        assert_eq!(found_key(&bare, now).unwrap().created_at.unix_timestamp(), 1_800_000_000);
        assert_eq!(found_key(&key_secret("scim_a", &[], None), now).unwrap().created_at, now);
        let rotated = key_secret("scim_a", &[(annotation::ROTATED_FOR, "42")], None);
        assert_eq!(found_key(&rotated, now).unwrap().rotated_for.as_deref(), Some("42"));
    }

    #[test]
    fn a_secret_without_a_token_holds_no_key() {
        let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        assert!(found_key(&key_secret("", &[], None), now).is_none(), "an emptied token is generated again");
        assert!(found_key(&Secret::default(), now).is_none());
    }
}
