//! Turning client JSON into stored resources and stored resources into responses.
//!
//! Values are kept exactly as the client sent them (Entra compares what it reads
//! back with its source and re-PATCHes on any drift); only names are made
//! canonical and Entra's string booleans become JSON booleans.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{ScimError, ScimResult};
use super::names::check_unique_name;
use super::schema::{
    AttrDef, AttrType, Container, Mutability, ResolvedAttr, ResourceKind, Returned, all_attributes, resolve_path,
};

/// Parses `"True"`, `"false"`, `true`… as Entra sends `active` without the
/// aadOptscim062020 flag.
pub(crate) fn coerce_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn type_error(path: &str, def: &AttrDef, got: &Value) -> ScimError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let want = if def.multi_valued { format!("an array of {}", def.ty.as_str()) } else { def.ty.as_str().to_string() };
    ScimError::invalid_value(format!("'{path}' must be {want}, not {got}"))
}

/// Checks and canonicalises one value for `def`. `Ok(None)` means "no value"
/// (null, empty string, empty array or object): the attribute is absent.
pub(crate) fn coerce(def: &AttrDef, v: &Value, path: &str) -> ScimResult<Option<Value>> {
    if v.is_null() {
        return Ok(None);
    }
    if def.multi_valued {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            // A lone object where an array belongs is what some clients send
            // for a single value; the meaning is unambiguous.
            Value::Object(_) => vec![v],
            other => return Err(type_error(path, def, other)),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(c) = coerce_single(def, item, path)? {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        let primaries = out.iter().filter(|e| e.get("primary") == Some(&Value::Bool(true))).count();
        if primaries > 1 {
            return Err(ScimError::invalid_value(format!(
                "'{path}' has {primaries} values marked primary; at most one may be"
            )));
        }
        return Ok(Some(Value::Array(out)));
    }
    coerce_single(def, v, path)
}

/// Coerces a single (non-array) value of `def`.
pub(crate) fn coerce_single(def: &AttrDef, v: &Value, path: &str) -> ScimResult<Option<Value>> {
    match (def.ty, v) {
        (_, Value::Null) => Ok(None),
        (AttrType::Complex, Value::Object(o)) => {
            let mut out = Map::new();
            for (k, val) in o {
                let Some(sub) = def.sub(k) else { continue };
                if sub.mutability == Mutability::ReadOnly {
                    continue;
                }
                // The sub-attribute's path only appears in an error: built
                // for the (rare, pure) second attempt, not for every value.
                let coerced = coerce_single(sub, val, path)
                    .or_else(|_| coerce_single(sub, val, &format!("{path}.{}", sub.name)))?;
                if let Some(c) = coerced {
                    out.insert(sub.name.to_string(), c);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        // `manager` arrives as a bare id from Entra; it means {"value": id}.
        (AttrType::Complex, Value::String(s)) if !def.multi_valued && def.sub("value").is_some() => {
            Ok((!s.is_empty()).then(|| json!({"value": s})))
        }
        (AttrType::Boolean, other) => match coerce_bool(other) {
            Some(b) => Ok(Some(Value::Bool(b))),
            None => Err(type_error(path, def, other)),
        },
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(v.clone())),
        (AttrType::Decimal, Value::Number(_)) => Ok(Some(v.clone())),
        (AttrType::DateTime, Value::String(s)) => {
            if s.is_empty() {
                return Ok(None);
            }
            OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                ScimError::invalid_value(format!("'{path}' must be an RFC 3339 date-time, e.g. 2026-11-28T20:42:00Z"))
            })?;
            Ok(Some(v.clone()))
        }
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(s)) => {
            Ok((!s.is_empty()).then(|| v.clone()))
        }
        (_, other) => Err(type_error(path, def, other)),
    }
}

