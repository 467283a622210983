//! Wire format of the fake: protojson input helpers and the error bodies of the
//! Connect protocol and the REST gateway (docs/zitadel-contract.md §1 "JSON conventions", §8.1).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// gRPC / Connect codes (docs/zitadel-contract.md §8.1 status mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FailedPrecondition,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    Internal,
    DeadlineExceeded,
    Unimplemented,
}

impl Code {
    /// The Connect JSON `code` string.
    pub fn connect(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unauthenticated => "unauthenticated",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Unimplemented => "unimplemented",
        }
    }

    /// Numeric gRPC code, used by the REST gateway body.
    pub fn grpc(self) -> i64 {
        match self {
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }

    /// HTTP status (docs/zitadel-contract.md §8.1: FailedPrecondition is 400, not 412).
    pub fn http(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => 400,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::Unauthenticated => 401,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 503,
            Code::Internal => 500,
            Code::DeadlineExceeded => 504,
            Code::Unimplemented => 501,
        }
    }

    /// The code a fault-injected HTTP status stands for.
    pub fn from_http(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            429 => Code::ResourceExhausted,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
    }
}

/// A ZITADEL error: code + `zitadel.v1.ErrorDetail{id, message}` where `message`
/// is the i18n key (e.g. `Errors.User.AlreadyExists`) and `text` the localised
/// message. IDs are the fake's own (prefixed `FAKE-`); clients must not match on them.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: Code,
    pub id: String,
    pub key: String,
    pub text: String,
    pub retry_after: Option<u64>,
}

pub type ApiResult<T = Value> = Result<T, ApiError>;

pub fn err(code: Code, id: &str, key: &str, text: &str) -> ApiError {
    ApiError { code, id: id.to_string(), key: key.to_string(), text: text.to_string(), retry_after: None }
}

pub fn invalid(field: &str) -> ApiError {
    err(Code::InvalidArgument, "FAKE-inval", "Errors.Invalid.Argument", &format!("invalid {field}"))
}

/// `zitadel.v1.ErrorDetail` as protobuf: field 1 `id`, field 2 `message`, both strings.
pub fn error_detail_proto(id: &str, message: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, s: &str) {
        if s.is_empty() {
            return;
        }
        out.push(tag);
        let mut n = s.len();
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    field(&mut out, 0x0a, id);
    field(&mut out, 0x12, message);
    out
}

impl ApiError {
    fn message(&self) -> String {
        format!("{} ({})", self.text, self.id)
    }

    /// Connect error body. connect-go writes detail values as unpadded standard
    /// base64 and adds the `debug` rendering.
    pub fn connect_body(&self) -> Value {
        let value = base64::engine::general_purpose::STANDARD_NO_PAD.encode(error_detail_proto(&self.id, &self.key));
        json!({
            "code": self.code.connect(),
            "message": self.message(),
            "details": [{
                "type": "zitadel.v1.ErrorDetail",
                "value": value,
                "debug": {"id": self.id, "message": self.key},
            }],
        })
    }

    /// grpc-gateway error body (docs/zitadel-contract.md §8.1).
    pub fn rest_body(&self) -> Value {
        json!({
            "code": self.code.grpc(),
            "message": self.message(),
            "details": [{
                "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                "id": self.id,
                "message": self.key,
            }],
        })
    }

    pub fn into_response(self, rest: bool) -> Response {
        let body = if rest { self.rest_body() } else { self.connect_body() };
        let mut resp = json_response(self.code.http(), &body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

// ---------------------------------------------------------------------------
// Input: protojson accepts lowerCamelCase and the original snake_case names,
// 64-bit ints as strings or numbers, enums as names or numbers.

fn snake(camel: &str) -> String {
    let mut s = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// Field `name` (given in camelCase) of a message, or its snake_case spelling.
/// JSON `null` counts as absent, as in protojson.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(name).or_else(|| o.get(&snake(name))).filter(|x| !x.is_null())
}

pub fn has(v: &Value, name: &str) -> bool {
    field(v, name).is_some()
}

pub fn string(v: &Value, name: &str) -> ApiResult<String> {
    match field(v, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(name)),
    }
}

pub fn opt_string(v: &Value, name: &str) -> ApiResult<Option<String>> {
    match field(v, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(name)),
    }
}

pub fn boolean(v: &Value, name: &str) -> ApiResult<bool> {
    match field(v, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(name)),
    }
}

pub fn int(v: &Value, name: &str) -> ApiResult<u64> {
    match field(v, name) {
        None => Ok(0),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| invalid(name)),
        Some(Value::String(s)) => s.parse().map_err(|_| invalid(name)),
        Some(_) => Err(invalid(name)),
    }
}

pub fn strings(v: &Value, name: &str) -> ApiResult<Vec<String>> {
    match field(v, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| invalid(name))).collect()
        }
        Some(_) => Err(invalid(name)),
    }
}

pub fn array<'a>(v: &'a Value, name: &str) -> ApiResult<&'a [Value]> {
    match field(v, name) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(name)),
    }
}

