//! Issue 14, against the real binary: expressions of 10⁵ terms or nesting
//! levels are refused with a SCIM 400 on every attribute that takes a filter,
//! and the process keeps answering; input that would be stored although it
//! must not (blank or invisible names, names ZITADEL would treat as one,
//! wrongly typed attributes, non-date dateTime comparisons) is refused and
//! nothing is stored; the forms Entra sends keep working.

use reqwest::Method;
use scim_test_support::{Options, Resp, Server, patch_ops};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");
const HUGE: usize = 100_000;

/// A server whose body limit (4 MiB) admits a 10⁵-term expression, so the
/// expression limits, not the body limit, are what answers.
fn start_roomy() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, "maxBodyBytes: 4194304\n").unwrap();
    let config = config.to_str().unwrap().to_string();
    let args: Vec<&str> = vec!["--config", &config];
    let server = Server::start_with(BIN, Options { extra_args: &args, ..Options::default() });
    (server, dir)
}

/// `sub eq "0" or sub eq "1" …`, `terms` terms.
fn or_chain(sub: &str, terms: usize) -> String {
    (0..terms).map(|i| format!("{sub} eq \"{i}\"")).collect::<Vec<_>>().join(" or ")
}

/// `((((sub eq "x"))))`, `depth` parentheses.
fn nested(sub: &str, depth: usize) -> String {
    format!("{}{sub} eq \"x\"{}", "(".repeat(depth), ")".repeat(depth))
}

fn assert_refused(r: &Resp, scim_type: &str, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", &r.text[..r.text.len().min(300)]);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{what}");
    assert_eq!(r.body["scimType"], scim_type, "{what}: {}", r.text);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("limit"), "{what}: the detail names the limit: {detail}");
}

#[tokio::test]
async fn huge_expressions_are_refused_everywhere_and_the_server_keeps_answering() {
    let (server, _dir) = start_roomy();
    let c = server.client();
    let user = c
        .post(
            "/Users",
            &json!({"userName": "alice@contoso.com", "emails": [{"type": "work", "value": "0"}],
                    "addresses": [{"type": "0", "formatted": "1 Main St"}],
                    "phoneNumbers": [{"type": "mobile", "value": "0"}]}),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.text);
    let uid = user.body["id"].as_str().unwrap().to_string();
    let group = c.post("/Groups", &json!({"displayName": "Sales", "members": [{"value": uid}]})).await;
    assert_eq!(group.status, 201, "{}", group.text);
    let gid = group.body["id"].as_str().unwrap().to_string();

    let targets = [
        (format!("/Users/{uid}"), "emails", "value"),
        (format!("/Users/{uid}"), "addresses", "type"),
        (format!("/Users/{uid}"), "phoneNumbers", "value"),
        (format!("/Groups/{gid}"), "members", "value"),
    ];
    for (url, attr, sub) in &targets {
        for inner in [or_chain(sub, HUGE), nested(sub, HUGE)] {
            for op in ["remove", "replace"] {
                let path = format!("{attr}[{inner}]");
                let r = c.patch(url, &patch_ops(json!([{"op": op, "path": path, "value": {"display": "x"}}]))).await;
                assert_refused(&r, "invalidPath", &format!("{op} {attr}[...] of {} bytes", path.len()));
            }
        }
    }

    let search =
        |filter: String| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": filter});
    for filter in [or_chain("userName", HUGE), nested("userName", HUGE), format!("emails[{}]", or_chain("value", HUGE))]
    {
        for url in ["/Users/.search", "/.search"] {
            assert_refused(&c.json(Method::POST, url, &search(filter.clone())).await, "invalidFilter", url);
        }
    }
    // A URL holds at most 64 KiB, so ?filter= gets 1,000 terms (26 KB).
    let query: String = form_urlencoded::byte_serialize(or_chain("userName", 1_000).as_bytes()).collect();
    assert_refused(&c.get(&format!("/Users?filter={query}")).await, "invalidFilter", "?filter=");
    let names: Vec<String> = (0..HUGE).map(|i| format!("a{i}")).collect();
    let r = c.json(Method::POST, "/Users/.search", &json!({"attributes": names})).await;
    assert_refused(&r, "invalidPath", "attributes");
    let r = c.json(Method::POST, "/Groups/.search", &json!({"sortBy": "x".repeat(HUGE)})).await;
    assert_refused(&r, "invalidPath", "sortBy");

    // Alive, and nothing changed.
    let after = c.get(&format!("/Users/{uid}")).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body["emails"], user.body["emails"]);
    assert_eq!(after.body["addresses"], user.body["addresses"]);
    assert_eq!(c.get(&format!("/Groups/{gid}")).await.body["members"][0]["value"], uid.as_str());
}