/// Sets (or with `None` removes) a top-level attribute, creating or dropping
/// the extension object as needed.
pub(crate) fn set_attr(doc: &mut Map<String, Value>, container: Container, def: &AttrDef, value: Option<Value>) {
    match container {
        Container::Core => {
            match value {
                Some(v) => doc.insert(def.name.to_string(), v),
                None => doc.remove(def.name),
            };
        }
        Container::Extension(urn) => {
            let ext = doc.entry(urn.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !ext.is_object() {
                *ext = Value::Object(Map::new());
            }
            if let Value::Object(ext_obj) = ext {
                match value {
                    Some(v) => ext_obj.insert(def.name.to_string(), v),
                    None => ext_obj.remove(def.name),
                };
                if ext_obj.is_empty() {
                    doc.remove(urn);
                }
            }
        }
    }
}

/// Validates a POST/PUT body and returns its writable attributes with
/// canonical names. Read-only attributes (`id`, `meta`, `groups`) are ignored,
/// as RFC 7643 §2.2 allows; attributes outside our schemas are ignored too, and
/// `password` is dropped: users sign in through the IdP, and we do not keep
/// secrets we have no use for.
pub fn normalize(kind: ResourceKind, input: &Value) -> ScimResult<Map<String, Value>> {
    let obj = input.as_object().ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    if let Some(schemas) = obj.get("schemas") {
        let ok = schemas.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(ScimError::invalid_syntax("'schemas' must be an array of schema URNs"));
        }
    }
    let mut out = Map::new();
    for (key, value) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some((urn, attrs)) = kind.extension(key) {
            let Some(ext) = value.as_object() else {
                if value.is_null() {
                    continue;
                }
                return Err(ScimError::invalid_value(format!("'{urn}' must be an object")));
            };
            for (k, v) in ext {
                let Some(def) = attrs.iter().find(|a| a.name.eq_ignore_ascii_case(k)) else {
                    continue;
                };
                put(&mut out, Container::Extension(urn), def, v, &format!("{urn}:{}", def.name))?;
            }
            continue;
        }
        let Some(r) = resolve_path(kind, key) else {
            continue;
        };
        if r.sub.is_some() {
            continue;
        }
        put(&mut out, r.container, r.attr, value, r.attr.name)?;
    }
    check_required(kind, &out)?;
    Ok(out)
}

fn put(
    out: &mut Map<String, Value>,
    container: Container,
    def: &'static AttrDef,
    v: &Value,
    path: &str,
) -> ScimResult<()> {
    if def.mutability == Mutability::ReadOnly {
        return Ok(());
    }
    // POST and PUT carry whole resources: a multi-valued attribute is an
    // array (a lone object is refused here, unlike in a PATCH value).
    if def.multi_valued && v.is_object() {
        return Err(type_error(path, def, v));
    }
    let value = coerce(def, v, path)?;
    if def.mutability == Mutability::WriteOnly {
        // Checked like any value, then dropped (`password`).
        return Ok(());
    }
    set_attr(out, container, def, value);
    Ok(())
}

/// Required attributes must be present and non-empty, and the unique name
/// (`userName`, a group's `displayName`) must be one a person can read
/// (`names::check_unique_name`).
pub(crate) fn check_required(kind: ResourceKind, attrs: &Map<String, Value>) -> ScimResult<()> {
    for def in kind.core_attributes().iter().filter(|a| a.required) {
        match attrs.get(def.name) {
            Some(Value::String(s)) if !s.is_empty() => {
                if def.name == kind.unique_name_attr() {
                    check_unique_name(def.name, s)?;
                }
            }
            _ => return Err(ScimError::invalid_value(format!("'{}' is required for a {}", def.name, kind.name()))),
        }
    }
    Ok(())
}

/// RFC 3339 UTC with milliseconds: what `meta.created`/`lastModified` carry.
pub(crate) fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub(crate) fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Whether a conditional header's tags (weak prefix already stripped) admit
/// `etag`: weak comparison, as our tags are weak, and `*` admits any.
pub(crate) fn etag_matches(tags: &[String], etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    tags.iter().any(|t| t == "*" || t == bare)
}

