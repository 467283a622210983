//! The rules of the `Store` trait, one request at a time (and the outbox).

use super::*;

#[tokio::test]
async fn outbox_entries_ride_with_writes_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let side = SideEffects {
        enqueue: vec![Enqueue::user("u1")],
        projection: vec![ProjectionNote { id: "u1".into(), state: Some("p1".into()) }],
    };
    store.create_with(USER, user("u1", "a"), side).await.unwrap();
    let due = store.outbox_due(now_ms() + 1, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].generation, due[0].attempts), (1, 0));
    assert_eq!(store.projection("u1").await.unwrap().as_deref(), Some("p1"));

    // A failed write adds no outbox entry.
    let dup = store
        .create_with(USER, user("u2", "A"), SideEffects { enqueue: vec![Enqueue::user("u2")], ..Default::default() })
        .await;
    assert!(dup.is_err());
    assert_eq!(store.outbox_stats().await.unwrap().pending, 1);

    // A change enqueued while the entry is being projected keeps it.
    let read = due[0].clone();
    store
        .update(
            USER,
            "u1",
            Box::new(|_, _| {
                Ok(Mutation::WithSideEffects {
                    mutation: Box::new(Mutation::Unchanged),
                    side: SideEffects { enqueue: vec![Enqueue::user("u1")], ..Default::default() },
                })
            }),
        )
        .await
        .unwrap();
    assert!(!store.outbox_complete(&read, None).await.unwrap(), "a newer generation waits");
    let again = store.outbox_due(now_ms() + 1, 10).await.unwrap();
    assert_eq!(again[0].generation, 2);

    // Failures back off and are reported.
    store.outbox_retry(&again[0], now_ms() + 60_000, "ZITADEL unavailable".into()).await.unwrap();
    assert!(store.outbox_due(now_ms() + 1, 10).await.unwrap().is_empty());
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failing, stats.last_error.as_deref()), (1, 1, Some("ZITADEL unavailable")));
    drop(store);

    let store = open(dir.path());
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failing), (1, 1), "the outbox is durable");
    let pending = store.outbox_due(u64::MAX, 10).await.unwrap();
    assert!(store.outbox_complete(&pending[0], Some(ProjectionNote { id: "u1".into(), state: None })).await.unwrap());
    assert_eq!(store.outbox_stats().await.unwrap().pending, 0);
    assert_eq!(store.projection("u1").await.unwrap(), None);

    // Deleting computes side effects from the record it deletes.
    store
        .delete_with(
            USER,
            "u1",
            Box::new(|rec| SideEffects { enqueue: vec![Enqueue::user(rec.id.clone())], ..Default::default() }),
        )
        .await
        .unwrap();
    assert_eq!(store.outbox_due(u64::MAX, 10).await.unwrap()[0].id, "u1");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.outbox_stats().await.unwrap().pending, 1);
    assert!(store.get(USER, "u1").await.unwrap().is_none());
}

