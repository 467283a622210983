//! Serving one listener: the accept loop, a cap on open connections, the
//! timeouts of each connection, and a bounded drain on shutdown.
//!
//! Each connection is served by hyper's HTTP/1.1 server with:
//! - the idle timeout (until a request's first byte), the header timeout and
//!   the header size limit (from that byte), in [`GuardedIo`];
//! - a body timeout on the request body ([`TimedBody`]), answered with 408;
//! - a write timeout: a response that makes no progress for that long
//!   closes the connection;
//! - on the SCIM port, a bounded number of requests in progress, each holding
//!   its turn until its response has left for the kernel, so clients that do
//!   not read their responses cost memory only up to that bound.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use super::conn_body::{TimedBody, TrackedBody, closing_scim_error};
use super::conn_io::{ConnShared, GuardedIo, IoLimits, raw_scim_error};
use super::metrics::{OpenConnection, ServerMetrics};

/// How long after an accept error (such as running out of file
/// descriptors) the listener tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Refused connections and accept errors are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    /// Requests in progress at once; `None` for no bound (the admin port).
    pub max_concurrent_requests: Option<usize>,
    pub max_header_bytes: usize,
    pub drain: Duration,
}

/// A listener being served.
pub(crate) struct Listener {
    /// Names the port in logs: "scim" or "admin".
    pub name: &'static str,
    pub listener: TcpListener,
    pub router: Router,
    pub limits: ConnLimits,
    pub metrics: Arc<ServerMetrics>,
}

/// What every connection of a listener shares.
struct PerListener {
    name: &'static str,
    router: Router,
    limits: ConnLimits,
    turns: Option<Arc<Semaphore>>,
    last_warning: Mutex<Option<Instant>>,
}

impl PerListener {
    /// Logs at WARN, at most once every [`WARN_EVERY`].
    fn warn(&self, what: &str, detail: &str) {
        let mut last = self.last_warning.lock();
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(listener = self.name, detail, "{what}");
        }
    }
}

/// Serves `l` until `shutdown` turns true; then stops accepting, lets the
/// requests in progress finish for up to the drain time, and closes the rest.
pub(crate) async fn serve(l: Listener, mut shutdown: watch::Receiver<bool>) {
    let shared = Arc::new(PerListener {
        name: l.name,
        router: l.router,
        limits: l.limits,
        turns: l.limits.max_concurrent_requests.map(|n| Arc::new(Semaphore::new(n))),
        last_warning: Mutex::new(None),
    });
    let slots = Arc::new(Semaphore::new(l.limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = l.listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let open = l.metrics.connection_opened(l.name);
                        conns.spawn(serve_conn(stream, shared.clone(), stop_rx.clone(), (slot, open)));
                    }
                    Err(_) => {
                        l.metrics.connection_refused(l.name);
                        shared.warn("connection refused: too many open connections", "raise connections.maxConnections if this is legitimate load");
                        conns.spawn(refuse(stream, l.limits.max_connections));
                    }
                },
                Err(e) => {
                    shared.warn("cannot accept a connection; retrying", &e.to_string());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(l.listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(l.limits.drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            listener = shared.name,
            open = conns.len(),
            "drain time over; closing the remaining connections"
        );
        conns.shutdown().await;
    }
}

/// Answers a connection past the cap with a 503 and closes it.
async fn refuse(stream: TcpStream, max: usize) {
    let response = raw_scim_error(503, &format!("this server already has {max} open connections; retry shortly"));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        stream.write_all(&response).await?;
        stream.shutdown().await?;
        // Read what the client sent, so it sees our answer rather than a reset.
        let mut scratch = [0u8; 4096];
        while stream.read(&mut scratch).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn serve_conn(
    stream: TcpStream,
    l: Arc<PerListener>,
    mut stop: watch::Receiver<bool>,
    _held: (OwnedSemaphorePermit, OpenConnection),
) {
    let _ = stream.set_nodelay(true);
    let conn_shared = Arc::new(ConnShared::default());
    let io_limits = IoLimits {
        idle_timeout: l.limits.idle_timeout,
        header_timeout: l.limits.header_timeout,
        write_timeout: l.limits.write_timeout,
        max_header_bytes: l.limits.max_header_bytes,
    };
    let io = TokioIo::new(GuardedIo::new(stream, conn_shared.clone(), io_limits));
    let service = hyper::service::service_fn({
        let l = l.clone();
        move |req: hyper::Request<Incoming>| handle(l.clone(), conn_shared.clone(), req)
    });
    // hyper's read buffer must hold a head of the largest size we accept,
    // so our 431 answers rather than hyper's bodiless one.
    let max_buf = (l.limits.max_header_bytes * 2).max(64 * 1024);
    // No timer for hyper: its header read timeout would arm one per request;
    // `GuardedIo` keeps both the idle and the header timeout.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(max_buf)
        .max_header_size(max_buf)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(listener = l.name, error = %e, "connection closed");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// One request: waits for a turn (SCIM port), applies the body timeout, and
/// runs the router.
async fn handle(
    l: Arc<PerListener>,
    conn: Arc<ConnShared>,
    req: hyper::Request<Incoming>,
) -> Result<Response, Infallible> {
    conn.begin_request();
    let turn = match &l.turns {
        None => None,
        // A free turn is taken at once; only a wait needs a timer.
        Some(turns) => match turns.clone().try_acquire_owned() {
            Ok(t) => Some(t),
            Err(_) => match tokio::time::timeout(l.limits.write_timeout, turns.clone().acquire_owned()).await {
                Ok(Ok(t)) => Some(t),
                _ => {
                    let busy = closing_scim_error(503, "the server is busy with other requests; retry shortly".into());
                    return Ok(busy.map(|b| Body::new(TrackedBody::new(b, conn, None))));
                }
            },
        },
    };
    // Most requests (every GET) have no body: nothing to time.
    let timed_out = (!http_body::Body::is_end_stream(req.body())).then(|| Arc::new(AtomicBool::new(false)));
    let req: Request = match &timed_out {
        Some(flag) => req.map(|b| Body::new(TimedBody::new(b, l.limits.body_timeout, flag.clone()))),
        None => req.map(Body::new),
    };
    let resp = match l.router.clone().call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let resp = if timed_out.is_some_and(|t| t.load(Ordering::Relaxed)) {
        closing_scim_error(408, format!("the request body did not arrive within {} s", l.limits.body_timeout.as_secs()))
    } else {
        resp
    };
    Ok(resp.map(|b| Body::new(TrackedBody::new(b, conn, turn))))
}
