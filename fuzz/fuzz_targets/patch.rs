//! The PATCH engine and the resource model: any input bytes that are JSON, as a
//! PATCH body applied to a realistic user and group, as a POST/PUT body, and
//! (its string fields) as `attributes`/`excludedAttributes`.
//!
//! No input may panic. A PATCH that succeeds must leave a resource that can be
//! stored and read back (built, projected, filtered).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

use scim_operator::scim::filter::Filter;
use scim_operator::scim::patch::{apply_patch, parse_patch};
use scim_operator::scim::resource::{AttributeSelection, attributes_of, build_document, normalize};
use scim_operator::scim::schema::ResourceKind;

const KINDS: [ResourceKind; 2] = [ResourceKind::User, ResourceKind::Group];

/// Writable attributes of the resources PATCHes are applied to, as stored.
static TARGETS: LazyLock<Vec<(ResourceKind, Map<String, Value>)>> = LazyLock::new(|| {
    let user = |body: Value| normalize(ResourceKind::User, &body).expect("the fixed user is valid");
    let group = |body: Value| normalize(ResourceKind::Group, &body).expect("the fixed group is valid");
    vec![
        (
            ResourceKind::User,
            user(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "alice@contoso.com",
                "active": "True",
                "displayName": "Alice Smith",
                "emails": [
                    {"primary": true, "type": "work", "value": "alice@contoso.com"},
                    {"type": "home", "value": "alice@home.example"}
                ],
                "phoneNumbers": [{"type": "mobile", "value": "+1 (555) 010-0000"}],
                "addresses": [{"type": "work", "streetAddress": "1 Main St", "primary": true}],
                "name": {"formatted": "Alice Smith", "familyName": "Smith", "givenName": "Alice"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": "E1001", "department": "Engineering", "manager": {"value": "m-1"}
                }
            })),
        ),
        (ResourceKind::User, user(json!({"userName": "bob"}))),
        (
            ResourceKind::Group,
            group(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "externalId": "8aa1",
                "displayName": "Sales",
                "members": [{"value": "u1"}, {"value": "u2", "display": "Bob"}, {"value": "u3"}]
            })),
        ),
        (ResourceKind::Group, group(json!({"displayName": "Empty"}))),
    ]
});

const FILTERS: [&str; 4] = [
    r#"userName eq "alice@contoso.com""#,
    r#"emails[type eq "work"].value pr"#,
    r#"members[value eq "u1"] or displayName sw "s""#,
    r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m-1""#,
];

/// Stores, reads back and projects a resource as the server does.
fn read_back(kind: ResourceKind, attrs: Map<String, Value>, projections: &[AttributeSelection]) {
    let doc = build_document(kind, "id-1", attrs, "2026-01-02T03:04:05.000Z", "2026-01-02T03:04:05.000Z", 2);
    for p in projections {
        let _ = p.apply(kind, &doc);
    }
    for f in FILTERS {
        if let Ok(f) = Filter::parse_lenient(kind, f) {
            let _ = f.matches(&doc);
        }
    }
    let _ = attributes_of(&doc);
}

fn projections(kind: ResourceKind, body: &Value) -> Vec<AttributeSelection> {
    let field = |name: &str| body.get(name).and_then(Value::as_str);
    let mut out = vec![
        AttributeSelection::parse(kind, None, None).unwrap_or_default(),
        AttributeSelection::parse(kind, Some("userName,emails.value,members"), Some("name.formatted"))
            .unwrap_or_default(),
        AttributeSelection::parse(
            kind,
            None,
            Some("members,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
        )
        .unwrap_or_default(),
    ];
    let attributes = field("attributes").or(field("path"));
    let excluded = field("excludedAttributes").or(field("filter"));
    if attributes.is_some() || excluded.is_some() {
        out.push(AttributeSelection::parse(kind, attributes, excluded).unwrap_or_default());
    }
    if let Value::String(s) = body {
        out.push(AttributeSelection::parse(kind, Some(s), Some(s)).unwrap_or_default());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };

    // As a PATCH body.
    if let Ok(ops) = parse_patch(&body) {
        for (kind, attrs) in TARGETS.iter() {
            let mut patched = attrs.clone();
            if apply_patch(*kind, &mut patched, &ops).is_ok() {
                // Applied twice, as a retried request would be.
                let mut again = patched.clone();
                let _ = apply_patch(*kind, &mut again, &ops);
                read_back(*kind, patched, &projections(*kind, &body));
            }
        }
    }

    // As a POST/PUT body.
    for kind in KINDS {
        let projections = projections(kind, &body);
        for p in &projections {
            let _ = p.apply(kind, &body);
        }
        if let Ok(attrs) = normalize(kind, &body) {
            read_back(kind, attrs, &projections);
        }
    }
});
