//! One pass over a live tenant, as a sequence of steps: observe → validate →
//! plan keys → bind ZITADEL → self-service → build → apply → status → events. Each step is
//! a function of its own module; this file only orders them and carries what
//! one step hands the next.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use time::OffsetDateTime;

use super::apply::{self, write_status};
use super::binding::{self, BindOutcome};
use super::build::{self, Desired};
use super::context::ReconcileContext;
use super::crd::{KeyStatus, ProvisioningStatus, ScimTenant, ScimTenantStatus, SelfServiceStatus};
use super::error::Error;
use super::events::{self, EventNote};
use super::keys::{self, KeyPlan};
use super::names::{annotation, reason};
use super::observe::{self, ObserveError};
use super::provisioning_health;
use super::rate_share;
use super::self_service::{self, SelfServiceOutcome};
use super::status::{self, Check, Observed, checks};
use super::validate::validate;

/// Child caches that never sync (a missing RBAC grant, usually) fail the pass
/// instead of holding it.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What a pass knows about its tenant before any step runs.
struct Pass {
    tenant: Arc<ScimTenant>,
    namespace: String,
    uid: String,
    generation: i64,
    previous: ScimTenantStatus,
    now: OffsetDateTime,
    now_k8s: Time,
}

impl Pass {
    fn start(tenant: Arc<ScimTenant>) -> Result<Self, Error> {
        let namespace = tenant.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let uid = tenant.uid().ok_or(Error::MissingField("metadata.uid"))?;
        let (now, now_k8s) = observe::now();
        Ok(Pass {
            generation: tenant.metadata.generation.unwrap_or(0),
            previous: tenant.status.clone().unwrap_or_default(),
            tenant,
            namespace,
            uid,
            now,
            now_k8s,
        })
    }

    /// Nothing checked yet: every detail condition Unknown for `reason`.
    fn unchecked(&self, reason: &'static str) -> Observed {
        let unknown = || Check::Unknown { reason, message: String::new() };
        Observed {
            generation: self.generation,
            suspended: self.tenant.spec.suspend,
            invalid: None,
            keys: unknown(),
            zitadel: unknown(),
            server: unknown(),
            provisioning: unknown(),
            self_service: None,
        }
    }

    /// `status` with this pass's generation and the conditions for `observed`.
    fn status(&self, mut status: ScimTenantStatus, observed: &Observed) -> ScimTenantStatus {
        status.observed_generation = Some(self.generation);
        status.conditions = status::conditions(&self.previous.conditions, observed, &self.now_k8s);
        status
    }

    /// The previous status with fresh conditions (nothing else was learnt).
    fn previous_with(&self, observed: &Observed) -> ScimTenantStatus {
        self.status(self.previous.clone(), observed)
    }
}

/// The key plan and what it was made from.
struct PlannedKeys {
    plan: KeyPlan,
    /// Spec keys whose Secret belongs to something else.
    conflicts: Vec<String>,
    /// The rotate annotation's value, acted on in this pass or before.
    request: Option<String>,
    /// The request was not acted on before this pass.
    rotation_requested: bool,
}

