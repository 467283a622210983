//! Group commit: requests of one batch see each other, and a failure fails
//! exactly what it must.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_one_batch_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    store.create(USER, user("gate", "gate")).await.unwrap();
    let before = store.stats();
    let (blocker, release) = block_writer(&store, USER, "gate").await;

    let c1 = enqueue(store.create(USER, user("a", "Alice")));
    let c2 = enqueue(store.create(USER, user("a2", "ALICE")));
    let c3 = enqueue(store.create(GROUP, group("g", "G", &["a"])));
    let c4 = enqueue(store.create(GROUP, group("g-bad", "Bad", &["a2"])));
    let c5 = enqueue(store.delete(USER, "a"));
    let c6 = enqueue(store.create(USER, user("a3", "alice")));
    let c7 = enqueue(store.update(GROUP, "g", add_member("a3")));
    let c8 = enqueue(store.create(USER, user("a", "someone-else")));
    let c9 = enqueue(store.update(USER, "a", set("displayName", "x")));
    // Nothing of the batch is visible before it commits.
    assert!(store.get(USER, "a").await.unwrap().is_none());
    release.send(()).unwrap();

    blocker.await.unwrap().unwrap();
    assert_eq!(c1.await.unwrap().version, 1);
    assert_eq!(scim_err(c2.await).status, 409);
    assert_eq!(members_of(&c3.await.unwrap()), vec!["a"]);
    assert_eq!(scim_err(c4.await).status, 400, "a2 was never created");
    c5.await.unwrap();
    c6.await.unwrap();
    let g = c7.await.unwrap();
    // Created (1), lost "a" with its delete (2), gained "a3" (3).
    assert_eq!((members_of(&g), g.version), (vec!["a3".to_owned()], 3));
    c8.await.unwrap();
    assert_eq!(c9.await.unwrap().version, 2);

    let after = store.stats();
    assert_eq!(after.batches - before.batches, 2, "the blocker's batch, then one for the rest");
    assert_eq!(after.commands - before.commands, 10);

    let g = store.get(GROUP, "g").await.unwrap().unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(store.get(USER, "a").await.unwrap().unwrap().doc["userName"], "someone-else");
    let snap = snapshot(&store).await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(snapshot(&store).await, snap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_fails_the_whole_batch_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    store.create(USER, user("gate", "gate")).await.unwrap();
    store.create(USER, user("old", "old")).await.unwrap();
    let (blocker, release) = block_writer(&store, USER, "gate").await;
    let c1 = enqueue(store.create(USER, user("a", "a")));
    let c2 = enqueue(store.create(USER, user("dup", "A")));
    let c3 = enqueue(store.delete(USER, "old"));
    let c4 = enqueue(store.update(USER, "gate", set("displayName", "x")));
    let next_batch = store.stats().batches + 1;
    store.counters.fail_commit_of_batch.store(next_batch, AtomicOrdering::SeqCst);
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    assert!(is_backend(&c1.await));
    assert!(is_backend(&c2.await), "even the 409 depended on the failed batch");
    assert!(is_backend(&c3.await));
    assert!(is_backend(&c4.await));

    assert!(store.get(USER, "a").await.unwrap().is_none());
    assert!(store.get(USER, "old").await.unwrap().is_some());
    assert_eq!(store.get(USER, "gate").await.unwrap().unwrap().version, 1);
    // The store keeps working, with the names of the failed batch free.
    store.create(USER, user("a", "A")).await.unwrap();
    let snap = snapshot(&store).await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(snapshot(&store).await, snap);
    assert_eq!(store.counts().await.unwrap().users, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_fails_only_its_command() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create(USER, user("gate", "gate")).await.unwrap();
        store.create(USER, user("u", "u")).await.unwrap();
        store.create(GROUP, group("g", "boom-group", &["u"])).await.unwrap();
    }
    // Triggers stand in for a statement the database refuses (disk errors,
    // constraint bugs) at a precise point.
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom_insert BEFORE INSERT ON resources WHEN NEW.unique_name_lower = 'boom'
             BEGIN SELECT RAISE(ABORT, 'injected'); END;
         CREATE TRIGGER boom_update BEFORE UPDATE ON resources WHEN NEW.unique_name_lower = 'boom-group'
             BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    .unwrap();
    drop(conn);

    let store = Arc::new(open(dir.path()));
    let (blocker, release) = block_writer(&store, USER, "gate").await;
    let c1 = enqueue(store.create(USER, user("ok1", "ok1")));
    let c2 = enqueue(store.create(USER, user("boom", "BOOM")));
    // Its DELETE succeeds, the cascade's UPDATE of g fails: all of it undone.
    let c3 = enqueue(store.delete(USER, "u"));
    let c4 = enqueue(store.create(USER, user("ok2", "boom")));
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    c1.await.unwrap();
    assert!(is_backend(&c2.await));
    assert!(is_backend(&c3.await));
    assert!(is_backend(&c4.await), "same name, same trigger");
    assert!(store.get(USER, "boom").await.unwrap().is_none());
    assert!(store.get(USER, "u").await.unwrap().is_some());
    assert_eq!(members_of(&store.get(GROUP, "g").await.unwrap().unwrap()), vec!["u"]);

    let snap = snapshot(&store).await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(snapshot(&store).await, snap);
    assert!(store.get(USER, "ok1").await.unwrap().is_some());
    assert!(store.get(USER, "u").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_writes_then_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    store.create(USER, user("gate", "gate")).await.unwrap();
    let (blocker, release) = block_writer(&store, USER, "gate").await;
    let queued: Vec<_> =
        (0..5).map(|i| enqueue(store.create(USER, user(&format!("q{i}"), &format!("q{i}"))))).collect();
    let closer = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.close())
    };
    // Give close() time to take the sender, so the next write sees Closed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send(()).unwrap();
    closer.await.unwrap();
    blocker.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap();
    }
    assert!(matches!(store.create(USER, user("late", "late")).await, Err(StoreError::Closed)));
    assert!(store.get(USER, "q4").await.unwrap().is_some(), "reads still work");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.counts().await.unwrap().users, 6);
}
