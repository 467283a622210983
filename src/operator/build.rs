//! Pure builders: a `ScimTenant` (plus key material and operator settings) in,
//! the Kubernetes objects the controller applies out. No client, no clock, no
//! randomness, so they are unit-tested and rendered offline (`render`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, NetworkPolicy, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::crd::{ScimTenant, ServerSpec};
use super::names::{annotation, label};
use crate::config::ServeConfig;
use crate::zitadel::config::{Credentials, ZitadelConfig};

pub(crate) mod self_service;

pub use self::self_service::{IntrospectionMount, introspection_secret_name};
pub(crate) use super::names::FIELD_MANAGER as MANAGER;
pub(crate) use super::names::annotation::{CREATED_AT, ROTATED_FOR};
const SCIM_PORT: i32 = 8080;
const ADMIN_PORT: i32 = 9090;
const RUN_AS: i64 = 65532;
const CONFIG_MOUNT: &str = "/etc/scim/config";
/// The ConfigMap key with the server's ZITADEL request rate, a file beside
/// `serve.yaml` that the server finds by itself. Not part of `serve.yaml`,
/// whose hash is in the pod template: a new share reaches the server through
/// the mounted directory (no `subPath`, so the kubelet updates it in place),
/// without a restart.
pub(crate) const RATE_FILE_KEY: &str = crate::zitadel::rate::RATE_FILE_NAME;
const KEYS_MOUNT: &str = "/etc/scim/keys";
const ZITADEL_MOUNT: &str = "/etc/scim/zitadel";
const DATA_MOUNT: &str = "/data";
const TMP_MOUNT: &str = "/tmp";

mod network_policy;
mod pod;

pub use network_policy::NetworkPolicyDefaults;

/// Operator-wide defaults of every tenant's server (from the controller's flags).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantDefaults {
    /// The image of the SCIM server when the tenant names none (the operator's own).
    pub image: String,
    pub zitadel_url: String,
    pub zitadel_instance_host: Option<String>,
    /// Pull secrets (names) of tenant pods that name none: the operator's own.
    pub image_pull_secrets: Vec<String>,
    pub network_policy: NetworkPolicyDefaults,
}

/// One SCIM key as the controller found or generated it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub name: String,
    pub token: String,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Expired keys keep their Secret (for the admin to see) but leave the hash file.
    pub expired: bool,
    /// The rotate request (annotation value) that produced this token, so a
    /// restart between rotating and recording it in status does not rotate twice.
    pub rotated_for: Option<String>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("expired", &self.expired)
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    pub(crate) fn fingerprint(&self) -> String {
        crate::keys::hash_hex(&self.token)[..12].to_string()
    }
}

/// Where the SCIM server's ZITADEL credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    pub secret_name: String,
    pub key: String,
    /// A machine key JSON (JWT profile) rather than a PAT.
    pub is_key_file: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub key_secrets: Vec<Secret>,
    pub hash_secret: Secret,
    pub config: ConfigMap,
    pub pvc: PersistentVolumeClaim,
    pub deployment: Deployment,
    pub service: Service,
    pub ingress: Option<Ingress>,
    /// None when the tenant's NetworkPolicy is switched off.
    pub network_policy: Option<NetworkPolicy>,
    pub endpoint: String,
}

pub(crate) fn server_name(tenant: &ScimTenant) -> String {
    format!("{}-scim", tenant.name_any())
}
pub(crate) fn key_secret_name(tenant: &ScimTenant, key: &str) -> String {
    format!("{}-scim-key-{key}", tenant.name_any())
}
pub(crate) fn hash_secret_name(tenant: &ScimTenant) -> String {
    format!("{}-scim-keys", tenant.name_any())
}
pub(crate) fn config_name(tenant: &ScimTenant) -> String {
    format!("{}-scim-config", tenant.name_any())
}
pub(crate) fn pvc_name(tenant: &ScimTenant) -> String {
    format!("{}-scim-data", tenant.name_any())
}
pub fn credential_secret_name(tenant: &ScimTenant) -> String {
    format!("{}-scim-zitadel", tenant.name_any())
}

pub(crate) fn labels(tenant: &ScimTenant, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.into(), label::SERVER_APP.into()),
        (label::INSTANCE.into(), tenant.name_any()),
        (label::COMPONENT.into(), component.into()),
        (label::MANAGED_BY.into(), MANAGER.into()),
        (label::PART_OF.into(), label::PART_OF_OPERATOR.into()),
    ])
}

