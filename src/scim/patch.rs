//! PATCH (RFC 7644 §3.5.2) in both of Entra ID's dialects.
//!
//! Entra deviates from the RFC in ways a strict engine turns into failed
//! provisioning; each deviation we accept is named where it is handled:
//! capitalised ops, string booleans, path-less replace whose keys are paths,
//! typed paths that must create the entry when absent, `manager` as a bare id
//! or a one-element array, and member removal by value list.

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::filter::{Filter, PatchPath};
use super::resource::{check_required, coerce, coerce_single, set_attr};
use super::schema::{AttrDef, Container, Mutability, ResolvedAttr, ResourceKind, resolve_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone)]
pub struct PatchOperation {
    pub op: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// Parses a PatchOp body. An empty `Operations` array is accepted as a no-op:
/// Microsoft's validator sends one.
pub fn parse_patch(body: &Value) -> ScimResult<Vec<PatchOperation>> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the PATCH body must be a JSON object with an 'Operations' array"))?;
    let ops = get_ci(obj, "Operations")
        .ok_or_else(|| ScimError::invalid_syntax("the PATCH body has no 'Operations' array"))?
        .as_array()
        .ok_or_else(|| ScimError::invalid_syntax("'Operations' must be an array"))?;
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let o = op
                .as_object()
                .ok_or_else(|| ScimError::invalid_syntax(format!("Operations[{i}] must be an object")))?;
            let name = get_ci(o, "op")
                .and_then(Value::as_str)
                .ok_or_else(|| ScimError::invalid_syntax(format!("Operations[{i}] has no 'op'")))?;
            let kind = match name.to_ascii_lowercase().as_str() {
                "add" => OpKind::Add,
                "replace" => OpKind::Replace,
                "remove" => OpKind::Remove,
                _ => {
                    return Err(ScimError::invalid_syntax(format!(
                        "Operations[{i}]: unknown op '{name}' (expected add, replace or remove)"
                    )));
                }
            };
            let path = match get_ci(o, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(Value::String(s)) => Some(s.trim().to_string()),
                Some(_) => {
                    return Err(ScimError::invalid_path(format!("Operations[{i}]: 'path' must be a string")));
                }
            };
            let value = get_ci(o, "value").cloned();
            if kind != OpKind::Remove && value.is_none() {
                return Err(ScimError::invalid_value(format!("Operations[{i}]: '{name}' needs a 'value'")));
            }
            Ok(PatchOperation { op: kind, path, value })
        })
        .collect()
}

/// Applies the operations to a resource's writable attributes. All or nothing:
/// the caller keeps the original on error.
pub fn apply_patch(kind: ResourceKind, attrs: &mut Map<String, Value>, ops: &[PatchOperation]) -> ScimResult<()> {
    for op in ops {
        apply_op(kind, attrs, op)?;
    }
    check_required(kind, attrs)?;
    if kind == ResourceKind::Group
        && let Some(Value::Array(members)) = attrs.get("members")
        && members.iter().any(|m| !m.get("value").is_some_and(Value::is_string))
    {
        return Err(ScimError::invalid_value("every member needs a 'value' holding the member's id"));
    }
    Ok(())
}

fn apply_op(kind: ResourceKind, attrs: &mut Map<String, Value>, op: &PatchOperation) -> ScimResult<()> {
    match &op.path {
        None => {
            if op.op == OpKind::Remove {
                return Err(ScimError::no_target("a 'remove' operation needs a 'path'"));
            }
            let value = op.value.as_ref().and_then(Value::as_object).ok_or_else(|| {
                ScimError::invalid_value("an operation without 'path' needs an object 'value' of attributes to set")
            })?;
            // Entra with aadOptscim062020 puts paths ("name.givenName",
            // URN-qualified names) in the keys of a path-less replace; Okta puts
            // plain names. Both mean: apply each key as a path.
            for (key, v) in value {
                if let Some((urn, ext_attrs)) = kind.extension(key) {
                    apply_extension_object(attrs, op.op, urn, ext_attrs, v)?;
                    continue;
                }
                let path = if key.contains('[') {
                    PatchPath::parse(kind, key)?
                } else {
                    let Some(attr) = resolve_path(kind, key) else {
                        continue;
                    };
                    PatchPath { attr, filter: None, sub_after_filter: None }
                };
                if is_read_only(&path.attr) {
                    continue;
                }
                apply_path(attrs, op.op, &path, Some(v))?;
            }
            Ok(())
        }
        Some(p) => {
            if let Some((urn, ext_attrs)) = kind.extension(p) {
                return match (op.op, &op.value) {
                    (OpKind::Remove, _) => {
                        attrs.remove(urn);
                        Ok(())
                    }
                    (_, Some(v)) => apply_extension_object(attrs, op.op, urn, ext_attrs, v),
                    (_, None) => Ok(()),
                };
            }
            let path = PatchPath::parse(kind, p)?;
            if is_read_only(&path.attr) {
                return Err(ScimError::mutability(format!("'{p}' is read-only")));
            }
            apply_path(attrs, op.op, &path, op.value.as_ref())
        }
    }
}

