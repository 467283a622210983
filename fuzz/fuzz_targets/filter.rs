//! Filter parser and evaluator: any input string, as `filter=` on a list, in a
//! `.search` body, in root `/.search` (lenient), as a PATCH `path`, or as
//! `sortBy`.
//!
//! No input may panic. When a filter parses, it is evaluated against realistic
//! stored documents, and the index hint the store would use must be a superset
//! of the matches (a document the filter matches satisfies the hint).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

use scim_operator::scim::filter::{Filter, PatchPath, sort_key_cmp};
use scim_operator::scim::resource::{build_document, normalize};
use scim_operator::scim::schema::{ResourceKind, resolve_path};
use scim_operator::scim::filter::IndexHint;

const KINDS: [ResourceKind; 2] = [ResourceKind::User, ResourceKind::Group];

/// Documents as the store holds them (normalized, then built), plus one that
/// is not normalized (attributes of the wrong shape), which evaluation must
/// also survive.
static DOCS: LazyLock<Vec<(ResourceKind, Value)>> = LazyLock::new(|| {
    let user = normalize(
        ResourceKind::User,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Alice@Contoso.com",
            "active": "True",
            "displayName": "Alice Smith",
            "title": "Engineer",
            "emails": [
                {"primary": true, "type": "work", "value": "alice@contoso.com"},
                {"type": "home", "value": "alice@home.example"}
            ],
            "phoneNumbers": [{"type": "mobile", "value": "+1 (555) 010-0000"}],
            "addresses": [{"type": "work", "streetAddress": "1 Main St", "locality": "Redmond", "primary": true}],
            "name": {"formatted": "Alice Smith", "familyName": "Smith", "givenName": "Alice"},
            "roles": [{"value": "admin", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "E1001", "department": "Engineering", "manager": "m-1"
            }
        }),
    )
    .expect("the fixed user is valid");
    let group = normalize(
        ResourceKind::Group,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "externalId": "8aa1",
            "displayName": "Sales",
            "members": [{"value": "2819c223-7f76-453a-919d-413861904646"}, {"value": "u2", "display": "Bob"}]
        }),
    )
    .expect("the fixed group is valid");
    let odd = json!({
        "id": 7,
        "userName": ["x"],
        "displayName": {"value": "x"},
        "active": "True",
        "emails": "alice@contoso.com",
        "name": [1, 2],
        "members": [null, 1, "u", {"value": 3}],
        "meta": {"created": "not a date", "lastModified": 12},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": "x"
    });
    vec![
        (
            ResourceKind::User,
            build_document(
                ResourceKind::User,
                "2819c223-7f76-453a-919d-413861904646",
                user,
                "2026-01-02T03:04:05.000Z",
                "2026-06-01T00:00:00.000Z",
                3,
            ),
        ),
        (
            ResourceKind::Group,
            build_document(ResourceKind::Group, "g-1", group, "2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z", 1),
        ),
        (ResourceKind::User, odd.clone()),
        (ResourceKind::Group, odd),
        (ResourceKind::User, json!({})),
        (ResourceKind::User, Value::Null),
    ]
});

/// A document the filter matches must be found by the index lookup.
fn check_hint(kind: ResourceKind, hint: &IndexHint, doc: &Value, input: &str) {
    let (field, want, got) = match hint {
        IndexHint::Id(s) => ("id", s.clone(), doc.get("id").and_then(Value::as_str).map(str::to_string)),
        IndexHint::ExternalId(s) => {
            ("externalId", s.clone(), doc.get("externalId").and_then(Value::as_str).map(str::to_string))
        }
        IndexHint::UniqueName(s) => (
            kind.unique_name_attr(),
            s.clone(),
            doc.get(kind.unique_name_attr()).and_then(Value::as_str).map(str::to_lowercase),
        ),
    };
    assert_eq!(got.as_deref(), Some(want.as_str()), "{input:?} matches a document whose {field} the index hint misses");
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let input = input.as_ref();
    for kind in KINDS {
        for lenient in [false, true] {
            let parsed = if lenient { Filter::parse_lenient(kind, input) } else { Filter::parse(kind, input) };
            let Ok(filter) = parsed else { continue };
            let hint = filter.index_hint(kind);
            let _ = filter.required_values();
            for (doc_kind, doc) in DOCS.iter() {
                let m = filter.matches(doc);
                let _ = filter.matches_element(doc);
                if m && *doc_kind == kind
                    && doc.get("meta").is_some()
                    && let Some(h) = &hint
                {
                    check_hint(kind, h, doc, input);
                }
            }
        }
        // `sortBy` resolves the same names.
        if let Some(attr) = resolve_path(kind, input) {
            for (_, a) in DOCS.iter() {
                for (_, b) in DOCS.iter() {
                    let _ = sort_key_cmp(attr, a, b);
                }
            }
        }
        if let Ok(path) = PatchPath::parse(kind, input) {
            let _ = path.attr.display();
            if let Some(f) = &path.filter {
                let _ = f.required_values();
                for (_, doc) in DOCS.iter() {
                    let Some(Value::Array(items)) = doc.get(path.attr.attr.name) else { continue };
                    for el in items {
                        let _ = f.matches_element(el);
                    }
                }
            }
        }
    }
});
