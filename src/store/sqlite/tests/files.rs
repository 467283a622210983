//! What reaches the files: reopening, the indexed columns, the lock, the
//! store threads' policy, and WAL checkpoints.

use super::*;

async fn reopen_keeps_every_acknowledged_write(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), durability).unwrap();
    for i in 0..20 {
        store.create(USER, user(&format!("u{i}"), &format!("user{i}"))).await.unwrap();
    }
    store.create(GROUP, group("g", "G", &["u1", "u2", "u3"])).await.unwrap();
    store.update(USER, "u1", set("userName", "renamed")).await.unwrap();
    store.update(GROUP, "g", add_member("u4")).await.unwrap();
    store.delete(USER, "u2").await.unwrap();
    store.delete(USER, "u10").await.unwrap();
    let snap = snapshot(&store).await;
    drop(store);

    let store = SqliteStore::open(dir.path(), durability).unwrap();
    assert_eq!(snapshot(&store).await, snap);
    assert_eq!(store.counts().await.unwrap(), Counts { users: 18, groups: 1 });
    let g = store.get(GROUP, "g").await.unwrap().unwrap();
    assert_eq!((members_of(&g), g.version), (vec!["u1".into(), "u3".into(), "u4".into()], 3));
    assert_eq!(store.groups_of("u4").await.unwrap().len(), 1);
    // Indexes are rebuilt: freed names are free, taken ones taken.
    store.create(USER, user("n1", "USER1")).await.unwrap();
    assert_eq!(scim_err(store.create(USER, user("n2", "Renamed")).await).status, 409);
    assert_eq!(scim_err(store.create(USER, user("u3", "fresh")).await).status, 409);
    // New resources list after the old ones.
    let page = store.query(all(USER)).await.unwrap();
    assert_eq!(page.records.last().unwrap().id, "n1");
}

#[tokio::test]
async fn reopen_keeps_every_acknowledged_write_full() {
    reopen_keeps_every_acknowledged_write(Durability::Full).await;
}

#[tokio::test]
async fn reopen_keeps_every_acknowledged_write_normal() {
    reopen_keeps_every_acknowledged_write(Durability::Normal).await;
}

/// The columns beside the document as the database has them.
fn indexed_columns(dir: &Path, id: &str) -> (String, Option<String>, i64) {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row("SELECT unique_name_lower, external_id, version FROM resources WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

#[tokio::test]
async fn updates_keep_the_indexed_columns_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut doc = user("u1", "Alice");
    doc["externalId"] = json!("ext-1");
    store.create(USER, doc).await.unwrap();
    // An update that keeps the name and externalId rewrites only the document.
    store.update(USER, "u1", set("displayName", "A")).await.unwrap();
    assert_eq!(indexed_columns(dir.path(), "u1"), ("alice".to_owned(), Some("ext-1".to_owned()), 2));
    // A rename and a new externalId reach the columns (and the UNIQUE index).
    store.update(USER, "u1", set("userName", "Bob")).await.unwrap();
    store.update(USER, "u1", set("externalId", "ext-2")).await.unwrap();
    assert_eq!(indexed_columns(dir.path(), "u1"), ("bob".to_owned(), Some("ext-2".to_owned()), 4));
    // The old name is free in the database too, not only in memory.
    store.create(USER, user("u2", "alice")).await.unwrap();
    let e = scim_err(store.create(USER, user("u3", "BOB")).await);
    assert_eq!(e.status, 409);
    store.close();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get(USER, "u1").await.unwrap().unwrap().doc["userName"], "Bob");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_store_threads_do_not_preempt_request_handling() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(USER, user("u1", "alice")).await.unwrap();
    // Field 41 of /proc/<tid>/stat is the policy; 3 is SCHED_BATCH.
    let mut policies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("scim-store-") {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let policy = after_name.split(' ').nth(41 - 3).unwrap().to_owned();
            policies.push((comm.trim().to_owned(), policy));
        }
    }
    // Other tests' stores in this process add threads of the same names.
    assert!(policies.iter().any(|(c, _)| c == "scim-store-writ"), "{policies:?}");
    assert!(policies.iter().any(|(c, _)| c == "scim-store-chec"), "{policies:?}");
    assert!(policies.iter().all(|(_, p)| p == "3"), "every store thread is SCHED_BATCH: {policies:?}");
}

#[tokio::test]
async fn a_second_store_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(USER, user("u1", "alice")).await.unwrap();
    let second = SqliteStore::open(dir.path(), Durability::Full);
    assert!(matches!(&second, Err(StoreError::Backend(m)) if m.contains("locked")), "{second:?}");
    drop(store);
    let store = open(dir.path());
    assert!(store.get(USER, "u1").await.unwrap().is_some());
}

