//! What a tenant's pod needs to fit the cluster it runs on: pull secrets,
//! scheduling (node selector, tolerations, affinity, priority) and the pod's
//! extra labels and annotations. The operator's own labels and annotations
//! always win, so the Deployment's selector and the config hash hold.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec};

use super::TenantDefaults;
use crate::operator::crd::ServerSpec;

/// The tenant's pull secrets, or the operator's when the tenant names none.
fn image_pull_secrets(defaults: &TenantDefaults, server: &ServerSpec) -> Option<Vec<LocalObjectReference>> {
    let refs = match &server.image_pull_secrets {
        Some(own) => own.iter().filter(|r| !r.name.is_empty()).cloned().collect(),
        None => defaults.image_pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect(),
    };
    Some(refs).filter(|r: &Vec<LocalObjectReference>| !r.is_empty())
}

/// Gives `pod` the tenant's scheduling settings and pull secrets.
pub(super) fn fit(pod: &mut PodSpec, defaults: &TenantDefaults, server: &ServerSpec) {
    pod.image_pull_secrets = image_pull_secrets(defaults, server);
    pod.node_selector = server.node_selector.clone().filter(|m| !m.is_empty());
    pod.tolerations = server.tolerations.clone().filter(|t| !t.is_empty());
    pod.affinity = server.affinity.clone();
    pod.priority_class_name = server.priority_class_name.clone().filter(|p| !p.is_empty());
}

/// `extra` under `own`: a key both set keeps the operator's value.
pub(super) fn merged(
    extra: Option<&BTreeMap<String, String>>,
    own: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all = extra.cloned().unwrap_or_default();
    all.extend(own);
    all
}
