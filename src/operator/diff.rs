//! Whether a child needs applying, pure. Steady state must be silent: a
//! reconcile that finds every child as it wants it sends no request at all,
//! not even a no-op apply. Each applied object carries a hash of what we
//! applied, so a field we stop setting is noticed (SSA then removes it); and
//! the live object must still hold every field we set, so edits by others
//! are noticed and undone.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const APPLIED_HASH: &str = "scim.unique.app/applied-hash";

/// True when `live` holds every field of `desired` with the same value.
/// Fields the API server or other managers add are ignored.
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => covers(lv, dv),
            None => dv.is_null() || is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| covers(lv, dv)),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, Value::Null) => d.is_null() || is_empty(d),
        (d, l) => d == l,
    }
}

/// The API server drops empty maps and lists on the way in.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.values().all(|v| v.is_null() || is_empty(v)),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The hash recorded on an object for `desired` (computed without the hash annotation itself).
pub fn applied_hash(desired: &Value) -> String {
    let mut d = desired.clone();
    if let Some(a) = d.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(APPLIED_HASH);
    }
    hex::encode(Sha256::digest(d.to_string().as_bytes()))[..20].to_string()
}

/// Puts the hash annotation on `desired`.
pub fn stamp(desired: &mut Value) {
    let h = applied_hash(desired);
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = ann.as_object_mut() {
            a.insert(APPLIED_HASH.into(), Value::String(h));
        }
    }
}

/// Nothing to send: `live` exists, was last applied from this same desired
/// object, and nobody changed a field of ours since.
pub fn up_to_date(live: Option<&Value>, stamped_desired: &Value) -> bool {
    let Some(live) = live else { return false };
    let want = stamped_desired.pointer(&format!("/metadata/annotations/{}", APPLIED_HASH.replace('/', "~1")));
    let have = live.pointer(&format!("/metadata/annotations/{}", APPLIED_HASH.replace('/', "~1")));
    want.is_some() && want == have && covers(live, stamped_desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_added_fields_are_ignored_and_our_fields_are_compared() {
        let desired =
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}], "replicas": 1}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "replicas": 1.0, "clusterIP": "10.0.0.1"}, "status": {}});
        assert!(covers(&live, &desired));
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(3);
        assert!(!covers(&edited, &desired));
        let mut extra_port = live.clone();
        extra_port["spec"]["ports"] = json!([{"port": 80}, {"port": 81}]);
        assert!(!covers(&extra_port, &desired), "lists are compared whole");
        assert!(covers(&json!({"a": 1}), &json!({"a": 1, "b": {}, "c": []})), "empty values are dropped by the server");
    }

    #[test]
    fn the_hash_notices_a_field_we_stopped_setting() {
        let mut d1 = json!({"metadata": {"name": "a", "annotations": {"k": "v"}}, "data": {"x": "1", "y": "2"}});
        stamp(&mut d1);
        assert!(up_to_date(Some(&d1), &d1));
        let mut d2 = json!({"metadata": {"name": "a", "annotations": {"k": "v"}}, "data": {"x": "1"}});
        stamp(&mut d2);
        assert!(covers(&d1["data"], &d2["data"]), "live still holds every value d2 sets…");
        assert!(!up_to_date(Some(&d1), &d2), "…but y must be removed, which only an apply does");
        assert!(!up_to_date(None, &d2));
    }
}
