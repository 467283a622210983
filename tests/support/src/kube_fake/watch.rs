//! Watch streams: newline-delimited JSON events over a chunked response.
//!
//! A watch does not get its own task: the response body is an `unfold` stream that reads the
//! shared event history from a cursor whenever the store signals a change. When the client
//! goes away hyper drops the body, and with it the stream, so nothing is left running.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Shared;
use super::store::{ApiError, Filter, HEvent, ResInfo};

pub struct WatchRequest {
    pub res: ResInfo,
    pub filter: Filter,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    /// Send `PartialObjectMetadata` objects (kube's metadata watches).
    pub as_meta: bool,
    pub timeout: Duration,
}

/// Keeps `open_watches` exact: it lives in the stream state and is dropped with it.
struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Watcher {
    guard: Guard,
    req: WatchRequest,
    rx: tokio::sync::watch::Receiver<()>,
    cursor: u64,
    /// The resourceVersion the client last learned (from an event or a bookmark).
    told: u64,
    pending: Option<Bytes>,
    done: bool,
    deadline: Instant,
    next_bookmark: Instant,
}

fn event(buf: &mut Vec<u8>, req: &WatchRequest, etype: &str, obj: &Value) {
    if req.as_meta {
        line(buf, etype, &super::partial_metadata(obj));
    } else {
        line(buf, etype, obj);
    }
}

fn line(buf: &mut Vec<u8>, etype: &str, obj: &Value) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(etype.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, obj);
    buf.extend_from_slice(b"}\n");
}

fn bookmark(buf: &mut Vec<u8>, res: &ResInfo, rv: u64, initial_end: bool) {
    let mut md = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(buf, "BOOKMARK", &json!({"kind": res.kind, "apiVersion": res.gvr.api_version(), "metadata": md}));
}

/// How one stored event looks to a watcher with this filter. A MODIFIED that moves an object
/// into or out of the selection becomes ADDED or DELETED, as on the real apiserver.
fn view<'a>(ev: &'a HEvent, req: &WatchRequest) -> Option<(&'static str, &'a Value)> {
    if ev.gvr != req.res.gvr || req.filter.ns.as_ref().is_some_and(|ns| *ns != ev.ns) {
        return None;
    }
    let now = req.filter.matches(&ev.obj);
    match ev.etype {
        "MODIFIED" => {
            let before = ev.prev.as_ref().is_some_and(|p| req.filter.matches(p));
            match (before, now) {
                (true, true) => Some(("MODIFIED", &ev.obj)),
                (false, true) => Some(("ADDED", &ev.obj)),
                (true, false) => Some(("DELETED", &ev.obj)),
                (false, false) => None,
            }
        }
        t => now.then_some((t, &*ev.obj)),
    }
}

/// Starts a watch, or refuses it before any byte is sent (bad resourceVersion).
pub fn start(shared: Arc<Shared>, req: WatchRequest) -> Result<Body, ApiError> {
    let rv_asked = match req.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?),
    };
    let mut rx = shared.state.lock().notify.subscribe();
    rx.borrow_and_update();
    let mut buf = Vec::new();
    let mut done = false;
    let cursor;
    {
        let st = shared.state.lock();
        match rv_asked {
            Some(rv) if !req.send_initial_events => {
                if rv < st.expired_rv {
                    line(&mut buf, "ERROR", &ApiError::expired(rv, st.expired_rv).status());
                    done = true;
                }
                cursor = rv.min(st.rv);
            }
            // No resourceVersion (or "0"), or a streaming list: the current state as ADDED first.
            _ => {
                for obj in st.snapshot(&req.res.gvr, &req.filter) {
                    event(&mut buf, &req, "ADDED", &obj);
                }
                cursor = st.rv;
                if req.send_initial_events && req.bookmarks {
                    bookmark(&mut buf, &req.res, cursor, true);
                }
            }
        }
    }
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let now = Instant::now();
    let interval = super::BOOKMARK_INTERVAL;
    let w = Watcher {
        guard: Guard(shared),
        deadline: now + req.timeout,
        next_bookmark: now + interval,
        req,
        rx,
        cursor,
        told: cursor,
        pending: (!buf.is_empty()).then(|| Bytes::from(buf)),
        done,
    };
    Ok(Body::from_stream(futures::stream::unfold(w, step)))
}

async fn step(mut w: Watcher) -> Option<(Result<Bytes, Infallible>, Watcher)> {
    if let Some(b) = w.pending.take() {
        return Some((Ok(b), w));
    }
    loop {
        if w.done {
            return None;
        }
        // Marked seen before reading the history, so a change landing in between wakes us again.
        w.rx.borrow_and_update();
        let mut buf = Vec::new();
        {
            let shared = &w.guard.0;
            let st = shared.state.lock();
            if st.down || st.shutdown {
                return None;
            }
            if w.cursor < st.expired_rv {
                // This watcher fell behind the retained history (or the client asked for too old a version).
                line(&mut buf, "ERROR", &ApiError::expired(w.cursor, st.expired_rv).status());
                w.done = true;
            } else {
                let from = st.history.partition_point(|e| e.rv <= w.cursor);
                for ev in st.history.range(from..) {
                    if let Some((t, obj)) = view(ev, &w.req) {
                        event(&mut buf, &w.req, t, obj);
                        w.told = ev.rv;
                    }
                }
                w.cursor = st.rv;
            }
        }
        if !buf.is_empty() {
            return Some((Ok(Bytes::from(buf)), w));
        }
        let bookmark_due = w.next_bookmark;
        tokio::select! {
            changed = w.rx.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = tokio::time::sleep_until(w.deadline) => return None,
            _ = tokio::time::sleep_until(bookmark_due) => {
                w.next_bookmark = Instant::now() + super::BOOKMARK_INTERVAL;
                // Bookmarks only when the client asked, and only when they tell it something new.
                if w.req.bookmarks && w.cursor > w.told {
                    let mut buf = Vec::new();
                    bookmark(&mut buf, &w.req.res, w.cursor, false);
                    w.told = w.cursor;
                    return Some((Ok(Bytes::from(buf)), w));
                }
            }
        }
    }
}
