//! The socket of one connection, with the limits hyper does not keep the
//! way we need them: how long a request's headers may take from their first
//! byte, how large they may be (answered with a SCIM 431 or 414 body rather
//! than hyper's empty one), and how long a response write may make no
//! progress (a client that never reads).

use std::io;

use axum::http::StatusCode;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::scim::error::ScimError;

/// How long a rejected client may go on sending before the socket closes;
/// reading what it sends meanwhile lets it read our error instead of a reset.
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// At most this much is read and discarded from a rejected client.
const REJECT_DRAIN_BYTES: usize = 1024 * 1024;

/// A whole HTTP/1.1 response carrying a SCIM error, for the paths that write
/// to the socket directly (refused connections, oversized heads).
pub(crate) fn raw_scim_error(status: u16, detail: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&ScimError::new(status, None, detail).body()).unwrap_or_default();
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/scim+json\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n",
        body.len(),
        if status == 503 { "retry-after: 1\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// What the socket and the request handling of one connection share.
pub(crate) struct ConnShared {
    /// When the connection was accepted; `idle_from` counts from here.
    accepted: Instant,
    /// Nanoseconds after `accepted` when the last response was handed over
    /// (0: none yet), the start of the current idle time.
    idle_from: AtomicU64,
    /// Set while the connection waits for (the rest of) a request head:
    /// from its start, and again once a response has been sent.
    handling: AtomicBool,
    /// Requests started on this connection; tells one head from the next.
    requests: AtomicU64,
    /// The turn of a request whose response is complete but may still sit
    /// in hyper's buffers; released once a flush has handed it to the kernel.
    turn: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Default for ConnShared {
    fn default() -> Self {
        ConnShared {
            accepted: Instant::now(),
            idle_from: AtomicU64::new(0),
            handling: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            turn: Mutex::new(None),
        }
    }
}

impl ConnShared {
    /// Since when the connection has had nothing to do (meaningful only
    /// while no request is in progress).
    fn idle_since(&self) -> Instant {
        self.accepted + Duration::from_nanos(self.idle_from.load(Ordering::Relaxed))
    }

    /// A request head has been parsed and is being handled.
    pub(crate) fn begin_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.handling.store(true, Ordering::Relaxed);
    }

    /// The response has been handed to hyper; `turn` is released once it
    /// has left for the kernel.
    pub(crate) fn end_response(&self, turn: Option<OwnedSemaphorePermit>) {
        if turn.is_some() {
            *self.turn.lock() = turn;
        }
        let since_accept = u64::try_from(self.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.idle_from.store(since_accept, Ordering::Relaxed);
        self.handling.store(false, Ordering::Relaxed);
    }
}

/// The limits [`GuardedIo`] keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoLimits {
    /// How long a connection may wait for the first byte of a request.
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Where the head of the current request stands.
#[derive(Default)]
struct Head {
    /// The request (by count) these figures belong to.
    request: Option<u64>,
    bytes: usize,
    /// Newlines in a row (carriage returns ignored); two end the head.
    newlines: u8,
    /// The request line has ended (so an overlong head is 431, not 414).
    line_ended: bool,
    complete: bool,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Head {
    /// Takes the next bytes read while the head is awaited; whether the head
    /// ended within them (else `bytes` does not count this read yet).
    ///
    /// Every byte of every head passes here: newlines are found with memchr,
    /// and a line is blank when it holds only carriage returns, which its
    /// first byte nearly always settles.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        // Most heads (every GET) arrive whole and end the read: a read that
        // ends in a blank line completes the head within it, wherever the
        // head's first blank line is, and nothing else is needed of it then.
        if (bytes.ends_with(b"\n\r\n") || bytes.ends_with(b"\n\n")) && self.bytes + bytes.len() > 2 {
            return self.completed();
        }
        let only_cr = |line: &[u8]| line.iter().all(|&b| b == b'\r');
        let mut line_start = 0;
        for i in memchr::memchr_iter(b'\n', bytes) {
            if !only_cr(&bytes[line_start..i]) {
                self.newlines = 0;
            }
            self.newlines = self.newlines.saturating_add(1);
            // Blank lines before a request line are allowed.
            if self.bytes + i > 1 {
                self.line_ended = true;
            }
            if self.newlines >= 2 && self.line_ended {
                self.bytes += i + 1;
                return self.completed();
            }
            line_start = i + 1;
        }
        if !only_cr(&bytes[line_start..]) {
            self.newlines = 0;
        }
        false
    }

    /// The head has ended: no deadline for it any more.
    fn completed(&mut self) -> bool {
        self.complete = true;
        self.deadline = None;
        true
    }
}

/// The idle timeout of one connection, on one timer that is set once and
/// moved only when it fires early: arming a timer for every wait between
/// two requests (as hyper's header read timeout does) costs keep-alive
/// clients several percent of read throughput.
///
/// hyper reads ahead before it answers a request and does not read again
/// after the answer until woken, so the timer must already be registered
/// when the connection falls idle: it is polled on every read that would
/// block and after every flush, and when it fires the connection's task
/// wakes and the read that follows decides.
#[derive(Default)]
struct IdleTimer(Option<Pin<Box<Sleep>>>);

impl IdleTimer {
    /// Not yet set, or fired: the connection's task is not woken at the end
    /// of an idle period until it is polled again.
    fn needs_arming(&self) -> bool {
        self.0.as_ref().is_none_or(|t| t.is_elapsed())
    }

    /// Whether the connection, idle since `idle_since` (`None` while a
    /// request is on its way or in progress), has passed `timeout`; keeps the
    /// timer registered otherwise.
    fn expired(&mut self, cx: &mut Context<'_>, idle_since: Option<Instant>, timeout: Duration) -> bool {
        let timer = self.0.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match idle_since {
                Some(since) if now >= since + timeout => return true,
                Some(since) => timer.as_mut().reset(since + timeout),
                // Never later than the end of an idle period starting now.
                None => timer.as_mut().reset(now + timeout),
            }
        }
        false
    }
}

pub(crate) struct GuardedIo {
    stream: TcpStream,
    shared: Arc<ConnShared>,
    limits: IoLimits,
    head: Head,
    idle: IdleTimer,
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Set once an oversized head was answered: the rest is discarded
    /// until the client stops or the linger passes.
    rejected: Option<(Pin<Box<Sleep>>, usize)>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl GuardedIo {
    pub(crate) fn new(stream: TcpStream, shared: Arc<ConnShared>, limits: IoLimits) -> Self {
        GuardedIo {
            stream,
            shared,
            limits,
            head: Head::default(),
            idle: IdleTimer::default(),
            write_deadline: None,
            rejected: None,
        }
    }

    fn awaiting_head(&self) -> bool {
        !self.shared.handling.load(Ordering::Relaxed)
    }

    /// Accounts bytes read while a head is awaited. Returns the status to
    /// refuse the request with when the head grows past the limit.
    fn on_head_bytes(&mut self, bytes: &[u8]) -> Option<u16> {
        let request = self.shared.requests.load(Ordering::Relaxed);
        if self.head.request != Some(request) {
            // The deadline is armed only if the head has to be waited for.
            self.head = Head { request: Some(request), ..Head::default() };
        }
        if self.head.complete {
            return None;
        }
        if self.head.scan(bytes) {
            return None;
        }
        self.head.bytes += bytes.len();
        if self.head.bytes > self.limits.max_header_bytes {
            return Some(if self.head.line_ended { 431 } else { 414 });
        }
        None
    }

    /// Answers an oversized head with a SCIM error and stops reading requests.
    fn reject(&mut self, status: u16) {
        let detail = if status == 414 {
            format!("the request line is longer than the {} bytes this server accepts", self.limits.max_header_bytes)
        } else {
            format!(
                "the request line and headers are larger than the {} bytes this server accepts",
                self.limits.max_header_bytes
            )
        };
        let response = raw_scim_error(status, &detail);
        // Best effort: nothing has been sent on this connection since its
        // last response, so the kernel's buffer has room for a few hundred bytes.
        let _ = self.stream.try_write(&response);
        self.rejected = Some((Box::pin(tokio::time::sleep(REJECT_LINGER)), 0));
    }

    /// Reads and discards what a rejected client still sends, then fails
    /// the connection.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((linger, drained)) = self.rejected.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            if linger.as_mut().poll(cx).is_ready() || *drained > REJECT_DRAIN_BYTES {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large")));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large")));
                }
                Poll::Ready(Ok(())) => *drained += buf.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Tracks a write's progress: a write that stays pending longer than
    /// the write timeout fails the connection.
    fn on_write<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                let timeout = self.limits.write_timeout;
                let deadline = self.write_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("the client did not read the response")));
                }
                Poll::Pending
            }
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rejected.is_some() {
            return this.poll_drain(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.awaiting_head()
                    && buf.filled().len() > before
                    && let Some(status) = this.on_head_bytes(&buf.filled()[before..])
                {
                    buf.set_filled(before);
                    this.reject(status);
                    return this.poll_drain(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let current = this.shared.requests.load(Ordering::Relaxed);
                let awaiting = this.awaiting_head();
                // Idle: no request in progress and not one byte of the next.
                let idle_since = (awaiting && this.head.request != Some(current)).then(|| this.shared.idle_since());
                if this.idle.expired(cx, idle_since, this.limits.idle_timeout) {
                    return Poll::Ready(Err(timed_out("the connection was idle for too long")));
                }
                if !awaiting || this.head.request != Some(current) {
                    return Poll::Pending;
                }
                let timeout = this.limits.header_timeout;
                if !this.head.complete
                    && this
                        .head
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
                        .as_mut()
                        .poll(cx)
                        .is_ready()
                {
                    return Poll::Ready(Err(timed_out("the request headers did not arrive in time")));
                }
                Poll::Pending
            }
            err => err,
        }
    }
}

