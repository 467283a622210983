//! A minimal RBAC authorizer, off unless `KubeFake::enforce_rbac(true)`: the
//! stored Roles, ClusterRoles and their bindings decide whether a user's
//! request is allowed, as the apiserver's RBAC authorizer does for the parts
//! modelled here:
//!
//! - subjects of kind `User` (by name) and `ServiceAccount`
//!   (`system:serviceaccount:NS:NAME`); groups are not modelled;
//! - a RoleBinding grants its role's rules in its own namespace only, a
//!   ClusterRoleBinding everywhere (cluster-scoped requests included);
//! - a rule matches on apiGroups, resources (`plural`, `plural/sub`, `*`,
//!   `*/sub`), verbs and resourceNames (`*` wildcards as upstream);
//! - a ClusterRole with an `aggregationRule` has the rules of every other
//!   ClusterRole its `clusterRoleSelectors` select (matchLabels and
//!   matchExpressions), as the aggregation controller fills them in once it has
//!   converged (aggregated roles that select aggregated roles included).
//!
//! Requests without a user (`client()`) are the test harness and always allowed.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::store::{ApiError, Filter, Gvr, State};

const RBAC: &str = "rbac.authorization.k8s.io";

/// What is asked: the same fields as `Access`, plus the object's name.
pub(crate) struct Request<'a> {
    pub user: &'a str,
    pub verb: &'a str,
    pub group: &'a str,
    /// `plural` or `plural/subresource`.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn all(st: &State, plural: &str, ns: Option<&str>) -> Vec<Value> {
    let filter = Filter { ns: ns.map(str::to_string), ..Filter::default() };
    st.snapshot(&Gvr::new(RBAC, "v1", plural), &filter).into_iter().map(|o| (*o).clone()).collect()
}

fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// A `metav1.LabelSelector` in its JSON form against an object's labels.
pub(crate) fn selects(selector: &Value, obj: &Value) -> bool {
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let by_label = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let by_expression = selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values = strings(&e["values"]);
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// The rules of the ClusterRole `name`, aggregation resolved.
fn cluster_role_rules(st: &State, name: &str, seen: &mut BTreeSet<String>) -> Vec<Value> {
    if !seen.insert(name.to_string()) {
        return Vec::new();
    }
    let roles = all(st, "clusterroles", None);
    let Some(role) = roles.iter().find(|r| name_of(r) == name) else { return Vec::new() };
    let Some(selectors) = role.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array) else {
        return role.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    };
    let mut rules = Vec::new();
    for other in roles.iter().filter(|o| name_of(o) != name && selectors.iter().any(|s| selects(s, o))) {
        rules.extend(cluster_role_rules(st, name_of(other), seen));
    }
    rules
}

fn role_rules(st: &State, role_ref: &Value, binding_ns: Option<&str>) -> Vec<Value> {
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or_default();
    match role_ref.get("kind").and_then(Value::as_str) {
        Some("ClusterRole") => cluster_role_rules(st, name, &mut BTreeSet::new()),
        Some("Role") => all(st, "roles", binding_ns)
            .into_iter()
            .find(|r| name_of(r) == name)
            .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn names_user(binding: &Value, user: &str) -> bool {
    binding.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|s| {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        match s.get("kind").and_then(Value::as_str) {
            Some("User") => name == user,
            Some("ServiceAccount") => {
                let ns = s.get("namespace").and_then(Value::as_str).unwrap_or_default();
                user == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

fn rule_allows(rule: &Value, req: &Request) -> bool {
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let sub = req.resource.split_once('/').map(|(_, s)| s);
    let resource_ok = resources
        .iter()
        .any(|r| *r == "*" || *r == req.resource || sub.is_some_and(|s| r.strip_prefix("*/") == Some(s)));
    (verbs.contains(&"*") || verbs.contains(&req.verb))
        && (groups.contains(&"*") || groups.contains(&req.group))
        && resource_ok
        && (names.is_empty() || req.name.is_some_and(|n| names.contains(&n)))
}

/// Whether RBAC allows `req`.
pub(crate) fn allowed(st: &State, req: &Request) -> bool {
    let mut rules = Vec::new();
    for b in all(st, "clusterrolebindings", None).iter().filter(|b| names_user(b, req.user)) {
        rules.extend(role_rules(st, &b["roleRef"], None));
    }
    if let Some(ns) = req.namespace {
        for b in all(st, "rolebindings", Some(ns)).iter().filter(|b| names_user(b, req.user)) {
            rules.extend(role_rules(st, &b["roleRef"], Some(ns)));
        }
    }
    rules.iter().any(|r| rule_allows(r, req))
}

/// The apiserver's 403 for a denied request.
pub(crate) fn forbidden(req: &Request) -> ApiError {
    let plural = req.resource.split('/').next().unwrap_or_default();
    let qualified = if req.group.is_empty() { plural.to_string() } else { format!("{plural}.{}", req.group) };
    let object = match req.name {
        Some(n) => format!("{qualified} \"{n}\" is forbidden"),
        None => format!("{qualified} is forbidden"),
    };
    let resource = match req.resource.split_once('/') {
        Some((r, s)) => format!("resource \"{r}/{s}\""),
        None => format!("resource \"{plural}\""),
    };
    let scope = match req.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let mut details = json!({"kind": plural});
    if let Some(n) = req.name {
        details["name"] = json!(n);
    }
    if !req.group.is_empty() {
        details["group"] = json!(req.group);
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{object}: User \"{}\" cannot {} {resource} in API group \"{}\"{scope}",
            req.user, req.verb, req.group
        ),
        details: Some(details),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_as_metav1_defines_them() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(selects(&json!({"matchLabels": {"a": "1"}}), &obj));
        assert!(!selects(&json!({"matchLabels": {"a": "2"}}), &obj));
        assert!(selects(&json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]}]}), &obj));
        assert!(selects(&json!({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}), &obj));
        assert!(!selects(&json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}), &obj));
        assert!(selects(&json!({}), &obj), "an empty selector selects everything");
    }

    #[test]
    fn rules_match_groups_resources_verbs_and_names() {
        let req =
            |verb, resource, name| Request { user: "u", verb, group: "apps", resource, namespace: Some("n"), name };
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments", "*/scale"], "verbs": ["get", "patch"]});
        assert!(rule_allows(&rule, &req("get", "deployments", Some("d"))));
        assert!(rule_allows(&rule, &req("patch", "deployments/scale", Some("d"))));
        assert!(!rule_allows(&rule, &req("delete", "deployments", Some("d"))));
        assert!(!rule_allows(&rule, &req("get", "deployments/status", Some("d"))), "a subresource is its own resource");
        let named = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"], "resourceNames": ["only"]});
        assert!(rule_allows(&named, &req("get", "deployments", Some("only"))));
        assert!(!rule_allows(&named, &req("list", "deployments", None)), "resourceNames never allow a list");
    }
}
