//! The embedded store: one SQLite file (`scim.db`, WAL mode) in the data dir,
//! with every resource also held in memory.
//!
//! Reads never touch SQLite: they take a read lock on the in-memory state
//! (`state`), which holds only committed data. Writes go to one writer thread
//! (`writer`) that owns the connection. It takes every request already queued
//! (up to [`writer::MAX_BATCH`]) and runs them in one transaction, so
//! concurrent clients share one fsync (group commit). Each request is planned
//! against the committed state plus the earlier requests of its batch (an
//! overlay, `plan`), is written atomically (a SAVEPOINT when it spans several
//! statements) so that a failing request leaves the others intact, and is
//! acknowledged only after COMMIT returned (with `durability: full` the
//! commit's WAL frames reach the OS in one write, see `wal_vfs`). The overlay
//! is folded into the shared state under a short write lock after the commit,
//! so readers are never blocked for the duration of an fsync. WAL checkpoints
//! run on a thread of their own (`checkpoint`), not inside a client's COMMIT.
//! Opening (lock file, pragmas, schema, loading) is `connection`.
//!
//! Documents are held in memory as compact JSON text (packed, see `packed`)
//! and parsed on read, because a parsed tree takes several times the memory
//! of its text. Everything the indexes, validation and `groups_of` need is
//! extracted at write time, so only reads that return or filter documents
//! parse them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    ApiKeyChange, ApiKeyRecord, Counts, Durability, GroupRef, MutateFn, OutboxEntry, OutboxStats, Page, ProjectionNote,
    Query, Record, SideEffects, SideEffectsFn, Store, StoreError, WriterStats,
};
use crate::scim::schema::ResourceKind;
use checkpoint::{CheckpointCounts, Checkpointer};
use connection::{DB_FILE, configure, load_state, lock_data_dir, open_writer_connection};
use plan::Op;
use state::{Doc, State, run_query};
use writer::{WriteRequest, Writer, WriterCounters};

mod api_keys;
mod batch_policy;
mod checkpoint;
mod connection;
mod packed;
mod plan;
mod pragmas;
mod state;
mod wal_vfs;
mod writer;

#[cfg(test)]
mod tests;

/// The embedded SQLite store. Dropping it (or calling [`Store::close`]) lets
/// the writer finish every request already accepted, then stops it.
pub(crate) struct SqliteStore {
    state: Arc<RwLock<State>>,
    tx: RwLock<Option<mpsc::Sender<WriteRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<WriterCounters>,
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
    pub(super) fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
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
        let counters = Arc::new(WriterCounters::default());
        let (tx, rx) = mpsc::channel();
        let writer =
            Writer { conn, state: Arc::clone(&state), counters: Arc::clone(&counters), next_seq, checkpointer };
        let handle = std::thread::Builder::new()
            .name("scim-store-writer".to_owned())
            .spawn(move || {
                batch_policy::enter();
                writer.run(rx)
            })
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            state,
            tx: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            counters,
            checkpoints,
            path,
            _lock: lock,
        })
    }

    fn stats(&self) -> WriterStats {
        let (by_thread, by_writer) = self.checkpoints.counts();
        WriterStats {
            batches: self.counters.batches.load(AtomicOrdering::Relaxed),
            commands: self.counters.commands.load(AtomicOrdering::Relaxed),
            checkpoints_by_thread: by_thread,
            checkpoints_by_writer: by_writer,
        }
    }

    async fn submit(&self, op: Op) -> Result<Option<Record>, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = self.tx.read();
            let tx = tx.as_ref().ok_or(StoreError::Closed)?;
            tx.send(WriteRequest { op, reply }).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn submit_for_record(&self, op: Op) -> Result<Record, StoreError> {
        self.submit(op).await?.ok_or_else(|| StoreError::Backend("the writer returned no record".to_owned()))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        Store::close(self);
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
        self.submit(Op::Side { side }).await.map(|_| ())
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
        projection: Option<ProjectionNote>,
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

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys: Vec<ApiKeyRecord> = self.state.read().api_keys.values().cloned().collect();
        keys.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(keys)
    }

    async fn api_key_write(&self, change: ApiKeyChange) -> Result<(), StoreError> {
        self.submit(Op::ApiKey(change)).await.map(|_| ())
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

    async fn groups_of(&self, member_id: &str) -> Result<Vec<GroupRef>, StoreError> {
        Ok(self.state.read().groups_of(member_id))
    }

    fn writer_stats(&self) -> Option<WriterStats> {
        Some(self.stats())
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let st = self.state.read();
        Ok(Counts { users: st.users.by_seq.len(), groups: st.groups.by_seq.len() })
    }

    /// Waits until the writer has committed everything accepted before, then
    /// closes the database; reads keep working on the last state.
    fn close(&self) {
        drop(self.tx.write().take());
        let handle = self.writer.lock().take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}
