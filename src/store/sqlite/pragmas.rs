//! Connection settings shared by the writer's and the checkpointer's
//! connections, and the error mapping both use.

use std::time::Duration;

use rusqlite::Connection;

use crate::store::{Durability, StoreError};

/// How long `open` waits for another process that holds the file (e.g. the
/// previous server still shutting down) before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A storage failure, with what was being done; never shown to clients.
pub(super) fn backend(context: &str, err: &rusqlite::Error) -> StoreError {
    if is_no_space(err) {
        StoreError::NoSpace(format!("{context}: {err}"))
    } else {
        StoreError::Backend(format!("{context}: {err}"))
    }
}

/// SQLite's "database or disk is full": the file system refused to grow a
/// file (ENOSPC, or a quota).
pub(super) fn is_no_space(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull)
}

/// Another process holds the database (only possible when something else
/// than this server opened the file: the data dir's lock keeps out a second
/// server).
pub(super) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// When a commit counts as done: `FULL` fsyncs the WAL at every commit.
pub(super) fn set_synchronous(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(|e| backend("setting synchronous", &e))
}
