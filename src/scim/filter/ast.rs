//! The parsed form of a filter.

use serde_json::{Number, Value};

use crate::scim::schema::{AttrDef, ResolvedAttr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub(super) fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "co" => CmpOp::Co,
            "sw" => CmpOp::Sw,
            "ew" => CmpOp::Ew,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(Number),
    Bool(bool),
    Null,
}

impl Literal {
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Literal::Str(s) => Value::String(s.clone()),
            Literal::Num(n) => Value::Number(n.clone()),
            Literal::Bool(b) => Value::Bool(*b),
            Literal::Null => Value::Null,
        }
    }
}

/// What an attribute expression points at: an attribute of the resource, or
/// (inside `attr[...]`) a sub-attribute of one element of a multi-valued attribute.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Resource(ResolvedAttr),
    Element(&'static AttrDef),
}

impl Target {
    pub(super) fn leaf(&self) -> &'static AttrDef {
        match self {
            Target::Resource(r) => r.leaf(),
            Target::Element(d) => d,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Filter {
    /// Every operand must match. N-ary, so a chain of `and`s is one level
    /// deep, not one level per term: evaluation and drop recurse only as deep
    /// as the parentheses, which the parser bounds.
    And(Vec<Filter>),
    /// Some operand must match (n-ary, as `And`).
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        target: Target,
        op: CmpOp,
        value: Literal,
    },
    Present {
        target: Target,
    },
    /// `emails[type eq "work"]`, optionally followed by `.value eq "x"` (the form
    /// Entra documents for matching on a typed email).
    ValuePath {
        attr: ResolvedAttr,
        inner: Box<Filter>,
        then: Option<Box<Filter>>,
    },
    /// An attribute the resource type does not have, in a root `/.search`
    /// that spans types: it matches nothing of this type.
    Never,
}
