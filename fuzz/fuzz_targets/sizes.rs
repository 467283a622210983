//! Size, not only shape: a few input bytes expand into expressions of up to
//! 200,000 repetitions (long `or`/`and` chains, deep parentheses, `not (`,
//! nested `[`), which go through every entry point that parses a client's
//! text: filter (strict and lenient), PATCH path, PATCH apply (user emails,
//! group members), attribute lists.
//!
//! Each 3-byte chunk is one instruction: a piece (byte 0) repeated n times
//! (bytes 1-2, scaled up to 200,000). No input may panic or overflow the
//! stack; every refusal is a 400.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

use scim_operator::scim::filter::{Filter, PatchPath};
use scim_operator::scim::patch::{OpKind, PatchOperation, apply_patch};
use scim_operator::scim::resource::AttributeSelection;
use scim_operator::scim::schema::ResourceKind;

const PIECES: [&str; 10] = [
    "value eq \"x\" or ",
    "value pr and ",
    "(",
    ")",
    "not (",
    "emails[",
    "]",
    "value eq \"x\"",
    "type eq \"work\" or value sw \"a\" and ",
    "userName eq \"a\" or ",
];
/// Generated inputs stop growing here (a little over the 4 MiB a roomy
/// server's body limit would admit).
const MAX_GENERATED: usize = 5 << 20;

fn generate(data: &[u8]) -> String {
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let piece = PIECES[usize::from(chunk[0]) % PIECES.len()];
        let n = usize::from(chunk.get(1).copied().unwrap_or(0)) << 8 | usize::from(chunk.get(2).copied().unwrap_or(1));
        let n = (n * 4) % 200_001;
        let room = MAX_GENERATED.saturating_sub(s.len()) / piece.len();
        s.push_str(&piece.repeat(n.min(room)));
    }
    s
}

/// `Some` on success; a refusal must be a 400 (the error type is not
/// public, hence a macro).
macro_rules! check {
    ($r:expr) => {
        match $r {
            Ok(v) => Some(v),
            Err(e) => {
                assert_eq!(e.status, 400, "{e:?}");
                None
            }
        }
    };
}

fn remove(path: String) -> PatchOperation {
    PatchOperation { op: OpKind::Remove, path: Some(path), value: None }
}

fuzz_target!(|data: &[u8]| {
    let expr = generate(data);
    let user = json!({"userName": "alice", "emails": [{"type": "work", "value": "x"}]});
    let group = json!({"displayName": "Sales", "members": [{"value": "x"}]});
    for kind in [ResourceKind::User, ResourceKind::Group] {
        let doc = if kind == ResourceKind::User { &user } else { &group };
        for f in [Filter::parse(kind, &expr), Filter::parse_lenient(kind, &expr)] {
            if let Some(f) = check!(f) {
                let _ = f.matches(doc);
                let _ = f.index_hint(kind);
                let _ = f.required_values();
            }
        }
        let _ = check!(PatchPath::parse(kind, &expr));
        let attr = if kind == ResourceKind::User { "emails" } else { "members" };
        let mut attrs: Map<String, Value> = doc.as_object().cloned().unwrap_or_default();
        let _ = check!(apply_patch(kind, &mut attrs, &[remove(format!("{attr}[{expr}]"))]));
        let _ = check!(AttributeSelection::parse(kind, Some(&expr), Some(&expr)));
    }
});
