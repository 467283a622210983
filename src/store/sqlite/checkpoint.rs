//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the
//! threshold: that writer copies every page of the WAL back into the database
//! and fsyncs it, and every client queued behind it waits (the p99 of durable
//! writes was that stall). Here the writer only notices the WAL has grown and
//! nudges a thread with its own connection, which copies the bulk with a
//! PASSIVE checkpoint while commits go on. The WAL can only start over from
//! its beginning once every frame is copied, and under steady writes the
//! thread never quite catches up; so when what is left is a small tail, the
//! writer copies that itself between two batches, and its next transaction
//! restarts the WAL.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::batch_policy;
use super::pragmas::{BUSY_TIMEOUT, backend, set_synchronous};
use crate::store::{Durability, StoreError};

/// WAL size (pages) at which the checkpointer is nudged: a quarter of
/// SQLite's default, because smaller checkpoints disturb the WAL's fsyncs less.
pub(super) const NUDGE_PAGES: i32 = 256;

/// WAL size (pages) at which the writer checkpoints by itself because the
/// checkpointer has not kept up (or is gone): about 40 MB of WAL.
pub(super) const FALLBACK_PAGES: i32 = 10_000;

/// Frames the checkpoint thread may leave for the writer to copy: a short
/// pause between two batches. When the thread lags
/// further behind, the writer still takes over once three quarters are
/// copied, so the WAL restarts well before the fallback size.
const TAIL_PAGES: i64 = 64;

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection;
    /// each store's writer is its own thread, so stores never share it.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// Installed as the writer connection's WAL hook (which also switches off
/// SQLite's automatic checkpoint on that connection).
fn note_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Makes `conn` (the writer's) report its WAL size instead of checkpointing
/// inside COMMIT.
pub(super) fn watch_wal(conn: &Connection) {
    conn.wal_hook(Some(note_wal_pages));
}

/// Pages in the WAL after the last commit on the calling thread.
fn wal_pages() -> i32 {
    WAL_PAGES.with(Cell::get)
}

/// What the checkpoint thread copied: frames (counted from the start of the
/// WAL) in the WAL generation it was asked about.
#[derive(Debug, Clone, Copy)]
struct Progress {
    generation: u64,
    copied: i64,
}

/// Checkpoints done so far, for metrics; shared with the store.
#[derive(Debug, Default)]
pub(super) struct CheckpointCounts {
    by_thread: AtomicU64,
    by_writer: AtomicU64,
}

impl CheckpointCounts {
    /// (by the checkpoint thread, by the writer).
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.by_thread.load(Ordering::Relaxed), self.by_writer.load(Ordering::Relaxed))
    }
}

/// Owned by the writer thread.
pub(super) struct Checkpointer {
    counts: Arc<CheckpointCounts>,
    nudge: Option<mpsc::SyncSender<u64>>,
    progress: Arc<Mutex<Option<Progress>>>,
    handle: Option<JoinHandle<()>>,
    /// Bumped whenever the WAL was seen to start over, so a report about the
    /// previous WAL is never taken for the current one.
    generation: u64,
    last_pages: i32,
    /// WAL size at which the writer tries its own checkpoint next, once past
    /// the fallback size: something (another process reading the database)
    /// may keep the WAL from starting over, and trying after every commit
    /// would only repeat the same work and warning.
    next_fallback: i32,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| backend("opening the checkpoint connection", &e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| backend("setting the busy timeout", &e))?;
        // The checkpoint fsyncs the WAL before copying and the database after,
        // as the writer's setting asks.
        set_synchronous(&conn, durability)?;
        // A nudge that arrives while a checkpoint runs is kept (capacity 1),
        // any further one is redundant.
        let (tx, rx) = mpsc::sync_channel::<u64>(1);
        let progress = Arc::new(Mutex::new(None));
        let report = Arc::clone(&progress);
        let counts = Arc::new(CheckpointCounts::default());
        let thread_counts = Arc::clone(&counts);
        let handle = std::thread::Builder::new()
            .name("scim-store-checkpoint".to_owned())
            .spawn(move || {
                batch_policy::enter();
                run(&conn, &rx, &report, &thread_counts)
            })
            .map_err(|e| StoreError::Backend(format!("starting the checkpoint thread: {e}")))?;
        Ok(Self {
            counts,
            nudge: Some(tx),
            progress,
            handle: Some(handle),
            generation: 0,
            last_pages: 0,
            next_fallback: FALLBACK_PAGES,
        })
    }

    pub(super) fn counts(&self) -> Arc<CheckpointCounts> {
        Arc::clone(&self.counts)
    }

    /// Called by the writer after each commit, once the replies are out.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        let pages = wal_pages();
        if pages < self.last_pages {
            self.generation += 1;
            self.next_fallback = FALLBACK_PAGES;
        }
        self.last_pages = pages;
        if pages < NUDGE_PAGES {
            return;
        }
        let copied = (*self.progress.lock()).filter(|p| p.generation == self.generation).map(|p| p.copied);
        let left = copied.map(|c| i64::from(pages) - c);
        let tail_left = left.is_some_and(|n| n <= TAIL_PAGES.max(i64::from(pages) / 4));
        let fallback = !tail_left && pages >= self.next_fallback;
        if !tail_left && !fallback {
            if let Some(tx) = &self.nudge {
                let _ = tx.try_send(self.generation);
            }
            return;
        }
        if fallback {
            tracing::warn!(pages, "the WAL outgrew the checkpoint thread; checkpointing on the writer");
            self.next_fallback = pages.saturating_add(FALLBACK_PAGES);
        }
        match passive_checkpoint(conn) {
            Ok(done) => {
                if !done.busy {
                    self.counts.by_writer.fetch_add(1, Ordering::Relaxed);
                }
                if done.complete() {
                    *self.progress.lock() = None;
                }
            }
            Err(e) => tracing::error!("store checkpoint failed: {e}"),
        }
    }
}

/// What `PRAGMA wal_checkpoint` reports.
#[derive(Debug, Clone, Copy)]
struct Checkpointed {
    /// Another checkpoint was running, so this one did nothing (and the
    /// counts are -1).
    busy: bool,
    wal: i64,
    copied: i64,
}

impl Checkpointed {
    fn complete(self) -> bool {
        !self.busy && self.copied >= 0 && self.copied == self.wal
    }
}

/// PASSIVE never waits for another connection: it copies what was committed
/// when it started.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<Checkpointed> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Checkpointed { busy: row.get::<_, i64>(0)? != 0, wal: row.get(1)?, copied: row.get(2)? })
    })
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.nudge.take());
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("the store checkpoint thread panicked");
        }
    }
}

fn run(conn: &Connection, rx: &mpsc::Receiver<u64>, report: &Mutex<Option<Progress>>, counts: &CheckpointCounts) {
    while let Ok(generation) = rx.recv() {
        match passive_checkpoint(conn) {
            Ok(done) => {
                tracing::debug!(?done, "store checkpoint");
                if !done.busy {
                    counts.by_thread.fetch_add(1, Ordering::Relaxed);
                    if done.copied >= 0 {
                        *report.lock() = Some(Progress { generation, copied: done.copied });
                    }
                }
            }
            Err(e) => tracing::warn!("store checkpoint failed (the writer falls back to its own): {e}"),
        }
    }
    tracing::debug!("store checkpoint thread stopped");
}