fn selector(tenant: &ScimTenant) -> BTreeMap<String, String> {
    BTreeMap::from([(label::NAME.into(), label::SERVER_APP.into()), (label::INSTANCE.into(), tenant.name_any())])
}

fn owner(tenant: &ScimTenant) -> Vec<OwnerReference> {
    tenant
        .controller_owner_ref(&())
        .map(|mut o| {
            o.block_owner_deletion = Some(true);
            o
        })
        .into_iter()
        .collect()
}

fn meta(tenant: &ScimTenant, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: tenant.namespace(),
        labels: Some(labels(tenant, component)),
        owner_references: Some(owner(tenant)),
        ..Default::default()
    }
}

/// The Tenant URL Entra is given: `publicUrl` if set, else what the Ingress
/// serves (`https://` only with TLS on it), else the in-cluster Service.
pub(crate) fn endpoint(tenant: &ScimTenant) -> String {
    let server = tenant.spec.server.as_ref();
    if let Some(url) = server.and_then(|s| s.public_url.as_deref()).filter(|u| !u.is_empty()) {
        return url.to_string();
    }
    match server.and_then(|s| s.ingress.as_ref()).filter(|i| !i.host.is_empty()) {
        Some(i) => {
            let tls = i.tls_secret_name.as_deref().is_some_and(|s| !s.is_empty());
            format!("{}://{}/scim/v2", if tls { "https" } else { "http" }, i.host)
        }
        None => format!(
            "http://{}.{}.svc/scim/v2",
            server_name(tenant),
            tenant.namespace().unwrap_or_else(|| "default".into())
        ),
    }
}

/// The server's `serve.yaml`: the same `ServeConfig` the server parses, so a
/// key the server does not know cannot be written.
pub(crate) fn server_config(
    tenant: &ScimTenant,
    defaults: &TenantDefaults,
    cred: &CredentialRef,
    introspection: Option<&IntrospectionMount>,
) -> String {
    serde_yaml::to_string(&serve_config(tenant, defaults, cred, introspection)).unwrap_or_default()
}

/// `selfService:` is there once self-service is enabled and its credential
/// mounted; it comes last, so tenants without it keep their bytes (and
/// config hash).
pub(crate) fn serve_config(
    tenant: &ScimTenant,
    defaults: &TenantDefaults,
    cred: &CredentialRef,
    introspection: Option<&IntrospectionMount>,
) -> ServeConfig {
    let spec = &tenant.spec.zitadel;
    let mounted = PathBuf::from(format!("{ZITADEL_MOUNT}/{}", cred.key));
    let credentials = if cred.is_key_file {
        Credentials { key_file: Some(mounted), pat_file: None }
    } else {
        Credentials { pat_file: Some(mounted), key_file: None }
    };
    let zitadel = ZitadelConfig {
        url: defaults.zitadel_url.clone(),
        credentials,
        organization_id: spec.organization_id.clone(),
        project_id: spec.project_id.clone(),
        project_organization_id: spec.project_organization_id.clone(),
        default_roles: spec.default_roles.clone(),
        group_roles: spec.group_roles.clone(),
        instance_host: defaults.zitadel_instance_host.clone(),
        idp_id: spec.idp_id.clone(),
        ..Default::default()
    };
    ServeConfig {
        listen: Some(format!("0.0.0.0:{SCIM_PORT}")),
        admin_listen: Some(format!("0.0.0.0:{ADMIN_PORT}")),
        data_dir: Some(PathBuf::from(DATA_MOUNT)),
        keys_file: Some(PathBuf::from(format!("{KEYS_MOUNT}/keys.yaml"))),
        public_url: Some(endpoint(tenant)),
        zitadel: Some(zitadel),
        self_service: self_service::section(tenant, introspection),
        ..Default::default()
    }
}

/// The tenant's rate when no budget is divided: its override, or the server's default.
pub(crate) fn default_rate(tenant: &ScimTenant) -> f64 {
    tenant.spec.zitadel.max_requests_per_second.unwrap_or(crate::zitadel::config::DEFAULT_RATE)
}

/// The rate file's text: requests per second, one number.
pub(crate) fn rate_file(rate: f64) -> String {
    format!("{rate}\n")
}

/// The keys file the server reads: hashes of the keys that have not expired.
pub(crate) fn keys_file(keys: &[KeyMaterial]) -> String {
    crate::keys::render_keys_file(keys.iter().filter(|k| !k.expired).map(|k| (k.name.as_str(), k.token.as_str())))
}

