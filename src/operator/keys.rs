//! SCIM key planning, pure: the spec's key entries, the key Secrets found and
//! the clock in; the key material to publish and what happened to it out.
//! A token is generated only when its Secret is missing or a rotation was
//! asked for, never by an ordinary reconcile.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::build::KeyMaterial;
use super::crd::KeySpec;
use super::validate::parse_duration;

/// Warn this long before a key expires, or a quarter of its lifetime if shorter.
const WARN_AHEAD: Duration = Duration::from_secs(14 * 86_400);

/// A key as stored in its Secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FoundKey {
    pub token: String,
    pub created_at: OffsetDateTime,
    /// The rotate request (the annotation's value) that produced it.
    pub rotated_for: Option<String>,
}

impl std::fmt::Debug for FoundKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundKey").field("created_at", &self.created_at).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyPlan {
    /// One per spec entry, in spec order.
    pub keys: Vec<KeyMaterial>,
    /// Names of keys given a new token in this pass (missing Secret).
    pub generated: Vec<String>,
    /// The key replaced because of the rotate annotation.
    pub rotated: Option<String>,
    /// The rotate annotation named no key in the spec.
    pub rotate_unknown: Option<String>,
    pub expired: Vec<String>,
    /// Keys that expire within the warning window: (name, expiresAt).
    pub expiring: Vec<(String, String)>,
    /// Key names whose Secrets exist but that left the spec.
    pub removed: Vec<String>,
    /// When the plan changes by itself (a key enters its warning window or expires).
    pub next_change: Option<OffsetDateTime>,
}

impl KeyPlan {
    pub(crate) fn valid_keys(&self) -> usize {
        self.keys.iter().filter(|k| !k.expired).count()
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0).unwrap_or(t).format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A rotation request not yet acted on: the annotation's whole value is the
/// request token (Flux's `requestedAt` convention), and the part before the
/// first `@` names the key: `entra`, `entra@2026-12-02T08:34:00Z`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotate<'a> {
    pub key: &'a str,
    pub request: &'a str,
}

impl<'a> Rotate<'a> {
    pub(crate) fn parse(request: &'a str) -> Self {
        let key = request.split_once('@').map_or(request, |(key, _)| key).trim();
        Rotate { key, request }
    }
}

