//! Evaluating a parsed filter against a document, and `sortBy` ordering.

use std::cmp::Ordering;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ast::{CmpOp, Filter, Literal, Target};
use crate::scim::schema::{AttrDef, AttrType, Container, ResolvedAttr};

pub(super) fn eval(f: &Filter, ctx: &Value) -> bool {
    match f {
        Filter::And(fs) => fs.iter().all(|f| eval(f, ctx)),
        Filter::Or(fs) => fs.iter().any(|f| eval(f, ctx)),
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