#[tokio::test]
async fn what_entra_sends_stays_accepted_at_the_limits() {
    let server = Server::start(BIN);
    let c = server.client();
    let mut ids = Vec::new();
    for i in 0..100 {
        let r = c.post("/Users", &json!({"userName": format!("user{i}@contoso.com"), "active": "True"})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["active"], true, "Entra's string boolean");
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let group = c.post("/Groups", &json!({"displayName": "All"})).await.body;
    let g = format!("/Groups/{}", group["id"].as_str().unwrap());
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let r = c.patch(&g, &patch_ops(json!([{"op": "Add", "path": "members", "value": members}]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["members"].as_array().map(Vec::len), Some(100));
    // 100 ids in one filter is the limit, and accepted.
    let filter = ids.iter().map(|id| format!("value eq \"{id}\"")).collect::<Vec<_>>().join(" or ");
    let r = c.patch(&g, &patch_ops(json!([{"op": "Remove", "path": format!("members[{filter}]")}]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("members").is_none(), "{}", r.text);

    let u = format!("/Users/{}", ids[0]);
    let ops = json!([
        {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "user0@contoso.com"},
        {"op": "Replace", "path": "active", "value": "False"}
    ]);
    let r = c.patch(&u, &patch_ops(json!([ops[0], ops[1]]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["emails"], json!([{"type": "work", "value": "user0@contoso.com"}]));
    assert_eq!(r.body["active"], false);
    let r = c.get("/Users?filter=userName+eq+%22USER0%40contoso.com%22+and+meta.lastModified+gt+%222020-01-01T00%3A00%3A00Z%22").await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.text);
}

async fn user_count(c: &scim_test_support::Client) -> u64 {
    c.get("/Users?count=0").await.body["totalResults"].as_u64().unwrap()
}

#[tokio::test]
async fn input_that_must_not_be_stored_is_refused() {
    let server = Server::start(BIN);
    let c = server.client();
    let alice = c.post("/Users", &json!({"userName": "alice@contoso.com"})).await;
    assert_eq!(alice.status, 201);
    assert_eq!(c.post("/Groups", &json!({"displayName": "Sales"})).await.status, 201);

    let invalid = [
        json!({"userName": "   "}),
        json!({"userName": "bob\u{200B}@contoso.com"}),
        json!({"userName": "bob\u{0}@contoso.com"}),
        json!({"userName": "bob@contoso.com", "emails": {"value": "bob@contoso.com"}}),
        json!({"userName": "bob@contoso.com", "entitlements": {}}),
        json!({"userName": "bob@contoso.com", "password": 42}),
        json!({"userName": "bob@contoso.com", "password": ["secret"]}),
    ];
    for body in &invalid {
        let r = c.post("/Users", body).await;
        assert_eq!((r.status, r.body["scimType"].as_str()), (400, Some("invalidValue")), "{body}: {}", r.text);
    }
    for taken in [" alice@contoso.com ", "ａｌｉｃｅ@ｃｏｎｔｏｓｏ.ｃｏｍ", "ALICE@contoso.com\u{3000}"]
    {
        let r = c.post("/Users", &json!({"userName": taken})).await;
        assert_eq!((r.status, r.body["scimType"].as_str()), (409, Some("uniqueness")), "{taken:?}: {}", r.text);
    }
    let r = c.post("/Groups", &json!({"displayName": " ｓａｌｅｓ"})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(user_count(&c).await, 1, "nothing stored");

    let a = format!("/Users/{}", alice.body["id"].as_str().unwrap());
    for (path, value) in [("userName", json!(" ")), ("userName", json!("al\u{FEFF}ice")), ("password", json!(5))] {
        let r = c.patch(&a, &patch_ops(json!([{"op": "Replace", "path": path, "value": value}]))).await;
        assert_eq!((r.status, r.body["scimType"].as_str()), (400, Some("invalidValue")), "{path}: {}", r.text);
    }
    assert_eq!(c.get(&a).await.body["userName"], "alice@contoso.com");

    for filter in ["meta.lastModified+gt+%22notadate%22", "meta.created+eq+%22yesterday%22"] {
        let r = c.get(&format!("/Users?filter={filter}")).await;
        assert_eq!((r.status, r.body["scimType"].as_str()), (400, Some("invalidFilter")), "{filter}: {}", r.text);
    }
    // A password of the right type is accepted (and not kept).
    let r = c.post("/Users", &json!({"userName": "carol@contoso.com", "password": "s3cret"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body.get("password").is_none());
}
