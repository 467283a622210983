//! A SQLite VFS that hands a commit's WAL frames to the OS in one write.
//!
//! SQLite writes every frame of a commit as two `pwrite`s (its 24-byte
//! header, then the page), so a batch costs a few system calls per page
//! before its fsync, a measurable share of a durable write's CPU. This VFS is the default one with a single change: writes to
//! a WAL file that continue the previous one are collected in memory, and
//! the whole run goes to the OS in one `pwrite` as soon as SQLite does
//! anything else with the file. With `synchronous=FULL` that is the fsync
//! that ends each commit, so the file holds exactly what it would have held
//! without the VFS whenever the commit can be seen: SQLite publishes a
//! commit to other connections (the wal-index header) only after that
//! fsync, and a read of the file through this handle flushes first.
//!
//! Only connections that sync every commit may use it: with
//! `synchronous=NORMAL` no call follows a commit's last frame, and another
//! connection would find frames the wal-index promises missing from the file.
//! Files other than WALs are the default VFS's own, untouched.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name to open a connection with.
pub(super) const NAME: &str = "scim-wal";
const NAME_C: &CStr = c"scim-wal";

/// A run longer than this is written out before it grows further, so one
/// huge transaction never holds more than this (plus one page) in memory.
const MAX_PENDING: usize = 1 << 20;

/// The most the default VFS writes in one call: it masks each write's
/// length with 0x1ffff (SQLite's own writes are a page at most), so a longer
/// one would come back short and be reported as a full disk.
const MAX_WRITE: usize = 0x1_f000;

/// The buffer kept between commits; a larger one (after a big batch) is
/// released, so an idle store does not hold on to it.
const KEEP_CAPACITY: usize = 256 * 1024;

/// The default VFS this one wraps.
struct Inner(*mut ffi::sqlite3_vfs);

// SAFETY: a registered VFS is immutable and SQLite allows it to be used from
// any thread; the pointer is only read.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

static REGISTERED: OnceLock<Result<Inner, String>> = OnceLock::new();

/// Registers the VFS (once per process) under [`NAME`].
pub(super) fn register() -> Result<(), String> {
    match REGISTERED.get_or_init(register_once) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.clone()),
    }
}

fn register_once() -> Result<Inner, String> {
    // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS (initialising
    // the library if needed), or NULL.
    let inner = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if inner.is_null() {
        return Err("SQLite has no default VFS".to_owned());
    }
    // SAFETY: `inner` points to a registered VFS, which lives for the
    // process; copying the struct copies its function pointers and settings.
    let mut vfs: ffi::sqlite3_vfs = unsafe { ptr::read(inner) };
    let inner_size = usize::try_from(vfs.szOsFile).map_err(|_| "the default VFS has a negative file size")?;
    vfs.szOsFile = c_int::try_from(INNER_OFFSET + inner_size).map_err(|_| "the default VFS's files are too large")?;
    vfs.zName = NAME_C.as_ptr();
    vfs.pNext = ptr::null_mut();
    vfs.xOpen = Some(open);
    // Leaked on purpose: SQLite keeps the pointer for the life of the process.
    let ours = Box::into_raw(Box::new(vfs));
    // SAFETY: `ours` is a valid, never freed VFS whose methods are the
    // default VFS's (with its own `pAppData`) except `xOpen`.
    let rc = unsafe { ffi::sqlite3_vfs_register(ours, 0) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("registering the {NAME} VFS failed (SQLite error {rc})"));
    }
    Ok(Inner(inner))
}

fn inner_vfs() -> *mut ffi::sqlite3_vfs {
    match REGISTERED.get() {
        Some(Ok(Inner(vfs))) => *vfs,
        _ => ptr::null_mut(),
    }
}

/// A WAL opened through this VFS: what SQLite sees, followed by the default
/// VFS's own file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    pending: *mut Pending,
}

/// Where the default VFS's file starts inside ours (pointer-aligned, as
/// `WalFile` is).
const INNER_OFFSET: usize = std::mem::size_of::<WalFile>();

#[derive(Default)]
struct Pending {
    /// File offset of `bytes[0]`.
    start: i64,
    bytes: Vec<u8>,
}

/// # Safety
/// `file` must be a `WalFile` this VFS opened.
unsafe fn inner_file(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: SQLite allocated `szOsFile` bytes for the file, which include
    // the default VFS's file at this offset.
    unsafe { file.cast::<u8>().add(INNER_OFFSET).cast() }
}

