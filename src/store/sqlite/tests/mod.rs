//! Tests of the embedded store, one file per concern. Most run the real
//! store on a temporary dir; `plan` needs no database.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::json;
use time::OffsetDateTime;

use super::*;
use crate::scim::error::{ScimError, ScimType};
use crate::scim::schema::{GROUP_SCHEMA, USER_SCHEMA};
use crate::store::{Enqueue, GroupRef, IndexHint, Mutation, ProjectionNote, now_ms};
use state::member_ids;

mod batch;
mod crash;
mod files;
mod model;
mod plan;
mod semantics;
mod throughput;

const USER: ResourceKind = ResourceKind::User;
const GROUP: ResourceKind = ResourceKind::Group;

fn user(id: &str, name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "id": id,
        "userName": name,
        "meta": {"resourceType": "User", "version": "W/\"1\""},
    })
}

fn group(id: &str, name: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    json!({
        "schemas": [GROUP_SCHEMA],
        "id": id,
        "displayName": name,
        "members": members,
        "meta": {"resourceType": "Group", "version": "W/\"1\""},
    })
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, Durability::Full).expect("open store")
}

fn scim_err<T: std::fmt::Debug>(result: Result<T, StoreError>) -> ScimError {
    match result {
        Err(StoreError::Scim(e)) => e,
        other => panic!("expected a SCIM error, got {other:?}"),
    }
}

fn is_backend<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Backend(_)))
}

/// A PATCH-like mutation: set `attr` to `value`.
fn set(attr: &'static str, value: &str) -> MutateFn {
    let value = value.to_owned();
    Box::new(move |rec: &Record, version: u64| {
        let mut doc = (*rec.doc).clone();
        doc[attr] = json!(value);
        doc["meta"]["version"] = json!(format!("W/\"{version}\""));
        Ok(Mutation::Replace(doc))
    })
}

/// The member-add PATCH Entra sends, as a read-modify-write.
fn add_member(member: &str) -> MutateFn {
    let member = member.to_owned();
    Box::new(move |rec: &Record, version: u64| {
        if member_ids(&rec.doc).any(|m| m == member) {
            return Ok(Mutation::Unchanged);
        }
        let mut doc = (*rec.doc).clone();
        match doc.get_mut("members").and_then(Value::as_array_mut) {
            Some(members) => members.push(json!({"value": member})),
            None => doc["members"] = json!([{"value": member}]),
        }
        doc["meta"]["version"] = json!(format!("W/\"{version}\""));
        Ok(Mutation::Replace(doc))
    })
}

fn all(kind: ResourceKind) -> Query<'static> {
    Query { kind, hint: None, matches: None, sort: None, start_index: 1, count: usize::MAX }
}

fn ids(page: &Page) -> Vec<&str> {
    page.records.iter().map(|r| r.id.as_str()).collect()
}

fn members_of(rec: &Record) -> Vec<String> {
    member_ids(&rec.doc).map(str::to_owned).collect()
}

/// Everything the store holds, in a comparable form.
async fn snapshot(store: &SqliteStore) -> Vec<(ResourceKind, String, u64, String)> {
    let mut out = Vec::new();
    for kind in [USER, GROUP] {
        for r in store.query(all(kind)).await.unwrap().records {
            out.push((kind, r.id.clone(), r.version, r.doc.to_string()));
        }
    }
    out
}

type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls a store call once, which puts its command on the writer's queue,
/// so tests control the order of commands within a batch.
fn enqueue<'a, T>(mut fut: Pending<'a, T>) -> Pending<'a, T> {
    let poll = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(matches!(poll, Poll::Pending), "the writer should be blocked");
    fut
}

/// Parks the writer inside a mutate closure of an update of `id` until the
/// returned sender is used (or dropped), so that commands queued meanwhile
/// form one batch.
async fn block_writer(
    store: &Arc<SqliteStore>,
    kind: ResourceKind,
    id: &str,
) -> (tokio::task::JoinHandle<Result<Record, StoreError>>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let s = Arc::clone(store);
    let id = id.to_owned();
    let handle = tokio::spawn(async move {
        s.update(
            kind,
            &id,
            Box::new(move |_: &Record, _: u64| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
                Ok(Mutation::Unchanged)
            }),
        )
        .await
    });
    entered_rx.await.expect("the writer ran the blocking closure");
    (handle, release_tx)
}