/// Builds the stored document: `schemas`, `id`, the attributes, `meta`.
pub fn build_document(
    kind: ResourceKind,
    id: &str,
    attrs: Map<String, Value>,
    created: &str,
    modified: &str,
    version: u64,
) -> Value {
    let mut schemas = vec![Value::String(kind.core_schema().to_string())];
    for (urn, _) in kind.extensions() {
        if attrs.contains_key(*urn) {
            schemas.push(Value::String(urn.to_string()));
        }
    }
    let mut doc = Map::with_capacity(attrs.len() + 3);
    doc.insert("schemas".into(), Value::Array(schemas));
    doc.insert("id".into(), Value::String(id.to_string()));
    if let Some(ext) = attrs.get("externalId") {
        doc.insert("externalId".into(), ext.clone());
    }
    for (k, v) in attrs {
        if k != "externalId" {
            doc.insert(k, v);
        }
    }
    doc.insert(
        "meta".into(),
        json!({
            "resourceType": kind.name(),
            "created": created,
            "lastModified": modified,
            "version": etag(version),
        }),
    );
    Value::Object(doc)
}

/// Members of a stored document that are not client attributes.
const SERVER_MEMBERS: [&str; 4] = ["schemas", "id", "meta", "groups"];

/// The writable attributes of a stored document (everything but `schemas`,
/// `id`, `meta` and read-only attributes).
pub fn attributes_of(doc: &Value) -> Map<String, Value> {
    let mut m = doc.as_object().cloned().unwrap_or_default();
    for k in SERVER_MEMBERS {
        m.remove(k);
    }
    m
}

/// `attrs == attributes_of(doc)` without copying the document (a PATCH
/// compares every time to decide whether anything changed). Order does not
/// matter, as for map equality.
pub(crate) fn same_attributes(attrs: &Map<String, Value>, doc: &Value) -> bool {
    let Some(obj) = doc.as_object() else { return attrs.is_empty() };
    let mut n = 0;
    for (k, v) in obj {
        if SERVER_MEMBERS.contains(&k.as_str()) {
            continue;
        }
        n += 1;
        if attrs.get(k) != Some(v) {
            return false;
        }
    }
    n == attrs.len()
}

pub(crate) fn created_of(doc: &Value) -> &str {
    doc.pointer("/meta/created").and_then(Value::as_str).unwrap_or_default()
}

/// Longest `attributes` / `excludedAttributes` value (bytes).
pub const MAX_ATTRIBUTE_LIST_LEN: usize = 4096;
/// Most names in one `attributes` / `excludedAttributes` list.
pub const MAX_ATTRIBUTE_NAMES: usize = 100;

/// `attributes` / `excludedAttributes` (RFC 7644 §3.9).
#[derive(Debug, Default, Clone)]
pub struct AttributeSelection {
    include: Vec<ResolvedAttr>,
    exclude: Vec<ResolvedAttr>,
}

