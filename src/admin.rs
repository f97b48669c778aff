//! The admin API: JSON over HTTP, loopback by default (a bearer token is
//! required to listen anywhere else). Every action is a [`Command`], the same
//! the dashboard's keys send.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/backends`, `/api/backends/{name}` | state, address, weight, health, connections, requests, sessions, ring share, p50/p99 |
//! | POST | `/api/backends/{name}/kill`, `/revive`, `/drain?timeout_secs=N`, `/undrain`, `/extend?timeout_secs=N`, `/weight?value=N` | actions |
//! | POST | `/api/backends` | `{"name","addr","weight"}` or `{"demo":true}` |
//! | DELETE | `/api/backends/{name}` | remove |
//! | GET | `/api/sessions?backend=&limit=` | the session table |
//! | GET | `/api/ring` | vnode positions and shares |
//! | GET | `/api/stats` | counters and the last remap |
//! | PUT | `/api/placement`, `/api/affinity` | `{"name": …}` |
//! | GET | `/api/events` | newline-delimited JSON events, streamed |
//! | GET | `/metrics` | Prometheus text format |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::bus::Subscription;
use crate::engine::{Command, CommandError, Engine};
use crate::router::affinity::{AffinityMode, query_value};
use crate::router::{BackendId, BackendSpec, Placement};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

type AdminBody = Either<Full<Bytes>, EventsBody>;

/// Serves the admin API on `listener` until the engine shuts down.
pub async fn serve(engine: Arc<Engine>, listener: TcpListener) {
    let mut shutdown = engine.shutdown_signal();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::proxy::stopped(&mut shutdown) => return,
        };
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let engine = Arc::clone(&engine);
                async move { Ok::<_, Infallible>(handle(&engine, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<AdminBody> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<AdminBody> {
    json_response(status, &json!({ "error": message.to_string() }))
}

/// Compares in time that depends only on the lengths, so a wrong token
/// says nothing about how much of it was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn ok(text: String) -> Response<AdminBody> {
    json_response(StatusCode::OK, &json!({ "ok": text }))
}

async fn handle(engine: &Arc<Engine>, req: Request<Incoming>) -> Response<AdminBody> {
    if let Some(token) = &engine.config().admin.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| same_secret(g, token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "backends"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(engine.backends_view()).unwrap_or_default(),
        ),
        (&Method::GET, ["api", "backends", name]) => match engine.backends_view().into_iter().find(|b| b.name == *name)
        {
            Some(b) => json_response(StatusCode::OK, &serde_json::to_value(b).unwrap_or_default()),
            None => error(StatusCode::NOT_FOUND, format!("no backend named {name:?}")),
        },
        (&Method::POST, ["api", "backends", name, action]) => {
            let command = match backend_action(name, action, &query) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            run(engine, command).await
        }
        (&Method::POST, ["api", "backends"]) => match read_json::<NewBackend>(req).await {
            Ok(NewBackend { demo: Some(true), .. }) => run(engine, Command::AddDemo).await,
            Ok(NewBackend {
                name: Some(name),
                addr: Some(addr),
                weight,
                ..
            }) => match addr.parse() {
                Ok(addr) => match BackendSpec::new(&name, addr, weight.unwrap_or(1)) {
                    Ok(spec) => run(engine, Command::Add(spec)).await,
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                },
                Err(_) => error(
                    StatusCode::BAD_REQUEST,
                    format!("addr {addr:?} is not an IP:PORT address"),
                ),
            },
            Ok(_) => error(
                StatusCode::BAD_REQUEST,
                "expected {\"name\":…,\"addr\":\"IP:PORT\",\"weight\":N} or {\"demo\":true}",
            ),
            Err(e) => e.into_response(),
        },
        (&Method::DELETE, ["api", "backends", name]) => run(engine, Command::Remove((*name).to_owned())).await,
        (&Method::GET, ["api", "sessions"]) => sessions(engine, &query),
        (&Method::GET, ["api", "ring"]) => ring(engine),
        (&Method::GET, ["api", "stats"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(engine.stats_view()).unwrap_or_default(),
        ),
        (&Method::PUT, ["api", "placement"]) => match read_json::<Named>(req).await {
            Ok(n) => match n.name.parse::<Placement>() {
                Ok(p) => run(engine, Command::Placement(p)).await,
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            },
            Err(e) => e.into_response(),
        },
        (&Method::PUT, ["api", "affinity"]) => match read_json::<Named>(req).await {
            Ok(n) => match n.name.parse::<AffinityMode>() {
                Ok(m) => run(engine, Command::Affinity(m)).await,
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            },
            Err(e) => e.into_response(),
        },
        (&Method::GET, ["api", "events"]) => events(engine),
        (&Method::GET, ["metrics"]) => metrics(engine),
        (_, ["api", ..]) | (_, ["metrics"]) => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path} (see the admin API list in the README)"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {path}")),
    }
}

