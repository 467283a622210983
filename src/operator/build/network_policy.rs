//! The tenant's NetworkPolicy: the SCIM port only from where the Ingress
//! controller runs, the admin port (`/status` with `lastError`, `/metrics`)
//! only from the operator's and the monitoring namespaces, and egress only
//! to DNS and to ZITADEL. A NetworkPolicy cannot name a host, so ZITADEL is
//! reached by port, to the peers (CIDRs, namespaces) the operator is told.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ADMIN_PORT, SCIM_PORT, TenantDefaults, meta, selector, server_name};
use crate::operator::crd::ScimTenant;

/// The label every namespace carries with its own name (Kubernetes ≥ 1.22).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const DNS_PORT: i32 = 53;

/// Operator-wide settings of the tenants' NetworkPolicies (from the controller's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicyDefaults {
    /// Whether tenants get a NetworkPolicy unless their spec says otherwise.
    pub enabled: bool,
    /// Who may reach the SCIM port: the Ingress controller's pods. Empty: any source.
    pub scim_from: Vec<NetworkPolicyPeer>,
    /// Namespaces whose pods may reach the admin port: the operator's own and monitoring.
    pub admin_from_namespaces: Vec<String>,
    /// Where ZITADEL is, for egress. Empty: any destination on `zitadel_port`.
    pub zitadel_to: Vec<NetworkPolicyPeer>,
    /// The port ZITADEL is reached on as the pod sees it after Service
    /// translation. None: the port of the ZITADEL URL.
    pub zitadel_port: Option<i32>,
}

impl Default for NetworkPolicyDefaults {
    fn default() -> Self {
        NetworkPolicyDefaults {
            enabled: true,
            scim_from: Vec::new(),
            admin_from_namespaces: Vec::new(),
            zitadel_to: Vec::new(),
            zitadel_port: None,
        }
    }
}

/// Whether `tenant` gets a NetworkPolicy: its spec's choice, else the operator's.
pub(crate) fn wanted(tenant: &ScimTenant, defaults: &NetworkPolicyDefaults) -> bool {
    tenant
        .spec
        .server
        .as_ref()
        .and_then(|s| s.network_policy.as_ref())
        .and_then(|n| n.enabled)
        .unwrap_or(defaults.enabled)
}

/// The port of the ZITADEL URL (443 for https, 80 for http, unless it names one).
fn url_port(url: &str) -> i32 {
    reqwest::Url::parse(url).ok().and_then(|u| u.port_or_known_default()).map_or(443, i32::from)
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("TCP".into()), ..Default::default() }
}

/// `None` for an empty list: a rule without peers admits every peer.
fn peers(list: &[NetworkPolicyPeer]) -> Option<Vec<NetworkPolicyPeer>> {
    Some(list.to_vec()).filter(|l| !l.is_empty())
}

