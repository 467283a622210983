//! `scim-operator preflight`: before the first provisioning cycle on an
//! organisation that already has users, show which Entra users will match an
//! existing ZITADEL user, which will be created, and which will conflict.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::zitadel::client::{Client, ZUser};
use crate::zitadel::config::ZitadelConfig;
use crate::zitadel::error::ZitadelError;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Parse { path: String, why: String },
    #[error(transparent)]
    Zitadel(#[from] ZitadelError),
}

/// One user of the Entra export.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EntraUser {
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub object_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Verdict {
    /// An existing user of the organisation with this username: provisioning adopts it.
    Match {
        zitadel_user_id: String,
    },
    Create,
    /// The same email belongs to a user of the organisation with another username.
    EmailUnderOtherUsername {
        zitadel_user_id: String,
        zitadel_username: String,
    },
    /// Usernames are unique across the instance: another organisation has it.
    UsernameTakenInOtherOrganisation {
        organization_id: String,
    },
    /// The username's domain is verified by another organisation.
    DomainNotAllowed {
        domain: String,
        organization_id: String,
    },
}

impl Verdict {
    pub fn is_conflict(&self) -> bool {
        !matches!(self, Verdict::Match { .. } | Verdict::Create)
    }
}

/// Reads a CSV (a header row naming userPrincipalName, mail, objectId in any
/// case; Entra's "Download users" export has them) or JSON (an array, or
/// Microsoft Graph's `{"value": [...]}`) export.
pub fn read_export(path: &Path) -> Result<Vec<EntraUser>, PreflightError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PreflightError::Read { path: p.clone(), source })?;
    parse_export(&p, &text)
}

pub(crate) fn parse_export(path: &str, text: &str) -> Result<Vec<EntraUser>, PreflightError> {
    let perr = |why: String| PreflightError::Parse { path: path.to_string(), why };
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(trimmed).map_err(|e| perr(format!("invalid JSON: {e}")))?;
        let items = match &v {
            Value::Array(a) => a,
            Value::Object(o) => o
                .get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| perr("expected an array of users or Graph's {\"value\": [...]}".into()))?,
            _ => return Err(perr("expected an array of users".into())),
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let get = |k: &str| {
                    u.as_object()
                        .and_then(|o| o.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)))
                        .and_then(|(_, v)| v.as_str())
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                Ok(EntraUser {
                    user_principal_name: get("userPrincipalName")
                        .ok_or_else(|| perr(format!("user {} has no userPrincipalName", i + 1)))?,
                    mail: get("mail"),
                    object_id: get("objectId").or_else(|| get("id")),
                })
            })
            .collect();
    }
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(trimmed.as_bytes());
    let headers = rdr.headers().map_err(|e| perr(format!("invalid CSV header: {e}")))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let upn = col("userPrincipalName").ok_or_else(|| {
        perr("the CSV has no userPrincipalName column (export users from Entra with it, plus mail and objectId)".into())
    })?;
    let (mail, oid) = (col("mail"), col("objectId").or_else(|| col("id")));
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| perr(format!("row {}: {e}", i + 2)))?;
        let get =
            |c: Option<usize>| c.and_then(|c| rec.get(c)).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let Some(u) = get(Some(upn)) else { continue };
        out.push(EntraUser { user_principal_name: u, mail: get(mail), object_id: get(oid) });
    }
    Ok(out)
}

/// What is known about ZITADEL, gathered before classifying.
#[derive(Debug, Default)]
pub struct Known {
    /// Users of the customer organisation.
    pub org_users: Vec<ZUser>,
    /// username (lowercase) → organisation of a user outside the customer organisation.
    pub taken_elsewhere: HashMap<String, String>,
    /// domain (lowercase) → another organisation that verified it.
    pub foreign_domains: HashMap<String, String>,
}

