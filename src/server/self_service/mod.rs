//! The self-service key API on the SCIM listener (`POST /graphql` and
//! `POST /scope-management/graphql`): an organisation's admin creates, lists
//! and deletes the tenant's SCIM keys with a ZITADEL access token.
//!
//! A request goes: token from `Authorization` (`<token>` or `Bearer <token>`)
//! → body (size-limited JSON, one GraphQL request) → [`access`] (introspection
//! and the rules) → [`schema`] (async-graphql, bounded) → [`keys`] (limits,
//! store, key ring, audit log). HTTP statuses carry what a client must act on:
//! 401 `UNAUTHENTICATED`, 403 `FORBIDDEN`, 429 with Retry-After, 503
//! `ZITADEL_UNAVAILABLE`, 400 for a request that is not valid GraphQL.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::http::read_limited;

pub(crate) mod access;
pub(crate) mod keys;
pub(crate) mod schema;

use access::{Access, Denial};
use keys::KeyManager;
use schema::KeySchema;

/// Largest GraphQL request body: the API's requests are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

pub(crate) struct SelfService {
    pub access: Access,
    pub keys: Arc<KeyManager>,
    schema: KeySchema,
}

impl SelfService {
    pub(crate) fn new(access: Access, keys: Arc<KeyManager>) -> Self {
        let schema = schema::build(Arc::clone(&keys));
        SelfService { access, keys, schema }
    }

    /// `/status`'s `selfServiceKeys`.
    pub(crate) fn status(&self) -> Value {
        let (count, s) = self.keys.summary();
        let time = |ms: u64| super::ms_to_time(ms);
        json!({
            "count": count,
            "lastCreatedAt": s.last_created.as_ref().and_then(|(ms, _)| time(*ms)),
            "lastCreatedBy": s.last_created.map(|(_, by)| by),
            "lastDeletedAt": s.last_deleted.as_ref().and_then(|(ms, _)| time(*ms)),
            "lastDeletedBy": s.last_deleted.map(|(_, by)| by),
        })
    }
}

fn graphql_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A response with one error and no data.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = graphql_json(status, &json!({"errors": [{"message": message, "extensions": {"code": code}}]}));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The token of `Authorization: <token>` (as Unique's guide sends it) or
/// `Authorization: Bearer <token>`.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let t = match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => v,
    };
    Some(t).filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
}

/// The HTTP status a GraphQL response with errors stands for, when no root
/// field produced data: the first error's code decides.
fn status_of(resp: &Value) -> (StatusCode, Option<u64>) {
    let data_present = resp.get("data").and_then(Value::as_object).is_some_and(|d| d.values().any(|v| !v.is_null()));
    let Some(first) = resp.get("errors").and_then(Value::as_array).and_then(|e| e.first()) else {
        return (StatusCode::OK, None);
    };
    if data_present {
        return (StatusCode::OK, None);
    }
    if first.get("path").is_none() {
        // Parse and validation errors have no path: the request itself is wrong.
        return (StatusCode::BAD_REQUEST, None);
    }
    let ext = first.get("extensions");
    match ext.and_then(|e| e.get("code")).and_then(Value::as_str) {
        Some("RATE_LIMITED") => {
            (StatusCode::TOO_MANY_REQUESTS, ext.and_then(|e| e.get("retryAfterSeconds")).and_then(Value::as_u64))
        }
        Some("INTERNAL_SERVER_ERROR") => (StatusCode::INTERNAL_SERVER_ERROR, None),
        _ => (StatusCode::OK, None),
    }
}

