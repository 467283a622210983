//! The detail checks that need no I/O: what the planned keys, the live
//! Deployment and the binding mean for the tenant's conditions, and when the
//! next pass is due. Kept apart from the controller so each decision a user
//! sees in `kubectl describe` is unit-tested.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use time::OffsetDateTime;

use super::{Check, Observed};
use crate::operator::build;
use crate::operator::crd::ScimTenant;
use crate::operator::keys::KeyPlan;
use crate::operator::names::{SERVICE_ROLES, annotation, condition, reason};

/// `KeysReady`: conflicting Secrets and a tenant without a usable key need a
/// human; expiry is reported while the remaining keys still work.
pub(crate) fn keys_check(tenant: &ScimTenant, plan: &KeyPlan, conflicts: &[String]) -> Check {
    let rotate = annotation::ROTATE;
    if !conflicts.is_empty() {
        let names: Vec<String> = conflicts.iter().map(|k| build::key_secret_name(tenant, k)).collect();
        return Check::Failed {
            reason: reason::SECRET_CONFLICT,
            message: format!(
                "Secret(s) {} exist but are not owned by this ScimTenant: rename the key or delete the Secret",
                names.join(", ")
            ),
        };
    }
    if tenant.spec.keys.is_empty() && build::self_service::enabled(tenant).is_some() {
        return Check::Ok {
            reason: reason::SELF_SERVICE_KEYS_ONLY,
            message: "spec.keys is empty: the organisation's admins create keys with the self-service API".into(),
        };
    }
    if tenant.spec.keys.is_empty() {
        return Check::Failed {
            reason: reason::NO_KEYS,
            message: "spec.keys is empty: add a key (e.g. {name: entra}) for Entra's Secret token".into(),
        };
    }
    if plan.valid_keys() == 0 {
        return Check::Failed {
            reason: reason::KEYS_EXPIRED,
            message: format!(
                "every key has expired ({}): rotate one with kubectl annotate --overwrite st {} {rotate}=<key>@<date> and paste the new token into Entra",
                plan.expired.join(", "),
                tenant.name_any()
            ),
        };
    }
    if !plan.expired.is_empty() {
        return Check::Ok {
            reason: reason::KEY_EXPIRED,
            message: format!("expired and no longer accepted: {}", plan.expired.join(", ")),
        };
    }
    if let Some((name, at)) = plan.expiring.first() {
        return Check::Ok {
            reason: reason::KEY_EXPIRING_SOON,
            message: format!(
                "key {name} expires at {at}: add a new key and switch Entra, or annotate {rotate}={name}@<date>"
            ),
        };
    }
    Check::Ok { reason: reason::KEYS_ISSUED, message: format!("{} key(s) valid", plan.valid_keys()) }
}

/// `ServerAvailable`, from the Deployment as last applied or seen.
pub(crate) fn server_check(tenant: &ScimTenant, deployment: Option<&Deployment>) -> Check {
    let Some(deployment) = deployment else {
        return Check::Pending {
            reason: reason::DEPLOYMENT_MISSING,
            message: "the Deployment is being created".into(),
        };
    };
    let wanted = tenant.spec.server.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if wanted == 0 {
        return Check::Ok { reason: reason::SCALED_TO_ZERO, message: "spec.server.replicas is 0".into() };
    }
    let rollout = deployment.status.clone().unwrap_or_default();
    if rollout.observed_generation.unwrap_or(0) < deployment.metadata.generation.unwrap_or(0) {
        return Check::Pending { reason: reason::PROGRESSING, message: "the rollout has not been observed yet".into() };
    }
    let available = rollout.available_replicas.unwrap_or(0);
    let message = format!("{available}/{wanted} replicas available");
    if available >= wanted {
        Check::Ok { reason: reason::AVAILABLE, message }
    } else {
        Check::Pending { reason: reason::MINIMUM_REPLICAS_UNAVAILABLE, message }
    }
}

/// `ZitadelBound` once the machine user holds its roles.
pub(crate) fn bound_ok(user_id: &str) -> Check {
    Check::Ok {
        reason: reason::BOUND,
        message: format!("machine user {user_id} holds {}", SERVICE_ROLES.join(" and ")),
    }
}

pub(crate) fn server_available(server: &Check) -> bool {
    matches!(server, Check::Ok { reason: reason::AVAILABLE, .. })
}

/// `ProvisioningHealthy` when the server's `/status` cannot be asked: only an
/// available server has one.
pub(crate) fn provisioning_unobservable(server: &Check) -> Option<Check> {
    (!server_available(server)).then(|| Check::Unknown {
        reason: reason::SERVER_UNAVAILABLE,
        message: "the SCIM server is not available".into(),
    })
}

/// The failure to record when the server's `/status` did not answer.
pub(crate) fn provisioning_unreachable(message: String) -> Check {
    Check::Unknown { reason: reason::STATUS_UNREACHABLE, message }
}

/// Whether this generation's invalid spec was already reported (its event is
/// sent once, not on every pass).
pub(crate) fn invalid_spec_reported(previous: &[Condition], generation: i64) -> bool {
    previous.iter().any(|c| {
        c.type_ == condition::STALLED && c.reason == reason::INVALID_SPEC && c.observed_generation == Some(generation)
    })
}

/// When to look again, and whether the tenant has converged (a pass that has
/// not is retried with backoff, capped by this delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Requeue {
    pub after: Duration,
    pub converged: bool,
}

/// `resync` bounds every wait; an available server is polled for its
/// provisioning health, and a key's next warning or expiry is met on time.
pub(crate) fn requeue(
    observed: &Observed,
    resync: Duration,
    status_poll: Duration,
    next_key_change: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Requeue {
    let mut after = resync;
    if server_available(&observed.server) {
        after = after.min(status_poll);
    }
    if let Some(at) = next_key_change {
        let secs = (at - now).whole_seconds().max(1);
        after = after.min(Duration::from_secs(u64::try_from(secs).unwrap_or(1)));
    }
    let pending = [Some(&observed.zitadel), Some(&observed.server), observed.self_service.as_ref()]
        .into_iter()
        .flatten()
        .any(|c| matches!(c, Check::Pending { .. } | Check::Unknown { .. }));
    let failed = [Some(&observed.zitadel), observed.self_service.as_ref()]
        .into_iter()
        .flatten()
        .any(|c| matches!(c, Check::Failed { .. }));
    Requeue { after, converged: !(pending || failed) }
}

#[cfg(test)]
mod tests;
