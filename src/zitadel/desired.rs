//! What a SCIM user should look like in ZITADEL: a pure function of the stored
//! SCIM document, the names of the groups it is in, and the configuration.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{IdpLink, NewHumanUser, Profile};
use super::config::ZitadelConfig;
use crate::scim::error::ScimError;
use crate::scim::schema::ENTERPRISE_USER_SCHEMA;

/// Metadata keys written on every provisioned user, so an admin can trace a
/// ZITADEL user back to Entra.
pub(crate) const MD_EXTERNAL_ID: &str = "scim.externalId";
pub(crate) const MD_USER_NAME: &str = "scim.userName";
pub(crate) const MD_EMPLOYEE_NUMBER: &str = "scim.employeeNumber";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DesiredUser {
    pub id: String,
    pub username: String,
    pub given_name: String,
    pub family_name: String,
    pub display_name: Option<String>,
    pub nick_name: Option<String>,
    pub preferred_language: Option<String>,
    pub email: String,
    pub phone: Option<String>,
    pub active: bool,
    /// Sorted by key.
    pub metadata: Vec<(String, String)>,
    /// (idpId, IdP-side user id = externalId, userName)
    pub idp_link: Option<(String, String, String)>,
    pub roles: BTreeSet<String>,
}

impl DesiredUser {
    pub(crate) fn profile(&self) -> Profile {
        Profile {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            display_name: self.display_name.clone(),
            nick_name: self.nick_name.clone(),
            preferred_language: self.preferred_language.clone(),
        }
    }

    pub(crate) fn link(&self) -> Option<IdpLink> {
        self.idp_link.as_ref().map(|(idp, uid, name)| IdpLink {
            idp_id: idp.clone(),
            user_id: uid.clone(),
            user_name: name.clone(),
        })
    }

    pub(crate) fn new_human(&self, organization_id: &str) -> NewHumanUser {
        NewHumanUser {
            user_id: self.id.clone(),
            username: self.username.clone(),
            organization_id: organization_id.to_string(),
            profile: self.profile(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            metadata: self.metadata.clone(),
            idp_link: self.link(),
        }
    }

    pub(crate) fn roles_vec(&self) -> Vec<String> {
        self.roles.iter().cloned().collect()
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The value of a multi-valued attribute: primary first, then the `type`
/// given, then the first.
fn pick<'a>(doc: &'a Value, attr: &str, preferred_type: &str) -> Option<&'a str> {
    let items = doc.get(attr)?.as_array()?;
    let value = |e: &'a Value| e.get("value").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    items
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .and_then(value)
        .or_else(|| {
            items.iter().find(|e| e.get("type").and_then(Value::as_str) == Some(preferred_type)).and_then(value)
        })
        .or_else(|| items.iter().find_map(value))
}

/// ZITADEL wants E.164; Entra sends phones as typed in the directory
/// ("+1 (555) 010-0000"). Separators are dropped for ZITADEL only (the SCIM
/// store keeps the value as sent); anything else is not projected rather than
/// failing the user.
pub(crate) fn e164(phone: &str) -> Option<String> {
    let compact: String = phone.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '/')).collect();
    let digits = compact.strip_prefix('+')?;
    (digits.len() >= 6 && digits.len() <= 15 && digits.chars().all(|c| c.is_ascii_digit())).then_some(compact)
}

/// A BCP 47 language tag shape ZITADEL accepts; others are not projected.
fn language(tag: &str) -> Option<String> {
    let mut parts = tag.split(['-', '_']);
    let primary = parts.next()?;
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    ok.then(|| tag.replace('_', "-"))
}

