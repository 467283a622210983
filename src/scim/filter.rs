//! SCIM filters (RFC 7644 §3.4.2.2): parser, evaluator, the index hint the store
//! uses, and PATCH paths (§3.5.2), which share the grammar.
//!
//! Attribute names resolve against the schema while parsing, so an unknown
//! attribute is a 400 `invalidFilter`/`invalidPath` rather than a silent empty
//! result, and each comparison knows its attribute's type and `caseExact`.

use std::cmp::Ordering;

use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{ScimError, ScimResult};
use super::schema::{AttrDef, AttrType, Container, ResolvedAttr, ResourceKind, resolve_path};
use crate::store::IndexHint;

/// Longest filter we parse; Entra's are well under 200 characters.
pub const MAX_FILTER_LEN: usize = 4096;
/// Nesting bound (parentheses, `not`, value paths), so hostile input cannot
/// exhaust the stack.
const MAX_DEPTH: usize = 32;

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
    fn parse(word: &str) -> Option<Self> {
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
    pub fn to_json(&self) -> Value {
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
    fn leaf(&self) -> &'static AttrDef {
        match self {
            Target::Resource(r) => r.leaf(),
            Target::Element(d) => d,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
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

// ---------------------------------------------------------------- tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

fn tokenize(input: &str) -> ScimResult<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                toks.push(Tok::LParen);
            }
            ')' => {
                chars.next();
                toks.push(Tok::RParen);
            }
            '[' => {
                chars.next();
                toks.push(Tok::LBracket);
            }
            ']' => {
                chars.next();
                toks.push(Tok::RBracket);
            }
            '"' => {
                // A JSON string: find the closing quote, honouring escapes, and
                // let serde_json decode it.
                let start = i;
                chars.next();
                let mut end = None;
                let mut escaped = false;
                for (j, ch) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if ch == '\\' {
                        escaped = true;
                    } else if ch == '"' {
                        end = Some(j);
                        break;
                    }
                }
                let end = end.ok_or_else(|| {
                    ScimError::invalid_filter(format!("unterminated string starting at position {start}"))
                })?;
                let s: String = serde_json::from_str(&input[start..=end])
                    .map_err(|_| ScimError::invalid_filter(format!("invalid escape in string at position {start}")))?;
                toks.push(Tok::Str(s));
            }
            c if is_word_char(c) => {
                let start = i;
                let mut end = input.len();
                while let Some(&(j, ch)) = chars.peek() {
                    if is_word_char(ch) {
                        chars.next();
                    } else {
                        end = j;
                        break;
                    }
                }
                toks.push(Tok::Word(input[start..end].to_string()));
            }
            other => {
                return Err(ScimError::invalid_filter(format!("unexpected character '{other}' at position {i}")));
            }
        }
    }
    Ok(toks)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '$' | '+')
}

// ------------------------------------------------------------------- parser

