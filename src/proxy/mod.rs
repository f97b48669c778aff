//! The proxy: HTTP/1.1 from clients (hyper), the router's decision,
//! forwarding over pooled keep-alive connections, redispatch on a failed
//! connect, upgrades tunnelled both ways, and clear 502/503/504 answers.
//!
//! The per-request path reads the topology without locks, locks one session
//! shard briefly, and never waits on the dashboard.

pub mod body;
pub mod client;
pub mod framing;
pub mod headers;
pub mod latency;
pub mod pool;
pub mod signal;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::config::Config;
use crate::router::affinity::{AffinityMode, RequestView};
use crate::router::{Backend, BackendId, Route, Router, RouterError};
use crate::shutdown::ShutdownSignal;
use crate::store::RedisStore;
use body::{ActiveGuard, ProxyBody, StreamedBody, plain};
use framing::{FramingGuard, FramingWatch};
use headers::CookieAttributes;
use pool::UpstreamBody;
use signal::{Fired, Signal};
use upstream::{Upstream, Upstreams};

/// Settings of the proxy path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Connecting to a backend.
    pub connect_timeout: Duration,
    /// Waiting for a backend's response headers.
    pub backend_timeout: Duration,
    /// Reading a client's request headers.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Other backends tried after a failed connect.
    pub retries: u32,
    /// Failed connects in a row that mark a backend down.
    pub fall: u32,
    /// The balancer cookie's attributes.
    pub cookie: CookieAttributes,
}

impl ProxySettings {
    /// The settings a configuration asks for.
    pub fn from_config(config: &Config, _proxy_addr: SocketAddr) -> Self {
        let p = &config.proxy;
        ProxySettings {
            connect_timeout: Duration::from_millis(p.connect_timeout_ms),
            backend_timeout: Duration::from_millis(p.backend_timeout_ms),
            header_read_timeout: Duration::from_millis(p.header_read_timeout_ms),
            max_header_bytes: p.max_header_bytes,
            retries: p.retries,
            fall: config.health.fall,
            cookie: CookieAttributes {
                secure: config.affinity.secure,
                max_age_secs: config.affinity.max_age_secs,
            },
        }
    }
}

/// Told when connects to a backend keep failing (passive health). Never
/// blocks: the engine decides, on its own task.
pub trait PassiveHealth: Send + Sync {
    /// `fall` connects in a row to `backend` failed; `why` says how.
    fn connects_failing(&self, backend: &Backend, why: String);
}

/// Answers by status class, for the header and `/metrics`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// By class: 1xx … 5xx at index 1 … 5.
    pub by_class: [AtomicU64; 6],
    /// 502 answers of ringside's own (backend failed).
    pub bad_gateway: AtomicU64,
    /// 503 answers (no backend available).
    pub unavailable: AtomicU64,
    /// 504 answers (backend too slow).
    pub gateway_timeout: AtomicU64,
    /// Requests sent to another backend after a failed connect, or resent
    /// after a backend failed them before answering.
    pub redispatched: AtomicU64,
    /// Upgraded connections (tunnels) opened.
    pub tunnels: AtomicU64,
    /// Requests refused for carrying both `Content-Length` and
    /// `Transfer-Encoding`.
    pub smuggling_refused: AtomicU64,
    /// Requests that came back through one of ringside's own backends
    /// (answered 508 Loop Detected).
    pub loops_refused: AtomicU64,
    /// Client connections open now (a gauge).
    pub client_connections: AtomicU64,
    /// Backend connections still open at a drain's timeout, and closed.
    pub closed_by_drain: AtomicU64,
    /// Requests a backend failed after taking them that were answered 502
    /// rather than resent, because repeating them may not be harmless (not
    /// idempotent, or a body already sent; RFC 9112 §9.3.1). Also in `bad_gateway`.
    pub lost_in_flight: AtomicU64,
}

/// The proxy and everything its requests need.
pub struct Proxy {
    router: Arc<Router>,
    upstreams: Arc<Upstreams>,
    clock: Clock,
    settings: ArcSwap<ProxySettings>,
    health: Arc<dyn PassiveHealth>,
    store: Option<Arc<RedisStore>>,
    stats: ProxyStats,
    /// This instance's `Via` entry: a request that arrives carrying it has
    /// come back through one of its own backends.
    via: HeaderValue,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy over `router`'s decisions.
    pub fn new(
        router: Arc<Router>,
        upstreams: Arc<Upstreams>,
        clock: Clock,
        settings: ProxySettings,
        health: Arc<dyn PassiveHealth>,
        store: Option<Arc<RedisStore>>,
    ) -> Self {
        let via = HeaderValue::from_str(&format!("1.1 ringside-{:08x}", fastrand::u32(..)))
            .expect("a Via entry is a valid header value");
        Proxy {
            router,
            upstreams,
            clock,
            settings: ArcSwap::from_pointee(settings),
            health,
            store,
            stats: ProxyStats::default(),
            via,
        }
    }