/// Plans the keys. `generate` makes a new token.
pub(crate) fn plan(
    spec: &[KeySpec],
    found: &BTreeMap<String, FoundKey>,
    rotate: Option<Rotate<'_>>,
    now: OffsetDateTime,
    mut generate: impl FnMut() -> String,
) -> KeyPlan {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut p = KeyPlan::default();
    let request = rotate.map(|r| r.request.to_string());
    let rotate = rotate.map(|r| r.key).filter(|r| !r.is_empty());
    if let Some(r) = rotate
        && !spec.iter().any(|k| k.name == r)
    {
        p.rotate_unknown = Some(r.to_string());
    }
    let soonest = |t: OffsetDateTime, p: &mut KeyPlan| {
        if t > now && p.next_change.is_none_or(|n| t < n) {
            p.next_change = Some(t);
        }
    };
    for k in spec {
        let (token, created, rotated_for) = match found.get(&k.name) {
            // The Secret remembers the request it was rotated for: a pass
            // that rotated but died before recording it in status does not
            // rotate again after a restart.
            Some(f) if rotate != Some(k.name.as_str()) || f.rotated_for == request => {
                (f.token.clone(), f.created_at, f.rotated_for.clone())
            }
            Some(_) => {
                p.rotated = Some(k.name.clone());
                (generate(), now, request.clone())
            }
            // A key born under a pending request is as new as a rotation would make it.
            None => {
                p.generated.push(k.name.clone());
                let served = (rotate == Some(k.name.as_str())).then(|| request.clone()).flatten();
                (generate(), now, served)
            }
        };
        let lifetime = k.expires_after.as_deref().and_then(parse_duration);
        // Far-future values (a hand-edited created-at, a huge expiresAfter) mean "never".
        let expires = lifetime.and_then(|l| time::Duration::try_from(l).ok()).and_then(|l| created.checked_add(l));
        let expired = expires.is_some_and(|e| e <= now);
        if let (Some(e), Some(l)) = (expires, lifetime) {
            let warn_at =
                e.checked_sub(time::Duration::try_from(WARN_AHEAD.min(l / 4)).unwrap_or_default()).unwrap_or(e);
            if expired {
                p.expired.push(k.name.clone());
            } else if warn_at <= now {
                p.expiring.push((k.name.clone(), rfc3339(e)));
            }
            soonest(warn_at, &mut p);
            soonest(e, &mut p);
        }
        p.keys.push(KeyMaterial {
            name: k.name.clone(),
            token,
            created_at: rfc3339(created),
            expires_at: expires.map(rfc3339),
            expired,
            rotated_for,
        });
    }
    p.removed = found.keys().filter(|n| !spec.iter().any(|k| &k.name == *n)).cloned().collect();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn spec(entries: &[(&str, Option<&str>)]) -> Vec<KeySpec> {
        entries.iter().map(|(n, e)| KeySpec { name: n.to_string(), expires_after: e.map(str::to_string) }).collect()
    }

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("token-{n}")
        }
    }

    #[test]
    fn generates_only_missing_keys_and_keeps_existing_ones() {
        let found = BTreeMap::from([(
            "entra".to_string(),
            FoundKey { token: "kept".into(), created_at: at(0), rotated_for: None },
        )]);
        let p = plan(&spec(&[("entra", None), ("second", None)]), &found, None, at(10), counter());
        assert_eq!(p.keys[0].token, "kept");
        assert_eq!(p.keys[0].created_at, rfc3339(at(0)));
        assert_eq!(p.keys[1].token, "token-1");
        assert_eq!(p.generated, ["second"]);
        assert_eq!(p.rotated, None);
        let again = plan(&spec(&[("entra", None)]), &found, None, at(20), counter());
        assert!(again.generated.is_empty(), "a reconcile never regenerates");
    }

    #[test]
    fn rotation_replaces_only_the_named_key_and_unknown_names_are_reported() {
        let found = BTreeMap::from([
            ("a".to_string(), FoundKey { token: "old-a".into(), created_at: at(0), rotated_for: None }),
            ("b".to_string(), FoundKey { token: "old-b".into(), created_at: at(0), rotated_for: None }),
        ]);
        let rot = |value| Some(Rotate::parse(value));
        let p = plan(&spec(&[("a", None), ("b", None)]), &found, rot("b@1"), at(50), counter());
        assert_eq!((p.keys[0].token.as_str(), p.keys[1].token.as_str()), ("old-a", "token-1"));
        assert_eq!(p.keys[1].created_at, rfc3339(at(50)));
        assert_eq!(p.keys[1].rotated_for.as_deref(), Some("b@1"), "the Secret records the request");
        assert_eq!(p.rotated.as_deref(), Some("b"));
        // The same request seen again (a restart before status recorded it) is served already.
        let mut after = found.clone();
        after.insert(
            "b".into(),
            FoundKey { token: "token-1".into(), created_at: at(50), rotated_for: Some("b@1".into()) },
        );
        let again = plan(&spec(&[("a", None), ("b", None)]), &after, rot("b@1"), at(60), counter());
        assert_eq!((again.keys[1].token.as_str(), again.rotated.as_deref()), ("token-1", None));
        // A new value is a new request, for the same key.
        let next = plan(&spec(&[("a", None), ("b", None)]), &after, rot("b@2"), at(70), counter());
        assert_eq!((next.keys[1].token.as_str(), next.rotated.as_deref()), ("token-1", Some("b")));
        let p = plan(&spec(&[("a", None)]), &found, rot("zz"), at(50), counter());
        assert_eq!(p.rotate_unknown.as_deref(), Some("zz"));
        assert_eq!(p.removed, ["b"], "b left the spec: its Secret goes");
    }

    #[test]
    fn a_request_names_its_key_before_the_first_at_sign() {
        let r = Rotate::parse("entra@2026-12-02T08:34:00Z");
        assert_eq!((r.key, r.request), ("entra", "entra@2026-12-02T08:34:00Z"));
        assert_eq!(Rotate::parse("entra").key, "entra");
        assert_eq!(Rotate::parse(" entra @x").key, "entra");
        assert_eq!(Rotate::parse("@x").key, "");
    }

    #[test]
    fn a_key_created_under_a_pending_request_is_not_rotated_again() {
        let p = plan(&spec(&[("a", None)]), &BTreeMap::new(), Some(Rotate::parse("a@1")), at(0), counter());
        assert_eq!((p.generated.as_slice(), p.rotated.as_deref()), (["a".to_string()].as_slice(), None));
        assert_eq!(p.keys[0].rotated_for.as_deref(), Some("a@1"));
        let found = BTreeMap::from([(
            "a".to_string(),
            FoundKey { token: "token-1".into(), created_at: at(0), rotated_for: Some("a@1".into()) },
        )]);
        let again = plan(&spec(&[("a", None)]), &found, Some(Rotate::parse("a@1")), at(10), counter());
        assert_eq!((again.keys[0].token.as_str(), again.rotated.as_deref()), ("token-1", None));
    }

    #[test]
    fn expiry_warns_ahead_then_drops_the_key() {
        let found =
            BTreeMap::from([("k".to_string(), FoundKey { token: "t".into(), created_at: at(0), rotated_for: None })]);
        let s = spec(&[("k", Some("100d"))]);
        let day = 86_400;
        let fresh = plan(&s, &found, None, at(10 * day), counter());
        assert!(fresh.expiring.is_empty() && fresh.expired.is_empty());
        assert_eq!(fresh.next_change, Some(at(86 * day)), "the warning starts 14 days ahead");
        let warn = plan(&s, &found, None, at(90 * day), counter());
        assert_eq!(warn.expiring, [("k".to_string(), rfc3339(at(100 * day)))]);
        assert_eq!(warn.next_change, Some(at(100 * day)));
        let gone = plan(&s, &found, None, at(100 * day), counter());
        assert_eq!(gone.expired, ["k"]);
        assert!(gone.keys[0].expired);
        assert_eq!(gone.valid_keys(), 0);
        // Short-lived keys warn a quarter of their lifetime ahead.
        let short = plan(&spec(&[("k", Some("4h"))]), &found, None, at(0), counter());
        assert_eq!(short.next_change, Some(at(3 * 3600)));
        // Values past the calendar do not panic: the key never expires.
        let far = BTreeMap::from([(
            "k".to_string(),
            FoundKey {
                token: "t".into(),
                created_at: OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT),
                rotated_for: None,
            },
        )]);
        let p = plan(&spec(&[("k", Some("100000000d"))]), &far, None, at(0), counter());
        assert!(!p.keys[0].expired && p.keys[0].expires_at.is_none());
    }
}
