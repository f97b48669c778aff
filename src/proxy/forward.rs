//! One request, start to finish: refused or routed; its body's first bytes
//! read before any backend is involved; a place under the backend's
//! connection cap; a pooled connection; the exchange; and on failure the
//! answer a careful proxy gives — a resend only when repeating is harmless,
//! a redispatch after a failed connect, ringside's own faults never blamed
//! on a backend, the client's faults answered as the client's.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::client::{Answer, BoxError, ConnectError, Framing, QueueError, RequestHead, SendError, Timeouts};
use super::io::ConnShared;
use super::request::{self, Facts, Refusal};
use super::response::{self, ActiveGuard, Dressing, ProxyBody, Relayed, own, own_closing};
use super::tunnel::PendingTunnel;
use super::{Proxy, ProxySettings, headers};
use crate::router::affinity::RequestView;
use crate::router::lb_cookie::VerifiedCookie;
use crate::router::{BackendId, Outcome, Route, RouterError};

/// The most request-body bytes read before a backend is chosen (whatever
/// has already arrived, never waited for).
const PREFETCH: usize = 64 * 1024;

/// Who sent a request: the connection's peer and what it shares.
pub struct ClientCtx {
    /// The peer.
    pub addr: std::net::SocketAddr,
    /// The peer as an `X-Forwarded-For` value, made once per connection.
    pub forwarded_for: HeaderValue,
    /// What the connection shares with its requests.
    pub shared: Arc<ConnShared>,
    /// The last balancer cookie its requests presented that verified.
    pub verified_cookie: VerifiedCookie,
}

impl Proxy {
    /// One request, start to finish.
    pub(super) async fn handle(&self, req: Request<Incoming>, ctx: &ClientCtx) -> Response<ProxyBody> {
        let in_flight = ctx.shared.begin();
        self.stats.requests.incr();
        let http10 = req.version() == http::Version::HTTP_10;
        let response = if ctx.shared.watch.next_is_ambiguous() {
            self.stats.smuggling_refused.incr();
            self.stats.client_errors.incr();
            own_closing(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the request's framing is ambiguous (both Content-Length and Transfer-Encoding, or after bytes that did not frame)\n",
            )
        } else if self.came_back(req.headers()) {
            self.stats.loops_refused.incr();
            tracing::warn!(
                "a request came back to ringside through one of its backends (its Via names this instance): answered 508"
            );
            own(
                StatusCode::LOOP_DETECTED,
                "508 Loop Detected: this request already passed through this ringside; a backend points back at it\n",
            )
        } else {
            match request::check(req.method(), req.uri(), req.version(), req.headers()) {
                // Boxed: the exchange's state is large, and hyper moves the
                // service's future into place for each request.
                Ok(()) => Box::pin(self.forward(req, ctx)).await,
                Err(refusal) => self.refused(refusal),
            }
        };
        self.stats.answered(response.status());
        if http10 {
            ctx.shared.answer_http10();
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, body.holding(in_flight))
    }