/// A refusal: the status and what was wrong.
struct ApiError(StatusCode, String);

impl ApiError {
    fn into_response(self) -> Response<AdminBody> {
        error(self.0, self.1)
    }
}

fn backend_action(name: &str, action: &str, query: &str) -> Result<Command, ApiError> {
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        match query_value(query, key) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{key}={v:?} is not a whole number"))),
        }
    };
    let name = name.to_owned();
    Ok(match action {
        "kill" => Command::Kill(name),
        "revive" => Command::Revive(name),
        "drain" => Command::Drain {
            backend: name,
            timeout: number("timeout_secs")?.map(Duration::from_secs),
        },
        "undrain" => Command::Undrain(name),
        "extend" => Command::Extend {
            backend: name,
            by: Duration::from_secs(number("timeout_secs")?.unwrap_or(30)),
        },
        "weight" => match number("value")? {
            Some(v) if (1..=100).contains(&v) => Command::Weight {
                backend: name,
                weight: v as u32,
            },
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "weight needs ?value=N with N from 1 to 100".into(),
                ));
            }
        },
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: use kill, revive, drain, undrain, extend or weight"),
            ));
        }
    })
}

async fn run(engine: &Arc<Engine>, command: Command) -> Response<AdminBody> {
    match engine.execute(command).await {
        Ok(text) => ok(text),
        Err(e) => {
            let status = StatusCode::from_u16(CommandError::status(&e)).unwrap_or(StatusCode::BAD_REQUEST);
            error(status, e)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    name: Option<String>,
    addr: Option<String>,
    weight: Option<u32>,
    demo: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn sessions(engine: &Arc<Engine>, query: &str) -> Response<AdminBody> {
    let topo = engine.router().topology();
    let filter: Option<BackendId> = match query_value(query, "backend") {
        None => None,
        Some(name) => match topo.find(name) {
            Some(b) => Some(b.id),
            None => return error(StatusCode::NOT_FOUND, format!("no backend named {name:?}")),
        },
    };
    let limit = match query_value(query, "limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if n <= 100_000 => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be a whole number up to 100000"),
    };
    let now = engine.clock().now().secs();
    let list: Vec<Value> = engine
        .router()
        .sessions()
        .list(limit, |s| filter.is_none_or(|f| s.backend == f))
        .into_iter()
        .map(|s| {
            json!({
                "key": s.label.as_str(),
                "backend": &*topo.backend(s.backend).name,
                "position": s.position,
                "age_secs": now.saturating_sub(s.created_secs),
                "idle_secs": now.saturating_sub(s.last_seen_secs),
                "requests": s.requests,
                "reassignments": s.reassignments,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "total": engine.router().sessions().len(), "sessions": list }),
    )
}

fn ring(engine: &Arc<Engine>) -> Response<AdminBody> {
    let topo = engine.router().topology();
    let backends: Vec<Value> = topo
        .members()
        .map(|b| {
            json!({
                "name": &*b.name,
                "state": topo.state(b.id),
                "weight": topo.weight(b.id),
                "share": topo.share(b.id),
                "effective_share": topo.effective_share(b.id),
            })
        })
        .collect();
    let vnodes: Vec<Value> = topo
        .ring()
        .vnodes()
        .map(|v| json!([v.position, &*topo.backend(v.owner).name]))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "vnode_hash": engine.config().routing.vnode_hash, "backends": backends, "vnodes": vnodes }),
    )
}

