//! A deleted tenant's last pass (run under the finalizer): remove the machine
//! user and the self-service API application the operator created for it in
//! ZITADEL. Children go with the tenant through their owner references; the
//! PVC is kept on purpose.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::binding;
use super::build::self_service::enabled;
use super::context::ReconcileContext;
use super::crd::ScimTenant;
use super::events::EventNote;
use super::names::{annotation, event};
use super::self_service;
use super::status::Check;
use crate::zitadel::error::ZitadelError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CleanupError {
    #[error("ZITADEL cleanup: {0:?}")]
    AdminCredential(Check),
    #[error("ZITADEL cleanup: {0}")]
    Zitadel(#[from] ZitadelError),
}

pub(crate) async fn cleanup(tenant: Arc<ScimTenant>, ctx: &ReconcileContext) -> Result<Action, CleanupError> {
    let operator = &ctx.operator;
    let skip = tenant.annotations().get(annotation::SKIP_CLEANUP).is_some_and(|v| v == "true");
    let org = &tenant.spec.zitadel.project_organization_id;
    if skip {
        let message = format!(
            "{}=true: the ZITADEL machine user and self-service application are left in place",
            annotation::SKIP_CLEANUP
        );
        operator.publish(&tenant, &EventNote::warning(event::CLEANUP_SKIPPED, message)).await;
    } else if !org.trim().is_empty() {
        delete_managed_user(ctx, &tenant, org).await?;
        delete_self_service_app(ctx, &tenant).await?;
    }
    if let Some(uid) = tenant.uid() {
        operator.memo.lock().remove(&uid);
    }
    let key = format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any());
    operator.metrics.set_readiness(&key, None);
    Ok(Action::await_change())
}

/// Only the user this tenant manages, found by its username: never a user an
/// `existingSecretRef` named. Deleting the user removes its keys with it;
/// provisioned end users stay.
async fn delete_managed_user(ctx: &ReconcileContext, tenant: &ScimTenant, org: &str) -> Result<(), CleanupError> {
    let operator = &ctx.operator;
    let admin = operator.admin().map_err(CleanupError::AdminCredential)?;
    let bound_id = tenant.status.as_ref().and_then(|s| s.service_user_id.clone());
    let username = binding::service_username(&tenant.namespace().unwrap_or_default(), &tenant.name_any());
    if let Some(id) = binding::find_managed(&admin, org, &username, bound_id.as_deref()).await? {
        admin.delete_user(&id).await?;
        let message = format!("ZITADEL machine user {username} ({id}) and its keys removed");
        operator.publish(tenant, &EventNote::normal(event::SERVICE_USER_DELETED, message)).await;
    }
    Ok(())
}

/// The managed self-service application, if the tenant had one: enabled
/// without a Secret of your own, or recorded in status (switched off while
/// its removal was still pending).
async fn delete_self_service_app(ctx: &ReconcileContext, tenant: &ScimTenant) -> Result<(), CleanupError> {
    let recorded = tenant.status.as_ref().and_then(|s| s.self_service.as_ref()).and_then(|s| s.application_id.clone());
    let managed = enabled(tenant).is_some_and(|s| s.introspection_secret_ref.is_none());
    if !managed && recorded.is_none() {
        return Ok(());
    }
    let operator = &ctx.operator;
    let admin = operator.admin().map_err(CleanupError::AdminCredential)?;
    for id in self_service::remove_app(&admin, tenant, recorded.as_deref()).await? {
        let message = format!("ZITADEL API application {id} (self-service) and its keys removed");
        operator.publish(tenant, &EventNote::normal(event::INTROSPECTION_APP_DELETED, message)).await;
    }
    Ok(())
}