#[tokio::test]
async fn create_get_counts_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let rec = store.create(USER, user("u1", "Alice@example.com")).await.unwrap();
    assert_eq!((rec.id.as_str(), rec.version), ("u1", 1));
    assert_eq!(rec.doc["userName"], "Alice@example.com");
    store.create(GROUP, group("g1", "Admins", &["u1"])).await.unwrap();

    let got = store.get(USER, "u1").await.unwrap().unwrap();
    assert_eq!(got.doc, rec.doc);
    // Kinds do not leak into each other.
    assert!(store.get(GROUP, "u1").await.unwrap().is_none());
    assert!(store.get(USER, "nope").await.unwrap().is_none());
    assert_eq!(store.counts().await.unwrap(), Counts { users: 1, groups: 1 });
    assert_eq!(store.groups_of("u1").await.unwrap(), vec![GroupRef::new("g1", "Admins")]);
    assert!(store.groups_of("g1").await.unwrap().is_empty());

    let updated = store.update(USER, "u1", set("displayName", "Alice")).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.doc["meta"]["version"], "W/\"2\"");
    assert_eq!(store.get(USER, "u1").await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn uniqueness_is_case_insensitive_and_ids_are_global() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(USER, user("u1", "Alice@x")).await.unwrap();
    let e = scim_err(store.create(USER, user("u2", "alice@X")).await);
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    assert_eq!(e.detail, "userName \"alice@X\" is already taken by another user");
    // Unicode lowercasing, not just ASCII.
    store.create(USER, user("u3", "ÅSA")).await.unwrap();
    assert_eq!(scim_err(store.create(USER, user("u4", "åsa")).await).status, 409);

    // The same name in the other kind is fine; the same id is not.
    store.create(GROUP, group("g1", "alice@x", &[])).await.unwrap();
    let e = scim_err(store.create(GROUP, group("g2", "ALICE@X", &[])).await);
    assert_eq!(e.detail, "displayName \"ALICE@X\" is already taken by another group");
    let e = scim_err(store.create(GROUP, group("u1", "other", &[])).await);
    assert_eq!((e.status, e.detail.as_str()), (409, "id \"u1\" is already taken by another user"));

    let e = scim_err(store.create(USER, json!({"id": "u9"})).await);
    assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidValue)));
    let e = scim_err(store.create(USER, json!({"userName": "x"})).await);
    assert_eq!(e.status, 400);
    assert_eq!(store.counts().await.unwrap(), Counts { users: 2, groups: 1 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_username_let_exactly_one_win() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let variants = ["Alice@x", "alice@X", "ALICE@X", "alice@x"];
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&store);
            let name = variants[i % variants.len()];
            tokio::spawn(async move { store.create(USER, user(&format!("u{i}"), name)).await })
        })
        .collect();
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Scim(e)) if e.status == 409 && e.scim_type == Some(ScimType::Uniqueness) => conflicts += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 31));
    assert_eq!(store.counts().await.unwrap().users, 1);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.counts().await.unwrap().users, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_member_adds_lose_no_member() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    for i in 0..50 {
        store.create(USER, user(&format!("u{i}"), &format!("user{i}"))).await.unwrap();
    }
    store.create(GROUP, group("g", "Team", &[])).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.update(GROUP, "g", add_member(&format!("u{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let check = |rec: Record| {
        let mut members = members_of(&rec);
        members.sort();
        let mut expected: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        expected.sort();
        assert_eq!(members, expected);
        assert_eq!(rec.version, 51);
    };
    check(store.get(GROUP, "g").await.unwrap().unwrap());
    for i in 0..50 {
        assert_eq!(store.groups_of(&format!("u{i}")).await.unwrap().len(), 1);
    }
    drop(store);
    let store = open(dir.path());
    check(store.get(GROUP, "g").await.unwrap().unwrap());
    assert_eq!(store.groups_of("u7").await.unwrap(), vec![GroupRef::new("g", "Team")]);
}

#[tokio::test]
async fn update_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(USER, user("u1", "alice")).await.unwrap();
    store.create(USER, user("u2", "bob")).await.unwrap();

    let e = scim_err(store.update(USER, "nope", set("displayName", "x")).await);
    assert_eq!((e.status, e.detail.as_str()), (404, "User nope not found"));
    let e = scim_err(store.update(GROUP, "u1", set("displayName", "x")).await);
    assert_eq!((e.status, e.detail.as_str()), (404, "Group u1 not found"));

    // Unchanged writes nothing and keeps the version.
    let seen = Arc::new(Mutex::new(None));
    let seen2 = Arc::clone(&seen);
    let rec = store
        .update(
            USER,
            "u1",
            Box::new(move |r: &Record, v: u64| {
                *seen2.lock() = Some((r.version, v));
                Ok(Mutation::Unchanged)
            }),
        )
        .await
        .unwrap();
    assert_eq!(rec.version, 1);
    assert_eq!(*seen.lock(), Some((1, 2)), "mutate gets the current record and the next version");

    // The closure's error reaches the caller and nothing is written.
    let e = scim_err(
        store.update(USER, "u1", Box::new(|_: &Record, _: u64| Err(ScimError::precondition_failed("etag")))).await,
    );
    assert_eq!(e.status, 412);
    assert_eq!(store.get(USER, "u1").await.unwrap().unwrap().version, 1);

    // Renaming onto another user's name conflicts; onto one's own in another
    // case does not.
    let e = scim_err(store.update(USER, "u1", set("userName", "BOB")).await);
    assert_eq!(e.detail, "userName \"BOB\" is already taken by another user");
    let rec = store.update(USER, "u1", set("userName", "ALICE")).await.unwrap();
    assert_eq!(rec.version, 2);
    // A rename frees the old name.
    store.update(USER, "u1", set("userName", "carol")).await.unwrap();
    store.create(USER, user("u3", "Alice")).await.unwrap();

    // The stored id wins over the document's.
    let rec = store.update(USER, "u2", set("id", "hijack")).await.unwrap();
    assert_eq!(rec.doc["id"], "u2");
    assert!(store.get(USER, "hijack").await.unwrap().is_none());

    // A panicking closure fails its own command only.
    let r = store.update(USER, "u2", Box::new(|_: &Record, _: u64| panic!("bug in a PATCH handler"))).await;
    assert!(is_backend(&r), "{r:?}");
    store.update(USER, "u2", set("displayName", "Bob")).await.unwrap();

    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(USER, "u1").await.unwrap().unwrap().doc["userName"], "carol");
    assert_eq!(store.get(USER, "u1").await.unwrap().unwrap().version, 3);
}

