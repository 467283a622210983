//! ZITADEL errors, typed by the Connect code and the i18n message key
//! (`Errors.User.AlreadyExists`), never by the localised text.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

/// Connect error codes (connectrpc.com/docs/protocol#error-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub(crate) fn parse(s: &str) -> Code {
        match s {
            "canceled" => Code::Canceled,
            "invalid_argument" => Code::InvalidArgument,
            "deadline_exceeded" => Code::DeadlineExceeded,
            "not_found" => Code::NotFound,
            "already_exists" => Code::AlreadyExists,
            "permission_denied" => Code::PermissionDenied,
            "resource_exhausted" => Code::ResourceExhausted,
            "failed_precondition" => Code::FailedPrecondition,
            "aborted" => Code::Aborted,
            "out_of_range" => Code::OutOfRange,
            "unimplemented" => Code::Unimplemented,
            "internal" => Code::Internal,
            "unavailable" => Code::Unavailable,
            "data_loss" => Code::DataLoss,
            "unauthenticated" => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// When the body carries no code: the HTTP status mapping of the Connect spec.
    pub(crate) fn from_http(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            412 => Code::FailedPrecondition,
            429 => Code::ResourceExhausted,
            502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ZitadelError {
    #[error("ZITADEL {method} failed: {code:?} {key}: {message}", key = key.as_deref().unwrap_or("-"))]
    Api {
        method: String,
        http_status: u16,
        code: Code,
        /// The i18n key, e.g. `Errors.User.AlreadyExists`.
        key: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("ZITADEL {method} could not be reached: {reason}")]
    Transport { method: String, reason: String },
    #[error("ZITADEL {method} answered with an unexpected body: {reason}")]
    Decode { method: String, reason: String },
    #[error("cannot obtain a ZITADEL access token: {0}")]
    Token(String),
    #[error("ZITADEL credentials are unusable: {0}")]
    Credentials(String),
}

impl ZitadelError {
    /// Worth retrying later: the request may well succeed unchanged.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ZitadelError::Api { code, http_status, .. } => {
                matches!(
                    code,
                    Code::Unavailable
                        | Code::ResourceExhausted
                        | Code::DeadlineExceeded
                        | Code::Aborted
                        | Code::Internal
                ) || *http_status >= 500
                    || *http_status == 429
            }
            ZitadelError::Transport { .. } | ZitadelError::Token(_) => true,
            ZitadelError::Decode { .. } | ZitadelError::Credentials(_) => false,
        }
    }

    pub(crate) fn code(&self) -> Option<Code> {
        match self {
            ZitadelError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            ZitadelError::Api { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn is(&self, code: Code, key: &str) -> bool {
        self.code() == Some(code) && self.key() == Some(key)
    }
}

/// Parses a Connect (or REST gateway) error body.
pub(crate) fn parse_error_body(
    method: &str,
    http_status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ZitadelError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = match v.get("code") {
        Some(Value::String(s)) => Code::parse(s),
        // REST gateway: numeric gRPC code.
        Some(Value::Number(n)) => grpc_code(n.as_u64().unwrap_or(2)),
        _ => Code::from_http(http_status),
    };
    let message = v.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
    let key = v.get("details").and_then(Value::as_array).and_then(|details| {
        details.iter().find_map(|d| {
            d.pointer("/debug/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| d.get("message").and_then(Value::as_str).map(str::to_string))
                .or_else(|| {
                    let raw = d.get("value").and_then(Value::as_str)?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
                        .ok()?;
                    proto_string_field(&bytes, 2)
                })
        })
    });
    let message = if message.is_empty() { String::from_utf8_lossy(body).chars().take(200).collect() } else { message };
    ZitadelError::Api { method: method.to_string(), http_status, code, key, message, retry_after }
}

fn grpc_code(n: u64) -> Code {
    match n {
        1 => Code::Canceled,
        3 => Code::InvalidArgument,
        4 => Code::DeadlineExceeded,
        5 => Code::NotFound,
        6 => Code::AlreadyExists,
        7 => Code::PermissionDenied,
        8 => Code::ResourceExhausted,
        9 => Code::FailedPrecondition,
        10 => Code::Aborted,
        11 => Code::OutOfRange,
        12 => Code::Unimplemented,
        13 => Code::Internal,
        14 => Code::Unavailable,
        15 => Code::DataLoss,
        16 => Code::Unauthenticated,
        _ => Code::Unknown,
    }
}

/// Reads string field `field` of a protobuf message (`zitadel.v1.ErrorDetail`
/// is `{id = 1, message = 2}`).
fn proto_string_field(mut b: &[u8], field: u64) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        match tag & 7 {
            0 => {
                varint(&mut b)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                if len > b.len() {
                    return None;
                }
                let (val, rest) = b.split_at(len);
                if tag >> 3 == field {
                    return String::from_utf8(val.to_vec()).ok();
                }
                b = rest;
            }
            1 => b = b.get(8..)?,
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_with_debug_detail() {
        let body = br#"{"code":"already_exists","message":"User already exists (COMMAND-x)","details":[{"type":"zitadel.v1.ErrorDetail","value":"","debug":{"id":"COMMAND-x","message":"Errors.User.AlreadyExists"}}]}"#;
        let e = parse_error_body("AddHumanUser", 409, body, None);
        assert!(e.is(Code::AlreadyExists, "Errors.User.AlreadyExists"));
        assert!(!e.is_transient());
    }

    #[test]
    fn connect_error_with_only_the_protobuf_value() {
        // ErrorDetail{id: "ID-1", message: "Errors.User.AlreadyExisting"}
        let mut proto = vec![0x0a, 4];
        proto.extend_from_slice(b"ID-1");
        proto.push(0x12);
        proto.push(27);
        proto.extend_from_slice(b"Errors.User.AlreadyExisting");
        let value = base64::engine::general_purpose::STANDARD.encode(&proto);
        let body = format!(
            r#"{{"code":"failed_precondition","message":"m","details":[{{"type":"zitadel.v1.ErrorDetail","value":"{value}"}}]}}"#
        );
        let e = parse_error_body("AddHumanUser", 400, body.as_bytes(), None);
        assert!(e.is(Code::FailedPrecondition, "Errors.User.AlreadyExisting"), "{e:?}");
    }

    #[test]
    fn rest_error_and_transient_classes() {
        let body = br#"{"code":6,"message":"exists (X)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"X","message":"Errors.User.AlreadyExists"}]}"#;
        assert!(parse_error_body("m", 409, body, None).is(Code::AlreadyExists, "Errors.User.AlreadyExists"));
        assert!(parse_error_body("m", 503, b"<html>bad gateway</html>", None).is_transient());
        assert!(parse_error_body("m", 429, b"{}", Some(Duration::from_secs(3))).is_transient());
        assert!(!parse_error_body("m", 400, br#"{"code":"invalid_argument"}"#, None).is_transient());
        assert!(ZitadelError::Transport { method: "m".into(), reason: "timeout".into() }.is_transient());
    }
}
