//! The proxy: HTTP/1.1 from clients (hyper, whose hardened parser is where
//! untrusted bytes arrive), the router's decision, and HTTP/1.1 to backends
//! over pooled keep-alive connections with a purpose-built client
//! ([`client`]). It runs on its own threads, one current-thread runtime
//! each, accepting from one listening socket; a new connection goes to the
//! thread with the fewest open (`spread`).
//!
//! Files: serving and connections here; one request in `forward`; what is
//! refused and how a request is normalised in `request`; a backend's answer
//! in `response`; the client connection's guard, interim writes and limits
//! in `io` and `framing`; upgrades in `tunnel`; per-backend state in
//! `upstream`; counters in `stats`.
//!
//! The per-request path reads the topology without locks, locks one session
//! shard briefly, counts on per-thread lines, and never waits on the
//! dashboard.

pub mod client;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod io;
pub mod latency;
pub mod request;
pub mod response;
pub mod signal;
mod spread;
pub mod stats;
mod timer;
pub mod tunnel;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::clock::Clock;
use crate::config::Config;
use crate::router::lb_cookie::VerifiedCookie;
use crate::router::{Backend, Router};
use crate::shutdown::ShutdownSignal;
use crate::store::RedisStore;
use forward::ClientCtx;
use headers::CookieAttributes;
use io::{ClientIo, ConnShared, Ended, IoLimits};
use signal::Signal;
use spread::{Handoff, Lanes};
pub use stats::ProxyStats;
use upstream::Upstreams;

/// Idle this long, a keep-alive connection gives hyper's buffers back
/// (about 20 KB): connections that arrive at rate R then hold at most
/// R × this in buffers, and a busy connection never parks.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// How long a shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of the proxy path (a reload replaces them).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Connecting to a backend.
    pub connect_timeout: Duration,
    /// A backend silent (or not reading) this long: 504.
    pub backend_timeout: Duration,
    /// A request head must arrive within this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long is closed.
    pub keepalive_timeout: Duration,
    /// A client sending nothing of its body, or reading nothing of its
    /// answer, this long is cut (408 while it sends).
    pub client_timeout: Duration,
    /// A tunnel idle this long is closed.
    pub tunnel_timeout: Duration,
    /// A request waits this long for a place under a backend's cap.
    pub queue_timeout: Duration,
    /// Largest request head (then 431).
    pub max_header_bytes: usize,
    /// Other backends tried after a failed connect.
    pub retries: u32,
    /// Failed connects in a row that mark a backend down.
    pub fall: u32,
    /// The balancer cookie's attributes.
    pub cookie: CookieAttributes,
    /// `Keep-Alive: timeout=N`, advertised on persistent connections.
    pub keep_alive: HeaderValue,
    /// The `Host` an HTTP/1.0 request without one is forwarded with.
    pub fallback_host: HeaderValue,
}

impl ProxySettings {
    /// The settings a configuration asks for.
    pub fn from_config(config: &Config, proxy_addr: SocketAddr) -> Self {
        let p = &config.proxy;
        let ms = Duration::from_millis;
        ProxySettings {
            connect_timeout: ms(p.connect_timeout_ms),
            backend_timeout: ms(p.backend_timeout_ms),
            header_read_timeout: ms(p.header_read_timeout_ms),
            keepalive_timeout: ms(p.keepalive_timeout_ms),
            client_timeout: ms(p.client_timeout_ms),
            tunnel_timeout: ms(p.tunnel_timeout_ms),
            queue_timeout: ms(config.limits.queue_timeout_ms),
            max_header_bytes: p.max_header_bytes,
            retries: p.retries,
            fall: config.health.fall,
            cookie: CookieAttributes {
                secure: config.affinity.secure,
                max_age_secs: config.affinity.max_age_secs,
            },
            keep_alive: HeaderValue::from_str(&format!("timeout={}", p.keepalive_timeout_ms.div_ceil(1000)))
                .unwrap_or(HeaderValue::from_static("timeout=60")),
            fallback_host: HeaderValue::from_str(&proxy_addr.to_string())
                .unwrap_or(HeaderValue::from_static("localhost")),
        }
    }