/// A pass over a live tenant. A suspended tenant only gets its conditions
/// refreshed; an invalid one is reported and left until its spec changes.
pub(crate) async fn apply(tenant: Arc<ScimTenant>, ctx: &ReconcileContext) -> Result<Action, Error> {
    if tokio::time::timeout(CACHE_SYNC_TIMEOUT, ctx.stores.ready()).await.is_err() {
        return Err(Error::CachesNotSynced);
    }
    let pass = Pass::start(tenant)?;
    let tenant = pass.tenant.clone();
    let mut observed = pass.unchecked(reason::SUSPENDED);
    if tenant.spec.suspend {
        write_status(ctx, &tenant, pass.previous_with(&observed)).await?;
        return Ok(Action::await_change());
    }
    if let Err(problems) = validate(&tenant.spec) {
        return reject_invalid_spec(ctx, &pass, problems).await;
    }

    let keys = plan_keys(ctx, &pass).await?;
    ctx.operator
        .metrics
        .set_key_expiries(&format!("{}/{}", pass.namespace, tenant.name_any()), &key_expiries(&keys.plan));
    observed.keys = checks::keys_check(&tenant, &keys.plan, &keys.conflicts);
    let binding = binding::bind(ctx, &tenant, &pass.uid, pass.generation).await?;
    observed.zitadel = binding.check.clone();
    if let Err(e) = binding::store_credential(ctx, &tenant, &binding).await {
        return record_failure(ctx, &pass, observed, e.into()).await;
    }

    let self_service = self_service::ensure(ctx, &tenant, &pass.uid, pass.generation).await?;
    observed.self_service = self_service.check.clone();
    if let Err(e) = self_service::store(ctx, &tenant, &self_service).await {
        return record_failure(ctx, &pass, observed, e.into()).await;
    }

    let mut desired =
        build::build(&tenant, &ctx.operator.cfg.settings, &keys.plan.keys, &binding.cred, self_service.mount.as_ref());
    rate_share::assign(ctx, &tenant, &pass.uid, &mut desired);
    let deployment = match apply::apply_children(ctx, &tenant, &desired).await {
        Ok(deployment) => deployment,
        Err(e) => return record_failure(ctx, &pass, observed, e.into()).await,
    };
    remove_keys_left_out(ctx, &pass, &keys.plan).await?;
    announce_keys(ctx, &pass, &keys).await;
    let binding_notes: Vec<EventNote> =
        binding.events.iter().chain(&self_service.events).map(|(r, m)| EventNote::normal(r, m.clone())).collect();
    ctx.operator.publish_all(&tenant, &binding_notes).await;

    observed.server = checks::server_check(&tenant, Some(&deployment));
    let health = provisioning_health::observe(ctx, &tenant, &pass.uid, &observed.server).await;
    observed.provisioning = health.check;
    let mut new_status = fresh_status(&pass, &desired, &binding, &keys, health.provisioning);
    new_status.self_service = self_service_status(&self_service, health.self_service_keys);
    write_status(ctx, &tenant, pass.status(new_status, &observed)).await?;
    Ok(requeue(ctx, &pass, &observed, &keys.plan))
}

/// The spec cannot be acted on: say why in `Stalled` (and once in an event),
/// then wait for the spec to change; retrying would not help.
async fn reject_invalid_spec(ctx: &ReconcileContext, pass: &Pass, problems: Vec<String>) -> Result<Action, Error> {
    let mut observed = pass.unchecked(reason::INVALID_SPEC);
    observed.invalid = Some(problems.join("; "));
    let reported = checks::invalid_spec_reported(&pass.previous.conditions, pass.generation);
    write_status(ctx, &pass.tenant, pass.previous_with(&observed)).await?;
    if !reported {
        ctx.operator.publish(&pass.tenant, &EventNote::warning(reason::INVALID_SPEC, problems.join("; "))).await;
    }
    Ok(Action::await_change())
}

/// The rotate annotation is a request token that stays on the tenant (so Git
/// and the cluster agree): it is acted on once per distinct value. Status
/// records the value handled; the key Secret records the request it was
/// rotated for (a restart before the status write); the memo covers a tenant
/// cache that does not show our status write yet.
async fn plan_keys(ctx: &ReconcileContext, pass: &Pass) -> Result<PlannedKeys, ObserveError> {
    let tenant = &pass.tenant;
    let found = observe::found_keys(ctx, tenant, &pass.uid, pass.now).await?;
    // An emptied annotation asks for nothing.
    let request = tenant.annotations().get(annotation::ROTATE).filter(|v| !v.trim().is_empty()).cloned();
    let handled = |value: &str| {
        pass.previous.last_handled_rotate_at.as_deref() == Some(value)
            || ctx.operator.memo.lock().get(&pass.uid).is_some_and(|m| m.rotate_handled.as_deref() == Some(value))
    };
    let rotate = request.as_deref().filter(|value| !handled(value)).map(keys::Rotate::parse);
    // Keys whose Secret belongs to someone else are left out, never overwritten.
    let spec_keys: Vec<_> = tenant.spec.keys.iter().filter(|k| !found.conflicts.contains(&k.name)).cloned().collect();
    let plan = keys::plan(&spec_keys, &found.keys, rotate, pass.now, crate::keys::generate_token);
    let rotation_requested = rotate.is_some();
    Ok(PlannedKeys { plan, conflicts: found.conflicts, request, rotation_requested })
}

/// Deletes the Secrets of keys that left `spec.keys`.
async fn remove_keys_left_out(ctx: &ReconcileContext, pass: &Pass, plan: &KeyPlan) -> Result<(), Error> {
    let operator = &ctx.operator;
    for gone in &plan.removed {
        let secret_name = build::key_secret_name(&pass.tenant, gone);
        if apply::delete_if_present(&operator.client, &ctx.stores.secrets, &pass.namespace, &secret_name).await? {
            operator.publish(&pass.tenant, &events::key_removed(gone)).await;
        }
    }
    Ok(())
}

