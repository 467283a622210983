//! Pure builders: a `ScimTenant` (plus key material and operator settings) in,
//! the Kubernetes objects the controller applies out. No client, no clock, no
//! randomness, so they are unit-tested and rendered offline (`render`).

use std::collections::BTreeMap;

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
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::crd::ScimTenant;

pub const MANAGER: &str = "scim-operator";
/// On a key Secret: when its token was generated (expiry counts from here).
pub const CREATED_AT: &str = "scim.unique.app/created-at";
/// On a key Secret: the tenant resourceVersion whose rotate annotation was served.
pub const ROTATED_FOR: &str = "scim.unique.app/rotated-for";
const SCIM_PORT: i32 = 8080;
const ADMIN_PORT: i32 = 9090;
const RUN_AS: i64 = 65532;

/// Operator-wide settings the builders need.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The image of the SCIM server when the tenant names none (the operator's own).
    pub image: String,
    pub zitadel_url: String,
    pub zitadel_instance_host: Option<String>,
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
    /// The tenant resourceVersion whose rotate annotation produced this token,
    /// so a restart between rotating and removing the annotation does not rotate twice.
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
    pub fn fingerprint(&self) -> String {
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
    pub endpoint: String,
}

pub fn server_name(t: &ScimTenant) -> String {
    format!("{}-scim", t.name_any())
}
pub fn key_secret_name(t: &ScimTenant, key: &str) -> String {
    format!("{}-scim-key-{key}", t.name_any())
}
pub fn hash_secret_name(t: &ScimTenant) -> String {
    format!("{}-scim-keys", t.name_any())
}
pub fn config_name(t: &ScimTenant) -> String {
    format!("{}-scim-config", t.name_any())
}
pub fn pvc_name(t: &ScimTenant) -> String {
    format!("{}-scim-data", t.name_any())
}
pub fn credential_secret_name(t: &ScimTenant) -> String {
    format!("{}-scim-zitadel", t.name_any())
}

pub fn labels(t: &ScimTenant, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "scim-server".into()),
        ("app.kubernetes.io/instance".into(), t.name_any()),
        ("app.kubernetes.io/component".into(), component.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGER.into()),
        ("app.kubernetes.io/part-of".into(), "scim-operator".into()),
    ])
}

fn selector(t: &ScimTenant) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "scim-server".into()),
        ("app.kubernetes.io/instance".into(), t.name_any()),
    ])
}

fn owner(t: &ScimTenant) -> Vec<OwnerReference> {
    t.controller_owner_ref(&())
        .map(|mut o| {
            o.block_owner_deletion = Some(true);
            o
        })
        .into_iter()
        .collect()
}

fn meta(t: &ScimTenant, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: t.namespace(),
        labels: Some(labels(t, component)),
        owner_references: Some(owner(t)),
        ..Default::default()
    }
}

/// The Tenant URL Entra is given.
pub fn endpoint(t: &ScimTenant) -> String {
    match t.spec.server.as_ref().and_then(|s| s.ingress.as_ref()).filter(|i| !i.host.is_empty()) {
        Some(i) => format!("https://{}/scim/v2", i.host),
        None => format!("http://{}.{}.svc/scim/v2", server_name(t), t.namespace().unwrap_or_else(|| "default".into())),
    }
}

/// The server's `serve.yaml`.
pub fn server_config(t: &ScimTenant, s: &Settings, cred: &CredentialRef) -> String {
    let z = &t.spec.zitadel;
    let mut zitadel = json!({
        "url": s.zitadel_url,
        "credentials": if cred.is_key_file {
            json!({"keyFile": format!("/etc/scim/zitadel/{}", cred.key)})
        } else {
            json!({"patFile": format!("/etc/scim/zitadel/{}", cred.key)})
        },
        "organizationId": z.organization_id,
        "projectId": z.project_id,
        "projectOrganizationId": z.project_organization_id,
        "defaultRoles": z.default_roles,
        "groupRoles": z.group_roles.iter().map(|g| json!({"group": g.group, "roles": g.roles})).collect::<Vec<_>>(),
    });
    if let Some(h) = &s.zitadel_instance_host {
        zitadel["instanceHost"] = json!(h);
    }
    if let Some(idp) = &z.idp_id {
        zitadel["idpId"] = json!(idp);
    }
    let cfg = json!({
        "listen": format!("0.0.0.0:{SCIM_PORT}"),
        "adminListen": format!("0.0.0.0:{ADMIN_PORT}"),
        "dataDir": "/data",
        "keysFile": "/etc/scim/keys/keys.yaml",
        "publicUrl": endpoint(t),
        "zitadel": zitadel,
    });
    serde_yaml::to_string(&cfg).unwrap_or_default()
}

/// The keys file the server reads: hashes of the keys that have not expired.
pub fn keys_file(keys: &[KeyMaterial]) -> String {
    crate::keys::render_keys_file(keys.iter().filter(|k| !k.expired).map(|k| (k.name.as_str(), k.token.as_str())))
}