/// The default VFS's methods for the inner file.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened successfully.
unsafe fn inner_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: a successfully opened file has methods that live as long as
    // the VFS, i.e. the process.
    unsafe { &*(*inner_file(file)).pMethods }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner = inner_vfs();
    // SAFETY: registration succeeded before any connection could name this
    // VFS, so `inner` is the default VFS, whose `xOpen` is always set.
    let Some(inner_open) = (unsafe { inner.as_ref() }).and_then(|v| v.xOpen) else {
        return ffi::SQLITE_ERROR;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a WAL: the default VFS's file, in place (ours is larger).
        // SAFETY: forwarding SQLite's own arguments.
        return unsafe { inner_open(inner, name, file, flags, out_flags) };
    }
    let wal = file.cast::<WalFile>();
    // SAFETY: `file` has room for a `WalFile` followed by the inner file;
    // SQLite calls no method while `pMethods` is NULL.
    unsafe {
        (*wal).base.pMethods = ptr::null();
        (*wal).pending = ptr::null_mut();
        let inner_file = inner_file(file);
        (*inner_file).pMethods = ptr::null();
        let rc = inner_open(inner, name, inner_file, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // The default VFS may leave a half-opened file to close.
            if let Some(close) = (*inner_file).pMethods.as_ref().and_then(|m| m.xClose) {
                close(inner_file);
            }
            return rc;
        }
        (*wal).pending = Box::into_raw(Box::new(Pending::default()));
        (*wal).base.pMethods = &METHODS;
    }
    ffi::SQLITE_OK
}

/// Writes out what is collected.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened successfully.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `pending` was set when the file was opened and is freed only
    // by `close`.
    let pending = unsafe { &mut *(*file.cast::<WalFile>()).pending };
    if pending.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: the file was opened successfully.
    let rc = match unsafe { inner_methods(file) }.xWrite {
        Some(write) => {
            let mut rc = ffi::SQLITE_OK;
            let mut offset = pending.start;
            for chunk in pending.bytes.chunks(MAX_WRITE) {
                // Both fit: a chunk is at most MAX_WRITE bytes.
                let len = chunk.len() as c_int;
                // SAFETY: the inner file is open and `chunk` is valid for `len` bytes.
                rc = unsafe { write(inner_file(file), chunk.as_ptr().cast(), len, offset) };
                if rc != ffi::SQLITE_OK {
                    break;
                }
                offset += chunk.len() as i64;
            }
            rc
        }
        None => ffi::SQLITE_IOERR_WRITE,
    };
    // Kept or not, the bytes are the caller's error to handle now: SQLite
    // rolls the transaction back on a failed write.
    pending.bytes.clear();
    if pending.bytes.capacity() > KEEP_CAPACITY {
        pending.bytes = Vec::new();
    }
    rc
}

