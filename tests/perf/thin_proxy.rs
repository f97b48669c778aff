//! thin-proxy: the thinnest honest hyper 1.x proxy of ringside's shape, the
//! speed-of-light reference for what hyper and tokio cost (issue #19).
//!
//!     cargo build --release --example thin-proxy
//!     target/release/examples/thin-proxy --listen 127.0.0.1:8080 --threads 2 \
//!         --backend 127.0.0.1:9001 --backend 127.0.0.1:9002
//!
//! Same shape as ringside's proxy path: thread-per-core (each thread a
//! current-thread tokio runtime with its own SO_REUSEPORT listener and its
//! own idle keep-alive upstream connections, driven by hyper's
//! `client::conn::http1`); round-robin for new clients; a sticky cookie like
//! HAProxy's `cookie SERVERID insert indirect` (a plain `SERVERID=bN` naming
//! backend N, 1-based, inserted when absent, stripped before forwarding);
//! `X-Forwarded-For` appended (like HAProxy's `option forwardfor`); hop-by-hop
//! headers dropped; bodies streamed both ways. Any failure is a 502. No
//! timeouts, health checks, retries, upgrades, sessions, events or metrics:
//! whatever ringside spends beyond this is ringside's own.
//!
//! `--upstream ringside` swaps hyper's client for ringside's own upstream
//! client (`ringside::proxy::client`, per-thread pooled connections, heads
//! parsed with `httparse`): the same shape with the upstream side ringside
//! uses, so the difference from ringside is ringside's features alone.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self as client, SendRequest};
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ringside::proxy::client::{self as rc, Answer, Framing, Pool, PoolConfig, RequestHead, ResponseBody};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(name = "thin-proxy", about = "The thinnest hyper 1.x proxy of ringside's shape")]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// Proxy threads, each with its own runtime, listener and pool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A backend (repeatable); the cookie names them b1, b2, … in this order.
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
    /// The client that talks to the backends.
    #[arg(long, value_enum, default_value_t = Upstream::Hyper)]
    upstream: Upstream,
}

/// Which HTTP/1.1 client forwards requests to the backends.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Upstream {
    /// hyper's `client::conn::http1`, a connection task per backend connection.
    Hyper,
    /// ringside's purpose-built client on per-thread pooled sockets.
    Ringside,
}

struct Config {
    backends: Vec<SocketAddr>,
    /// ringside's client's pools, one per backend (`--upstream ringside`).
    pools: Option<Vec<Pool>>,
    /// `Set-Cookie` per backend, made once.
    cookies: Vec<HeaderValue>,
}

/// Idle keep-alive connections kept per backend and thread (ringside's default).
const MAX_IDLE: usize = 64;
const COOKIE: &str = "SERVERID";
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

thread_local! {
    /// This thread's idle connections, by backend: its runtime drives them.
    static IDLE: RefCell<Vec<Vec<SendRequest<Incoming>>>> = const { RefCell::new(Vec::new()) };
    /// This thread's round-robin position.
    static NEXT: Cell<usize> = const { Cell::new(0) };
}

