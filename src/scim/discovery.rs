//! `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` (RFC 7643 §5–§7),
//! generated from the same attribute definitions the engine uses, so they
//! describe exactly what is supported.

use serde_json::{Value, json};

use super::schema::{
    AttrDef, COMMON_ATTRIBUTES, ENTERPRISE_ATTRIBUTES, ENTERPRISE_USER_SCHEMA, GROUP_ATTRIBUTES, GROUP_SCHEMA,
    LIST_RESPONSE_SCHEMA, Mutability, ResourceKind, Returned, USER_ATTRIBUTES, USER_SCHEMA, USER_X509,
};

pub(crate) const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub(crate) const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub(crate) const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most results one list page returns; larger `count`s are capped (RFC 7644 §3.4.2.4).
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

pub(crate) fn service_provider_config(base_url: &str) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/unique-app/scim-operator",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A key issued by the operator (scim-operator key generate), sent as 'Authorization: Bearer <key>'.",
            "primary": true
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base_url}/ServiceProviderConfig")}
    })
}

pub(crate) fn resource_type(kind: ResourceKind, base_url: &str) -> Value {
    let extensions: Vec<Value> =
        kind.extensions().iter().map(|(urn, _)| json!({"schema": urn, "required": false})).collect();
    let mut v = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": kind.endpoint(),
        "description": match kind { ResourceKind::User => "User Account", ResourceKind::Group => "Group" },
        "schema": kind.core_schema(),
        "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/{}", kind.name())}
    });
    if !extensions.is_empty() {
        v["schemaExtensions"] = Value::Array(extensions);
    }
    v
}

fn attribute(def: &AttrDef) -> Value {
    let mut v = json!({
        "name": def.name,
        "type": def.ty.as_str(),
        "multiValued": def.multi_valued,
        "description": def.description,
        "required": def.required,
        "caseExact": def.case_exact,
        "mutability": match def.mutability {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        },
        "returned": match def.returned {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        },
        "uniqueness": if def.unique_server { "server" } else { "none" },
    });
    if !def.canonical_values.is_empty() {
        v["canonicalValues"] = json!(def.canonical_values);
    }
    if !def.reference_types.is_empty() {
        v["referenceTypes"] = json!(def.reference_types);
    }
    if !def.sub_attributes.is_empty() {
        v["subAttributes"] = Value::Array(def.sub_attributes.iter().map(attribute).collect());
    }
    v
}

/// The schema documents: core User, core Group, enterprise User.
pub(crate) fn schemas(base_url: &str) -> Vec<Value> {
    // `id` and `meta` are common attributes (RFC 7643 §3.1) and are not listed
    // in the schemas; `externalId` is, so clients that discover the schema
    // (Entra's validator) find it.
    let external_id = &COMMON_ATTRIBUTES[1];
    let mut user: Vec<&AttrDef> = vec![external_id];
    user.extend(USER_ATTRIBUTES.iter());
    user.push(&USER_X509);
    let mut group: Vec<&AttrDef> = vec![external_id];
    group.extend(GROUP_ATTRIBUTES.iter());
    let doc = |id: &str, name: &str, desc: &str, attrs: Vec<&AttrDef>| {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": id,
            "name": name,
            "description": desc,
            "attributes": attrs.into_iter().map(attribute).collect::<Vec<_>>(),
            "meta": {"resourceType": "Schema", "location": format!("{base_url}/Schemas/{id}")}
        })
    };
    vec![
        doc(USER_SCHEMA, "User", "User Account", user),
        doc(GROUP_SCHEMA, "Group", "Group", group),
        doc(ENTERPRISE_USER_SCHEMA, "EnterpriseUser", "Enterprise User", ENTERPRISE_ATTRIBUTES.iter().collect()),
    ]
}

/// A ListResponse of everything, for the discovery endpoints' collections.
pub(crate) fn list_of(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_list_every_attribute_the_engine_knows() {
        let s = schemas("http://x/scim/v2");
        assert_eq!(s.len(), 3);
        let names: Vec<&str> =
            s[0]["attributes"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        for want in ["userName", "name", "emails", "active", "externalId", "addresses", "x509Certificates"] {
            assert!(names.contains(&want), "{want}");
        }
        let user_name = &s[0]["attributes"][1];
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(user_name["caseExact"], false);
        let manager = s[2]["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "manager").unwrap();
        assert_eq!(manager["type"], "complex");
        assert_eq!(s[1]["id"], GROUP_SCHEMA);
    }

    #[test]
    fn resource_types() {
        let u = resource_type(ResourceKind::User, "b");
        assert_eq!(u["schemaExtensions"][0]["schema"], ENTERPRISE_USER_SCHEMA);
        assert!(resource_type(ResourceKind::Group, "b").get("schemaExtensions").is_none());
        assert_eq!(service_provider_config("b")["patch"]["supported"], true);
    }
}
