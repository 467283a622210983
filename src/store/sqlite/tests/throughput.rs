//! Throughput sanity check, not an assertion.

use std::time::Instant;

use super::*;

/// A user as Entra creates it, with the metadata the server adds.
fn entra_user(id: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "id": id,
        "externalId": format!("{id}-0f3c2a9e-8d1b-4b7a-9c55-3e2f1a6b7c8d"),
        "userName": format!("{id}@contoso.example.com"),
        "active": true,
        "displayName": "Given Family",
        "title": "Engineer",
        "name": {"formatted": "Given Family", "familyName": "Family", "givenName": "Given"},
        "emails": [{"primary": true, "type": "work", "value": format!("{id}@contoso.example.com")}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "Research", "employeeNumber": "12345", "manager": {"value": "m-1"}
        },
        "meta": {
            "resourceType": "User",
            "created": "2026-11-28T20:42:21.123Z",
            "lastModified": "2026-11-28T20:42:21.123Z",
            "version": "W/\"1\""
        }
    })
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or_default();
    kib / 1024.0
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn throughput() {
    println!("RSS at start: {:.1} MiB", rss_mib());
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 16;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for durability in [Durability::Full, Durability::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), durability).unwrap());
        rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0..TOTAL / CLIENTS {
                            store.create(USER, entra_user(&format!("u{c}-{i}"))).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let elapsed = start.elapsed();
            let stats = store.stats();
            println!(
                "{durability:?}: {TOTAL} creates by {CLIENTS} clients in {:.2?}: {:.0}/s, {} batches, {:.1} per batch, RSS {:.1} MiB",
                elapsed,
                TOTAL as f64 / elapsed.as_secs_f64(),
                stats.batches,
                stats.commands as f64 / stats.batches as f64,
                rss_mib()
            );

            let start = Instant::now();
            let before = store.stats();
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0..TOTAL / CLIENTS {
                            store.update(USER, &format!("u{c}-{i}"), set("displayName", "x")).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let elapsed = start.elapsed();
            let stats = store.stats();
            println!(
                "{durability:?}: {TOTAL} updates by {CLIENTS} clients in {:.2?}: {:.0}/s, {:.1} per batch",
                elapsed,
                TOTAL as f64 / elapsed.as_secs_f64(),
                (stats.commands - before.commands) as f64 / (stats.batches - before.batches) as f64
            );

            let start = Instant::now();
            let mut found = 0;
            for c in 0..CLIENTS {
                for i in 0..TOTAL / CLIENTS {
                    found += usize::from(store.get(USER, &format!("u{c}-{i}")).await.unwrap().is_some());
                }
            }
            let elapsed = start.elapsed();
            println!(
                "{durability:?}: {found} gets by id (one task) in {elapsed:.2?}: {:.0}/s",
                found as f64 / elapsed.as_secs_f64()
            );
        });
        let start = Instant::now();
        drop(store);
        let _reopened = SqliteStore::open(dir.path(), durability).unwrap();
        println!(
            "{durability:?}: close + reopen with {TOTAL} users: {:.2?}, RSS {:.1} MiB",
            start.elapsed(),
            rss_mib()
        );
    }
}
