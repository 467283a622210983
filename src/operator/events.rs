//! Which Kubernetes events a pass sends, decided without I/O: one per
//! change a human should act on or know about, never one per pass.
//! `OperatorContext::publish` sends them.

use super::crd::{KeyStatus, ScimTenantStatus};
use super::keys::KeyPlan;
use super::names::{annotation, condition, event, reason};

/// One event to publish on the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventNote {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl EventNote {
    pub(crate) fn normal(reason: &str, message: impl Into<String>) -> Self {
        EventNote { warning: false, reason: reason.into(), message: message.into() }
    }

    pub(crate) fn warning(reason: &str, message: impl Into<String>) -> Self {
        EventNote { warning: true, reason: reason.into(), message: message.into() }
    }
}

fn condition_of<'a>(status: &'a ScimTenantStatus, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Events for a status write: `Ready` changing status or reason (a warning
/// unless it became True), and a key entering its warning window or expiring.
pub(crate) fn transition_notes(previous: &ScimTenantStatus, new: &ScimTenantStatus) -> Vec<EventNote> {
    let mut notes = Vec::new();
    let (was_ready, is_ready) = (condition_of(previous, condition::READY), condition_of(new, condition::READY));
    if was_ready.map(|(s, r, _)| (s, r)) != is_ready.map(|(s, r, _)| (s, r))
        && let Some((status, reason, message)) = is_ready
    {
        notes.push(EventNote { warning: status != condition::TRUE, reason: reason.into(), message: message.into() });
    }
    let was_keys = condition_of(previous, condition::KEYS_READY).map(|(_, r, _)| r);
    if let Some((_, keys_reason, message)) = condition_of(new, condition::KEYS_READY)
        && matches!(keys_reason, reason::KEY_EXPIRING_SOON | reason::KEY_EXPIRED)
        && was_keys != Some(keys_reason)
    {
        notes.push(EventNote::warning(keys_reason, message));
    }
    notes
}

pub(crate) fn key_removed(name: &str) -> EventNote {
    EventNote::normal(
        event::KEY_REMOVED,
        format!("key {name} left spec.keys: its Secret is deleted and the server no longer accepts it"),
    )
}

/// Keys given a token in this pass. A key the status listed before lost its
/// Secret: its new token must reach Entra, hence a warning.
pub(crate) fn keys_generated(plan: &KeyPlan, previous_keys: &[KeyStatus]) -> Vec<EventNote> {
    plan.generated
        .iter()
        .map(|name| {
            let known = previous_keys.iter().any(|k| &k.name == name);
            let why = if known {
                "its Secret was missing, so a new token was generated: paste it into Entra"
            } else {
                "created"
            };
            EventNote { warning: known, reason: event::KEY_CREATED.into(), message: format!("key {name}: {why}") }
        })
        .collect()
}

/// The outcome of a rotate annotation.
pub(crate) fn rotation(plan: &KeyPlan) -> Vec<EventNote> {
    let mut notes = Vec::new();
    if let Some(name) = &plan.rotated {
        notes.push(EventNote::normal(
            event::KEY_ROTATED,
            format!("key {name} has a new token: paste it into Entra; the old one no longer works"),
        ));
    }
    if let Some(name) = &plan.rotate_unknown {
        notes.push(EventNote::warning(
            event::ROTATE_UNKNOWN_KEY,
            format!("{}={name} names no entry of spec.keys", annotation::ROTATE),
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn with(conditions: &[(&str, &str, &str)]) -> ScimTenantStatus {
        let conditions = conditions
            .iter()
            .map(|(type_, status, reason)| Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: format!("{reason} message"),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()),
            })
            .collect();
        ScimTenantStatus { conditions, ..Default::default() }
    }

    #[test]
    fn a_flipped_ready_condition_produces_one_event() {
        let ready = with(&[("Ready", "True", "Ready")]);
        let down = with(&[("Ready", "False", "MinimumReplicasUnavailable")]);
        assert_eq!(
            transition_notes(&ready, &down),
            [EventNote::warning("MinimumReplicasUnavailable", "MinimumReplicasUnavailable message")]
        );
        assert_eq!(transition_notes(&down, &ready), [EventNote::normal("Ready", "Ready message")]);
        assert!(transition_notes(&ready, &ready).is_empty(), "an unchanged status sends nothing");
        let other = with(&[("Ready", "False", "ZitadelUnavailable")]);
        assert_eq!(transition_notes(&down, &other).len(), 1, "a new reason for not being ready is news");
    }

    #[test]
    fn key_expiry_warns_once_when_it_starts() {
        let fine = with(&[("KeysReady", "True", "KeysIssued")]);
        let soon = with(&[("KeysReady", "True", "KeyExpiringSoon")]);
        let gone = with(&[("KeysReady", "True", "KeyExpired")]);
        assert_eq!(transition_notes(&fine, &soon), [EventNote::warning("KeyExpiringSoon", "KeyExpiringSoon message")]);
        assert!(transition_notes(&soon, &soon).is_empty());
        assert_eq!(transition_notes(&soon, &gone).len(), 1);
        assert!(transition_notes(&soon, &fine).is_empty(), "recovering is not a warning");
    }

    #[test]
    fn a_lost_key_secret_warns_and_a_new_key_does_not() {
        let plan = KeyPlan { generated: vec!["entra".into(), "new".into()], ..Default::default() };
        let previous = [KeyStatus { name: "entra".into(), ..Default::default() }];
        let notes = keys_generated(&plan, &previous);
        assert!(notes[0].warning && notes[0].message.contains("paste it into Entra"));
        assert_eq!(notes[1], EventNote::normal("KeyCreated", "key new: created"));
    }

    #[test]
    fn rotating_an_unknown_key_is_a_warning() {
        let plan = KeyPlan { rotated: Some("a".into()), rotate_unknown: Some("zz".into()), ..Default::default() };
        let notes = rotation(&plan);
        assert_eq!(notes[0].reason, "KeyRotated");
        assert_eq!(
            notes[1],
            EventNote::warning("RotateUnknownKey", "scim.unique.app/rotate=zz names no entry of spec.keys")
        );
    }
}