/// The scope names are resolved in: the resource, or the sub-attributes of one
/// multi-valued attribute inside `[...]`.
#[derive(Clone, Copy)]
enum Scope {
    Resource(ResourceKind),
    Element(&'static AttrDef),
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
    /// Unknown attributes become `Filter::Never` instead of an error.
    lenient: bool,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn enter(&mut self) -> ScimResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ScimError::invalid_filter(format!("filter is nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn or(&mut self, scope: Scope) -> ScimResult<Filter> {
        let mut left = self.and(scope)?;
        while self.peek_keyword("or") {
            self.next();
            let right = self.and(scope)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, scope: Scope) -> ScimResult<Filter> {
        let mut left = self.unary(scope)?;
        while self.peek_keyword("and") {
            self.next();
            let right = self.unary(scope)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, scope: Scope) -> ScimResult<Filter> {
        self.enter()?;
        let f = if self.peek_keyword("not") && matches!(self.toks.get(self.pos + 1), Some(Tok::LParen)) {
            self.next();
            Filter::Not(Box::new(self.group(scope)?))
        } else if matches!(self.peek(), Some(Tok::LParen)) {
            self.group(scope)?
        } else {
            self.attr_expr(scope)?
        };
        self.depth -= 1;
        Ok(f)
    }

    fn group(&mut self, scope: Scope) -> ScimResult<Filter> {
        self.next(); // '('
        let f = self.or(scope)?;
        match self.next() {
            Some(Tok::RParen) => Ok(f),
            _ => Err(ScimError::invalid_filter("missing closing parenthesis")),
        }
    }

    fn attr_expr(&mut self, scope: Scope) -> ScimResult<Filter> {
        let path = match self.next() {
            Some(Tok::Word(w)) => w.as_str(),
            Some(t) => {
                return Err(ScimError::invalid_filter(format!("expected an attribute name, found {}", describe(t))));
            }
            None => {
                return Err(ScimError::invalid_filter("expected an attribute name, found the end of the filter"));
            }
        };
        if matches!(self.peek(), Some(Tok::LBracket)) {
            let Scope::Resource(kind) = scope else {
                return Err(ScimError::invalid_filter("value paths ('[...]') cannot be nested"));
            };
            self.next();
            let attr = resolve_multi(kind, path).map_err(ScimError::invalid_filter)?;
            let inner = self.or(Scope::Element(attr.attr))?;
            match self.next() {
                Some(Tok::RBracket) => {}
                _ => {
                    return Err(ScimError::invalid_filter(format!("missing ']' after the value filter of {path}")));
                }
            }
            let then = match self.peek() {
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    let sub_name = &w[1..];
                    self.next();
                    let sub = attr.attr.sub(sub_name).ok_or_else(|| {
                        ScimError::invalid_filter(format!("{} has no sub-attribute '{sub_name}'", attr.attr.name))
                    })?;
                    Some(Box::new(self.operator(Target::Element(sub), path)?))
                }
                _ => None,
            };
            return Ok(Filter::ValuePath { attr, inner: Box::new(inner), then });
        }
        let target = match scope {
            Scope::Resource(kind) => match resolve_path(kind, path) {
                Some(r) => Target::Resource(r),
                None if self.lenient => {
                    self.skip_operand();
                    return Ok(Filter::Never);
                }
                None => {
                    return Err(ScimError::invalid_filter(format!("unknown attribute '{path}' for {}", kind.name())));
                }
            },
            Scope::Element(parent) => {
                Target::Element(parent.sub(path).ok_or_else(|| {
                    ScimError::invalid_filter(format!("{} has no sub-attribute '{path}'", parent.name))
                })?)
            }
        };
        self.operator(target, path)
    }

    /// Skips `op value` or `pr` after an attribute that lenient parsing ignores.
    fn skip_operand(&mut self) {
        if let Some(Tok::Word(w)) = self.next()
            && !w.eq_ignore_ascii_case("pr")
        {
            self.next();
        }
    }

    fn operator(&mut self, target: Target, path: &str) -> ScimResult<Filter> {
        let op_word = match self.next() {
            Some(Tok::Word(w)) => w.as_str(),
            _ => {
                return Err(ScimError::invalid_filter(format!("expected an operator after '{path}'")));
            }
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present { target });
        }
        let op = CmpOp::parse(op_word).ok_or_else(|| {
            ScimError::invalid_filter(format!(
                "unknown operator '{op_word}' after '{path}' (expected eq, ne, co, sw, ew, gt, ge, lt, le or pr)"
            ))
        })?;
        let value = match self.next() {
            Some(Tok::Str(s)) => Literal::Str(s.clone()),
            Some(Tok::Word(w)) => parse_bare_literal(w).ok_or_else(|| {
                ScimError::invalid_filter(format!(
                    "the value '{w}' after '{path} {op_word}' must be quoted, e.g. {path} {op_word} \"{w}\""
                ))
            })?,
            _ => return Err(ScimError::invalid_filter(format!("expected a value after '{path} {op_word}'"))),
        };
        check_operand(target, op, &value, path)?;
        Ok(Filter::Compare { target, op, value })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Str(s) => format!("the string \"{s}\""),
        Tok::Word(w) => format!("'{w}'"),
    }
}

fn parse_bare_literal(w: &str) -> Option<Literal> {
    match w.to_ascii_lowercase().as_str() {
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        "null" => return Some(Literal::Null),
        _ => {}
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && let Ok(Value::Number(n)) = serde_json::from_str::<Value>(w)
    {
        return Some(Literal::Num(n));
    }
    None
}

fn resolve_multi(kind: ResourceKind, path: &str) -> Result<ResolvedAttr, String> {
    let attr = resolve_path(kind, path).ok_or_else(|| format!("unknown attribute '{path}' for {}", kind.name()))?;
    if attr.sub.is_some() || !attr.attr.multi_valued || !attr.attr.is_complex() {
        return Err(format!("'{path}' is not a multi-valued complex attribute, so it cannot take a '[...]' filter"));
    }
    Ok(attr)
}

/// Rejects comparisons that cannot mean anything for the attribute's type.
fn check_operand(target: Target, op: CmpOp, value: &Literal, path: &str) -> ScimResult<()> {
    let def = target.leaf();
    // A comparison on a multi-valued complex attribute compares its `value`.
    let def = if def.is_complex() {
        match (def.multi_valued, def.sub("value")) {
            (true, Some(v)) => v,
            _ => {
                return Err(ScimError::invalid_filter(format!(
                    "'{path}' is complex; compare one of its sub-attributes, e.g. {path}.value"
                )));
            }
        }
    } else {
        def
    };
    let ty = def.ty;
    let ok = match value {
        Literal::Null => matches!(op, CmpOp::Eq | CmpOp::Ne),
        Literal::Bool(_) => ty == AttrType::Boolean && matches!(op, CmpOp::Eq | CmpOp::Ne),
        Literal::Num(_) => {
            matches!(ty, AttrType::Integer | AttrType::Decimal) && !matches!(op, CmpOp::Co | CmpOp::Sw | CmpOp::Ew)
        }
        Literal::Str(_) => !matches!(ty, AttrType::Boolean | AttrType::Integer | AttrType::Decimal),
    };
    if ok {
        Ok(())
    } else {
        Err(ScimError::invalid_filter(format!(
            "'{path}' is of type {}; operator {:?} with {} is not defined for it",
            ty.as_str(),
            op,
            match value {
                Literal::Null => "null",
                Literal::Bool(_) => "a boolean",
                Literal::Num(_) => "a number",
                Literal::Str(_) => "a string",
            }
        )))
    }
}

impl Filter {
    /// Parses a filter for resources of `kind`.
    pub fn parse(kind: ResourceKind, input: &str) -> ScimResult<Filter> {
        Self::parse_with(kind, input, false)
    }

    /// For root `/.search`, which spans resource types: attributes `kind`
    /// does not have match nothing instead of failing the request.
    pub fn parse_lenient(kind: ResourceKind, input: &str) -> ScimResult<Filter> {
        Self::parse_with(kind, input, true)
    }

    fn parse_with(kind: ResourceKind, input: &str, lenient: bool) -> ScimResult<Filter> {
        if input.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_filter(format!("filter is longer than {MAX_FILTER_LEN} characters")));
        }
        let toks = tokenize(input)?;
        if toks.is_empty() {
            return Err(ScimError::invalid_filter("filter is empty"));
        }
        let mut p = Parser { toks: &toks, pos: 0, depth: 0, lenient };
        let f = p.or(Scope::Resource(kind))?;
        if let Some(t) = p.peek() {
            return Err(ScimError::invalid_filter(format!(
                "unexpected {} after a complete expression (combine expressions with 'and' or 'or')",
                describe(t)
            )));
        }
        Ok(f)
    }

    /// Evaluates against a stored resource document.
    pub fn matches(&self, doc: &Value) -> bool {
        eval(self, doc)
    }

    /// Evaluates against one element of a multi-valued attribute (PATCH paths).
    pub fn matches_element(&self, element: &Value) -> bool {
        eval(self, element)
    }

    /// An index lookup that returns a superset of the matches, if one exists.
    pub fn index_hint(&self, kind: ResourceKind) -> Option<IndexHint> {
        match self {
            Filter::And(a, b) => a.index_hint(kind).or_else(|| b.index_hint(kind)),
            Filter::Compare { target: Target::Resource(r), op: CmpOp::Eq, value: Literal::Str(s) }
                if r.sub.is_none() && r.container == Container::Core =>
            {
                match r.attr.name {
                    "id" => Some(IndexHint::Id(s.clone())),
                    "externalId" => Some(IndexHint::ExternalId(s.clone())),
                    n if n == kind.unique_name_attr() => Some(IndexHint::UniqueName(s.to_lowercase())),
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
            Filter::And(a, b) => {
                let mut v = a.required_values()?;
                v.extend(b.required_values()?);
                Some(v)
            }
            Filter::Compare { target: Target::Element(def), op: CmpOp::Eq, value } if *value != Literal::Null => {
                Some(vec![(def.name, value.to_json())])
            }
            _ => None,
        }
    }
}

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
        let toks = tokenize(input).map_err(|e| ScimError::invalid_path(e.detail))?;
        let bad = |why: String| ScimError::invalid_path(format!("invalid PATCH path '{input}': {why}"));
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
        let mut p = Parser { toks: &toks[2..close], pos: 0, depth: 0, lenient: false };
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

// ---------------------------------------------------------------- evaluator

fn eval(f: &Filter, ctx: &Value) -> bool {
    match f {
        Filter::And(a, b) => eval(a, ctx) && eval(b, ctx),
        Filter::Or(a, b) => eval(a, ctx) || eval(b, ctx),
        Filter::Not(a) => !eval(a, ctx),
        Filter::Never => false,
        Filter::Present { target } => values_of(*target, ctx).iter().any(|v| is_present(v)),
        Filter::Compare { target, op, value } => compare_target(*target, *op, value, ctx),
        Filter::ValuePath { attr, inner, then } => {
            let Some(Value::Array(items)) = container_of(attr.container, ctx).and_then(|o| o.get(attr.attr.name))
            else {
                return false;
            };
            items.iter().any(|el| eval(inner, el) && then.as_ref().is_none_or(|t| eval(t, el)))
        }
    }
}

fn compare_target(target: Target, op: CmpOp, lit: &Literal, ctx: &Value) -> bool {
    let leaf = target.leaf();
    let values = values_of(target, ctx);
    // Complex multi-valued attributes compare through their `value` sub-attribute.
    let (values, leaf): (Vec<&Value>, &AttrDef) = if leaf.is_complex() {
        match leaf.sub("value") {
            Some(v) => (values.iter().filter_map(|el| el.get(v.name)).collect(), v),
            None => return false,
        }
    } else {
        (values, leaf)
    };
    let present: Vec<&Value> = values.into_iter().filter(|v| is_present(v)).collect();
    match (op, lit) {
        (CmpOp::Eq, Literal::Null) => present.is_empty(),
        (CmpOp::Ne, Literal::Null) => !present.is_empty(),
        (CmpOp::Ne, _) => !present.iter().any(|v| compare_value(leaf, CmpOp::Eq, v, lit)),
        _ => present.iter().any(|v| compare_value(leaf, op, v, lit)),
    }
}

fn container_of(container: Container, ctx: &Value) -> Option<&serde_json::Map<String, Value>> {
    match container {
        Container::Core => ctx.as_object(),
        Container::Extension(urn) => ctx.get(urn).and_then(Value::as_object),
    }
}

/// Every value the target denotes in `ctx` (several for multi-valued attributes).
fn values_of(target: Target, ctx: &Value) -> Vec<&Value> {
    match target {
        Target::Element(def) => ctx.get(def.name).into_iter().collect(),
        Target::Resource(r) => {
            let Some(v) = container_of(r.container, ctx).and_then(|o| o.get(r.attr.name)) else {
                return Vec::new();
            };
            let items: Vec<&Value> = match v {
                Value::Array(a) if r.attr.multi_valued => a.iter().collect(),
                other => vec![other],
            };
            match r.sub {
                Some(sub) => items.into_iter().filter_map(|el| el.get(sub.name)).collect(),
                None => items,
            }
        }
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn compare_value(def: &AttrDef, op: CmpOp, actual: &Value, lit: &Literal) -> bool {
    match (actual, lit) {
        (Value::Bool(a), Literal::Bool(b)) => op == CmpOp::Eq && a == b,
        (Value::Number(a), Literal::Num(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => ordering_matches(op, a.partial_cmp(&b)),
            _ => false,
        },
        (Value::String(a), Literal::Str(b)) => {
            if def.ty == AttrType::DateTime
                && !matches!(op, CmpOp::Co | CmpOp::Sw | CmpOp::Ew)
                && let (Ok(x), Ok(y)) = (OffsetDateTime::parse(a, &Rfc3339), OffsetDateTime::parse(b, &Rfc3339))
            {
                return ordering_matches(op, Some(x.cmp(&y)));
            }
            if def.case_exact { compare_str(op, a, b) } else { compare_str(op, &a.to_lowercase(), &b.to_lowercase()) }
        }
        _ => false,
    }
}

fn compare_str(op: CmpOp, a: &str, b: &str) -> bool {
    match op {
        CmpOp::Co => a.contains(b),
        CmpOp::Sw => a.starts_with(b),
        CmpOp::Ew => a.ends_with(b),
        _ => ordering_matches(op, Some(a.cmp(b))),
    }
}

fn ordering_matches(op: CmpOp, ord: Option<Ordering>) -> bool {
    let Some(ord) = ord else { return false };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Co | CmpOp::Sw | CmpOp::Ew => false,
    }
}

/// A comparator for `sortBy` (RFC 7644 §3.4.2.3): multi-valued attributes sort
/// by their primary (or first) value; resources without the attribute go last
/// in ascending order.
pub fn sort_key_cmp(attr: ResolvedAttr, a: &Value, b: &Value) -> Ordering {
    let ka = sort_value(attr, a);
    let kb = sort_value(attr, b);
    match (ka, kb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let leaf =
                if attr.leaf().is_complex() { attr.leaf().sub("value").unwrap_or(attr.leaf()) } else { attr.leaf() };
            match (x, y) {
                (Value::String(x), Value::String(y)) if leaf.case_exact => x.cmp(y),
                (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
                (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
                (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
                _ => Ordering::Equal,
            }
        }
    }
}

fn sort_value(attr: ResolvedAttr, doc: &Value) -> Option<&Value> {
    let v = container_of(attr.container, doc)?.get(attr.attr.name)?;
    let v = match v {
        Value::Array(items) => {
            items.iter().find(|el| el.get("primary") == Some(&Value::Bool(true))).or_else(|| items.first())?
        }
        other => other,
    };
    let v = match (attr.sub, v) {
        (Some(sub), el) => el.get(sub.name)?,
        (None, Value::Object(o)) => o.get("value")?,
        (None, other) => other,
    };
    is_present(v).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Alice@Contoso.com",
            "displayName": "Alice Smith",
            "active": true,
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [
                {"type": "work", "value": "alice@contoso.com", "primary": true},
                {"type": "home", "value": "alice@home.example"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Engineering", "manager": {"value": "m-1"}
            },
            "meta": {"resourceType": "User", "created": "2026-01-02T03:04:05Z", "lastModified": "2026-06-01T00:00:00Z"}
        })
    }

    fn m(filter: &str) -> bool {
        Filter::parse(ResourceKind::User, filter).unwrap().matches(&user())
    }

    fn err(filter: &str) -> ScimError {
        Filter::parse(ResourceKind::User, filter).unwrap_err()
    }

    #[test]
    fn entra_probe_and_matching_filters() {
        assert!(!m(r#"userName eq "7d420df3-9995-4831-a406-ecf8166f5f6a""#));
        assert!(m(r#"userName eq "alice@contoso.com""#), "userName is caseExact=false");
        assert!(m(r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#));
        assert!(!m(r#"externalId eq "0A21F0F2-8D2A-4F8E-BF98-7363C4AED4EF""#), "externalId is caseExact");
        assert!(m(r#"USERNAME EQ "alice@contoso.com""#), "names and operators are case-insensitive");
        assert!(m(r#"emails[type eq "work"].value eq "alice@contoso.com""#));
        assert!(!m(r#"emails[type eq "home"].value eq "alice@contoso.com""#));
    }

    #[test]
    fn all_operators() {
        assert!(m(r#"displayName co "ice S""#));
        assert!(m(r#"displayName sw "alice""#));
        assert!(m(r#"displayName ew "SMITH""#));
        assert!(m(r#"displayName ne "Bob""#));
        assert!(!m(r#"displayName ne "alice smith""#));
        assert!(m(r#"displayName gt "Aa""#));
        assert!(m(r#"displayName ge "alice smith""#));
        assert!(m(r#"displayName lt "B""#));
        assert!(m(r#"displayName le "Alice Smith""#));
        assert!(!m("title pr"));
        assert!(m("name.givenName pr"));
        assert!(m("active eq true"));
        assert!(!m("active eq false"));
        assert!(m(r#"meta.created lt "2026-01-02T04:00:00+01:00" or meta.created gt "2026-01-02T03:00:00Z""#));
        assert!(m(r#"meta.lastModified gt "2026-05-31T23:59:59.5Z""#));
        assert!(m("title eq null"));
        assert!(m(r#"title ne "x""#), "ne matches a missing attribute");
    }

    #[test]
    fn logic_precedence_and_grouping() {
        assert!(m(r#"userName eq "x" or userName eq "alice@contoso.com" and active eq true"#));
        assert!(!m(r#"(userName eq "x" or userName eq "alice@contoso.com") and active eq false"#));
        assert!(m(r#"not (userName eq "x")"#));
        assert!(!m(r#"not(userName sw "a")"#));
        assert!(m(r#"emails[type eq "work" and value co "contoso"]"#));
        assert!(m(r#"emails[not (type eq "home")]"#));
        assert!(m(r#"emails co "home.example""#), "multi-valued compares its value");
        assert!(m(r#"emails.value ew ".example""#));
    }

    #[test]
    fn urn_qualified_and_extension_attributes() {
        assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "ALICE@contoso.com""#));
        assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "engineering""#));
        assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m-1""#));
        assert!(m(r#"department eq "Engineering""#));
    }

    #[test]
    fn escapes_in_strings() {
        let u = json!({"userName": "a\"b\\c"});
        let f = Filter::parse(ResourceKind::User, r#"userName eq "a\"b\\c""#).unwrap();
        assert!(f.matches(&u));
    }

    #[test]
    fn bad_filters_are_invalid_filter_errors() {
        for f in [
            "",
            "userName",
            "userName eq",
            r#"userName zz "x""#,
            "externalId eq jyoung",
            r#"nope eq "x""#,
            r#"(userName eq "x""#,
            r#"userName eq "x" userName eq "y""#,
            r#"userName eq "unterminated"#,
            r#"emails[type eq "work""#,
            r#"active gt true"#,
            r#"userName eq 5"#,
            r#"active eq "true""#,
            r#"name eq "x""#,
            r#"userName[value eq "x"]"#,
            "userName eq \"x\" § ",
            r#"id eq "1" and manager eq 2"#,
        ] {
            let e = err(f);
            assert_eq!(e.status, 400, "{f}");
            assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidFilter), "{f}: {e:?}");
        }
        let deep = format!("{}userName eq \"x\"{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(err(&deep).status, 400);
        let e = err("externalId eq jyoung");
        assert!(e.detail.contains("must be quoted"), "{}", e.detail);
    }

    #[test]
    fn lenient_parsing_for_root_search() {
        let f = Filter::parse_lenient(ResourceKind::Group, r#"userName eq "x" or displayName pr"#).unwrap();
        assert!(f.matches(&json!({"displayName": "G"})));
        let f = Filter::parse_lenient(ResourceKind::Group, "userName pr").unwrap();
        assert!(!f.matches(&json!({"displayName": "G"})));
        assert!(Filter::parse(ResourceKind::Group, "userName pr").is_err());
    }

    #[test]
    fn index_hints() {
        let h = |f: &str| Filter::parse(ResourceKind::User, f).unwrap().index_hint(ResourceKind::User);
        assert_eq!(h(r#"userName eq "Alice""#), Some(IndexHint::UniqueName("alice".into())));
        assert_eq!(h(r#"externalId eq "X""#), Some(IndexHint::ExternalId("X".into())));
        assert_eq!(h(r#"active eq true and id eq "1""#), Some(IndexHint::Id("1".into())));
        assert_eq!(h(r#"userName eq "a" or userName eq "b""#), None);
        assert_eq!(h(r#"userName sw "a""#), None);
        let g = Filter::parse(ResourceKind::Group, r#"displayName eq "Sales""#).unwrap();
        assert_eq!(g.index_hint(ResourceKind::Group), Some(IndexHint::UniqueName("sales".into())));
    }

    #[test]
    fn patch_paths() {
        let p = PatchPath::parse(ResourceKind::User, r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr.attr.name, "emails");
        assert_eq!(p.sub_after_filter.unwrap().name, "value");
        assert_eq!(p.filter.unwrap().required_values().unwrap(), vec![("type", json!("work"))]);
        let p = PatchPath::parse(ResourceKind::Group, r#"members[value eq "7f4bc1a3"]"#).unwrap();
        assert!(p.filter.unwrap().matches_element(&json!({"value": "7f4bc1a3"})));
        let p = PatchPath::parse(
            ResourceKind::User,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        )
        .unwrap();
        assert_eq!(p.attr.attr.name, "employeeNumber");
        let p = PatchPath::parse(ResourceKind::User, r#"addresses[type eq "work"].Formatted"#).unwrap();
        assert_eq!(p.sub_after_filter.unwrap().name, "formatted");
        let p = PatchPath::parse(ResourceKind::User, "emails[primary eq true].value").unwrap();
        assert_eq!(p.filter.unwrap().required_values().unwrap(), vec![("primary", json!(true))]);
        for bad in [
            "",
            "nope",
            "emails[",
            "emails[type eq \"x\"",
            "userName[type eq \"x\"]",
            "emails[type eq \"x\"].nope",
            "emails[type eq \"x\"] x",
        ] {
            let e = PatchPath::parse(ResourceKind::User, bad).unwrap_err();
            assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidPath), "{bad}");
        }
    }

    #[test]
    fn sorting() {
        let a = json!({"userName": "bob", "emails": [{"value": "z@x"}, {"value": "a@x", "primary": true}]});
        let b = json!({"userName": "Alice"});
        let un = resolve_path(ResourceKind::User, "userName").unwrap();
        assert_eq!(sort_key_cmp(un, &a, &b), Ordering::Greater);
        let em = resolve_path(ResourceKind::User, "emails").unwrap();
        assert_eq!(sort_key_cmp(em, &a, &b), Ordering::Less, "missing sorts last");
    }
}
