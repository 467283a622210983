//! The embedded store: one SQLite file (`scim.db`, WAL mode) in the data dir,
//! with every resource also held in memory.
//!
//! Reads never touch SQLite: they take a read lock on the in-memory state,
//! which holds only committed data. Writes go to one writer thread that owns
//! the connection. It takes every command already queued (up to
//! [`MAX_BATCH`]) and runs them in one transaction, so concurrent clients share
//! one fsync (group commit). Each command is validated against the committed
//! state plus the earlier commands of its batch (an overlay), is written
//! atomically (a SAVEPOINT when it spans several statements) so that a failing
//! command leaves the others intact, and is acknowledged only after COMMIT
//! returned (with `durability: full` the commit's WAL frames reach the OS in
//! one write, see `wal_vfs`). The overlay is folded into the
//! shared state under a short write lock after the commit, so readers are
//! never blocked for the duration of an fsync. WAL checkpoints run on a
//! thread of their own (`checkpoint`), not inside a client's COMMIT.
//!
//! Documents are held in memory as compact JSON text (packed, see `packed`)
//! and parsed on read. A
//! parsed `serde_json::Value` (with `preserve_order`) of a typical Entra user
//! takes about 6 KB against 0.7 KB of text, i.e. 60 MB instead of 7 MB for
//! 10,000 users, while parsing one costs about 4 µs. Everything the indexes,
//! validation and `groups_of` need is extracted at write time, so only reads
//! that return or filter documents parse them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, params};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::checkpoint::{self, CheckpointCounts, Checkpointer};
use super::packed::Packed;
use super::{
    Counts, IndexHint, MutateFn, Mutation, OutboxEntry, OutboxStats, Page, Query, Record, SideEffects, SideEffectsFn,
    Store, StoreError, WriterStats, now_ms,
};
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceKind;

/// The database file inside the data dir.
pub const DB_FILE: &str = "scim.db";

/// Held (`flock`) while a store has the data dir open: the in-memory state is
/// only right if this process is the only writer.
pub const LOCK_FILE: &str = "scim.lock";

/// Upper bound on commands per transaction, so one huge backlog cannot hold
/// its first callers hostage to the last one's work.
pub const MAX_BATCH: usize = 256;

/// Bumped when the table layout changes; a file from a newer layout is refused
/// rather than misread.
const SCHEMA_VERSION: i64 = 2;

/// How long `open` waits for another process that holds the file (e.g. the
/// previous server still shutting down) before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    seq               INTEGER PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL CHECK (kind IN ('User', 'Group')),
    unique_name_lower TEXT    NOT NULL,
    external_id       TEXT,
    version           INTEGER NOT NULL,
    doc               TEXT    NOT NULL,
    UNIQUE (kind, unique_name_lower)
) STRICT;
CREATE TABLE IF NOT EXISTS outbox (
    kind            TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    generation      INTEGER NOT NULL,
    enqueued_ms     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    PRIMARY KEY (kind, id)
) STRICT;
CREATE TABLE IF NOT EXISTS projection (
    id    TEXT PRIMARY KEY,
    state TEXT NOT NULL
) STRICT;
";
const OUTBOX_PUT_SQL: &str = "INSERT OR REPLACE INTO outbox (kind, id, generation, enqueued_ms, attempts, next_attempt_ms, last_error) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const OUTBOX_DELETE_SQL: &str = "DELETE FROM outbox WHERE kind = ?1 AND id = ?2";
const PROJECTION_SET_SQL: &str = "INSERT OR REPLACE INTO projection (id, state) VALUES (?1, ?2)";
const PROJECTION_CLEAR_SQL: &str = "DELETE FROM projection WHERE id = ?1";

const INSERT_SQL: &str = "INSERT INTO resources (seq, id, kind, unique_name_lower, external_id, version, doc) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const UPDATE_SQL: &str = "UPDATE resources SET unique_name_lower = ?2, external_id = ?3, version = ?4, doc = ?5 \
     WHERE id = ?1";
const UPDATE_DOC_SQL: &str = "UPDATE resources SET version = ?2, doc = ?3 WHERE id = ?1";
const DELETE_SQL: &str = "DELETE FROM resources WHERE id = ?1";

/// When a write counts as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: acknowledged only after the WAL is fsynced, so it
    /// survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: acknowledged once written to the OS; survives the
    /// process being killed, not the machine losing power.
    Normal,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!("unknown durability {other:?} (expected \"full\" or \"normal\")")),
        }
    }
}

// ---------------------------------------------------------------------------
// In-memory state

/// A stored document as reads copy it out of the lock: two reference counts,
/// no deep copy, so parsing happens after the lock is released.
#[derive(Debug, Clone)]
struct Doc {
    id: Arc<str>,
    version: u64,
    /// The compact JSON written to the database, packed.
    text: Packed,
}

impl Doc {
    fn value(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.text.unpack())
            .map_err(|e| StoreError::Backend(format!("stored document {} is not valid JSON: {e}", self.id)))
    }

    fn record(&self) -> Result<Record, StoreError> {
        Ok(Record { id: self.id.to_string(), version: self.version, doc: Arc::new(self.value()?) })
    }
}

/// A stored resource with what the indexes need, extracted once at write time.
#[derive(Debug, Clone)]
struct Entry {
    doc: Doc,
    /// Creation order; never changes on update.
    seq: u64,
    /// The unique name as stored (`groups_of` returns it).
    name: Arc<str>,
    /// The same allocation as `name` when the name is already lowercase
    /// (the usual case): the indexes below share these strings.
    name_lower: Arc<str>,
    external_id: Option<Arc<str>>,
    /// Member ids of a group (empty for users).
    members: Vec<String>,
}

impl Entry {
    /// `doc` serialised once: the JSON for the database, and the entry (which
    /// holds it packed) for memory.
    fn written(
        kind: ResourceKind,
        id: &str,
        version: u64,
        seq: u64,
        doc: &Value,
    ) -> Result<(Self, String), StoreError> {
        let json = doc_text(doc)?;
        Ok((Self::with_text(kind, id, version, seq, doc, &json), json))
    }

    /// `text` must be `doc` serialised.
    fn with_text(kind: ResourceKind, id: &str, version: u64, seq: u64, doc: &Value, text: &str) -> Self {
        let name_str = doc.get(kind.unique_name_attr()).and_then(Value::as_str).unwrap_or_default();
        let name: Arc<str> = name_str.into();
        let lower = name_str.to_lowercase();
        let name_lower = if lower == name_str { name.clone() } else { lower.into() };
        let members = match kind {
            ResourceKind::Group => member_ids(doc).map(str::to_owned).collect(),
            ResourceKind::User => Vec::new(),
        };
        Entry {
            doc: Doc { id: id.into(), version, text: Packed::pack(text) },
            seq,
            name,
            name_lower,
            external_id: external_id(doc).map(Arc::from),
            members,
        }
    }

    fn id(&self) -> &str {
        &self.doc.id
    }
}

/// Resources of one kind. Everything is keyed by `seq` so that iteration in
/// creation order needs no extra lookups.
/// The seqs sharing one externalId: almost always exactly one, kept inline.
#[derive(Debug)]
enum Seqs {
    One(u64),
    Many(BTreeSet<u64>),
}