fn events(engine: &Arc<Engine>) -> Response<AdminBody> {
    let sub = engine.bus().subscribe();
    let mut r = Response::new(Either::Right(EventsBody::new(Arc::clone(engine), sub)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

fn metrics(engine: &Arc<Engine>) -> Response<AdminBody> {
    let s = engine.stats_view();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP ringside_{name} {help}\n# TYPE ringside_{name} counter\nringside_{name} {value}"
        );
    };
    counter("requests_total", "Requests answered by the proxy.", s.responses.total);
    counter("sessions_created_total", "Sessions created.", s.router.created);
    counter(
        "sessions_expired_total",
        "Sessions expired after their idle timeout.",
        s.router.expired,
    );
    counter(
        "sessions_evicted_total",
        "Sessions evicted from a full table.",
        s.router.evicted,
    );
    counter(
        "sessions_reassigned_total",
        "Sessions moved because their backend left.",
        s.router.reassigned,
    );
    counter(
        "forged_cookies_total",
        "Balancer cookies that failed verification.",
        s.router.forged_cookies,
    );
    counter(
        "redispatched_total",
        "Requests sent to another backend after a failed connect, or resent after a backend failed them before answering.",
        s.redispatched,
    );
    counter(
        "smuggling_refused_total",
        "Requests refused for carrying both Content-Length and Transfer-Encoding.",
        s.smuggling_refused,
    );
    counter(
        "closed_by_drain_total",
        "Backend connections closed at a drain's timeout.",
        s.closed_by_drain,
    );
    counter(
        "lost_in_flight_total",
        "Requests a backend failed after taking them, answered 502 and not resent (not idempotent).",
        s.lost_in_flight,
    );
    counter("dropped_events_total", "Events subscribers missed.", s.dropped_events);
    counter(
        "lost_sessions_total",
        "Sessions the demo clients lost.",
        s.lost_sessions,
    );
    let _ = writeln!(out, "# HELP ringside_responses_total Answers by status class.");
    let _ = writeln!(out, "# TYPE ringside_responses_total counter");
    for (class, v) in [
        ("2xx", s.responses.ok_2xx),
        ("3xx", s.responses.redirect_3xx),
        ("4xx", s.responses.client_4xx),
        ("5xx", s.responses.server_5xx),
    ] {
        let _ = writeln!(out, "ringside_responses_total{{class=\"{class}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP ringside_sessions Live sessions.\n# TYPE ringside_sessions gauge"
    );
    let _ = writeln!(out, "ringside_sessions {}", s.router.sessions);
    let _ = writeln!(
        out,
        "# HELP ringside_client_connections Client connections open.\n# TYPE ringside_client_connections gauge\nringside_client_connections {}",
        s.client_connections
    );
    if let Some(store) = &s.store {
        let _ = writeln!(
            out,
            "# HELP ringside_store_up 1 when the session store is connected.\n# TYPE ringside_store_up gauge\nringside_store_up {}",
            u8::from(store.state == crate::store::StoreState::Ok)
        );
        for (name, help, value) in [
            (
                "store_degraded_total",
                "Times the session store became degraded.",
                store.degraded_total,
            ),
            ("store_errors_total", "Failed session store operations.", store.errors),
            (
                "store_lookups_total",
                "Local misses asked of the session store.",
                store.lookups,
            ),
            (
                "store_hits_total",
                "Session store lookups that found a session.",
                store.hits,
            ),
            (
                "store_writes_total",
                "Session changes written to the store.",
                store.writes,
            ),
            (
                "store_dropped_writes_total",
                "Session changes dropped while the store was away.",
                store.dropped_writes,
            ),
            (
                "store_remote_updates_total",
                "Moves and ends taken from other balancers.",
                store.remote_updates,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP ringside_{name} {help}\n# TYPE ringside_{name} counter\nringside_{name} {value}"
            );
        }
    }
    let backends = engine.backends_view();
    for (metric, help) in [
        ("backend_up", "1 when the backend takes or keeps sessions."),
        ("backend_active_connections", "Connections open to the backend."),
        ("backend_sessions", "Live sessions on the backend."),
        ("backend_requests_total", "Requests routed to the backend."),
    ] {
        let kind = if metric.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP ringside_{metric} {help}\n# TYPE ringside_{metric} {kind}");
        for b in &backends {
            let v = match metric {
                "backend_up" => u64::from(b.healthy),
                "backend_active_connections" => b.active,
                "backend_sessions" => b.sessions,
                _ => b.requests,
            };
            let _ = writeln!(out, "ringside_{metric}{{backend=\"{}\"}} {v}", b.name);
        }
    }
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(out))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The `/api/events` body: one JSON line per bus event, as they come.
pub struct EventsBody {
    engine: Arc<Engine>,
    next: NextLine,
}

type NextLine = Pin<Box<dyn Future<Output = Option<(Bytes, Subscription)>> + Send>>;

impl EventsBody {
    fn new(engine: Arc<Engine>, sub: Subscription) -> Self {
        let next = Self::next_line(Arc::clone(&engine), sub);
        EventsBody { engine, next }
    }

    fn next_line(engine: Arc<Engine>, mut sub: Subscription) -> NextLine {
        Box::pin(async move {
            let event = sub.recv().await?;
            let topo = engine.router().topology();
            let mut line = serde_json::to_vec(&event.to_json(&topo, engine.clock())).ok()?;
            line.push(b'\n');
            Some((Bytes::from(line), sub))
        })
    }
}

impl hyper::body::Body for EventsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.next.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some((line, sub))) => {
                let engine = Arc::clone(&self.engine);
                self.next = Self::next_line(engine, sub);
                Poll::Ready(Some(Ok(Frame::data(line))))
            }
        }
    }
}