fn is_read_only(r: &ResolvedAttr) -> bool {
    r.attr.mutability == Mutability::ReadOnly || r.sub.is_some_and(|s| s.mutability == Mutability::ReadOnly)
}

fn apply_extension_object(
    attrs: &mut Map<String, Value>,
    op: OpKind,
    urn: &'static str,
    ext_attrs: &'static [AttrDef],
    v: &Value,
) -> ScimResult<()> {
    let obj =
        v.as_object().ok_or_else(|| ScimError::invalid_value(format!("the value for '{urn}' must be an object")))?;
    for (k, val) in obj {
        let Some(def) = ext_attrs.iter().find(|a| a.name.eq_ignore_ascii_case(k)) else {
            continue;
        };
        let path = PatchPath {
            attr: ResolvedAttr { container: Container::Extension(urn), attr: def, sub: None },
            filter: None,
            sub_after_filter: None,
        };
        apply_path(attrs, op, &path, Some(val))?;
    }
    Ok(())
}

fn slot<'a>(attrs: &'a mut Map<String, Value>, r: &ResolvedAttr) -> Option<&'a mut Value> {
    match r.container {
        Container::Core => attrs.get_mut(r.attr.name),
        Container::Extension(urn) => attrs.get_mut(urn)?.as_object_mut()?.get_mut(r.attr.name),
    }
}

fn current(attrs: &Map<String, Value>, r: &ResolvedAttr) -> Option<Value> {
    match r.container {
        Container::Core => attrs.get(r.attr.name).cloned(),
        Container::Extension(urn) => attrs.get(urn)?.get(r.attr.name).cloned(),
    }
}

/// A single-valued complex attribute written as a one-element array, as Entra's
/// documented `manager` example does.
fn unwrap_single(def: &AttrDef, v: &Value) -> Value {
    match v {
        Value::Array(a) if !def.multi_valued && a.len() <= 1 => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    }
}