/// hyper answers a request it cannot parse (a malformed request line or
/// header, more header fields than it takes) by itself, with the status and
/// an empty body. Such an answer is recognised by its status and its empty,
/// untyped body — every response of ours carries a typed body — and replaced
/// by the same status with a SCIM error body.
fn hyper_parse_error(head: &[u8]) -> Option<u16> {
    if head.len() > 256 || !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let status: u16 = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    (head.contains("\r\ncontent-length: 0\r\n") && !head.contains("\r\ncontent-type:")).then_some(status)
}

fn parse_error_detail(status: u16) -> &'static str {
    match status {
        414 => "the request line is too long",
        431 => "the request has more header fields than this server accepts (100)",
        _ => "the request line or a header field is not valid HTTP/1.1",
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(status) = hyper_parse_error(buf) {
            // hyper closes the connection after this answer; nothing else
            // was sent since the last response, so the kernel takes it whole.
            let _ = self.stream.try_write(&raw_scim_error(status, parse_error_detail(status)));
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let [only] = bufs
            && hyper_parse_error(only).is_some()
        {
            return self.poll_write(cx, only);
        }
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        let r = self.on_write(cx, r);
        if matches!(r, Poll::Ready(Ok(()))) {
            // hyper flushes once its buffers are written: a finished
            // response no longer holds memory, so its turn goes back.
            self.shared.turn.lock().take();
            let this = &mut *self;
            // Re-armed if it fired while a request was in progress, so it
            // covers the idle time that may start now. Otherwise it is still
            // registered with this task from the last read that waited.
            if this.idle.needs_arming() {
                let _ = this.idle.expired(cx, None, this.limits.idle_timeout);
            }
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Head;

    /// The rule `Head::scan` keeps, a byte at a time: two newlines in a row
    /// (carriage returns between them ignored) end the head, once a line
    /// other than a leading blank one has ended.
    fn reference(head: &[u8]) -> Option<usize> {
        let (mut newlines, mut line_ended) = (0u8, false);
        for (i, b) in head.iter().enumerate() {
            match b {
                b'\n' => {
                    newlines = newlines.saturating_add(1);
                    line_ended |= i > 1;
                    if newlines >= 2 && line_ended {
                        return Some(i + 1);
                    }
                }
                b'\r' => {}
                _ => newlines = 0,
            }
        }
        None
    }

    /// The reads `head` arrives in: sizes from `reads`, cycled.
    fn split<'a>(head: &'a [u8], reads: &[usize]) -> Vec<&'a [u8]> {
        let (mut out, mut at) = (Vec::new(), 0);
        for n in reads.iter().cycle() {
            if at >= head.len() {
                return out;
            }
            let end = (at + n.max(&1)).min(head.len());
            out.push(&head[at..end]);
            at = end;
        }
        out
    }

    /// Which read completes the head, scanned by `Head::scan`.
    fn scanned(head: &[u8], reads: &[usize]) -> Option<usize> {
        let mut h = Head::default();
        for (i, read) in split(head, reads).into_iter().enumerate() {
            if h.scan(read) {
                return Some(i);
            }
            h.bytes += read.len();
        }
        None
    }

    /// Which read holds the end `reference` finds.
    fn expected(head: &[u8], reads: &[usize]) -> Option<usize> {
        let end = reference(head)?;
        let mut seen = 0;
        split(head, reads).iter().position(|read| {
            seen += read.len();
            seen >= end
        })
    }

    #[test]
    fn a_head_ends_where_a_byte_by_byte_scan_says_however_it_is_split() {
        let heads: [&[u8]; 8] = [
            b"GET /Users HTTP/1.1\r\nHost: a\r\n\r\nbody",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nA: b\r\n\r\n",
            b"\n\n\n\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\r\r\n\r\r\nrest",
            b"GET / HTTP/1.1\r\nA: \rb\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\nB: c",
            b"\r\r\n",
        ];
        let splits: [&[usize]; 5] = [&[1], &[2], &[3, 1], &[7], &[1 << 20]];
        for head in heads {
            for reads in splits {
                assert_eq!(
                    scanned(head, reads),
                    expected(head, reads),
                    "{:?} read {reads:?} at a time",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_head_in_any_reads(
            head in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\r', b'\n']), 0..64),
            reads in proptest::collection::vec(1usize..9, 1..6),
        ) {
            proptest::prop_assert_eq!(scanned(&head, &reads), expected(&head, &reads));
        }
    }
}
