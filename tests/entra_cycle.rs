//! A full Entra ID provisioning cycle against the real binary, with the
//! requests Entra sends (docs/entra-scim.md §1–§3).

use reqwest::Method;
use scim_test_support::{Server, patch_ops};
use serde_json::{Value, json};

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn entra_user(upn: &str, object_id: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": object_id,
        "userName": upn,
        "active": "True",
        "displayName": format!("{given} {family}"),
        "emails": [{"primary": true, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": format!("{given} {family}"), "familyName": family, "givenName": given},
        "phoneNumbers": [{"type": "mobile", "value": "+1 (555) 010-0000"}],
        ENTERPRISE: {"employeeNumber": "E1001", "department": "Engineering"},
        "roles": []
    })
}

#[tokio::test]
async fn entra_provisioning_cycle() {
    let server = Server::start(BIN);
    let c = server.client();

    // Test Connection: form-encoded filter, no Accept, no Content-Type, no
    // User-Agent, with the feature flag as a stray query parameter.
    let probe = c
        .send(c.request(
            Method::GET,
            "/Users?aadOptscim062020&filter=userName+eq+%227d420df3-9995-4831-a406-ecf8166f5f6a%22",
        ))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    assert_eq!(probe.content_type, "application/scim+json");
    assert_eq!(probe.body["totalResults"], 0);
    assert_eq!(probe.body["Resources"], json!([]));
    assert_eq!(probe.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:ListResponse");
    let gprobe = c
        .get("/Groups?excludedAttributes=members&filter=displayName+eq+%22b7d3f6a1-1111-4e0e-9d55-000000000000%22")
        .await;
    assert_eq!((gprobe.status, gprobe.body["totalResults"].clone()), (200, json!(0)));

    // Match by userName, then create.
    let m = c.get("/Users?filter=userName+eq+%22alice%40contoso.com%22").await;
    assert_eq!(m.body["totalResults"], 0);
    let created = c
        .post("/Users", &entra_user("alice@contoso.com", "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", "Alice", "Smith"))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.content_type, "application/scim+json");
    let alice = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(created.body["active"], json!(true), "string booleans come back as JSON booleans");
    assert!(created.headers.get("location").unwrap().to_str().unwrap().ends_with(&format!("/Users/{alice}")));
    assert_eq!(created.headers.get("etag").unwrap(), "W/\"1\"");
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert_eq!(created.body["phoneNumbers"][0]["value"], "+1 (555) 010-0000", "stored exactly as sent");

    let bob =
        c.post("/Users", &entra_user("bob@contoso.com", "5b1c1e2a-0000-4000-8000-00000000000b", "Bob", "Jones")).await;
    assert_eq!(bob.status, 201);
    let bob = bob.body["id"].as_str().unwrap().to_string();

    // Matching by userName (case-insensitive) and by externalId (objectId).
    let m = c.get("/Users?filter=userName+eq+%22ALICE%40Contoso.com%22").await;
    assert_eq!(m.body["totalResults"], 1);
    assert_eq!(m.body["Resources"][0]["id"], alice.as_str());
    let m = c.get("/Users?filter=externalId+eq+%220a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef%22").await;
    assert_eq!(m.body["totalResults"], 1);

    // Manager written after the user exists, as a bare id (default dialect).
    let r = c
        .patch(
            &format!("/Users/{alice}"),
            &patch_ops(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": bob}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = c.get(&format!("/Users/{alice}")).await;
    assert_eq!(got.body[ENTERPRISE]["manager"], json!({"value": bob}), "manager is returned as an object");

    // Default dialect: one capitalised op per attribute.
    let r = c
        .patch(
            &format!("/Users/{alice}"),
            &patch_ops(json!([
                {"op": "Replace", "path": "displayName", "value": "Alice S."},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "alice.smith@contoso.com"},
                {"op": "Replace", "path": "name.givenName", "value": "Alicia"},
                {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555 0101"},
                {"op": "Add", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Microsoft Way"},
                {"op": "Replace", "path": format!("{ENTERPRISE}:department"), "value": "Research"}
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = c.get(&format!("/Users/{alice}")).await.body;
    assert_eq!(got["displayName"], "Alice S.");
    assert_eq!(got["emails"], json!([{"primary": true, "type": "work", "value": "alice.smith@contoso.com"}]));
    assert_eq!(got["name"]["givenName"], "Alicia");
    assert_eq!(got["name"]["familyName"], "Smith");
    assert_eq!(got["phoneNumbers"][1], json!({"type": "work", "value": "+1 555 0101"}));
    assert_eq!(got["addresses"], json!([{"type": "work", "streetAddress": "1 Microsoft Way"}]));
    assert_eq!(got[ENTERPRISE]["department"], "Research");
    assert_eq!(got["meta"]["version"], "W/\"3\"");

    // aadOptscim062020 dialect: lowercase ops, one path-less replace whose keys are paths.
    let r = c
        .patch(
            &format!("/Users/{alice}"),
            &patch_ops(json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "alice@contoso.com"},
                {"op": "replace", "value": {
                    "displayName": "Alice Smith",
                    "name.givenName": "Alice",
                    format!("{ENTERPRISE}:employeeNumber"): "E2002"}}
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = c.get(&format!("/Users/{alice}")).await.body;
    assert_eq!(got["displayName"], "Alice Smith");
    assert_eq!(got["name"]["givenName"], "Alice");
    assert!(got.get("name.givenName").is_none());
    assert_eq!(got[ENTERPRISE]["employeeNumber"], "E2002");
    assert_eq!(got["emails"][0]["value"], "alice@contoso.com");

    // The same PATCH again changes nothing: no new version, so no drift.
    let before = got["meta"]["version"].clone();
    let again = c
        .patch(
            &format!("/Users/{alice}"),
            &patch_ops(json!([{"op": "replace", "value": {"displayName": "Alice Smith"}}])),
        )
        .await;
    assert_eq!(again.body["meta"]["version"], before);

    // Validator's empty Operations.
    let r = c.patch(&format!("/Users/{alice}"), &patch_ops(json!([]))).await;
    assert_eq!(r.status, 200);

    // Disable (default dialect sends a string), and the user is still there.
    let r = c
        .patch(&format!("/Users/{bob}"), &patch_ops(json!([{"op": "Replace", "path": "active", "value": "False"}])))
        .await;
    assert_eq!(r.body["active"], json!(false));
    assert_eq!(c.get(&format!("/Users/{bob}")).await.body["active"], json!(false));
    let m = c.get("/Users?filter=userName+eq+%22bob%40contoso.com%22").await;
    assert_eq!(m.body["totalResults"], 1, "disabled users are still returned by filters");
    let r = c
        .patch(&format!("/Users/{bob}"), &patch_ops(json!([{"op": "replace", "path": "active", "value": true}])))
        .await;
    assert_eq!(r.body["active"], json!(true));

    // Groups: created without members, with Microsoft's extra schema URN.
    let g = c
        .post(
            "/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                    "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "displayName": "Sales",
                    "meta": {"resourceType": "Group"}}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.text);
    let gid = g.body["id"].as_str().unwrap().to_string();
    let m = c.get("/Groups?excludedAttributes=members&filter=displayName+eq+%22sales%22").await;
    assert_eq!(m.body["totalResults"], 1, "group displayName matches case-insensitively");

    // Members added in a batch with literal null $refs.
    let r = c
        .patch(
            &format!("/Groups/{gid}"),
            &patch_ops(json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": alice}, {"$ref": null, "value": bob}]}])),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
    let without = c.get(&format!("/Groups/{gid}?excludedAttributes=members")).await.body;
    assert!(without.get("members").is_none());
    assert_eq!(without["displayName"], "Sales");
    let with = c.get(&format!("/Groups/{gid}")).await.body;
    assert_eq!(with["members"].as_array().unwrap().len(), 2);
    let alice_doc = c.get(&format!("/Users/{alice}")).await.body;
    assert_eq!(alice_doc["groups"][0]["value"], gid.as_str(), "users show their groups");
    assert_eq!(alice_doc["groups"][0]["display"], "Sales");

    // Remove one member, without the flag: only the listed member goes.
    c.patch(
        &format!("/Groups/{gid}"),
        &patch_ops(json!([{"op": "Remove", "path": "members", "value": [{"value": bob}]}])),
    )
    .await;
    let with = c.get(&format!("/Groups/{gid}")).await.body;
    assert_eq!(with["members"], json!([{"value": alice}]));
    // With the flag.
    c.patch(
        &format!("/Groups/{gid}"),
        &patch_ops(json!([{"op": "remove", "path": format!("members[value eq \"{alice}\"]")}])),
    )
    .await;
    let with = c.get(&format!("/Groups/{gid}")).await.body;
    assert!(with.get("members").is_none_or(|m| m.as_array().is_some_and(|a| a.is_empty())));

    // Rename, and Entra's Add externalId on an existing group.
    let r = c
        .patch(
            &format!("/Groups/{gid}"),
            &patch_ops(json!([{"op": "Replace", "path": "displayName", "value": "Sales EMEA"}, {"op": "Add", "path": "externalId", "value": "new-ext"}])),
        )
        .await;
    assert!(r.status == 200 || r.status == 204);
    let m = c.get("/Groups?filter=displayName+eq+%22Sales+EMEA%22").await;
    assert_eq!(m.body["totalResults"], 1);
    assert_eq!(m.body["Resources"][0]["externalId"], "new-ext");

    // Manager removal.
    c.patch(&format!("/Users/{alice}"), &patch_ops(json!([{"op": "Remove", "path": format!("{ENTERPRISE}:manager")}])))
        .await;
    assert!(c.get(&format!("/Users/{alice}")).await.body[ENTERPRISE].get("manager").is_none());

    // Deletes.
    c.patch(
        &format!("/Groups/{gid}"),
        &patch_ops(json!([{"op": "Add", "path": "members", "value": [{"value": bob}]}])),
    )
    .await;
    assert_eq!(c.delete(&format!("/Users/{bob}")).await.status, 204);
    assert_eq!(c.get(&format!("/Users/{bob}")).await.status, 404);
    assert_eq!(c.get("/Users?filter=userName+eq+%22bob%40contoso.com%22").await.body["totalResults"], 0);
    let with = c.get(&format!("/Groups/{gid}")).await.body;
    assert!(with.get("members").is_none(), "a deleted user leaves its groups");
    assert_eq!(c.delete(&format!("/Groups/{gid}")).await.status, 204);
    assert_eq!(c.get(&format!("/Groups/{gid}")).await.status, 404);
    let nf = c.get(&format!("/Groups/{gid}")).await;
    assert_eq!(nf.body["status"], "404");

    let (status, text) = server.admin_get("/status").await;
    assert_eq!(status, 200);
    let s: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["users"], 1);
    assert_eq!(s["groups"], 0);
    assert!(s["requests"].as_u64().unwrap() > 30);
    assert!(s["lastRequestTime"].is_string());
}

#[tokio::test]
async fn put_replaces_and_keeps_identity() {
    let server = Server::start(BIN);
    let c = server.client();
    let u = c.post("/Users", &entra_user("carol@contoso.com", "c-1", "Carol", "King")).await.body;
    let id = u["id"].as_str().unwrap();
    let r = c
        .put(
            &format!("/Users/{id}"),
            &json!({"userName": "carol@contoso.com", "id": "ignored", "active": false, "name": {"givenName": "C"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], id);
    assert_eq!(r.body["meta"]["created"], u["meta"]["created"]);
    assert!(r.body.get("emails").is_none(), "PUT replaces: attributes not sent are gone");
    assert_eq!(r.body["active"], json!(false));
}

/// Entra's probe carries no Accept, Content-Type or User-Agent; reqwest would
/// add some, so this one goes over a raw socket.
#[tokio::test]
async fn probe_with_bare_headers_over_a_raw_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(BIN);
    let url = server.base.strip_prefix("http://").unwrap();
    let (host, path) = url.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "GET /{path}/Users?filter=userName+eq+%227d420df3-9995-4831-a406-ecf8166f5f6a%22 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        scim_test_support::TOKEN
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("content-type: application/scim+json"), "{out}");
    assert!(out.contains(r#""totalResults":0"#), "{out}");
}
