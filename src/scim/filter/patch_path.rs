//! PATCH paths (RFC 7644 §3.5.2), which share the filter grammar.

use super::ast::Filter;
use super::parser::{MAX_PATH_LEN, Parser, Scope, Tok, resolve_multi, tokenize};
use crate::scim::error::{ScimError, ScimResult};
use crate::scim::schema::{AttrDef, ResolvedAttr, ResourceKind, resolve_path};

/// Parsed PATCH path: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`.
#[derive(Debug, Clone)]
pub struct PatchPath {
    pub attr: ResolvedAttr,
    pub filter: Option<Filter>,
    /// The sub-attribute after `[...]`.
    pub sub_after_filter: Option<&'static AttrDef>,
}

impl PatchPath {
    pub fn parse(kind: ResourceKind, input: &str) -> ScimResult<PatchPath> {
        if input.len() > MAX_PATH_LEN {
            return Err(ScimError::invalid_path(format!(
                "the PATCH path is {} bytes long; the limit is {MAX_PATH_LEN}",
                input.len()
            )));
        }
        let toks = tokenize(input).map_err(|e| ScimError::invalid_path(e.detail))?;
        let shown = shorten(input);
        let bad = |why: String| ScimError::invalid_path(format!("invalid PATCH path '{shown}': {why}"));
        let path = match toks.first() {
            Some(Tok::Word(w)) => w.as_str(),
            _ => return Err(bad("it must start with an attribute name".into())),
        };
        if toks.len() == 1 {
            let attr = resolve_path(kind, path)
                .ok_or_else(|| bad(format!("no attribute '{path}' in the {} schema", kind.name())))?;
            return Ok(PatchPath { attr, filter: None, sub_after_filter: None });
        }
        if toks.get(1) != Some(&Tok::LBracket) {
            return Err(bad("expected '[' after the attribute name".into()));
        }
        let close = toks.iter().rposition(|t| *t == Tok::RBracket).ok_or_else(|| bad("missing ']'".into()))?;
        let attr = resolve_multi(kind, path).map_err(bad)?;
        let mut p = Parser::in_brackets(&toks[2..close]);
        let filter = p.or(Scope::Element(attr.attr)).map_err(|e| bad(e.detail))?;
        if p.pos != close - 2 {
            return Err(bad("unexpected tokens inside '[...]'".into()));
        }
        let sub_after_filter = match &toks[close + 1..] {
            [] => None,
            [Tok::Word(w)] if w.starts_with('.') => Some(
                attr.attr
                    .sub(&w[1..])
                    .ok_or_else(|| bad(format!("{} has no sub-attribute '{}'", attr.attr.name, &w[1..])))?,
            ),
            _ => return Err(bad("only '.subAttribute' may follow ']'".into())),
        };
        Ok(PatchPath { attr, filter: Some(filter), sub_after_filter })
    }
}

/// The path as an error quotes it: at most 120 characters.
fn shorten(input: &str) -> String {
    const SHOWN: usize = 120;
    match input.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_string(),
    }
}
