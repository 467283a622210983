use super::*;
use crate::operator::crd::ScimTenant;

pub(crate) fn tenant(yaml: &str) -> ScimTenant {
    let mut t: ScimTenant = serde_yaml::from_str(yaml).unwrap();
    t.metadata.uid = Some("uid-1".into());
    t
}

const ACME: &str = "apiVersion: scim.unique.app/v1alpha1\nkind: ScimTenant\nmetadata: {name: acme, namespace: tenants}\nspec:\n  zitadel:\n    organizationId: o1\n    projectId: p1\n    projectOrganizationId: o0\n    idpId: idp1\n    defaultRoles: [Chat.User]\n    groupRoles: [{group: Unique Admins, roles: [Chat.Admin.All]}]\n  keys: [{name: entra}]\n";

fn settings() -> TenantDefaults {
    TenantDefaults {
        image: "ghcr.io/unique/scim-operator:0.1.0".into(),
        zitadel_url: "http://zitadel.zitadel.svc:8080".into(),
        zitadel_instance_host: Some("id.example.com".into()),
        ..Default::default()
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
    let d = build(&t, &settings(), &[key("entra", false)], &cred(), None);
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
    let d = build(&t, &settings(), &[key("entra", false), key("old", true)], &cred(), None);
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
    let d = build(&t, &settings(), &[key("entra", false)], &cred(), None);
    assert_eq!(d.endpoint, "https://scim.acme.example.com/scim/v2");
    assert_eq!(d.ingress.as_ref().unwrap().spec.as_ref().unwrap().ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(d.pvc.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "5Gi");
    let h1 = d.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone();
    let d2 = build(&t, &settings(), &[key("entra", false), key("second", false)], &cred(), None);
    let h2 = d2.deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone();
    assert_eq!(h1, h2, "adding a key does not restart the server");
}

/// The `json!` renderer `serve.yaml` had before it was typed. The pod
/// template's config hash is taken from this text, so the typed one must
/// produce the same bytes or every tenant's server restarts on upgrade.
fn legacy_server_config(t: &ScimTenant, s: &TenantDefaults, cred: &CredentialRef) -> String {
    use serde_json::json;
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
        "listen": "0.0.0.0:8080",
        "adminListen": "0.0.0.0:9090",
        "dataDir": "/data",
        "keysFile": "/etc/scim/keys/keys.yaml",
        "publicUrl": endpoint(t),
        "zitadel": zitadel,
    });
    serde_yaml::to_string(&cfg).unwrap()
}

const MINIMAL: &str = "apiVersion: scim.unique.app/v1alpha1\nkind: ScimTenant\nmetadata: {name: plain, namespace: tenants}\nspec:\n  zitadel: {organizationId: o1, projectId: p1, projectOrganizationId: o0}\n";

type Variant = (ScimTenant, TenantDefaults, CredentialRef, Option<IntrospectionMount>);

/// Every shape of config the operator renders: (tenant, settings, credential, self-service credential).
fn rendered_variants() -> Vec<Variant> {
    let no_host = TenantDefaults { zitadel_instance_host: None, ..settings() };
    let pat = CredentialRef { secret_name: "own-pat".into(), key: "pat".into(), is_key_file: false };
    let with_ingress = tenant(&format!("{ACME}  server: {{ingress: {{host: scim.acme.example.com}}}}\n"));
    let self_service = tenant(&format!("{ACME}  selfService: {{enabled: true, adminRole: Org.Admin, maxKeys: 4}}\n"));
    vec![
        (tenant(MINIMAL), no_host.clone(), cred(), None),
        (tenant(MINIMAL), no_host, pat.clone(), None),
        (tenant(ACME), settings(), cred(), None),
        (tenant(ACME), settings(), pat.clone(), None),
        (with_ingress, settings(), cred(), None),
        (self_service.clone(), settings(), cred(), Some(introspection(true))),
        (self_service.clone(), settings(), pat, Some(introspection(false))),
        // Enabled, but no credential yet.
        (self_service, settings(), cred(), None),
    ]
}

#[test]
fn serve_yaml_is_byte_identical_to_the_untyped_rendering() {
    for (t, s, c, i) in rendered_variants().into_iter().filter(|(_, _, _, i)| i.is_none()) {
        assert_eq!(server_config(&t, &s, &c, i.as_ref()), legacy_server_config(&t, &s, &c), "{}", t.name_any());
    }
}

