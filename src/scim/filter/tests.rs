use std::cmp::Ordering;

use serde_json::json;

use super::*;
use crate::scim::error::ScimError;
use crate::scim::schema::resolve_path;

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Alice@Contoso.com",
        "displayName": "Alice Smith",
        "active": true,
        "name": {"givenName": "Alice", "familyName": "Smith"},
        "emails": [
            {"type": "work", "value": "alice@contoso.com", "primary": true},
            {"type": "home", "value": "alice@home.example"}
        ],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "Engineering", "manager": {"value": "m-1"}
        },
        "meta": {"resourceType": "User", "created": "2026-01-02T03:04:05Z", "lastModified": "2026-06-01T00:00:00Z"}
    })
}

fn m(filter: &str) -> bool {
    Filter::parse(ResourceKind::User, filter).unwrap().matches(&user())
}

fn err(filter: &str) -> ScimError {
    Filter::parse(ResourceKind::User, filter).unwrap_err()
}

#[test]
fn entra_probe_and_matching_filters() {
    assert!(!m(r#"userName eq "7d420df3-9995-4831-a406-ecf8166f5f6a""#));
    assert!(m(r#"userName eq "alice@contoso.com""#), "userName is caseExact=false");
    assert!(m(r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#));
    assert!(!m(r#"externalId eq "0A21F0F2-8D2A-4F8E-BF98-7363C4AED4EF""#), "externalId is caseExact");
    assert!(m(r#"USERNAME EQ "alice@contoso.com""#), "names and operators are case-insensitive");
    assert!(m(r#"emails[type eq "work"].value eq "alice@contoso.com""#));
    assert!(!m(r#"emails[type eq "home"].value eq "alice@contoso.com""#));
}

#[test]
fn all_operators() {
    assert!(m(r#"displayName co "ice S""#));
    assert!(m(r#"displayName sw "alice""#));
    assert!(m(r#"displayName ew "SMITH""#));
    assert!(m(r#"displayName ne "Bob""#));
    assert!(!m(r#"displayName ne "alice smith""#));
    assert!(m(r#"displayName gt "Aa""#));
    assert!(m(r#"displayName ge "alice smith""#));
    assert!(m(r#"displayName lt "B""#));
    assert!(m(r#"displayName le "Alice Smith""#));
    assert!(!m("title pr"));
    assert!(m("name.givenName pr"));
    assert!(m("active eq true"));
    assert!(!m("active eq false"));
    assert!(m(r#"meta.created lt "2026-01-02T04:00:00+01:00" or meta.created gt "2026-01-02T03:00:00Z""#));
    assert!(m(r#"meta.lastModified gt "2026-05-31T23:59:59.5Z""#));
    assert!(m("title eq null"));
    assert!(m(r#"title ne "x""#), "ne matches a missing attribute");
}

#[test]
fn logic_precedence_and_grouping() {
    assert!(m(r#"userName eq "x" or userName eq "alice@contoso.com" and active eq true"#));
    assert!(!m(r#"(userName eq "x" or userName eq "alice@contoso.com") and active eq false"#));
    assert!(m(r#"not (userName eq "x")"#));
    assert!(!m(r#"not(userName sw "a")"#));
    assert!(m(r#"emails[type eq "work" and value co "contoso"]"#));
    assert!(m(r#"emails[not (type eq "home")]"#));
    assert!(m(r#"emails co "home.example""#), "multi-valued compares its value");
    assert!(m(r#"emails.value ew ".example""#));
}

#[test]
fn urn_qualified_and_extension_attributes() {
    assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "ALICE@contoso.com""#));
    assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "engineering""#));
    assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m-1""#));
    assert!(m(r#"department eq "Engineering""#));
}

#[test]
fn escapes_in_strings() {
    let u = json!({"userName": "a\"b\\c"});
    let f = Filter::parse(ResourceKind::User, r#"userName eq "a\"b\\c""#).unwrap();
    assert!(f.matches(&u));
}

#[test]
fn bad_filters_are_invalid_filter_errors() {
    for f in [
        "",
        "userName",
        "userName eq",
        r#"userName zz "x""#,
        "externalId eq jyoung",
        r#"nope eq "x""#,
        r#"(userName eq "x""#,
        r#"userName eq "x" userName eq "y""#,
        r#"userName eq "unterminated"#,
        r#"emails[type eq "work""#,
        r#"active gt true"#,
        r#"userName eq 5"#,
        r#"active eq "true""#,
        r#"name eq "x""#,
        r#"userName[value eq "x"]"#,
        "userName eq \"x\" § ",
        r#"id eq "1" and manager eq 2"#,
    ] {
        let e = err(f);
        assert_eq!(e.status, 400, "{f}");
        assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidFilter), "{f}: {e:?}");
    }
    let deep = format!("{}userName eq \"x\"{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(err(&deep).status, 400);
    let e = err("externalId eq jyoung");
    assert!(e.detail.contains("must be quoted"), "{}", e.detail);
}

#[test]
fn lenient_parsing_for_root_search() {
    let f = Filter::parse_lenient(ResourceKind::Group, r#"userName eq "x" or displayName pr"#).unwrap();
    assert!(f.matches(&json!({"displayName": "G"})));
    let f = Filter::parse_lenient(ResourceKind::Group, "userName pr").unwrap();
    assert!(!f.matches(&json!({"displayName": "G"})));
    assert!(Filter::parse(ResourceKind::Group, "userName pr").is_err());
}

#[test]
fn index_hints() {
    let h = |f: &str| Filter::parse(ResourceKind::User, f).unwrap().index_hint(ResourceKind::User);
    assert_eq!(h(r#"userName eq "Alice""#), Some(IndexHint::UniqueName("alice".into())));
    assert_eq!(h(r#"externalId eq "X""#), Some(IndexHint::ExternalId("X".into())));
    assert_eq!(h(r#"active eq true and id eq "1""#), Some(IndexHint::Id("1".into())));
    assert_eq!(h(r#"userName eq "a" or userName eq "b""#), None);
    assert_eq!(h(r#"userName sw "a""#), None);
    let g = Filter::parse(ResourceKind::Group, r#"displayName eq "Sales""#).unwrap();
    assert_eq!(g.index_hint(ResourceKind::Group), Some(IndexHint::UniqueName("sales".into())));
}

#[test]
fn patch_paths() {
    let p = PatchPath::parse(ResourceKind::User, r#"emails[type eq "work"].value"#).unwrap();
    assert_eq!(p.attr.attr.name, "emails");
    assert_eq!(p.sub_after_filter.unwrap().name, "value");
    assert_eq!(p.filter.unwrap().required_values().unwrap(), vec![("type", json!("work"))]);
    let p = PatchPath::parse(ResourceKind::Group, r#"members[value eq "7f4bc1a3"]"#).unwrap();
    assert!(p.filter.unwrap().matches_element(&json!({"value": "7f4bc1a3"})));
    let p = PatchPath::parse(
        ResourceKind::User,
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    )
    .unwrap();
    assert_eq!(p.attr.attr.name, "employeeNumber");
    let p = PatchPath::parse(ResourceKind::User, r#"addresses[type eq "work"].Formatted"#).unwrap();
    assert_eq!(p.sub_after_filter.unwrap().name, "formatted");
    let p = PatchPath::parse(ResourceKind::User, "emails[primary eq true].value").unwrap();
    assert_eq!(p.filter.unwrap().required_values().unwrap(), vec![("primary", json!(true))]);
    for bad in [
        "",
        "nope",
        "emails[",
        "emails[type eq \"x\"",
        "userName[type eq \"x\"]",
        "emails[type eq \"x\"].nope",
        "emails[type eq \"x\"] x",
    ] {
        let e = PatchPath::parse(ResourceKind::User, bad).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidPath), "{bad}");
    }
}

#[test]
fn sorting() {
    let a = json!({"userName": "bob", "emails": [{"value": "z@x"}, {"value": "a@x", "primary": true}]});
    let b = json!({"userName": "Alice"});
    let un = resolve_path(ResourceKind::User, "userName").unwrap();
    assert_eq!(sort_key_cmp(un, &a, &b), Ordering::Greater);
    let em = resolve_path(ResourceKind::User, "emails").unwrap();
    assert_eq!(sort_key_cmp(em, &a, &b), Ordering::Less, "missing sorts last");
}
