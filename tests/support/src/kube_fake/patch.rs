//! The three patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an
//! approximation of server-side apply built on per-manager sets of leaf field paths.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A field path from the object root; a list or an empty map is a leaf (lists are atomic here).
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// RFC 7386: `null` deletes, objects merge recursively, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p.strip_prefix('/').ok_or_else(|| format!("JSON pointer {p:?} must start with '/'"))?;
    Ok(rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect())
}

fn index(tok: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if tok == "-" && allow_end {
        return Ok(len);
    }
    if tok.is_empty() || (tok.len() > 1 && tok.starts_with('0')) || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid array index {tok:?}"));
    }
    let i: usize = tok.parse().map_err(|_| format!("invalid array index {tok:?}"))?;
    let max = if allow_end { len } else { len.saturating_sub(1) };
    if i > max || (!allow_end && len == 0) {
        return Err(format!("array index {i} out of bounds"));
    }
    Ok(i)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, tok| match cur {
        Value::Object(m) => m.get(tok),
        Value::Array(a) => index(tok, a.len(), false).ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn parent_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(tok).ok_or_else(|| format!("path segment {tok:?} not found"))?,
            Value::Array(a) => {
                let i = index(tok, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("path segment {tok:?} is not a container")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("cannot add to a scalar at {last:?}")),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, parent)) = path.split_last() else {
        return Err("cannot remove the document root".into());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("field {last:?} not found")),
        Value::Array(a) => {
            let i = index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove from a scalar at {last:?}")),
    }
}

fn op_path(op: &Map<String, Value>, field: &str) -> Result<Vec<String>, String> {
    let s = op.get(field).and_then(Value::as_str).ok_or_else(|| format!("operation is missing {field:?}"))?;
    parse_pointer(s)
}

fn op_value(op: &Map<String, Value>) -> Result<Value, String> {
    op.get("value").cloned().ok_or_else(|| "operation is missing \"value\"".to_string())
}

/// Error kinds for a JSON patch: a malformed document is 400, an inapplicable one 422.
pub enum JsonPatchError {
    Malformed(String),
    Failed(String),
}

/// RFC 6902, with the apiserver's reading of `test`: a missing path compares equal to `null`
/// (kube-runtime's `finalizer()` relies on it to add the first finalizer).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    use JsonPatchError::*;
    let ops = patch.as_array().ok_or_else(|| Malformed("a JSON patch must be an array".into()))?;
    // Applied to a copy so a failing operation leaves the document untouched.
    let mut work = doc.clone();
    for op in ops {
        let op = op.as_object().ok_or_else(|| Malformed("each operation must be an object".into()))?;
        let name =
            op.get("op").and_then(Value::as_str).ok_or_else(|| Malformed("operation is missing \"op\"".into()))?;
        let path = op_path(op, "path").map_err(Malformed)?;
        match name {
            "add" => add(&mut work, &path, op_value(op).map_err(Malformed)?).map_err(Failed)?,
            "remove" => {
                remove(&mut work, &path).map_err(Failed)?;
            }
            "replace" => {
                let v = op_value(op).map_err(Malformed)?;
                let slot = parent_mut(&mut work, &path).map_err(Failed)?;
                *slot = v;
            }
            "move" => {
                let from = op_path(op, "from").map_err(Malformed)?;
                if path.len() > from.len() && path.starts_with(&from) {
                    return Err(Failed("cannot move a value into one of its children".into()));
                }
                let v = remove(&mut work, &from).map_err(Failed)?;
                add(&mut work, &path, v).map_err(Failed)?;
            }
            "copy" => {
                let from = op_path(op, "from").map_err(Malformed)?;
                let v = get(&work, &from).cloned().ok_or_else(|| Failed("copy source not found".into()))?;
                add(&mut work, &path, v).map_err(Failed)?;
            }
            "test" => {
                let want = op_value(op).map_err(Malformed)?;
                let have = get(&work, &path).unwrap_or(&Value::Null);
                if *have != want {
                    return Err(Failed(format!(
                        "testing value {} failed: have {have}, want {want}",
                        op.get("path").and_then(Value::as_str).unwrap_or_default()
                    )));
                }
            }
            other => return Err(Malformed(format!("unknown JSON patch operation {other:?}"))),
        }
    }
    *doc = work;
    Ok(())
}

/// Metadata the server owns; never part of a manager's field set and never taken from a request.
pub const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

fn is_system(path: &[String]) -> bool {
    match path {
        [top] => top == "apiVersion" || top == "kind",
        [m, f, ..] => m == "metadata" && SYSTEM_METADATA.contains(&f.as_str()),
        _ => false,
    }
}

/// Leaf paths of an applied configuration (nulls mean "not set").
pub fn leaf_paths(v: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        match v {
            Value::Null => {}
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    if !is_system(prefix) {
                        walk(child, prefix, out);
                    }
                    prefix.pop();
                }
            }
            _ if !prefix.is_empty() => {
                out.insert(prefix.clone());
            }
            _ => {}
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Merges an applied configuration into the live object: maps key by key, everything else
/// (lists included) replaced whole. Nulls and server-owned metadata are skipped.
pub fn apply_merge(live: &mut Value, applied: &Value) {
    fn walk(dst: &mut Value, src: &Value, prefix: &mut FieldPath) {
        let Value::Object(s) = src else { return };
        if !dst.is_object() {
            *dst = Value::Object(Map::new());
        }
        let Value::Object(d) = dst else { return };
        for (k, v) in s {
            prefix.push(k.clone());
            if !v.is_null() && !is_system(prefix) {
                if v.is_object() {
                    walk(d.entry(k.clone()).or_insert(Value::Null), v, prefix);
                } else {
                    d.insert(k.clone(), v.clone());
                }
            }
            prefix.pop();
        }
    }
    walk(live, applied, &mut Vec::new());
}

/// Removes a field and then any map it leaves empty, except the root and `metadata`.
pub fn remove_path(doc: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut cur = &mut *doc;
    for tok in parent {
        cur = match cur.get_mut(tok.as_str()) {
            Some(v) => v,
            None => return,
        };
    }
    let Some(m) = cur.as_object_mut() else { return };
    m.remove(last);
    let is_metadata = parent.len() == 1 && parent[0] == "metadata";
    if m.is_empty() && !parent.is_empty() && !is_metadata {
        remove_path(doc, parent);
    }
}

/// Leaf paths whose values differ between two objects.
pub fn changed_paths(a: &Value, b: &Value) -> FieldSet {
    fn walk(a: Option<&Value>, b: Option<&Value>, prefix: &mut FieldPath, out: &mut FieldSet) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    prefix.push(k.clone());
                    walk(x.get(k), y.get(k), prefix, out);
                    prefix.pop();
                }
            }
            (x, y) if x != y => {
                out.insert(prefix.clone());
            }
            _ => {}
        }
    }
    let mut out = FieldSet::new();
    walk(Some(a), Some(b), &mut Vec::new(), &mut out);
    out
}

/// True when one path is a prefix of the other (they name overlapping fields).
pub fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}
