//! The writer thread: it owns the connection, takes every queued request as
//! one transaction (group commit), and folds what committed into the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc;

use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::connection::{SCHEMA_VERSION, load_state};
use super::plan::{Op, Overlay, View};
use super::pragmas::backend;
use super::state::{Change, Entry, State};
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceKind;
use crate::store::{OutboxEntry, Record, StoreError, WriteFailure, now_ms};

/// Upper bound on requests per transaction, so one huge backlog cannot hold
/// its first callers hostage to the last one's work.
pub(super) const MAX_BATCH: usize = 256;

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

type Reply = oneshot::Sender<Result<Option<Record>, StoreError>>;

/// One write, queued for the writer thread, with where its answer goes.
pub(super) struct WriteRequest {
    pub(super) op: Op,
    pub(super) reply: Reply,
}

/// How often a writer that cannot write tries again on its own.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The writer's counters and health, shared with the store handle for
/// metrics and readiness.
#[derive(Default)]
pub(super) struct WriterCounters {
    pub(super) batches: AtomicU64,
    pub(super) commands: AtomicU64,
    /// Set from a failed write until one succeeds.
    failure: Mutex<Option<WriteFailure>>,
    /// Test hook: the COMMIT of the batch with this number (counting from 1)
    /// fails as if the disk had refused it.
    #[cfg(test)]
    pub(super) fail_commit_of_batch: AtomicU64,
}

impl WriterCounters {
    pub(super) fn failure(&self) -> Option<WriteFailure> {
        self.failure.lock().clone()
    }

    fn failing(&self) -> bool {
        self.failure.lock().is_some()
    }

    fn record_failure(&self, err: &StoreError) {
        let mut failure = self.failure.lock();
        let no_space = matches!(err, StoreError::NoSpace(_));
        match failure.as_mut() {
            Some(f) => {
                f.error = err.to_string();
                f.no_space = no_space;
            }
            None => {
                tracing::error!(error = %err, "the store cannot write; the server is not ready until it can");
                *failure = Some(WriteFailure { since_ms: now_ms(), error: err.to_string(), no_space });
            }
        }
    }

    fn record_success(&self) {
        if self.failure.lock().take().is_some() {
            tracing::warn!("the store can write again");
        }
    }
}

