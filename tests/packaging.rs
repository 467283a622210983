//! Packaging: the kustomize install (`config/`) and the Helm chart
//! (`charts/scim-operator`) run the controller the way the binary expects, and
//! grant exactly the permissions the controller uses, no more.
//!
//! `helm` is not available here, so the chart is checked statically: template
//! syntax, `.Values` paths against values.yaml, values.yaml against
//! values.schema.json, and the chart's RBAC rules (plain YAML in
//! `_helpers.tpl`) against the same permission table as `config/rbac`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

/// Every permission the controller needs in the namespaces it watches:
/// (API group, resource, verbs). `config/rbac/role.yaml` and the chart's
/// `scim-operator.rules` must grant exactly this. Compare it with what the
/// controller is observed doing (e.g. the fake API server's request log).
pub const CONTROLLER_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("scim.unique.app", "scimtenants", &["list", "watch", "patch"]),
    ("scim.unique.app", "scimtenants/status", &["patch"]),
    ("scim.unique.app", "scimtenants/finalizers", &["update"]),
    ("", "secrets", &["get", "list", "watch", "create", "patch", "delete"]),
    ("", "configmaps", &["list", "watch", "create", "patch"]),
    ("", "services", &["list", "watch", "create", "patch"]),
    ("", "persistentvolumeclaims", &["list", "watch", "create", "patch"]),
    ("apps", "deployments", &["list", "watch", "create", "patch"]),
    ("networking.k8s.io", "ingresses", &["list", "watch", "create", "patch", "delete"]),
    ("networking.k8s.io", "networkpolicies", &["list", "watch", "create", "patch", "delete"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// What the aggregated `scimtenant-editor` ClusterRole grants (into admin and edit).
pub const EDITOR_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    (
        "scim.unique.app",
        "scimtenants",
        &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
    ),
    ("scim.unique.app", "scimtenants/status", &["get"]),
];

/// What the aggregated `scimtenant-viewer` ClusterRole grants (into view): no Secrets.
pub const VIEWER_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("scim.unique.app", "scimtenants", &["get", "list", "watch"]),
    ("scim.unique.app", "scimtenants/status", &["get", "list", "watch"]),
];

/// The leader-election Lease, granted by a Role in the operator's namespace only.
pub const LEADER_ELECTION_PERMISSIONS: &[(&str, &str, &[&str])] =
    &[("coordination.k8s.io", "leases", &["get", "create", "update", "patch"])];

/// Environment variables the controller reads (its clap `env` names).
const CONTROLLER_ENV: &[&str] = &[
    "ZITADEL_URL",
    "ZITADEL_INSTANCE_HOST",
    "ZITADEL_MAX_REQUESTS_PER_SECOND",
    "ZITADEL_CREDENTIAL_FILE",
    "SCIM_SERVER_IMAGE",
    "WATCH_NAMESPACES",
    "ADMIN_LISTEN",
    "LEADER_ELECTION",
    "LEASE_NAME",
    "RESYNC",
    "RUST_LOG",
    "POD_NAME",
    "POD_NAMESPACE",
    "STATUS_URL_TEMPLATE",
    "SERVER_IMAGE_PULL_SECRETS",
    "TENANT_NETWORK_POLICY",
    "TENANT_NETWORK_POLICY_SCIM_FROM",
    "TENANT_NETWORK_POLICY_MONITORING_NAMESPACES",
    "TENANT_NETWORK_POLICY_ZITADEL_TO",
    "TENANT_NETWORK_POLICY_ZITADEL_PORT",
];

/// Controller settings the chart leaves at the binary's default.
const CHART_LEAVES_DEFAULT: &[&str] = &[
    // http://{service}.{namespace}.svc:9090/status: the server's admin port, set by the controller itself.
    "STATUS_URL_TEMPLATE",
];

const CREDENTIAL_DIR: &str = "/etc/scim-operator/zitadel";

type Grants = BTreeMap<(String, String), BTreeSet<String>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let p = root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", &root().join(dir).to_string_lossy()])
        .output()
        .expect("kubectl is needed for this test (kubectl kustomize works offline)");
    assert!(out.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr));
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| format!("{x:?}"))).collect())
        .unwrap_or_default()
}

fn table(perms: &[(&str, &str, &[&str])]) -> Grants {
    let mut g = Grants::new();
    for (group, resource, verbs) in perms {
        g.entry((group.to_string(), resource.to_string())).or_default().extend(verbs.iter().map(|v| v.to_string()));
    }
    g
}

