//! Every acknowledged write survives `kill -9` of the server.

use scim_test_support::{Options, Server, patch_ops};
use serde_json::json;

/// The binary under test; only integration tests of the root package can name it.
const BIN: &str = env!("CARGO_BIN_EXE_scim-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(BIN, Options { data_dir: Some(&data), ..Default::default() });
    let c = server.client();

    // Concurrent creates, so the store's group commit is exercised too.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r =
                c.post("/Users", &json!({"userName": format!("u{i}@x.com"), "externalId": format!("ext-{i}")})).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let g = c.post("/Groups", &json!({"displayName": "Everyone"})).await.body["id"].as_str().unwrap().to_string();
    let members: Vec<_> = ids[..10].iter().map(|id| json!({"value": id})).collect();
    assert_eq!(
        c.patch(&format!("/Groups/{g}"), &patch_ops(json!([{"op": "Add", "path": "members", "value": members}])))
            .await
            .status,
        200
    );
    assert_eq!(
        c.patch(
            &format!("/Users/{}", ids[0]),
            &patch_ops(json!([{"op": "Replace", "path": "active", "value": "False"}]))
        )
        .await
        .status,
        200
    );
    assert_eq!(c.delete(&format!("/Users/{}", ids[1])).await.status, 204);
    // The last acknowledged write, immediately before the kill.
    let last = c.post("/Users", &json!({"userName": "last@x.com"})).await;
    assert_eq!(last.status, 201);

    let _keep = server.kill9();

    let server = Server::start_with(BIN, Options { data_dir: Some(&data), ..Default::default() });
    let c = server.client();
    let all = c.get("/Users?count=1000").await.body;
    assert_eq!(all["totalResults"], 60, "59 of the first 60 plus last@x.com");
    assert_eq!(c.get(&format!("/Users/{}", ids[0])).await.body["active"], json!(false));
    assert_eq!(c.get(&format!("/Users/{}", ids[1])).await.status, 404);
    assert_eq!(c.get("/Users?filter=userName+eq+%22last%40x.com%22").await.body["totalResults"], 1);
    let group = c.get(&format!("/Groups/{g}")).await.body;
    assert_eq!(group["members"].as_array().unwrap().len(), 9, "the deleted member left the group durably");
    // Uniqueness still holds after restart.
    assert_eq!(c.post("/Users", &json!({"userName": "U5@x.com"})).await.status, 409);
}