impl Seqs {
    fn insert(&mut self, seq: u64) {
        match self {
            Seqs::One(s) if *s == seq => {}
            Seqs::One(s) => *self = Seqs::Many(BTreeSet::from([*s, seq])),
            Seqs::Many(set) => {
                set.insert(seq);
            }
        }
    }

    /// False once empty.
    fn remove(&mut self, seq: u64) -> bool {
        match self {
            Seqs::One(s) => *s != seq,
            Seqs::Many(set) => {
                set.remove(&seq);
                if let (1, Some(&only)) = (set.len(), set.first()) {
                    *self = Seqs::One(only);
                }
                !matches!(self, Seqs::Many(set) if set.is_empty())
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many) = match self {
            Seqs::One(s) => (Some(*s), None),
            Seqs::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Index keys share the entry's `Arc<str>`s instead of copying them: with
/// 10k users that is several MB. Every map here is a B-tree, not a hash map:
/// a hash map doubles all at once, and with 100k users that rehash held the
/// state's write lock (so every request) for about 90 ms, which set the p99
/// of a create benchmark at 12 ms instead of under 3.
#[derive(Debug, Default)]
struct KindState {
    by_seq: BTreeMap<u64, Entry>,
    by_id: BTreeMap<Arc<str>, u64>,
    by_name: BTreeMap<Arc<str>, u64>,
    by_external: BTreeMap<Arc<str>, Seqs>,
}

impl KindState {
    fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).and_then(|seq| self.by_seq.get(seq))
    }

    fn by_name(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).and_then(|seq| self.by_seq.get(seq))
    }

    fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let old = self.remove(entry.id());
        let seq = entry.seq;
        self.by_id.insert(entry.doc.id.clone(), seq);
        self.by_name.insert(entry.name_lower.clone(), seq);
        if let Some(ext) = &entry.external_id {
            match self.by_external.get_mut(ext) {
                Some(seqs) => seqs.insert(seq),
                None => {
                    self.by_external.insert(ext.clone(), Seqs::One(seq));
                }
            }
        }
        self.by_seq.insert(seq, entry);
        old
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let seq = self.by_id.remove(id)?;
        let entry = self.by_seq.remove(&seq)?;
        if self.by_name.get(&entry.name_lower) == Some(&seq) {
            self.by_name.remove(&entry.name_lower);
        }
        if let Some(ext) = &entry.external_id
            && let Some(seqs) = self.by_external.get_mut(ext)
            && !seqs.remove(seq)
        {
            self.by_external.remove(ext);
        }
        Some(entry)
    }
}

#[derive(Debug, Default)]
struct State {
    users: KindState,
    groups: KindState,
    /// Member id → `seq`s of the groups listing it.
    members: BTreeMap<String, BTreeSet<u64>>,
    outbox: BTreeMap<(ResourceKind, String), OutboxEntry>,
    projection: BTreeMap<String, String>,
}

impl State {
    fn kind(&self, kind: ResourceKind) -> &KindState {
        match kind {
            ResourceKind::User => &self.users,
            ResourceKind::Group => &self.groups,
        }
    }

    fn kind_mut(&mut self, kind: ResourceKind) -> &mut KindState {
        match kind {
            ResourceKind::User => &mut self.users,
            ResourceKind::Group => &mut self.groups,
        }
    }

    /// Ids are unique across kinds, because group members and `groups_of`
    /// name a resource by id alone.
    fn find_any(&self, id: &str) -> Option<(ResourceKind, &Entry)> {
        self.users
            .get(id)
            .map(|e| (ResourceKind::User, e))
            .or_else(|| self.groups.get(id).map(|e| (ResourceKind::Group, e)))
    }

    fn put(&mut self, kind: ResourceKind, entry: Entry) {
        let seq = entry.seq;
        let new_members: HashSet<String> = entry.members.iter().cloned().collect();
        if let Some(old) = self.kind_mut(kind).insert(entry) {
            for m in &old.members {
                if !new_members.contains(m) {
                    self.unlink_member(m, seq);
                }
            }
        }
        for m in new_members {
            self.members.entry(m).or_default().insert(seq);
        }
    }

    fn remove(&mut self, kind: ResourceKind, id: &str) {
        let Some(old) = self.kind_mut(kind).remove(id) else {
            return;
        };
        for m in &old.members {
            self.unlink_member(m, old.seq);
        }
    }

    fn unlink_member(&mut self, member: &str, group_seq: u64) {
        if let Some(set) = self.members.get_mut(member) {
            set.remove(&group_seq);
            if set.is_empty() {
                self.members.remove(member);
            }
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Insert(kind, entry, _) | Change::Update(kind, entry, ..) => self.put(kind, entry),
            Change::Delete(kind, id) => self.remove(kind, &id),
            Change::OutboxPut(e) => {
                self.outbox.insert((e.kind, e.id.clone()), e);
            }
            Change::OutboxDelete(kind, id) => {
                self.outbox.remove(&(kind, id));
            }
            Change::Projection(id, Some(state)) => {
                self.projection.insert(id, state);
            }
            Change::Projection(id, None) => {
                self.projection.remove(&id);
            }
        }
    }

    fn candidates<'s>(&'s self, q: &Query<'_>) -> Box<dyn Iterator<Item = &'s Entry> + 's> {
        let ks = self.kind(q.kind);
        match &q.hint {
            None => Box::new(ks.by_seq.values()),
            Some(IndexHint::Id(id)) => Box::new(ks.get(id).into_iter()),
            // Lowercasing again is idempotent and keeps the index sound even if a
            // caller forgot to.
            Some(IndexHint::UniqueName(name)) => Box::new(ks.by_name(&name.to_lowercase()).into_iter()),
            Some(IndexHint::ExternalId(ext)) => Box::new(
                ks.by_external.get(ext.as_str()).into_iter().flat_map(Seqs::iter).filter_map(|seq| ks.by_seq.get(&seq)),
            ),
        }
    }

    fn groups_of(&self, member_id: &str) -> Vec<(String, String)> {
        let Some(seqs) = self.members.get(member_id) else {
            return Vec::new();
        };
        seqs.iter()
            .filter_map(|seq| self.groups.by_seq.get(seq))
            .map(|g| (g.id().to_owned(), g.name.to_string()))
            .collect()
    }
}

/// Runs a query: candidates are copied out under the read lock, documents are
/// parsed and filtered after it is released, so a long scan never holds up
/// the writer (nor, behind it, other readers).
fn run_query(state: &RwLock<State>, q: &Query<'_>) -> Result<Page, StoreError> {
    let skip = q.start_index.max(1) - 1;
    if q.matches.is_none() && q.sort.is_none() {
        // Every candidate matches: count them, parse only the page.
        let (total, page) = {
            let st = state.read();
            let all: Vec<&Entry> = st.candidates(q).collect();
            let page: Vec<Doc> = all.iter().skip(skip).take(q.count).map(|e| e.doc.clone()).collect();
            (all.len(), page)
        };
        let records = page.iter().map(Doc::record).collect::<Result<_, _>>()?;
        return Ok(Page { total, records });
    }
    let docs: Vec<Doc> = state.read().candidates(q).map(|e| e.doc.clone()).collect();
    let mut matching = Vec::new();
    for doc in &docs {
        let record = doc.record()?;
        if q.matches.is_none_or(|m| m(&record.doc)) {
            matching.push(record);
        }
    }
    if let Some(sort) = q.sort {
        matching.sort_by(|a, b| sort(&a.doc, &b.doc));
    }
    let total = matching.len();
    let records = matching.into_iter().skip(skip).take(q.count).collect();
    Ok(Page { total, records })
}