fn secret(tenant: &ScimTenant, name: String, component: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(tenant, name, component),
        type_: Some("Opaque".into()),
        // `data`, not `stringData`: server-side apply of stringData never
        // converges (kubernetes#123843).
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    }
}

/// A Secret of ZITADEL key material the operator issued (bytes as given).
fn issued_secret(tenant: &ScimTenant, name: String, component: &str, data: &BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: meta(tenant, name, component),
        type_: Some("Opaque".into()),
        data: Some(data.clone()),
        ..Default::default()
    }
}

/// The managed service user's key file, which the server mounts.
pub fn credential_secret(tenant: &ScimTenant, data: &BTreeMap<String, ByteString>) -> Secret {
    issued_secret(tenant, credential_secret_name(tenant), "zitadel-credential", data)
}

/// The managed self-service application's key and client id, which the server mounts.
pub fn introspection_secret(tenant: &ScimTenant, data: &BTreeMap<String, ByteString>) -> Secret {
    issued_secret(tenant, introspection_secret_name(tenant), "introspection-credential", data)
}

/// Every child of `tenant`, as the controller applies them. `introspection`
/// is the self-service credential, once there is one.
pub fn build(
    tenant: &ScimTenant,
    defaults: &TenantDefaults,
    keys: &[KeyMaterial],
    cred: &CredentialRef,
    introspection: Option<&IntrospectionMount>,
) -> Desired {
    let server = tenant.spec.server.clone().unwrap_or_default();
    let introspection = introspection.filter(|_| self_service::enabled(tenant).is_some());
    let config_text = server_config(tenant, defaults, cred, introspection);
    Desired {
        key_secrets: keys.iter().map(|key| key_secret(tenant, key)).collect(),
        hash_secret: secret(
            tenant,
            hash_secret_name(tenant),
            "keys",
            BTreeMap::from([("keys.yaml".into(), keys_file(keys))]),
        ),
        config: ConfigMap {
            metadata: meta(tenant, config_name(tenant), "config"),
            data: Some(BTreeMap::from([
                ("serve.yaml".into(), config_text.clone()),
                (RATE_FILE_KEY.into(), rate_file(default_rate(tenant))),
            ])),
            ..Default::default()
        },
        pvc: pvc(tenant, &server),
        deployment: deployment(tenant, defaults, &server, cred, &config_text, introspection),
        service: service(tenant),
        ingress: ingress(tenant, &server),
        network_policy: network_policy::wanted(tenant, &defaults.network_policy)
            .then(|| network_policy::network_policy(tenant, defaults)),
        endpoint: endpoint(tenant),
    }
}

/// A key's token and the URL to give Entra, annotated with what `kubectl
/// describe` readers need to tell keys apart without reading the token.
fn key_secret(tenant: &ScimTenant, key: &KeyMaterial) -> Secret {
    let mut key_secret = secret(
        tenant,
        key_secret_name(tenant, &key.name),
        "key",
        BTreeMap::from([("token".into(), key.token.clone()), ("endpoint".into(), endpoint(tenant))]),
    );
    let mut annotations = BTreeMap::from([
        (annotation::KEY_NAME.to_string(), key.name.clone()),
        (CREATED_AT.to_string(), key.created_at.clone()),
        (annotation::FINGERPRINT.to_string(), key.fingerprint()),
    ]);
    if let Some(expires_at) = &key.expires_at {
        annotations.insert(annotation::EXPIRES_AT.into(), expires_at.clone());
    }
    if let Some(request) = &key.rotated_for {
        annotations.insert(ROTATED_FOR.into(), request.clone());
    }
    key_secret.metadata.annotations = Some(annotations);
    key_secret
}