    /// The answer counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Replaces the settings (a configuration reload); requests that start
    /// from now on use them.
    pub fn set_settings(&self, settings: ProxySettings) {
        self.settings.store(Arc::new(settings));
    }

    /// Zeroes the answer counters (a lesson starts afresh); gauges stay.
    pub fn reset_stats(&self) {
        let s = &self.stats;
        for c in s.by_class.iter().chain([
            &s.requests,
            &s.bad_gateway,
            &s.unavailable,
            &s.gateway_timeout,
            &s.redispatched,
            &s.tunnels,
            &s.smuggling_refused,
            &s.loops_refused,
            &s.closed_by_drain,
            &s.lost_in_flight,
        ]) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Serves on `shards` threads, each with a single-threaded runtime
    /// accepting from its own handle on `listener` (one socket, bound once:
    /// nobody can slip in between), so a request and its upstream connection
    /// stay on one thread — no cross-thread wake-ups. Each thread returns
    /// once `shutdown` fires and its connections are done.
    pub fn serve_threads(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shards: usize,
        shutdown: ShutdownSignal,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        listener.set_nonblocking(true)?;
        let mut handles = Vec::new();
        for _ in 1..shards.max(1) {
            handles.push(listener.try_clone()?);
        }
        handles.push(listener);
        let mut threads = Vec::new();
        for (i, listener) in handles.into_iter().enumerate() {
            let proxy = Arc::clone(&self);
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringside-proxy-{i}"))
                .spawn(move || {
                    pool::set_shard(i + 1);
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("proxy thread {i}: {e}");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => proxy.serve(l, shutdown).await,
                            Err(e) => tracing::error!("proxy thread {i}: {e}"),
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(threads)
    }

    /// Serves clients from `listener` until `shutdown` turns true; then stops
    /// accepting, closes idle keep-alive connections and lets requests in
    /// flight finish, for at most [`SHUTDOWN_GRACE`] (tunnels are cut).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut shutdown: ShutdownSignal) {
        // Open connections learn of the shutdown from this, which costs
        // them nothing per poll (see [`signal`]).
        let stopping = Arc::new(Signal::default());
        let open = Arc::new(OpenHere::default());
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.stopped() => {
                    stopping.fire();
                    drop(listener);
                    if tokio::time::timeout(SHUTDOWN_GRACE, open.all_closed()).await.is_err() {
                        tracing::warn!(
                            "{} client connections still busy after {SHUTDOWN_GRACE:?}: cut",
                            open.count.load(Ordering::SeqCst)
                        );
                    }
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self);
            let stopped = stopping.wait();
            // Counted before the task runs, so a shutdown right now waits for it.
            let open_connection = open.track(&proxy);
            tokio::spawn(async move {
                let _open = open_connection;
                let watch = Arc::new(FramingWatch::default());
                let stream = FramingGuard::new(stream, Arc::clone(&watch));
                let forwarded_for = headers::peer_value(peer.ip());
                let service = service_fn(|req| {
                    let proxy = Arc::clone(&proxy);
                    let ambiguous = watch.next_is_ambiguous();
                    let client = Client {
                        addr: peer,
                        forwarded_for: forwarded_for.clone(),
                    };
                    async move { Ok::<_, Infallible>(proxy.handle(req, client, ambiguous).await) }
                });
                let settings = proxy.settings.load();
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(settings.header_read_timeout)
                    .max_buf_size(settings.max_header_bytes);
                drop(settings);
                let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stopped => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    }

    /// One request, start to finish.
    /// `ambiguous`: the head carried both `Content-Length` and
    /// `Transfer-Encoding` (see [`framing`]); refused, never forwarded.
    async fn handle(&self, req: Request<Incoming>, client: Client, ambiguous: bool) -> Response<ProxyBody> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = if ambiguous {
            self.stats.smuggling_refused.fetch_add(1, Ordering::Relaxed);
            drop(req);
            let mut r = error(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: both Content-Length and Transfer-Encoding\n",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        } else if self.came_back(req.headers()) {
            self.stats.loops_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "a request came back to ringside through one of its backends (its Via names this instance): answered 508"
            );
            error(
                StatusCode::LOOP_DETECTED,
                "508 Loop Detected: this request already passed through this ringside; a backend points back at it\n",
            )
        } else {
            self.forward(req, client).await
        };
        let class = (response.status().as_u16() / 100) as usize;
        if let Some(c) = self.stats.by_class.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        response
    }

    /// Whether the request already passed through this instance.
    fn came_back(&self, headers: &http::HeaderMap) -> bool {
        let mine = &self.via.as_bytes()[4..];
        headers
            .get_all(header::VIA)
            .iter()
            .any(|v| v.as_bytes().windows(mine.len()).any(|w| w == mine))
    }

    async fn forward(&self, mut req: Request<Incoming>, client: Client) -> Response<ProxyBody> {
        let now = self.clock.now();
        let settings = self.settings.load_full();
        let request = self.router.read_request(&RequestView {
            headers: req.headers(),
            query: req.uri().query(),
            peer: client.addr.ip(),
        });
        let routed = match &self.store {
            // A session the local table lacks may live in the shared store.
            Some(store) if store.is_available() => match self.router.route_cached(&request, now) {
                Err(RouterError::NotCached { domain, fingerprint }) => {
                    store.fill(&self.router, domain, fingerprint, now).await;
                    self.router.route_request(&request, now)
                }
                other => other,
            },
            _ => self.router.route_request(&request, now),
        };
        let app_session = request.app_session;
        let Ok(mut route) = routed else {
            return self.unavailable();
        };

        let upgrade = headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::strip_cookie(&mut parts.headers, self.router.affinity().codec().name());
        headers::add_forwarded(&mut parts.headers, &client.forwarded_for);
        parts.headers.append(header::VIA, self.via.clone());
        if let Some(pq) = parts.uri.path_and_query() {
            parts.uri = Uri::from(pq.clone());
        }
        // A request may be sent again only if repeating it is harmless.
        let replayable = is_idempotent(&parts.method) && body.is_end_stream();
        let spare = replayable.then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.version,
                parts.headers.clone(),
            )
        });
        let mut upstream_req = Request::from_parts(parts, Either::Left(body));

        let mut tried: Vec<BackendId> = Vec::new();
        let mut attempts = 0u32;
        loop {
            let Some(upstream) = self.upstreams.get(route.backend.id) else {
                return self.bad_gateway();
            };
            let connected = if upgrade {
                upstream
                    .pool
                    .connect(settings.connect_timeout, true)
                    .await
                    .map(|s| (s, false))
            } else {
                upstream.pool.checkout(settings.connect_timeout).await
            };
            let (mut sender, _reused) = match connected {
                Ok(c) => {
                    upstream.connect_ok();
                    c
                }
                Err(e) => {
                    tracing::debug!("{}: {e}", route.backend.name);
                    if upstream.connect_failed() == settings.fall {
                        self.health.connects_failing(&route.backend, e.reason());
                    }
                    if !self.redispatch(&mut route, &mut tried, &mut attempts) {
                        return self.gave_up(attempts, false);
                    }
                    continue;
                }
            };
            let active = ActiveGuard::new(&route.backend);
            let started = tokio::time::Instant::now();
            let sent = tokio::time::timeout(settings.backend_timeout, sender.try_send_request(upstream_req)).await;
            match sent {
                Err(_) => {
                    self.stats.gateway_timeout.fetch_add(1, Ordering::Relaxed);
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "504 Gateway Timeout: the backend did not answer in time\n",
                    );
                }
                Ok(Ok(resp)) => {
                    upstream.latency.record(started.elapsed());
                    return self.respond(resp, &route, upstream, sender, active, client_upgrade, app_session, now);
                }
                Ok(Err(mut e)) => {
                    tracing::debug!("{}: {}", route.backend.name, e.error());
                    upstream_req = match (e.take_message(), &spare) {
                        // Never written: safe to send anywhere, body and all.
                        (Some(unsent), _) => unsent,
                        (None, Some((method, uri, version, hdrs))) => {
                            let mut r = Request::new(Either::Right(Empty::new()));
                            *r.method_mut() = method.clone();
                            *r.uri_mut() = uri.clone();
                            *r.version_mut() = *version;
                            *r.headers_mut() = hdrs.clone();
                            r
                        }
                        (None, None) => {
                            self.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
                            self.stats.lost_in_flight.fetch_add(1, Ordering::Relaxed);
                            return error(
                                StatusCode::BAD_GATEWAY,
                                "502 Bad Gateway: the backend failed after taking the request; not resent, as repeating it may not be safe\n",
                            );
                        }
                    };
                    if !self.redispatch(&mut route, &mut tried, &mut attempts) {
                        return self.gave_up(attempts, true);
                    }
                    continue;
                }
            }
        }
    }

