//! Every PATCH form Entra ID sends (docs/entra-scim.md §2.3–§2.7, §3), with
//! the JSON it sends.

use super::*;
use crate::scim::error::ScimType;
use crate::scim::resource::normalize;
use crate::scim::schema::ENTERPRISE_USER_SCHEMA;
use serde_json::json;

fn alice() -> Map<String, Value> {
    normalize(
        ResourceKind::User,
        &json!({
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "alice@contoso.com",
            "active": true,
            "displayName": "Alice Smith",
            "emails": [{"primary": true, "type": "work", "value": "alice@contoso.com"}],
            "name": {"formatted": "Alice Smith", "familyName": "Smith", "givenName": "Alice"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "E1001"}
        }),
    )
    .unwrap()
}

fn patch(kind: ResourceKind, attrs: &mut Map<String, Value>, body: Value) -> ScimResult<()> {
    let ops = parse_patch(&body)?;
    apply_patch(kind, attrs, &ops)
}

fn user_patch(body: Value) -> Map<String, Value> {
    let mut a = alice();
    patch(ResourceKind::User, &mut a, body).unwrap();
    a
}

fn ops(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

#[test]
fn default_dialect_one_capitalised_op_per_attribute() {
    let a = user_patch(ops(json!([
        {"op": "Replace", "path": "displayName", "value": "Pvlo"},
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "x@test.microsoft.com"},
        {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
        {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
        {"op": "Replace", "path": "externalId", "value": "Eqpj"},
        {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "Eqpj"}
    ])));
    assert_eq!(a["displayName"], "Pvlo");
    assert_eq!(a["emails"], json!([{"primary": true, "type": "work", "value": "x@test.microsoft.com"}]));
    assert_eq!(a["name"]["givenName"], "Gtfd");
    assert_eq!(a["name"]["familyName"], "Pkqf");
    assert_eq!(a["name"]["formatted"], "Alice Smith", "other sub-attributes are kept");
    assert_eq!(a["externalId"], "Eqpj");
    assert_eq!(a[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "Eqpj");
}

#[test]
fn flag_dialect_pathless_replace_with_dotted_and_urn_keys() {
    let a = user_patch(ops(json!([
        {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "x@test.microsoft.com"},
        {"op": "replace", "value": {
            "displayName": "Bjfe",
            "name.givenName": "Kkom",
            "name.familyName": "Unua",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"}}
    ])));
    assert_eq!(a["displayName"], "Bjfe");
    assert_eq!(a["name"]["givenName"], "Kkom");
    assert_eq!(a["name"]["familyName"], "Unua");
    assert_eq!(a["name"]["formatted"], "Alice Smith");
    assert!(!a.contains_key("name.givenName"), "dotted keys are paths, not literal attributes");
    assert_eq!(a[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "Aklq");
    assert_eq!(a["emails"][0]["value"], "x@test.microsoft.com");
}

#[test]
fn okta_style_pathless_plain_names_and_extension_object() {
    let a = user_patch(ops(json!([
        {"op": "replace", "value": {"active": false, "id": "ignored", "meta": {}}},
        {"op": "Add", "value": {"externalId": "new-ext", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}}}
    ])));
    assert_eq!(a["active"], json!(false));
    assert_eq!(a["externalId"], "new-ext");
    assert_eq!(a[ENTERPRISE_USER_SCHEMA]["department"], "Sales");
    assert_eq!(a[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "E1001");
    assert!(!a.contains_key("id"));
}

#[test]
fn disable_and_enable_in_both_dialects() {
    let a = user_patch(ops(json!([{"op": "Replace", "path": "active", "value": "False"}])));
    assert_eq!(a["active"], json!(false));
    let a = user_patch(ops(json!([{"op": "replace", "path": "active", "value": false}])));
    assert_eq!(a["active"], json!(false));
    let mut a = user_patch(ops(json!([{"op": "Replace", "path": "active", "value": "false"}])));
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "Replace", "path": "active", "value": "True"}]))).unwrap();
    assert_eq!(a["active"], json!(true));
    let e =
        patch(ResourceKind::User, &mut alice(), ops(json!([{"op": "Replace", "path": "active", "value": "maybe"}])));
    assert_eq!(e.unwrap_err().scim_type, Some(ScimType::InvalidValue));
}

#[test]
fn add_on_absent_single_valued_and_on_existing() {
    let a = user_patch(ops(json!([
        {"op": "Add", "path": "nickName", "value": "Babs"},
        {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Retail"},
        {"op": "Add", "path": "active", "value": "True"},
        {"op": "Add", "path": "externalId", "value": "again"}
    ])));
    assert_eq!(a["nickName"], "Babs");
    assert_eq!(a[ENTERPRISE_USER_SCHEMA]["department"], "Retail");
    assert_eq!(a["externalId"], "again");
}

#[test]
fn typed_paths_create_the_entry_when_absent() {
    let a = user_patch(ops(json!([
        {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
        {"op": "Replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"},
        {"op": "Add", "path": "addresses[type eq \"work\"].locality", "value": "Redmond"},
        {"op": "Add", "path": "emails[type eq \"home\"].value", "value": "alice@home.example"},
        {"op": "add", "path": "emails[type eq \"home\"].display", "value": "Home"}
    ])));
    assert_eq!(a["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555 0100"}]));
    assert_eq!(a["addresses"], json!([{"type": "work", "streetAddress": "1 Main St", "locality": "Redmond"}]));
    assert_eq!(a["emails"][1], json!({"type": "home", "value": "alice@home.example", "display": "Home"}));
    assert_eq!(a["emails"][0]["value"], "alice@contoso.com");
}

#[test]
fn replace_on_work_email_when_user_has_none() {
    let mut a = normalize(ResourceKind::User, &json!({"userName": "bob"})).unwrap();
    patch(
        ResourceKind::User,
        &mut a,
        ops(json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "bob@x"}])),
    )
    .unwrap();
    assert_eq!(a["emails"], json!([{"type": "work", "value": "bob@x"}]));
}

