//! Spec validation the CRD's CEL rules cannot express. A failure is reported
//! as `Stalled` with reason `InvalidSpec` and is not retried until the spec
//! changes.

use std::collections::HashSet;
use std::time::Duration;

use super::crd::ScimTenantSpec;

const MAX_KEY_LIFETIME: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `8760h`, `30m`, `90s`, `7d`, or combinations such as `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut saw_unit = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        saw_unit = true;
    }
    (num.is_empty() && saw_unit && total > 0).then(|| Duration::from_secs(total))
}

/// Every problem, each naming the field and the fix.
pub(crate) fn validate(spec: &ScimTenantSpec) -> Result<(), Vec<String>> {
    let mut p = Vec::new();
    let z = &spec.zitadel;
    for (field, v) in [
        ("spec.zitadel.organizationId", &z.organization_id),
        ("spec.zitadel.projectId", &z.project_id),
        ("spec.zitadel.projectOrganizationId", &z.project_organization_id),
    ] {
        if v.trim().is_empty() {
            p.push(format!("{field} is empty: copy the id from the ZITADEL console"));
        }
    }
    if spec.keys.len() > 16 {
        p.push(format!("spec.keys has {} entries; at most 16 keys can be valid at once", spec.keys.len()));
    }
    let mut names = HashSet::new();
    for (i, k) in spec.keys.iter().enumerate() {
        if !names.insert(k.name.as_str()) {
            p.push(format!("spec.keys[{i}]: the key name '{}' is used twice", k.name));
        }
        if let Some(e) = &k.expires_after {
            match parse_duration(e) {
                None => p.push(format!("spec.keys[{i}].expiresAfter '{e}' is not a duration like 8760h, 30d or 1h30m")),
                Some(d) if d > MAX_KEY_LIFETIME => p.push(format!(
                    "spec.keys[{i}].expiresAfter '{e}' is longer than 100 years: leave it out for a key that does not expire"
                )),
                Some(_) => {}
            }
        }
    }
    let mut groups = HashSet::new();
    for (i, g) in z.group_roles.iter().enumerate() {
        if g.group.trim().is_empty() || g.roles.is_empty() {
            p.push(format!("spec.zitadel.groupRoles[{i}] needs a group name and at least one role"));
        }
        if !groups.insert(g.group.to_lowercase()) {
            p.push(format!("spec.zitadel.groupRoles lists the group '{}' twice: merge the entries", g.group));
        }
    }
    if let Some(r) = spec.server.as_ref().and_then(|s| s.replicas)
        && r != 1
        && r != 0
    {
        p.push(format!("spec.server.replicas is {r}: the embedded store serves one replica (0 pauses the server)"));
    }
    // The CRD's patterns reject these at admission; tenants stored before it get the same word here.
    let server = spec.server.clone().unwrap_or_default();
    if let Some(size) = server.storage.as_ref().and_then(|s| s.size.as_deref()).filter(|s| !s.is_empty())
        && super::diff::quantity(size).is_none_or(|bytes| bytes < 1.0)
    {
        p.push(format!("spec.server.storage.size '{size}' is not a storage size like 1Gi or 500Mi"));
    }
    if let Some(url) = server.public_url.as_deref().filter(|u| !u.is_empty())
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        p.push(format!("spec.server.publicUrl '{url}' must start with https:// (the Tenant URL Entra is given)"));
    }
    if let Some(su) = &z.service_user
        && su.managed == Some(false)
        && su.existing_secret_ref.is_none()
    {
        p.push("spec.zitadel.serviceUser: with managed: false, set existingSecretRef to a Secret holding a PAT or machine key".into());
    }
    self_service_problems(spec, &mut p);
    if p.is_empty() { Ok(()) } else { Err(p) }
}

fn self_service_problems(spec: &ScimTenantSpec, p: &mut Vec<String>) {
    let Some(ss) = spec.self_service.as_ref().filter(|s| s.enabled) else { return };
    let z = &spec.zitadel;
    if z.organization_id.trim().is_empty() || z.project_id.trim().is_empty() {
        p.push("spec.selfService needs spec.zitadel.organizationId and projectId: keys belong to that organisation and admins hold their role on that project".into());
    }
    if ss.admin_role.as_deref().is_some_and(|r| r.trim().is_empty()) {
        p.push(
            "spec.selfService.adminRole is empty: leave it out for Chat.Admin.All or name a role of the project".into(),
        );
    }
    if let Some(m) = ss.max_keys.filter(|m| *m < 1) {
        p.push(format!("spec.selfService.maxKeys is {m}: leave it out for 16 or allow at least 1 key"));
    }
    if let Some(r) = &ss.introspection_secret_ref {
        let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if r.name.is_empty() || r.name.len() > 253 || !r.name.chars().all(dns) {
            p.push(format!(
                "spec.selfService.introspectionSecretRef.name '{}' is not a Secret name (lowercase letters, digits, '-' and '.')",
                r.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::ScimTenant;

    fn spec(extra: &str) -> ScimTenantSpec {
        let t: ScimTenant = serde_yaml::from_str(&format!(
            "apiVersion: scim.unique.app/v1alpha1\nkind: ScimTenant\nmetadata: {{name: a}}\nspec:\n  zitadel: {{organizationId: o, projectId: p, projectOrganizationId: q}}\n{extra}"
        ))
        .unwrap();
        t.spec
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8760h"), Some(Duration::from_secs(8760 * 3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86_400)));
        for bad in ["", "h", "10", "10x", "0h", "-1h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn valid_and_invalid_specs() {
        assert!(validate(&spec("  keys: [{name: entra, expiresAfter: 8760h}]\n")).is_ok());
        let e = validate(&spec(
            "  keys: [{name: a}, {name: a, expiresAfter: soon}, {name: b, expiresAfter: 100000000d}]\n  server: {replicas: 3}\n",
        ))
            .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("used twice"), "{all}");
        assert!(all.contains("expiresAfter 'soon'"), "{all}");
        assert!(all.contains("replicas is 3"), "{all}");
        assert!(all.contains("longer than 100 years"), "{all}");
        let e =
            validate(&spec("  server: {storage: {size: lots}, publicUrl: scim.example.com}\n")).unwrap_err().join("\n");
        assert!(e.contains("storage.size 'lots'") && e.contains("publicUrl 'scim.example.com'"), "{e}");
        assert!(
            validate(&spec("  server: {storage: {size: 5Gi}, publicUrl: 'https://s.example.com/scim/v2'}\n")).is_ok()
        );
        let mut s = spec("");
        s.zitadel.organization_id.clear();
        assert!(validate(&s).unwrap_err()[0].contains("organizationId is empty"));
    }

    #[test]
    fn self_service_settings() {
        assert!(validate(&spec("  selfService: {enabled: true}\n")).is_ok());
        let ok = "  selfService: {enabled: true, adminRole: Org.Admin, maxKeys: 4, introspectionSecretRef: {name: acme-introspection}}\n";
        assert!(validate(&spec(ok)).is_ok());
        let bad =
            "  selfService: {enabled: true, adminRole: ' ', maxKeys: 0, introspectionSecretRef: {name: Bad_Name}}\n";
        let all = validate(&spec(bad)).unwrap_err().join("\n");
        for want in ["adminRole is empty", "maxKeys is 0", "'Bad_Name' is not a Secret name"] {
            assert!(all.contains(want), "{want}: {all}");
        }
        let mut s = spec("  selfService: {enabled: true}\n");
        s.zitadel.project_id.clear();
        assert!(validate(&s).unwrap_err().join("\n").contains("spec.selfService needs"));
        // Switched off, its settings are not in force.
        assert!(validate(&spec("  selfService: {enabled: false, maxKeys: 0}\n")).is_ok());
    }
}