/// `POST /graphql`, `POST /scope-management/graphql`.
pub(crate) async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let Some(ss) = st.self_service.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "the self-service key API is not enabled on this server (selfService in its config)",
        );
    };
    let metrics = &st.metrics;
    let (parts, body) = req.into_parts();
    let Some(token) = token_of(&parts.headers) else {
        metrics.self_service_request("unauthenticated");
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "no access token: send your ZITADEL access token as 'Authorization: <token>'",
        );
    };
    let request = match read_request(&parts.headers, body).await {
        Ok(r) => r,
        Err(resp) => {
            metrics.self_service_request("bad_request");
            return resp;
        }
    };
    let caller = match ss.access.authorize(token).await {
        Ok(c) => c,
        Err(d) => {
            let (status, code, outcome, message) = match d {
                Denial::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "unauthenticated", m),
                Denial::Forbidden(m) => (StatusCode::FORBIDDEN, "FORBIDDEN", "forbidden", m),
                Denial::Unavailable(m) => {
                    tracing::warn!(error = %m, "self-service request refused: ZITADEL could not be asked");
                    let m = "ZITADEL could not be asked whether the token is valid; retry later".to_string();
                    (StatusCode::SERVICE_UNAVAILABLE, "ZITADEL_UNAVAILABLE", "zitadel_unavailable", m)
                }
            };
            if outcome == "forbidden" {
                tracing::info!(reason = %message, "self-service request forbidden");
            }
            metrics.self_service_request(outcome);
            return error(status, code, &message);
        }
    };
    let resp = ss.schema.execute(request.data(caller)).await;
    let body = serde_json::to_value(&resp).unwrap_or(Value::Null);
    let (status, retry_after) = status_of(&body);
    metrics.self_service_request(match status {
        StatusCode::OK if resp.errors.is_empty() => "ok",
        StatusCode::OK => match resp.errors.first().and_then(|e| e.extensions.as_ref()).and_then(|x| x.get("code")) {
            Some(async_graphql::Value::String(c)) if c == "KEY_LIMIT" => "key_limit",
            _ => "error",
        },
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        _ => "error",
    });
    let mut http = graphql_json(status, &body);
    if let Some(secs) = retry_after {
        http.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    http
}

/// One GraphQL request from a JSON body (no batches, no uploads).
async fn read_request(headers: &HeaderMap, body: Body) -> Result<async_graphql::Request, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &m);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != "application/json" && essence != "application/graphql-response+json" {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "BAD_REQUEST",
                "send the request as Content-Type: application/json",
            ));
        }
    }
    let bytes = read_limited(body, MAX_BODY).await.map_err(|e| {
        let status = StatusCode::from_u16(e.0.status).unwrap_or(StatusCode::BAD_REQUEST);
        error(status, "BAD_REQUEST", &e.0.detail)
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("the body must be one JSON object {\"query\": ..., \"variables\": {...}}".into()));
    }
    serde_json::from_value(v).map_err(|e| bad(format!("the body is not a GraphQL request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_bare_or_as_bearer() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(token_of(&h("abc.def")), Some("abc.def"));
        assert_eq!(token_of(&h("Bearer abc")), Some("abc"));
        assert_eq!(token_of(&h("bearer  abc ")), Some("abc"));
        assert_eq!(token_of(&h("Bearer")), Some("Bearer"));
        assert_eq!(token_of(&h("Basic a b")), None);
        assert_eq!(token_of(&h("  ")), None);
        assert_eq!(token_of(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_follow_the_first_error_when_nothing_succeeded() {
        let ok = json!({"data": {"scimKeyCreate": {"id": "1"}}});
        assert_eq!(status_of(&ok), (StatusCode::OK, None));
        let parse = json!({"data": null, "errors": [{"message": "x", "locations": []}]});
        assert_eq!(status_of(&parse).0, StatusCode::BAD_REQUEST);
        let limited = json!({"data": null, "errors": [{"message": "x", "path": ["scimKeyCreate"],
            "extensions": {"code": "RATE_LIMITED", "retryAfterSeconds": 12}}]});
        assert_eq!(status_of(&limited), (StatusCode::TOO_MANY_REQUESTS, Some(12)));
        let partial = json!({"data": {"a": {"id": "1"}, "b": null}, "errors": [{"message": "x", "path": ["b"],
            "extensions": {"code": "RATE_LIMITED"}}]});
        assert_eq!(status_of(&partial).0, StatusCode::OK);
    }
}