/// Writes `n` users of about 3 KB each, 64 at a time (one batch each).
async fn write_bulk(store: &Arc<SqliteStore>, prefix: &str, n: usize) {
    let pad = "x".repeat(3000);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let writes: Vec<_> = chunk
            .iter()
            .map(|i| {
                let store = Arc::clone(store);
                let mut doc = user(&format!("{prefix}{i}"), &format!("{prefix}{i}"));
                doc["displayName"] = json!(pad);
                tokio::spawn(async move { store.create(USER, doc).await })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_off_the_writer_and_stays_bounded_normal() {
    the_wal_is_checkpointed_off_the_writer_and_stays_bounded(Durability::Normal).await;
}

/// The writer's WAL goes through `wal_vfs` here, and both checkpointers
/// read what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_off_the_writer_and_stays_bounded_full() {
    the_wal_is_checkpointed_off_the_writer_and_stays_bounded(Durability::Full).await;
}

async fn the_wal_is_checkpointed_off_the_writer_and_stays_bounded(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), durability).unwrap());
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len()).unwrap_or(0);
    let wal = format!("{DB_FILE}-wal");
    let page = 4096;
    // About twice the nudge size: the writer itself would not checkpoint
    // before ten times that, so the data reaching the main file shows the
    // checkpoint thread did it.
    let n = 2 * checkpoint::NUDGE_PAGES as usize;
    write_bulk(&store, "a", n).await;
    // The last frames stay in the WAL until a later write (they are just
    // as durable there), so half the data is what to wait for.
    wait_for("the main file holds the data", || size(DB_FILE) >= (n * 3000 / 2) as u64).await;
    const { assert!(checkpoint::NUDGE_PAGES < checkpoint::FALLBACK_PAGES / 4) };

    // Once checkpointed, the WAL starts over instead of growing: after
    // four times as much data it is still a small multiple of the nudge
    // size, far below the writer's fallback.
    let wal_before = size(&wal);
    write_bulk(&store, "b", 4 * n).await;
    let limit = (3 * checkpoint::NUDGE_PAGES as u64 + 1024) * page;
    assert!(size(&wal) <= limit.max(wal_before), "WAL grew to {} bytes (limit {limit})", size(&wal));
    assert!(size(&wal) < checkpoint::FALLBACK_PAGES as u64 * page);
    assert_eq!(store.counts().await.unwrap().users, 5 * n);
    // What /metrics reports: both kinds of checkpoint happened, and every
    // write went through a commit.
    let stats = store.writer_stats().unwrap();
    assert!(stats.checkpoints_by_thread > 0 && stats.checkpoints_by_writer > 0, "{stats:?}");
    assert_eq!(stats.commands, 5 * n as u64);
    assert!((1..=stats.commands).contains(&stats.batches), "{stats:?}");
    drop(store);
    let check: String = Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let store = SqliteStore::open(dir.path(), durability).unwrap();
    assert_eq!(store.counts().await.unwrap().users, 5 * n);
}

fn api_key(id: &str, hash_byte: u8) -> crate::store::ApiKeyRecord {
    crate::store::ApiKeyRecord {
        id: id.into(),
        name: format!("key {id}"),
        sha256: [hash_byte; 32],
        created_ms: 1_000 + u64::from(hash_byte),
        created_by: "user-1".into(),
        expires_ms: Some(9_000),
        last_used_ms: None,
    }
}

#[tokio::test]
async fn self_service_keys_survive_reopening_with_their_last_use() {
    use crate::store::ApiKeyChange;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.api_key_write(ApiKeyChange::Put(api_key("a", 1))).await.unwrap();
        store.api_key_write(ApiKeyChange::Put(api_key("b", 2))).await.unwrap();
        // A second key with the same hash is refused by the database.
        assert!(is_backend(&store.api_key_write(ApiKeyChange::Put(api_key("c", 2))).await));
        store.api_key_write(ApiKeyChange::Touch(vec![("a".into(), 5_000), ("gone".into(), 1)])).await.unwrap();
        // An older time does not move lastUsed back.
        store.api_key_write(ApiKeyChange::Touch(vec![("a".into(), 4_000)])).await.unwrap();
        store.api_key_write(ApiKeyChange::Delete("b".into())).await.unwrap();
        let keys = store.api_keys().await.unwrap();
        assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(keys[0].last_used_ms, Some(5_000));
    }
    let store = open(dir.path());
    let mut want = api_key("a", 1);
    want.last_used_ms = Some(5_000);
    assert_eq!(store.api_keys().await.unwrap(), [want]);
}