#[test]
fn primary_eq_true_paths_from_the_validator() {
    let a = user_patch(ops(json!([
        {"op": "replace", "path": "emails[primary eq true].value", "value": "p@x"},
        {"op": "replace", "path": "addresses[primary eq true].formatted", "value": "1 Main St, Redmond"},
        {"op": "add", "path": "phoneNumbers[primary eq true].value", "value": "+1 555"}
    ])));
    assert_eq!(a["emails"][0]["value"], "p@x");
    assert_eq!(a["addresses"], json!([{"primary": true, "formatted": "1 Main St, Redmond"}]));
    assert_eq!(a["phoneNumbers"], json!([{"primary": true, "value": "+1 555"}]));
}

#[test]
fn attribute_names_in_paths_are_case_insensitive() {
    let a = user_patch(ops(json!([
        {"op": "Add", "path": "emails[type eq \"other\"].Value", "value": "o@x"},
        {"op": "Replace", "path": "NAME.GIVENNAME", "value": "A"},
        {"op": "Add", "path": "addresses[type eq \"other\"].Formatted", "value": "F"}
    ])));
    assert_eq!(a["emails"][1], json!({"type": "other", "value": "o@x"}));
    assert_eq!(a["name"]["givenName"], "A");
    assert_eq!(a["addresses"][0]["formatted"], "F");
}

#[test]
fn urn_qualified_core_paths() {
    let a = user_patch(ops(json!([
        {"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:displayName", "value": "D"},
        {"op": "Add", "path": "urn:ietf:params:scim:schemas:core:2.0:User:roles", "value": [{"value": "r1"}]}
    ])));
    assert_eq!(a["displayName"], "D");
    assert_eq!(a["roles"], json!([{"value": "r1"}]));
}

#[test]
fn manager_every_form() {
    let m = |a: &Map<String, Value>| a[ENTERPRISE_USER_SCHEMA].get("manager").cloned();
    let mgr = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
    // Bare string id (Entra today).
    let a = user_patch(ops(json!([{"op": "Add", "path": mgr, "value": "m-1"}])));
    assert_eq!(m(&a), Some(json!({"value": "m-1"})));
    // RFC object form.
    let a = user_patch(ops(json!([{"op": "Replace", "path": mgr, "value": {"value": "m-2"}}])));
    assert_eq!(m(&a), Some(json!({"value": "m-2"})));
    // D1 Example 5: short path, array of one with $ref.
    let mut a = user_patch(ops(json!([{"op": "Add", "path": "manager", "value": [{"$ref": null, "value": "m-3"}]}])));
    assert_eq!(m(&a), Some(json!({"value": "m-3"})));
    // Removal: by path, by filtered path, and by an empty value.
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "Remove", "path": mgr}]))).unwrap();
    assert_eq!(m(&a), None);
    let mut a = user_patch(ops(json!([{"op": "Add", "path": mgr, "value": "m-4"}])));
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "remove", "path": "manager.value"}]))).unwrap();
    assert_eq!(m(&a), None);
    let mut a = user_patch(ops(json!([{"op": "Add", "path": mgr, "value": "m-5"}])));
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "Replace", "path": mgr, "value": ""}]))).unwrap();
    assert_eq!(m(&a), None);
}

#[test]
fn null_updates_clear_optional_attributes() {
    let mut a = user_patch(ops(json!([{"op": "Replace", "path": "displayName", "value": ""}])));
    assert!(!a.contains_key("displayName"));
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "Replace", "path": "name.formatted", "value": null}])))
        .unwrap();
    assert!(a["name"].get("formatted").is_none());
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "Remove", "path": "emails[type eq \"work\"].value"}])))
        .unwrap();
    assert!(!a.contains_key("emails"), "an email without a value is gone");
    patch(ResourceKind::User, &mut a, ops(json!([{"op": "Remove", "path": "emails[type eq \"work\"]"}]))).unwrap();
}

#[test]
fn empty_operations_is_a_no_op() {
    let a = user_patch(ops(json!([])));
    assert_eq!(a, alice());
}

#[test]
fn required_attributes_cannot_be_removed() {
    let e = patch(ResourceKind::User, &mut alice(), ops(json!([{"op": "Remove", "path": "userName"}]))).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.detail.contains("userName"));
}