    fn io_limits(&self) -> IoLimits {
        IoLimits {
            head: self.header_read_timeout,
            keepalive: self.keepalive_timeout,
            park_after: Some(PARK_AFTER),
            send: self.client_timeout,
        }
    }
}

/// Told when connects to a backend keep failing (passive health), and when
/// ringside itself runs short. Never blocks: the engine decides, on its task.
pub trait PassiveHealth: Send + Sync {
    /// `fall` connects in a row to `backend` failed; `why` says how.
    fn connects_failing(&self, backend: &Backend, why: String);
    /// Ringside ran out of its own resources (descriptors, memory, ports):
    /// not a backend's fault.
    fn ringside_short(&self, why: String);
}

/// The cap on client connections open at once, shared by every proxy thread.
#[derive(Debug)]
pub struct ConnCap {
    open: AtomicUsize,
    max: AtomicUsize,
    /// Fired when a connection closes while the cap is reached.
    freed: Arc<Signal>,
}

impl ConnCap {
    /// At most `max` client connections.
    pub fn new(max: usize) -> Self {
        ConnCap {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max.max(1)),
            freed: Arc::default(),
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Takes a place for one more connection, if there is room.
    fn reserve(&self) -> bool {
        let max = self.max();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives a place back (its connection closed, or none came).
    fn release(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) >= self.max() {
            self.freed.fire();
        }
    }
}

/// What a connection's requests hold: one count per request on a line
/// only the connection's thread writes, where a count on the proxy itself
/// would move between the threads' caches twice per request.
struct Served {
    proxy: Arc<Proxy>,
    ctx: ClientCtx,
}

/// The settings, alone on their cache lines (see [`Proxy::settings_here`]).
#[derive(Debug)]
#[repr(align(128))]
struct ThreadSettings(ProxySettings);

impl std::ops::Deref for ThreadSettings {
    type Target = ProxySettings;

    fn deref(&self) -> &ProxySettings {
        &self.0
    }
}

/// The proxy and everything its requests need.
pub struct Proxy {
    router: Arc<Router>,
    upstreams: Arc<Upstreams>,
    clock: Clock,
    settings: ArcSwap<ProxySettings>,
    /// A copy of the settings per proxy thread (by its counter slot): a
    /// request takes a reference to its thread's own copy, so the threads
    /// never write to one reference count.
    local: Box<[ArcSwap<ThreadSettings>]>,
    health: Arc<dyn PassiveHealth>,
    store: Option<Arc<RedisStore>>,
    stats: ProxyStats,
    cap: Arc<ConnCap>,
    /// The proxy threads' tallies and inboxes, once they serve.
    lanes: std::sync::OnceLock<Arc<Lanes>>,
    /// This instance's `Via` entry: a request that arrives carrying it has
    /// come back through one of its own backends.
    via: HeaderValue,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("via", &self.via).finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy over `router`'s decisions, serving at most `max_connections`
    /// clients at once.
    pub fn new(
        router: Arc<Router>,
        upstreams: Arc<Upstreams>,
        clock: Clock,
        settings: ProxySettings,
        health: Arc<dyn PassiveHealth>,
        store: Option<Arc<RedisStore>>,
        max_connections: usize,
    ) -> Self {
        let via = HeaderValue::from_str(&format!("1.1 ringside-{:08x}", fastrand::u32(..)))
            .expect("a Via entry is a valid header value");
        Proxy {
            router,
            upstreams,
            clock,
            local: (0..crate::counter::SLOTS)
                .map(|_| ArcSwap::from_pointee(ThreadSettings(settings.clone())))
                .collect(),
            settings: ArcSwap::from_pointee(settings),
            health,
            store,
            stats: ProxyStats::default(),
            cap: Arc::new(ConnCap::new(max_connections)),
            lanes: std::sync::OnceLock::new(),
            via,
        }
    }

    /// The answer counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// The cap on client connections.
    pub fn connection_cap(&self) -> usize {
        self.cap.max()
    }