fn apply_path(attrs: &mut Map<String, Value>, op: OpKind, path: &PatchPath, value: Option<&Value>) -> ScimResult<()> {
    let r = path.attr;
    let def = r.attr;
    // Write-only attributes (`password`) are accepted and discarded, as on
    // POST: users sign in through the IdP, and a stored secret would leak.
    let name = r.display();
    if def.mutability == Mutability::WriteOnly {
        // Checked like any value, then dropped.
        if let (Some(v), None) = (value, r.sub) {
            coerce(def, &unwrap_single(def, v), &name)?;
        }
        return Ok(());
    }
    match (&path.filter, r.sub) {
        (None, None) => {
            let value = value.map(|v| unwrap_single(def, v));
            match op {
                OpKind::Remove => {
                    match value {
                        // Entra without the flag: {"op":"Remove","path":"members",
                        // "value":[{"value":"id"}]} removes only the listed members.
                        Some(v) if def.multi_valued && !v.is_null() => remove_listed(attrs, &r, &v, &name),
                        _ => {
                            set_attr(attrs, r.container, def, None);
                            Ok(())
                        }
                    }
                }
                OpKind::Add | OpKind::Replace => {
                    let v = value.unwrap_or(Value::Null);
                    let new = coerce(def, &v, &name)?;
                    let merged = match (op, new, current(attrs, &r)) {
                        (_, None, _) => None,
                        (OpKind::Add, Some(Value::Array(add)), Some(Value::Array(mut cur))) if def.multi_valued => {
                            merge_elements(&mut cur, add);
                            Some(Value::Array(cur))
                        }
                        // RFC 7644 §3.5.2.3: on a complex attribute, sub-attributes
                        // not in the value are left unchanged, for add and replace.
                        (_, Some(Value::Object(new)), Some(Value::Object(mut cur))) if !def.multi_valued => {
                            for (k, v) in new {
                                cur.insert(k, v);
                            }
                            Some(Value::Object(cur))
                        }
                        (_, Some(new), _) => Some(new),
                    };
                    set_attr(attrs, r.container, def, merged);
                    Ok(())
                }
            }
        }
        (None, Some(sub)) => {
            let new_sub = match (op, value) {
                (OpKind::Remove, _) | (_, None) => None,
                (_, Some(v)) => coerce_single(sub, v, &name)?,
            };
            if def.multi_valued {
                let mut items = match current(attrs, &r) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                if items.is_empty() {
                    if let Some(v) = new_sub {
                        items.push(Value::Object(Map::from_iter([(sub.name.to_string(), v)])));
                    }
                } else {
                    for el in items.iter_mut() {
                        set_sub(el, sub, new_sub.clone());
                    }
                    items.retain(|el| has_content(def, el));
                }
                set_attr(attrs, r.container, def, (!items.is_empty()).then_some(Value::Array(items)));
            } else {
                let mut obj = match current(attrs, &r) {
                    Some(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                match new_sub {
                    Some(v) => obj.insert(sub.name.to_string(), v),
                    None => obj.remove(sub.name),
                };
                set_attr(attrs, r.container, def, (!obj.is_empty()).then_some(Value::Object(obj)));
            }
            Ok(())
        }
        (Some(filter), _) => apply_filtered(attrs, op, &r, filter, path.sub_after_filter, value, &name),
    }
}

fn set_sub(el: &mut Value, sub: &AttrDef, v: Option<Value>) {
    if let Value::Object(o) = el {
        match v {
            Some(v) => o.insert(sub.name.to_string(), v),
            None => o.remove(sub.name),
        };
    }
}

/// An element worth keeping: it has something besides its label and primary flag.
fn has_content(def: &AttrDef, el: &Value) -> bool {
    let Some(o) = el.as_object() else {
        return false;
    };
    if def.sub("value").is_some() {
        return o.get("value").is_some_and(|v| !v.is_null());
    }
    o.keys().any(|k| k != "type" && k != "primary")
}

fn same_element(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Adds elements to a multi-valued attribute: an element whose `value` is
/// already there is updated in place rather than duplicated (a member added
/// twice stays one member), and a new primary demotes the old one.
fn merge_elements(cur: &mut Vec<Value>, add: Vec<Value>) {
    for el in add {
        if el.get("primary") == Some(&Value::Bool(true)) {
            for c in cur.iter_mut() {
                if let Value::Object(o) = c {
                    o.remove("primary");
                }
            }
        }
        match cur.iter_mut().find(|c| same_element(c, &el)) {
            Some(existing) => {
                if let (Value::Object(e), Value::Object(n)) = (existing, el) {
                    for (k, v) in n {
                        e.insert(k, v);
                    }
                }
            }
            None => cur.push(el),
        }
    }
}

fn remove_listed(attrs: &mut Map<String, Value>, r: &ResolvedAttr, v: &Value, name: &str) -> ScimResult<()> {
    let listed: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![v.clone()],
        _ => {
            return Err(ScimError::invalid_value(format!(
                "the values to remove from '{name}' must be an array of objects"
            )));
        }
    };
    let Some(Value::Array(items)) = slot(attrs, r) else {
        return Ok(());
    };
    items.retain(|el| !listed.iter().any(|l| same_element(el, l)));
    if items.is_empty() {
        set_attr(attrs, r.container, r.attr, None);
    }
    Ok(())
}

fn apply_filtered(
    attrs: &mut Map<String, Value>,
    op: OpKind,
    r: &ResolvedAttr,
    filter: &Filter,
    sub: Option<&'static AttrDef>,
    value: Option<&Value>,
    name: &str,
) -> ScimResult<()> {
    let def = r.attr;
    let mut items = match current(attrs, r) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let matched: Vec<usize> = (0..items.len()).filter(|&i| filter.matches_element(&items[i])).collect();
    match (op, sub) {
        (OpKind::Remove, None) => {
            // Removing an entry that is not there leaves the state Entra wants.
            let mut i = 0;
            items.retain(|_| {
                let keep = !matched.contains(&i);
                i += 1;
                keep
            });
        }
        (OpKind::Remove, Some(sub)) => {
            for &i in &matched {
                set_sub(&mut items[i], sub, None);
            }
            items.retain(|el| has_content(def, el));
        }
        (_, sub) => {
            let v = value.cloned().unwrap_or(Value::Null);
            let new: Option<Value> = match sub {
                Some(s) => coerce_single(s, &v, name)?,
                // One element, possibly wrapped in an array of one.
                None => match &v {
                    Value::Array(a) if a.len() == 1 => coerce_single(def, &a[0], name)?,
                    other => coerce_single(def, other, name)?,
                },
            };
            if matched.is_empty() {
                // Entra's "create on absent": Add or Replace on
                // emails[type eq "work"].value when there is no work email
                // creates {"type":"work","value":...}.
                let Some(new) = new else { return Ok(()) };
                let required = filter.required_values().ok_or_else(|| {
                    ScimError::no_target(format!(
                        "no value of '{}' matches the filter in '{name}', and the filter does not say what a new one would look like",
                        def.name
                    ))
                })?;
                let mut el = Map::new();
                for (k, v) in required {
                    el.insert(k.to_string(), v);
                }
                match (sub, new) {
                    (Some(s), v) => {
                        el.insert(s.name.to_string(), v);
                    }
                    (None, Value::Object(o)) => el.extend(o),
                    (None, _) => {}
                }
                let el = coerce_single(def, &Value::Object(el), name)?.unwrap_or(Value::Null);
                if el.get("primary") == Some(&Value::Bool(true)) {
                    for c in items.iter_mut() {
                        if let Value::Object(o) = c {
                            o.remove("primary");
                        }
                    }
                }
                items.push(el);
            } else {
                for &i in &matched {
                    match (sub, &new) {
                        (Some(s), v) => set_sub(&mut items[i], s, v.clone()),
                        (None, Some(Value::Object(o))) => {
                            if let Value::Object(e) = &mut items[i] {
                                for (k, v) in o {
                                    e.insert(k.clone(), v.clone());
                                }
                            }
                        }
                        (None, _) => {}
                    }
                }
                items.retain(|el| has_content(def, el));
            }
        }
    }
    set_attr(attrs, r.container, def, (!items.is_empty()).then_some(Value::Array(items)));
    Ok(())
}

#[cfg(test)]
mod tests;
