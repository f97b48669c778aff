//! Demo backends: a small stateful web application kept in memory, so that
//! losing a session is something you can see ("who are you? please log in").
//!
//! Every answer is one line starting `Backend Server <name>` and carries an
//! `x-backend` header. `POST /login?user=NAME` creates a session (the
//! `session_id` cookie); `GET /profile`, `POST /cart?item=X`, `GET /cart` and
//! `POST /logout` need it (cookie, `X-Session-ID` header or `?session=`);
//! `GET /health`, `/sleep?ms=N`, `/stall` (never answers) and any `Upgrade`
//! request (echoed back byte for byte) help with experiments.
//!
//! A kill is real: the listener closes (connects are refused), every
//! connection task — requests in flight and upgraded tunnels included — is
//! aborted and awaited, and the sessions are forgotten. Each serving period is
//! one accept task that owns the listener and a [`JoinSet`] of its
//! connections; a kill tells it to stop and waits until it has.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::router::affinity::{cookie_values, query_value};

/// Largest request body accepted; a longer one is answered 413.
pub const MAX_BODY: usize = 1 << 20;

/// How much of a too-large body is still read (and thrown away) so that the
/// 413 reaches a client that is still sending; beyond it the connection closes.
const DRAIN_LIMIT: u64 = 16 << 20;

/// Longest `/sleep`.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Listen backlog.
const BACKLOG: u32 = 1024;

#[derive(Debug)]
struct Session {
    user: String,
    cart: Vec<String>,
}

/// Where the backend is in its life. Only ever locked briefly, never across an `.await`.
#[derive(Debug)]
enum Life {
    /// The accept task is running; sending on (or dropping) `stop` ends it.
    Serving {
        stop: oneshot::Sender<()>,
        done: watch::Receiver<bool>,
    },
    /// Told to stop; `done` turns true once the listener and every connection are gone.
    Stopping { done: watch::Receiver<bool> },
    /// Nothing open.
    Stopped,
}

#[derive(Debug)]
struct Inner {
    name: String,
    addr: SocketAddr,
    sessions: Mutex<HashMap<String, Session>>,
    requests: AtomicU64,
    life: Mutex<Life>,
}

impl Inner {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        lock(&self.sessions)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A demo backend. Clones share it (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct DemoBackend {
    inner: Arc<Inner>,
}

impl DemoBackend {
    /// Binds `addr` (port 0 picks one) and serves until killed.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<DemoBackend> {
        DemoBackend::serve_on(name, bind(addr)?)
    }

    /// Binds a listener the way a demo backend needs it (`SO_REUSEADDR`, so
    /// a revive can take the port back), for [`DemoBackend::serve_on`].
    /// Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        bind(addr)?.into_std()
    }

    /// Serves on a listener from [`DemoBackend::bind`] until killed.
    pub fn serve_on(name: &str, listener: impl IntoListener) -> std::io::Result<DemoBackend> {
        let listener = listener.into_listener()?;
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            sessions: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            life: Mutex::new(Life::Stopped),
        });
        let life = serve(&inner, listener);
        *lock(&inner.life) = life;
        Ok(DemoBackend { inner })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bound address (the same across kill and revive).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Stops for real: the listener closes (connects are refused), every open
    /// connection drops (requests in flight and upgraded tunnels too), every
    /// session is forgotten. Returns once all of that is done. Idempotent; a
    /// kill racing another waits for the same stop.
    ///
    /// The stop itself is carried out by the accept task, so it completes even
    /// if this future is dropped half-way.
    pub async fn kill(&self) {
        let mut done = {
            let mut life = lock(&self.inner.life);
            match std::mem::replace(&mut *life, Life::Stopped) {
                Life::Serving { stop, done } => {
                    let _ = stop.send(());
                    *life = Life::Stopping { done: done.clone() };
                    done
                }
                Life::Stopping { done } => {
                    *life = Life::Stopping { done: done.clone() };
                    done
                }
                Life::Stopped => return,
            }
        };
        // An error means the accept task is gone (it finished, or the runtime is shutting down).
        let _ = done.wait_for(|d| *d).await;
    }

    /// Serves again on the same address with no sessions. Does nothing when
    /// running; waits for a kill in progress to finish first. Fails if the
    /// port was taken meanwhile.
    pub async fn revive(&self) -> std::io::Result<()> {
        loop {
            let mut done = {
                let mut life = lock(&self.inner.life);
                match &*life {
                    Life::Serving { .. } => return Ok(()),
                    Life::Stopping { done } => done.clone(),
                    Life::Stopped => {
                        // Binding is a quick synchronous system call: no `.await` under the lock.
                        let listener = bind(self.inner.addr)?;
                        self.inner.sessions().clear();
                        *life = serve(&self.inner, listener);
                        return Ok(());
                    }
                }
            };
            if done.wait_for(|d| *d).await.is_err() {
                // The accept task vanished without finishing its stop (a panic or a
                // runtime shutdown): the listener went with it, so count it as stopped.
                let mut life = lock(&self.inner.life);
                if matches!(*life, Life::Stopping { .. }) {
                    *life = Life::Stopped;
                }
            }
        }
    }

    /// True while serving (false from the moment a kill begins).
    pub fn is_running(&self) -> bool {
        matches!(*lock(&self.inner.life), Life::Serving { .. })
    }

    /// Forgets every logged-in user (a lesson starts afresh).
    pub fn forget_sessions(&self) {
        self.inner.sessions().clear();
    }

    /// Live sessions held in memory.
    pub fn sessions(&self) -> usize {
        self.inner.sessions().len()
    }

    /// Requests served since start (kills and revives do not reset it).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

