//! Provisioning health: the SCIM server's `/status` (admin port) read at
//! most once a minute per tenant, turned into `status.provisioning`, the
//! `ProvisioningHealthy` condition and the self-service key counts.

use std::time::Instant;

use serde_json::Value;

use super::context::{ProvisioningMemo, ReconcileContext};
use super::crd::{ProvisioningStatus, ScimTenant, SelfServiceStatus};
use super::names::reason;
use super::rate_share;
use super::server_status::{fetch, tenant_url};
use super::status::Check;
use super::status::checks::{provisioning_unobservable, provisioning_unreachable};

/// Pending work older than this means the projection is stuck, not busy.
const BACKLOG_AGE_SECS: i64 = 300;

/// The server's `/status` body → what the tenant's status shows.
pub(crate) fn interpret(v: &Value) -> (ProvisioningStatus, Check) {
    let int = |p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let pending = int("/projection/pendingOperations");
    let failing = int("/projection/failingOperations");
    let oldest = v.pointer("/projection/oldestPendingAgeSeconds").and_then(Value::as_i64);
    let last_error = text("/projection/lastError").or_else(|| text("/zitadel/lastError"));
    let p = ProvisioningStatus {
        users: int("/users"),
        groups: int("/groups"),
        last_request_time: text("/lastRequestTime"),
        failed_requests: int("/failedRequests"),
        pending_operations: pending,
        oldest_pending_age: oldest,
        last_error: last_error.clone(),
    };
    let check = if v.pointer("/zitadel/reachable").and_then(Value::as_bool) == Some(false) {
        Check::Pending {
            reason: reason::ZITADEL_UNREACHABLE_FROM_SERVER,
            message: format!(
                "the SCIM server cannot reach ZITADEL; {pending} operations wait: {}",
                last_error.unwrap_or_default()
            ),
        }
    } else if failing > 0 {
        Check::Pending {
            reason: reason::PROJECTION_FAILING,
            message: format!("{failing} operations failed and are retried: {}", last_error.unwrap_or_default()),
        }
    } else if oldest.is_some_and(|a| a > BACKLOG_AGE_SECS) {
        Check::Pending {
            reason: reason::PROJECTION_BACKLOG,
            message: format!("{pending} operations pending, the oldest for {}s", oldest.unwrap_or_default()),
        }
    } else {
        Check::Ok { reason: reason::HEALTHY, message: format!("{} users and {} groups provisioned", p.users, p.groups) }
    };
    (p, check)
}

/// `/status`'s `selfServiceKeys` as the tenant's `status.selfService` shows
/// them (the application fields are the operator's own, filled elsewhere).
pub(crate) fn self_service_keys(v: &Value) -> Option<SelfServiceStatus> {
    let keys = v.get("selfServiceKeys")?;
    let text = |k: &str| keys.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Some(SelfServiceStatus {
        api_keys: Some(keys.get("count").and_then(Value::as_i64).unwrap_or(0)),
        last_key_created_at: text("lastCreatedAt"),
        last_key_deleted_at: text("lastDeletedAt"),
        ..Default::default()
    })
}

/// What one look at the server's `/status` tells.
pub(crate) struct Health {
    pub provisioning: Option<ProvisioningStatus>,
    pub check: Check,
    pub self_service_keys: Option<SelfServiceStatus>,
}

/// Step 7's input from the tenant's server: its `/status`, asked at most
/// once per `status_poll`; on failure the last known counts are kept.
pub(crate) async fn observe(ctx: &ReconcileContext, tenant: &ScimTenant, uid: &str, server: &Check) -> Health {
    let operator = &ctx.operator;
    let previous = tenant.status.as_ref().and_then(|s| s.provisioning.clone());
    let previous_keys = tenant.status.as_ref().and_then(|s| s.self_service.clone()).map(|s| SelfServiceStatus {
        application_id: None,
        client_id: None,
        ..s
    });
    if let Some(check) = provisioning_unobservable(server) {
        return Health { provisioning: previous, check, self_service_keys: previous_keys };
    }
    // Read before the memo is locked below (the lock is not re-entrant).
    let settling = rate_share::settling(operator, uid);
    if let Some(memo) = operator.memo.lock().get(uid).and_then(|m| m.provisioning.clone())
        && memo.at.elapsed() < operator.cfg.status_poll
        && !settling
    {
        return Health { provisioning: memo.status, check: memo.check, self_service_keys: memo.self_service_keys };
    }
    let url = tenant_url(&operator.cfg.status_url_template, tenant);
    let (status, check, self_service_keys) = match fetch(&operator.http, &url).await {
        Ok(body) => {
            rate_share::observe_status(operator, uid, &body);
            let (status, check) = interpret(&body);
            (Some(status), check, self_service_keys(&body))
        }
        Err(e) => (previous, provisioning_unreachable(e), previous_keys),
    };
    let memo = ProvisioningMemo {
        at: Instant::now(),
        status: status.clone(),
        check: check.clone(),
        self_service_keys: self_service_keys.clone(),
    };
    operator.memo.lock().entry(uid.into()).or_default().provisioning = Some(memo);
    Health { provisioning: status, check, self_service_keys }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn healthy_backlog_and_failing() {
        let ok = json!({"users": 10, "groups": 2, "failedRequests": 1, "lastRequestTime": "2026-11-28T10:00:00Z",
            "zitadel": {"reachable": true}, "projection": {"pendingOperations": 0, "failingOperations": 0}});
        let (p, c) = interpret(&ok);
        assert_eq!((p.users, p.groups, p.failed_requests), (10, 2, 1));
        assert!(matches!(c, Check::Ok { .. }));
        let stuck = json!({"zitadel": {"reachable": true},
            "projection": {"pendingOperations": 7, "failingOperations": 0, "oldestPendingAgeSeconds": 900}});
        assert!(matches!(interpret(&stuck).1, Check::Pending { reason: "ProjectionBacklog", .. }));
        let failing = json!({"zitadel": {"reachable": true, "lastError": "x"},
            "projection": {"pendingOperations": 1, "failingOperations": 1, "lastError": "403 denied"}});
        let (p, c) = interpret(&failing);
        assert_eq!(p.last_error.as_deref(), Some("403 denied"));
        assert!(matches!(c, Check::Pending { reason: "ProjectionFailing", .. }));
        assert_eq!(self_service_keys(&ok), None, "no self-service, no counts");
        let with_keys = json!({"selfServiceKeys": {"count": 3, "lastCreatedAt": "2026-12-01T10:00:00Z",
            "lastCreatedBy": "u1", "lastDeletedAt": "2026-12-01T11:00:00Z", "lastDeletedBy": "u1"}});
        let k = self_service_keys(&with_keys).unwrap();
        assert_eq!(k.api_keys, Some(3));
        assert_eq!(k.last_key_created_at.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(k.last_key_deleted_at.as_deref(), Some("2026-12-01T11:00:00Z"));
    }
}
