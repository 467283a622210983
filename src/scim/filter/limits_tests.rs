//! Hostile sizes: every entry point that parses a client's expression
//! (filter, lenient filter, PATCH path, PATCH apply) answers a 400 naming the
//! limit or a correct result, never a crash, for inputs up to 10⁵ terms; and
//! what is accepted evaluates on a thread with a small stack.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::scim::error::{ScimError, ScimType};
use crate::scim::patch::{OpKind, PatchOperation, apply_patch};

/// `value eq "0" or value eq "1" …` (`joiner` between terms), wrapped in
/// `depth` parentheses.
fn chain(terms: usize, joiner: &str, depth: usize, attr: &str) -> String {
    let mut s = "(".repeat(depth);
    for i in 0..terms {
        if i > 0 {
            s.push_str(joiner);
        }
        s.push_str(&format!("{attr} eq \"{i}\""));
    }
    s.push_str(&")".repeat(depth));
    s
}

fn is_limit_error(e: &ScimError, scim_type: ScimType) -> bool {
    e.status == 400 && e.scim_type == Some(scim_type) && e.detail.contains("limit")
}

fn within_limits(src: &str, terms: usize, depth: usize) -> bool {
    src.len() <= MAX_FILTER_LEN && terms <= MAX_TERMS && depth < MAX_DEPTH
}

/// Runs `f` on a thread with a 128 KiB stack, far below any thread's default.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(128 * 1024).spawn(f).unwrap().join().unwrap()
}

#[test]
fn limits_are_exact_and_named() {
    let user = json!({"userName": "7", "emails": [{"value": "7"}]});
    let at = chain(MAX_TERMS, " or ", 0, "userName");
    assert!(Filter::parse(ResourceKind::User, &at).unwrap().matches(&user));
    let over = chain(MAX_TERMS + 1, " or ", 0, "userName");
    let e = Filter::parse(ResourceKind::User, &over).unwrap_err();
    assert!(is_limit_error(&e, ScimType::InvalidFilter), "{e:?}");
    assert!(e.detail.contains(&MAX_TERMS.to_string()), "{}", e.detail);

    let deepest = chain(1, "", MAX_DEPTH - 1, "userName");
    assert!(Filter::parse(ResourceKind::User, &deepest).is_ok());
    let e = Filter::parse(ResourceKind::User, &chain(1, "", MAX_DEPTH, "userName")).unwrap_err();
    assert!(is_limit_error(&e, ScimType::InvalidFilter), "{e:?}");

    let long = format!("userName eq \"{}\"", "x".repeat(MAX_FILTER_LEN));
    assert!(is_limit_error(&Filter::parse(ResourceKind::User, &long).unwrap_err(), ScimType::InvalidFilter));
    let path = format!("emails[{}]", chain(MAX_TERMS + 1, " or ", 0, "value"));
    let e = PatchPath::parse(ResourceKind::User, &path).unwrap_err();
    assert!(is_limit_error(&e, ScimType::InvalidPath), "{e:?}");
    assert!(e.detail.len() < 400, "the error quotes the path shortened: {}", e.detail);
}

#[test]
fn the_largest_accepted_expressions_evaluate_on_a_small_stack() {
    let results = on_small_stack(|| {
        let doc = json!({"userName": "u", "emails": [{"value": "99"}]});
        let wide = Filter::parse(ResourceKind::User, &format!("emails[{}]", chain(MAX_TERMS, " and ", 0, "value")))
            .unwrap()
            .matches(&doc);
        let deep = Filter::parse(ResourceKind::User, &chain(1, "", MAX_DEPTH - 1, "emails.value"))
            .unwrap()
            .matches(&json!({"emails": [{"value": "0"}]}));
        (wide, deep)
    });
    assert_eq!(results, (false, true));
}

fn remove_op(path: String) -> PatchOperation {
    PatchOperation { op: OpKind::Remove, path: Some(path), value: None }
}

fn user_with_email(value: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("userName".into(), json!("alice"));
    m.insert("emails".into(), json!([{"value": value}]));
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Up to 10⁵ terms, `or` or `and`, up to 200 levels of parentheses,
    /// through every entry point.
    #[test]
    fn any_size_is_a_clean_400_or_a_correct_answer(
        terms in prop_oneof![1usize..=120, 100_000usize..=100_001],
        or in any::<bool>(),
        depth in prop_oneof![0usize..=40, 190usize..=200],
        email in 0usize..150,
    ) {
        let joiner = if or { " or " } else { " and " };
        let inner = chain(terms, joiner, depth, "value");
        // `emails[...]` is itself one level of nesting.
        let ok = within_limits(&inner, terms, depth + 1);
        let email = email.to_string();
        // Which answer is correct: or matches when the email is one of the
        // terms; and (of distinct values) only with a single term.
        let expected = if or { email.parse::<usize>().is_ok_and(|e| e < terms) } else { terms == 1 && email == "0" };

        let filter = format!("emails[{inner}]");
        let doc = json!({"emails": [{"value": email}]});
        for lenient in [false, true] {
            let parsed = if lenient { Filter::parse_lenient(ResourceKind::User, &filter) } else { Filter::parse(ResourceKind::User, &filter) };
            match parsed {
                Ok(f) => { prop_assert!(ok); prop_assert_eq!(f.matches(&doc), expected); }
                Err(e) => { prop_assert!(!ok || filter.len() > MAX_FILTER_LEN); prop_assert!(is_limit_error(&e, ScimType::InvalidFilter), "{:?}", e); }
            }
        }

        let mut attrs = user_with_email(&email);
        match apply_patch(ResourceKind::User, &mut attrs, &[remove_op(format!("emails[{inner}]"))]) {
            Ok(()) => { prop_assert!(ok); prop_assert_eq!(attrs.contains_key("emails"), !expected); }
            Err(e) => { prop_assert!(!ok || inner.len() + 8 > MAX_PATH_LEN); prop_assert!(is_limit_error(&e, ScimType::InvalidPath), "{:?}", e); }
        }
    }
}
