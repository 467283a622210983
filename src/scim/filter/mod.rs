//! SCIM filters (RFC 7644 §3.4.2.2): parser, evaluator, the index hint a store
//! can narrow a query with, and PATCH paths (§3.5.2), which share the grammar.
//!
//! Attribute names resolve against the schema while parsing, so an unknown
//! attribute is a 400 `invalidFilter`/`invalidPath` rather than a silent empty
//! result, and each comparison knows its attribute's type and `caseExact`.

use serde_json::Value;

use super::error::ScimResult;
use super::names::unique_name_key;
use super::schema::{Container, ResourceKind};

mod ast;
mod eval;
mod index_hint;
#[cfg(test)]
mod limits_tests;
mod parser;
mod patch_path;
#[cfg(test)]
mod tests;

pub use ast::{CmpOp, Filter, Literal, Target};
pub use eval::sort_key_cmp;
pub use index_hint::IndexHint;
pub use parser::{MAX_DEPTH, MAX_FILTER_LEN, MAX_PATH_LEN, MAX_TERMS};
pub use patch_path::PatchPath;

impl Filter {
    /// Parses a filter for resources of `kind`.
    pub fn parse(kind: ResourceKind, input: &str) -> ScimResult<Filter> {
        parser::parse(kind, input, false)
    }

    /// For root `/.search`, which spans resource types: attributes `kind`
    /// does not have match nothing instead of failing the request.
    pub fn parse_lenient(kind: ResourceKind, input: &str) -> ScimResult<Filter> {
        parser::parse(kind, input, true)
    }

    /// Evaluates against a stored resource document.
    pub fn matches(&self, doc: &Value) -> bool {
        eval::eval(self, doc)
    }

    /// Evaluates against one element of a multi-valued attribute (PATCH paths).
    pub fn matches_element(&self, element: &Value) -> bool {
        eval::eval(self, element)
    }

    /// An index lookup that returns a superset of the matches, if one exists.
    pub fn index_hint(&self, kind: ResourceKind) -> Option<IndexHint> {
        match self {
            Filter::And(fs) => fs.iter().find_map(|f| f.index_hint(kind)),
            Filter::Compare { target: Target::Resource(r), op: CmpOp::Eq, value: Literal::Str(s) }
                if r.sub.is_none() && r.container == Container::Core =>
            {
                match r.attr.name {
                    "id" => Some(IndexHint::Id(s.clone())),
                    "externalId" => Some(IndexHint::ExternalId(s.clone())),
                    n if n == kind.unique_name_attr() => Some(IndexHint::UniqueName(unique_name_key(s))),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// For `type eq "work" and primary eq true`: the attribute values an element
    /// must have to match, so PATCH can create it when absent. `None` when the
    /// filter is not a conjunction of equalities.
    pub fn required_values(&self) -> Option<Vec<(&'static str, Value)>> {
        match self {
            Filter::And(fs) => {
                let mut v = Vec::new();
                for f in fs {
                    v.extend(f.required_values()?);
                }
                Some(v)
            }
            Filter::Compare { target: Target::Element(def), op: CmpOp::Eq, value } if *value != Literal::Null => {
                Some(vec![(def.name, value.to_json())])
            }
            _ => None,
        }
    }
}
