//! Whether a child needs applying, pure. Steady state must be silent: a
//! reconcile that finds every child as it wants it sends no request at all,
//! not even a no-op apply. Each applied object carries a hash of what we
//! applied, so a field we stop setting is noticed (SSA then removes it); and
//! the live object must still hold every field we set, so edits by others
//! are noticed and undone.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub(crate) use super::names::annotation::APPLIED_HASH;

/// True when `live` holds every field of `desired` with the same value.
/// Fields the API server or other managers add are ignored.
pub(crate) fn covers(live: &Value, desired: &Value) -> bool {
    covers_in(None, live, desired)
}

/// `parent` is the key holding these values: the API server rewrites
/// quantities under `requests`/`limits` to canonical form (`1024Mi` → `1Gi`).
fn covers_in(parent: Option<&str>, live: &Value, desired: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            let quantities = matches!(parent, Some("requests" | "limits" | "capacity"));
            d.iter().all(|(k, dv)| match l.get(k) {
                Some(lv) if quantities && same_quantity(lv, dv) => true,
                Some(lv) => covers_in(Some(k), lv, dv),
                None => is_empty(dv),
            })
        }
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| covers_in(parent, lv, dv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

/// The API server drops zero values of `omitempty` fields: null, false, 0,
/// "", and empty maps and lists.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
    }
}

fn same_quantity(a: &Value, b: &Value) -> bool {
    match (a.as_str().and_then(quantity), b.as_str().and_then(quantity)) {
        (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 1e-9,
        _ => false,
    }
}

/// A Kubernetes quantity's value (`500m`, `1Gi`, `2e3`), if it is one.
pub(crate) fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| v * factor);
        }
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The hash recorded on an object for `desired` (computed without the hash annotation itself).
pub(crate) fn applied_hash(desired: &Value) -> String {
    let mut d = desired.clone();
    if let Some(a) = d.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(APPLIED_HASH);
    }
    hex::encode(Sha256::digest(d.to_string().as_bytes()))[..20].to_string()
}

/// Puts the hash annotation on `desired`.
pub(crate) fn stamp(desired: &mut Value) {
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
pub(crate) fn up_to_date(live: Option<&Value>, stamped_desired: &Value) -> bool {
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
        assert!(
            covers(&json!({"a": 1}), &json!({"a": 1, "b": {}, "c": [], "readOnly": false})),
            "empty values are dropped by the server"
        );
        let res = |mem: &str| json!({"resources": {"limits": {"memory": mem}}});
        assert!(covers(&res("1Gi"), &res("1024Mi")), "quantities are compared by value");
        assert!(covers(&res("500m"), &res("0.5")));
        assert!(!covers(&res("1Gi"), &res("1000Mi")));
        assert!(!covers(&json!({"name": "1k"}), &json!({"name": "1000"})), "only quantities are");
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
