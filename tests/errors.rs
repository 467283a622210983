//! Every way a request can be wrong gets a SCIM error body with the right
//! status and scimType, never a 5xx.

use reqwest::Method;
use scim_test_support::{Server, patch_ops};
use serde_json::{Value, json};

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

fn assert_error(r: &scim_test_support::Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.content_type, "application/scim+json", "{}", r.text);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{}", r.text);
    assert_eq!(r.body["status"], Value::String(status.to_string()), "status is a string");
    assert!(r.body["detail"].as_str().is_some_and(|d| d.len() > 10), "an actionable detail: {}", r.text);
    match scim_type {
        Some(t) => assert_eq!(r.body["scimType"], t, "{}", r.text),
        None => assert!(r.body.get("scimType").is_none(), "{}", r.text),
    }
}

#[tokio::test]
async fn error_cases() {
    let server = Server::start(BIN);
    let c = server.client();
    let user = c.post("/Users", &json!({"userName": "alice@contoso.com"})).await;
    assert_eq!(user.status, 201);
    let id = user.body["id"].as_str().unwrap().to_string();

    // Malformed and mistyped bodies.
    let junk = c
        .send(c.request(Method::POST, "/Users").header("content-type", "application/scim+json").body("{not json"))
        .await;
    assert_error(&junk, 400, Some("invalidSyntax"));
    let empty = c.send(c.request(Method::POST, "/Users").header("content-type", "application/json")).await;
    assert_error(&empty, 400, Some("invalidSyntax"));
    assert_error(&c.post("/Users", &json!(["array"])).await, 400, Some("invalidSyntax"));
    assert_error(&c.post("/Users", &json!({"userName": 42})).await, 400, Some("invalidValue"));
    assert_error(&c.post("/Users", &json!({"userName": "x", "active": "perhaps"})).await, 400, Some("invalidValue"));
    assert_error(&c.post("/Users", &json!({"displayName": "no userName"})).await, 400, Some("invalidValue"));
    assert_error(&c.post("/Groups", &json!({"members": []})).await, 400, Some("invalidValue"));

    // Uniqueness, case-insensitive.
    assert_error(&c.post("/Users", &json!({"userName": "ALICE@contoso.com"})).await, 409, Some("uniqueness"));
    assert_eq!(c.post("/Groups", &json!({"displayName": "Sales"})).await.status, 201);
    assert_error(&c.post("/Groups", &json!({"displayName": "sales"})).await, 409, Some("uniqueness"));
    let other = c.post("/Users", &json!({"userName": "bob@contoso.com"})).await.body;
    let r = c
        .patch(
            &format!("/Users/{}", other["id"].as_str().unwrap()),
            &patch_ops(json!([{"op": "Replace", "path": "userName", "value": "Alice@Contoso.com"}])),
        )
        .await;
    assert_error(&r, 409, Some("uniqueness"));

    // Filters.
    assert_error(&c.get("/Users?filter=nonsense+eq+%22x%22").await, 400, Some("invalidFilter"));
    assert_error(&c.get("/Users?filter=userName+eq").await, 400, Some("invalidFilter"));
    assert_error(&c.get("/Users?filter=externalId+eq+jyoung").await, 400, Some("invalidFilter"));
    assert_error(&c.get("/Users?filter=%28userName+eq+%22x%22").await, 400, Some("invalidFilter"));
    assert_error(&c.get("/Users?count=abc").await, 400, Some("invalidValue"));
    assert_error(&c.get("/Users?sortBy=nope").await, 400, Some("invalidValue"));
    assert_error(&c.get("/Users?sortOrder=sideways").await, 400, Some("invalidValue"));

    // PATCH.
    let p = format!("/Users/{id}");
    assert_error(
        &c.patch(&p, &patch_ops(json!([{"op": "Replace", "path": "nonsense", "value": 1}]))).await,
        400,
        Some("invalidPath"),
    );
    assert_error(
        &c.patch(&p, &patch_ops(json!([{"op": "Replace", "path": "emails[type eq", "value": 1}]))).await,
        400,
        Some("invalidPath"),
    );
    assert_error(
        &c.patch(&p, &patch_ops(json!([{"op": "Merge", "path": "displayName", "value": "x"}]))).await,
        400,
        Some("invalidSyntax"),
    );
    assert_error(&c.patch(&p, &json!({"schemas": []})).await, 400, Some("invalidSyntax"));
    assert_error(&c.patch(&p, &patch_ops(json!([{"op": "Remove"}]))).await, 400, Some("noTarget"));
    assert_error(
        &c.patch(&p, &patch_ops(json!([{"op": "Replace", "path": "id", "value": "x"}]))).await,
        400,
        Some("mutability"),
    );
    assert_error(
        &c.patch(&p, &patch_ops(json!([{"op": "Remove", "path": "userName"}]))).await,
        400,
        Some("invalidValue"),
    );
    let g = c.get("/Groups?filter=displayName+eq+%22Sales%22").await.body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .patch(
            &format!("/Groups/{g}"),
            &patch_ops(json!([{"op": "Add", "path": "members", "value": [{"value": "no-such-user"}]}])),
        )
        .await;
    assert_error(&r, 400, Some("invalidValue"));
    // A failed PATCH changes nothing.
    assert_eq!(c.get(&p).await.body["meta"]["version"], "W/\"1\"");

    // Unknown ids.
    for m in [Method::GET, Method::DELETE] {
        assert_error(&c.send(c.request(m, "/Users/does-not-exist")).await, 404, None);
    }
    assert_error(&c.put("/Users/does-not-exist", &json!({"userName": "z"})).await, 404, None);
    assert_error(&c.patch("/Groups/does-not-exist", &patch_ops(json!([]))).await, 404, None);

    // Media type, size, method, endpoint.
    let r = c
        .send(c.request(Method::POST, "/Users").header("content-type", "text/plain").body("{\"userName\":\"t\"}"))
        .await;
    assert_error(&r, 415, None);
    let big = json!({"userName": "big", "displayName": "x".repeat(2 * 1024 * 1024)});
    assert_error(&c.post("/Users", &big).await, 413, None);
    assert_error(&c.send(c.request(Method::DELETE, "/Schemas")).await, 405, None);
    assert_error(&c.post("/ServiceProviderConfig", &json!({})).await, 405, None);
    assert_error(&c.send(c.request(Method::PATCH, "/Users")).await, 405, None);
    assert_error(&c.get("/Nope").await, 404, None);
    assert_error(&c.get("/ResourceTypes/Printer").await, 404, None);
    assert_error(&c.post("/Bulk", &json!({})).await, 501, None);

    // ETags: If-Match honoured, never required.
    let cur = c.get(&p).await;
    let etag = cur.headers.get("etag").unwrap().to_str().unwrap().to_string();
    let stale = c
        .send(
            c.request(Method::PATCH, &p)
                .header("content-type", "application/scim+json")
                .header("if-match", "W/\"999\"")
                .body(patch_ops(json!([{"op": "Replace", "path": "displayName", "value": "x"}])).to_string()),
        )
        .await;
    assert_error(&stale, 412, None);
    let fresh = c
        .send(
            c.request(Method::PATCH, &p)
                .header("content-type", "application/scim+json")
                .header("if-match", etag.clone())
                .body(patch_ops(json!([{"op": "Replace", "path": "displayName", "value": "x"}])).to_string()),
        )
        .await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    let not_modified =
        c.send(c.request(Method::GET, &p).header("if-none-match", fresh.headers.get("etag").unwrap().clone())).await;
    assert_eq!(not_modified.status, 304);
    assert_error(&c.send(c.request(Method::DELETE, &p).header("if-match", etag)).await, 412, None);
}