/// An enum field as its name; numbers are mapped through `names` (index = number).
pub fn enum_name(v: &Value, name: &str, names: &[&str]) -> ApiResult<String> {
    match field(v, name) {
        None => Ok(names.first().copied().unwrap_or_default().to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|i| names.get(i as usize)).map(|s| s.to_string()).ok_or_else(|| invalid(name))
        }
        Some(_) => Err(invalid(name)),
    }
}

fn lenient_b64() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// protojson `bytes`: standard or URL-safe base64, padded or not.
pub fn decode_bytes(s: &str, name: &str) -> ApiResult<Vec<u8>> {
    let std: String = s
        .chars()
        .map(|c| {
            if c == '-' {
                '+'
            } else if c == '_' {
                '/'
            } else {
                c
            }
        })
        .collect();
    lenient_b64().decode(std.as_bytes()).map_err(|_| {
        err(Code::InvalidArgument, "FAKE-b64", "Errors.Invalid.Argument", &format!("{name}: illegal base64 data"))
    })
}

pub fn bytes(v: &Value, name: &str) -> ApiResult<Vec<u8>> {
    match field(v, name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => decode_bytes(s, name),
        Some(_) => Err(invalid(name)),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn timestamp(v: &Value, name: &str) -> ApiResult<Option<OffsetDateTime>> {
    match field(v, name) {
        None => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339).map(Some).map_err(|_| invalid(name)),
        Some(_) => Err(invalid(name)),
    }
}

// ---------------------------------------------------------------------------
// Output: zero/default values are omitted (docs/zitadel-contract.md §1: no EmitUnpopulated).

pub fn ts(t: OffsetDateTime) -> Value {
    Value::String(t.format(&Rfc3339).unwrap_or_default())
}

/// A 64-bit integer as protojson writes it: a string, omitted when 0.
pub fn i64s(n: u64) -> Value {
    if n == 0 { Value::Null } else { Value::String(n.to_string()) }
}

/// Removes what protojson would not emit: nulls, `""`, `false`, `0` and empty lists.
/// Empty objects stay (a set message field is emitted even when empty).
pub fn prune(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, x) in o {
                let x = prune(x);
                let drop = match &x {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Bool(b) => !b,
                    Value::Number(n) => n.as_f64() == Some(0.0),
                    Value::Array(a) => a.is_empty(),
                    Value::Object(_) => false,
                };
                if !drop {
                    out.insert(k, x);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        x => x,
    }
}

/// `TEXT_QUERY_METHOD_*` / `TEXT_FILTER_METHOD_*` (both have the same suffixes and numbers).
pub const TEXT_METHODS: [&str; 8] = [
    "EQUALS",
    "EQUALS_IGNORE_CASE",
    "STARTS_WITH",
    "STARTS_WITH_IGNORE_CASE",
    "CONTAINS",
    "CONTAINS_IGNORE_CASE",
    "ENDS_WITH",
    "ENDS_WITH_IGNORE_CASE",
];

pub fn text_method(q: &Value) -> ApiResult<String> {
    let m = enum_name(q, "method", &TEXT_METHODS)?;
    let m = m.strip_prefix("TEXT_QUERY_METHOD_").or_else(|| m.strip_prefix("TEXT_FILTER_METHOD_")).unwrap_or(&m);
    if TEXT_METHODS.contains(&m) { Ok(m.to_string()) } else { Err(invalid("method")) }
}

pub fn text_match(method: &str, value: &str, wanted: &str) -> bool {
    fn cmp(op: &str, v: &str, w: &str) -> bool {
        match op {
            "EQUALS" => v == w,
            "STARTS_WITH" => v.starts_with(w),
            "CONTAINS" => v.contains(w),
            "ENDS_WITH" => v.ends_with(w),
            _ => false,
        }
    }
    match method.strip_suffix("_IGNORE_CASE") {
        Some(op) => cmp(op, &value.to_lowercase(), &wanted.to_lowercase()),
        None => cmp(method, value, wanted),
    }
}

/// Offset/limit/asc of `object.v2.ListQuery` (`query`) or `filter.v2.PaginationRequest`
/// (`pagination`). Default limit 100, maximum 1000 (docs/zitadel-contract.md §8.4).
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    pub asc: bool,
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

pub fn page(req: &Value, name: &str) -> ApiResult<Page> {
    let q = field(req, name).cloned().unwrap_or(Value::Null);
    let limit = int(&q, "limit")? as usize;
    if limit > MAX_LIMIT {
        return Err(err(
            Code::InvalidArgument,
            "FAKE-limit",
            "Errors.Query.LimitExceeded",
            &format!("limit {limit} exceeds the maximum of {MAX_LIMIT}"),
        ));
    }
    Ok(Page {
        offset: int(&q, "offset")? as usize,
        limit: if limit == 0 { DEFAULT_LIMIT } else { limit },
        asc: boolean(&q, "asc")?,
    })
}

impl Page {
    pub fn apply<T>(&self, items: Vec<T>) -> Vec<T> {
        items.into_iter().skip(self.offset).take(self.limit).collect()
    }
}