/// The member ids a group document lists.
fn member_ids(doc: &Value) -> impl Iterator<Item = &str> {
    doc.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str))
}

// ---------------------------------------------------------------------------
// A batch in progress

/// One step of a command, as applied to SQLite and then to the state.
#[derive(Debug)]
enum Change {
    /// With the document's JSON as it goes to the database (the entry keeps
    /// it packed), so it is not unpacked again for the write.
    Insert(ResourceKind, Entry, String),
    /// The flag: the indexed columns (unique name, externalId) changed. When
    /// they did not, the row is rewritten without touching the name index, so
    /// the commit puts one B-tree page in the WAL instead of two.
    Update(ResourceKind, Entry, String, bool),
    Delete(ResourceKind, String),
    OutboxPut(OutboxEntry),
    OutboxDelete(ResourceKind, String),
    Projection(String, Option<String>),
}

impl Change {
    /// `old` replaced by `entry`; the flag says whether the columns SQLite
    /// indexes or keeps beside the document differ.
    fn update(kind: ResourceKind, entry: Entry, json: String, old: &Entry) -> Self {
        let keys_changed = entry.name_lower != old.name_lower || entry.external_id != old.external_id;
        Change::Update(kind, entry, json, keys_changed)
    }
}

/// What the commands of the current batch changed so far, layered over the
/// committed state.
#[derive(Default)]
struct Overlay {
    /// Latest version of every resource the batch touched; `None`: deleted.
    entries: HashMap<String, Option<(ResourceKind, Entry)>>,
    /// Unique names the batch claimed (`Some(id)`) or released (`None`).
    names: HashMap<(ResourceKind, String), Option<String>>,
    outbox: HashMap<(ResourceKind, String), Option<OutboxEntry>>,
    changes: Vec<Change>,
}

impl Overlay {
    fn record(&mut self, base: &State, change: Change) {
        let (kind, id) = match &change {
            Change::Insert(k, e, _) | Change::Update(k, e, ..) => (*k, e.id()),
            Change::Delete(k, id) => (*k, id.as_str()),
            Change::OutboxPut(e) => {
                self.outbox.insert((e.kind, e.id.clone()), Some(e.clone()));
                self.changes.push(change);
                return;
            }
            Change::OutboxDelete(k, id) => {
                self.outbox.insert((*k, id.clone()), None);
                self.changes.push(change);
                return;
            }
            // Nothing in a batch reads projection bookkeeping back.
            Change::Projection(..) => {
                self.changes.push(change);
                return;
            }
        };
        let old_name = View { base, overlay: &*self }.get(kind, id).map(|e| e.name_lower.to_string());
        if let Some(old) = old_name {
            self.names.insert((kind, old), None);
        }
        match &change {
            Change::Insert(k, e, _) | Change::Update(k, e, ..) => {
                self.names.insert((*k, e.name_lower.to_string()), Some(e.id().to_owned()));
                self.entries.insert(e.id().to_owned(), Some((*k, e.clone())));
            }
            Change::Delete(_, id) => {
                self.entries.insert(id.clone(), None);
            }
            Change::OutboxPut(_) | Change::OutboxDelete(..) | Change::Projection(..) => {}
        }
        self.changes.push(change);
    }
}

