//! The ceiling of the HTTP stack on this machine, for `make bench`.
//!
//! A bare axum 0.8 + tokio server with the same runtime setup as
//! `scim-operator serve`, that does no SCIM work at all: every GET, PUT or
//! PATCH on any path answers 200 and every POST answers 201 with the same
//! fixed ~600-byte SCIM User document (`application/scim+json`); DELETE
//! answers 204. The request body is read (so uploads cost the same as for a
//! real server) and then ignored; there is no authentication.
//!
//! Usage: `bare_handler [ADDR]` (default `127.0.0.1:0`). Prints
//! `SCIM base URL: http://ADDR/scim/v2` on stdout once it listens, like the
//! real server, so the benchmark harness treats both the same way.

use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

const USER: &str = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"2819c223-7f76-453a-919d-413861904646","externalId":"6f0e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b","userName":"bjensen@example.com","name":{"givenName":"Barbara","familyName":"Jensen"},"displayName":"Barbara Jensen","active":true,"emails":[{"value":"bjensen@example.com","type":"work","primary":true}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Engineering"},"meta":{"resourceType":"User","created":"2024-01-23T04:56:22Z","lastModified":"2024-01-23T04:56:22Z","location":"http://127.0.0.1/scim/v2/Users/2819c223-7f76-453a-919d-413861904646","version":"W/\"1\""}}"#;

async fn any(method: Method, _body: Bytes) -> Response {
    let status = match method {
        Method::POST => StatusCode::CREATED,
        Method::DELETE => return StatusCode::NO_CONTENT.into_response(),
        _ => StatusCode::OK,
    };
    (status, [(header::CONTENT_TYPE, "application/scim+json")], USER).into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    println!("SCIM base URL: http://{local}/scim/v2");
    let app = Router::new().fallback(any);
    axum::serve(listener, app).await
}