#[tokio::test]
async fn group_members_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(USER, user("u1", "alice")).await.unwrap();
    let e = scim_err(store.create(GROUP, group("g1", "A", &["u1", "ghost"])).await);
    assert_eq!((e.status, e.scim_type), (400, Some(ScimType::InvalidValue)));
    assert_eq!(e.detail, "members: no user or group with id \"ghost\"");
    store.create(GROUP, group("g1", "A", &["u1"])).await.unwrap();
    // Groups can be members too.
    store.create(GROUP, group("g2", "B", &["g1", "u1"])).await.unwrap();
    let e = scim_err(store.update(GROUP, "g1", add_member("ghost")).await);
    assert_eq!(e.status, 400);
    assert_eq!(members_of(&store.get(GROUP, "g1").await.unwrap().unwrap()), vec!["u1"]);
    let e = scim_err(store.create(GROUP, json!({"id": "g3", "displayName": "C", "members": [{"display": "x"}]})).await);
    assert_eq!(e.status, 400);
    let mut groups = store.groups_of("u1").await.unwrap();
    groups.sort();
    assert_eq!(groups, vec![GroupRef::new("g1", "A"), GroupRef::new("g2", "B")]);
}

#[tokio::test]
async fn delete_removes_the_resource_from_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(USER, user("u1", "alice")).await.unwrap();
    store.create(USER, user("u2", "bob")).await.unwrap();
    store.create(GROUP, group("g1", "A", &["u1", "u2"])).await.unwrap();
    store.create(GROUP, group("g2", "B", &["u1", "g1"])).await.unwrap();
    store.create(GROUP, group("g3", "C", &["u2"])).await.unwrap();

    store.delete(USER, "u1").await.unwrap();
    assert!(store.get(USER, "u1").await.unwrap().is_none());
    let g1 = store.get(GROUP, "g1").await.unwrap().unwrap();
    assert_eq!(members_of(&g1), vec!["u2"]);
    assert_eq!(g1.version, 2);
    assert_eq!(g1.doc["meta"]["version"], "W/\"2\"");
    let modified = g1.doc["meta"]["lastModified"].as_str().unwrap();
    assert_eq!(modified.len(), "2026-11-28T20:42:21.123Z".len(), "{modified}");
    assert!(modified.ends_with('Z') && modified.as_bytes()[19] == b'.', "{modified}");
    assert!(OffsetDateTime::parse(modified, &time::format_description::well_known::Rfc3339).is_ok());
    assert_eq!(g1.doc["meta"]["resourceType"], "Group", "the rest of meta is kept");
    let g2 = store.get(GROUP, "g2").await.unwrap().unwrap();
    assert_eq!((members_of(&g2), g2.version), (vec!["g1".to_owned()], 2));
    // Groups not containing the user are untouched.
    assert_eq!(store.get(GROUP, "g3").await.unwrap().unwrap().version, 1);
    assert!(store.groups_of("u1").await.unwrap().is_empty());

    // Deleting a group removes it from its parent groups too.
    store.delete(GROUP, "g1").await.unwrap();
    let g2 = store.get(GROUP, "g2").await.unwrap().unwrap();
    assert_eq!((members_of(&g2).len(), g2.version), (0, 3));
    assert!(store.groups_of("u2").await.unwrap() == vec![GroupRef::new("g3", "C")]);

    let e = scim_err(store.delete(USER, "u1").await);
    assert_eq!((e.status, e.detail.as_str()), (404, "User u1 not found"));
    assert_eq!(scim_err(store.delete(GROUP, "u2").await).status, 404);
    // The name is free again.
    store.create(USER, user("u1b", "ALICE")).await.unwrap();

    let before = snapshot(&store).await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(snapshot(&store).await, before);
}

