//! The `ScimTenant` custom resource (scim.unique.app/v1alpha1).
//!
//! Defaults live in code (the builders in `build.rs`), not in the schema, so GitOps tools
//! see no drift between what was applied and what is stored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Shared with the server's config, which the operator renders from the spec.
pub(crate) use crate::zitadel::config::GroupRoles;

// Several printcolumn(...) entries repeat `type_ = ...`, which clippy reads as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "scim.unique.app",
    version = "v1alpha1",
    kind = "ScimTenant",
    namespaced,
    status = "ScimTenantStatus",
    shortname = "st",
    category = "scim",
    doc = "A customer organisation provisioned from its identity provider (Entra ID) into ZITADEL over SCIM",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The Ready condition: True when keys, ZITADEL binding and server are ready, or the tenant is suspended"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the tenant is or is not Ready (Ready, Suspended, InvalidSpec, ZitadelUnavailable, ...)"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "The Tenant URL to type into Entra ID"
    ),
    printcolumn(
        name = "Users",
        type_ = "integer",
        json_path = ".status.provisioning.users",
        description = "Users provisioned, as the tenant's SCIM server last reported"
    ),
    printcolumn(
        name = "Groups",
        type_ = "integer",
        json_path = ".status.provisioning.groups",
        description = "Groups provisioned, as the tenant's SCIM server last reported"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "When the ScimTenant was created"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        description = "The Ready condition's message (kubectl get -o wide)",
        priority = 1
    ),
    selectable = ".spec.zitadel.organizationId"
)]
#[serde(rename_all = "camelCase")]
pub struct ScimTenantSpec {
    /// Stop reconciling (children are left as they are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    pub zitadel: ZitadelSpec,
    /// SCIM bearer keys for Entra's "Secret token". Several may be valid at once.
    // Bounds keep the CEL rules' estimated cost within the API server's budget.
    // A list-map keyed on `name`: the API server rejects two keys of one name,
    // and server-side apply merges keys by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub keys: Vec<KeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
    /// The organisation's admins create and delete their own SCIM keys
    /// (GraphQL `scimKeyCreate` on the tenant's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_service: Option<SelfServiceSpec>,
}

/// The self-service key API: who may use it, and the ZITADEL API application
/// the server checks their access tokens with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfServiceSpec {
    /// Serve `/graphql` and `/scope-management/graphql` on the SCIM host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enabled: bool,
    /// The project role a user needs to manage keys. Default Chat.Admin.All.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub admin_role: Option<String>,
    /// Active self-service keys at most. Default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_keys: Option<i32>,
    /// A Secret with the API application to introspect tokens with: `clientId`
    /// and either `key.json` (its key JSON) or `clientSecret`. Default: the
    /// operator creates the application in the project and keeps its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_secret_ref: Option<SecretRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZitadelSpec {
    /// The customer organisation users are created in.
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationId is immutable: create a new ScimTenant for another organisation"))]
    #[schemars(length(max = 64))]
    pub organization_id: String,
    /// The product project whose roles users get.
    pub project_id: String,
    /// The organisation owning the project (authorizations are created there).
    pub project_organization_id: String,
    /// IdP users are linked to (link user id = Entra objectId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_roles: Vec<GroupRoles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_user: Option<ServiceUserSpec>,
    /// A fixed ZITADEL request rate for this tenant's server, taken out of
    /// the cluster's budget before the rest is divided (otherwise: its share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 1000.0))]
    pub max_requests_per_second: Option<f64>,
}

/// The machine user the SCIM server writes to ZITADEL with: managed by the
/// operator (the default), or one you provide.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.existingSecretRef) && has(self.managed) && self.managed)").message("set managed: true or existingSecretRef, not both"))]
pub struct ServiceUserSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    /// A Secret key holding a PAT or a machine key JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// Lowercase letters, digits and '-'; part of the Secret's name.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$')").message("key names are 1-32 lowercase letters, digits or '-'"))]
    #[schemars(length(min = 1, max = 32))]
    pub name: String,
    /// How long a key is valid after it is created, e.g. 8760h, 30d or 1h30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub expires_after: Option<String>,
}

/// What `spec.keys[].expiresAfter` accepts (`validate::parse_duration`).
pub const DURATION_PATTERN: &str = "^([0-9]+[dhms])+$";
/// A positive Kubernetes quantity, as `spec.server.storage.size` takes it.
pub const STORAGE_SIZE_PATTERN: &str = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE][0-9]+)?$";