pub(crate) fn network_policy(tenant: &ScimTenant, defaults: &TenantDefaults) -> NetworkPolicy {
    let np = &defaults.network_policy;
    let mut ingress = vec![NetworkPolicyIngressRule { ports: Some(vec![tcp(SCIM_PORT)]), from: peers(&np.scim_from) }];
    let admin_from: Vec<NetworkPolicyPeer> = np
        .admin_from_namespaces
        .iter()
        .filter(|ns| !ns.is_empty())
        .map(|ns| NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.clone())])),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    // No namespace named: no rule at all (an empty `from` would admit everyone).
    if !admin_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule { ports: Some(vec![tcp(ADMIN_PORT)]), from: Some(admin_from) });
    }
    let dns = NetworkPolicyEgressRule {
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(DNS_PORT)),
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            tcp(DNS_PORT),
        ]),
        to: None,
    };
    let zitadel_port = np.zitadel_port.unwrap_or_else(|| url_port(&defaults.zitadel_url));
    let zitadel = NetworkPolicyEgressRule { ports: Some(vec![tcp(zitadel_port)]), to: peers(&np.zitadel_to) };
    NetworkPolicy {
        metadata: meta(tenant, server_name(tenant), "server"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(selector(tenant)), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(vec![dns, zitadel]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::tests::tenant;

    const T: &str = "apiVersion: scim.unique.app/v1alpha1\nkind: ScimTenant\nmetadata: {name: acme, namespace: tenants}\nspec:\n  zitadel: {organizationId: o, projectId: p, projectOrganizationId: q}\n";

    fn defaults(url: &str) -> TenantDefaults {
        let mut d = TenantDefaults { image: "img".into(), zitadel_url: url.into(), ..Default::default() };
        d.network_policy.admin_from_namespaces = vec!["scim-operator".into(), "monitoring".into()];
        d
    }

    fn ports(rule_ports: &Option<Vec<NetworkPolicyPort>>) -> Vec<(i32, String)> {
        rule_ports
            .iter()
            .flatten()
            .map(|p| match (&p.port, &p.protocol) {
                (Some(IntOrString::Int(n)), Some(proto)) => (*n, proto.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn scim_from_the_ingress_controller_admin_from_operator_and_monitoring_egress_to_dns_and_zitadel() {
        let t = tenant(T);
        let mut d = defaults("https://id.example.com");
        let ingress_nginx = NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.into(), "ingress-nginx".into())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.network_policy.scim_from = vec![ingress_nginx.clone()];
        let np = network_policy(&t, &d);
        assert_eq!(np.metadata.name.as_deref(), Some("acme-scim"));
        assert_eq!(np.metadata.owner_references.as_ref().unwrap()[0].controller, Some(true));
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap(),
            selector(&t),
            "the server's pods, as the Deployment selects them"
        );
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"], "both directions are denied by default");
        let ingress = spec.ingress.unwrap();
        assert_eq!(ports(&ingress[0].ports), [(8080, "TCP".into())]);
        assert_eq!(ingress[0].from.as_deref(), Some(&[ingress_nginx][..]));
        assert_eq!(ports(&ingress[1].ports), [(9090, "TCP".into())]);
        let admin: Vec<String> = ingress[1]
            .from
            .iter()
            .flatten()
            .map(|p| {
                p.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL].clone()
            })
            .collect();
        assert_eq!(admin, ["scim-operator", "monitoring"]);
        assert_eq!(ingress.len(), 2, "nothing else is admitted");
        let egress = spec.egress.unwrap();
        assert_eq!(ports(&egress[0].ports), [(53, "UDP".into()), (53, "TCP".into())]);
        assert_eq!(ports(&egress[1].ports), [(443, "TCP".into())]);
        assert_eq!(egress.len(), 2, "nothing else leaves the pod");
    }

    #[test]
    fn zitadel_port_follows_the_url_unless_set() {
        let t = tenant(T);
        let port = |d: &TenantDefaults| ports(&network_policy(&t, d).spec.unwrap().egress.unwrap()[1].ports)[0].0;
        assert_eq!(port(&defaults("http://zitadel.zitadel.svc:8080")), 8080);
        assert_eq!(port(&defaults("http://zitadel.zitadel.svc")), 80);
        let mut d = defaults("http://zitadel.zitadel.svc");
        d.network_policy.zitadel_port = Some(8081);
        assert_eq!(port(&d), 8081, "a Service port 80 in front of a pod on 8081");
    }

    #[test]
    fn without_admin_namespaces_the_admin_port_is_closed_not_open() {
        let t = tenant(T);
        let mut d = defaults("https://id.example.com");
        d.network_policy.admin_from_namespaces.clear();
        let ingress = network_policy(&t, &d).spec.unwrap().ingress.unwrap();
        assert_eq!(ingress.len(), 1);
        assert_eq!(ports(&ingress[0].ports), [(8080, "TCP".into())]);
    }

    #[test]
    fn the_spec_switches_the_policy_off_or_on() {
        let d = NetworkPolicyDefaults::default();
        assert!(wanted(&tenant(T), &d), "on by default");
        let off = tenant(&format!("{T}  server: {{networkPolicy: {{enabled: false}}}}\n"));
        assert!(!wanted(&off, &d));
        let on = tenant(&format!("{T}  server: {{networkPolicy: {{enabled: true}}}}\n"));
        assert!(wanted(&on, &NetworkPolicyDefaults { enabled: false, ..d }));
    }
}
