//! Shared test helpers: start ringside in-process on loopback ports chosen by
//! the OS, and a small HTTP/1.1 client with a cookie jar.

#![allow(dead_code)]

pub mod redis;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ringside::app::{Handle, StartOptions};
use ringside::config::Config;
use tokio::net::TcpStream;

/// A config for tests: every port chosen by the OS, fast health checks.
pub fn test_config() -> Config {
    let mut c = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    c.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.demo.base_port = 0;
    c.demo.health_interval_ms = 100;
    c.health.interval_ms = 100;
    c.health.timeout_ms = 200;
    c.affinity.secret = Some("test secret test secret test secret!".into());
    c.proxy.connect_timeout_ms = 300;
    c
}

/// A running balancer with its admin API served.
pub struct Lb {
    pub handle: Handle,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Lb {
    pub async fn start(config: Config) -> Lb {
        let handle = ringside::app::bind_and_start(config, StartOptions::default())
            .await
            .expect("start ringside");
        Lb {
            proxy: handle.proxy_addr(),
            admin: handle.admin_addr(),
            handle,
        }
    }

    /// The state of a backend, by name.
    pub fn state(&self, name: &str) -> String {
        self.handle
            .backends_view()
            .into_iter()
            .find(|b| b.name == name)
            .map(|b| b.state.to_string())
            .unwrap_or_else(|| "absent".into())
    }

    /// Waits up to `within` for `name` to reach `state`.
    pub async fn wait_state(&self, name: &str, state: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.state(name) != state {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not become {state} within {within:?} (is {})",
                self.state(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The backend that answered (the demo backends' `x-backend` header).
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// A client with a cookie jar, like `curl -c jar -b jar`; one connection per request.
#[derive(Debug, Default, Clone)]
pub struct Client {
    pub jar: BTreeMap<String, String>,
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub async fn get(&mut self, addr: SocketAddr, path: &str) -> Answer {
        self.send(addr, Method::GET, path).await
    }

    pub async fn post(&mut self, addr: SocketAddr, path: &str) -> Answer {
        self.send(addr, Method::POST, path).await
    }

    pub async fn send(&mut self, addr: SocketAddr, method: Method, path: &str) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "ringside.test");
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", cookie.join("; "));
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let answer = raw(addr, req.body(Empty::<Bytes>::new()).unwrap()).await;
        for c in answer.set_cookies() {
            let first = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                let deleted = v.is_empty() || c.to_ascii_lowercase().contains("max-age=0");
                if deleted {
                    self.jar.remove(k.trim());
                } else {
                    self.jar.insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        answer
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
pub async fn raw(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Answer {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("answer within 10 s")
}

/// JSON from the admin API.
pub async fn admin_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect admin");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let resp = sender.send_request(req).await.expect("admin response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, value)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("admin answer within 10 s")
}

/// What operators see of the topology: every backend's name, state, weight
/// and address, and the placement, affinity and vnodes in force. Two equal
/// values mean nothing was changed in between.
#[derive(Debug, Clone, PartialEq)]
pub struct Topo {
    pub backends: Vec<(String, String, u32, String)>,
    pub placement: String,
    pub affinity: String,
    pub vnodes: u32,
}

/// The topology of a running balancer now.
pub fn topo(handle: &Handle) -> Topo {
    let stats = handle.stats_view();
    Topo {
        backends: handle
            .backends_view()
            .into_iter()
            .map(|b| (b.name, b.state.to_string(), b.weight, b.addr))
            .collect(),
        placement: stats.placement.to_string(),
        affinity: stats.affinity.to_string(),
        vnodes: handle.router().vnodes(),
    }
}

/// An answer read off the wire.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// The status code.
    pub status: u16,
    /// The head, status line included, as text.
    pub head: String,
    /// The body as far as it was read.
    pub body: String,
}

impl RawAnswer {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `request` (raw bytes, sent as they are) on a fresh connection and
/// reads one answer: until the server closes, or, for a stream
/// (`application/x-ndjson`), only its head. `None` when the connection ends
/// with no answer at all (a reset: e.g. a panic in a handler). At most 5 s.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<RawAnswer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // A server may answer (and close) before the whole request is written.
    let _ = s.write_all(request).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => break,
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            if head.contains("application/x-ndjson") {
                break;
            }
        }
    }
    let end = find(&got, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    Some(RawAnswer {
        status,
        head,
        body: String::from_utf8_lossy(&got[end + 4..]).into_owned(),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A request's bytes: `method path`, the given header lines (sent as they
/// are, none added but `content-length` for a body and `connection: close`).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("content-length: {}\r\n", b.len()));
    }
    r.push_str("connection: close\r\n\r\n");
    if let Some(b) = body {
        r.push_str(b);
    }
    r.into_bytes()
}

/// One request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

/// A backend that answers every request 200 (`/health` included) and
/// records what it was sent, in order.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>> = Default::default();
        let log = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        log.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            path: req.uri().to_string(),
                            headers: req.headers().clone(),
                        });
                        async move {
                            let _ = req.into_body().collect().await;
                            let mut r = http::Response::new(http_body_util::Full::new(Bytes::from_static(b"recorded")));
                            r.headers_mut()
                                .insert("x-backend", http::HeaderValue::from_static("recorder"));
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen }
    }

    /// Everything it was sent so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Health checks received so far.
    pub fn health_checks(&self) -> usize {
        self.seen().iter().filter(|s| s.path == "/health").count()
    }

    /// Requests other than health checks (proxied ones) received so far.
    pub fn proxied(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path != "/health").collect()
    }
}

/// Waits up to `within` for an event on `sub` that `matches`, and returns it.
pub async fn wait_event(
    sub: &mut ringside::bus::Subscription,
    within: Duration,
    what: &str,
    mut matches: impl FnMut(&ringside::bus::BusEvent) -> bool,
) -> ringside::bus::BusEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(e)) if matches(&e.event) => return e.event.clone(),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the bus closed while waiting for {what}"),
            Err(_) => panic!("no event {what} within {within:?}"),
        }
    }
}

/// Waits up to `within` for `check` to hold, polling every 10 ms.
pub async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback address where nothing listens (bound, then released).
pub fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