/// A listener a demo backend can serve on.
pub trait IntoListener {
    /// The tokio listener.
    fn into_listener(self) -> std::io::Result<TcpListener>;
}

impl IntoListener for TcpListener {
    fn into_listener(self) -> std::io::Result<TcpListener> {
        Ok(self)
    }
}

impl IntoListener for std::net::TcpListener {
    fn into_listener(self) -> std::io::Result<TcpListener> {
        self.set_nonblocking(true)?;
        TcpListener::from_std(self)
    }
}

/// A listener on `addr` with `SO_REUSEADDR`, so a revive can take the port
/// back while the killed connections sit in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Spawns the accept task of one serving period and returns the state that controls it.
fn serve(inner: &Arc<Inner>, listener: TcpListener) -> Life {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = watch::channel(false);
    tokio::spawn(accept_loop(Arc::clone(inner), listener, stop_rx, done_tx));
    Life::Serving {
        stop: stop_tx,
        done: done_rx,
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
    done: watch::Sender<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped sender: either way, stop.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(Arc::clone(&inner), stream));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::debug!(backend = %inner.name, error = %e, "demo backend accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Connects are refused from here on.
    drop(listener);
    // Aborts every connection (a request in flight, a stall, a tunnel) and
    // waits until each has dropped its socket.
    conns.shutdown().await;
    inner.sessions().clear();
    {
        let mut life = lock(&inner.life);
        if matches!(*life, Life::Stopping { .. }) {
            *life = Life::Stopped;
        }
    }
    done.send_replace(true);
}

/// One client connection: HTTP/1.1 keep-alive, and after a `101` the echo tunnel.
async fn connection(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // The handler leaves a pending upgrade here; it is carried out in this
    // task, so a kill aborts the tunnel along with the connection.
    let upgrade: Arc<Mutex<Option<OnUpgrade>>> = Arc::default();
    let service = {
        let inner = Arc::clone(&inner);
        let upgrade = Arc::clone(&upgrade);
        service_fn(move |req| {
            let inner = Arc::clone(&inner);
            let upgrade = Arc::clone(&upgrade);
            async move { Ok::<_, Infallible>(handle(&inner, &upgrade, req).await) }
        })
    };
    let served = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::trace!(backend = %inner.name, error = %e, "demo backend connection ended");
        return;
    }
    let pending = lock(&upgrade).take();
    if let Some(pending) = pending
        && let Ok(upgraded) = pending.await
    {
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
            let _ = writer.shutdown().await;
        }
    }
}

