//! Label and field selectors, as the apiserver parses them for list and watch.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq)]
struct Req {
    key: String,
    op: Op,
}

/// A parsed `labelSelector`; all requirements must hold (comma = AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// A parsed `fieldSelector`: `path=value`, `path==value` or `path!=value`, comma = AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Splits on commas that are not inside `(...)`, so `a in (x,y),b` gives two terms.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && k.split('/').count() <= 2
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected '(...)' in set requirement, got {rest:?}"))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if vals.iter().any(|v| !valid_value(v)) {
        return Err(format!("invalid value in set {rest:?}"));
    }
    Ok(vals)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let req = if let Some(key) = term.strip_prefix('!') {
                Req { key: key.trim().to_string(), op: Op::NotExists }
            } else if let Some((k, v)) = term.split_once("!=") {
                Req { key: k.trim().to_string(), op: Op::NotEq(v.trim().to_string()) }
            } else if let Some((k, v)) = term.split_once("==") {
                Req { key: k.trim().to_string(), op: Op::Eq(v.trim().to_string()) }
            } else if let Some((k, v)) = term.split_once('=') {
                Req { key: k.trim().to_string(), op: Op::Eq(v.trim().to_string()) }
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Req { key: k.trim().to_string(), op: Op::NotIn(parse_set(rest)?) }
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Req { key: k.trim().to_string(), op: Op::In(parse_set(rest)?) }
            } else {
                Req { key: term.to_string(), op: Op::Exists }
            };
            if !valid_key(&req.key) {
                return Err(format!("invalid label key {:?}", req.key));
            }
            if let Op::Eq(v) | Op::NotEq(v) = &req.op
                && !valid_value(v)
            {
                return Err(format!("invalid label value {v:?}"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match &r.op {
            Op::Eq(v) => get(&r.key) == Some(v.as_str()),
            Op::NotEq(v) => get(&r.key) != Some(v.as_str()),
            Op::In(set) => get(&r.key).is_some_and(|x| set.iter().any(|s| s == x)),
            Op::NotIn(set) => get(&r.key).is_none_or(|x| !set.iter().any(|s| s == x)),
            Op::Exists => get(&r.key).is_some(),
            Op::NotExists => get(&r.key).is_none(),
        })
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let k = k.trim();
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(format!("invalid field path {k:?}"));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// The name an equality term pins, so a watch or list can skip the scan.
    pub fn name(&self) -> Option<&str> {
        self.0.iter().find(|(k, eq, _)| *eq && k == "metadata.name").map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = match cur.get(seg) {
                    Some(v) => v,
                    None => return want.is_empty() == *eq,
                };
            }
            // Field selectors compare the string form; absent and "" are the same, as for typed fields.
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}
