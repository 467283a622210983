//! What self-service adds to a tenant's children: the introspection
//! credential mounted into the server, `serve.yaml`'s `selfService:` section,
//! and the GraphQL paths on the Ingress.

use std::path::PathBuf;

use crate::config::{IntrospectionConfig, SelfServiceConfig};
use crate::operator::crd::{ScimTenant, SelfServiceSpec};
use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::api::networking::v1::{HTTPIngressPath, IngressBackend};
use kube::ResourceExt;

const INTROSPECTION_MOUNT: &str = "/etc/scim/introspection";
const VOLUME: &str = "introspection";
/// Where the server answers GraphQL: its own path and the one Unique's guide uses.
pub(crate) const GRAPHQL_PATHS: [&str; 2] = ["/graphql", "/scope-management/graphql"];
/// The Secret keys of an introspection credential (managed or `introspectionSecretRef`).
pub(crate) const CLIENT_ID_KEY: &str = "clientId";
pub(crate) const KEY_FILE_KEY: &str = "key.json";
pub(crate) const CLIENT_SECRET_KEY: &str = "clientSecret";

/// The ZITADEL API application the server introspects access tokens with,
/// as it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionMount {
    pub secret_name: String,
    pub client_id: String,
    /// The key JSON (private-key JWT) rather than a client secret (Basic).
    pub is_key_file: bool,
    /// Changes with the credential; rolls the pod, which reads it at start.
    pub version: String,
}

impl IntrospectionMount {
    fn file(&self) -> PathBuf {
        let key = if self.is_key_file { KEY_FILE_KEY } else { CLIENT_SECRET_KEY };
        PathBuf::from(format!("{INTROSPECTION_MOUNT}/{key}"))
    }
}

/// The Secret the operator keeps the managed application's key in.
pub fn introspection_secret_name(tenant: &ScimTenant) -> String {
    format!("{}-scim-introspection", tenant.name_any())
}

/// `spec.selfService` when it is enabled.
pub(crate) fn enabled(tenant: &ScimTenant) -> Option<&SelfServiceSpec> {
    tenant.spec.self_service.as_ref().filter(|s| s.enabled)
}

/// `serve.yaml`'s `selfService:` section, once self-service is enabled and
/// its credential is mounted. Unset values are left to the server's
/// defaults (adminRole Chat.Admin.All, maxKeys 16).
pub(crate) fn section(tenant: &ScimTenant, mount: Option<&IntrospectionMount>) -> Option<SelfServiceConfig> {
    let spec = enabled(tenant)?;
    let mount = mount?;
    let file = mount.file();
    Some(SelfServiceConfig {
        admin_role: spec.admin_role.clone().filter(|r| !r.trim().is_empty()),
        max_keys: spec.max_keys.and_then(|m| usize::try_from(m).ok()),
        introspection: IntrospectionConfig {
            client_id: mount.client_id.clone(),
            key_file: mount.is_key_file.then(|| file.clone()),
            client_secret_file: (!mount.is_key_file).then_some(file),
        },
    })
}

pub(crate) fn volume(mount: &IntrospectionMount) -> Volume {
    Volume {
        name: VOLUME.into(),
        secret: Some(SecretVolumeSource { secret_name: Some(mount.secret_name.clone()), ..Default::default() }),
        ..Default::default()
    }
}

pub(crate) fn volume_mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.into(),
        mount_path: INTROSPECTION_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The GraphQL paths to the SCIM port, when self-service is enabled.
pub(crate) fn ingress_paths(tenant: &ScimTenant, backend: &IngressBackend) -> Vec<HTTPIngressPath> {
    if enabled(tenant).is_none() {
        return Vec::new();
    }
    GRAPHQL_PATHS
        .iter()
        .map(|p| HTTPIngressPath { path: Some((*p).into()), path_type: "Exact".into(), backend: backend.clone() })
        .collect()
}