    /// Client connections open on each proxy thread (empty before it serves).
    pub fn connections_per_thread(&self) -> Vec<usize> {
        self.lanes.get().map(|l| l.counts()).unwrap_or_default()
    }

    /// Replaces the settings (a configuration reload); requests and
    /// connections that start from now on use them.
    pub fn set_settings(&self, settings: ProxySettings) {
        for local in &self.local {
            local.store(Arc::new(ThreadSettings(settings.clone())));
        }
        self.settings.store(Arc::new(settings));
    }

    /// This thread's copy of the settings.
    fn settings_here(&self) -> Arc<ThreadSettings> {
        self.local[crate::counter::slot()].load_full()
    }

    /// Zeroes the answer counters (a lesson starts afresh); gauges stay.
    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    /// Serves on `threads` threads, each with a single-threaded runtime
    /// accepting from its own handle on `listener` (one socket, bound once:
    /// nobody can slip in between) and handing each new connection to the
    /// thread with the fewest (see `spread`), so that the threads share
    /// the work and a request and its upstream connection stay on one
    /// thread. Each thread returns once `shutdown` fires and its connections
    /// are done.
    pub fn serve_threads(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        threads: usize,
        shutdown: ShutdownSignal,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        listener.set_nonblocking(true)?;
        let mut handles = Vec::new();
        for _ in 1..threads.max(1) {
            handles.push(listener.try_clone()?);
        }
        handles.push(listener);
        let (lanes, inboxes) = Lanes::new(handles.len());
        let lanes = Arc::clone(self.lanes.get_or_init(|| lanes));
        let mut joins = Vec::new();
        for (i, (listener, inbox)) in handles.into_iter().zip(inboxes).enumerate() {
            let proxy = Arc::clone(&self);
            let shutdown = shutdown.clone();
            let lanes = Arc::clone(&lanes);
            let thread = std::thread::Builder::new()
                .name(format!("ringside-proxy-{i}"))
                .spawn(move || {
                    crate::counter::set_slot(i + 1);
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("proxy thread {i}: {e}");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => proxy.serve(l, shutdown, Place { lanes, me: i, inbox }).await,
                            Err(e) => tracing::error!("proxy thread {i}: {e}"),
                        }
                    });
                })?;
            joins.push(thread);
        }
        Ok(joins)
    }

    /// Serves clients from `listener` until `shutdown`; then stops
    /// accepting, closes idle connections and lets requests in flight
    /// finish, for at most [`SHUTDOWN_GRACE`] (tunnels are cut). Beyond the
    /// connection cap, new connections wait in the kernel's backlog.
    async fn serve(self: Arc<Self>, listener: TcpListener, mut shutdown: ShutdownSignal, place: Place) {
        // Open connections learn of the shutdown from this, which costs
        // them nothing per poll (see [`signal`]).
        let stopping = Arc::new(Signal::default());
        let Place { lanes, me, inbox } = place;
        let receiving = tokio::spawn(Arc::clone(&self).receive(inbox, Arc::clone(&stopping), shutdown.clone()));
        'accepting: loop {
            // A place under the cap first: beyond it, connections wait in
            // the kernel's backlog rather than being accepted and left.
            loop {
                let freed = self.cap.freed.wait();
                if self.cap.reserve() {
                    break;
                }
                tokio::select! {
                    _ = freed => {}
                    _ = shutdown.stopped() => break 'accepting,
                }
            }
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        self.cap.release();
                        self.accept_failed(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.stopped() => {
                    self.cap.release();
                    break;
                }
            };
            let _ = stream.set_nodelay(true);
            self.dispatch(stream, peer, &lanes, me, &stopping);
        }
        stopping.fire();
        drop(listener);
        let _ = receiving.await;
        let open = lanes.open(me);
        if tokio::time::timeout(SHUTDOWN_GRACE, open.all_closed()).await.is_err() {
            tracing::warn!(
                "{} client connections still busy after {SHUTDOWN_GRACE:?}: cut",
                open.count.load(Ordering::SeqCst)
            );
        }
    }

    /// Serves a new connection here, or hands it to the proxy thread with
    /// the fewest open. Counted before it moves or its task runs, so a
    /// shutdown right now waits for it.
    fn dispatch(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        lanes: &Lanes,
        me: usize,
        stopping: &Arc<Signal>,
    ) {
        let to = lanes.fewest_open(me);
        let counted = lanes.open(to).track(self);
        if to == me {
            tokio::spawn(Arc::clone(self).connection(stream, peer, Arc::clone(stopping), counted));
            return;
        }
        let handoff = match stream.into_std() {
            Ok(stream) => Handoff { stream, peer, counted },
            Err(e) => return tracing::debug!("client {peer}: {e}"),
        };
        if let Err(mut back) = lanes.hand(to, handoff) {
            // That thread is stopping: this one serves it.
            back.counted.rehome(lanes.open(me));
            self.take_handed(back, stopping);
        }
    }

    /// Serves the connections other proxy threads hand this one, until
    /// `shutdown`; then takes no more, and serves those already sent.
    async fn receive(
        self: Arc<Self>,
        mut inbox: UnboundedReceiver<Handoff>,
        stopping: Arc<Signal>,
        mut shutdown: ShutdownSignal,
    ) {
        loop {
            tokio::select! {
                handed = inbox.recv() => match handed {
                    Some(h) => self.take_handed(h, &stopping),
                    None => return,
                },
                _ = shutdown.stopped() => break,
            }
        }
        inbox.close();
        while let Ok(h) = inbox.try_recv() {
            self.take_handed(h, &stopping);
        }
    }

    fn take_handed(self: &Arc<Self>, h: Handoff, stopping: &Arc<Signal>) {
        match TcpStream::from_std(h.stream) {
            Ok(s) => {
                tokio::spawn(Arc::clone(self).connection(s, h.peer, Arc::clone(stopping), h.counted));
            }
            Err(e) => tracing::debug!("client {}: {e}", h.peer),
        }
    }

    fn accept_failed(&self, e: &std::io::Error) {
        let local = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if local {
            self.stats.local_errors.incr();
            self.health.ringside_short(format!(
                "ringside is out of file descriptors (limit {}): cannot accept a connection: {e}",
                crate::limits::fd_limit()
            ));
        } else {
            tracing::warn!("accept failed: {e}");
        }
    }

    /// One client connection: parked (its socket and this small task, no
    /// buffer) until it speaks, then served by hyper while it is busy,
    /// parked again when it idles, a tunnel once upgraded.
    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        stopping: Arc<Signal>,
        _open: OpenConnection,
    ) {
        let mut fresh = true;
        let mut deadline = tokio::time::Instant::now() + self.settings.load().header_read_timeout;
        loop {
            if !self.park(&stream, deadline, &stopping).await {
                if fresh && !stopping.fired() {
                    self.stats.client_timeouts.incr();
                }
                return;
            }
            // Boxed: the busy state is large and lives only while busy.
            match Box::pin(self.serve_awake(stream, peer, &stopping, fresh)).await {
                Awake::Idle { stream: s, until } => {
                    stream = s;
                    deadline = until;
                    fresh = false;
                }
                Awake::Done => return,
            }
        }
    }

    /// Serves a connection that has spoken, until it closes, becomes a
    /// tunnel (served here to its end) or idles long enough to park.
    /// `fresh`: no request was read on it yet.
    async fn serve_awake(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        stopping: &Arc<Signal>,
        fresh: bool,
    ) -> Awake {
        let (limits, max_buf, tunnel_timeout) = {
            let s = self.settings.load();
            (s.io_limits(), s.max_header_bytes, s.tunnel_timeout)
        };
        let shared = Arc::new(ConnShared::default());
        let io = ClientIo::new(stream, Arc::clone(&shared), limits, stopping.wait(), fresh);
        let here = Arc::new(Served {
            proxy: Arc::clone(self),
            ctx: ClientCtx {
                addr: peer,
                forwarded_for: headers::peer_value(peer.ip()),
                shared: Arc::clone(&shared),
                verified_cookie: VerifiedCookie::default(),
            },
        });
        let service = service_fn(move |req| {
            let here = Arc::clone(&here);
            async move { Ok::<_, Infallible>(here.proxy.handle(req, &here.ctx).await) }
        });
        // No timer here: the connection's limits live in `ClientIo`.
        let served = http1::Builder::new()
            .half_close(true)
            .max_buf_size(max_buf)
            .serve_connection(TokioIo::new(io), service)
            .without_shutdown()
            .await;
        let parts = match served {
            Ok(parts) => parts,
            Err(e) => {
                tracing::debug!("client {peer}: {e}");
                if shared.ended() == Ended::TimedOut {
                    self.stats.client_timeouts.incr();
                }
                return Awake::Done;
            }
        };
        let io = parts.io.into_inner();
        if let Some(t) = shared.take_tunnel() {
            let end = tunnel::pump(
                io.into_stream(),
                parts.read_buf,
                t.backend.stream,
                t.backend.leftover,
                tunnel_timeout,
                t.closing,
            )
            .await;
            tracing::debug!("tunnel from {peer} ended: {end:?}");
            drop(t.active);
            return Awake::Done;
        }
        match shared.ended() {
            // Parked only between requests, when hyper asked for more and
            // none came: it holds no byte of a next request.
            Ended::Parked if parts.read_buf.is_empty() => Awake::Idle {
                stream: io.into_stream(),
                until: shared.idle_since() + limits.keepalive,
            },
            Ended::TimedOut => {
                self.stats.client_timeouts.incr();
                Awake::Done
            }
            Ended::Parked | Ended::No | Ended::Idle | Ended::Stopping => Awake::Done,
        }
    }

    /// Waits, holding no buffer, for an idle connection to speak again;
    /// false when it stays idle past `deadline` or ringside stops.
    async fn park(&self, stream: &TcpStream, deadline: tokio::time::Instant, stopping: &Arc<Signal>) -> bool {
        self.stats.parked_connections.incr();
        // A peek, not `readable()`: readiness may be reported with nothing
        // to read (a fresh socket is), and a byte or the EOF is what counts.
        let mut byte = [0u8; 1];
        let woke = tokio::select! {
            r = stream.peek(&mut byte) => r.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
            _ = stopping.wait() => false,
        };
        self.stats.parked_connections.decr();
        woke
    }
}