fn pvc(tenant: &ScimTenant, server: &ServerSpec) -> PersistentVolumeClaim {
    let storage = server.storage.clone().unwrap_or_default();
    PersistentVolumeClaim {
        // No owner reference: deleting the tenant must not delete the store.
        metadata: ObjectMeta {
            owner_references: None,
            annotations: Some(BTreeMap::from([(
                annotation::RETAINED.to_string(),
                "kept when the ScimTenant is deleted; delete it yourself to drop the data".to_string(),
            )])),
            ..meta(tenant, pvc_name(tenant), "data")
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.filter(|s| !s.is_empty()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(storage.size.filter(|s| !s.is_empty()).unwrap_or_else(|| "1Gi".into())),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn deployment(
    tenant: &ScimTenant,
    defaults: &TenantDefaults,
    server: &ServerSpec,
    cred: &CredentialRef,
    config_text: &str,
    introspection: Option<&IntrospectionMount>,
) -> Deployment {
    let config_hash = hex::encode(Sha256::digest(config_text.as_bytes()))[..16].to_string();
    let mut own_annotations = BTreeMap::from([(annotation::CONFIG_HASH.to_string(), config_hash)]);
    let mut container = server_container(defaults, server);
    let mut volumes = volumes(tenant, cred);
    if let Some(mount) = introspection {
        own_annotations.insert(annotation::INTROSPECTION_VERSION.into(), mount.version.clone());
        container.volume_mounts.get_or_insert_with(Vec::new).push(self_service::volume_mount());
        volumes.push(self_service::volume(mount));
    }
    let mut own_labels = labels(tenant, "server");
    own_labels.retain(|k, _| k != label::MANAGED_BY);
    let pod_labels = pod::merged(server.pod_labels.as_ref(), own_labels);
    let pod_annotations = pod::merged(server.pod_annotations.as_ref(), own_annotations);
    let mut deployment = Deployment {
        metadata: meta(tenant, server_name(tenant), "server"),
        spec: Some(DeploymentSpec {
            replicas: Some(server.replicas.unwrap_or(1)),
            // One writer on the embedded store: never two pods at once.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            selector: LabelSelector { match_labels: Some(selector(tenant)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // The keys file is reloaded in place; only a config change
                    // needs a new pod.
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(pod) = deployment.spec.as_mut().and_then(|d| d.template.spec.as_mut()) {
        pod::fit(pod, defaults, server);
    }
    deployment
}

fn server_container(defaults: &TenantDefaults, server: &ServerSpec) -> Container {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let mount = |volume: &str, path: &str| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        // `false` is omitted by the API server (omitempty), so only `true` is sent.
        read_only: (path != DATA_MOUNT && path != TMP_MOUNT).then_some(true),
        ..Default::default()
    };
    let port = |name: &str, container_port: i32| ContainerPort {
        name: Some(name.into()),
        container_port,
        ..Default::default()
    };
    Container {
        name: "scim-server".into(),
        image: Some(server.image.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| defaults.image.clone())),
        args: Some(vec!["serve".into(), "--config".into(), format!("{CONFIG_MOUNT}/serve.yaml")]),
        ports: Some(vec![port("scim", SCIM_PORT), port("admin", ADMIN_PORT)]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: server.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("config", CONFIG_MOUNT),
            mount("keys", KEYS_MOUNT),
            mount("zitadel", ZITADEL_MOUNT),
            mount("data", DATA_MOUNT),
            mount("tmp", TMP_MOUNT),
        ]),
        ..Default::default()
    }
}

fn volumes(tenant: &ScimTenant, cred: &CredentialRef) -> Vec<Volume> {
    let from_secret = |name: &str, secret_name: String| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource { secret_name: Some(secret_name), ..Default::default() }),
        ..Default::default()
    };
    vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: config_name(tenant), ..Default::default() }),
            ..Default::default()
        },
        from_secret("keys", hash_secret_name(tenant)),
        from_secret("zitadel", cred.secret_name.clone()),
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(tenant),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ]
}

fn service(tenant: &ScimTenant) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    };
    Service {
        metadata: meta(tenant, server_name(tenant), "server"),
        spec: Some(ServiceSpec {
            selector: Some(selector(tenant)),
            ports: Some(vec![port("scim", 80), port("admin", ADMIN_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Only SCIM (and, with self-service, its GraphQL paths) is exposed; the
/// admin port stays inside the cluster.
fn ingress(tenant: &ScimTenant, server: &ServerSpec) -> Option<Ingress> {
    let spec = server.ingress.as_ref().filter(|i| !i.host.is_empty())?;
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: server_name(tenant),
            port: Some(ServiceBackendPort { name: Some("scim".into()), ..Default::default() }),
        }),
        ..Default::default()
    };
    let mut metadata = meta(tenant, server_name(tenant), "server");
    metadata.annotations = spec.annotations.clone().filter(|a| !a.is_empty());
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone().filter(|c| !c.is_empty()),
            tls: spec
                .tls_secret_name
                .clone()
                .filter(|s| !s.is_empty())
                .map(|s| vec![IngressTLS { hosts: Some(vec![spec.host.clone()]), secret_name: Some(s) }]),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: [
                        vec![HTTPIngressPath {
                            path: Some("/scim/v2".into()),
                            path_type: "Prefix".into(),
                            backend: backend.clone(),
                        }],
                        self_service::ingress_paths(tenant, &backend),
                    ]
                    .concat(),
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