#[tokio::test]
async fn lists_paginate_sort_and_project() {
    let server = Server::start(BIN);
    let c = server.client();
    for i in 0..12 {
        let r = c.post("/Users", &json!({"userName": format!("user{i:02}@x.com"), "title": if i % 2 == 0 { "even" } else { "odd" }, "emails": [{"value": format!("u{i}@x.com"), "type": "work"}]})).await;
        assert_eq!(r.status, 201);
    }
    // The validator's paging: startIndex echoes back, count honoured.
    for page in 0..3 {
        let r = c.get(&format!("/Users?startIndex={}&count=5", page * 5 + 1)).await;
        assert_eq!(r.body["totalResults"], 12);
        assert_eq!(r.body["startIndex"], page * 5 + 1);
        assert_eq!(r.body["itemsPerPage"], if page < 2 { 5 } else { 2 });
    }
    let r = c.get("/Users?startIndex=0&count=-3").await;
    assert_eq!((r.body["startIndex"].clone(), r.body["itemsPerPage"].clone()), (json!(1), json!(0)));
    let r = c.get("/Users?sortBy=userName&sortOrder=descending&count=1").await;
    assert_eq!(r.body["Resources"][0]["userName"], "user11@x.com");
    let r = c.get("/Users?filter=title+eq+%22even%22+and+userName+sw+%22user1%22&attributes=userName").await;
    assert_eq!(r.body["totalResults"], 1);
    let u = &r.body["Resources"][0];
    assert_eq!(u["userName"], "user10@x.com");
    assert!(u.get("title").is_none() && u.get("emails").is_none() && u["id"].is_string());
    let r =
        c.get("/Users?filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22u3%40x.com%22&excludedAttributes=emails").await;
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("emails").is_none());
    // POST /.search, per resource type and at the root.
    let r = c.post("/Users/.search", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "title eq \"odd\"", "count": 2, "attributes": ["userName"]})).await;
    assert_eq!((r.status, r.body["totalResults"].clone(), r.body["itemsPerPage"].clone()), (200, json!(6), json!(2)));
    c.post("/Groups", &json!({"displayName": "G"})).await;
    let r =
        c.post("/.search", &json!({"filter": "meta.resourceType eq \"Group\" or userName eq \"user00@x.com\""})).await;
    assert_eq!(r.body["totalResults"], 2, "{}", r.text);
}

#[tokio::test]
async fn discovery_endpoints() {
    let server = Server::start(BIN);
    let c = server.client();
    let spc = c.get("/ServiceProviderConfig").await;
    assert_eq!(spc.status, 200);
    assert_eq!(spc.body["patch"]["supported"], true);
    assert_eq!(spc.body["filter"]["supported"], true);
    let rt = c.get("/ResourceTypes").await;
    assert_eq!(rt.body["totalResults"], 2);
    assert_eq!(c.get("/ResourceTypes/User").await.body["endpoint"], "/Users");
    let s = c.get("/Schemas").await;
    assert_eq!(s.body["totalResults"], 3);
    let g = c.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group").await;
    assert_eq!(g.body["name"], "Group");
}
