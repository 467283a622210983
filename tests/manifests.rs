//! Generated and packaged manifests stay in step with the code: `crds/`
//! equals `scim-operator crd`, the chart's CRD equals `crds/`, kustomize
//! renders, and the sample renders to the objects the controller applies.

use std::process::Command;

fn bin(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_scim-operator")).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn crds_dir_matches_the_generated_crd() {
    let generated = bin(&["crd"]);
    assert_eq!(
        read("crds/scimtenants.scim.unique.app.yaml"),
        generated,
        "crds/ is stale: run `make crds` (scim-operator crd > crds/scimtenants.scim.unique.app.yaml)"
    );
    assert_eq!(
        read("charts/scim-operator/crds/scimtenants.scim.unique.app.yaml"),
        generated,
        "the chart's CRD is stale: run `make crds`"
    );
    // kustomize refuses files outside its root, so config/crd holds a copy.
    assert_eq!(
        read("config/crd/scimtenants.scim.unique.app.yaml"),
        generated,
        "config/crd's CRD is stale: run `make crds`"
    );
    // `kubectl apply --server-side -f crds/` applies every file in the folder:
    // nothing but CustomResourceDefinitions may live there.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for entry in std::fs::read_dir(&root).expect("crds/ exists") {
        let name = entry.expect("dir entry").file_name().to_string_lossy().into_owned();
        assert!(
            read(&format!("crds/{name}")).contains("kind: CustomResourceDefinition"),
            "crds/{name} is not a CustomResourceDefinition; kustomize entries belong in config/crd"
        );
    }
}

#[test]
fn kustomize_renders_offline() {
    for dir in ["config/default", "config/samples"] {
        let out = Command::new("kubectl")
            .args(["kustomize", &format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))])
            .output()
            .expect("kubectl is needed for this test (kubectl kustomize works offline)");
        assert!(out.status.success(), "{dir}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stdout.is_empty());
    }
}

/// `scim-operator render` of a sample: the text and its documents.
fn render_sample(file: &str) -> (String, Vec<serde_yaml::Value>) {
    let y = bin(&["render", "-f", &format!("{}/config/samples/{file}", env!("CARGO_MANIFEST_DIR"))]);
    let docs = y
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    (y, docs)
}

#[test]
fn the_sample_renders_every_child() {
    let (y, docs) = render_sample("scimtenant.yaml");
    let kinds: Vec<(&str, &str)> =
        docs.iter().map(|d| (d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("Secret", "acme-scim-key-entra"),
            ("Secret", "acme-scim-keys"),
            ("Secret", "acme-scim-zitadel"),
            ("ConfigMap", "acme-scim-config"),
            ("PersistentVolumeClaim", "acme-scim-data"),
            ("Deployment", "acme-scim"),
            ("Service", "acme-scim"),
            ("Ingress", "acme-scim"),
            ("NetworkPolicy", "acme-scim"),
        ]
    );
    assert!(y.contains("https://scim.acme.example.com/scim/v2"));
}

#[test]
fn the_self_service_sample_renders_its_application_secret_section_and_routes() {
    let (_, docs) = render_sample("scimtenant-self-service.yaml");
    let named = |kind: &str, name: &str| {
        docs.iter().find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)).cloned()
    };
    assert!(named("Secret", "contoso-scim-introspection").is_some(), "the managed application's key Secret");
    let cm = named("ConfigMap", "contoso-scim-config").unwrap();
    let serve: scim_operator::config::ServeConfig =
        serde_yaml::from_str(cm["data"]["serve.yaml"].as_str().unwrap()).unwrap();
    serve.validate().unwrap();
    let ss = serve.self_service.expect("selfService in serve.yaml");
    assert_eq!(ss.introspection.key_file.as_deref(), Some(std::path::Path::new("/etc/scim/introspection/key.json")));
    let ingress = named("Ingress", "contoso-scim").unwrap();
    let paths: Vec<&str> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/scim/v2", "/graphql", "/scope-management/graphql"]);
}