#[test]
fn every_rendered_serve_yaml_is_a_valid_server_config_with_the_tenants_values() {
    for (t, s, c, i) in rendered_variants() {
        let text = server_config(&t, &s, &c, i.as_ref());
        let parsed = ServeConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        parsed.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, serve_config(&t, &s, &c, i.as_ref()), "values survive the round trip:\n{text}");
        match (&parsed.self_service, &i) {
            (None, None) => {}
            (Some(ss), Some(mount)) => {
                let spec = t.spec.self_service.clone().unwrap();
                assert_eq!(ss.admin_role, spec.admin_role);
                assert_eq!(ss.max_keys, spec.max_keys.map(|m| usize::try_from(m).unwrap()));
                assert_eq!(ss.introspection.client_id, mount.client_id);
                let file = |name: &str| Some(PathBuf::from(format!("/etc/scim/introspection/{name}")));
                let (key_file, secret_file) =
                    if mount.is_key_file { (file("key.json"), None) } else { (None, file("clientSecret")) };
                assert_eq!(
                    (&ss.introspection.key_file, &ss.introspection.client_secret_file),
                    (&key_file, &secret_file)
                );
            }
            other => panic!("selfService rendered {:?} for a mount {:?}", other.0, other.1),
        }
        assert_eq!(parsed.public_url.as_deref(), Some(endpoint(&t).as_str()));
        let z = parsed.zitadel.expect("the operator always configures ZITADEL");
        assert!(z.problems().is_empty(), "{:?}", z.problems());
        let mounted = PathBuf::from(format!("/etc/scim/zitadel/{}", c.key));
        let (key_file, pat_file) = if c.is_key_file { (Some(mounted), None) } else { (None, Some(mounted)) };
        assert_eq!((z.credentials.key_file, z.credentials.pat_file), (key_file, pat_file));
        assert_eq!(z.url, s.zitadel_url);
        assert_eq!(z.instance_host, s.zitadel_instance_host);
        assert_eq!(z.idp_id, t.spec.zitadel.idp_id);
        assert_eq!(z.group_roles, t.spec.zitadel.group_roles);
        assert_eq!(z.default_roles, t.spec.zitadel.default_roles);
        assert_eq!(z.organization_id, t.spec.zitadel.organization_id);
    }
}

#[test]
fn the_endpoint_is_https_only_with_tls_or_when_public_url_says_so() {
    let endpoint_of =
        |server: &str| build(&tenant(&format!("{ACME}  server: {server}\n")), &settings(), &[], &cred(), None).endpoint;
    assert_eq!(endpoint_of("{ingress: {host: scim.acme.example.com}}"), "http://scim.acme.example.com/scim/v2");
    assert_eq!(
        endpoint_of("{ingress: {host: scim.acme.example.com, tlsSecretName: t}}"),
        "https://scim.acme.example.com/scim/v2"
    );
    let behind_lb = "{ingress: {host: scim.acme.example.com}, publicUrl: 'https://scim.acme.example.com/scim/v2'}";
    assert_eq!(endpoint_of(behind_lb), "https://scim.acme.example.com/scim/v2");
    let t = tenant(&format!("{ACME}  server: {behind_lb}\n"));
    let d = build(&t, &settings(), &[], &cred(), None);
    let cfg: crate::config::ServeConfig = serde_yaml::from_str(&d.config.data.as_ref().unwrap()["serve.yaml"]).unwrap();
    assert_eq!(
        cfg.public_url.as_deref(),
        Some("https://scim.acme.example.com/scim/v2"),
        "the server links the same URL"
    );
}

#[test]
fn pod_settings_reach_the_pod_and_never_override_the_operators_labels() {
    let t = tenant(&format!(
        "{ACME}  server:
    imagePullSecrets: [{{name: tenant-registry}}]
    nodeSelector: {{pool: identity}}
    tolerations: [{{key: dedicated, operator: Equal, value: identity, effect: NoSchedule}}]
    affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{{key: zone, operator: In, values: [a]}}]}}]}}}}}}
    priorityClassName: tenant-critical
    podLabels: {{team: identity, app.kubernetes.io/instance: hijack}}
    podAnnotations: {{example.com/owner: identity, scim.unique.app/config-hash: forged}}
    ingress: {{host: scim.acme.example.com, annotations: {{cert-manager.io/cluster-issuer: letsencrypt}}}}
"
    ));
    let mut s = settings();
    s.image_pull_secrets = vec!["operator-registry".into()];
    let d = build(&t, &s, &[key("entra", false)], &cred(), None);
    let tpl = &d.deployment.spec.as_ref().unwrap().template;
    let pod = tpl.spec.as_ref().unwrap();
    let names: Vec<&str> = pod.image_pull_secrets.iter().flatten().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["tenant-registry"], "the tenant's own pull secrets replace the operator's");
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "identity");
    assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
    assert!(pod.affinity.as_ref().unwrap().node_affinity.is_some());
    assert_eq!(pod.priority_class_name.as_deref(), Some("tenant-critical"));
    let meta = tpl.metadata.as_ref().unwrap();
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "identity");
    assert_eq!(labels["app.kubernetes.io/instance"], "acme", "the Deployment's selector still matches its pods");
    let selector = d.deployment.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let annotations = meta.annotations.as_ref().unwrap();
    assert_eq!(annotations["example.com/owner"], "identity");
    assert_ne!(annotations["scim.unique.app/config-hash"], "forged");
    let ingress_annotations = d.ingress.as_ref().unwrap().metadata.annotations.as_ref().unwrap();
    assert_eq!(ingress_annotations["cert-manager.io/cluster-issuer"], "letsencrypt");

    // Unset: the operator's pull secrets; `[]`: none.
    let plain = build(&tenant(ACME), &s, &[], &cred(), None);
    let pod = plain.deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "operator-registry");
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none() && pod.affinity.is_none());
    let none = build(&tenant(&format!("{ACME}  server: {{imagePullSecrets: []}}\n")), &s, &[], &cred(), None);
    assert!(none.deployment.spec.unwrap().template.spec.unwrap().image_pull_secrets.is_none());
}

