//! Status computation, pure: what the reconcile observed in, conditions out.
//! kstatus semantics (`Ready`, `Reconciling`, `Stalled`) for Flux, Argo CD and
//! `kubectl wait`, plus four detail conditions, each with `observedGeneration`. `lastTransitionTime` moves only
//! when a condition's status flips, so an unchanged world writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::names::condition::{
    FALSE, KEYS_READY, PROVISIONING_HEALTHY, READY, RECONCILING, SELF_SERVICE_READY, SERVER_AVAILABLE, STALLED, TRUE,
    UNKNOWN, ZITADEL_BOUND,
};
use super::names::reason;

pub(crate) mod checks;

/// One detail condition's observed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    Ok {
        reason: &'static str,
        message: String,
    },
    /// Still converging: retried with backoff.
    Pending {
        reason: &'static str,
        message: String,
    },
    /// Needs a human: not retried hot.
    Failed {
        reason: &'static str,
        message: String,
    },
    Unknown {
        reason: &'static str,
        message: String,
    },
}

impl Check {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Check::Ok { reason, .. }
            | Check::Pending { reason, .. }
            | Check::Failed { reason, .. }
            | Check::Unknown { reason, .. } => reason,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Check::Ok { message, .. }
            | Check::Pending { message, .. }
            | Check::Failed { message, .. }
            | Check::Unknown { message, .. } => message,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub generation: i64,
    pub suspended: bool,
    /// Problems from `validate`.
    pub invalid: Option<String>,
    pub keys: Check,
    pub zitadel: Check,
    pub server: Check,
    pub provisioning: Check,
    /// `None` while self-service is off (no condition then).
    pub self_service: Option<Check>,
}

const SUSPENDED_MESSAGE: &str =
    "spec.suspend is true: the operator leaves the tenant's keys, ZITADEL binding and workload as they are";

fn cond(t: &str, status: &str, reason: &str, message: &str, generation: i64, now: &Time) -> Condition {
    Condition {
        type_: t.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: now.clone(),
    }
}

fn detail(t: &str, c: &Check, generation: i64, now: &Time) -> Condition {
    match c {
        Check::Ok { reason, message } => cond(t, TRUE, reason, message, generation, now),
        Check::Pending { reason, message } | Check::Failed { reason, message } => {
            cond(t, FALSE, reason, message, generation, now)
        }
        Check::Unknown { reason, message } => cond(t, UNKNOWN, reason, message, generation, now),
    }
}

