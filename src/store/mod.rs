//! Durable SCIM state behind one trait, [`Store`]. The embedded
//! implementation (opened with [`open_embedded`]) is the default and the only
//! one today; nothing outside this module knows which database backs it.

use std::cmp::Ordering;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value;

use crate::scim::error::ScimError;
pub(crate) use crate::scim::filter::IndexHint;
use crate::scim::schema::ResourceKind;

mod sqlite;

/// When a write counts as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Acknowledged only once it survives power loss (fsynced).
    #[default]
    Full,
    /// Acknowledged once handed to the OS: survives the process being killed,
    /// not the machine losing power.
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

/// Opens (or creates) the embedded store in `dir` and loads it. Blocks (file
/// locking, reading every resource): run it on `spawn_blocking`. Fails if
/// another process holds `dir`.
pub(crate) fn open_embedded(dir: &Path, durability: Durability) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open(dir, durability)?))
}

/// One stored resource: the complete SCIM document as returned to clients
/// (`schemas`, `id`, attributes, `meta` without `location`).
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub id: String,
    pub version: u64,
    pub doc: Arc<Value>,
}

pub(crate) type Matcher<'a> = &'a (dyn Fn(&Value) -> bool + Sync);
pub(crate) type Sorter<'a> = &'a (dyn Fn(&Value, &Value) -> Ordering + Sync);

pub(crate) struct Query<'a> {
    pub kind: ResourceKind,
    pub hint: Option<IndexHint>,
    /// The full filter; `None` matches everything.
    pub matches: Option<Matcher<'a>>,
    /// `None` keeps creation order.
    pub sort: Option<Sorter<'a>>,
    /// 1-based, as in SCIM.
    pub start_index: usize,
    pub count: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub total: usize,
    pub records: Vec<Record>,
}

/// What a mutation decided, given the current record and the version the
/// store will assign if it changes anything.
pub(crate) enum Mutation {
    /// Store this document (with `meta.version` etc. already set by the caller).
    Replace(Value),
    /// Nothing changed: no write, no new version.
    Unchanged,
    /// As the inner mutation, plus side effects in the same transaction.
    WithSideEffects { mutation: Box<Mutation>, side: SideEffects },
}

/// A group a resource is a member of, as the user's `groups` attribute shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GroupRef {
    pub id: String,
    pub display_name: String,
}

impl GroupRef {
    pub(crate) fn new(id: impl Into<String>, display_name: impl Into<String>) -> Self {
        GroupRef { id: id.into(), display_name: display_name.into() }
    }
}

/// A resource whose ZITADEL projection must be brought up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enqueue {
    pub kind: ResourceKind,
    pub id: String,
}

impl Enqueue {
    pub(crate) fn user(id: impl Into<String>) -> Self {
        Enqueue { kind: ResourceKind::User, id: id.into() }
    }
}

/// The projector's bookkeeping for one resource (what it last wrote to
/// ZITADEL, as JSON text): `state: None` clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectionNote {
    pub id: String,
    pub state: Option<String>,
}

/// Writes that go into the same transaction as the resource change they
/// accompany, so a committed change and its projection work are never apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SideEffects {
    /// Resources whose projection must be brought up to date (the outbox).
    /// Enqueuing one already queued bumps its generation.
    pub enqueue: Vec<Enqueue>,
    /// Projection bookkeeping by resource id.
    pub projection: Vec<ProjectionNote>,
}

impl SideEffects {
    pub(crate) fn is_empty(&self) -> bool {
        self.enqueue.is_empty() && self.projection.is_empty()
    }
}

pub(crate) type SideEffectsFn = Box<dyn FnOnce(&Record) -> SideEffects + Send>;

/// A resource whose projection is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxEntry {
    pub kind: ResourceKind,
    pub id: String,
    /// Bumped by every enqueue: completing an entry whose generation moved on
    /// keeps it, because a newer change still waits.
    pub generation: u64,
    /// Unix milliseconds of the oldest change still waiting.
    pub enqueued_ms: u64,
    pub attempts: u32,
    /// Unix milliseconds before which it is not retried.
    pub next_attempt_ms: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutboxStats {
    pub pending: usize,
    /// Entries that failed at least once.
    pub failing: usize,
    pub oldest_enqueued_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// A self-service SCIM key as stored: only the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub sha256: [u8; 32],
    pub created_ms: u64,
    /// The ZITADEL user id of whoever created it.
    pub created_by: String,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
}

/// A write to the self-service keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiKeyChange {
    /// Inserts a new key (its id and hash must be new).
    Put(ApiKeyRecord),
    /// Removes a key; removing a missing one is not an error.
    Delete(String),
    /// When keys were last used, as (id, unix ms): one write for many requests.
    /// A time older than the stored one and ids no longer stored are ignored.
    Touch(Vec<(String, u64)>),
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