#[test]
fn bad_patches_are_4xx_with_the_right_scim_type() {
    let cases = [
        (json!({"Operations": [{"op": "Frobnicate", "path": "x", "value": 1}]}), ScimType::InvalidSyntax),
        (json!({"schemas": []}), ScimType::InvalidSyntax),
        (json!({"Operations": {}}), ScimType::InvalidSyntax),
        (json!([1]), ScimType::InvalidSyntax),
        (ops(json!([{"op": "Replace", "path": "nonsense", "value": 1}])), ScimType::InvalidPath),
        (ops(json!([{"op": "Replace", "path": "emails[type eq", "value": 1}])), ScimType::InvalidPath),
        (ops(json!([{"op": "Remove"}])), ScimType::NoTarget),
        (ops(json!([{"op": "Replace", "path": "id", "value": "x"}])), ScimType::Mutability),
        (ops(json!([{"op": "Replace", "path": "meta.created", "value": "x"}])), ScimType::Mutability),
        (ops(json!([{"op": "Replace", "path": "displayName"}])), ScimType::InvalidValue),
        (ops(json!([{"op": "Replace", "path": "displayName", "value": 5}])), ScimType::InvalidValue),
        (ops(json!([{"op": "Replace", "value": "not an object"}])), ScimType::InvalidValue),
        (ops(json!([{"op": "Replace", "path": "emails[value co \"x\"].type", "value": "work"}])), ScimType::NoTarget),
        (
            ops(
                json!([{"op": "Add", "path": "emails", "value": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}]),
            ),
            ScimType::InvalidValue,
        ),
    ];
    for (body, want) in cases {
        let e = patch(ResourceKind::User, &mut alice(), body.clone()).unwrap_err();
        assert_eq!(e.status, 400, "{body}");
        assert_eq!(e.scim_type, Some(want), "{body}: {}", e.detail);
    }
}

fn group() -> Map<String, Value> {
    normalize(ResourceKind::Group, &json!({"displayName": "Sales", "externalId": "8aa1"})).unwrap()
}

fn members(a: &Map<String, Value>) -> Vec<String> {
    a.get("members")
        .and_then(Value::as_array)
        .map(|m| m.iter().map(|e| e["value"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn group_members_add_in_batches_and_remove_both_dialects() {
    let mut g = group();
    let p = |g: &mut Map<String, Value>, b: Value| patch(ResourceKind::Group, g, b).unwrap();
    p(
        &mut g,
        ops(
            json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}, {"$ref": null, "value": "u2"}]}]),
        ),
    );
    p(
        &mut g,
        ops(json!([{"op": "Add", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}, {"value": "u4"}]}])),
    );
    assert_eq!(members(&g), ["u1", "u2", "u3", "u4"], "no duplicates");
    assert_eq!(g["members"][0], json!({"value": "u1"}), "a null $ref is not stored");
    // Without the flag: the value array names the members to remove.
    p(&mut g, ops(json!([{"op": "Remove", "path": "members", "value": [{"value": "u2"}]}])));
    assert_eq!(members(&g), ["u1", "u3", "u4"]);
    // With the flag: a value filter.
    p(&mut g, ops(json!([{"op": "remove", "path": "members[value eq \"u3\"]"}])));
    assert_eq!(members(&g), ["u1", "u4"]);
    // Removing someone who is not a member changes nothing.
    p(&mut g, ops(json!([{"op": "remove", "path": "members[value eq \"nobody\"]"}])));
    p(&mut g, ops(json!([{"op": "Remove", "path": "members", "value": [{"value": "nobody"}]}])));
    assert_eq!(members(&g), ["u1", "u4"]);
    // An explicit empty list removes nobody.
    p(&mut g, ops(json!([{"op": "Remove", "path": "members", "value": []}])));
    assert_eq!(members(&g), ["u1", "u4"]);
    // Rename, and add externalId on an existing group.
    p(
        &mut g,
        ops(
            json!([{"op": "Replace", "path": "displayName", "value": "New name"}, {"op": "Add", "path": "externalId", "value": "x2"}]),
        ),
    );
    assert_eq!(g["displayName"], "New name");
    assert_eq!(g["externalId"], "x2");
    // Replace members; a path without a filter and no value removes all.
    p(&mut g, ops(json!([{"op": "Replace", "path": "members", "value": [{"value": "u9"}]}])));
    assert_eq!(members(&g), ["u9"]);
    p(&mut g, ops(json!([{"op": "Remove", "path": "members"}])));
    assert!(members(&g).is_empty());
}

#[test]
fn member_without_value_is_rejected() {
    let e = patch(
        ResourceKind::Group,
        &mut group(),
        ops(json!([{"op": "Add", "path": "members", "value": [{"display": "x"}]}])),
    )
    .unwrap_err();
    assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
}

#[test]
fn passwords_are_accepted_and_never_stored() {
    let a = user_patch(ops(json!([
        {"op": "add", "path": "password", "value": "s3cret"},
        {"op": "replace", "value": {"password": "s3cret2"}}
    ])));
    assert!(!a.contains_key("password"));
    assert_eq!(a, alice());
}