/// Flattens RBAC rules into (group, resource) -> verbs; wildcards and
/// non-resource URLs are reported as problems.
fn grants(rules: &Value, problems: &mut Vec<String>) -> Grants {
    let mut g = Grants::new();
    for rule in rules.as_sequence().expect("rules must be a list") {
        if !rule["nonResourceURLs"].is_null() {
            problems.push(format!("nonResourceURLs granted: {rule:?}"));
        }
        let (groups, resources, verbs) = (strs(&rule["apiGroups"]), strs(&rule["resources"]), strs(&rule["verbs"]));
        for w in groups.iter().chain(&resources).chain(&verbs) {
            if w.contains('*') {
                problems.push(format!("wildcard `{w}` in rule {rule:?}"));
            }
        }
        for group in &groups {
            for resource in &resources {
                g.entry((group.clone(), resource.clone())).or_default().extend(verbs.iter().cloned());
            }
        }
    }
    g
}

/// What differs between the granted rules and the expected table (empty = equal).
fn diff_rules(what: &str, rules: &Value, expected: &[(&str, &str, &[&str])]) -> Vec<String> {
    let mut problems = Vec::new();
    let got = grants(rules, &mut problems);
    let want = table(expected);
    for ((group, resource), verbs) in &want {
        let have = got.get(&(group.clone(), resource.clone())).cloned().unwrap_or_default();
        for v in verbs.difference(&have) {
            problems.push(format!("{what}: missing verb `{v}` on {group:?}/{resource}"));
        }
        for v in have.difference(verbs) {
            problems.push(format!("{what}: extra verb `{v}` on {group:?}/{resource} (least privilege)"));
        }
    }
    for (group, resource) in got.keys().filter(|k| !want.contains_key(*k)) {
        problems.push(format!("{what}: grants {group:?}/{resource}, which the controller does not use"));
    }
    problems
}

fn assert_rules(what: &str, rules: &Value, expected: &[(&str, &str, &[&str])]) {
    let problems = diff_rules(what, rules, expected);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn only<'a>(docs: &'a [Value], k: &str, what: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == k).collect();
    assert_eq!(found.len(), 1, "{what}: expected exactly one {k}, found {}", found.len());
    found[0]
}