/// How a connection's busy spell ended.
enum Awake {
    /// Idle between requests: parked until it speaks again or `until`.
    Idle {
        stream: TcpStream,
        until: tokio::time::Instant,
    },
    /// Closed, timed out, or its tunnel ended.
    Done,
}

/// The client connections one proxy thread has open, for a shutdown to
/// wait on and for new connections to go where there are fewest.
#[derive(Default)]
struct OpenHere {
    count: AtomicUsize,
    /// Fired when the count drops to zero.
    none_left: Arc<Signal>,
}

impl OpenHere {
    /// Counts a connection (its place under the cap already taken) here
    /// and in the proxy's gauge, until the returned guard drops.
    fn track(self: &Arc<Self>, proxy: &Arc<Proxy>) -> OpenConnection {
        self.count.fetch_add(1, Ordering::SeqCst);
        proxy.stats.client_connections.incr();
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

/// A proxy thread's place among the others.
struct Place {
    lanes: Arc<Lanes>,
    me: usize,
    inbox: UnboundedReceiver<Handoff>,
}

/// One client connection, counted until it drops.
struct OpenConnection {
    here: Arc<OpenHere>,
    proxy: Arc<Proxy>,
}

impl OpenConnection {
    /// Counts the connection on `here` instead.
    fn rehome(&mut self, here: &Arc<OpenHere>) {
        here.count.fetch_add(1, Ordering::SeqCst);
        let left = std::mem::replace(&mut self.here, Arc::clone(here));
        if left.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            left.none_left.fire();
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.proxy.stats.client_connections.decr();
        self.proxy.cap.release();
        if self.here.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.here.none_left.fire();
        }
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
