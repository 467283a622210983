//! Batch planning: what one command changes, decided against the committed
//! state plus the earlier commands of its batch. Pure: no SQLite here, so the
//! rules (uniqueness, membership, cascades) are unit-tested without a database.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use serde_json::Value;
use time::OffsetDateTime;

use super::state::{Change, Entry, State};
use crate::scim::error::ScimError;
use crate::scim::names::unique_name_key;
use crate::scim::schema::ResourceKind;
use crate::store::{
    ApiKeyChange, Enqueue, MutateFn, Mutation, OutboxEntry, ProjectionNote, Record, SideEffects, SideEffectsFn,
    StoreError, now_ms,
};

/// A write request as the writer runs it.
pub(super) enum Op {
    Create {
        kind: ResourceKind,
        doc: Value,
        side: SideEffects,
    },
    Update {
        kind: ResourceKind,
        id: String,
        mutate: MutateFn,
    },
    Delete {
        kind: ResourceKind,
        id: String,
        side: Option<SideEffectsFn>,
    },
    Side {
        side: SideEffects,
    },
    /// `removed` reports back whether the entry was removed.
    OutboxComplete {
        entry: OutboxEntry,
        projection: Option<ProjectionNote>,
        removed: Arc<AtomicBool>,
    },
    OutboxRetry {
        entry: OutboxEntry,
        next_attempt_ms: u64,
        error: String,
    },
    /// Self-service keys: no rule to check against the batch.
    ApiKey(ApiKeyChange),
}

/// What the requests of the current batch changed so far, layered over the
/// committed state.
#[derive(Default)]
pub(super) struct Overlay {
    /// Latest version of every resource the batch touched; `None`: deleted.
    entries: HashMap<String, Option<(ResourceKind, Entry)>>,
    /// Unique names the batch claimed (`Some(id)`) or released (`None`).
    names: HashMap<(ResourceKind, String), Option<String>>,
    outbox: HashMap<(ResourceKind, String), Option<OutboxEntry>>,
    /// Every change of the batch so far, in order: what the state folds in
    /// once the batch committed.
    pub(super) changes: Vec<Change>,
}

impl Overlay {
    /// Layers a change that was written (not yet committed) over `base`.
    pub(super) fn record(&mut self, base: &State, change: Change) {
        let (kind, id) = match &change {
            Change::Insert { kind, entry, .. } | Change::Update { kind, entry, .. } => (*kind, entry.id()),
            Change::Delete { kind, id } => (*kind, id.as_str()),
            Change::OutboxPut { entry } => {
                self.outbox.insert((entry.kind, entry.id.clone()), Some(entry.clone()));
                self.changes.push(change);
                return;
            }
            Change::OutboxDelete { kind, id } => {
                self.outbox.insert((*kind, id.clone()), None);
                self.changes.push(change);
                return;
            }
            // Nothing in a batch reads projection bookkeeping or keys back.
            Change::Projection { .. } | Change::ApiKey(_) => {
                self.changes.push(change);
                return;
            }
        };
        let old_name = View { base, overlay: &*self }.get(kind, id).map(|e| e.name_lower.to_string());
        if let Some(old) = old_name {
            self.names.insert((kind, old), None);
        }
        match &change {
            Change::Insert { kind, entry, .. } | Change::Update { kind, entry, .. } => {
                self.names.insert((*kind, entry.name_lower.to_string()), Some(entry.id().to_owned()));
                self.entries.insert(entry.id().to_owned(), Some((*kind, entry.clone())));
            }
            Change::Delete { id, .. } => {
                self.entries.insert(id.clone(), None);
            }
            Change::OutboxPut { .. } | Change::OutboxDelete { .. } | Change::Projection { .. } | Change::ApiKey(_) => {}
        }
        self.changes.push(change);
    }
}

/// The state as the next request of a batch sees it.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) base: &'a State,
    pub(super) overlay: &'a Overlay,
}

impl<'a> View<'a> {
    fn find_any(&self, id: &str) -> Option<(ResourceKind, &'a Entry)> {
        match self.overlay.entries.get(id) {
            Some(Some((kind, entry))) => Some((*kind, entry)),
            Some(None) => None,
            None => self.base.find_any(id),
        }
    }