/// The role that a `binding_kind` binds the ServiceAccount `ns/sa` to.
fn bound_role<'a>(docs: &'a [Value], ns: &str, sa: &str, binding_kind: &str, role_kind: &str) -> &'a Value {
    let b = docs
        .iter()
        .find(|d| {
            kind(d) == binding_kind
                && d["roleRef"]["kind"] == role_kind
                && d["subjects"].as_sequence().is_some_and(|s| {
                    s.iter().any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns)
                })
        })
        .unwrap_or_else(|| panic!("no {binding_kind} binds {ns}/{sa} to a {role_kind}"));
    let role_name = b["roleRef"]["name"].as_str().unwrap();
    docs.iter()
        .find(|d| {
            kind(d) == role_kind
                && name(d) == role_name
                && (role_kind == "ClusterRole" || d["metadata"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("{binding_kind} {} refers to a missing {role_kind} {role_name}", name(b)))
}

// ---------------------------------------------------------------- (a) kustomize

#[test]
fn kustomize_default_runs_the_controller_securely() {
    let docs = kustomize("config/default");
    let dep = only(&docs, "Deployment", "config/default");
    let ns = dep["metadata"]["namespace"].as_str().expect("the Deployment has a namespace");
    assert_eq!(ns, "scim-operator-system");
    assert!(
        docs.iter().any(|d| kind(d) == "Namespace" && name(d) == ns),
        "config/default must create the namespace {ns}"
    );
    assert!(
        docs.iter().any(|d| kind(d) == "CustomResourceDefinition" && name(d) == "scimtenants.scim.unique.app"),
        "config/default must install the CRD"
    );

    let pod = &dep["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1, "one container: the controller");
    let c = &containers[0];
    let image = c["image"].as_str().unwrap();
    assert!(image.starts_with("ghcr.io/unique-app/scim-operator:"), "{image}");
    assert_eq!(strs(&c["args"]).first().map(String::as_str), Some("controller"), "args must start with `controller`");

    let env: BTreeMap<String, &Value> =
        c["env"].as_sequence().unwrap().iter().map(|e| (e["name"].as_str().unwrap().to_owned(), e)).collect();
    for n in env.keys() {
        assert!(CONTROLLER_ENV.contains(&n.as_str()), "env {n} is not read by the controller");
    }
    let val = |n: &str| env.get(n).and_then(|e| e["value"].as_str()).unwrap_or_else(|| panic!("env {n} not set"));
    assert_eq!(val("SCIM_SERVER_IMAGE"), image, "the SCIM server pods must run the operator's own image");
    assert!(val("ZITADEL_URL").starts_with("https://"));
    assert_eq!(val("LEADER_ELECTION"), "true");
    for (n, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
        assert_eq!(env[n]["valueFrom"]["fieldRef"]["fieldPath"].as_str(), Some(field), "{n} from the downward API");
    }

    // The credential file is inside a read-only mount of a Secret volume.
    let cred = val("ZITADEL_CREDENTIAL_FILE");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Path::new(cred).starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("no volume mount holds {cred}"));
    assert_eq!(mount["mountPath"].as_str(), Some(CREDENTIAL_DIR));
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "the credential is mounted read-only");
    let vol = pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(vol["secret"]["secretName"].as_str(), Some("scim-operator-zitadel"));
    let key = Path::new(cred).file_name().unwrap().to_str().unwrap();
    assert!(
        vol["secret"]["items"].as_sequence().is_some_and(|items| items.iter().any(|i| i["path"] == key)),
        "the Secret volume must project the file {key}"
    );

    // Non-root, read-only root filesystem, no privileges.
    let csc = &c["securityContext"];
    let psc = &pod["securityContext"];
    let non_root = csc["runAsNonRoot"].as_bool().or(psc["runAsNonRoot"].as_bool());
    assert_eq!(non_root, Some(true), "runAsNonRoot");
    let uid = csc["runAsUser"].as_i64().or(psc["runAsUser"].as_i64());
    assert!(uid.is_some_and(|u| u != 0), "runs as a non-root uid, got {uid:?}");
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true), "read-only root fs");
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strs(&csc["capabilities"]["drop"]), ["ALL"]);
    let seccomp = csc["seccompProfile"]["type"].as_str().or(psc["seccompProfile"]["type"].as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));

    // Its ServiceAccount is bound to the controller's ClusterRole and to the Lease Role in its namespace.
    let sa = pod["serviceAccountName"].as_str().expect("serviceAccountName");
    assert!(docs.iter().any(|d| kind(d) == "ServiceAccount" && name(d) == sa && d["metadata"]["namespace"] == ns));
    assert_rules(
        "rendered ClusterRole",
        &bound_role(&docs, ns, sa, "ClusterRoleBinding", "ClusterRole")["rules"],
        CONTROLLER_PERMISSIONS,
    );
    assert_rules(
        "rendered leader-election Role",
        &bound_role(&docs, ns, sa, "RoleBinding", "Role")["rules"],
        LEADER_ELECTION_PERMISSIONS,
    );
}

#[test]
fn the_image_tag_follows_the_release() {
    let chart: Value = serde_yaml::from_str(&read("charts/scim-operator/Chart.yaml")).unwrap();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert_eq!(app_version, env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion vs Cargo.toml version");
    let k: Value = serde_yaml::from_str(&read("config/manager/kustomization.yaml")).unwrap();
    let images = k["images"].as_sequence().expect("config/manager/kustomization.yaml has images:");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["name"].as_str(), Some("ghcr.io/unique-app/scim-operator"));
    assert_eq!(images[0]["newTag"].as_str(), Some(app_version), "config/manager image tag vs Chart.yaml appVersion");
}

// ---------------------------------------------------------------- (b) RBAC

