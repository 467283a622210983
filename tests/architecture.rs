//! The shape rules of `docs/ARCHITECTURE.md`, checked on the source: files a
//! newcomer can read in one sitting, dependencies that point one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every library source file by its module path (`store::sqlite::plan`).
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src").with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        if parts.last().is_some_and(|p| p == "tests" || p == "main") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        modules.insert(parts.join("::"), text);
    }
    modules
}

/// The modules `text` (the module `at`) refers to with `crate::` or `super::`
/// paths outside its tests and comments, resolved to the longest module path that exists.
fn imports(at: &str, text: &str, known: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        let path: String = code[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut base: Vec<&str> = if segments.first() == Some(&"crate") {
            segments.remove(0);
            Vec::new()
        } else {
            at.split("::").filter(|s| !s.is_empty()).collect()
        };
        while segments.first() == Some(&"super") {
            segments.remove(0);
            base.pop();
        }
        base.extend(segments);
        if let Some(target) = (1..=base.len()).rev().map(|k| base[..k].join("::")).find(|m| known.contains_key(m)) {
            found.insert(target);
        }
    }
    found
}

/// Parents declare and use their children; only other pairs make a cycle.
fn related(a: &str, b: &str) -> bool {
    a.is_empty() || b.is_empty() || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

#[test]
fn no_source_file_is_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).expect("read").lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(f, n)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let known = modules();
    let graph: BTreeMap<&String, BTreeSet<String>> =
        known.iter().map(|(m, text)| (m, imports(m, text, &known))).collect();
    assert!(graph.get(&"app".to_string()).is_some_and(|i| i.contains("server")), "the check sees imports");
    let mut cycles = Vec::new();
    for (a, targets) in &graph {
        for b in targets {
            if a.as_str() < b.as_str() && !related(a, b) && graph.get(b).is_some_and(|t| t.contains(a.as_str())) {
                cycles.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}

#[test]
fn dependencies_point_one_way() {
    let known = modules();
    for (module, forbidden) in [("operator", "server"), ("scim", "store"), ("scim", "zitadel"), ("store", "server")] {
        let offenders: Vec<&String> = known
            .iter()
            .filter(|(m, _)| *m == module || m.starts_with(&format!("{module}::")))
            .filter(|(m, text)| {
                imports(m, text, &known).iter().any(|t| t == forbidden || t.starts_with(&format!("{forbidden}::")))
            })
            .map(|(m, _)| m)
            .collect();
        assert!(offenders.is_empty(), "{module} must not use {forbidden}: {offenders:?}");
    }
}