/// Tells about generated and rotated keys, and remembers a served rotation
/// request until status records it. The annotation is left in place.
async fn announce_keys(ctx: &ReconcileContext, pass: &Pass, keys: &PlannedKeys) {
    let operator = &ctx.operator;
    operator.publish_all(&pass.tenant, &events::keys_generated(&keys.plan, &pass.previous.keys)).await;
    if !keys.rotation_requested {
        return;
    }
    operator.publish_all(&pass.tenant, &events::rotation(&keys.plan)).await;
    operator.memo.lock().entry(pass.uid.clone()).or_default().rotate_handled = keys.request.clone();
}

/// The status fields this pass learnt (conditions are added by `Pass::status`).
fn fresh_status(
    pass: &Pass,
    desired: &Desired,
    binding: &BindOutcome,
    planned: &PlannedKeys,
    provisioning: Option<ProvisioningStatus>,
) -> ScimTenantStatus {
    let keys = planned
        .plan
        .keys
        .iter()
        .map(|k| KeyStatus {
            name: k.name.clone(),
            secret_name: build::key_secret_name(&pass.tenant, &k.name),
            fingerprint: k.fingerprint(),
            created_at: k.created_at.clone(),
            expires_at: k.expires_at.clone(),
        })
        .collect();
    ScimTenantStatus {
        observed_generation: Some(pass.generation),
        conditions: vec![],
        endpoint: Some(desired.endpoint.clone()),
        service_user_id: binding.user_id.clone(),
        keys,
        provisioning,
        // Kept when the annotation goes: the last request handled stays known.
        last_handled_rotate_at: planned.request.clone().or_else(|| pass.previous.last_handled_rotate_at.clone()),
        ..Default::default()
    }
}

/// `status.selfService`: the managed application (while it exists) and the
/// server's key counts (while self-service is on).
fn self_service_status(outcome: &SelfServiceOutcome, keys: Option<SelfServiceStatus>) -> Option<SelfServiceStatus> {
    let keys = keys.filter(|_| outcome.check.is_some()).unwrap_or_default();
    let client_id = outcome.mount.as_ref().map(|m| m.client_id.clone()).filter(|c| !c.is_empty());
    let status = SelfServiceStatus {
        application_id: outcome.app.as_ref().map(|a| a.app_id.clone()),
        client_id: client_id.or_else(|| outcome.app.as_ref().map(|a| a.client_id.clone()).filter(|c| !c.is_empty())),
        ..keys
    };
    (status != SelfServiceStatus::default()).then_some(status)
}

/// A write to the API server failed: say so in status (when that changes
/// it), then let the error policy retry with backoff.
async fn record_failure(
    ctx: &ReconcileContext,
    pass: &Pass,
    mut observed: Observed,
    e: Error,
) -> Result<Action, Error> {
    observed.server = Check::Pending { reason: reason::APPLY_FAILED, message: e.to_string() };
    if let Err(w) = write_status(ctx, &pass.tenant, pass.previous_with(&observed)).await {
        tracing::debug!(error = %w, "cannot record the failure in status");
    }
    Err(e)
}

/// Not converged: retry with backoff (a rejected credential needs a human,
/// so the backoff grows to its maximum).
fn requeue(ctx: &ReconcileContext, pass: &Pass, observed: &Observed, plan: &KeyPlan) -> Action {
    let operator = &ctx.operator;
    let cfg = &operator.cfg;
    let next = checks::requeue(observed, cfg.resync, cfg.status_poll, plan.next_change, pass.now);
    if next.converged {
        operator.succeeded(&pass.uid);
        if rate_share::settling(operator, &pass.uid) {
            return Action::requeue(next.after.min(rate_share::SETTLE_POLL));
        }
        return Action::requeue(next.after);
    }
    let delay = operator.backoff(&pass.uid);
    tracing::info!(tenant = %format!("{}/{}", pass.namespace, pass.tenant.name_any()), zitadel = observed.zitadel.reason(), server = observed.server.reason(), retry_in = ?delay, "not ready yet");
    Action::requeue(delay.min(next.after))
}

/// The keys in use that expire, for the expiry metric.
fn key_expiries(plan: &KeyPlan) -> Vec<(String, i64)> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    plan.keys
        .iter()
        .filter(|k| !k.expired)
        .filter_map(|k| {
            let at = time::OffsetDateTime::parse(k.expires_at.as_deref()?, rfc3339).ok()?;
            Some((k.name.clone(), at.unix_timestamp()))
        })
        .collect()
}
