//! Response bodies: the backend's, streamed through while counting the
//! backend's active connection and returning the connection to its pool at
//! the end; or a short one of ringside's own.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::pool::UpstreamBody;
use super::upstream::Upstream;
use crate::router::Backend;

/// What the proxy answers with.
pub type ProxyBody = Either<StreamedBody, Full<Bytes>>;

/// Counts one active connection on a backend for as long as it lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Backend>);

impl ActiveGuard {
    /// Counts a connection on `backend` now.
    pub fn new(backend: &Arc<Backend>) -> Self {
        backend.counters.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(backend))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend's response body on its way to the client.
#[derive(Debug)]
pub struct StreamedBody {
    inner: Incoming,
    /// The connection, returned to the pool once the body has ended.
    connection: Option<(SendRequest<UpstreamBody>, Arc<Upstream>)>,
    ended: bool,
    _active: ActiveGuard,
}

impl StreamedBody {
    /// Streams `inner`; `connection` goes back to its pool at the end.
    pub fn new(inner: Incoming, connection: (SendRequest<UpstreamBody>, Arc<Upstream>), active: ActiveGuard) -> Self {
        StreamedBody {
            inner,
            connection: Some(connection),
            ended: false,
            _active: active,
        }
    }

    fn give_back(&mut self) {
        if let Some((sender, upstream)) = self.connection.take() {
            upstream.pool.checkin(sender);
        }
    }
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
            this.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for StreamedBody {
    fn drop(&mut self) {
        // A body dropped half-read leaves its connection unusable: hyper
        // closes it, and it is not returned.
        if self.ended || self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

/// A short plain-text answer of ringside's own.
pub fn plain(text: &'static str) -> ProxyBody {
    Either::Right(Full::new(Bytes::from_static(text.as_bytes())))
}
