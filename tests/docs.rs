//! The documentation points only at files that exist in the repository: a
//! newcomer following `docs/ARCHITECTURE.md` or the README must never hit a path
//! that moved or never was here.

use std::path::Path;

/// Top-level folders whose paths the docs cite.
const ROOTS: &[&str] = &["src/", "tests/", "docs/", "bench/", "config/", "charts/", "crds/", "fuzz/", "examples/"];

/// Paths written in backticks, e.g. `src/store/sqlite/plan.rs`.
fn cited_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| ROOTS.iter().any(|r| s.starts_with(r)))
        .filter(|s| !s.contains(' ') && !s.contains('*') && !s.contains('<'))
        .map(|s| s.trim_end_matches(['.', ',', ':', ')']).to_string())
        .collect()
}

fn missing(doc: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("read {doc}: {e}"));
    cited_paths(&text).into_iter().filter(|p| !root.join(p).exists()).collect()
}

#[test]
fn the_architecture_page_names_only_files_that_exist() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    assert!(cited_paths(&text).len() > 30, "the page should name the files it describes");
    assert_eq!(missing("docs/ARCHITECTURE.md"), Vec::<String>::new());
}

#[test]
fn the_readme_and_docs_name_only_files_that_exist() {
    for doc in ["README.md", "docs/zitadel-contract.md", "docs/entra-scim.md", "tests/contract/README.md"] {
        assert_eq!(missing(doc), Vec::<String>::new(), "{doc} cites paths that do not exist");
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["README.md", "docs/ARCHITECTURE.md", "docs/zitadel-contract.md", "docs/entra-scim.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("doc exists");
        assert!(!text.contains("../shared") && !text.contains("DESIGN.md"), "{doc} points outside the repository");
    }
}

#[test]
fn cited_paths_are_found_in_backticks_only() {
    let found = cited_paths("see `src/app.rs`, `src/store/` and src/not-cited.rs, `a b` `tests/*.rs`");
    assert_eq!(found, vec!["src/app.rs", "src/store/"]);
}
