use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::operator::build::KeyMaterial;
use crate::operator::status::conditions;

const TENANT: &str = "apiVersion: scim.unique.app/v1alpha1\nkind: ScimTenant\nmetadata: {name: acme, namespace: tenants}\nspec:\n  zitadel: {organizationId: o1, projectId: p1, projectOrganizationId: o0}\n  keys: [{name: entra}]\n";

fn tenant(extra: &str) -> ScimTenant {
    serde_yaml::from_str(&format!("{TENANT}{extra}")).unwrap()
}

fn key(name: &str, expired: bool) -> KeyMaterial {
    KeyMaterial {
        name: name.into(),
        token: "t".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        expires_at: None,
        expired,
        rotated_for: None,
    }
}

fn deployment(generation: i64, observed: i64, available: i32) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.generation = Some(generation);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(observed),
        available_replicas: Some(available),
        ..Default::default()
    });
    d
}

fn observed(server: Check, zitadel: Check) -> Observed {
    let ok = |reason| Check::Ok { reason, message: String::new() };
    Observed {
        generation: 1,
        suspended: false,
        invalid: None,
        keys: ok(reason::KEYS_ISSUED),
        zitadel,
        server,
        provisioning: ok(reason::HEALTHY),
        self_service: None,
    }
}

fn keys_ready(check: &Check) -> Condition {
    let mut o = observed(bound_ok("u1"), bound_ok("u1"));
    o.keys = check.clone();
    let all = conditions(&[], &o, &Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
    all.into_iter().find(|c| c.type_ == condition::KEYS_READY).unwrap()
}

#[test]
fn an_expired_key_keeps_keys_ready_while_another_key_works() {
    let plan = KeyPlan {
        keys: vec![key("entra", false), key("old", true)],
        expired: vec!["old".into()],
        ..Default::default()
    };
    let check = keys_check(&tenant(""), &plan, &[]);
    let c = keys_ready(&check);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "KeyExpired"));
    assert!(c.message.contains("old"), "{}", c.message);
}

#[test]
fn every_key_expired_makes_keys_ready_false_and_says_how_to_rotate() {
    let plan = KeyPlan { keys: vec![key("entra", true)], expired: vec!["entra".into()], ..Default::default() };
    let c = keys_ready(&keys_check(&tenant(""), &plan, &[]));
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "KeysExpired"));
    assert!(
        c.message.contains("kubectl annotate --overwrite st acme scim.unique.app/rotate=<key>@<date>"),
        "{}",
        c.message
    );
}

#[test]
fn a_key_about_to_expire_is_reported_with_its_date() {
    let plan = KeyPlan {
        keys: vec![key("entra", false)],
        expiring: vec![("entra".into(), "2027-01-01T00:00:00Z".into())],
        ..Default::default()
    };
    let c = keys_ready(&keys_check(&tenant(""), &plan, &[]));
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "KeyExpiringSoon"));
    assert!(c.message.contains("2027-01-01T00:00:00Z"));
}

#[test]
fn a_foreign_secret_or_no_keys_stall_the_keys() {
    let plan = KeyPlan { keys: vec![key("entra", false)], ..Default::default() };
    let c = keys_ready(&keys_check(&tenant(""), &plan, &["entra".into()]));
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "SecretConflict"));
    assert!(c.message.contains("acme-scim-key-entra"), "{}", c.message);
    let no_keys = tenant("").spec.zitadel.clone();
    let mut bare = tenant("");
    bare.spec.keys.clear();
    bare.spec.zitadel = no_keys;
    assert!(matches!(keys_check(&bare, &KeyPlan::default(), &[]), Check::Failed { reason: "NoKeys", .. }));
    // With self-service, the organisation's admins make the keys: none in the spec is fine.
    bare.spec.self_service = Some(crate::operator::crd::SelfServiceSpec { enabled: true, ..Default::default() });
    assert!(matches!(keys_check(&bare, &KeyPlan::default(), &[]), Check::Ok { reason: "SelfServiceKeysOnly", .. }));
    assert!(matches!(keys_check(&tenant(""), &plan, &[]), Check::Ok { reason: "KeysIssued", .. }));
}

#[test]
fn a_deployment_without_available_replicas_is_not_available() {
    let t = tenant("");
    let down = server_check(&t, Some(&deployment(2, 2, 0)));
    assert_eq!(down, Check::Pending { reason: "MinimumReplicasUnavailable", message: "0/1 replicas available".into() });
    assert!(
        server_check(&t, Some(&deployment(2, 2, 1)))
            == Check::Ok { reason: "Available", message: "1/1 replicas available".into() }
    );
    assert!(matches!(server_check(&t, Some(&deployment(3, 2, 1))), Check::Pending { reason: "Progressing", .. }));
    assert!(matches!(server_check(&t, None), Check::Pending { reason: "DeploymentMissing", .. }));
    let scaled = tenant("  server: {replicas: 0}\n");
    assert!(matches!(server_check(&scaled, Some(&deployment(1, 1, 0))), Check::Ok { reason: "ScaledToZero", .. }));
}

#[test]
fn provisioning_is_only_asked_of_an_available_server() {
    let t = tenant("");
    let up = server_check(&t, Some(&deployment(1, 1, 1)));
    assert_eq!(provisioning_unobservable(&up), None);
    let down = server_check(&t, Some(&deployment(1, 1, 0)));
    assert!(matches!(provisioning_unobservable(&down), Some(Check::Unknown { reason: "ServerUnavailable", .. })));
}

#[test]
fn an_invalid_spec_is_reported_once_per_generation() {
    let stalled = |generation| Condition {
        type_: "Stalled".into(),
        status: "True".into(),
        reason: "InvalidSpec".into(),
        message: String::new(),
        observed_generation: Some(generation),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()),
    };
    assert!(invalid_spec_reported(&[stalled(4)], 4));
    assert!(!invalid_spec_reported(&[stalled(3)], 4), "a new generation is reported again");
    assert!(!invalid_spec_reported(&[], 4));
}

#[test]
fn a_converged_tenant_is_polled_and_an_unconverged_one_retried() {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let (resync, poll) = (Duration::from_secs(600), Duration::from_secs(60));
    let up = Check::Ok { reason: reason::AVAILABLE, message: String::new() };
    let r = requeue(&observed(up.clone(), bound_ok("u")), resync, poll, None, now);
    assert_eq!(r, Requeue { after: poll, converged: true });
    let soon = now + time::Duration::seconds(30);
    assert_eq!(
        requeue(&observed(up.clone(), bound_ok("u")), resync, poll, Some(soon), now).after,
        Duration::from_secs(30)
    );
    let rejected = Check::Failed { reason: reason::ZITADEL_UNAUTHORIZED, message: String::new() };
    let r = requeue(&observed(up, rejected), resync, poll, None, now);
    assert!(!r.converged, "a rejected credential keeps retrying with backoff");
    let starting = Check::Pending { reason: reason::PROGRESSING, message: String::new() };
    let r = requeue(&observed(starting, bound_ok("u")), resync, poll, None, now);
    assert_eq!(r, Requeue { after: resync, converged: false });
}
