//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas
//! never both write to ZITADEL (duplicate users, duplicate key rotations).
//! Optimistic concurrency on the Lease's resourceVersion decides races.
//!
//! Expiry follows client-go's rule: a candidate never compares the holder's
//! `renewTime` with its own wall clock (the two clocks may disagree by
//! minutes). It remembers the lease record it last saw and when, on its own
//! monotonic clock, that record last changed; the holder has lost the lease
//! once the record has not changed for `leaseDurationSeconds` of that clock.
//! Wall-clock timestamps are only written, for humans and other tools.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// A holder that has not renewed for this long has lost the lease.
    pub duration: Duration,
    pub renew_every: Duration,
}

/// The wall clock whose time goes into `acquireTime`/`renewTime`. Injected so
/// a test can give one candidate a clock that is minutes off.
pub type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> WallClock {
    Arc::new(Timestamp::now)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// What a candidate compares between reads: any change means the holder
/// (or a new one) is alive.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    acquire_time: Option<Timestamp>,
    transitions: Option<i32>,
    duration_seconds: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions,
            duration_seconds: spec.lease_duration_seconds,
        }
    }
}

/// One replica competing for the lease; it keeps what it observed between
/// attempts.
pub struct Candidate {
    api: Api<Lease>,
    cfg: LeaseConfig,
    wall: WallClock,
    /// The record last seen and the local instant it was first seen.
    observed: Option<(Record, Instant)>,
}

impl Candidate {
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Candidate {
        Candidate::with_wall_clock(api, cfg, system_clock())
    }

    pub fn with_wall_clock(api: Api<Lease>, cfg: LeaseConfig, wall: WallClock) -> Candidate {
        Candidate { api, cfg, wall, observed: None }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    fn now(&self) -> MicroTime {
        MicroTime((self.wall)())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.cfg.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Notes the record read now; returns when, locally, it last changed.
    fn observe(&mut self, record: Record) -> Instant {
        match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        }
    }

    /// One attempt: true when we hold the lease afterwards.
    pub async fn try_acquire(&mut self) -> Result<bool, kube::Error> {
        let secs = self.duration_seconds();
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let now = self.now();
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return self.write_result(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let record = Record::of(spec);
        let changed_at = self.observe(record.clone());
        let ours = record.holder.as_deref() == Some(self.cfg.identity.as_str());
        if !ours && record.holder.is_some() {
            let held_for = Duration::from_secs(u64::try_from(record.duration_seconds.unwrap_or(secs)).unwrap_or(0));
            if changed_at.elapsed() < held_for {
                return Ok(false);
            }
        }
        let now = self.now();
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.cfg.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(secs);
        self.write_result(self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await)
    }

    /// A write we made is what every candidate now sees; a conflict means
    /// someone else wrote first.
    fn write_result(&mut self, r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match r {
            Ok(written) => {
                if let Some(spec) = written.spec.as_ref() {
                    self.observed = Some((Record::of(spec), Instant::now()));
                }
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt, bounded in time: a hung request must not outlive the lease.
    async fn attempt(&mut self) -> Result<bool, String> {
        let limit = self.cfg.renew_every;
        match tokio::time::timeout(limit, self.try_acquire()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Waits until we hold the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.attempt().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or take the lease"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews the lease until it is lost; returns then. We give up after two
    /// thirds of the lease duration without a renewal, counted from the start
    /// of the last successful attempt: a standby counts a full duration from
    /// when it saw that renewal, which is later, so we stop before it may
    /// take over, whatever either wall clock says.
    pub async fn hold(&mut self) {
        let give_up_after = self.cfg.duration * 2 / 3;
        let mut renewed_at = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            let started = Instant::now();
            match self.attempt().await {
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
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = Some(self.now());
            let _ = self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await;
        }
    }
}