fn secret(t: &ScimTenant, name: String, component: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(t, name, component),
        type_: Some("Opaque".into()),
        // `data`, not `stringData`: server-side apply of stringData never
        // converges (kubernetes#123843).
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    }
}

/// The managed service user's key file, which the server mounts.
pub fn credential_secret(t: &ScimTenant, data: &BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: meta(t, credential_secret_name(t), "zitadel-credential"),
        type_: Some("Opaque".into()),
        data: Some(data.clone()),
        ..Default::default()
    }
}

pub fn build(t: &ScimTenant, s: &Settings, keys: &[KeyMaterial], cred: &CredentialRef) -> Desired {
    let name = server_name(t);
    let server = t.spec.server.clone().unwrap_or_default();
    let key_secrets = keys
        .iter()
        .map(|k| {
            let mut sec = secret(
                t,
                key_secret_name(t, &k.name),
                "key",
                BTreeMap::from([("token".into(), k.token.clone()), ("endpoint".into(), endpoint(t))]),
            );
            let mut ann = BTreeMap::from([
                ("scim.unique.app/key-name".to_string(), k.name.clone()),
                (CREATED_AT.to_string(), k.created_at.clone()),
                ("scim.unique.app/fingerprint".to_string(), k.fingerprint()),
            ]);
            if let Some(e) = &k.expires_at {
                ann.insert("scim.unique.app/expires-at".into(), e.clone());
            }
            if let Some(r) = &k.rotated_for {
                ann.insert(ROTATED_FOR.into(), r.clone());
            }
            sec.metadata.annotations = Some(ann);
            sec
        })
        .collect();
    let hash_secret = secret(t, hash_secret_name(t), "keys", BTreeMap::from([("keys.yaml".into(), keys_file(keys))]));
    let config_text = server_config(t, s, cred);
    let config = ConfigMap {
        metadata: meta(t, config_name(t), "config"),
        data: Some(BTreeMap::from([("serve.yaml".into(), config_text.clone())])),
        ..Default::default()
    };
    let storage = server.storage.clone().unwrap_or_default();
    let pvc = PersistentVolumeClaim {
        // No owner reference: deleting the tenant must not delete the store.
        metadata: ObjectMeta {
            owner_references: None,
            annotations: Some(BTreeMap::from([(
                "scim.unique.app/retained".to_string(),
                "kept when the ScimTenant is deleted; delete it yourself to drop the data".to_string(),
            )])),
            ..meta(t, pvc_name(t), "data")
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
    };
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let mount = |n: &str, path: &str| VolumeMount {
        name: n.into(),
        mount_path: path.into(),
        // `false` is omitted by the API server (omitempty), so only `true` is sent.
        read_only: (path != "/data" && path != "/tmp").then_some(true),
        ..Default::default()
    };
    let config_hash = hex::encode(Sha256::digest(config_text.as_bytes()))[..16].to_string();
    let mut pod_labels = labels(t, "server");
    pod_labels.retain(|k, _| k != "app.kubernetes.io/managed-by");
    let deployment = Deployment {
        metadata: meta(t, name.clone(), "server"),
        spec: Some(DeploymentSpec {
            replicas: Some(server.replicas.unwrap_or(1)),
            // One writer on the embedded store: never two pods at once.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            selector: LabelSelector { match_labels: Some(selector(t)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // The keys file is reloaded in place; only a config change
                    // needs a new pod.
                    annotations: Some(BTreeMap::from([("scim.unique.app/config-hash".into(), config_hash)])),
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
                    containers: vec![Container {
                        name: "scim-server".into(),
                        image: Some(server.image.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| s.image.clone())),
                        args: Some(vec!["serve".into(), "--config".into(), "/etc/scim/config/serve.yaml".into()]),
                        ports: Some(vec![
                            ContainerPort {
                                name: Some("scim".into()),
                                container_port: SCIM_PORT,
                                ..Default::default()
                            },
                            ContainerPort {
                                name: Some("admin".into()),
                                container_port: ADMIN_PORT,
                                ..Default::default()
                            },
                        ]),
                        liveness_probe: Some(probe("/healthz", 10)),
                        readiness_probe: Some(probe("/readyz", 5)),
                        resources: server.resources.clone(),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        volume_mounts: Some(vec![
                            mount("config", "/etc/scim/config"),
                            mount("keys", "/etc/scim/keys"),
                            mount("zitadel", "/etc/scim/zitadel"),
                            mount("data", "/data"),
                            mount("tmp", "/tmp"),
                        ]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource { name: config_name(t), ..Default::default() }),
                            ..Default::default()
                        },
                        Volume {
                            name: "keys".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(hash_secret_name(t)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "zitadel".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(cred.secret_name.clone()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "data".into(),
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: pvc_name(t),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(t, name.clone(), "server"),
        spec: Some(ServiceSpec {
            selector: Some(selector(t)),
            ports: Some(vec![
                ServicePort {
                    name: Some("scim".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("scim".into())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: ADMIN_PORT,
                    target_port: Some(IntOrString::String("admin".into())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ingress = server.ingress.as_ref().filter(|i| !i.host.is_empty()).map(|i| Ingress {
        metadata: meta(t, name.clone(), "server"),
        spec: Some(IngressSpec {
            ingress_class_name: i.class_name.clone().filter(|c| !c.is_empty()),
            tls: i
                .tls_secret_name
                .clone()
                .filter(|s| !s.is_empty())
                .map(|s| vec![IngressTLS { hosts: Some(vec![i.host.clone()]), secret_name: Some(s) }]),
            rules: Some(vec![IngressRule {
                host: Some(i.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/scim/v2".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.clone(),
                                port: Some(ServiceBackendPort { name: Some("scim".into()), ..Default::default() }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    Desired { key_secrets, hash_secret, config, pvc, deployment, service, ingress, endpoint: endpoint(t) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::ScimTenant;

    pub fn tenant(yaml: &str) -> ScimTenant {
        let mut t: ScimTenant = serde_yaml::from_str(yaml).unwrap();
        t.metadata.uid = Some("uid-1".into());
        t
    }

    const ACME: &str = "apiVersion: scim.unique.app/v1alpha1\nkind: ScimTenant\nmetadata: {name: acme, namespace: tenants}\nspec:\n  zitadel:\n    organizationId: o1\n    projectId: p1\n    projectOrganizationId: o0\n    idpId: idp1\n    defaultRoles: [Chat.User]\n    groupRoles: [{group: Unique Admins, roles: [Chat.Admin.All]}]\n  keys: [{name: entra}]\n";

    fn settings() -> Settings {
        Settings {
            image: "ghcr.io/unique/scim-operator:0.1.0".into(),
            zitadel_url: "http://zitadel.zitadel.svc:8080".into(),
            zitadel_instance_host: Some("id.example.com".into()),
        }
    }

    fn key(name: &str, expired: bool) -> KeyMaterial {
        KeyMaterial {
            name: name.into(),
            token: format!("scim_{name}"),
            created_at: "2026-11-28T00:00:00Z".into(),
            expires_at: None,
            expired,
            rotated_for: None,
        }
    }

    fn cred() -> CredentialRef {
        CredentialRef { secret_name: "acme-scim-zitadel".into(), key: "key.json".into(), is_key_file: true }
    }

    #[test]
    fn builds_every_child_with_owner_and_labels() {
        let t = tenant(ACME);
        let d = build(&t, &settings(), &[key("entra", false)], &cred());
        assert_eq!(d.endpoint, "http://acme-scim.tenants.svc/scim/v2");
        assert_eq!(d.key_secrets[0].metadata.name.as_deref(), Some("acme-scim-key-entra"));
        let dep = &d.deployment;
        assert_eq!(dep.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        assert_eq!(dep.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "scim-operator");
        let spec = dep.spec.as_ref().unwrap();
        assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
        assert_eq!(c.image.as_deref(), Some("ghcr.io/unique/scim-operator:0.1.0"));
        assert!(d.ingress.is_none());
        let cfg = &d.config.data.as_ref().unwrap()["serve.yaml"];
        assert!(cfg.contains("keyFile: /etc/scim/zitadel/key.json"), "{cfg}");
        assert!(cfg.contains("instanceHost: id.example.com"), "{cfg}");
        let parsed: crate::config::ServeConfig = serde_yaml::from_str(cfg).unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.zitadel.unwrap().group_roles[0].roles, ["Chat.Admin.All"]);
    }

    #[test]
    fn hash_secret_holds_hashes_of_unexpired_keys_only() {
        let t = tenant(ACME);
        let d = build(&t, &settings(), &[key("entra", false), key("old", true)], &cred());
        let text = String::from_utf8(d.hash_secret.data.as_ref().unwrap()["keys.yaml"].0.clone()).unwrap();
        assert!(text.contains("name: entra"));
        assert!(!text.contains("name: old"));
        assert!(!text.contains("scim_entra"), "no plaintext");
        let parsed = crate::keys::parse_keys_file(std::path::Path::new("k"), &text).unwrap();
        assert_eq!(parsed[0].sha256, crate::keys::hash_token("scim_entra"));
        let none = keys_file(&[key("old", true)]);
        assert!(crate::keys::parse_keys_file(std::path::Path::new("k"), &none).unwrap().is_empty());
    }

    #[test]
    fn ingress_sets_the_endpoint_and_the_config_hash_follows_the_config() {
        let t = tenant(&format!(
            "{ACME}  server: {{ingress: {{host: scim.acme.example.com, className: nginx, tlsSecretName: acme-tls}}, storage: {{size: 5Gi}}}}\n"
        ));
        let d = build(&t, &settings(), &[key("entra", false)], &cred());
        assert_eq!(d.endpoint, "https://scim.acme.example.com/scim/v2");
        assert_eq!(d.ingress.as_ref().unwrap().spec.as_ref().unwrap().ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(
            d.pvc.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "5Gi"
        );
        let h1 = d.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone();
        let d2 = build(&t, &settings(), &[key("entra", false), key("second", false)], &cred());
        let h2 = d2.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone();
        assert_eq!(h1, h2, "adding a key does not restart the server");
    }
}