#[tokio::test]
async fn queries_use_hints_sort_and_paginate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let with_ext = |id: &str, name: &str, ext: &str| {
        let mut u = user(id, name);
        u["externalId"] = json!(ext);
        u
    };
    store.create(USER, with_ext("u1", "bob", "x1")).await.unwrap();
    store.create(USER, with_ext("u2", "Alice", "x1")).await.unwrap();
    store.create(USER, with_ext("u3", "carol", "x2")).await.unwrap();
    store.create(USER, user("u4", "dave")).await.unwrap();
    store.create(GROUP, group("g1", "alice", &[])).await.unwrap();

    let q = |hint: Option<IndexHint>| Query { hint, ..all(USER) };
    let page = store.query(q(None)).await.unwrap();
    assert_eq!((page.total, ids(&page)), (4, vec!["u1", "u2", "u3", "u4"]));
    let page = store.query(q(Some(IndexHint::Id("u2".into())))).await.unwrap();
    assert_eq!(ids(&page), vec!["u2"]);
    let page = store.query(Query { kind: GROUP, ..q(Some(IndexHint::Id("u2".into()))) }).await.unwrap();
    assert_eq!(page.total, 0);
    let page = store.query(q(Some(IndexHint::UniqueName("alice".into())))).await.unwrap();
    assert_eq!(ids(&page), vec!["u2"]);
    let page = store.query(q(Some(IndexHint::UniqueName("ALICE".into())))).await.unwrap();
    assert_eq!(ids(&page), vec!["u2"]);
    let page = store.query(Query { kind: GROUP, ..q(Some(IndexHint::UniqueName("alice".into()))) }).await.unwrap();
    assert_eq!(ids(&page), vec!["g1"]);
    let page = store.query(q(Some(IndexHint::ExternalId("x1".into())))).await.unwrap();
    assert_eq!(ids(&page), vec!["u1", "u2"]);
    assert_eq!(store.query(q(Some(IndexHint::ExternalId("X1".into())))).await.unwrap().total, 0);

    // The filter runs on the candidates.
    let not_bob = |doc: &Value| doc["userName"] != "bob";
    let page =
        store.query(Query { matches: Some(&not_bob), ..q(Some(IndexHint::ExternalId("x1".into()))) }).await.unwrap();
    assert_eq!((page.total, ids(&page)), (1, vec!["u2"]));

    // Pagination: 1-based, total counts every match.
    let page = store.query(Query { start_index: 2, count: 2, ..all(USER) }).await.unwrap();
    assert_eq!((page.total, ids(&page)), (4, vec!["u2", "u3"]));
    let page = store.query(Query { start_index: 1, count: 0, ..all(USER) }).await.unwrap();
    assert_eq!((page.total, page.records.len()), (4, 0));
    let page = store.query(Query { start_index: 9, count: 5, ..all(USER) }).await.unwrap();
    assert_eq!((page.total, page.records.len()), (4, 0));
    let page = store.query(Query { start_index: 0, count: 1, ..all(USER) }).await.unwrap();
    assert_eq!(ids(&page), vec!["u1"]);

    // Sort (stable) then paginate.
    let by_name = |a: &Value, b: &Value| {
        let key = |v: &Value| v["userName"].as_str().unwrap_or_default().to_lowercase();
        key(a).cmp(&key(b))
    };
    let page = store.query(Query { sort: Some(&by_name), ..all(USER) }).await.unwrap();
    assert_eq!(ids(&page), vec!["u2", "u1", "u3", "u4"]);
    let page = store.query(Query { sort: Some(&by_name), start_index: 2, count: 2, ..all(USER) }).await.unwrap();
    assert_eq!((page.total, ids(&page)), (4, vec!["u1", "u3"]));
    let same = |_: &Value, _: &Value| std::cmp::Ordering::Equal;
    let page = store.query(Query { sort: Some(&same), ..all(USER) }).await.unwrap();
    assert_eq!(ids(&page), vec!["u1", "u2", "u3", "u4"], "stable");

    // Indexes follow updates and deletes.
    store.update(USER, "u2", set("userName", "Zed")).await.unwrap();
    store.update(USER, "u1", set("externalId", "x9")).await.unwrap();
    assert_eq!(store.query(q(Some(IndexHint::UniqueName("alice".into())))).await.unwrap().total, 0);
    assert_eq!(ids(&store.query(q(Some(IndexHint::UniqueName("zed".into())))).await.unwrap()), vec!["u2"]);
    assert_eq!(ids(&store.query(q(Some(IndexHint::ExternalId("x1".into())))).await.unwrap()), vec!["u2"]);
    assert_eq!(ids(&store.query(q(Some(IndexHint::ExternalId("x9".into())))).await.unwrap()), vec!["u1"]);
    store.delete(USER, "u2").await.unwrap();
    assert_eq!(store.query(q(Some(IndexHint::ExternalId("x1".into())))).await.unwrap().total, 0);
    // Updates keep creation order.
    assert_eq!(ids(&store.query(all(USER)).await.unwrap()), vec!["u1", "u3", "u4"]);
}