pub(crate) type MutateFn = Box<dyn FnOnce(&Record, u64) -> Result<Mutation, ScimError> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Scim(#[from] ScimError),
    #[error("storage failure: {0}")]
    Backend(String),
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    /// The SCIM error a client sees: protocol errors as they are, storage
    /// failures as 500/503 with no internals.
    pub(crate) fn into_scim(self) -> ScimError {
        match self {
            StoreError::Scim(e) => e,
            StoreError::Backend(_) => ScimError::new(500, None, "the server could not store the change; retry later"),
            StoreError::Closed => ScimError::new(503, None, "the server is shutting down; retry later"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub users: usize,
    pub groups: usize,
}

/// Counters of the embedded store's writer, for metrics: `commands / batches`
/// is the average group-commit size (writes per fsync when durable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WriterStats {
    /// Transactions the writer ran, committed or not.
    pub batches: u64,
    pub commands: u64,
    /// WAL checkpoints that ran (not turned away because another was
    /// running), by the checkpoint thread and by the writer itself (the tail,
    /// or the fallback when the thread lags).
    pub checkpoints_by_thread: u64,
    pub checkpoints_by_writer: u64,
}

/// The seam between the SCIM server and durable storage. The embedded SQLite
/// store implements it; a PostgreSQL store (several replicas sharing one
/// database) is the next implementation, and everything above this trait must
/// work unchanged on either.
///
/// What every implementation must guarantee:
/// - **Durable acknowledgement**: a write returns `Ok` only once it is
///   committed as durably as the configured [`Durability`] asks. A write
///   refused with [`StoreError::Scim`] changed nothing; after a `Backend`
///   failure the outcome may be unknown, but what the store then reads back
///   must be what is durable.
/// - **Atomicity**: each write, with its [`SideEffects`] (outbox, projection
///   bookkeeping), is one transaction; `update` runs its `mutate` closure
///   inside it, so no other write to the same resource slips in between the
///   read and the write (concurrent PATCHes lose nothing).
/// - **Uniqueness** of ids across kinds, and of the unique name
///   (`userName` / group `displayName`, case-insensitively) within a kind,
///   enforced by the store, not by callers; conflicts are 409 `uniqueness`.
/// - **Referential rules**: group members must exist (400 `invalidValue`);
///   deleting a resource removes it from every group's `members` in the same
///   transaction.
/// - **Read-your-writes**: once a write returned, every read on this store
///   sees it; reads never see uncommitted data.
/// - **Index hints** in [`Query`] may narrow the candidates but never drop a
///   match; versions start at 1 and grow by one per change.
/// - Errors are [`StoreError`]: protocol errors as [`StoreError::Scim`],
///   storage failures as `Backend` (no internals reach clients), and
///   `Closed` after [`Store::close`].
#[async_trait::async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Inserts a new resource. `doc` carries its `id` (a fresh one chosen by the
    /// caller) and `meta`; version 1. Fails with 409 `uniqueness` if the unique
    /// name (userName / group displayName, case-insensitive) or the id is taken,
    /// and with 400 `invalidValue` if a group lists a member id that is neither
    /// a stored user nor a stored group.
    async fn create(&self, kind: ResourceKind, doc: Value) -> Result<Record, StoreError>;

    async fn get(&self, kind: ResourceKind, id: &str) -> Result<Option<Record>, StoreError>;

    /// The stored document as compact JSON text with its version, for reads
    /// that return it unchanged (no parse, no tree).
    async fn get_text(&self, kind: ResourceKind, id: &str) -> Result<Option<(u64, String)>, StoreError>;

    /// Reads the current record and applies `mutate` atomically (no other write
    /// to the same resource in between). 404 if missing. The same uniqueness
    /// and membership rules as `create` apply to the new document.
    async fn update(&self, kind: ResourceKind, id: &str, mutate: MutateFn) -> Result<Record, StoreError>;

    /// Deletes a resource; deleting a user or group also removes it from the
    /// `members` of every group (those groups get a new version). 404 if missing.
    async fn delete(&self, kind: ResourceKind, id: &str) -> Result<(), StoreError>;

    async fn query(&self, query: Query<'_>) -> Result<Page, StoreError>;

    /// Groups whose `members` contain this id.
    async fn groups_of(&self, member_id: &str) -> Result<Vec<GroupRef>, StoreError>;

    async fn counts(&self) -> Result<Counts, StoreError>;

    /// The writer's counters, where the store has a writer of its own.
    fn writer_stats(&self) -> Option<WriterStats> {
        None
    }

    /// `create`, with side effects in the same transaction.
    async fn create_with(&self, kind: ResourceKind, doc: Value, side: SideEffects) -> Result<Record, StoreError>;

    /// `delete`, with side effects computed from the record being deleted.
    async fn delete_with(&self, kind: ResourceKind, id: &str, side: SideEffectsFn) -> Result<(), StoreError>;

    /// Side effects alone (no resource changes).
    async fn apply_side_effects(&self, side: SideEffects) -> Result<(), StoreError>;

    /// Entries due at `now_ms`, soonest first.
    async fn outbox_due(&self, now_ms: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes the entry if no newer change was enqueued since it was read
    /// (returns whether it was removed), and records projection bookkeeping in
    /// the same transaction.
    async fn outbox_complete(
        &self,
        entry: &OutboxEntry,
        projection: Option<ProjectionNote>,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt; the entry is retried at `next_attempt_ms`.
    async fn outbox_retry(&self, entry: &OutboxEntry, next_attempt_ms: u64, error: String) -> Result<(), StoreError>;

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// The projection bookkeeping for a resource id.
    async fn projection(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Every self-service SCIM key (hashes only), in creation order.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Writes self-service keys, durably and atomically like every write. Limits
    /// (how many keys) are the caller's to check.
    async fn api_key_write(&self, change: ApiKeyChange) -> Result<(), StoreError>;

    /// Stops accepting writes (later ones fail with [`StoreError::Closed`]),
    /// finishes those already accepted, and releases the storage. Blocks;
    /// reads may keep working. Dropping the store must do the same.
    fn close(&self) {}
}