/// The state as the next command of a batch sees it.
#[derive(Clone, Copy)]
struct View<'a> {
    base: &'a State,
    overlay: &'a Overlay,
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

    /// The id holding a (lowercased) unique name.
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

    fn plan(&self, op: Op, next_seq: &mut u64) -> Result<Plan, StoreError> {
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
            Op::Side(side) => {
                let mut changes = Vec::new();
                self.side_changes(side, &mut changes);
                Ok(Plan { changes, reply: None })
            }
            Op::OutboxComplete { entry, projection, removed } => {
                let mut changes = Vec::new();
                let current = self.outbox_get(entry.kind, &entry.id);
                let done = current.is_some_and(|c| c.generation == entry.generation);
                if done {
                    changes.push(Change::OutboxDelete(entry.kind, entry.id.clone()));
                } else if let Some(c) = current {
                    // A newer change arrived while this one was projected: keep
                    // it, due now, without counting this attempt as a failure.
                    changes.push(Change::OutboxPut(OutboxEntry {
                        attempts: 0,
                        next_attempt_ms: now_ms(),
                        last_error: None,
                        ..c.clone()
                    }));
                }
                if let Some((id, state)) = projection {
                    changes.push(Change::Projection(id, state));
                }
                removed.store(done, AtomicOrdering::Relaxed);
                Ok(Plan { changes, reply: None })
            }
            Op::OutboxRetry { entry, next_attempt_ms, error } => {
                let changes = match self.outbox_get(entry.kind, &entry.id) {
                    Some(c) => vec![Change::OutboxPut(OutboxEntry {
                        attempts: c.attempts.saturating_add(1),
                        next_attempt_ms: if c.generation == entry.generation {
                            next_attempt_ms
                        } else {
                            c.next_attempt_ms
                        },
                        last_error: Some(error),
                        ..c.clone()
                    })],
                    None => Vec::new(),
                };
                Ok(Plan { changes, reply: None })
            }
        }
    }

    /// The changes that carry out `side`, as seen from this view.
    fn side_changes(&self, side: SideEffects, changes: &mut Vec<Change>) {
        let now = now_ms();
        let mut seen = HashSet::new();
        for (kind, id) in side.enqueue {
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
            changes.push(Change::OutboxPut(entry));
        }
        for (id, state) in side.projection {
            changes.push(Change::Projection(id, state));
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
        Ok(Plan { reply: Some(reply), changes: vec![Change::Insert(kind, entry, json)] })
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
        while let Mutation::WithSideEffects(inner, more) = mutation {
            side.enqueue.extend(more.enqueue);
            side.projection.extend(more.projection);
            mutation = *inner;
        }
        let mut doc = match mutation {
            Mutation::Replace(doc) => doc,
            Mutation::Unchanged | Mutation::WithSideEffects(..) => {
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
        self.check_unique_name(kind, &doc, Some(id))?;
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
        let mut changes = vec![Change::Delete(kind, id.to_owned())];
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
        let lower = name.to_lowercase();
        match self.name_owner(kind, &lower) {
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

struct Plan {
    changes: Vec<Change>,
    reply: Option<Record>,
}

fn not_found(kind: ResourceKind, id: &str) -> StoreError {
    ScimError::not_found(format!("{} {id} not found", kind.name())).into()
}

fn external_id(doc: &Value) -> Option<String> {
    doc.get("externalId").and_then(Value::as_str).map(str::to_owned)
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

// ---------------------------------------------------------------------------
// The writer thread

enum Op {
    Create { kind: ResourceKind, doc: Value, side: SideEffects },
    Update { kind: ResourceKind, id: String, mutate: MutateFn },
    Delete { kind: ResourceKind, id: String, side: Option<SideEffectsFn> },
    Side(SideEffects),
    OutboxComplete { entry: OutboxEntry, projection: Option<(String, Option<String>)>, removed: Arc<AtomicBool> },
    OutboxRetry { entry: OutboxEntry, next_attempt_ms: u64, error: String },
}

type Reply = oneshot::Sender<Result<Option<Record>, StoreError>>;

struct Command {
    op: Op,
    reply: Reply,
}

#[derive(Default)]
struct Shared {
    batches: AtomicU64,
    commands: AtomicU64,
    /// Test hook: the COMMIT of the batch with this number (counting from 1)
    /// fails as if the disk had refused it.
    #[cfg(test)]
    fail_commit_of_batch: AtomicU64,
}

struct Writer {
    conn: Connection,
    state: Arc<RwLock<State>>,
    shared: Arc<Shared>,
    next_seq: u64,
    checkpointer: Checkpointer,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        // `recv` keeps returning queued commands after the last sender is gone,
        // so shutdown finishes what was accepted before it exits.
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
        tracing::debug!("store writer stopped");
    }

    fn run_batch(&mut self, batch: Vec<Command>) {
        self.shared.batches.fetch_add(1, AtomicOrdering::Relaxed);
        self.shared.commands.fetch_add(batch.len() as u64, AtomicOrdering::Relaxed);
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = format!("could not start a transaction: {e}");
            tracing::error!("{msg}");
            // A transaction left open by an earlier failure would make every
            // later BEGIN fail too.
            self.recover();
            for cmd in batch {
                let _ = cmd.reply.send(Err(StoreError::Backend(msg.clone())));
            }
            return;
        }

        let state = Arc::clone(&self.state);
        let mut overlay = Overlay::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        // Set when SQLite rolled the whole transaction back on its own (I/O
        // error, disk full): nothing in this batch can be committed any more.
        let mut aborted: Option<String> = None;
        {
            // Only this thread ever takes the write lock, so holding a read lock
            // here blocks nobody.
            let base = state.read();
            for Command { op, reply } in batch {
                let result = match &aborted {
                    Some(msg) => Err(StoreError::Backend(msg.clone())),
                    None => self.execute(&base, &mut overlay, op),
                };
                if matches!(result, Err(StoreError::Backend(_))) && aborted.is_none() && self.conn.is_autocommit() {
                    aborted = Some("the transaction was aborted by the database".to_owned());
                }
                outcomes.push((reply, result));
            }
        }

        let committed = match aborted {
            Some(msg) => Err(msg),
            None => self.commit(),
        };
        match committed {
            Ok(()) => {
                let mut st = state.write();
                for change in overlay.changes {
                    st.apply(change);
                }
                drop(st);
                for (reply, result) in outcomes {
                    let _ = reply.send(result);
                }
                self.checkpointer.after_commit(&self.conn);
            }
            Err(msg) => {
                tracing::error!("store batch of {} commands failed: {msg}", outcomes.len());
                self.recover();
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    fn execute(&mut self, base: &State, overlay: &mut Overlay, op: Op) -> Result<Option<Record>, StoreError> {
        let plan = View { base, overlay: &*overlay }.plan(op, &mut self.next_seq)?;
        if plan.changes.is_empty() {
            return Ok(plan.reply);
        }
        self.write_atomically(&plan.changes)?;
        for change in plan.changes {
            overlay.record(base, change);
        }
        Ok(plan.reply)
    }

    /// Writes one command's changes, all or nothing, without disturbing the
    /// other commands of the batch.
    fn write_atomically(&self, changes: &[Change]) -> Result<(), StoreError> {
        if let [change] = changes {
            // One statement is atomic by itself; a savepoint would only cost.
            return self.write_change(change);
        }
        self.exec_cached("SAVEPOINT cmd").map_err(|e| backend("starting a savepoint", &e))?;
        let written = changes.iter().try_for_each(|c| self.write_change(c));
        let result = written.and_then(|()| {
            self.exec_cached("RELEASE cmd").map(|_| ()).map_err(|e| backend("releasing a savepoint", &e))
        });
        if result.is_err() {
            // Fails only if SQLite already rolled back the whole transaction,
            // which the caller detects.
            let _ = self.exec_cached("ROLLBACK TO cmd");
            let _ = self.exec_cached("RELEASE cmd");
        }
        result
    }

    fn exec_cached(&self, sql: &str) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute([])
    }

    fn write_change(&self, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::Insert(kind, e, json) => {
                self.conn
                    .prepare_cached(INSERT_SQL)
                    .and_then(|mut st| {
                        st.execute(params![
                            to_sql_int(e.seq),
                            e.id(),
                            kind.name(),
                            e.name_lower,
                            e.external_id,
                            to_sql_int(e.doc.version),
                            json
                        ])
                    })
                    .map_err(|err| sql_error(*kind, e.id(), "inserting", &err))?;
            }
            Change::Update(kind, e, json, keys_changed) => {
                let version = to_sql_int(e.doc.version);
                let n = if *keys_changed {
                    self.conn
                        .prepare_cached(UPDATE_SQL)
                        .and_then(|mut st| st.execute(params![e.id(), e.name_lower, e.external_id, version, json]))
                } else {
                    self.conn
                        .prepare_cached(UPDATE_DOC_SQL)
                        .and_then(|mut st| st.execute(params![e.id(), version, json]))
                }
                .map_err(|err| sql_error(*kind, e.id(), "updating", &err))?;
                expect_one_row(n, *kind, e.id())?;
            }
            Change::Delete(kind, id) => {
                let n = self
                    .conn
                    .prepare_cached(DELETE_SQL)
                    .and_then(|mut st| st.execute(params![id]))
                    .map_err(|err| sql_error(*kind, id, "deleting", &err))?;
                expect_one_row(n, *kind, id)?;
            }
            Change::OutboxPut(e) => {
                self.conn
                    .prepare_cached(OUTBOX_PUT_SQL)
                    .and_then(|mut st| {
                        st.execute(params![
                            e.kind.name(),
                            e.id,
                            to_sql_int(e.generation),
                            to_sql_int(e.enqueued_ms),
                            i64::from(e.attempts),
                            to_sql_int(e.next_attempt_ms),
                            e.last_error
                        ])
                    })
                    .map_err(|err| backend("writing the outbox", &err))?;
            }
            Change::OutboxDelete(kind, id) => {
                self.conn
                    .prepare_cached(OUTBOX_DELETE_SQL)
                    .and_then(|mut st| st.execute(params![kind.name(), id]))
                    .map_err(|err| backend("writing the outbox", &err))?;
            }
            Change::Projection(id, Some(state)) => {
                self.conn
                    .prepare_cached(PROJECTION_SET_SQL)
                    .and_then(|mut st| st.execute(params![id, state]))
                    .map_err(|err| backend("writing projection state", &err))?;
            }
            Change::Projection(id, None) => {
                self.conn
                    .prepare_cached(PROJECTION_CLEAR_SQL)
                    .and_then(|mut st| st.execute(params![id]))
                    .map_err(|err| backend("writing projection state", &err))?;
            }
        }
        Ok(())
    }

    fn commit(&self) -> Result<(), String> {
        #[cfg(test)]
        if self.shared.fail_commit_of_batch.load(AtomicOrdering::SeqCst)
            == self.shared.batches.load(AtomicOrdering::SeqCst)
        {
            return Err("commit failed: injected failure".to_owned());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| format!("commit failed: {e}"))
    }

    /// After a failed batch: end the transaction and make memory equal the
    /// database again. The in-memory state never saw the batch, but a failed
    /// COMMIT can leave it unclear what reached the file, and the file wins.
    fn recover(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!("rollback after a failed batch failed: {e}");
        }
        match load_state(&self.conn) {
            Ok((state, next_seq)) => {
                *self.state.write() = state;
                self.next_seq = next_seq;
            }
            Err(e) => tracing::error!("reloading the store after a failed batch failed: {e}"),
        }
    }
}

pub(super) fn backend(context: &str, err: &rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("{context}: {err}"))
}

fn sql_error(kind: ResourceKind, id: &str, action: &str, err: &rusqlite::Error) -> StoreError {
    let unique = matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    );
    if unique {
        // The in-memory checks should have caught this first; the database is
        // the last line of defence, and the client still gets a proper 409.
        tracing::warn!("database refused a duplicate {} {id}: {err}", kind.name());
        return ScimError::uniqueness(format!(
            "{} is already taken by another {}",
            kind.unique_name_attr(),
            kind.name().to_lowercase()
        ))
        .into();
    }
    backend(&format!("{action} {} {id}", kind.name()), err)
}

fn expect_one_row(n: usize, kind: ResourceKind, id: &str) -> Result<(), StoreError> {
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Backend(format!("{} {id}: expected one row in the database, found {n}", kind.name())))
    }
}

