//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas
//! never both write to ZITADEL (duplicate users, duplicate key rotations).
//! Optimistic concurrency on the Lease's resourceVersion decides races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// A holder that has not renewed for this long has lost the lease.
    pub duration: Duration,
    pub renew_every: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One attempt: true when we hold the lease afterwards.
pub(crate) async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let current = api.get_opt(&cfg.name).await?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(cfg.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let ours = holder.as_deref() == Some(cfg.identity.as_str());
    let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
    let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + SignedDuration::from_secs(held_for) < Timestamp::now());
    if !ours && holder.is_some() && !expired {
        return Ok(false);
    }
    if !ours {
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(cfg.identity.clone());
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(secs);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One attempt, bounded in time: a hung request must not outlive the lease.
async fn attempt(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, String> {
    match tokio::time::timeout(cfg.renew_every, try_acquire(api, cfg)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", cfg.renew_every)),
    }
}

/// Waits until we hold the lease.
pub(crate) async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig) {
    loop {
        match attempt(api, cfg).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read or take the lease"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews the lease until it is lost; returns then. We give up after two
/// thirds of the lease duration without a renewal, counted from the start of
/// the last successful attempt (the renewTime we wrote is no later), so we
/// stop before a standby may take over.
pub(crate) async fn hold(api: &Api<Lease>, cfg: &LeaseConfig) {
    let give_up_after = cfg.duration * 2 / 3;
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        let started = tokio::time::Instant::now();
        match attempt(api, cfg).await {
            Ok(true) => renewed_at = started,
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
        }
        if renewed_at.elapsed() >= give_up_after {
            return;
        }
    }
}

/// Gives the lease up on shutdown so a standby takes over at once.
pub(crate) async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
}
