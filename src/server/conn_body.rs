//! Request and response bodies as the connection layer sees them: a request
//! body that must arrive within the body timeout, a response body that marks
//! the end of its request (and returns the request's turn), and SCIM error
//! responses that close the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use super::conn_io::ConnShared;
use super::http::ApiError;
use crate::scim::error::ScimError;

/// A SCIM error response that also closes the connection.
pub(crate) fn closing_scim_error(status: u16, detail: String) -> Response {
    let mut resp = ApiError(ScimError::new(status, None, detail)).into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == 503 {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A request body that fails once the body timeout has passed, and says so
/// in `timed_out` so the response can be a 408.
pub(crate) struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    /// Armed when the body first has to be waited for: most requests (every
    /// GET, most writes) arrive whole, and a timer per request costs reads
    /// throughput for nothing.
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        TimedBody { inner, timeout, deadline: None, timed_out }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub(crate) struct BodyTimeout;

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells the connection when its request is over:
/// at its end, or when hyper drops it.
pub(crate) struct TrackedBody {
    inner: Body,
    shared: Arc<ConnShared>,
    turn: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl TrackedBody {
    pub(crate) fn new(inner: Body, shared: Arc<ConnShared>, turn: Option<OwnedSemaphorePermit>) -> Self {
        TrackedBody { inner, shared, turn, done: false }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.end_response(self.turn.take());
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finish();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