    /// Moves the request to the key's next backend; `false` when the
    /// retries are spent or nothing else is available (then
    /// [`Proxy::gave_up`] chooses the answer).
    fn redispatch(&self, route: &mut Route, tried: &mut Vec<BackendId>, attempts: &mut u32) -> bool {
        *attempts += 1;
        if *attempts > self.settings.load().retries {
            return false;
        }
        tried.push(route.backend.id);
        match self.router.redispatch(route, tried, self.clock.now()) {
            Ok(next) => {
                self.stats.redispatched.fetch_add(1, Ordering::Relaxed);
                *route = next;
                true
            }
            Err(_) => false,
        }
    }

    /// The answer when redispatch gave up: 502 when the retries were spent
    /// or a backend failed after taking the request (`backend_failed`), 503
    /// when no backend could take it at all.
    fn gave_up(&self, attempts: u32, backend_failed: bool) -> Response<ProxyBody> {
        if attempts > self.settings.load().retries {
            self.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: no backend could be reached\n",
            )
        } else if backend_failed {
            self.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::BAD_GATEWAY, "502 Bad Gateway: the backend failed\n")
        } else {
            self.unavailable()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        resp: Response<Incoming>,
        route: &Route,
        upstream: Arc<Upstream>,
        sender: hyper::client::conn::http1::SendRequest<UpstreamBody>,
        active: ActiveGuard,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        app_session: Option<u64>,
        now: crate::router::Timestamp,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        if self.router.affinity().mode() != AffinityMode::None {
            self.router
                .learn_from_response(&parts.headers, app_session, route.backend.id, now);
        }
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        if route.set_cookie
            && let Some(session) = route.session_id
        {
            let codec = self.router.affinity().codec();
            let value = codec.encode(session, &route.backend);
            if let Some(v) = headers::set_cookie_value(codec.name(), &value, &self.settings.load().cookie) {
                parts.headers.append(header::SET_COOKIE, v);
            }
        }
        if switching {
            let backend_side = Response::from_parts(parts.clone(), body);
            if let Some(client_side) = client_upgrade {
                self.stats.tunnels.fetch_add(1, Ordering::Relaxed);
                let closing = upstream.pool.closing();
                tokio::spawn(tunnel(client_side, backend_side, active, closing));
            }
            drop(sender);
            return Response::from_parts(parts, plain(""));
        }
        Response::from_parts(parts, Either::Left(StreamedBody::new(body, (sender, upstream), active)))
    }

    fn unavailable(&self) -> Response<ProxyBody> {
        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no backend is available\n",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    fn bad_gateway(&self) -> Response<ProxyBody> {
        self.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
        error(
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the backend is not known to the proxy\n",
        )
    }
}