/// The label keys the operator sets on a tenant's pods; extra pod labels may not use them.
const OWN_POD_LABELS: &str = "!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self) && !('app.kubernetes.io/component' in self) && !('app.kubernetes.io/part-of' in self)";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// 1 (the default) or 0 to pause the server: the embedded store has one writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: Option<i32>,
    /// Default: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Secrets in the tenant's namespace to pull the image with. Default: the
    /// operator's own pull secrets (by name); `[]` sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra labels of the server's pod; the operator's own
    /// (app.kubernetes.io/name, instance, component, part-of) cannot be set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(OWN_POD_LABELS).message("podLabels cannot set the operator's own app.kubernetes.io/ labels (name, instance, component, part-of)"))]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Extra annotations of the server's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// The Tenant URL Entra is given, when it is not what the Ingress implies
    /// (e.g. TLS ends at a load balancer in front of an Ingress without TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://[^/]+(/.*)?$"), length(max = 2048))]
    pub public_url: Option<String>,
    /// The tenant's NetworkPolicy. Default: the operator's setting (on unless
    /// the operator is installed with it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// false: no NetworkPolicy for this tenant (a cluster-wide policy or none applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Default 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = STORAGE_SIZE_PATTERN), length(max = 32))]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Without it the Ingress serves plain HTTP and the endpoint is `http://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress, e.g. `cert-manager.io/cluster-issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimTenantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled (kstatus), KeysReady, ZitadelBound,
    /// ServerAvailable, ProvisioningHealthy, and SelfServiceReady when
    /// spec.selfService is enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Tenant URL to type into Entra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningStatus>,
    /// The value of the scim.unique.app/rotate annotation last acted on. A
    /// value is a request: acted on once, however long the annotation stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rotate_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_service: Option<SelfServiceStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfServiceStatus {
    /// The ZITADEL API application the operator made for the server (absent
    /// with introspectionSecretRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Active keys the organisation's admins made, from the server's `/status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key_created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key_deleted_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub name: String,
    pub secret_name: String,
    /// First 12 hex digits of the key's SHA-256: identifies it without revealing it.
    pub fingerprint: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStatus {
    pub users: i64,
    pub groups: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<String>,
    pub failed_requests: i64,
    pub pending_operations: i64,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_age: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The CRD as YAML, as `scim-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&ScimTenant::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_names_columns_cel_and_status() {
        let y = crd_yaml().unwrap();
        for want in [
            "name: scimtenants.scim.unique.app",
            "- st",
            "jsonPath: .status.endpoint",
            "self == oldSelf",
            "x-kubernetes-validations",
            "status: {}",
            "x-kubernetes-list-type: map",
            // Without bounds the API server estimates the CEL rules' cost as unbounded and rejects the CRD.
            "maxLength: 32",
            "maxItems: 16",
        ] {
            assert!(y.contains(want), "{want} missing in\n{y}");
        }
        assert!(!y.contains("default:"), "defaults live in code, not the schema");
    }

    #[test]
    fn printer_columns_show_ready_and_its_reason_and_each_says_what_it_is() {
        use kube::CustomResourceExt;
        let crd = ScimTenant::crd();
        let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap_or_default();
        let names: Vec<(&str, i32)> = columns.iter().map(|c| (c.name.as_str(), c.priority.unwrap_or(0))).collect();
        assert_eq!(
            names,
            [("Ready", 0), ("Reason", 0), ("Endpoint", 0), ("Users", 0), ("Groups", 0), ("Age", 0), ("Status", 1)]
        );
        let path = |n: &str| columns.iter().find(|c| c.name == n).map(|c| c.json_path.clone()).unwrap_or_default();
        assert_eq!(path("Reason"), ".status.conditions[?(@.type==\"Ready\")].reason");
        assert_eq!(path("Status"), ".status.conditions[?(@.type==\"Ready\")].message");
        for c in &columns {
            assert!(c.description.as_deref().is_some_and(|d| !d.is_empty()), "{} has no description", c.name);
        }
    }

    /// The spec's schema as the API server reads it.
    fn spec_schema() -> serde_json::Value {
        let crd: serde_json::Value = serde_yaml::from_str(&crd_yaml().unwrap()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    fn matches(pattern: &str, s: &str) -> bool {
        // The schema's patterns are ECMA 262 as the API server reads them; these use
        // only what the `regex` crate's syntax shares with it.
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn admission_rejects_what_reconcile_would_reject() {
        let spec = spec_schema();
        let keys = &spec["properties"]["keys"];
        assert_eq!(keys["x-kubernetes-list-type"], "map", "two keys of one name are rejected by the API server");
        assert_eq!(keys["x-kubernetes-list-map-keys"], serde_json::json!(["name"]));
        assert!(keys["items"]["required"].as_array().unwrap().contains(&"name".into()), "a map key must be required");

        let expires = &keys["items"]["properties"]["expiresAfter"];
        let pattern = expires["pattern"].as_str().expect("expiresAfter has a pattern");
        for ok in ["8760h", "30d", "1h30m", "90s"] {
            assert!(matches(pattern, ok), "{ok}");
            assert!(super::super::validate::parse_duration(ok).is_some(), "{ok}: reconcile agrees");
        }
        for bad in ["", "soon", "10", "1y", "-1h", "1.5h", "8760 h"] {
            assert!(!matches(pattern, bad), "{bad}");
        }

        let server = &spec["properties"]["server"]["properties"];
        let size = server["storage"]["properties"]["size"]["pattern"].as_str().expect("storage size has a pattern");
        for ok in ["1Gi", "500Mi", "10G", "1.5Gi", "1e9", "1024"] {
            assert!(matches(size, ok), "{ok}");
        }
        for bad in ["", "1 Gi", "1GB", "-1Gi", "lots", "1gi"] {
            assert!(!matches(size, bad), "{bad}");
        }

        let replicas = &server["replicas"];
        assert_eq!((replicas["minimum"].as_f64(), replicas["maximum"].as_f64()), (Some(0.0), Some(1.0)));

        let labels = &server["podLabels"]["x-kubernetes-validations"][0]["rule"];
        assert!(labels.as_str().unwrap().contains("'app.kubernetes.io/instance' in self"), "{labels}");
        let url = server["publicUrl"]["pattern"].as_str().unwrap();
        assert!(matches(url, "https://scim.example.com/scim/v2") && !matches(url, "scim.example.com"));
    }
}
