//! Concurrent writers: uniqueness holds and no group member is lost.

use scim_test_support::{Server, patch_ops};
use serde_json::json;

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_user_name_give_one_201_and_31_409() {
    let server = Server::start(BIN);
    let c = server.client();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = c.clone();
        // The same name in different cases: userName is case-insensitive.
        let name = if i % 2 == 0 { "Dup@Contoso.com" } else { "dup@contoso.COM" };
        tasks.push(tokio::spawn(async move { c.post("/Users", &json!({"userName": name})).await }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created += 1,
            409 => {
                assert_eq!(r.body["scimType"], "uniqueness");
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!((created, conflicts), (1, 31));
    assert_eq!(c.get("/Users").await.body["totalResults"], 1);
    // Each create is one command of the writer, refused ones included; they
    // share commits when they arrive together.
    let (_, metrics) = server.admin_get("/metrics").await;
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("scim_store_commands_total "), 32, "{metrics}");
    assert!((1..=32).contains(&value("scim_store_commits_total ")), "{metrics}");
    assert!(metrics.contains("scim_store_checkpoints_total{by=\"thread\"} "), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_member_patches_lose_no_member() {
    let server = Server::start(BIN);
    let c = server.client();
    let mut ids = Vec::new();
    for i in 0..64 {
        ids.push(
            c.post("/Users", &json!({"userName": format!("m{i}")})).await.body["id"].as_str().unwrap().to_string(),
        );
    }
    let g = c.post("/Groups", &json!({"displayName": "Big"})).await.body["id"].as_str().unwrap().to_string();
    // Both dialects, interleaved: adds of 48 members, and removes of 8 members
    // that were added first.
    let first: Vec<_> = ids[..8].iter().map(|id| json!({"value": id})).collect();
    c.patch(&format!("/Groups/{g}"), &patch_ops(json!([{"op": "Add", "path": "members", "value": first}]))).await;
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate().skip(8).take(48) {
        let (c, g, id) = (c.clone(), g.clone(), id.clone());
        let op = if i % 2 == 0 { "Add" } else { "add" };
        tasks.push(tokio::spawn(async move {
            c.patch(
                &format!("/Groups/{g}"),
                &patch_ops(json!([{"op": op, "path": "members", "value": [{"value": id}]}])),
            )
            .await
            .status
        }));
    }
    for (i, id) in ids.iter().enumerate().take(8) {
        let (c, g, id) = (c.clone(), g.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let body = if i % 2 == 0 {
                patch_ops(json!([{"op": "Remove", "path": "members", "value": [{"value": id}]}]))
            } else {
                patch_ops(json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]))
            };
            c.patch(&format!("/Groups/{g}"), &body).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let group = c.get(&format!("/Groups/{g}")).await.body;
    let mut got: Vec<String> =
        group["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want: Vec<String> = ids[8..56].to_vec();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(group["meta"]["version"], "W/\"58\"", "1 create + 1 batch + 48 adds + 8 removes");
}
