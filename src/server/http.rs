//! Request and response plumbing shared by the SCIM handlers: SCIM JSON
//! responses, error bodies, body reading with limits and media types, query
//! strings decoded the way Entra encodes them.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use crate::scim::error::ScimError;

pub(crate) const SCIM_CONTENT_TYPE: &str = "application/scim+json";

pub(crate) fn scim_json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    resp
}

/// A SCIM error rendered as an HTTP response.
pub(crate) struct ApiError(pub ScimError);

impl From<ScimError> for ApiError {
    fn from(e: ScimError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = scim_json(status, &self.0.body());
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"scim\""));
        }
        resp
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// Reads a JSON request body. JSON and SCIM JSON are accepted (Entra sends
/// `application/scim+json; charset=utf-8`, older clients `application/json`);
/// a body without a Content-Type is read as JSON too.
pub(crate) async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Value> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != "application/scim+json" && essence != "application/json" {
            return Err(ScimError::new(
                415,
                None,
                format!("Content-Type '{ct}' is not supported; send application/scim+json or application/json"),
            )
            .into());
        }
    }
    let bytes = read_limited(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty; a JSON object is expected").into());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")).into())
}

/// Beyond this we stop reading an oversized body and let the connection drop.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads at most `limit` bytes. An oversized body is drained (up to
/// `DRAIN_LIMIT`) rather than cut off, so the client reads our 413 instead of a
/// connection reset.
pub(crate) async fn read_limited(body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large =
        || ScimError::new(413, None, format!("the request body is larger than the {limit} bytes this server accepts"));
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ScimError::invalid_syntax("the request body could not be read"))?;
        total = total.saturating_add(chunk.len());
        if total > DRAIN_LIMIT {
            return Err(too_large().into());
        }
        if total <= limit {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > limit {
        return Err(too_large().into());
    }
    Ok(Bytes::from(buf))
}

/// Query parameters, form-decoded (`+` is a space, as in Entra's probe).
/// Names are matched case-insensitively.
#[derive(Debug, Default)]
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        QueryParams(raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default())
    }
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `If-Match` (RFC 7232 §3.1): `*` or a list of entity tags; weak comparison,
/// as our tags are weak.
pub(crate) fn if_match(headers: &HeaderMap) -> Option<Vec<String>> {
    etag_list(headers, header::IF_MATCH)
}

/// The entity tags of a conditional header (`If-Match`, `If-None-Match`),
/// without their weak prefix.
pub(crate) fn etag_list(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(',').map(|t| t.trim().trim_start_matches("W/").to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_form_decoded() {
        let q = QueryParams::parse(Some("filter=userName+eq+%22alice%40contoso.com%22&aadOptscim062020&COUNT=5"));
        assert_eq!(q.get("filter"), Some(r#"userName eq "alice@contoso.com""#));
        assert_eq!(q.get("count"), Some("5"));
    }
}
