//! Demo backends: a small stateful web application kept in memory, so that
//! losing a session is something you can see ("who are you? please log in").
//!
//! Every answer is one line starting `Backend Server <name>` and carries an
//! `x-backend` header. `POST /login?user=NAME` creates a session (the
//! `session_id` cookie); `GET /profile`, `POST /cart?item=X`, `GET /cart` and
//! `POST /logout` need it (cookie, `X-Session-ID` header or `?session=`);
//! `GET /health`, `GET /sleep?ms=N`, `GET /stall` (never answers) and any
//! `Upgrade` request (echoed back byte for byte) help with experiments.
//!
//! A kill is real: the listener closes, every connection drops, the sessions
//! are forgotten.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::router::affinity::{cookie_values, query_value};

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug)]
struct Session {
    user: String,
    cart: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    addr: SocketAddr,
    sessions: Mutex<HashMap<String, Session>>,
    requests: AtomicU64,
    running: AtomicBool,
    /// Bumped by a kill: every connection and tunnel stops.
    generation: watch::Sender<u64>,
    /// The accept loop, aborted (and awaited) by a kill so the port is free.
    acceptor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A demo backend. Clones share it.
#[derive(Debug, Clone)]
pub struct DemoBackend {
    inner: Arc<Inner>,
}

impl DemoBackend {
    /// Binds `addr` (port 0 picks one) and serves until killed.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind(addr).await?;
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            sessions: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            running: AtomicBool::new(true),
            generation: watch::Sender::new(0),
            acceptor: Mutex::new(None),
        });
        let backend = DemoBackend { inner };
        backend.spawn_acceptor(listener);
        Ok(backend)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bound address (the same across kill and revive).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Stops for real: the listener closes, every connection (requests in
    /// flight and tunnels too) drops, every session is forgotten. Idempotent.
    pub async fn kill(&self) {
        self.inner.running.store(false, Ordering::SeqCst);
        let acceptor = self.inner.acceptor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = acceptor {
            task.abort();
            let _ = task.await;
        }
        self.inner.generation.send_modify(|g| *g += 1);
        self.sessions_lock().clear();
    }

    fn spawn_acceptor(&self, listener: TcpListener) {
        let task = tokio::spawn(accept_loop(Arc::clone(&self.inner), listener));
        *self.inner.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Serves again on the same address with no sessions. Does nothing when running.
    pub async fn revive(&self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.inner.addr).await?;
        self.inner.running.store(true, Ordering::SeqCst);
        self.spawn_acceptor(listener);
        Ok(())
    }

    /// True while serving.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Sessions held in memory.
    pub fn sessions(&self) -> usize {
        self.sessions_lock().len()
    }

    /// Requests served.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn sessions_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let kill = inner.generation.subscribe();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner = Arc::clone(&inner);
        let mut conn_kill = kill.clone();
        tokio::spawn(async move {
            let svc_inner = Arc::clone(&inner);
            let service = service_fn(move |req| {
                let inner = Arc::clone(&svc_inner);
                async move { Ok::<_, Infallible>(handle(&inner, req).await) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = conn_kill.changed() => {}
            }
        });
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

/// The session id a request carries: cookie, then header, then query.
fn session_id(req: &Request<Incoming>) -> Option<String> {
    cookie_values(req.headers(), "session_id")
        .find(|v| !v.is_empty())
        .or_else(|| req.headers().get("x-session-id").and_then(|v| v.to_str().ok()))
        .or_else(|| req.uri().query().and_then(|q| query_value(q, "session")))
        .map(str::to_owned)
}

async fn handle(inner: &Arc<Inner>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    if req.headers().contains_key(header::UPGRADE) {
        return upgrade(inner, &mut req);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let sid = session_id(&req);
    if Limited::new(req.into_body(), MAX_BODY).collect().await.is_err() {
        return answer(inner, StatusCode::PAYLOAD_TOO_LARGE, ": request body too large");
    }
    let lock = || inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
    let who =
        |sid: &Option<String>| -> Option<String> { sid.as_ref().and_then(|id| lock().get(id).map(|s| s.user.clone())) };
    let unknown = || answer(inner, StatusCode::UNAUTHORIZED, ": who are you? please log in");
    match (&method, path.as_str()) {
        (&Method::GET, "/") => answer(inner, StatusCode::OK, ""),
        (&Method::GET, "/health") => answer(inner, StatusCode::OK, ": ok"),
        (&Method::POST, "/login") => {
            let user = query_value(&query, "user").unwrap_or("guest").to_owned();
            let id = format!("{:016x}", fastrand::u64(..));
            lock().insert(
                id.clone(),
                Session {
                    user: user.clone(),
                    cart: Vec::new(),
                },
            );
            let mut r = answer(inner, StatusCode::OK, &format!(": welcome {user} (session {id})"));
            if let Ok(v) = HeaderValue::from_str(&format!("session_id={id}; Path=/; HttpOnly")) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        (&Method::GET, "/profile") => match who(&sid) {
            Some(user) => answer(inner, StatusCode::OK, &format!(": profile of {user}")),
            None => unknown(),
        },
        (&Method::POST, "/cart") => {
            let item = query_value(&query, "item").unwrap_or("something").to_owned();
            let added = sid.as_ref().and_then(|id| {
                let mut sessions = lock();
                let s = sessions.get_mut(id)?;
                s.cart.push(item.clone());
                Some(s.cart.len())
            });
            match added {
                Some(n) => answer(inner, StatusCode::OK, &format!(": added {item} ({n} items)")),
                None => unknown(),
            }
        }
        (&Method::GET, "/cart") => {
            let cart = sid
                .as_ref()
                .and_then(|id| lock().get(id).map(|s| (s.user.clone(), s.cart.join(", "))));
            match cart {
                Some((user, items)) => answer(inner, StatusCode::OK, &format!(": cart of {user}: {items}")),
                None => unknown(),
            }
        }
        (&Method::POST, "/logout") => {
            let gone = sid.as_ref().and_then(|id| lock().remove(id));
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
        (_, "/sleep") => {
            let ms = query_value(&query, "ms").and_then(|v| v.parse().ok()).unwrap_or(0u64);
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
            answer(inner, StatusCode::OK, &format!(": slept {ms} ms"))
        }
        (_, "/stall") => std::future::pending().await,
        _ => answer(inner, StatusCode::NOT_FOUND, ": no such page"),
    }
}

/// Switches protocols and echoes every byte back until the peer closes.
fn upgrade(inner: &Arc<Inner>, req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let protocol = req.headers().get(header::UPGRADE).cloned();
    let on_upgrade = hyper::upgrade::on(req);
    let mut kill = inner.generation.subscribe();
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
            tokio::select! {
                _ = tokio::io::copy(&mut reader, &mut writer) => {}
                _ = kill.changed() => {}
            }
        }
    });
    let mut r = answer(inner, StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Full::new(Bytes::new());
    r.headers_mut().remove(header::CONTENT_TYPE);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        r.headers_mut().insert(header::UPGRADE, p);
    }
    r
}

/// Runs one demo backend as its own process until Ctrl-C or SIGTERM.
pub async fn run_standalone(name: &str, listen: SocketAddr) -> anyhow::Result<()> {
    crate::router::backend::validate_name(name)?;
    let backend = DemoBackend::start(name, listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    println!("demo backend {name} listening on http://{}", backend.addr());
    crate::app::wait_for_signal().await;
    backend.kill().await;
    Ok(())
}