fn introspection(is_key_file: bool) -> IntrospectionMount {
    IntrospectionMount {
        secret_name: "acme-scim-introspection".into(),
        client_id: "3100@acme".into(),
        is_key_file,
        version: "k1".into(),
    }
}

#[test]
fn self_service_mounts_its_credential_renders_its_section_and_routes_graphql() {
    let t = tenant(&format!(
        "{ACME}  server: {{ingress: {{host: scim.acme.example.com}}}}\n  selfService: {{enabled: true, maxKeys: 4}}\n"
    ));
    let plain = build(&t, &settings(), &[key("entra", false)], &cred(), None);
    let d = build(&t, &settings(), &[key("entra", false)], &cred(), Some(&introspection(true)));
    let cfg = &d.config.data.as_ref().unwrap()["serve.yaml"];
    let plain_cfg = &plain.config.data.as_ref().unwrap()["serve.yaml"];
    assert!(cfg.starts_with(plain_cfg.as_str()), "the section follows the rest unchanged:\n{cfg}");
    let parsed: serde_yaml::Value = serde_yaml::from_str(cfg).unwrap();
    let ss = &parsed["selfService"];
    assert_eq!(ss["maxKeys"], serde_yaml::Value::from(4));
    assert!(ss.get("adminRole").is_none(), "left to the server's default");
    assert_eq!(ss["introspection"]["clientId"].as_str(), Some("3100@acme"));
    assert_eq!(ss["introspection"]["keyFile"].as_str(), Some("/etc/scim/introspection/key.json"));
    assert!(ss["introspection"].get("clientSecretFile").is_none());

    let pod = d.deployment.spec.as_ref().unwrap().template.clone();
    let vols = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
    let vol = vols.iter().find(|v| v.name == "introspection").expect("introspection volume");
    assert_eq!(vol.secret.as_ref().unwrap().secret_name.as_deref(), Some("acme-scim-introspection"));
    let mounts = pod.spec.as_ref().unwrap().containers[0].volume_mounts.clone().unwrap();
    assert!(mounts.iter().any(|m| m.name == "introspection" && m.mount_path == "/etc/scim/introspection"));
    let annotations = pod.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert_eq!(annotations["scim.unique.app/introspection-version"], "k1", "a new key rolls the pod");

    let paths: Vec<_> = d.ingress.as_ref().unwrap().spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| (p.path.clone().unwrap(), p.path_type.clone(), p.backend.service.as_ref().unwrap().port.clone()))
        .collect();
    let scim = Some(ServiceBackendPort { name: Some("scim".into()), number: None });
    assert_eq!(
        paths,
        [
            ("/scim/v2".to_string(), "Prefix".to_string(), scim.clone()),
            ("/graphql".to_string(), "Exact".to_string(), scim.clone()),
            ("/scope-management/graphql".to_string(), "Exact".to_string(), scim),
        ]
    );

    // A client secret instead of a key; without a credential yet, no section and no mount.
    let basic = build(&t, &settings(), &[], &cred(), Some(&introspection(false)));
    let cfg = &basic.config.data.as_ref().unwrap()["serve.yaml"];
    assert!(
        cfg.contains("clientSecretFile: /etc/scim/introspection/clientSecret")
            && !cfg.contains("keyFile: /etc/scim/intro"),
        "{cfg}"
    );
    let pending = build(&t, &settings(), &[], &cred(), None);
    assert!(!pending.config.data.as_ref().unwrap()["serve.yaml"].contains("selfService"));
    assert_eq!(
        pending.ingress.as_ref().unwrap().spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
            .http
            .as_ref()
            .unwrap()
            .paths
            .len(),
        3
    );

    // Switched off: the credential is neither rendered nor mounted, and only SCIM is routed.
    let off = tenant(&format!(
        "{ACME}  server: {{ingress: {{host: scim.acme.example.com}}}}\n  selfService: {{enabled: false}}\n"
    ));
    let d = build(&off, &settings(), &[], &cred(), Some(&introspection(true)));
    assert!(!d.config.data.as_ref().unwrap()["serve.yaml"].contains("selfService"));
    assert!(
        d.deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "introspection")
    );
    assert_eq!(
        d.ingress.as_ref().unwrap().spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
            .http
            .as_ref()
            .unwrap()
            .paths
            .len(),
        1
    );
}