/// Maps a stored SCIM user. ZITADEL requires given name, family name and
/// email, which Entra may omit; the fallbacks (documented in the README) are:
/// given name ← `name.givenName`, else the first word of `displayName`, else
/// the part of `userName` before `@`; family name ← `name.familyName`, else the
/// rest of `displayName`, else the given name; email ← the primary email, else
/// the work email, else the first, else `userName` when it is an address.
pub(crate) fn desired_user(doc: &Value, group_names: &[String], cfg: &ZitadelConfig) -> Result<DesiredUser, ScimError> {
    let id = s(doc, "/id").unwrap_or_default().to_string();
    let username = s(doc, "/userName").ok_or_else(|| ScimError::invalid_value("'userName' is required"))?.to_string();
    let display_name = s(doc, "/displayName").or_else(|| s(doc, "/name/formatted")).map(str::to_string);
    let mut display_words = display_name.as_deref().unwrap_or_default().split_whitespace();
    let first_word = display_words.next().map(str::to_string);
    let rest_words: Vec<&str> = display_words.collect();
    let local_part = username.split('@').next().unwrap_or(&username).to_string();
    let given_name = s(doc, "/name/givenName").map(str::to_string).or(first_word).unwrap_or(local_part);
    let family_name = s(doc, "/name/familyName")
        .map(str::to_string)
        .or_else(|| (!rest_words.is_empty()).then(|| rest_words.join(" ")))
        .unwrap_or_else(|| given_name.clone());
    let email = pick(doc, "emails", "work")
        .map(str::to_string)
        .or_else(|| username.contains('@').then(|| username.clone()))
        .ok_or_else(|| {
            ScimError::invalid_value(
                "ZITADEL needs an email address and this user has none: map 'mail' (or userPrincipalName) to emails[type eq \"work\"].value in Entra's attribute mappings",
            )
        })?;
    let phone = pick(doc, "phoneNumbers", "mobile").and_then(e164);
    let external_id = s(doc, "/externalId").map(str::to_string);
    let mut metadata = vec![(MD_USER_NAME.to_string(), username.clone())];
    if let Some(x) = &external_id {
        metadata.push((MD_EXTERNAL_ID.to_string(), x.clone()));
    }
    if let Some(n) = s(doc, &format!("/{}/employeeNumber", ENTERPRISE_USER_SCHEMA.replace('/', "~1"))) {
        metadata.push((MD_EMPLOYEE_NUMBER.to_string(), n.to_string()));
    }
    metadata.sort();
    let idp_link = match (&cfg.idp_id, &external_id) {
        (Some(idp), Some(x)) => Some((idp.clone(), x.clone(), username.clone())),
        _ => None,
    };
    Ok(DesiredUser {
        id,
        username,
        given_name,
        family_name,
        display_name,
        nick_name: s(doc, "/nickName").map(str::to_string),
        preferred_language: s(doc, "/preferredLanguage").and_then(language),
        email,
        phone,
        active: doc.get("active") != Some(&Value::Bool(false)),
        metadata,
        idp_link,
        roles: cfg.roles_for(group_names),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ZitadelConfig {
        serde_yaml::from_str(
            "url: https://id.example.com\ncredentials: {patFile: /p}\norganizationId: o1\nprojectId: p1\nprojectOrganizationId: o0\nidpId: idp1\ndefaultRoles: [Chat.User]\ngroupRoles: [{group: Unique Admins, roles: [Chat.Admin.All]}]\n",
        )
        .unwrap()
    }

    #[test]
    fn maps_an_entra_user() {
        let doc = json!({
            "id": "u1", "userName": "alice@contoso.com", "externalId": "0a21f0f2",
            "displayName": "Alice Smith", "active": true, "preferredLanguage": "en-US",
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [{"type": "work", "value": "alice@contoso.com", "primary": true}],
            "phoneNumbers": [{"type": "mobile", "value": "+1 (555) 010-0000"}],
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "E1"}
        });
        let d = desired_user(&doc, &["unique admins".into()], &cfg()).unwrap();
        assert_eq!((d.given_name.as_str(), d.family_name.as_str()), ("Alice", "Smith"));
        assert_eq!(d.phone.as_deref(), Some("+15550100000"));
        assert_eq!(d.preferred_language.as_deref(), Some("en-US"));
        assert_eq!(d.idp_link, Some(("idp1".into(), "0a21f0f2".into(), "alice@contoso.com".into())));
        assert_eq!(d.roles.iter().cloned().collect::<Vec<_>>(), ["Chat.Admin.All", "Chat.User"]);
        assert!(d.metadata.contains(&(MD_EXTERNAL_ID.into(), "0a21f0f2".into())));
        assert!(d.metadata.contains(&(MD_EMPLOYEE_NUMBER.into(), "E1".into())));
        assert!(d.active);
    }

    #[test]
    fn fallbacks_for_what_entra_may_omit() {
        let d = desired_user(&json!({"id": "u", "userName": "bob@x.com", "displayName": "Bob van Dyke"}), &[], &cfg())
            .unwrap();
        assert_eq!((d.given_name.as_str(), d.family_name.as_str(), d.email.as_str()), ("Bob", "van Dyke", "bob@x.com"));
        let d = desired_user(&json!({"id": "u", "userName": "carol@x.com", "active": false}), &[], &cfg()).unwrap();
        assert_eq!((d.given_name.as_str(), d.family_name.as_str()), ("carol", "carol"));
        assert!(!d.active);
        assert_eq!(d.idp_link, None, "no externalId, no link");
        let e = desired_user(&json!({"id": "u", "userName": "dave"}), &[], &cfg()).unwrap_err();
        assert!(e.detail.contains("emails[type eq"), "{}", e.detail);
    }

    #[test]
    fn phones_and_languages_zitadel_would_reject_are_left_out() {
        assert_eq!(e164("0800 FLOWERS"), None);
        assert_eq!(e164("+41 79 123 45 67").as_deref(), Some("+41791234567"));
        assert_eq!(language("not a language"), None);
        assert_eq!(language("de_CH").as_deref(), Some("de-CH"));
    }
}