/// Owns the connection; runs on its own thread until every sender is gone.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) state: Arc<RwLock<State>>,
    pub(super) counters: Arc<WriterCounters>,
    pub(super) next_seq: u64,
    pub(super) checkpointer: Checkpointer,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<WriteRequest>) {
        // A restart on a full disk must not look healthy until the first
        // client write fails: find out now.
        self.probe();
        // `recv` keeps returning queued requests after the last sender is gone,
        // so shutdown finishes what was accepted before it exits.
        loop {
            let first = if self.counters.failing() {
                // Nobody may write while the pod is unready (no traffic
                // reaches it), so the writer checks by itself when it recovers.
                match rx.recv_timeout(PROBE_INTERVAL) {
                    Ok(cmd) => cmd,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.probe();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                }
            };
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

    fn run_batch(&mut self, batch: Vec<WriteRequest>) {
        self.counters.batches.fetch_add(1, AtomicOrdering::Relaxed);
        self.counters.commands.fetch_add(batch.len() as u64, AtomicOrdering::Relaxed);
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let err = backend("could not start a transaction", &e);
            tracing::error!("{err}");
            // A transaction left open by an earlier failure would make every
            // later BEGIN fail too.
            self.recover();
            self.counters.record_failure(&err);
            for cmd in batch {
                let _ = cmd.reply.send(Err(err.clone()));
            }
            return;
        }

        let state = Arc::clone(&self.state);
        let mut overlay = Overlay::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        // Set when SQLite rolled the whole transaction back on its own (I/O
        // error, disk full): nothing in this batch can be committed any more.
        let mut aborted: Option<StoreError> = None;
        {
            // Only this thread ever takes the write lock, so holding a read lock
            // here blocks nobody.
            let base = state.read();
            for WriteRequest { op, reply } in batch {
                let result = match &aborted {
                    Some(err) => Err(err.clone()),
                    None => self.execute(&base, &mut overlay, op),
                };
                if let Err(err) = &result
                    && err.is_storage_failure()
                    && aborted.is_none()
                    && self.conn.is_autocommit()
                {
                    aborted = Some(match err {
                        StoreError::NoSpace(_) => err.clone(),
                        _ => StoreError::Backend("the transaction was aborted by the database".to_owned()),
                    });
                }
                outcomes.push((reply, result));
            }
        }

        let committed = match aborted {
            Some(err) => Err(err),
            None => self.commit(),
        };
        match committed {
            Ok(()) => {
                let mut st = state.write();
                for change in overlay.changes {
                    st.apply(change);
                }
                drop(st);
                self.counters.record_success();
                for (reply, result) in outcomes {
                    let _ = reply.send(result);
                }
                self.checkpointer.after_commit(&self.conn);
            }
            Err(err) => {
                tracing::error!("store batch of {} commands failed: {err}", outcomes.len());
                self.recover();
                self.counters.record_failure(&err);
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// The smallest write there is (the schema version, rewritten unchanged):
    /// it needs a transaction and room for one page in the WAL, like any
    /// client write.
    fn probe(&mut self) {
        let probed = self
            .conn
            .execute_batch(&format!("BEGIN IMMEDIATE; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
            .map_err(|e| backend("probing whether the store can write", &e));
        match probed {
            Ok(()) => self.counters.record_success(),
            Err(err) => {
                // The probe changed nothing in memory: end its transaction, but
                // do not reload the whole state every probe of a long outage.
                if !self.conn.is_autocommit()
                    && let Err(e) = self.conn.execute_batch("ROLLBACK")
                {
                    tracing::error!("rollback after a failed probe failed: {e}");
                }
                self.counters.record_failure(&err);
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
            Change::Insert { kind, entry, json } => self.insert(*kind, entry, json),
            Change::Update { kind, entry, json, keys_changed } => self.update(*kind, entry, json, *keys_changed),
            Change::Delete { kind, id } => {
                let n = self
                    .conn
                    .prepare_cached(DELETE_SQL)
                    .and_then(|mut st| st.execute(params![id]))
                    .map_err(|err| sql_error(*kind, id, "deleting", &err))?;
                expect_one_row(n, *kind, id)
            }
            Change::OutboxPut { entry } => self.outbox_put(entry),
            Change::OutboxDelete { kind, id } => self
                .conn
                .prepare_cached(OUTBOX_DELETE_SQL)
                .and_then(|mut st| st.execute(params![kind.name(), id]))
                .map(drop)
                .map_err(|err| backend("writing the outbox", &err)),
            Change::Projection { id, state: Some(state) } => self
                .conn
                .prepare_cached(PROJECTION_SET_SQL)
                .and_then(|mut st| st.execute(params![id, state]))
                .map(drop)
                .map_err(|err| backend("writing projection state", &err)),
            Change::ApiKey(c) => super::api_keys::write(&self.conn, c),
            Change::Projection { id, state: None } => self
                .conn
                .prepare_cached(PROJECTION_CLEAR_SQL)
                .and_then(|mut st| st.execute(params![id]))
                .map(drop)
                .map_err(|err| backend("writing projection state", &err)),
        }
    }

    fn insert(&self, kind: ResourceKind, e: &Entry, json: &str) -> Result<(), StoreError> {
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
            .map(drop)
            .map_err(|err| sql_error(kind, e.id(), "inserting", &err))
    }

    fn update(&self, kind: ResourceKind, e: &Entry, json: &str, keys_changed: bool) -> Result<(), StoreError> {
        let version = to_sql_int(e.doc.version);
        let n = if keys_changed {
            self.conn
                .prepare_cached(UPDATE_SQL)
                .and_then(|mut st| st.execute(params![e.id(), e.name_lower, e.external_id, version, json]))
        } else {
            self.conn.prepare_cached(UPDATE_DOC_SQL).and_then(|mut st| st.execute(params![e.id(), version, json]))
        }
        .map_err(|err| sql_error(kind, e.id(), "updating", &err))?;
        expect_one_row(n, kind, e.id())
    }

    fn outbox_put(&self, e: &OutboxEntry) -> Result<(), StoreError> {
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
            .map(drop)
            .map_err(|err| backend("writing the outbox", &err))
    }

    fn commit(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.counters.fail_commit_of_batch.load(AtomicOrdering::SeqCst)
            == self.counters.batches.load(AtomicOrdering::SeqCst)
        {
            return Err(StoreError::Backend("commit failed: injected failure".to_owned()));
        }
        self.conn.execute_batch("COMMIT").map_err(|e| backend("commit failed", &e))
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

/// Versions and sequence numbers start at 1 and grow by one per write, so
/// they never get near `i64::MAX`; saturating keeps this total anyway.
fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