impl AttributeSelection {
    /// Names that do not exist in the schema are ignored, as the RFC allows, so
    /// a client's optional attribute never fails a read. A list longer than
    /// `MAX_ATTRIBUTE_LIST_LEN` bytes or of more than `MAX_ATTRIBUTE_NAMES`
    /// names is a 400 `invalidPath`: applying it costs time per name and
    /// resource, and no schema has that many attributes.
    pub fn parse(
        kind: ResourceKind,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> ScimResult<AttributeSelection> {
        let list = |param: &str, s: Option<&str>| -> ScimResult<Vec<ResolvedAttr>> {
            let Some(s) = s else { return Ok(Vec::new()) };
            if s.len() > MAX_ATTRIBUTE_LIST_LEN {
                return Err(ScimError::invalid_path(format!(
                    "'{param}' is {} bytes long; the limit is {MAX_ATTRIBUTE_LIST_LEN}",
                    s.len()
                )));
            }
            let names: Vec<&str> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            if names.len() > MAX_ATTRIBUTE_NAMES {
                return Err(ScimError::invalid_path(format!(
                    "'{param}' names {} attributes; the limit is {MAX_ATTRIBUTE_NAMES}",
                    names.len()
                )));
            }
            Ok(names.into_iter().filter_map(|p| resolve_path(kind, p)).collect())
        };
        Ok(AttributeSelection {
            include: list("attributes", attributes)?,
            exclude: list("excludedAttributes", excluded)?,
        })
    }

    pub(crate) fn excludes_top(&self, name: &str) -> bool {
        self.exclude.iter().any(|r| r.sub.is_none() && r.container == Container::Core && r.attr.name == name)
            || (!self.include.is_empty()
                && !self.include.iter().any(|r| r.container == Container::Core && r.attr.name == name))
    }

    /// True when nothing is asked for: the document is returned whole (stored
    /// documents hold nothing that is never returned).
    pub(crate) fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Applies the selection and returned-ness to a full document.
    pub fn apply(&self, kind: ResourceKind, doc: &Value) -> Value {
        let Some(obj) = doc.as_object() else {
            return doc.clone();
        };
        let mut out = Map::with_capacity(obj.len());
        for (key, value) in obj {
            if key == "schemas" {
                out.insert(key.clone(), value.clone());
                continue;
            }
            if let Some((urn, attrs)) = kind.extension(key) {
                let Some(ext) = value.as_object() else {
                    continue;
                };
                let mut e = Map::new();
                for (k, v) in ext {
                    if let Some(def) = attrs.iter().find(|a| a.name == k)
                        && let Some(v) = self.select(Container::Extension(urn), def, v)
                    {
                        e.insert(k.clone(), v);
                    }
                }
                if !e.is_empty() {
                    out.insert(key.clone(), Value::Object(e));
                }
                continue;
            }
            let Some((container, def)) =
                all_attributes(kind).into_iter().find(|(c, a)| *c == Container::Core && a.name == key)
            else {
                continue;
            };
            if let Some(v) = self.select(container, def, value) {
                out.insert(key.clone(), v);
            }
        }
        Value::Object(out)
    }

    fn select(&self, container: Container, def: &'static AttrDef, value: &Value) -> Option<Value> {
        if def.returned == Returned::Never {
            return None;
        }
        let same = |r: &&ResolvedAttr| r.container == container && std::ptr::eq(r.attr, def);
        if def.returned == Returned::Always {
            return Some(value.clone());
        }
        if self.exclude.iter().filter(same).any(|r| r.sub.is_none()) {
            return None;
        }
        let excluded_subs: Vec<&str> = self.exclude.iter().filter(same).filter_map(|r| r.sub.map(|s| s.name)).collect();
        let mut value = value.clone();
        if !self.include.is_empty() {
            let inc: Vec<&ResolvedAttr> = self.include.iter().filter(same).collect();
            if inc.is_empty() {
                return None;
            }
            if inc.iter().all(|r| r.sub.is_some()) {
                let keep: Vec<&str> = inc.iter().filter_map(|r| r.sub.map(|s| s.name)).collect();
                retain_subs(&mut value, |k| keep.contains(&k));
            }
        }
        if !excluded_subs.is_empty() {
            retain_subs(&mut value, |k| !excluded_subs.contains(&k));
        }
        Some(value)
    }
}

fn retain_subs(value: &mut Value, keep: impl Fn(&str) -> bool) {
    match value {
        Value::Object(o) => o.retain(|k, _| keep(k)),
        Value::Array(items) => {
            for el in items.iter_mut() {
                if let Value::Object(o) = el {
                    o.retain(|k, _| keep(k));
                }
            }
            items.retain(|el| !matches!(el, Value::Object(o) if o.is_empty()));
        }
        _ => {}
    }
}

/// The fast path of a read: the stored text with `groups` and
/// `meta.location` spliced in, without parsing it. Stored documents are built
/// by `build_document`, so `meta` is their last member and its object closes
/// the document; anything else gets `None` and the caller parses.
pub(crate) fn splice_response(text: &str, groups: Option<&Value>, location: &str) -> Option<String> {
    let body = text.strip_suffix("}}")?;
    // `"` inside string values is escaped, so this sequence only occurs as
    // the top-level key (no other object holds a "meta" member).
    let meta_at = body.rfind(",\"meta\":{")?;
    let loc = serde_json::to_string(location).ok()?;
    let mut out = String::with_capacity(text.len() + loc.len() + 64);
    out.push_str(&body[..meta_at]);
    if let Some(g) = groups {
        out.push_str(",\"groups\":");
        out.push_str(&serde_json::to_string(g).ok()?);
    }
    out.push_str(&body[meta_at..]);
    out.push_str(",\"location\":");
    out.push_str(&loc);
    out.push_str("}}");
    Some(out)
}

/// The URL of a resource: its `meta.location`, a group member's `$ref`.
pub(crate) fn location(base_url: &str, kind: ResourceKind, id: &str) -> String {
    format!("{base_url}{}/{id}", kind.endpoint())
}

/// Adds `meta.location` for a response.
pub(crate) fn with_location(mut doc: Value, base_url: &str, kind: ResourceKind) -> Value {
    let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(meta) = doc.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert("location".into(), Value::String(location(base_url, kind, &id)));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_sub_attribute_is_named_by_its_full_path() {
        let err = normalize(ResourceKind::User, &json!({"userName": "a", "name": {"givenName": 7}})).unwrap_err();
        assert!(err.detail.contains("'name.givenName' must be string"), "{}", err.detail);
        let err = normalize(
            ResourceKind::User,
            &json!({"userName": "a", "emails": [{"value": "a@example.com", "primary": "maybe"}]}),
        )
        .unwrap_err();
        assert!(err.detail.contains("'emails.primary' must be boolean"), "{}", err.detail);
    }

    #[test]
    fn etags() {
        assert!(etag_matches(&["\"3\"".into()], "W/\"3\""));
        assert!(etag_matches(&["*".into()], "W/\"3\""));
        assert!(!etag_matches(&["\"2\"".into()], "W/\"3\""));
    }

    #[test]
    fn same_attributes_agrees_with_comparing_copies() {
        let doc = json!({"schemas": ["s"], "id": "1", "userName": "a", "active": true,
            "meta": {"version": "W/\"1\""}, "groups": []});
        let attrs = attributes_of(&doc);
        assert!(same_attributes(&attrs, &doc));
        let mut reordered = Map::new();
        reordered.insert("active".into(), json!(true));
        reordered.insert("userName".into(), json!("a"));
        assert!(same_attributes(&reordered, &doc));
        let mut changed = attrs.clone();
        changed.insert("active".into(), json!(false));
        assert!(!same_attributes(&changed, &doc));
        let mut more = attrs.clone();
        more.insert("title".into(), json!("x"));
        assert!(!same_attributes(&more, &doc));
        let mut fewer = attrs;
        fewer.shift_remove("active");
        assert!(!same_attributes(&fewer, &doc));
        assert!(same_attributes(&Map::new(), &json!({"id": "1"})));
    }
    use crate::scim::schema::ENTERPRISE_USER_SCHEMA;

    fn entra_create() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "alice@contoso.com",
            "active": "True",
            "displayName": "Alice Smith",
            "emails": [{"primary": true, "type": "work", "value": "alice@contoso.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Alice Smith", "familyName": "Smith", "givenName": "Alice"},
            "phoneNumbers": [{"type": "mobile", "value": "+1 (555) 010-0000"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                {"employeeNumber": "E1001", "department": "Engineering"},
            "roles": [],
            "addresses": null,
            "password": "secret"
        })
    }

    #[test]
    fn entra_create_body_is_accepted_and_kept_as_sent() {
        let a = normalize(ResourceKind::User, &entra_create()).unwrap();
        assert_eq!(a["active"], json!(true), "string booleans become JSON booleans");
        assert_eq!(a["phoneNumbers"][0]["value"], "+1 (555) 010-0000", "no reformatting");
        assert!(!a.contains_key("roles"), "empty roles accepted as absent");
        assert!(!a.contains_key("addresses"), "explicit null accepted as absent");
        assert!(!a.contains_key("meta"));
        assert!(!a.contains_key("password"));
        assert_eq!(a[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "E1001");
        let doc = build_document(ResourceKind::User, "id-1", a, "t0", "t0", 1);
        assert_eq!(doc["schemas"][1], ENTERPRISE_USER_SCHEMA);
        assert_eq!(doc["meta"]["version"], "W/\"1\"");
    }

    #[test]
    fn names_are_canonicalised() {
        let a =
            normalize(ResourceKind::User, &json!({"USERNAME": "bob", "Name": {"GivenName": "Bob"}, "Active": "false"}))
                .unwrap();
        assert_eq!(a["userName"], "bob");
        assert_eq!(a["name"]["givenName"], "Bob");
        assert_eq!(a["active"], json!(false));
    }

    #[test]
    fn wrong_types_and_missing_required_are_invalid_value() {
        for body in [
            json!({"userName": 5}),
            json!({"userName": "a", "active": "yes"}),
            json!({"userName": "a", "emails": "x@y"}),
            json!({"userName": "a", "name": ["x"]}),
            json!({"displayName": "no userName"}),
            json!({"userName": ""}),
            json!({"userName": "a", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": "True"}]}),
        ] {
            let e = normalize(ResourceKind::User, &body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidValue), "{body}");
        }
        assert_eq!(
            normalize(ResourceKind::User, &json!([1])).unwrap_err().scim_type,
            Some(crate::scim::error::ScimType::InvalidSyntax)
        );
        assert_eq!(normalize(ResourceKind::User, &json!({"userName": "a", "schemas": "x"})).unwrap_err().status, 400);
    }

    #[test]
    fn group_with_microsoft_schema_urn_and_null_refs() {
        let a = normalize(
            ResourceKind::Group,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                    "externalId": "8aa1", "displayName": "Sales", "meta": {"resourceType": "Group"},
                    "members": [{"$ref": null, "value": "u1"}]}),
        )
        .unwrap();
        assert_eq!(a["members"], json!([{"value": "u1"}]));
    }

    #[test]
    fn spliced_reads_equal_parsed_reads() {
        let doc = build_document(
            ResourceKind::User,
            "id-1",
            normalize(ResourceKind::User, &entra_create()).unwrap(),
            "t",
            "t",
            3,
        );
        let text = serde_json::to_string(&doc).unwrap();
        let groups = json!([{"value": "g1", "display": "Sales \"EMEA\""}]);
        let fast: Value =
            serde_json::from_str(&splice_response(&text, Some(&groups), "http://x/Users/id-1").unwrap()).unwrap();
        let mut slow = doc.clone();
        let meta = slow.as_object_mut().unwrap().shift_remove("meta").unwrap();
        slow["groups"] = groups;
        slow["meta"] = meta;
        slow["meta"]["location"] = json!("http://x/Users/id-1");
        assert_eq!(fast, slow);
        assert_eq!(fast.as_object().unwrap().keys().next_back().unwrap(), "meta");
        assert!(splice_response("{\"a\":1}", None, "l").is_none());
    }

    #[test]
    fn attribute_selection() {
        let doc = build_document(
            ResourceKind::User,
            "id-1",
            normalize(ResourceKind::User, &entra_create()).unwrap(),
            "t",
            "t",
            1,
        );
        let p = AttributeSelection::parse(ResourceKind::User, Some("userName,emails.value"), None).unwrap();
        let out = p.apply(ResourceKind::User, &doc);
        assert_eq!(out["id"], "id-1", "id is always returned");
        assert_eq!(out["emails"], json!([{"value": "alice@contoso.com"}]));
        assert!(out.get("displayName").is_none());
        assert!(out.get("meta").is_none());
        let p = AttributeSelection::parse(
            ResourceKind::User,
            None,
            Some("emails,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department,name.formatted"),
        )
        .unwrap();
        let out = p.apply(ResourceKind::User, &doc);
        assert!(out.get("emails").is_none());
        assert!(out[ENTERPRISE_USER_SCHEMA].get("department").is_none());
        assert_eq!(out[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "E1001");
        assert!(out["name"].get("formatted").is_none());
        assert_eq!(out["name"]["givenName"], "Alice");
    }
}
