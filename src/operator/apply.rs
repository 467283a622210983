//! Step 6, apply: server-side apply of the built children (skipped when the
//! cached object already matches, see `diff.rs`), deletion of children that
//! are no longer wanted, and the status write with its transition events.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::build::{self, Desired};
use super::context::ReconcileContext;
use super::crd::{ScimTenant, ScimTenantStatus};
use super::diff;
use super::events;
use super::names::{FIELD_MANAGER, condition};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error("Kubernetes API: {source}")]
    Kube {
        /// `Kind namespace/name` of the object written.
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode { what: String, source: serde_json::Error },
    #[error("the object has no {0}")]
    MissingField(&'static str),
}

impl ApplyError {
    /// The metrics label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ApplyError::Kube { .. } => "KubernetesApi",
            ApplyError::Encode { .. } | ApplyError::MissingField(_) => "Internal",
        }
    }
}

fn to_value<T: Serialize>(what: &str, obj: &T) -> Result<Value, ApplyError> {
    serde_json::to_value(obj).map_err(|source| ApplyError::Encode { what: what.into(), source })
}

fn kube_error<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> impl FnOnce(kube::Error) -> ApplyError {
    let object = format!("{} {namespace}/{name}", K::kind(&()));
    move |source| ApplyError::Kube { object, source }
}

/// Applies `desired` unless the cached live object already matches it.
/// Returns the live object afterwards.
pub(crate) async fn ensure<K>(client: &kube::Client, store: &Store<K>, desired: &K) -> Result<K, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let name = desired.meta().name.clone().ok_or(ApplyError::MissingField("metadata.name"))?;
    let namespace = desired.meta().namespace.clone().ok_or(ApplyError::MissingField("metadata.namespace"))?;
    let mut stamped = to_value(&name, desired)?;
    stamped["apiVersion"] = json!(K::api_version(&()));
    stamped["kind"] = json!(K::kind(&()));
    diff::stamp(&mut stamped);
    if let Some(live) = store.get(&ObjectRef::new(&name).within(&namespace)) {
        let live_value = to_value(&name, live.as_ref())?;
        if diff::up_to_date(Some(&live_value), &stamped) {
            return Ok(live.as_ref().clone());
        }
    }
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&stamped))
        .await
        .map_err(kube_error::<K>(&namespace, &name))
}

/// Deletes a child the cache shows; true when something was deleted.
pub(crate) async fn delete_if_present<K>(
    client: &kube::Client,
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Result<bool, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    if store.get(&ObjectRef::new(name).within(namespace)).is_none() {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(kube_error::<K>(namespace, name)(e)),
    }
}

/// Applies every built child, in the order the server needs them (its keys,
/// config and NetworkPolicy before the Deployment that runs it). Returns the Deployment
/// as applied, for `ServerAvailable`.
pub(crate) async fn apply_children(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    desired: &Desired,
) -> Result<Deployment, ApplyError> {
    let client = &ctx.operator.client;
    let stores = &ctx.stores;
    for key_secret in &desired.key_secrets {
        ensure(client, &stores.secrets, key_secret).await?;
    }
    ensure(client, &stores.secrets, &desired.hash_secret).await?;
    ensure(client, &stores.configmaps, &desired.config).await?;
    ensure(client, &stores.pvcs, &desired.pvc).await?;
    // The policy before the pod, so the pod never runs unfenced.
    match &desired.network_policy {
        Some(policy) => {
            ensure(client, &stores.network_policies, policy).await?;
        }
        None => {
            let namespace = tenant.namespace().unwrap_or_default();
            delete_if_present(client, &stores.network_policies, &namespace, &build::server_name(tenant)).await?;
        }
    }
    let deployment = ensure(client, &stores.deployments, &desired.deployment).await?;
    ensure(client, &stores.services, &desired.service).await?;
    match &desired.ingress {
        Some(ingress) => {
            ensure(client, &stores.ingresses, ingress).await?;
        }
        None => {
            let namespace = tenant.namespace().unwrap_or_default();
            delete_if_present(client, &stores.ingresses, &namespace, &build::server_name(tenant)).await?;
        }
    }
    Ok(deployment)
}

/// Writes `new` as the tenant's status unless it is what the tenant already
/// shows, then sends the events its transitions call for. The readiness
/// metric is refreshed either way.
pub(crate) async fn write_status(
    ctx: &ReconcileContext,
    tenant: &ScimTenant,
    new: ScimTenantStatus,
) -> Result<(), ApplyError> {
    let operator = &ctx.operator;
    let previous = tenant.status.clone().unwrap_or_default();
    let name = tenant.name_any();
    let namespace = tenant.namespace().unwrap_or_default();
    let ready = new.conditions.iter().find(|c| c.type_ == condition::READY).map(|c| c.status.clone());
    operator.metrics.set_readiness(&format!("{namespace}/{name}"), ready.as_deref());
    if previous == new {
        return Ok(());
    }
    let api: Api<ScimTenant> = Api::namespaced(operator.client.clone(), &namespace);
    let body = json!({"apiVersion": ScimTenant::api_version(&()), "kind": ScimTenant::kind(&()), "status": new});
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(kube_error::<ScimTenant>(&namespace, &name))?;
    operator.publish_all(tenant, &events::transition_notes(&previous, &new)).await;
    Ok(())
}