#[test]
fn config_rbac_grants_exactly_what_the_controller_uses() {
    let docs = kustomize("config/rbac");
    let roles: Vec<&Value> = docs.iter().filter(|d| kind(d) == "ClusterRole").collect();
    let names: Vec<&str> = roles.iter().map(|r| name(r)).collect();
    assert_eq!(names, ["scim-operator", "scimtenant-editor", "scimtenant-viewer"], "config/rbac's ClusterRoles");
    assert_rules("config/rbac ClusterRole", &roles[0]["rules"], CONTROLLER_PERMISSIONS);
    assert_rules("config/rbac scimtenant-editor", &roles[1]["rules"], EDITOR_PERMISSIONS);
    assert_rules("config/rbac scimtenant-viewer", &roles[2]["rules"], VIEWER_PERMISSIONS);
    let aggregates_to = |role: &Value| -> Vec<String> {
        let mut to: Vec<String> = role["metadata"]["labels"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_str() == Some("true"))
            .filter_map(|(k, _)| k.as_str()?.strip_prefix("rbac.authorization.k8s.io/aggregate-to-").map(str::to_owned))
            .collect();
        to.sort();
        to
    };
    assert_eq!(aggregates_to(roles[0]), Vec::<String>::new(), "the controller's role is no one else's");
    assert_eq!(aggregates_to(roles[1]), ["admin", "edit"]);
    assert_eq!(aggregates_to(roles[2]), ["admin", "edit", "view"]);
    let bindings: Vec<&Value> = docs.iter().filter(|d| kind(d).ends_with("Binding")).collect();
    assert!(
        bindings.iter().all(|b| !b["roleRef"]["name"].as_str().unwrap_or("").starts_with("scimtenant-")),
        "the aggregated roles are bound by the built-in roles, not by config/rbac"
    );

    // Leases only through a namespaced Role.
    let lease_roles: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Role").collect();
    assert_eq!(lease_roles.len(), 1, "config/rbac has one Role (leader election)");
    assert_rules("config/rbac leader-election Role", &lease_roles[0]["rules"], LEADER_ELECTION_PERMISSIONS);

    // The source file itself, parsed without kustomize.
    let file = yaml_docs(&read("config/rbac/role.yaml"));
    assert_rules("config/rbac/role.yaml", &only(&file, "ClusterRole", "role.yaml")["rules"], CONTROLLER_PERMISSIONS);
    let file = yaml_docs(&read("config/rbac/leader_election_role.yaml"));
    assert_rules(
        "leader_election_role.yaml",
        &only(&file, "Role", "leader_election_role.yaml")["rules"],
        LEADER_ELECTION_PERMISSIONS,
    );
}

/// The comparison above is not vacuous: a dropped verb, an extra verb, an
/// extra resource and a wildcard are each reported.
#[test]
fn the_rbac_comparison_catches_drift() {
    let role = yaml_docs(&read("config/rbac/role.yaml")).remove(0);
    let rules = role["rules"].clone();
    assert!(diff_rules("ok", &rules, CONTROLLER_PERMISSIONS).is_empty());

    let mutate = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut r = rules.as_sequence().unwrap().clone();
        f(&mut r);
        diff_rules("mutated", &Value::Sequence(r), CONTROLLER_PERMISSIONS)
    };
    let secrets =
        |r: &mut Vec<Value>| -> usize { r.iter().position(|x| strs(&x["resources"]) == ["secrets"]).unwrap() };

    let p = mutate(&|r| {
        let i = secrets(r);
        r[i]["verbs"].as_sequence_mut().unwrap().retain(|v| v != "delete");
    });
    assert!(p.iter().any(|p| p.contains("missing verb `delete`")), "{p:?}");
    let p = mutate(&|r| {
        let i = secrets(r);
        r[i]["verbs"].as_sequence_mut().unwrap().push("deletecollection".into());
    });
    assert!(p.iter().any(|p| p.contains("extra verb `deletecollection`")), "{p:?}");
    let p = mutate(&|r| r.push(serde_yaml::from_str("{apiGroups: [''], resources: [pods], verbs: [get]}").unwrap()));
    assert!(p.iter().any(|p| p.contains("/pods")), "{p:?}");
    let p = mutate(&|r| r.push(serde_yaml::from_str("{apiGroups: [apps], resources: ['*'], verbs: [get]}").unwrap()));
    assert!(p.iter().any(|p| p.contains("wildcard")), "{p:?}");
}

// ---------------------------------------------------------------- (c) the chart

const CHART: &str = "charts/scim-operator";

fn chart_templates() -> Vec<(String, String)> {
    let dir = root().join(CHART).join("templates");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "tpl" || e == "txt"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    files.sort();
    for required in [
        "_helpers.tpl",
        "serviceaccount.yaml",
        "deployment.yaml",
        "rbac.yaml",
        "leader-election-rbac.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "aggregated-roles.yaml",
        "networkpolicy.yaml",
        "poddisruptionbudget.yaml",
        "NOTES.txt",
    ] {
        assert!(files.iter().any(|(n, _)| n == required), "{CHART}/templates/{required} is missing");
    }
    files
}

