//! Opening the data dir: the lock file, the writer's connection and its
//! pragmas, the schema, and loading the committed state into memory.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;

use super::pragmas::{BUSY_TIMEOUT, backend, set_synchronous};
use super::state::{Entry, State};
use super::wal_vfs;
use crate::scim::schema::ResourceKind;
use crate::store::{Durability, OutboxEntry, StoreError};

/// The database file inside the data dir.
pub(super) const DB_FILE: &str = "scim.db";

/// Held (`flock`) while a store has the data dir open: the in-memory state is
/// only right if this process is the only writer.
const LOCK_FILE: &str = "scim.lock";

/// Bumped when the table layout changes; a file from a newer layout is refused
/// rather than misread.
const SCHEMA_VERSION: i64 = 3;

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
/// Takes the data dir's lock file, or says who has it.
pub(super) fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
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
pub(super) fn open_writer_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let opened = match durability {
        Durability::Full => {
            wal_vfs::register().map_err(StoreError::Backend)?;
            Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), wal_vfs::NAME)
        }
        Durability::Normal => Connection::open(path),
    };
    opened.map_err(|e| backend(&format!("opening {}", path.display()), &e))
}

/// WAL mode, the pragmas, and the schema (created or checked).
pub(super) fn configure(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
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
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} {} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
        super::api_keys::SCHEMA
    ))
    .map_err(|e| backend("creating the schema (is another server using this data dir?)", &e))
}

/// Every committed resource, the outbox and projection bookkeeping, and the
/// next free `seq`.
pub(super) fn load_state(conn: &Connection) -> Result<(State, u64), StoreError> {
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
    state.api_keys = super::api_keys::load(conn)?;
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