    fn refused(&self, r: Refusal) -> Response<ProxyBody> {
        self.stats.client_errors.incr();
        let mut resp = own_closing(r.status, r.reason);
        if r.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(request::ALLOWED));
        }
        // The reason is the whole body: it says what was wrong.
        *resp.body_mut() = ProxyBody::own(r.reason);
        resp
    }

    async fn forward(&self, req: Request<Incoming>, ctx: &ClientCtx) -> Response<ProxyBody> {
        let now = self.clock.now();
        let settings = self.settings_here();
        let key = self.router.read_request(&RequestView {
            headers: req.headers(),
            query: req.uri().query(),
            peer: ctx.addr.ip(),
            verified: Some(&ctx.verified_cookie),
        });
        let app_session = key.app_session;
        let routed = match &self.store {
            // A key the local table lacks is agreed with the shared store
            // before anything is stored: another balancer may have it.
            Some(store) if store.is_available() => match self.router.route_cached(&key, now) {
                Err(RouterError::NotCached(proposal)) => store.route_missed(&self.router, &key, now, &proposal).await,
                other => other,
            },
            _ => self.router.route_request(&key, now),
        };
        let Ok(mut route) = routed else {
            return self.unavailable("503 Service Unavailable: no backend is available\n");
        };
        if matches!(route.outcome, Outcome::Reassigned { .. }) {
            route = self.share_move(route).await;
        }

        let (mut parts, incoming) = req.into_parts();
        let facts = request::normalise(
            &mut parts,
            self.router.affinity().codec().name(),
            &ctx.forwarded_for,
            &self.via,
            &settings.fallback_host,
        );
        let mut body = match Prefetched::read(incoming, facts.framing).await {
            Ok(b) => b,
            Err(e) => return self.client_body_failed(&e),
        };
        let head = RequestHead {
            method: &parts.method,
            target: request::target(&parts.uri),
            headers: &parts.headers,
            framing: facts.framing,
        };
        // A request may be sent again only if repeating it is harmless and
        // its whole body is at hand.
        let replayable = facts.idempotent && body.is_whole();

        let mut tried: Vec<BackendId> = Vec::new();
        let mut attempts = 0u32;
        let mut fresh = false;
        loop {
            let Some(upstream) = self.upstreams.get(route.backend.id) else {
                self.stats.bad_gateway.incr();
                return own(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: the backend is not known to the proxy\n",
                );
            };
            if upstream.limit.in_use() >= upstream.limit.max() {
                self.stats.queued.incr();
            }
            let permit = match upstream.limit.acquire(settings.queue_timeout).await {
                Ok(p) => p,
                Err(e) => {
                    self.stats.queue_timeouts.incr();
                    return self.unavailable(match e {
                        QueueError::Full => "503 Service Unavailable: the backend's queue is full\n",
                        QueueError::TimedOut => "503 Service Unavailable: no place with the backend in time\n",
                    });
                }
            };
            let connected = if fresh {
                upstream.pool.connect().await
            } else {
                upstream.pool.checkout().await
            };
            let mut conn = match connected {
                Ok(c) => {
                    upstream.connect_ok();
                    c
                }
                Err(e) if e.is_local() => return self.ringside_short(&e),
                Err(e) => {
                    tracing::debug!("{}: {e}", route.backend.name);
                    if upstream.connect_failed() == settings.fall {
                        self.health.connects_failing(&route.backend, connect_reason(&e));
                    }
                    if !self.redispatch(&mut route, &mut tried, &mut attempts, &settings) {
                        return self.gave_up(attempts, false, &settings);
                    }
                    route = self.share_move(route).await;
                    fresh = false;
                    continue;
                }
            };
            conn.set_timeouts(Timeouts {
                backend_idle: settings.backend_timeout,
                client_idle: settings.client_timeout,
            });
            let active = ActiveGuard::new(&route.backend);
            let started = tokio::time::Instant::now();
            let mut relay_interim = |interim: Response<()>| {
                if !facts.http10 {
                    let bytes = interim_bytes(&interim);
                    if !ctx.shared.interim(&bytes) {
                        tracing::debug!(
                            "a {} from the backend was dropped: an earlier answer was still being written",
                            interim.status()
                        );
                    }
                }
            };
            let sent = conn.send(&head, body.replay(), Some(&mut relay_interim)).await;
            match sent {
                Ok(Answer::Response(resp, connection)) => {
                    upstream.latency.record(started.elapsed());
                    let (response, learned) = self.relay(
                        resp,
                        &connection,
                        &route,
                        app_session,
                        &facts,
                        &settings,
                        active,
                        permit,
                    );
                    if let (Some(fingerprint), Some(store)) = (learned, &self.store) {
                        // The client may send its next request to another balancer.
                        store.commit(&self.router, fingerprint).await;
                    }
                    return response;
                }
                Ok(Answer::Upgraded(up)) => {
                    upstream.latency.record(started.elapsed());
                    self.stats.tunnels.incr();
                    let (mut parts, ()) = up.head.clone().into_parts();
                    response::dress(
                        &mut parts,
                        Dressing {
                            set_cookie: None,
                            keep_alive: None,
                            connection: None,
                        },
                    );
                    ctx.shared.set_tunnel(PendingTunnel {
                        backend: up,
                        closing: upstream.closing(),
                        active,
                    });
                    drop(permit);
                    return Response::from_parts(parts, ProxyBody::own(""));
                }
                Err(e) => {
                    tracing::debug!("{}: {e}", route.backend.name);
                    match e {
                        SendError::Stale { .. } if replayable && !fresh => {
                            // The backend had closed it while idle: the
                            // same request on a new connection.
                            fresh = true;
                            continue;
                        }
                        SendError::Stale { .. } | SendError::BackendFailed { .. } => {
                            if !replayable {
                                self.stats.bad_gateway.incr();
                                self.stats.lost_in_flight.incr();
                                return own(
                                    StatusCode::BAD_GATEWAY,
                                    "502 Bad Gateway: the backend failed after taking the request; not resent, as repeating it may not be safe\n",
                                );
                            }
                            if !self.redispatch(&mut route, &mut tried, &mut attempts, &settings) {
                                return self.gave_up(attempts, true, &settings);
                            }
                            route = self.share_move(route).await;
                            fresh = false;
                            continue;
                        }
                        SendError::BackendTimeout => {
                            self.stats.gateway_timeout.incr();
                            return own(
                                StatusCode::GATEWAY_TIMEOUT,
                                "504 Gateway Timeout: the backend was silent for longer than its timeout\n",
                            );
                        }
                        SendError::BadResponse(why) => {
                            self.stats.bad_gateway.incr();
                            tracing::warn!("{} answered badly: {why}", route.backend.name);
                            return own(
                                StatusCode::BAD_GATEWAY,
                                "502 Bad Gateway: the backend's answer was not valid HTTP\n",
                            );
                        }
                        SendError::ClientBody(e) => return self.client_body_failed(&e),
                        SendError::ClientTimeout => {
                            self.stats.client_timeouts.incr();
                            return own_closing(
                                StatusCode::REQUEST_TIMEOUT,
                                "408 Request Timeout: the request body stalled\n",
                            );
                        }
                        SendError::InvalidRequest(why) => {
                            self.stats.client_errors.incr();
                            tracing::debug!("refused: {why}");
                            return own_closing(
                                StatusCode::BAD_REQUEST,
                                "400 Bad Request: the request cannot be forwarded\n",
                            );
                        }
                    }
                }
            }
        }
    }

    /// Writes a move the route made to the shared store before the request
    /// goes on; if another balancer had moved the session first, the request
    /// follows its move.
    async fn share_move(&self, route: Route) -> Route {
        match (&self.store, route.fingerprint) {
            (Some(store), Some(fingerprint)) if store.is_available() => {
                store.commit(&self.router, fingerprint).await;
                self.router.rehome(route)
            }
            _ => route,
        }
    }

    /// The response to relay, and the fingerprint of the session it taught
    /// the router (bound, moved or ended) in the table in force.
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &self,
        resp: Response<super::client::ResponseBody>,
        connection: &headers::ConnectionOptions,
        route: &Route,
        app_session: Option<u64>,
        facts: &Facts,
        settings: &ProxySettings,
        active: ActiveGuard,
        permit: super::client::Permit,
    ) -> (Response<ProxyBody>, Option<u64>) {
        let (mut parts, body) = resp.into_parts();
        if parts.headers.contains_key(header::TRANSFER_ENCODING) && !headers::other_codings(&parts.headers).is_empty() {
            // A coding ringside does not decode cannot be relayed honestly
            // to a client that did not ask for it.
            self.stats.bad_gateway.incr();
            tracing::warn!(
                "{} answered with transfer codings {:?}: not relayed",
                route.backend.name,
                headers::other_codings(&parts.headers)
            );
            return (
                own(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: the backend used a transfer coding ringside does not relay\n",
                ),
                None,
            );
        }
        // Whether it teaches anything is the router's policy (nothing in `none`).
        let learned = self
            .router
            .learn_from_response(&parts.headers, app_session, route.backend.id, || self.clock.now());
        let cookie = if route.set_cookie
            && let Some(session) = route.session_id
        {
            let codec = self.router.affinity().codec();
            headers::set_cookie_value(codec.name(), &settings.cookie, |out| {
                codec.encode_into(session, &route.backend, out);
            })
        } else {
            None
        };
        // An HTTP/1.0 client cannot read chunks: an answer of unknown length
        // is delimited by closing the connection, and says so.
        let closes = facts.close || (facts.http10 && body.size_hint().exact().is_none());
        response::dress(
            &mut parts,
            Dressing {
                set_cookie: cookie,
                keep_alive: (!closes).then_some(&settings.keep_alive),
                connection: Some(connection),
            },
        );
        if closes {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if facts.http10 {
            // hyper keeps an HTTP/1.0 connection only for an answer that says
            // so (and writes `HTTP/1.0`, which the connection makes `HTTP/1.1`).
            parts.version = http::Version::HTTP_10;
            if !closes {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            }
            parts.headers.remove(header::TRAILER);
        }
        (
            Response::from_parts(parts, ProxyBody::relayed(Relayed::new(body, active, permit))),
            learned,
        )
    }

    /// Moves the request to the key's next backend; `false` when the
    /// retries are spent or nothing else is available.
    fn redispatch(
        &self,
        route: &mut Route,
        tried: &mut Vec<BackendId>,
        attempts: &mut u32,
        settings: &ProxySettings,
    ) -> bool {
        *attempts += 1;
        if *attempts > settings.retries {
            return false;
        }
        tried.push(route.backend.id);
        match self.router.redispatch(route, tried, self.clock.now()) {
            Ok(next) => {
                self.stats.redispatched.incr();
                *route = next;
                true
            }
            Err(_) => false,
        }
    }

    /// The answer when redispatch gave up: 502 when the retries were spent
    /// or a backend failed after taking the request, 503 when no backend
    /// could take it at all.
    fn gave_up(&self, attempts: u32, backend_failed: bool, settings: &ProxySettings) -> Response<ProxyBody> {
        if attempts > settings.retries || backend_failed {
            self.stats.bad_gateway.incr();
            own(
                StatusCode::BAD_GATEWAY,
                if backend_failed {
                    "502 Bad Gateway: the backend failed\n"
                } else {
                    "502 Bad Gateway: no backend could be reached\n"
                },
            )
        } else {
            self.unavailable("503 Service Unavailable: no backend is available\n")
        }
    }

    fn unavailable(&self, text: &'static str) -> Response<ProxyBody> {
        self.stats.unavailable.incr();
        let mut r = own(StatusCode::SERVICE_UNAVAILABLE, text);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    /// Ringside itself ran out (descriptors, memory, ports): never the
    /// backend's fault. Counted, reported, answered 503.
    fn ringside_short(&self, e: &ConnectError) -> Response<ProxyBody> {
        self.stats.local_errors.incr();
        self.health.ringside_short(e.to_string());
        self.unavailable("503 Service Unavailable: ringside is out of resources for another connection\n")
    }

    /// The client's body failed: its fault, answered 400 (if it still listens).
    fn client_body_failed(&self, e: &BoxError) -> Response<ProxyBody> {
        self.stats.client_errors.incr();
        tracing::debug!("the client's request body failed: {e}");
        own_closing(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the request body was malformed or cut short\n",
        )
    }

    /// Whether the request already passed through this instance.
    pub(super) fn came_back(&self, headers: &HeaderMap) -> bool {
        let mine = &self.via.as_bytes()[4..];
        headers
            .get_all(header::VIA)
            .iter()
            .any(|v| v.as_bytes().windows(mine.len()).any(|w| w == mine))
    }
}

/// Why connects fail, for the engine's verdict and the dashboard.
fn connect_reason(e: &ConnectError) -> String {
    match e {
        ConnectError::Refused { .. } => "connection refused".into(),
        ConnectError::TimedOut { .. } => "connect timeout".into(),
        ConnectError::Unreachable { .. } => "unreachable".into(),
        other => other.to_string(),
    }
}

/// An interim response as bytes for the client.
fn interim_bytes(r: &Response<()>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        r.status().as_u16(),
        r.status().canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in r.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A request body whose first bytes were read before a backend was chosen:
/// what had already arrived (up to [`PREFETCH`]), never waited for. A body
/// that fails there fails before any backend sees the request; a body read
/// whole can be sent again.
struct Prefetched {
    frames: VecDeque<Piece>,
    /// The rest, unless it ended.
    rest: Option<Incoming>,
}

/// A body frame that can be sent again.
#[derive(Debug, Clone)]
enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Piece {
    fn from_frame(frame: Frame<Bytes>) -> Option<Piece> {
        match frame.into_data() {
            Ok(data) => Some(Piece::Data(data)),
            Err(frame) => frame.into_trailers().ok().map(Piece::Trailers),
        }
    }

    fn into_frame(self) -> Frame<Bytes> {
        match self {
            Piece::Data(d) => Frame::data(d),
            Piece::Trailers(t) => Frame::trailers(t),
        }
    }
}

impl Prefetched {
    async fn read(mut incoming: Incoming, framing: Framing) -> Result<Prefetched, BoxError> {
        let mut frames = VecDeque::new();
        if framing == Framing::None {
            return Ok(Prefetched { frames, rest: None });
        }
        let mut read = 0usize;
        while read < PREFETCH && !incoming.is_end_stream() {
            // One round: a frame hyper has decoded, or — after giving hyper
            // one turn to decode what has arrived — nothing more for now.
            let next = tokio::select! {
                biased;
                frame = incoming.frame() => Some(frame),
                () = tokio::task::yield_now() => None,
            };
            match next {
                Some(Some(Ok(frame))) => {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    frames.extend(Piece::from_frame(frame));
                }
                Some(Some(Err(e))) => return Err(Box::new(e)),
                Some(None) => return Ok(Prefetched { frames, rest: None }),
                None => break,
            }
        }
        let rest = (!incoming.is_end_stream()).then_some(incoming);
        Ok(Prefetched { frames, rest })
    }

    /// True when the whole body is in hand.
    fn is_whole(&self) -> bool {
        self.rest.is_none()
    }

    /// The body for one attempt: the frames in hand (kept for another
    /// attempt when whole), then the rest.
    fn replay(&mut self) -> Replay<'_> {
        Replay {
            frames: if self.rest.is_none() {
                self.frames.clone()
            } else {
                std::mem::take(&mut self.frames)
            },
            rest: self.rest.as_mut(),
        }
    }
}

/// One attempt's body (see [`Prefetched::replay`]).
struct Replay<'a> {
    frames: VecDeque<Piece>,
    rest: Option<&'a mut Incoming>,
}

impl Body for Replay<'_> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(piece) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(piece.into_frame())));
        }
        match self.rest.as_deref_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