fn doc_text(doc: &Value) -> Result<String, StoreError> {
    serde_json::to_string(doc).map_err(|e| StoreError::Backend(format!("serialising a document: {e}")))
}

/// Versions and sequence numbers start at 1 and grow by one per write, so
/// they never get near `i64::MAX`; saturating keeps this total anyway.
fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn set_synchronous(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(|e| backend("setting synchronous", &e))
}

/// Takes the data dir's lock file, or says who has it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Backend(format!("opening the lock file {}: {e}", path.display())))?;
    // The previous server may still be shutting down: wait for it a little.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut attempt = file.try_lock();
    while matches!(attempt, Err(std::fs::TryLockError::WouldBlock)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        attempt = file.try_lock();
    }
    match attempt {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "the data dir {} is locked by another scim-operator server (lock file {}); stop it or use another --data-dir",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Backend(format!("locking the data dir ({}): {e}", path.display())))
        }
    }
}

/// The writer's connection. When every commit is fsynced it goes through
/// `wal_vfs`, which writes a commit's WAL frames in one call.
fn open_writer_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let opened = match durability {
        Durability::Full => {
            super::wal_vfs::register().map_err(StoreError::Backend)?;
            Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), super::wal_vfs::NAME)
        }
        Durability::Normal => Connection::open(path),
    };
    opened.map_err(|e| backend(&format!("opening {}", path.display()), &e))
}

fn configure(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| backend("setting the busy timeout", &e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| backend("enabling WAL (is another server using this data dir?)", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("the database refused WAL mode (journal_mode is {mode})")));
    }
    set_synchronous(conn, durability)?;
    // The WAL keeps the size of the largest batch it ever held (a batch of
    // updates to a big group rewrites its document each time); cap what stays
    // on disk after a checkpoint.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(|e| backend("setting the WAL size limit", &e))?;
    // Reads are served from memory, so the page cache only helps writes find
    // the B-tree pages they touch; 512 KiB holds the interior pages of a
    // large directory, and the OS caches the rest.
    conn.pragma_update(None, "cache_size", -512).map_err(|e| backend("setting the page cache size", &e))?;

    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| backend("reading the schema version", &e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, newer than this server's {SCHEMA_VERSION}"
        )));
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
        .map_err(|e| backend("creating the schema (is another server using this data dir?)", &e))
}

fn load_state(conn: &Connection) -> Result<(State, u64), StoreError> {
    let mut stmt = conn
        .prepare("SELECT seq, kind, id, version, doc FROM resources ORDER BY seq")
        .map_err(|e| backend("loading resources", &e))?;
    let mut rows = stmt.query([]).map_err(|e| backend("loading resources", &e))?;
    let mut state = State::default();
    let mut max_seq = 0u64;
    while let Some(row) = rows.next().map_err(|e| backend("loading resources", &e))? {
        let read = |e: rusqlite::Error| backend("reading a stored resource", &e);
        let seq: i64 = row.get(0).map_err(read)?;
        let kind: String = row.get(1).map_err(read)?;
        let id: String = row.get(2).map_err(read)?;
        let version: i64 = row.get(3).map_err(read)?;
        let text: String = row.get(4).map_err(read)?;
        let bad = |what: &str| StoreError::Backend(format!("stored resource {id}: {what}"));
        let kind = match kind.as_str() {
            "User" => ResourceKind::User,
            "Group" => ResourceKind::Group,
            _ => return Err(bad("unknown kind")),
        };
        let seq = u64::try_from(seq).map_err(|_| bad("negative seq"))?;
        let version = u64::try_from(version).map_err(|_| bad("negative version"))?;
        // Parsed once to extract the indexed fields, and to refuse a damaged
        // file at startup rather than fail reads later.
        let doc: Value = serde_json::from_str(&text).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
        max_seq = max_seq.max(seq);
        state.put(kind, Entry::with_text(kind, &id, version, seq, &doc, &text));
    }
    load_outbox(conn, &mut state)?;
    Ok((state, max_seq + 1))
}