/// Classifies each Entra user: pure, given what is known.
pub fn classify(users: &[EntraUser], known: &Known) -> Vec<(EntraUser, Verdict)> {
    let by_name: HashMap<String, &ZUser> = known.org_users.iter().map(|u| (u.username.to_lowercase(), u)).collect();
    let by_email: HashMap<String, &ZUser> = known.org_users.iter().map(|u| (u.email.to_lowercase(), u)).collect();
    users
        .iter()
        .map(|e| {
            let name = e.user_principal_name.to_lowercase();
            let email = e.mail.as_deref().unwrap_or(&e.user_principal_name).to_lowercase();
            let domain = name.rsplit_once('@').map(|(_, d)| d.to_string());
            let verdict = if let Some(z) = by_name.get(&name) {
                Verdict::Match { zitadel_user_id: z.id.clone() }
            } else if let Some(org) = known.taken_elsewhere.get(&name) {
                Verdict::UsernameTakenInOtherOrganisation { organization_id: org.clone() }
            } else if let Some((d, org)) = domain.as_ref().and_then(|d| known.foreign_domains.get(d).map(|o| (d, o))) {
                Verdict::DomainNotAllowed { domain: d.clone(), organization_id: org.clone() }
            } else if let Some(z) = by_email.get(&email) {
                Verdict::EmailUnderOtherUsername { zitadel_user_id: z.id.clone(), zitadel_username: z.username.clone() }
            } else {
                Verdict::Create
            };
            (e.clone(), verdict)
        })
        .collect()
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Gathers what `classify` needs from ZITADEL.
pub async fn gather(client: &Client, cfg: &ZitadelConfig, users: &[EntraUser]) -> Result<Known, PreflightError> {
    const PAGE: u32 = 100;
    let (total, first) = client.list_org_users(&cfg.organization_id, 0, PAGE).await?;
    let bar = progress(total, "organisation users");
    let mut org_users = first;
    bar.set_position(org_users.len() as u64);
    while (org_users.len() as u64) < total {
        let (_, page) = client.list_org_users(&cfg.organization_id, org_users.len() as u64, PAGE).await?;
        if page.is_empty() {
            break;
        }
        org_users.extend(page);
        bar.set_position(org_users.len() as u64);
    }
    bar.finish();
    let in_org: HashSet<String> = org_users.iter().map(|u| u.username.to_lowercase()).collect();
    let mut known = Known { org_users, ..Default::default() };
    let to_check: Vec<&EntraUser> =
        users.iter().filter(|u| !in_org.contains(&u.user_principal_name.to_lowercase())).collect();
    let bar = progress(to_check.len() as u64, "Entra users");
    let mut domains_seen = HashSet::new();
    for u in to_check {
        let name = u.user_principal_name.to_lowercase();
        for z in client.find_users_by_username(&name).await? {
            if z.organization_id != cfg.organization_id && z.username.to_lowercase() == name {
                known.taken_elsewhere.insert(name.clone(), z.organization_id.clone());
            }
        }
        if let Some((_, d)) = name.rsplit_once('@')
            && domains_seen.insert(d.to_string())
            && let Some(org) = client.orgs_with_domain(d).await?.into_iter().find(|o| *o != cfg.organization_id)
        {
            known.foreign_domains.insert(d.to_string(), org);
        }
        bar.inc(1);
    }
    bar.finish();
    Ok(known)
}

/// The report as text: a summary, then every conflict with its fix.
pub fn render(results: &[(EntraUser, Verdict)]) -> String {
    let count = |f: fn(&Verdict) -> bool| results.iter().filter(|(_, v)| f(v)).count();
    let mut out = format!(
        "{} Entra users: {} match existing ZITADEL users, {} will be created, {} conflict\n",
        results.len(),
        count(|v| matches!(v, Verdict::Match { .. })),
        count(|v| matches!(v, Verdict::Create)),
        count(Verdict::is_conflict),
    );
    for (u, v) in results {
        let line = match v {
            Verdict::Match { zitadel_user_id } => {
                format!("match     {} -> ZITADEL user {zitadel_user_id}", u.user_principal_name)
            }
            Verdict::Create => format!("create    {}", u.user_principal_name),
            Verdict::EmailUnderOtherUsername { zitadel_user_id, zitadel_username } => format!(
                "CONFLICT  {}: its email belongs to ZITADEL user {zitadel_user_id} ('{zitadel_username}'); rename that user to the UPN to match it, or change its email",
                u.user_principal_name
            ),
            Verdict::UsernameTakenInOtherOrganisation { organization_id } => format!(
                "CONFLICT  {}: the username exists in organisation {organization_id} (usernames are instance-wide); remove or rename that user",
                u.user_principal_name
            ),
            Verdict::DomainNotAllowed { domain, organization_id } => format!(
                "CONFLICT  {}: '{domain}' is a verified domain of organisation {organization_id}; verify it in the customer organisation instead",
                u.user_principal_name
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(id: &str, org: &str, name: &str, email: &str) -> ZUser {
        ZUser {
            id: id.into(),
            organization_id: org.into(),
            username: name.into(),
            email: email.into(),
            is_human: true,
            ..Default::default()
        }
    }

    #[test]
    fn reads_entra_csv_and_graph_json() {
        let csv = "\u{feff}userPrincipalName,displayName,mail,objectId\nalice@contoso.com,Alice,alice@contoso.com,0a21\nbob@contoso.com,Bob,,5b1c\n";
        let u = parse_export("u.csv", csv).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[1],
            EntraUser { user_principal_name: "bob@contoso.com".into(), mail: None, object_id: Some("5b1c".into()) }
        );
        let json = r#"{"value": [{"userPrincipalName": "c@contoso.com", "mail": "c@contoso.com", "id": "9"}]}"#;
        assert_eq!(parse_export("u.json", json).unwrap()[0].object_id.as_deref(), Some("9"));
        let e = parse_export("u.csv", "name,mail\nx,y\n").unwrap_err().to_string();
        assert!(e.contains("userPrincipalName"), "{e}");
    }

    #[test]
    fn classifies_matches_creates_and_conflicts() {
        let users: Vec<EntraUser> =
            ["alice@contoso.com", "new@contoso.com", "carol@contoso.com", "dave@contoso.com", "erin@fabrikam.com"]
                .iter()
                .map(|u| EntraUser { user_principal_name: u.to_string(), mail: Some(u.to_string()), object_id: None })
                .collect();
        let known = Known {
            org_users: vec![
                z("1", "org", "Alice@Contoso.com", "alice@contoso.com"),
                z("2", "org", "carol.old", "carol@contoso.com"),
            ],
            taken_elsewhere: HashMap::from([("dave@contoso.com".into(), "other".into())]),
            foreign_domains: HashMap::from([("fabrikam.com".into(), "fab".into())]),
        };
        let r = classify(&users, &known);
        assert_eq!(r[0].1, Verdict::Match { zitadel_user_id: "1".into() });
        assert_eq!(r[1].1, Verdict::Create);
        assert!(matches!(r[2].1, Verdict::EmailUnderOtherUsername { .. }));
        assert!(matches!(r[3].1, Verdict::UsernameTakenInOtherOrganisation { .. }));
        assert!(matches!(r[4].1, Verdict::DomainNotAllowed { .. }));
        let text = render(&r);
        assert!(
            text.starts_with("5 Entra users: 1 match existing ZITADEL users, 1 will be created, 3 conflict"),
            "{text}"
        );
    }
}
