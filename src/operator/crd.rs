//! The `ScimTenant` custom resource (scim.unique.app/v1alpha1).
//!
//! Defaults live in code (the builders in `build.rs`), not in the schema, so GitOps tools
//! see no drift between what was applied and what is stored.

use k8s_openapi::api::core::v1::ResourceRequirements;
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
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.provisioning.users"),
    printcolumn(name = "Groups", type_ = "integer", json_path = ".status.provisioning.groups"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub keys: Vec<KeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
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
    /// How long a key is valid after it is created, e.g. 8760h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Default 1 (the embedded store supports one replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Default: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Default 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimTenantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled (kstatus), KeysReady, ZitadelBound,
    /// ServerAvailable, ProvisioningHealthy.
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
}