fn load_outbox(conn: &Connection, state: &mut State) -> Result<(), StoreError> {
    let ctx = |e: rusqlite::Error| backend("loading the outbox", &e);
    let mut stmt = conn
        .prepare("SELECT kind, id, generation, enqueued_ms, attempts, next_attempt_ms, last_error FROM outbox")
        .map_err(ctx)?;
    let mut rows = stmt.query([]).map_err(ctx)?;
    while let Some(row) = rows.next().map_err(ctx)? {
        let kind: String = row.get(0).map_err(ctx)?;
        let kind = match kind.as_str() {
            "User" => ResourceKind::User,
            "Group" => ResourceKind::Group,
            _ => return Err(StoreError::Backend(format!("outbox entry of unknown kind {kind}"))),
        };
        let int = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.get(i).map_err(ctx)?;
            Ok(u64::try_from(v).unwrap_or_default())
        };
        let e = OutboxEntry {
            kind,
            id: row.get(1).map_err(ctx)?,
            generation: int(2)?,
            enqueued_ms: int(3)?,
            attempts: u32::try_from(int(4)?).unwrap_or(u32::MAX),
            next_attempt_ms: int(5)?,
            last_error: row.get(6).map_err(ctx)?,
        };
        state.outbox.insert((kind, e.id.clone()), e);
    }
    let mut stmt = conn.prepare("SELECT id, state FROM projection").map_err(ctx)?;
    let mut rows = stmt.query([]).map_err(ctx)?;
    while let Some(row) = rows.next().map_err(ctx)? {
        state.projection.insert(row.get(0).map_err(ctx)?, row.get(1).map_err(ctx)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The handle

/// The embedded SQLite store. Dropping it (or calling [`SqliteStore::close`])
/// lets the writer finish every command already accepted, then stops it.
pub struct SqliteStore {
    state: Arc<RwLock<State>>,
    tx: RwLock<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    checkpoints: Arc<CheckpointCounts>,
    path: PathBuf,
    /// Released when the store is dropped.
    _lock: std::fs::File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) `dir/scim.db` and loads every resource into memory.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("creating data dir {}: {e}", dir.display())))?;
        let lock = lock_data_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = open_writer_connection(&path, durability)?;
        configure(&conn, durability)?;
        let (state, next_seq) = load_state(&conn)?;
        checkpoint::watch_wal(&conn);
        let checkpointer = Checkpointer::start(&path, durability)?;
        let checkpoints = checkpointer.counts();
        tracing::info!(
            path = %path.display(),
            users = state.users.by_seq.len(),
            groups = state.groups.by_seq.len(),
            ?durability,
            "store opened"
        );
        let state = Arc::new(RwLock::new(state));
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer { conn, state: Arc::clone(&state), shared: Arc::clone(&shared), next_seq, checkpointer };
        let handle = std::thread::Builder::new()
            .name("scim-store-writer".to_owned())
            .spawn(move || {
                super::batch_policy::enter();
                writer.run(rx)
            })
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            state,
            tx: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            shared,
            checkpoints,
            path,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> WriterStats {
        let (by_thread, by_writer) = self.checkpoints.counts();
        WriterStats {
            batches: self.shared.batches.load(AtomicOrdering::Relaxed),
            commands: self.shared.commands.load(AtomicOrdering::Relaxed),
            checkpoints_by_thread: by_thread,
            checkpoints_by_writer: by_writer,
        }
    }

    /// Stops accepting writes (they fail with [`StoreError::Closed`]), waits
    /// until the writer has committed everything accepted before, and closes
    /// the database. Blocks; reads keep working on the last state.
    pub fn close(&self) {
        drop(self.tx.write().take());
        let handle = self.writer.lock().take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }

    async fn submit(&self, op: Op) -> Result<Option<Record>, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = self.tx.read();
            let tx = tx.as_ref().ok_or(StoreError::Closed)?;
            tx.send(Command { op, reply }).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit_for_record(&self, op: Op) -> Result<Record, StoreError> {
        self.submit(op).await?.ok_or_else(|| StoreError::Backend("the writer returned no record".to_owned()))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create(&self, kind: ResourceKind, doc: Value) -> Result<Record, StoreError> {
        self.submit_for_record(Op::Create { kind, doc, side: SideEffects::default() }).await
    }

    async fn create_with(&self, kind: ResourceKind, doc: Value, side: SideEffects) -> Result<Record, StoreError> {
        self.submit_for_record(Op::Create { kind, doc, side }).await
    }

    async fn delete_with(&self, kind: ResourceKind, id: &str, side: SideEffectsFn) -> Result<(), StoreError> {
        self.submit(Op::Delete { kind, id: id.to_owned(), side: Some(side) }).await.map(|_| ())
    }

    async fn apply_side_effects(&self, side: SideEffects) -> Result<(), StoreError> {
        if side.is_empty() {
            return Ok(());
        }
        self.submit(Op::Side(side)).await.map(|_| ())
    }

    async fn outbox_due(&self, now_ms: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let st = self.state.read();
        let mut due: Vec<OutboxEntry> = st.outbox.values().filter(|e| e.next_attempt_ms <= now_ms).cloned().collect();
        due.sort_by_key(|e| (e.next_attempt_ms, e.enqueued_ms));
        due.truncate(limit);
        Ok(due)
    }

    async fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        projection: Option<(String, Option<String>)>,
    ) -> Result<bool, StoreError> {
        let removed = Arc::new(AtomicBool::new(false));
        self.submit(Op::OutboxComplete { entry: entry.clone(), projection, removed: Arc::clone(&removed) }).await?;
        Ok(removed.load(AtomicOrdering::Relaxed))
    }

    async fn outbox_retry(&self, entry: &OutboxEntry, next_attempt_ms: u64, error: String) -> Result<(), StoreError> {
        self.submit(Op::OutboxRetry { entry: entry.clone(), next_attempt_ms, error }).await.map(|_| ())
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let st = self.state.read();
        let oldest = st.outbox.values().min_by_key(|e| e.enqueued_ms);
        let last_failed = st.outbox.values().filter(|e| e.last_error.is_some()).max_by_key(|e| e.next_attempt_ms);
        Ok(OutboxStats {
            pending: st.outbox.len(),
            failing: st.outbox.values().filter(|e| e.attempts > 0).count(),
            oldest_enqueued_ms: oldest.map(|e| e.enqueued_ms),
            last_error: last_failed.and_then(|e| e.last_error.clone()),
        })
    }

    async fn projection(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state.read().projection.get(id).cloned())
    }

    async fn get_text(&self, kind: ResourceKind, id: &str) -> Result<Option<(u64, String)>, StoreError> {
        let found = self.state.read().kind(kind).get(id).map(|e| (e.doc.version, e.doc.text.clone()));
        Ok(found.map(|(version, text)| (version, text.unpack())))
    }

    async fn get(&self, kind: ResourceKind, id: &str) -> Result<Option<Record>, StoreError> {
        let doc = self.state.read().kind(kind).get(id).map(|e| e.doc.clone());
        doc.as_ref().map(Doc::record).transpose()
    }

    async fn update(&self, kind: ResourceKind, id: &str, mutate: MutateFn) -> Result<Record, StoreError> {
        self.submit_for_record(Op::Update { kind, id: id.to_owned(), mutate }).await
    }

    async fn delete(&self, kind: ResourceKind, id: &str) -> Result<(), StoreError> {
        self.submit(Op::Delete { kind, id: id.to_owned(), side: None }).await.map(|_| ())
    }

    async fn query(&self, query: Query<'_>) -> Result<Page, StoreError> {
        run_query(&self.state, &query)
    }

    async fn groups_of(&self, member_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.state.read().groups_of(member_id))
    }

    fn writer_stats(&self) -> Option<WriterStats> {
        Some(self.stats())
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let st = self.state.read();
        Ok(Counts { users: st.users.by_seq.len(), groups: st.groups.by_seq.len() })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::Write as _;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::schema::{GROUP_SCHEMA, USER_SCHEMA};

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

    #[tokio::test]
    async fn outbox_entries_ride_with_writes_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let side =
            SideEffects { enqueue: vec![(USER, "u1".into())], projection: vec![("u1".into(), Some("p1".into()))] };
        store.create_with(USER, user("u1", "a"), side).await.unwrap();
        let due = store.outbox_due(now_ms() + 1, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].generation, due[0].attempts), (1, 0));
        assert_eq!(store.projection("u1").await.unwrap().as_deref(), Some("p1"));

        // A failed write adds no outbox entry.
        let dup = store
            .create_with(
                USER,
                user("u2", "A"),
                SideEffects { enqueue: vec![(USER, "u2".into())], ..Default::default() },
            )
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
                    Ok(Mutation::WithSideEffects(
                        Box::new(Mutation::Unchanged),
                        SideEffects { enqueue: vec![(USER, "u1".into())], ..Default::default() },
                    ))
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
        assert!(store.outbox_complete(&pending[0], Some(("u1".into(), None))).await.unwrap());
        assert_eq!(store.outbox_stats().await.unwrap().pending, 0);
        assert_eq!(store.projection("u1").await.unwrap(), None);

        // Deleting computes side effects from the record it deletes.
        store
            .delete_with(
                USER,
                "u1",
                Box::new(|rec| SideEffects { enqueue: vec![(USER, rec.id.clone())], ..Default::default() }),
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
        assert_eq!(store.groups_of("u1").await.unwrap(), vec![("g1".to_owned(), "Admins".to_owned())]);
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
                Err(StoreError::Scim(e)) if e.status == 409 && e.scim_type == Some(ScimType::Uniqueness) => {
                    conflicts += 1
                }
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
        assert_eq!(store.groups_of("u7").await.unwrap(), vec![("g".to_owned(), "Team".to_owned())]);
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
        let e =
            scim_err(store.create(GROUP, json!({"id": "g3", "displayName": "C", "members": [{"display": "x"}]})).await);
        assert_eq!(e.status, 400);
        let mut groups = store.groups_of("u1").await.unwrap();
        groups.sort();
        assert_eq!(groups, vec![("g1".into(), "A".into()), ("g2".into(), "B".into())]);
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
        assert!(store.groups_of("u2").await.unwrap() == vec![("g3".to_owned(), "C".to_owned())]);

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
        store.shared.fail_commit_of_batch.store(next_batch, AtomicOrdering::SeqCst);
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
        let page = store
            .query(Query { matches: Some(&not_bob), ..q(Some(IndexHint::ExternalId("x1".into()))) })
            .await
            .unwrap();
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

    // ---- model check: random operations, in one batch and one by one ----

    const POOL_IDS: [&str; 6] = ["i0", "i1", "i2", "i3", "i4", "i5"];
    const POOL_NAMES: [&str; 6] = ["ann", "ANN", "åsa", "ÅSA", "bob", "Bob"];

    #[derive(Debug, Clone)]
    enum ModelOp {
        CreateUser(usize, usize),
        CreateGroup(usize, usize, Vec<usize>),
        RenameUser(usize, usize),
        AddMember(usize, usize),
        Delete(bool, usize),
    }

    fn model_op() -> impl proptest::strategy::Strategy<Value = ModelOp> {
        use proptest::prelude::*;
        let id = 0..POOL_IDS.len();
        let name = 0..POOL_NAMES.len();
        prop_oneof![
            (id.clone(), name.clone()).prop_map(|(i, n)| ModelOp::CreateUser(i, n)),
            (id.clone(), name.clone(), proptest::collection::vec(id.clone(), 0..3))
                .prop_map(|(i, n, m)| ModelOp::CreateGroup(i, n, m)),
            (id.clone(), name).prop_map(|(i, n)| ModelOp::RenameUser(i, n)),
            (id.clone(), id.clone()).prop_map(|(g, m)| ModelOp::AddMember(g, m)),
            (any::<bool>(), id).prop_map(|(g, i)| ModelOp::Delete(g, i)),
        ]
    }

    #[derive(Debug, Clone, PartialEq)]
    struct ModelRes {
        kind: ResourceKind,
        name: String,
        members: Vec<String>,
        version: u64,
    }

    /// The rules of the `Store` trait, written as plainly as possible.
    #[derive(Default)]
    struct Model {
        res: BTreeMap<String, ModelRes>,
    }

    impl Model {
        fn name_taken(&self, kind: ResourceKind, name: &str, except: &str) -> bool {
            self.res
                .iter()
                .any(|(id, r)| r.kind == kind && id != except && r.name.to_lowercase() == name.to_lowercase())
        }

        /// The status the store must answer with (200 for success).
        fn apply(&mut self, op: &ModelOp) -> u16 {
            let id = |i: &usize| POOL_IDS[*i].to_owned();
            match op {
                ModelOp::CreateUser(i, n) | ModelOp::CreateGroup(i, n, _) => {
                    let kind = if matches!(op, ModelOp::CreateUser(..)) { USER } else { GROUP };
                    let members: Vec<String> = match op {
                        ModelOp::CreateGroup(_, _, m) => m.iter().map(id).collect(),
                        _ => Vec::new(),
                    };
                    if self.name_taken(kind, POOL_NAMES[*n], "") || self.res.contains_key(&id(i)) {
                        return 409;
                    }
                    if members.iter().any(|m| !self.res.contains_key(m)) {
                        return 400;
                    }
                    let name = POOL_NAMES[*n].to_owned();
                    self.res.insert(id(i), ModelRes { kind, name, members, version: 1 });
                    200
                }
                ModelOp::RenameUser(i, n) => {
                    if self.res.get(&id(i)).is_none_or(|r| r.kind != USER) {
                        return 404;
                    }
                    if self.name_taken(USER, POOL_NAMES[*n], &id(i)) {
                        return 409;
                    }
                    let Some(r) = self.res.get_mut(&id(i)) else {
                        return 404;
                    };
                    r.name = POOL_NAMES[*n].to_owned();
                    r.version += 1;
                    200
                }
                ModelOp::AddMember(g, m) => {
                    let (g, m) = (id(g), id(m));
                    match self.res.get(&g) {
                        Some(r) if r.kind == GROUP => {
                            if r.members.contains(&m) {
                                return 200;
                            }
                        }
                        _ => return 404,
                    }
                    if !self.res.contains_key(&m) {
                        return 400;
                    }
                    let Some(r) = self.res.get_mut(&g) else {
                        return 404;
                    };
                    r.members.push(m);
                    r.version += 1;
                    200
                }
                ModelOp::Delete(is_group, i) => {
                    let kind = if *is_group { GROUP } else { USER };
                    if self.res.get(&id(i)).is_none_or(|r| r.kind != kind) {
                        return 404;
                    }
                    self.res.remove(&id(i));
                    for r in self.res.values_mut() {
                        if r.members.contains(&id(i)) {
                            r.members.retain(|m| *m != id(i));
                            r.version += 1;
                        }
                    }
                    200
                }
            }
        }
    }

    fn store_call<'a>(store: &'a SqliteStore, op: &ModelOp) -> Pending<'a, Result<(), StoreError>> {
        let id = |i: &usize| POOL_IDS[*i].to_owned();
        let op = op.clone();
        Box::pin(async move {
            match op {
                ModelOp::CreateUser(i, n) => store.create(USER, user(&id(&i), POOL_NAMES[n])).await.map(drop),
                ModelOp::CreateGroup(i, n, m) => {
                    let m: Vec<String> = m.iter().map(id).collect();
                    let m: Vec<&str> = m.iter().map(String::as_str).collect();
                    store.create(GROUP, group(&id(&i), POOL_NAMES[n], &m)).await.map(drop)
                }
                ModelOp::RenameUser(i, n) => {
                    store.update(USER, &id(&i), set("userName", POOL_NAMES[n])).await.map(drop)
                }
                ModelOp::AddMember(g, m) => store.update(GROUP, &id(&g), add_member(&id(&m))).await.map(drop),
                ModelOp::Delete(g, i) => store.delete(if g { GROUP } else { USER }, &id(&i)).await,
            }
        })
    }

    fn status(result: Result<(), StoreError>) -> u16 {
        match result {
            Ok(()) => 200,
            Err(StoreError::Scim(e)) => e.status,
            Err(e) => panic!("storage failure {e}"),
        }
    }

    async fn assert_matches_model(store: &SqliteStore, model: &Model) {
        let counts = store.counts().await.unwrap();
        let users = model.res.values().filter(|r| r.kind == USER).count();
        assert_eq!((counts.users, counts.groups), (users, model.res.len() - users));
        for (id, r) in &model.res {
            let rec = store.get(r.kind, id).await.unwrap().expect("resource exists");
            let name = rec.doc[r.kind.unique_name_attr()].as_str().unwrap();
            assert_eq!((name, members_of(&rec), rec.version), (r.name.as_str(), r.members.clone(), r.version), "{id}");
            let mut groups: Vec<String> = store.groups_of(id).await.unwrap().into_iter().map(|g| g.0).collect();
            groups.sort();
            let expected: Vec<String> =
                model.res.iter().filter(|(_, g)| g.members.contains(id)).map(|(g, _)| g.clone()).collect();
            assert_eq!(groups, expected, "groups of {id}");
            let hint = IndexHint::UniqueName(r.name.to_lowercase());
            let page = store.query(Query { hint: Some(hint), ..all(r.kind) }).await.unwrap();
            assert_eq!(ids(&page), vec![id.as_str()]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        #[test]
        fn store_follows_the_model(
            batched in proptest::collection::vec(model_op(), 0..24),
            sequential in proptest::collection::vec(model_op(), 0..12),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = Arc::new(SqliteStore::open(dir.path(), Durability::Normal).unwrap());
                store.create(USER, user("gate", "gate")).await.unwrap();
                let mut model = Model::default();

                let (blocker, release) = block_writer(&store, USER, "gate").await;
                let pending: Vec<_> = batched.iter().map(|op| enqueue(store_call(&store, op))).collect();
                release.send(()).unwrap();
                blocker.await.unwrap().unwrap();
                for (op, fut) in batched.iter().zip(pending) {
                    assert_eq!(status(fut.await), model.apply(op), "{op:?} in a batch");
                }
                for op in &sequential {
                    assert_eq!(status(store_call(&store, op).await), model.apply(op), "{op:?} alone");
                }
                store.delete(USER, "gate").await.unwrap();
                assert_matches_model(&store, &model).await;
                let snap = snapshot(&store).await;
                drop(store);
                let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
                assert_eq!(snapshot(&store).await, snap);
                assert_matches_model(&store, &model).await;
            });
        }
    }

    // ---- crash: a child process writes and is killed with SIGKILL ----

    const CRASH_DIR_ENV: &str = "SCIM_STORE_CRASH_DIR";
    const CRASH_MODE_ENV: &str = "SCIM_STORE_CRASH_MODE";
    const CRASH_AFTER_ACKS: usize = 400;

    /// Not a test of its own: the body of the child process of the `crash_*`
    /// tests, which logs every acknowledged write and then kills itself.
    #[test]
    #[ignore = "child process of the crash_* tests"]
    fn crash_child() {
        let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
            return;
        };
        let durability: Durability = std::env::var(CRASH_MODE_ENV).unwrap().parse().unwrap();
        let dir = PathBuf::from(dir);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let store = Arc::new(SqliteStore::open(&dir, durability).unwrap());
            // Unbuffered: each line is one write(2), so it is in the file once the
            // call returns, whatever happens to the process afterwards.
            let log = Arc::new(Mutex::new(std::fs::File::create(dir.join("acks.log")).unwrap()));
            let acks = Arc::new(AtomicUsize::new(0));
            let ack = move |log: &Mutex<std::fs::File>, line: String| {
                log.lock().write_all(format!("{line}\n").as_bytes()).unwrap();
                if acks.fetch_add(1, AtomicOrdering::SeqCst) + 1 == CRASH_AFTER_ACKS {
                    let pid = std::process::id().to_string();
                    let _ = std::process::Command::new("kill").args(["-9", &pid]).status();
                    std::process::abort();
                }
            };
            let ack = Arc::new(ack);
            let mut tasks = Vec::new();
            for t in 0..8 {
                let (store, log, ack) = (Arc::clone(&store), Arc::clone(&log), Arc::clone(&ack));
                tasks.push(tokio::spawn(async move {
                    let gid = format!("g{t}");
                    store.create(GROUP, group(&gid, &gid, &[])).await.unwrap();
                    ack(&log, format!("C {gid}"));
                    for i in 0.. {
                        let id = format!("u{t}-{i}");
                        store.create(USER, user(&id, &id)).await.unwrap();
                        ack(&log, format!("C {id}"));
                        let r = store.update(USER, &id, set("displayName", "v2")).await.unwrap();
                        ack(&log, format!("U {id} {}", r.version));
                        store.update(GROUP, &gid, add_member(&id)).await.unwrap();
                        ack(&log, format!("M {gid} {id}"));
                        if i % 3 == 0 {
                            store.delete(USER, &id).await.unwrap();
                            ack(&log, format!("D {id}"));
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    }

    fn crash_and_recover(durability: Durability) {
        let dir = tempfile::tempdir().unwrap();
        let mode = match durability {
            Durability::Full => "full",
            Durability::Normal => "normal",
        };
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::sqlite::tests::crash_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CRASH_DIR_ENV, dir.path())
            .env(CRASH_MODE_ENV, mode)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "the child must die: {out:?}");
        let log = std::fs::read_to_string(dir.path().join("acks.log")).unwrap();
        let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
        assert!(lines.len() >= CRASH_AFTER_ACKS, "only {} acks: {out:?}", lines.len());

        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(dir.path(), durability).unwrap();
            let deleted: HashSet<&str> = lines.iter().filter(|l| l[0] == "D").map(|l| l[1]).collect();
            // A user whose delete was issued (it follows the member ack for every
            // third user) but not acknowledged may or may not be gone.
            let delete_in_flight: HashSet<&str> = lines
                .iter()
                .filter(|l| l[0] == "M" && !deleted.contains(l[2]))
                .map(|l| l[2])
                .filter(|id| id.rsplit('-').next().and_then(|i| i.parse::<u64>().ok()).is_some_and(|i| i % 3 == 0))
                .collect();
            for l in &lines {
                match l[0] {
                    "C" if l[1].starts_with('g') => {
                        assert!(store.get(GROUP, l[1]).await.unwrap().is_some())
                    }
                    "C" | "U" if deleted.contains(l[1]) || delete_in_flight.contains(l[1]) => {}
                    "M" if delete_in_flight.contains(l[2]) => {}
                    "C" => assert!(store.get(USER, l[1]).await.unwrap().is_some(), "lost create {}", l[1]),
                    "U" => {
                        let r = store.get(USER, l[1]).await.unwrap().expect("updated user exists");
                        assert!(r.version >= l[2].parse::<u64>().unwrap(), "lost update of {}", l[1]);
                        assert_eq!(r.doc["displayName"], "v2");
                    }
                    "M" => {
                        let g = store.get(GROUP, l[1]).await.unwrap().unwrap();
                        let has = members_of(&g).iter().any(|m| m == l[2]);
                        assert_eq!(has, !deleted.contains(l[2]), "membership of {} in {}", l[2], l[1]);
                    }
                    "D" => assert!(store.get(USER, l[1]).await.unwrap().is_none(), "lost delete {}", l[1]),
                    other => panic!("bad log line {other}"),
                }
            }
            // Whatever else made it is consistent: every member exists.
            for g in store.query(all(GROUP)).await.unwrap().records {
                for m in members_of(&g) {
                    assert!(store.get(USER, &m).await.unwrap().is_some(), "dangling member {m}");
                }
            }
        });
    }

    #[test]
    fn crash_loses_no_acknowledged_write_full() {
        crash_and_recover(Durability::Full);
    }

    #[test]
    fn crash_loses_no_acknowledged_write_normal() {
        crash_and_recover(Durability::Normal);
    }

    // ---- throughput sanity check, not an assertion ----

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
}