/// Who sent a request: the client connection's peer, and its address as
/// an `X-Forwarded-For` value made once per connection.
struct Client {
    addr: SocketAddr,
    forwarded_for: HeaderValue,
}

/// How long a shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The client connections one listener has open, for a shutdown to wait on.
#[derive(Default)]
struct OpenHere {
    count: AtomicUsize,
    /// Fired when the count drops to zero.
    none_left: Arc<Signal>,
}

impl OpenHere {
    /// Counts a connection, here and in the proxy's gauge, until the
    /// returned guard drops.
    fn track(self: &Arc<Self>, proxy: &Arc<Proxy>) -> OpenConnection {
        self.count.fetch_add(1, Ordering::SeqCst);
        proxy.stats.client_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            here: Arc::clone(self),
            proxy: Arc::clone(proxy),
        }
    }

    /// Resolves once no connection is open.
    async fn all_closed(&self) {
        loop {
            let next = self.none_left.wait();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            next.await;
        }
    }
}

/// One client connection, counted in its [`OpenHere`] and the proxy's gauge.
struct OpenConnection {
    here: Arc<OpenHere>,
    proxy: Arc<Proxy>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.proxy.stats.client_connections.fetch_sub(1, Ordering::Relaxed);
        if self.here.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.here.none_left.fire();
        }
    }
}

/// Pumps bytes both ways between an upgraded client and backend until one
/// side closes or the backend's pool is closed (kill, drain timeout).
async fn tunnel(client: hyper::upgrade::OnUpgrade, backend: Response<Incoming>, _active: ActiveGuard, closing: Fired) {
    let (client, backend) = match tokio::join!(client, hyper::upgrade::on(backend)) {
        (Ok(c), Ok(b)) => (c, b),
        _ => return,
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        _ = closing => {}
    }
}

/// The proxy's listening socket on `addr`, with a backlog for bursts of
/// new connections. Must run inside a tokio runtime.
pub fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn error(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(plain(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