    fn get(&self, kind: ResourceKind, id: &str) -> Option<&'a Entry> {
        self.find_any(id).filter(|(k, _)| *k == kind).map(|(_, e)| e)
    }

    /// The id holding a unique name (its `unique_name_key`).
    fn name_owner(&self, kind: ResourceKind, name: &str) -> Option<&'a str> {
        match self.overlay.names.get(&(kind, name.to_owned())) {
            Some(owner) => owner.as_deref(),
            None => self.base.kind(kind).by_name(name).map(Entry::id),
        }
    }

    /// Groups whose current document lists `member`: those the committed index
    /// names and that the batch left alone, plus those the batch wrote.
    fn groups_containing(&self, member: &str) -> Vec<&'a Entry> {
        let mut seen = HashSet::new();
        let committed = self
            .base
            .members
            .get(member)
            .into_iter()
            .flatten()
            .filter_map(|seq| self.base.groups.by_seq.get(seq))
            .map(Entry::id);
        let touched = self
            .overlay
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Some((ResourceKind::Group, _))))
            .map(|(id, _)| id.as_str());
        committed
            .chain(touched)
            .filter(|id| seen.insert(*id))
            .filter_map(|id| self.get(ResourceKind::Group, id))
            .filter(|g| g.members.iter().any(|m| m == member))
            .collect()
    }

    fn outbox_get(&self, kind: ResourceKind, id: &str) -> Option<&'a OutboxEntry> {
        let key = (kind, id.to_owned());
        match self.overlay.outbox.get(&key) {
            Some(e) => e.as_ref(),
            None => self.base.outbox.get(&key),
        }
    }

    /// What `op` changes and answers; `next_seq` is the next creation order.
    pub(super) fn plan(&self, op: Op, next_seq: &mut u64) -> Result<Plan, StoreError> {
        match op {
            Op::Create { kind, doc, side } => {
                let mut plan = self.plan_create(kind, doc, next_seq)?;
                self.side_changes(side, &mut plan.changes);
                Ok(plan)
            }
            Op::Update { kind, id, mutate } => self.plan_update(kind, &id, mutate),
            Op::Delete { kind, id, side } => {
                let record = self.get(kind, &id).map(|e| e.doc.record()).transpose()?;
                let mut plan = self.plan_delete(kind, &id)?;
                if let (Some(side), Some(record)) = (side, record) {
                    let effects = catch_unwind(AssertUnwindSafe(|| side(&record)))
                        .map_err(|_| StoreError::Backend(format!("deleting {} {id} panicked", kind.name())))?;
                    self.side_changes(effects, &mut plan.changes);
                }
                Ok(plan)
            }
            Op::Side { side } => {
                let mut changes = Vec::new();
                self.side_changes(side, &mut changes);
                Ok(Plan { changes, reply: None })
            }
            Op::OutboxComplete { entry, projection, removed } => {
                let (changes, done) = self.outbox_complete(&entry, projection);
                removed.store(done, AtomicOrdering::Relaxed);
                Ok(Plan { changes, reply: None })
            }
            Op::ApiKey(change) => Ok(Plan { changes: vec![Change::ApiKey(change)], reply: None }),
            Op::OutboxRetry { entry, next_attempt_ms, error } => {
                Ok(Plan { changes: self.outbox_retry(&entry, next_attempt_ms, error), reply: None })
            }
        }
    }

    /// Removes `entry` unless a newer change was enqueued since it was read;
    /// says whether it removed it.
    fn outbox_complete(&self, entry: &OutboxEntry, projection: Option<ProjectionNote>) -> (Vec<Change>, bool) {
        let mut changes = Vec::new();
        let current = self.outbox_get(entry.kind, &entry.id);
        let done = current.is_some_and(|c| c.generation == entry.generation);
        if done {
            changes.push(Change::OutboxDelete { kind: entry.kind, id: entry.id.clone() });
        } else if let Some(c) = current {
            // A newer change arrived while this one was projected: keep it,
            // due now, without counting this attempt as a failure.
            let entry = OutboxEntry { attempts: 0, next_attempt_ms: now_ms(), last_error: None, ..c.clone() };
            changes.push(Change::OutboxPut { entry });
        }
        if let Some(ProjectionNote { id, state }) = projection {
            changes.push(Change::Projection { id, state });
        }
        (changes, done)
    }

    fn outbox_retry(&self, entry: &OutboxEntry, next_attempt_ms: u64, error: String) -> Vec<Change> {
        let Some(c) = self.outbox_get(entry.kind, &entry.id) else {
            return Vec::new();
        };
        let retried = OutboxEntry {
            attempts: c.attempts.saturating_add(1),
            // A newer generation keeps its own (sooner) schedule.
            next_attempt_ms: if c.generation == entry.generation { next_attempt_ms } else { c.next_attempt_ms },
            last_error: Some(error),
            ..c.clone()
        };
        vec![Change::OutboxPut { entry: retried }]
    }

    /// The changes that carry out `side`, as seen from this view.
    fn side_changes(&self, side: SideEffects, changes: &mut Vec<Change>) {
        let now = now_ms();
        let mut seen = HashSet::new();
        for Enqueue { kind, id } in side.enqueue {
            if !seen.insert((kind, id.clone())) {
                continue;
            }
            let entry = match self.outbox_get(kind, &id) {
                Some(cur) => OutboxEntry {
                    generation: cur.generation + 1,
                    // An entry backing off after failures keeps its schedule, so
                    // a stream of changes cannot turn backoff into a hot loop.
                    next_attempt_ms: if cur.attempts == 0 { cur.next_attempt_ms.min(now) } else { cur.next_attempt_ms },
                    ..cur.clone()
                },
                None => OutboxEntry {
                    kind,
                    id,
                    generation: 1,
                    enqueued_ms: now,
                    attempts: 0,
                    next_attempt_ms: now,
                    last_error: None,
                },
            };
            changes.push(Change::OutboxPut { entry });
        }
        for ProjectionNote { id, state } in side.projection {
            changes.push(Change::Projection { id, state });
        }
    }

    fn plan_create(&self, kind: ResourceKind, doc: Value, next_seq: &mut u64) -> Result<Plan, StoreError> {
        let Some(id) = doc.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(ScimError::invalid_value("id is required").into());
        };
        self.check_unique_name(kind, &doc, None)?;
        if let Some((other, _)) = self.find_any(&id) {
            return Err(ScimError::uniqueness(format!(
                "id \"{id}\" is already taken by another {}",
                other.name().to_lowercase()
            ))
            .into());
        }
        self.check_members(kind, &doc)?;
        let seq = *next_seq;
        *next_seq += 1;
        let (entry, json) = Entry::written(kind, &id, 1, seq, &doc)?;
        let reply = Record { id, version: 1, doc: Arc::new(doc) };
        Ok(Plan { reply: Some(reply), changes: vec![Change::Insert { kind, entry, json }] })
    }

    fn plan_update(&self, kind: ResourceKind, id: &str, mutate: MutateFn) -> Result<Plan, StoreError> {
        let current = self.get(kind, id).ok_or_else(|| not_found(kind, id))?;
        let record = current.doc.record()?;
        let version = current.doc.version + 1;
        // The closure is the caller's code running on the writer thread; a panic
        // there must fail this command, not take the writer (and every later
        // write) down with it.
        let mutation = catch_unwind(AssertUnwindSafe(|| mutate(&record, version)))
            .map_err(|_| StoreError::Backend(format!("updating {} {id} panicked", kind.name())))??;
        let mut mutation = mutation;
        let mut side = SideEffects::default();
        while let Mutation::WithSideEffects { mutation: inner, side: more } = mutation {
            side.enqueue.extend(more.enqueue);
            side.projection.extend(more.projection);
            mutation = *inner;
        }
        let mut doc = match mutation {
            Mutation::Replace(doc) => doc,
            Mutation::Unchanged | Mutation::WithSideEffects { .. } => {
                let mut changes = Vec::new();
                self.side_changes(side, &mut changes);
                return Ok(Plan { reply: Some(record), changes });
            }
        };
        // `id` is read-only (RFC 7643 §3.1), so the stored one wins over whatever
        // the new document says.
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("id".to_owned(), Value::String(id.to_owned()));
        }
        // A name that keeps its key is never a new conflict: two resources
        // stored before the key folded spaces and full-width letters may share
        // one, and Entra must still be able to update (deactivate) both.
        let keeps_key = doc
            .get(kind.unique_name_attr())
            .and_then(Value::as_str)
            .is_some_and(|n| unique_name_key(n) == *current.name_lower);
        if !keeps_key {
            self.check_unique_name(kind, &doc, Some(id))?;
        }
        self.check_members(kind, &doc)?;
        let (entry, json) = Entry::written(kind, id, version, current.seq, &doc)?;
        let reply = Record { id: id.to_owned(), version, doc: Arc::new(doc) };
        let mut changes = vec![Change::update(kind, entry, json, current)];
        self.side_changes(side, &mut changes);
        Ok(Plan { reply: Some(reply), changes })
    }

    fn plan_delete(&self, kind: ResourceKind, id: &str) -> Result<Plan, StoreError> {
        if self.get(kind, id).is_none() {
            return Err(not_found(kind, id));
        }
        let mut changes = vec![Change::Delete { kind, id: id.to_owned() }];
        let now = now_rfc3339();
        for group in self.groups_containing(id) {
            if kind == ResourceKind::Group && group.id() == id {
                continue;
            }
            let version = group.doc.version + 1;
            let mut doc = group.doc.value()?;
            if let Some(members) = doc.get_mut("members").and_then(Value::as_array_mut) {
                members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
            }
            // An empty multi-valued attribute is stored as absent, as the
            // SCIM layer does for client writes.
            if doc.get("members").and_then(Value::as_array).is_some_and(Vec::is_empty)
                && let Some(obj) = doc.as_object_mut()
            {
                obj.remove("members");
            }
            stamp_meta(&mut doc, version, now.as_deref());
            let (entry, json) = Entry::written(ResourceKind::Group, group.id(), version, group.seq, &doc)?;
            changes.push(Change::update(ResourceKind::Group, entry, json, group));
        }
        Ok(Plan { reply: None, changes })
    }

    /// Fails unless the unique name is a string no other resource (than
    /// `self_id`) holds.
    fn check_unique_name(&self, kind: ResourceKind, doc: &Value, self_id: Option<&str>) -> Result<(), StoreError> {
        let attr = kind.unique_name_attr();
        let Some(name) = doc.get(attr).and_then(Value::as_str) else {
            return Err(ScimError::invalid_value(format!("{attr} is required")).into());
        };
        let key = unique_name_key(name);
        match self.name_owner(kind, &key) {
            Some(owner) if Some(owner) != self_id => Err(ScimError::uniqueness(format!(
                "{attr} \"{name}\" is already taken by another {}",
                kind.name().to_lowercase()
            ))
            .into()),
            _ => Ok(()),
        }
    }

    fn check_members(&self, kind: ResourceKind, doc: &Value) -> Result<(), StoreError> {
        if kind != ResourceKind::Group {
            return Ok(());
        }
        let members = match doc.get("members") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(members)) => members,
            Some(_) => return Err(ScimError::invalid_value("members must be an array").into()),
        };
        for member in members {
            let Some(id) = member.get("value").and_then(Value::as_str) else {
                return Err(ScimError::invalid_value("members: every member needs a string \"value\"").into());
            };
            if self.find_any(id).is_none() {
                return Err(ScimError::invalid_value(format!("members: no user or group with id \"{id}\"")).into());
            }
        }
        Ok(())
    }
}

/// One request's changes, all or nothing, and its answer.
pub(super) struct Plan {
    pub(super) changes: Vec<Change>,
    pub(super) reply: Option<Record>,
}

fn not_found(kind: ResourceKind, id: &str) -> StoreError {
    ScimError::not_found(format!("{} {id} not found", kind.name())).into()
}

/// RFC 3339 UTC with milliseconds, as the SCIM layer writes `meta` timestamps.
fn now_rfc3339() -> Option<String> {
    Some(crate::scim::resource::timestamp(OffsetDateTime::now_utc()))
}

/// Keeps `meta` in step with a version the store assigned by itself.
fn stamp_meta(doc: &mut Value, version: u64, now: Option<&str>) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let meta = obj.entry("meta").or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert("version".to_owned(), Value::String(format!("W/\"{version}\"")));
        if let Some(now) = now {
            meta.insert("lastModified".to_owned(), Value::String(now.to_owned()));
        }
    }
}
