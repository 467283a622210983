//! The Argo CD health check (`charts/scim-operator/files/argocd-health.lua`)
//! run by a real Lua 5.1 interpreter (Argo CD's gopher-lua is 5.1) against
//! the fixtures in `tests/argocd-health`, laid out like Argo CD's own
//! `resource_customizations/*/*/health_test.yaml`. The fixtures are the
//! operator's real status output (the operator test checks them on every
//! run). Needs `lua5.1` on PATH (`apt-get install lua5.1`; `.ci/run` installs
//! it) or its path in `LUA`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const SCRIPT: &str = "charts/scim-operator/files/argocd-health.lua";
const TESTS: &str = "tests/argocd-health";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lua() -> String {
    let lua = std::env::var("LUA").unwrap_or_else(|_| "lua5.1".into());
    let found = Command::new(&lua).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "`{lua}` is not runnable: install Lua 5.1 (Debian/Ubuntu: apt-get install lua5.1; .ci/run does) \
         or point LUA at a Lua 5.1 interpreter"
    );
    lua
}

/// A Lua string literal: every byte outside printable ASCII escaped as `\ddd`.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a Lua table constructor, as Argo CD hands `obj` to the
/// script (arrays 1-based, nulls absent).
fn lua_value(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_value).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the health script on `obj`: (status, message).
fn health(lua: &str, obj: &Value) -> (String, String) {
    let script = root().join(SCRIPT);
    let harness = format!(
        "obj = {}\nlocal check = assert(loadfile({}))\nlocal hs = check()\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        lua_value(obj),
        lua_string(&script.display().to_string())
    );
    let mut child = Command::new(lua)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {lua}: {e}"));
    child.stdin.take().unwrap().write_all(harness.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{lua} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    (status.to_string(), message.to_string())
}

fn fixture(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_health_check_passes_its_fixtures_under_lua_5_1() {
    let lua = lua();
    let dir = root().join(TESTS);
    let spec = fixture(&dir.join("health_test.yaml"));
    let tests = spec["tests"].as_array().expect("health_test.yaml has tests");
    let mut seen = Vec::new();
    for t in tests {
        let input = t["inputPath"].as_str().expect("inputPath");
        let want = (
            t["healthStatus"]["status"].as_str().unwrap_or_default().to_string(),
            t["healthStatus"]["message"].as_str().unwrap_or_default().to_string(),
        );
        assert_eq!(health(&lua, &fixture(&dir.join(input))), want, "{input}");
        seen.push(want.0);
    }
    seen.sort();
    assert_eq!(seen, ["Degraded", "Healthy", "Progressing", "Suspended"], "one fixture per health status");
}

#[test]
fn a_tenant_the_operator_has_not_seen_yet_is_progressing() {
    let lua = lua();
    let healthy = fixture(&root().join(TESTS).join("testdata/healthy.yaml"));
    // A spec change the operator has not observed: its old Ready says nothing about the new spec.
    let mut edited = healthy.clone();
    edited["metadata"]["generation"] = json!(2);
    let (status, message) = health(&lua, &edited);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Progressing", "Waiting for the operator to observe generation 2")
    );
    // Just created: no status at all.
    let mut fresh = healthy.clone();
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(health(&lua, &fresh).0, "Progressing");
    // Suspended in Git but not yet confirmed by the operator: still waiting for it.
    let mut suspending = healthy;
    suspending["spec"]["suspend"] = json!(true);
    suspending["metadata"]["generation"] = json!(2);
    assert_eq!(health(&lua, &suspending).0, "Progressing");
}

#[test]
fn odd_strings_reach_lua_unchanged() {
    let lua = lua();
    let mut obj = fixture(&root().join(TESTS).join("testdata/progressing.yaml"));
    let odd = "quote \" backslash \\ newline \n ümlaut ]] end";
    for c in obj["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Reconciling" {
            c["message"] = json!(odd);
        }
    }
    assert_eq!(health(&lua, &obj), ("Progressing".to_string(), format!("MinimumReplicasUnavailable: {odd}")));
}
