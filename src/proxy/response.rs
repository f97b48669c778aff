//! A backend's answer on its way to the client, and ringside's own answers:
//! hop-by-hop fields removed, ringside's version (HTTP/1.1) and framing the
//! client can read (hyper frames: a length, chunked for 1.1, or close for
//! 1.0), the balancer's cookie set and the answer made private when it
//! carries one, `Keep-Alive: timeout=` advertised, trailers kept.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

use super::client::{BodyError, Permit, ResponseBody};
use super::headers::{self, ConnectionOptions};
use super::io::InFlight;
use crate::router::Backend;

/// Counts one active connection on a backend for as long as it lives.
#[derive(Debug)]
pub struct ActiveGuard(std::sync::Arc<Backend>);

impl ActiveGuard {
    /// Counts a connection on `backend` now.
    pub fn new(backend: &std::sync::Arc<Backend>) -> Self {
        backend.counters.active.incr();
        ActiveGuard(std::sync::Arc::clone(backend))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.counters.active.decr();
    }
}

/// A backend's body with what its exchange holds until the end: the
/// backend's active count and its place under the connection cap.
#[derive(Debug)]
pub struct Relayed {
    body: ResponseBody,
    _active: ActiveGuard,
    _permit: Permit,
}

impl Relayed {
    /// Relays `body`, holding `active` and `permit` until it ends.
    pub fn new(body: ResponseBody, active: ActiveGuard, permit: Permit) -> Self {
        Relayed {
            body,
            _active: active,
            _permit: permit,
        }
    }
}

// Relayed bodies are the common case: boxing them would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Relayed(Relayed),
    Own(Full<Bytes>),
}

/// What the proxy answers with: a backend's body or one of its own, holding
/// the request's place on its connection until the body is done.
pub struct ProxyBody {
    inner: Inner,
    /// A backend's body failed: the error, held back one poll so that hyper
    /// first writes out what the client was already given.
    failed: Option<BodyError>,
    _in_flight: Option<InFlight>,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody").finish_non_exhaustive()
    }
}

impl ProxyBody {
    /// A backend's body.
    pub fn relayed(body: Relayed) -> Self {
        ProxyBody {
            inner: Inner::Relayed(body),
            failed: None,
            _in_flight: None,
        }
    }

    /// A short body of ringside's own.
    pub fn own(text: &'static str) -> Self {
        ProxyBody {
            inner: Inner::Own(Full::new(Bytes::from_static(text.as_bytes()))),
            failed: None,
            _in_flight: None,
        }
    }

    /// Holds the request's place on its connection until the body is done.
    pub fn holding(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let polled = match &mut self.inner {
            Inner::Relayed(r) => Pin::new(&mut r.body).poll_frame(cx),
            Inner::Own(f) => Pin::new(f).poll_frame(cx).map_err(|never| match never {}),
        };
        match polled {
            Poll::Ready(Some(Err(e))) => {
                // hyper drops what it has not written when a body fails:
                // let it flush first, then fail.
                self.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Relayed(r) => r.body.is_end_stream(),
            Inner::Own(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Relayed(r) => r.body.size_hint(),
            Inner::Own(f) => f.size_hint(),
        }
    }
}

/// An answer of ringside's own: `status`, a one-line plain-text body.
pub fn own(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::own(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The same, and the connection closes after it.
pub fn own_closing(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = own(status, text);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What the answer must say besides the backend's head.
#[derive(Debug, Clone)]
pub struct Dressing<'a> {
    /// The balancer cookie to set, when the session was created or moved.
    pub set_cookie: Option<HeaderValue>,
    /// `Keep-Alive: timeout=N` for a persistent connection.
    pub keep_alive: Option<&'a HeaderValue>,
    /// The head's `Connection` options, when the upstream client read them.
    pub connection: Option<&'a ConnectionOptions>,
}

/// Prepares a backend's head for the client, in place.
pub fn dress(parts: &mut http::response::Parts, dressing: Dressing<'_>) {
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut parts.headers, switching, dressing.connection);
    parts.version = Version::HTTP_11;
    if let Some(cookie) = dressing.set_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
        headers::make_private(&mut parts.headers);
    }
    if let Some(ka) = dressing.keep_alive
        && !switching
    {
        parts
            .headers
            .insert(http::HeaderName::from_static("keep-alive"), ka.clone());
    }
}