fn answer(inner: &Inner, status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("Backend Server {}{text}\n", inner.name))));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&inner.name) {
        r.headers_mut().insert("x-backend", v);
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The session id a request carries: the `session_id` cookie, else the
/// `X-Session-ID` header, else the `session` query parameter.
fn session_id(req: &Request<Incoming>) -> Option<String> {
    cookie_values(req.headers(), b"session_id")
        .find(|v| !v.is_empty())
        .or_else(|| {
            req.headers()
                .get("x-session-id")
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
        })
        .or_else(|| {
            req.uri()
                .query()
                .and_then(|q| query_value(q, "session"))
                .map(str::as_bytes)
        })
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Reads a request body and throws it away. `Ok(true)` when it was longer
/// than [`MAX_BODY`]. A too-large body is still read up to [`DRAIN_LIMIT`] so
/// the client can finish sending and read the 413 (and keep its connection);
/// past that, reading stops and hyper closes the connection after answering.
async fn discard_body(body: &mut Incoming) -> Result<bool, hyper::Error> {
    if body.size_hint().lower() > DRAIN_LIMIT {
        return Ok(true);
    }
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    Ok(seen > MAX_BODY as u64)
}

async fn handle(
    inner: &Arc<Inner>,
    upgrade: &Mutex<Option<OnUpgrade>>,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE) {
        return switch_protocols(inner, upgrade, &mut req);
    }
    match discard_body(req.body_mut()).await {
        Ok(false) => {}
        Ok(true) => {
            return answer(
                inner,
                StatusCode::PAYLOAD_TOO_LARGE,
                ": request body too large (limit 1 MiB)",
            );
        }
        Err(_) => return answer(inner, StatusCode::BAD_REQUEST, ": unreadable request body"),
    }
    let query = req.uri().query().unwrap_or("");
    let sid = session_id(&req);
    let unknown = || answer(inner, StatusCode::UNAUTHORIZED, ": who are you? please log in");
    // Locks the sessions for a moment (no `.await` inside) and lets go before answering.
    let with_session = |f: &mut dyn FnMut(&mut Session) -> String| -> Option<String> {
        let id = sid.as_deref()?;
        inner.sessions().get_mut(id).map(f)
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => answer(inner, StatusCode::OK, ""),
        (&Method::GET, "/health") => answer(inner, StatusCode::OK, ": ok"),
        (&Method::POST, "/login") => {
            let user = query_value(query, "user").unwrap_or("guest").to_owned();
            let id = format!("{:016x}", fastrand::u64(..));
            let text = format!(": welcome {user} (session {id})");
            inner.sessions().insert(id.clone(), Session { user, cart: Vec::new() });
            let mut r = answer(inner, StatusCode::OK, &text);
            if let Ok(v) = HeaderValue::from_str(&format!("session_id={id}; Path=/; HttpOnly")) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        (&Method::GET, "/profile") => match with_session(&mut |s| format!(": profile of {}", s.user)) {
            Some(text) => answer(inner, StatusCode::OK, &text),
            None => unknown(),
        },
        (&Method::POST, "/cart") => {
            let item = query_value(query, "item").unwrap_or("something");
            let added = with_session(&mut |s| {
                s.cart.push(item.to_owned());
                format!(": added {item} ({} items)", s.cart.len())
            });
            match added {
                Some(text) => answer(inner, StatusCode::OK, &text),
                None => unknown(),
            }
        }
        (&Method::GET, "/cart") => {
            match with_session(&mut |s| format!(": cart of {}: {}", s.user, s.cart.join(", "))) {
                Some(text) => answer(inner, StatusCode::OK, &text),
                None => unknown(),
            }
        }
        (&Method::POST, "/logout") => {
            let gone = sid.as_deref().and_then(|id| inner.sessions().remove(id));
            match gone {
                Some(s) => {
                    let mut r = answer(inner, StatusCode::OK, &format!(": goodbye {}", s.user));
                    r.headers_mut().append(
                        header::SET_COOKIE,
                        HeaderValue::from_static("session_id=; Path=/; Max-Age=0"),
                    );
                    r
                }
                None => unknown(),
            }
        }
        // `/sleep` and `/stall` take any method (the proxy tests POST them).
        (_, "/sleep") => {
            let ms: u64 = query_value(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            let nap = Duration::from_millis(ms).min(MAX_SLEEP);
            tokio::time::sleep(nap).await;
            answer(inner, StatusCode::OK, &format!(": slept {} ms", nap.as_millis()))
        }
        // Never answers; dropped with the connection (by the client or by a kill).
        (_, "/stall") => std::future::pending().await,
        _ => answer(inner, StatusCode::NOT_FOUND, ": no such page"),
    }
}

/// Answers `101 Switching Protocols` with the same `Upgrade`, and leaves the
/// pending upgrade for the connection task, which echoes every byte back.
fn switch_protocols(
    inner: &Arc<Inner>,
    upgrade: &Mutex<Option<OnUpgrade>>,
    req: &mut Request<Incoming>,
) -> Response<Full<Bytes>> {
    let protocol = req.headers().get(header::UPGRADE).cloned();
    *lock(upgrade) = Some(hyper::upgrade::on(req));
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    if let Ok(v) = HeaderValue::from_str(&inner.name) {
        r.headers_mut().insert("x-backend", v);
    }
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        r.headers_mut().insert(header::UPGRADE, p);
    }
    r
}

/// Runs one demo backend as its own process until Ctrl-C or SIGTERM
/// (`ringside demo-backend --name api-9 --listen 127.0.0.1:8089`), printing
/// one line with its address once bound.
pub async fn run_standalone(name: &str, listen: SocketAddr) -> anyhow::Result<()> {
    crate::router::backend::validate_name(name)?;
    let terminated = crate::signals::terminated();
    let backend = DemoBackend::start(name, listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (is the port taken? try another --listen)"))?;
    println!("demo backend {name} listening on http://{}", backend.addr());
    terminated.await;
    backend.kill().await;
    Ok(())
}