/// Flushes, then runs `then` on the inner file.
///
/// # Safety
/// `file` must be a `WalFile` this VFS opened successfully.
unsafe fn flushed(file: *mut ffi::sqlite3_file, then: impl FnOnce(*mut ffi::sqlite3_file) -> c_int) -> c_int {
    // SAFETY: per the contract above.
    let rc = unsafe { flush(file) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: per the contract above.
    then(unsafe { inner_file(file) })
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amt: c_int, offset: i64) -> c_int {
    let Ok(len) = usize::try_from(amt) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes a WalFile it opened through us, and `amt`
    // readable bytes at `buf`.
    unsafe {
        let pending = &mut *(*file.cast::<WalFile>()).pending;
        let end = pending.start.saturating_add(i64::try_from(pending.bytes.len()).unwrap_or(i64::MAX));
        let continues = !pending.bytes.is_empty() && offset == end;
        if !pending.bytes.is_empty() && (!continues || pending.bytes.len() + len > MAX_PENDING) {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if pending.bytes.is_empty() {
            pending.start = offset;
        }
        pending.bytes.extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through us, once.
    unsafe {
        let flushed_rc = flush(file);
        let rc = match inner_methods(file).xClose {
            Some(close) => close(inner_file(file)),
            None => ffi::SQLITE_OK,
        };
        let wal = file.cast::<WalFile>();
        drop(Box::from_raw((*wal).pending));
        (*wal).pending = ptr::null_mut();
        if flushed_rc != ffi::SQLITE_OK { flushed_rc } else { rc }
    }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amt: c_int, offset: i64) -> c_int {
    // SAFETY: SQLite passes a WalFile it opened through us.
    unsafe {
        flushed(file, |inner| match inner_methods(file).xRead {
            Some(read) => read(inner, buf, amt, offset),
            None => ffi::SQLITE_IOERR_READ,
        })
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as `read`.
    unsafe {
        flushed(file, |inner| match inner_methods(file).xTruncate {
            Some(truncate) => truncate(inner, size),
            None => ffi::SQLITE_IOERR_TRUNCATE,
        })
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe {
        flushed(file, |inner| match inner_methods(file).xSync {
            Some(sync) => sync(inner, flags),
            None => ffi::SQLITE_IOERR_FSYNC,
        })
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: as `read`.
    unsafe {
        flushed(file, |inner| match inner_methods(file).xFileSize {
            Some(file_size) => file_size(inner, size),
            None => ffi::SQLITE_IOERR_FSTAT,
        })
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |inner| inner_methods(file).xLock.map_or(ffi::SQLITE_OK, |lock| lock(inner, level))) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe { flushed(file, |inner| inner_methods(file).xUnlock.map_or(ffi::SQLITE_OK, |unlock| unlock(inner, level))) }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: as `read`.
    unsafe {
        flushed(file, |inner| match inner_methods(file).xCheckReservedLock {
            Some(check) => check(inner, out),
            None => ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        })
    }
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: as `read`.
    unsafe {
        flushed(file, |inner| {
            inner_methods(file).xFileControl.map_or(ffi::SQLITE_NOTFOUND, |control| control(inner, op, arg))
        })
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `read`; asking for a property needs no flush.
    unsafe { inner_methods(file).xSectorSize.map_or(4096, |size| size(inner_file(file))) }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `sector_size`.
    unsafe { inner_methods(file).xDeviceCharacteristics.map_or(0, |dc| dc(inner_file(file))) }
}

/// Version 1: a WAL is never memory-mapped nor used for shared memory
/// (those are the database file's), so SQLite asks a WAL for nothing more.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// Write system calls made by the calling thread so far.
    #[cfg(target_os = "linux")]
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines().find_map(|l| l.strip_prefix("syscw: ")).unwrap().trim().parse().unwrap()
    }

    fn open(path: &std::path::Path, vfs: Option<&str>) -> Connection {
        let conn = match vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).unwrap(),
            None => Connection::open(path).unwrap(),
        };
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT NOT NULL)").unwrap();
        conn
    }

    /// Commits `n` rows of about 1 KB with random keys (many pages).
    fn commit_rows(conn: &Connection, from: usize, n: usize) {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in from..from + n {
            let key = format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            conn.execute("INSERT INTO t VALUES (?1, ?2)", (key, "x".repeat(1000))).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn another_connection_sees_every_commit_and_a_reopen_keeps_it() {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = open(&path, Some(NAME));
        let reader = open(&path, None);
        for round in 0..20 {
            commit_rows(&writer, round * 50, 50);
            // Another connection (the default VFS) reads the frames from the
            // file right after the commit.
            assert_eq!(count(&reader), (round as i64 + 1) * 50);
            // Each (big) value reads back whole.
            let bad: i64 =
                reader.query_row("SELECT count(*) FROM t WHERE length(v) != 1000", [], |r| r.get(0)).unwrap();
            assert_eq!(bad, 0);
        }
        // The writer reads its own frames back too, and checkpoints them.
        assert_eq!(count(&writer), 1000);
        writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        commit_rows(&writer, 1000, 10);
        drop(reader);
        drop(writer);
        let again = open(&path, None);
        assert_eq!(count(&again), 1010);
        let check: String = again.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn a_rolled_back_transaction_leaves_nothing() {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = open(&path, Some(NAME));
        commit_rows(&writer, 0, 10);
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        writer.execute("INSERT INTO t VALUES ('gone', 'x')", []).unwrap();
        writer.execute_batch("ROLLBACK").unwrap();
        commit_rows(&writer, 10, 10);
        drop(writer);
        assert_eq!(count(&open(&path, None)), 20);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_commit_hands_its_frames_to_the_os_in_one_write() {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut writes = Vec::new();
        for vfs in [None, Some(NAME)] {
            let path = dir.path().join(format!("{}.db", vfs.unwrap_or("default")));
            let conn = open(&path, vfs);
            commit_rows(&conn, 0, 200);
            let before = writes_by_this_thread();
            // Twenty pages or so: random keys spread over the index.
            commit_rows(&conn, 200, 20);
            writes.push(writes_by_this_thread() - before);
        }
        let (default, ours) = (writes[0], writes[1]);
        assert!(default >= 20, "the default VFS wrote {default} times");
        assert!(ours <= 2, "{ours} writes for one commit (the default VFS: {default})");
    }
}