fn template(file: &str) -> String {
    chart_templates().into_iter().find(|(n, _)| n == file).unwrap().1
}

/// The trimmed text of every `{{ … }}` action, comments included.
fn actions(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed `{{{{` near: {}", &after[..after.len().min(60)]))?;
        let inner = after[..end].trim();
        let inner = inner.strip_prefix('-').unwrap_or(inner).trim();
        let inner = inner.strip_suffix('-').unwrap_or(inner).trim();
        out.push(inner.to_owned());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// The body of `{{- define "name" -}} … {{- end }}` (defines hold no nested blocks here).
fn define_body(helpers: &str, name: &str) -> String {
    let open = format!("define \"{name}\"");
    let start = helpers.find(&open).unwrap_or_else(|| panic!("_helpers.tpl defines no {name}"));
    let body = &helpers[start..];
    let body = &body[body.find("}}").unwrap() + 2..];
    let body = &body[..body.find("{{").unwrap()];
    assert!(!body.contains("{{"), "{name} must stay plain YAML");
    body.to_owned()
}

#[test]
fn chart_templates_are_well_formed() {
    let files = chart_templates();
    let mut defined = BTreeSet::new();
    let mut problems = Vec::new();
    for (file, text) in &files {
        let acts = match actions(text) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{file}: {e}"));
                continue;
            }
        };
        let mut stack: Vec<String> = Vec::new();
        for a in &acts {
            if a.starts_with("/*") {
                if !a.ends_with("*/") {
                    problems.push(format!("{file}: comment must end right before `}}}}`: {a}"));
                }
                continue;
            }
            let word = a.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
            match word {
                "if" | "range" | "with" | "define" | "block" => stack.push(a.clone()),
                "end" => {
                    let Some(_) = stack.pop() else {
                        problems.push(format!("{file}: `end` without an open block"));
                        continue;
                    };
                }
                _ => {}
            }
            if word == "define" {
                defined.insert(a.split('"').nth(1).unwrap_or("").to_owned());
            }
        }
        if !stack.is_empty() {
            problems.push(format!("{file}: unclosed blocks {stack:?}"));
        }
    }
    for (file, text) in &files {
        for a in actions(text).unwrap_or_default() {
            for part in a.split("include \"").skip(1) {
                let used = part.split('"').next().unwrap();
                if !defined.contains(used) {
                    problems.push(format!("{file}: includes undefined template {used}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `.Values.a.b` path referenced in templates exists in values.yaml.
#[test]
fn chart_values_referenced_in_templates_exist() {
    let values: Value = serde_yaml::from_str(&read(&format!("{CHART}/values.yaml"))).unwrap();
    let mut problems = Vec::new();
    let mut seen = 0;
    for (file, text) in chart_templates() {
        for a in actions(&text).unwrap() {
            for part in a.split(".Values.").skip(1) {
                let path: String =
                    part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
                let path = path.trim_end_matches('.');
                seen += 1;
                let mut node = &values;
                for seg in path.split('.') {
                    match node.as_mapping().and_then(|m| m.get(seg)) {
                        Some(v) => node = v,
                        None => {
                            problems.push(format!("{file}: .Values.{path} is not in values.yaml"));
                            break;
                        }
                    }
                }
            }
        }
    }
    assert!(seen > 20, "found only {seen} .Values references: is the scanner broken?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A small JSON-Schema (draft-07) check of the keywords values.schema.json uses.
fn validate(schema: &serde_json::Value, v: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
    use serde_json::Value as J;
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            J::String(s) => vec![s.as_str()],
            J::Array(a) => a.iter().filter_map(J::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            problems.push(format!("{path}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(J::as_array)
        && !e.contains(v)
    {
        problems.push(format!("{path}: {v} is not one of {e:?}"));
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(J::as_u64), v.as_str())
        && (s.chars().count() as u64) < min
    {
        problems.push(format!("{path}: shorter than {min}"));
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(J::as_object);
        for (k, sub) in obj {
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => validate(s, sub, &format!("{path}.{k}"), problems),
                (None, Some(J::Bool(false))) => problems.push(format!("{path}.{k}: not in values.schema.json")),
                (None, Some(s @ J::Object(_))) => validate(s, sub, &format!("{path}.{k}"), problems),
                _ => {}
            }
        }
        for r in schema.get("required").and_then(J::as_array).into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap()) {
                problems.push(format!("{path}: required {r} missing"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, x, &format!("{path}[{i}]"), problems);
        }
    }
}

/// Every property the schema declares has its default in values.yaml (so it is documented there).
fn declared_in_values(schema: &serde_json::Value, v: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
    for (k, sub) in schema.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
        match v.get(k) {
            None => problems.push(format!("{path}.{k} is in values.schema.json but not in values.yaml")),
            Some(x) => declared_in_values(sub, x, &format!("{path}.{k}"), problems),
        }
    }
}

#[test]
fn chart_values_and_schema_agree() {
    let schema: serde_json::Value = serde_json::from_str(&read(&format!("{CHART}/values.schema.json"))).unwrap();
    let values: Value = serde_yaml::from_str(&read(&format!("{CHART}/values.yaml"))).unwrap();
    let values = serde_json::to_value(&values).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["additionalProperties"], false, "unknown top-level values must be rejected");

    let props = schema["properties"].as_object().unwrap();
    let mut problems = Vec::new();
    for k in values.as_object().unwrap().keys() {
        if !props.contains_key(k) {
            problems.push(format!("top-level value `{k}` is not described in values.schema.json"));
        }
    }
    validate(&schema, &values, "values", &mut problems);
    declared_in_values(&schema, &values, "values", &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The required values are required by the templates, not by a non-empty default.
    let dep = template("deployment.yaml");
    for v in [".Values.zitadel.url", ".Values.zitadel.credentialSecret.name"] {
        assert!(
            actions(&dep).unwrap().iter().any(|a| a.starts_with("required ") && a.contains(v)),
            "deployment.yaml must use `required` for {v}"
        );
    }
}

#[test]
fn chart_rbac_matches_config_rbac() {
    let helpers = template("_helpers.tpl");
    let rules: Value = serde_yaml::from_str(&define_body(&helpers, "scim-operator.rules")).unwrap();
    assert_rules("chart scim-operator.rules", &rules, CONTROLLER_PERMISSIONS);
    let lease: Value = serde_yaml::from_str(&define_body(&helpers, "scim-operator.leaderElectionRules")).unwrap();
    assert_rules("chart scim-operator.leaderElectionRules", &lease, LEADER_ELECTION_PERMISSIONS);

    // The ClusterRole (all namespaces) and the per-namespace Roles both use those rules,
    // and the per-namespace branch grants nothing cluster-wide.
    let rbac = template("rbac.yaml");
    assert_eq!(rbac.matches("include \"scim-operator.rules\"").count(), 2, "ClusterRole and Role share the rules");
    let (cluster, namespaced) = rbac.split_once("{{- else }}").expect("rbac.yaml: if empty watchNamespaces … else …");
    assert!(cluster.contains("empty .Values.watchNamespaces"));
    assert!(cluster.contains("kind: ClusterRole") && cluster.contains("kind: ClusterRoleBinding"));
    assert!(namespaced.contains("range $ns := .Values.watchNamespaces"));
    assert!(namespaced.contains("kind: Role\n") && namespaced.contains("kind: RoleBinding"));
    assert!(namespaced.contains("namespace: {{ $ns }}"));
    assert!(!namespaced.contains("Cluster"), "watchNamespaces mode must grant nothing cluster-wide");
    for verb in ["get", "list", "watch", "create", "patch", "update", "delete"] {
        assert!(!rbac.contains(&format!("\"{verb}\"")), "rbac.yaml must take its rules from _helpers.tpl only");
    }

    let le = template("leader-election-rbac.yaml");
    assert!(le.contains("include \"scim-operator.leaderElectionRules\""));
    assert!(le.contains("kind: Role\n") && !le.contains("Cluster"), "the Lease grant is a Role");
    assert!(le.contains("namespace: {{ .Release.Namespace }}"));

    // Same text as config/rbac/role.yaml, rule for rule.
    let config = only(&yaml_docs(&read("config/rbac/role.yaml")), "ClusterRole", "role.yaml")["rules"].clone();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    assert_eq!(grants(&rules, &mut a), grants(&config, &mut b), "chart rules vs config/rbac/role.yaml");

    // The aggregated roles: the same rules as config/rbac, the same aggregation labels,
    // created with rbac.create and rbac.aggregatedRoles.
    for (define, file, expected) in [
        ("scim-operator.editorRules", "scimtenant_editor_role.yaml", EDITOR_PERMISSIONS),
        ("scim-operator.viewerRules", "scimtenant_viewer_role.yaml", VIEWER_PERMISSIONS),
    ] {
        let chart: Value = serde_yaml::from_str(&define_body(&helpers, define)).unwrap();
        assert_rules(define, &chart, expected);
        let config = only(&yaml_docs(&read(&format!("config/rbac/{file}"))), "ClusterRole", file).clone();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(grants(&chart, &mut a), grants(&config["rules"], &mut b), "{define} vs config/rbac/{file}");
        let aggregated = template("aggregated-roles.yaml");
        assert!(aggregated.contains(&format!("include \"{define}\"")), "aggregated-roles.yaml uses {define}");
        for (label, _) in config["metadata"]["labels"].as_mapping().unwrap() {
            let label = label.as_str().unwrap();
            if label.starts_with("rbac.authorization.k8s.io/") {
                assert!(aggregated.contains(&format!("{label}: \"true\"")), "aggregated-roles.yaml lacks {label}");
            }
        }
    }
    let aggregated = template("aggregated-roles.yaml");
    assert!(aggregated.starts_with("{{- if and .Values.rbac.create .Values.rbac.aggregatedRoles }}"));
}

#[test]
fn chart_deployment_configures_the_controller_like_kustomize() {
    let dep = template("deployment.yaml");
    let manager = yaml_docs(&read("config/manager/manager.yaml"));
    let k = only(&manager, "Deployment", "config/manager/manager.yaml");
    let c = &k["spec"]["template"]["spec"]["containers"][0];
    for e in c["env"].as_sequence().unwrap() {
        let n = e["name"].as_str().unwrap();
        assert!(
            dep.contains(&format!("- name: {n}\n")),
            "chart deployment.yaml does not set {n} (config/manager does)"
        );
    }
    for n in CONTROLLER_ENV.iter().filter(|n| !CHART_LEAVES_DEFAULT.contains(n)) {
        assert!(dep.contains(&format!("- name: {n}\n")), "chart deployment.yaml cannot set {n}");
    }
    for needle in [
        "- controller\n",
        "path: /healthz",
        "path: /readyz",
        "name: http-metrics",
        &format!("mountPath: {CREDENTIAL_DIR}\n"),
        &format!("\"{CREDENTIAL_DIR}/%s\" .Values.zitadel.credentialSecret.key"),
        "readOnly: true",
        "fieldPath: metadata.name",
        "fieldPath: metadata.namespace",
        "value: {{ include \"scim-operator.image\" . | quote }}",
        "image: {{ include \"scim-operator.image\" . | quote }}",
        "toYaml .Values.securityContext",
        "toYaml .Values.podSecurityContext",
        "toYaml .Values.resources",
        ".Values.nodeSelector",
        ".Values.tolerations",
        ".Values.affinity",
    ] {
        assert!(dep.contains(needle), "chart deployment.yaml lacks `{needle}`");
    }
    let values: Value = serde_yaml::from_str(&read(&format!("{CHART}/values.yaml"))).unwrap();
    assert_eq!(values["replicaCount"].as_i64(), Some(1));
    assert_eq!(values["leaderElection"]["enabled"].as_bool(), Some(true));
    assert_eq!(values["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(values["podSecurityContext"]["runAsUser"].as_i64(), Some(65532));
    assert_eq!(values["zitadel"]["credentialSecret"]["key"].as_str(), Some("credential"));
    assert_eq!(values["watchNamespaces"].as_sequence().map(Vec::len), Some(0));

    let notes = template("NOTES.txt");
    assert!(notes.contains("kubectl apply --server-side -f crds/"), "NOTES.txt: the CRD upgrade caveat");
    let readme = read("README.md");
    for needle in [
        "## Install the operator",
        "kubectl create secret generic scim-operator-zitadel --from-file=credential=key.json",
        "kubectl apply --server-side -f",
        "kubectl apply -k config/default",
        "IAM_OWNER",
        "watchNamespaces",
        "resource.customizations.health.scim.unique.app_ScimTenant",
    ] {
        assert!(readme.contains(needle), "README.md lacks `{needle}`");
    }
}
