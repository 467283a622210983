//! Tokenizer and recursive-descent parser for the filter grammar.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ast::{CmpOp, Filter, Literal, Target};
use crate::scim::error::{ScimError, ScimResult};
use crate::scim::schema::{AttrDef, AttrType, ResolvedAttr, ResourceKind, resolve_path};

/// Longest filter we parse (bytes); Entra's are well under 200 characters.
pub const MAX_FILTER_LEN: usize = 4096;
/// Longest PATCH path we parse (bytes); Entra's are under 100 characters.
/// Twice the filter limit, so `members[value eq "<id>" or …]` with
/// `MAX_TERMS` UUIDs (about 5,100 bytes) fits and the term limit binds.
pub const MAX_PATH_LEN: usize = 8192;
/// Most comparisons (`attr op value`, `attr pr`, also inside `attr[...]`) in
/// one filter or PATCH path. Entra sends one or two.
pub const MAX_TERMS: usize = 100;
/// Nesting bound (parentheses, `not`, value paths). The parser and the
/// evaluator recurse once per level (`and`/`or` chains are n-ary, one level
/// whatever their length), so this bounds their stack use on any thread.
pub const MAX_DEPTH: usize = 32;

/// Parses a whole filter; `lenient` turns unknown attributes into `Filter::Never`.
pub(super) fn parse(kind: ResourceKind, input: &str, lenient: bool) -> ScimResult<Filter> {
    if input.len() > MAX_FILTER_LEN {
        return Err(ScimError::invalid_filter(format!(
            "the filter is {} bytes long; the limit is {MAX_FILTER_LEN}",
            input.len()
        )));
    }
    let toks = tokenize(input)?;
    if toks.is_empty() {
        return Err(ScimError::invalid_filter("filter is empty"));
    }
    let mut p = Parser::new(&toks, lenient);
    let f = p.or(Scope::Resource(kind))?;
    if let Some(t) = p.peek() {
        return Err(ScimError::invalid_filter(format!(
            "unexpected {} after a complete expression (combine expressions with 'and' or 'or')",
            describe(t)
        )));
    }
    Ok(f)
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

pub(super) fn tokenize(input: &str) -> ScimResult<Vec<Tok>> {
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

/// The scope names are resolved in: the resource, or the sub-attributes of one
/// multi-valued attribute inside `[...]`.
#[derive(Clone, Copy)]
pub(super) enum Scope {
    Resource(ResourceKind),
    Element(&'static AttrDef),
}

pub(super) struct Parser<'a> {
    pub(super) toks: &'a [Tok],
    pub(super) pos: usize,
    depth: usize,
    terms: usize,
    /// Unknown attributes become `Filter::Never` instead of an error.
    lenient: bool,
}

impl<'a> Parser<'a> {
    pub(super) fn new(toks: &'a [Tok], lenient: bool) -> Self {
        Parser { toks, pos: 0, depth: 0, terms: 0, lenient }
    }
    /// For the value filter of a PATCH path (`emails[...]`): the brackets are a
    /// level of nesting, as they are inside a filter.
    pub(super) fn in_brackets(toks: &'a [Tok]) -> Self {
        Parser { depth: 1, ..Self::new(toks, false) }
    }
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
            return Err(ScimError::invalid_filter(format!(
                "the expression is nested more than {MAX_DEPTH} levels deep (parentheses, 'not', '[...]'); the limit is {MAX_DEPTH}"
            )));
        }
        Ok(())
    }
    /// Counts one attribute expression against `MAX_TERMS`.
    fn count_term(&mut self) -> ScimResult<()> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(ScimError::invalid_filter(format!(
                "the expression has more than {MAX_TERMS} comparisons; the limit is {MAX_TERMS}"
            )));
        }
        Ok(())
    }

    pub(super) fn or(&mut self, scope: Scope) -> ScimResult<Filter> {
        let mut terms = vec![self.and(scope)?];
        while self.peek_keyword("or") {
            self.next();
            terms.push(self.and(scope)?);
        }
        Ok(if terms.len() == 1 { terms.swap_remove(0) } else { Filter::Or(terms) })
    }

    fn and(&mut self, scope: Scope) -> ScimResult<Filter> {
        let mut terms = vec![self.unary(scope)?];
        while self.peek_keyword("and") {
            self.next();
            terms.push(self.unary(scope)?);
        }
        Ok(if terms.len() == 1 { terms.swap_remove(0) } else { Filter::And(terms) })
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
                    self.count_term()?;
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
        self.count_term()?;
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

pub(super) fn resolve_multi(kind: ResourceKind, path: &str) -> Result<ResolvedAttr, String> {
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
        Literal::Str(s) if ty == AttrType::DateTime && !matches!(op, CmpOp::Co | CmpOp::Sw | CmpOp::Ew) => {
            if OffsetDateTime::parse(s, &Rfc3339).is_err() {
                return Err(ScimError::invalid_filter(format!(
                    "'{path}' is a dateTime; compare it with an RFC 3339 date-time such as \"2026-11-28T20:42:00Z\", not \"{s}\""
                )));
            }
            true
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
