//! Who may use the self-service key API: a ZITADEL access token, checked with
//! introspection, of an active user of the tenant's organisation who holds
//! the admin role on the tenant's project. Decisions are cached by the
//! token's SHA-256 for at most a minute and never past the token's expiry;
//! a failure to ask ZITADEL is never cached and never allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::keys::hash_token;
use crate::zitadel::introspection::{IntrospectionError, Introspector, TokenInfo};
use crate::zitadel::projector::Projector;

/// How long a decision is reused at most.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Decisions held at most; beyond it expired ones are dropped, then all.
const CACHE_CAP: usize = 4096;
/// Introspection requests in flight at most: a flood of made-up tokens waits
/// here instead of becoming a flood of requests to ZITADEL.
const MAX_CONCURRENT_INTROSPECTIONS: usize = 8;

/// An admin allowed to manage keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub user_id: String,
    pub username: Option<String>,
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denial {
    /// 401 `UNAUTHENTICATED`.
    Unauthenticated(String),
    /// 403 `FORBIDDEN`, naming what is missing.
    Forbidden(String),
    /// 503 `ZITADEL_UNAVAILABLE`: ZITADEL could not be asked.
    Unavailable(String),
}

type Decision = Result<Caller, Denial>;

/// The tenant's side of the rules.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub organization_id: String,
    pub project_id: String,
    pub admin_role: String,
}

pub(crate) struct Access {
    rules: Rules,
    introspector: Introspector,
    /// The server's own ZITADEL client (the projector's), for what a token's
    /// claims leave out.
    zitadel: Arc<Projector>,
    /// Token hash → (decision, until when it holds).
    cache: Mutex<HashMap<[u8; 32], (Decision, Instant)>>,
    in_flight: tokio::sync::Semaphore,
}

impl Access {
    pub(crate) fn new(rules: Rules, introspector: Introspector, zitadel: Arc<Projector>) -> Self {
        Access {
            rules,
            introspector,
            zitadel,
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT_INTROSPECTIONS),
        }
    }

    /// The caller behind `token`, or why not.
    pub(crate) async fn authorize(&self, token: &str) -> Result<Caller, Denial> {
        let key = hash_token(token);
        let now = Instant::now();
        if let Some((decision, until)) = self.cache.lock().get(&key)
            && *until > now
        {
            return decision.clone();
        }
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Err(Denial::Unavailable("the server is shutting down".into()));
        };
        let info = self.introspector.introspect(token, &self.rules.project_id).await.map_err(unavailable)?;
        let decision = self.decide(&info).await;
        if matches!(decision, Err(Denial::Unavailable(_))) {
            return decision;
        }
        let until = now + cache_ttl(info.exp, time::OffsetDateTime::now_utc().unix_timestamp());
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAP {
            cache.retain(|_, (_, u)| *u > now);
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
        }
        cache.insert(key, (decision.clone(), until));
        decision
    }

    async fn decide(&self, info: &TokenInfo) -> Decision {
        let unauthenticated = || {
            Denial::Unauthenticated(
                "the access token is not active (expired, revoked, or not issued for this project); sign in again and send a fresh token".into(),
            )
        };
        if !info.active {
            return Err(unauthenticated());
        }
        let user_id = info.sub.clone().filter(|s| !s.is_empty()).ok_or_else(unauthenticated)?;
        let org = match &info.org_id {
            Some(o) => o.clone(),
            None => match self.zitadel.client().get_user(&user_id).await {
                Ok(Some(u)) if u.active() => u.organization_id,
                Ok(_) => return Err(unauthenticated()),
                Err(e) => return Err(Denial::Unavailable(format!("reading the user from ZITADEL failed: {e}"))),
            },
        };
        if org != self.rules.organization_id {
            return Err(Denial::Forbidden(format!(
                "the user belongs to organisation {org}, not to this tenant's organisation {}; only its admins may manage its SCIM keys",
                self.rules.organization_id
            )));
        }
        let has_role = match &info.project_roles {
            Some(roles) => roles.contains(&self.rules.admin_role),
            None => match self.zitadel.client().active_project_roles(&user_id, &self.rules.project_id).await {
                Ok(roles) => roles.contains(&self.rules.admin_role),
                Err(e) => {
                    return Err(Denial::Unavailable(format!("reading the user's authorizations failed: {e}")));
                }
            },
        };
        if !has_role {
            return Err(Denial::Forbidden(format!(
                "the user lacks the role {} on project {}; an organisation admin must be granted it",
                self.rules.admin_role, self.rules.project_id
            )));
        }
        Ok(Caller { user_id, username: info.username.clone() })
    }
}

fn unavailable(e: IntrospectionError) -> Denial {
    Denial::Unavailable(e.to_string())
}

/// At most [`CACHE_TTL`], and not past `exp` (unix seconds).
fn cache_ttl(exp: Option<i64>, now_secs: i64) -> Duration {
    match exp {
        Some(exp) => CACHE_TTL.min(Duration::from_secs(u64::try_from(exp - now_secs).unwrap_or(0))),
        None => CACHE_TTL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_live_a_minute_at_most_and_never_past_expiry() {
        assert_eq!(cache_ttl(None, 100), CACHE_TTL);
        assert_eq!(cache_ttl(Some(100_000), 100), CACHE_TTL);
        assert_eq!(cache_ttl(Some(110), 100), Duration::from_secs(10));
        assert_eq!(cache_ttl(Some(90), 100), Duration::ZERO);
    }
}