/// The conditions for `obs`, keeping each previous `lastTransitionTime` whose
/// status did not change.
pub(crate) fn conditions(prev: &[Condition], obs: &Observed, now: &Time) -> Vec<Condition> {
    let g = obs.generation;
    let mut details = vec![
        (KEYS_READY, &obs.keys),
        (ZITADEL_BOUND, &obs.zitadel),
        (SERVER_AVAILABLE, &obs.server),
        (PROVISIONING_HEALTHY, &obs.provisioning),
    ];
    if let Some(c) = &obs.self_service {
        details.push((SELF_SERVICE_READY, c));
    }
    let stalled = obs.invalid.as_ref().map(|m| (reason::INVALID_SPEC, m.clone())).or_else(|| {
        details.iter().find_map(|(_, c)| match c {
            Check::Failed { reason, message } => Some((*reason, message.clone())),
            _ => None,
        })
    });
    // Provisioning health informs, but does not gate readiness: a backlog is
    // drained by the server itself. Self-service, once asked for, does.
    let blocking = details
        .iter()
        .filter(|(t, _)| *t != PROVISIONING_HEALTHY)
        .find(|(_, c)| !matches!(c, Check::Ok { .. }))
        .map(|(t, c)| (*t, c.reason(), c.message().to_string()));
    // kstatus reads `Reconciling` and `Stalled` as abnormal-true conditions:
    // each is present only while True. A suspended tenant is Current (Ready
    // True, reason Suspended): nothing is in progress, by request.
    let mut out = Vec::new();
    if obs.suspended {
        out.push(cond(READY, TRUE, reason::SUSPENDED, SUSPENDED_MESSAGE, g, now));
    } else if let Some((reason, message)) = &stalled {
        out.push(cond(READY, FALSE, reason, message, g, now));
        out.push(cond(STALLED, TRUE, reason, message, g, now));
    } else if let Some((t, reason, message)) = &blocking {
        out.push(cond(READY, FALSE, reason, &format!("{t}: {message}"), g, now));
        out.push(cond(RECONCILING, TRUE, reason, message, g, now));
    } else {
        out.push(cond(READY, TRUE, reason::READY, "keys, ZITADEL bindings and the SCIM server are ready", g, now));
    }
    for (t, c) in details {
        out.push(detail(t, c, g, now));
    }
    for c in &mut out {
        if let Some(p) = prev.iter().find(|p| p.type_ == c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn ok(r: &'static str) -> Check {
        Check::Ok { reason: r, message: String::new() }
    }

    fn all_ok() -> Observed {
        Observed {
            generation: 3,
            suspended: false,
            invalid: None,
            keys: ok("KeysIssued"),
            zitadel: ok("Bound"),
            server: ok("Available"),
            provisioning: ok("Healthy"),
            self_service: None,
        }
    }

    fn get<'a>(c: &'a [Condition], ty: &str) -> &'a Condition {
        c.iter().find(|x| x.type_ == ty).unwrap()
    }

    fn has(c: &[Condition], ty: &str) -> bool {
        c.iter().any(|x| x.type_ == ty)
    }

    #[test]
    fn ready_when_everything_is_and_transitions_only_move_on_flips() {
        let c1 = conditions(&[], &all_ok(), &t(100));
        assert_eq!(get(&c1, "Ready").status, "True");
        assert!(!has(&c1, "Reconciling") && !has(&c1, "Stalled"), "abnormal-true conditions only while True");
        assert!(c1.iter().all(|c| c.observed_generation == Some(3)));
        let c2 = conditions(&c1, &all_ok(), &t(200));
        assert_eq!(c1, c2, "an unchanged world computes the same status");
        let mut down = all_ok();
        down.server = Check::Pending { reason: "MinimumReplicasUnavailable", message: "0/1 ready".into() };
        let c3 = conditions(&c2, &down, &t(300));
        assert_eq!(get(&c3, "Ready").status, "False");
        assert_eq!(get(&c3, "Ready").last_transition_time, t(300));
        assert_eq!(get(&c3, "Reconciling").status, "True");
        assert_eq!(get(&c3, "Reconciling").last_transition_time, t(300));
        assert_eq!(get(&c3, "KeysReady").last_transition_time, t(100));
        let c4 = conditions(&c3, &all_ok(), &t(400));
        assert!(!has(&c4, "Reconciling"), "Reconciling goes once the server is back");
        assert_eq!(get(&c4, "Ready").last_transition_time, t(400));
    }

    #[test]
    fn stalled_for_invalid_specs_and_rejected_credentials() {
        let mut o = all_ok();
        o.invalid = Some("spec.keys[0]: used twice".into());
        let c = conditions(&[], &o, &t(1));
        assert_eq!((get(&c, "Stalled").status.as_str(), get(&c, "Stalled").reason.as_str()), ("True", "InvalidSpec"));
        assert!(!has(&c, "Reconciling"));
        assert_eq!(get(&c, "Ready").reason, "InvalidSpec");
        let mut o = all_ok();
        o.zitadel =
            Check::Failed { reason: "ZitadelUnauthorized", message: "the admin credential was rejected".into() };
        let c = conditions(&[], &o, &t(1));
        assert_eq!(get(&c, "Stalled").reason, "ZitadelUnauthorized");
        assert_eq!(get(&c, "Ready").status, "False");
    }

    #[test]
    fn self_service_has_a_condition_only_when_enabled_and_gates_ready() {
        assert!(conditions(&[], &all_ok(), &t(1)).iter().all(|c| c.type_ != "SelfServiceReady"));
        let mut o = all_ok();
        o.self_service = Some(ok("ApplicationReady"));
        let c = conditions(&[], &o, &t(1));
        assert_eq!(get(&c, "SelfServiceReady").status, "True");
        assert_eq!(get(&c, "Ready").status, "True");
        o.self_service = Some(Check::Pending { reason: "ZitadelUnavailable", message: "down".into() });
        let c = conditions(&[], &o, &t(1));
        assert_eq!(
            (get(&c, "Ready").status.as_str(), get(&c, "Ready").reason.as_str()),
            ("False", "ZitadelUnavailable")
        );
        assert!(get(&c, "Ready").message.starts_with("SelfServiceReady:"), "{:?}", get(&c, "Ready"));
        o.self_service =
            Some(Check::Failed { reason: "IntrospectionSecretMissing", message: "Secret t/x does not exist".into() });
        let c = conditions(&[], &o, &t(1));
        assert_eq!(
            (get(&c, "Stalled").status.as_str(), get(&c, "Stalled").reason.as_str()),
            ("True", "IntrospectionSecretMissing")
        );
    }

    #[test]
    fn provisioning_backlog_does_not_gate_ready() {
        let mut o = all_ok();
        o.provisioning = Check::Pending { reason: "ProjectionBacklog", message: "12 pending".into() };
        let c = conditions(&[], &o, &t(1));
        assert_eq!(get(&c, "Ready").status, "True");
        assert_eq!(get(&c, "ProvisioningHealthy").status, "False");
    }

    #[test]
    fn a_suspended_tenant_is_ready_with_reason_suspended_and_nothing_in_progress() {
        let mut o = all_ok();
        o.suspended = true;
        // What a pass over a suspended tenant observes: nothing checked.
        for c in [&mut o.keys, &mut o.zitadel, &mut o.server, &mut o.provisioning] {
            *c = Check::Unknown { reason: "Suspended", message: String::new() };
        }
        o.invalid = Some("ignored while suspended".into());
        let c = conditions(&[], &o, &t(1));
        let ready = get(&c, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Suspended"));
        assert!(ready.message.contains("spec.suspend"), "{}", ready.message);
        assert!(!has(&c, "Reconciling") && !has(&c, "Stalled"));
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
    }
}