fn main() {
    let args = Args::parse();
    let cookies = (1..=args.backends.len())
        .map(|i| HeaderValue::from_str(&format!("{COOKIE}=b{i}; Path=/; HttpOnly")).expect("a valid cookie"))
        .collect();
    let pools = (args.upstream == Upstream::Ringside).then(|| {
        let config = PoolConfig {
            max_idle: MAX_IDLE,
            connect_timeout: std::time::Duration::from_secs(5),
            timeouts: rc::Timeouts::default(),
        };
        args.backends.iter().map(|a| Pool::new(*a, config)).collect()
    });
    let config: &'static Config = Box::leak(Box::new(Config {
        backends: args.backends,
        pools,
        cookies,
    }));
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("thin-proxy-{i}"))
                .spawn(move || serve_thread(config, args.listen, i))
                .expect("spawn a proxy thread")
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn serve_thread(config: &'static Config, listen: SocketAddr, i: usize) {
    IDLE.with(|idle| *idle.borrow_mut() = config.backends.iter().map(|_| Vec::new()).collect());
    NEXT.with(|n| n.set(i));
    // No timers anywhere, so no time driver: only I/O. (This also keeps the
    // dev-dependency `tokio/test-util`, which examples are built with and
    // which puts the time driver's clock behind a mutex, off the path.)
    // ringside's client keeps inactivity timers: it needs the time driver.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_io();
    if config.pools.is_some() {
        builder.enable_time();
    }
    let runtime = builder.build().expect("a runtime");
    runtime.block_on(async move {
        let socket = if listen.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("a socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        socket.bind(listen).expect("bind the listen address");
        let listener = socket.listen(1024).expect("listen");
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            // The X-Forwarded-For value, made once per connection.
            let forwarded_for = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a header value");
            tokio::spawn(async move {
                let service = service_fn(|req| handle(config, forwarded_for.clone(), req));
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

type Out = Either<Either<Pooled, ResponseBody>, Full<Bytes>>;

async fn handle(
    config: &'static Config,
    peer: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<Out>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let framing = framing(&parts.headers);
    let sticky = take_cookie(&mut parts.headers, config.backends.len());
    let b = sticky.unwrap_or_else(|| {
        NEXT.with(|n| {
            let i = n.get();
            n.set(i.wrapping_add(1));
            i % config.backends.len()
        })
    });
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.append(HeaderName::from_static("x-forwarded-for"), peer);
    if parts.uri.scheme().is_some()
        && let Some(pq) = parts.uri.path_and_query()
    {
        parts.uri = Uri::from(pq.clone());
    }
    if let Some(pools) = &config.pools {
        return Ok(via_ringside_client(config, &pools[b], b, sticky.is_none(), parts, body, framing).await);
    }
    let Some(mut sender) = checkout(b, config.backends[b]).await else {
        return Ok(bad_gateway());
    };
    let Ok(resp) = sender.send_request(Request::from_parts(parts, body)).await else {
        return Ok(bad_gateway());
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if sticky.is_none() {
        parts.headers.append(header::SET_COOKIE, config.cookies[b].clone());
    }
    let body = Pooled {
        inner: body,
        connection: Some((b, sender)),
    };
    Ok(Response::from_parts(parts, Either::Left(Either::Left(body))))
}

/// The same exchange through ringside's upstream client.
async fn via_ringside_client(
    config: &'static Config,
    pool: &Pool,
    b: usize,
    new_client: bool,
    parts: http::request::Parts,
    body: Incoming,
    framing: Framing,
) -> Response<Out> {
    let Ok(conn) = pool.checkout().await else {
        return bad_gateway();
    };
    let head = RequestHead {
        method: &parts.method,
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &parts.headers,
        framing,
    };
    let Ok(Answer::Response(resp, _)) = conn.send(&head, body, None).await else {
        return bad_gateway();
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if new_client {
        parts.headers.append(header::SET_COOKIE, config.cookies[b].clone());
    }
    Response::from_parts(parts, Either::Left(Either::Right(body)))
}

/// How a request's body is framed (RFC 9112 §6.3), read before the
/// hop-by-hop fields go.
fn framing(headers: &HeaderMap) -> Framing {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        Framing::Chunked
    } else {
        match headers
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().map(str::parse::<u64>))
        {
            Some(Ok(Ok(n))) => Framing::Length(n),
            _ => Framing::None,
        }
    }
}

/// The backend index a `SERVERID=bN` cookie names, with the cookie removed
/// from the request (HAProxy's `indirect`); `None` when absent or unknown.
fn take_cookie(headers: &mut HeaderMap, backends: usize) -> Option<usize> {
    let (mut found, mut seen) = (None, false);
    let mut rest = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(s) = value.to_str() else {
            rest.push(value.clone());
            continue;
        };
        let mut kept = String::new();
        for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.strip_prefix(COOKIE).and_then(|v| v.strip_prefix("=b")) {
                Some(n) => {
                    seen = true;
                    found = found.or_else(|| n.parse::<usize>().ok().filter(|n| (1..=backends).contains(n)));
                }
                None => {
                    if !kept.is_empty() {
                        kept.push_str("; ");
                    }
                    kept.push_str(pair);
                }
            }
        }
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_str(&kept)
        {
            rest.push(v);
        }
    }
    if seen {
        headers.remove(header::COOKIE);
        for v in rest {
            headers.append(header::COOKIE, v);
        }
    }
    found.map(|n| n - 1)
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// An idle connection to backend `b` of this thread's pool, or a new one.
async fn checkout(b: usize, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
    while let Some(mut sender) = IDLE.with(|idle| idle.borrow_mut()[b].pop()) {
        if !sender.is_closed() && (sender.is_ready() || sender.ready().await.is_ok()) {
            return Some(sender);
        }
    }
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

fn checkin(b: usize, sender: SendRequest<Incoming>) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle[b].len() < MAX_IDLE {
            idle[b].push(sender);
        }
    });
}

/// A backend's response body on its way to the client; its connection goes
/// back to the pool once the body has been read to the end.
struct Pooled {
    inner: Incoming,
    connection: Option<(usize, SendRequest<Incoming>)>,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some((b, sender)) = self.connection.take()
        {
            checkin(b, sender);
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

impl Drop for Pooled {
    fn drop(&mut self) {
        // Read to the end without a last poll (hyper stops at the length):
        // reusable. Dropped half-read: hyper closes the connection.
        if self.inner.is_end_stream()
            && let Some((b, sender)) = self.connection.take()
        {
            checkin(b, sender);
        }
    }
}

fn bad_gateway() -> Response<Out> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(b"502 Bad Gateway\n"))));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
