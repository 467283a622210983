//! kstatus, as `sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute` decides it
//! for a custom resource (no built-in kind's legacy rules apply to one). Flux
//! health checks, `kubectl wait --for=jsonpath` users and Argo CD's generic
//! view all follow these rules; the operator's status must read as intended
//! through them. In cli-utils' order:
//!
//! 1. `metadata.deletionTimestamp` set → Terminating.
//! 2. `status.observedGeneration` present and ≠ `metadata.generation` →
//!    InProgress (`LatestGenerationNotObserved`).
//! 3. Conditions in order: the first `Reconciling=True` → InProgress, the
//!    first `Stalled=True` → Failed, whichever comes first.
//! 4. A `Ready` condition: True → Current; False or Unknown → InProgress.
//! 5. Otherwise Current.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Failed,
    Current,
    Terminating,
}

/// The status and the reason kstatus reports with it (the condition's, if one decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Result {
    pub status: Status,
    pub reason: String,
}

fn result(status: Status, reason: &str) -> Result {
    Result { status, reason: reason.to_string() }
}

/// kstatus of an object as the API server returns it (JSON).
pub fn compute(obj: &Value) -> Result {
    if obj["metadata"]["deletionTimestamp"].as_str().is_some_and(|t| !t.is_empty()) {
        return result(Status::Terminating, "");
    }
    if let (Some(generation), Some(observed)) =
        (obj["metadata"]["generation"].as_i64(), obj["status"]["observedGeneration"].as_i64())
        && generation != observed
    {
        return result(Status::InProgress, "LatestGenerationNotObserved");
    }
    let empty = Vec::new();
    let conditions = obj["status"]["conditions"].as_array().unwrap_or(&empty);
    let field = |c: &Value, f: &str| c[f].as_str().unwrap_or_default().to_string();
    for c in conditions {
        match (c["type"].as_str(), c["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return result(Status::InProgress, &field(c, "reason")),
            (Some("Stalled"), Some("True")) => return result(Status::Failed, &field(c, "reason")),
            _ => {}
        }
    }
    for c in conditions {
        if c["type"].as_str() != Some("Ready") {
            continue;
        }
        match c["status"].as_str() {
            Some("True") => return result(Status::Current, ""),
            Some("False") | Some("Unknown") => return result(Status::InProgress, &field(c, "reason")),
            _ => {}
        }
    }
    result(Status::Current, "")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(generation: i64, observed: Option<i64>, conditions: Value) -> Value {
        let mut status = json!({"conditions": conditions});
        if let Some(o) = observed {
            status["observedGeneration"] = json!(o);
        }
        json!({"metadata": {"generation": generation}, "status": status})
    }

    fn cond(t: &str, s: &str, r: &str) -> Value {
        json!({"type": t, "status": s, "reason": r})
    }

    #[test]
    fn the_rules_in_cli_utils_order() {
        let ready = cond("Ready", "True", "Ready");
        assert_eq!(compute(&obj(2, Some(2), json!([ready.clone()]))).status, Status::Current);
        assert_eq!(compute(&obj(3, Some(2), json!([ready.clone()]))).reason, "LatestGenerationNotObserved");
        // No observedGeneration: the generation rule does not apply.
        assert_eq!(compute(&obj(3, None, json!([ready.clone()]))).status, Status::Current);
        let r = compute(&obj(1, Some(1), json!([cond("Ready", "False", "X"), cond("Reconciling", "True", "Y")])));
        assert_eq!((r.status, r.reason.as_str()), (Status::InProgress, "Y"));
        let r = compute(&obj(1, Some(1), json!([cond("Stalled", "True", "Z"), cond("Reconciling", "True", "Y")])));
        assert_eq!((r.status, r.reason.as_str()), (Status::Failed, "Z"), "the first abnormal-true condition decides");
        // False abnormal conditions are ignored, but Ready=False is still InProgress.
        let r = compute(&obj(1, Some(1), json!([cond("Ready", "False", "X"), cond("Stalled", "False", "")])));
        assert_eq!((r.status, r.reason.as_str()), (Status::InProgress, "X"));
        assert_eq!(compute(&obj(1, Some(1), json!([cond("Ready", "Unknown", "U")]))).status, Status::InProgress);
        assert_eq!(compute(&obj(1, Some(1), json!([]))).status, Status::Current);
        let mut gone = obj(1, Some(1), json!([cond("Reconciling", "True", "Y")]));
        gone["metadata"]["deletionTimestamp"] = json!("2026-12-02T08:00:00Z");
        assert_eq!(compute(&gone).status, Status::Terminating);
    }
}
