//! The admin API: JSON over HTTP, loopback by default (a bearer token is
//! required to listen anywhere else). Every action is a [`Command`], the
//! same the dashboard's keys send, run by the engine task in order. Requests
//! a web page could have sent are refused first (see [`guard`]); every
//! parameter is checked and a bad one gets a clear 400.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/backends`, `/api/backends/{name}` | state, address, weight, health, connections, requests, sessions, ring share, p50/p99 |
//! | POST | `/api/backends/{name}/kill`, `/revive`, `/drain?timeout_secs=N`, `/undrain`, `/extend?timeout_secs=N`, `/weight?value=N` | actions |
//! | POST | `/api/backends` | `{"name","addr","weight"}` or `{"demo":true}` |
//! | DELETE | `/api/backends/{name}` | remove |
//! | GET | `/api/sessions?backend=&limit=` | the session table (fingerprints, never keys) |
//! | POST, DELETE | `/api/sessions/{session}/follow` | follow a session (fingerprint, `#` + 8 hex, address or `client-N`), or stop |
//! | GET | `/api/sessions/{session}/history` | a followed session's backends, moves and why, lost logins |
//! | GET | `/api/probe?key=…&mode=…` | a key's hash, position, clockwise walk with each skip's reason, owner, session |
//! | GET | `/api/moves?limit=` | the last change's sessions (a sample): where each went, and where modulo would have |
//! | GET | `/api/ring?offset=&limit=` | shares, and vnode positions (paged beyond 4,096) |
//! | GET | `/api/stats` | counters and the last remap |
//! | PUT | `/api/placement`, `/api/affinity` | `{"name": …}` |
//! | PUT | `/api/vnodes` | `{"value": N}` |
//! | PUT | `/api/traffic` | `{"on": bool}` and/or `{"rate": N}` |
//! | POST | `/api/restart` | forget sessions and counters, keep the backends |
//! | GET | `/api/events` | newline-delimited JSON events, streamed (capped) |
//! | GET | `/metrics` | Prometheus text format |

pub mod events;
pub mod guard;
mod metrics;
pub mod teach;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::engine::{Command, CommandError, Commands, Shared};
use crate::router::affinity::AffinityMode;
use crate::router::{BackendSpec, Placement, RouterError};
use crate::shutdown::ShutdownSignal;
use guard::{Guard, Refusal};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Most vnodes `/api/ring` lists in one answer.
const RING_PAGE: usize = 4096;

type EventFrames = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;
type AdminBody = Either<Full<Bytes>, StreamBody<EventFrames>>;

/// Everything a request handler needs.
struct Api {
    shared: Arc<Shared>,
    commands: Commands,
    streams: Arc<events::Streams>,
    shutdown: ShutdownSignal,
}

/// Serves the admin API on `listener` until shutdown; then it stops
/// accepting, answers what is in flight and ends every event stream.
pub fn serve(
    shared: Arc<Shared>,
    commands: Commands,
    listener: std::net::TcpListener,
    shutdown: ShutdownSignal,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let api = Arc::new(Api {
        shared,
        commands,
        streams: Arc::default(),
        shutdown,
    });
    Ok(tokio::spawn(accept(api, listener)))
}

async fn accept(api: Arc<Api>, listener: TcpListener) {
    let mut shutdown = api.shutdown.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.stopped() => break,
        };
        let api = Arc::clone(&api);
        connections.spawn(async move {
            let mut stopping = api.shutdown.clone();
            let service = service_fn(|req| {
                let api = Arc::clone(&api);
                async move { Ok::<_, Infallible>(api.handle(req, peer).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping.stopped() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
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

/// A refusal: the status and what was wrong.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    fn into_response(self) -> Response<AdminBody> {
        error(self.0, self.1)
    }
}

/// The HTTP status a refused command is answered with.
fn status_of(e: &CommandError) -> StatusCode {
    match e {
        CommandError::UnknownBackend(_) | CommandError::Router(RouterError::UnknownBackend(_)) => StatusCode::NOT_FOUND,
        CommandError::Conflict(_)
        | CommandError::Router(RouterError::DuplicateName(_))
        | CommandError::Router(RouterError::TooManyBackends)
        | CommandError::Router(RouterError::TooManyVnodes(_))
        | CommandError::Router(RouterError::NoBackend) => StatusCode::CONFLICT,
        CommandError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        CommandError::Busy | CommandError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::BadValue(_) | CommandError::Router(_) => StatusCode::BAD_REQUEST,
    }
}

impl Api {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<AdminBody> {
        let config = self.shared.config();
        let guard = Guard::new(
            self.shared.admin_addr,
            &config.admin.allowed_hosts,
            config.admin.token.clone(),
        );
        if let Err(refusal) = guard.check(req.method(), req.headers()) {
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
            let host = req
                .headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            tracing::warn!(
                "admin API refused {} {} from {peer} (host {host:?}, origin {origin:?}): {refusal:?}",
                req.method(),
                req.uri().path(),
            );
            return match refusal {
                Refusal::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
                Refusal::Unauthorized => {
                    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                    r
                }
            };
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let routed = match (&method, segments.as_slice()) {
            (&Method::GET, ["api", "backends"]) => Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(self.shared.backends_view()).unwrap_or_default(),
            )),
            (&Method::GET, ["api", "backends", name]) => match self.shared.backend_view(name) {
                Some(b) => Ok(json_response(
                    StatusCode::OK,
                    &serde_json::to_value(b).unwrap_or_default(),
                )),
                None => Err(ApiError(StatusCode::NOT_FOUND, format!("no backend named {name:?}"))),
            },
            (&Method::POST, ["api", "backends", name, action]) => match backend_action(name, action, &query) {
                Ok(command) => Ok(self.run(command, &method, &path, peer).await),
                Err(e) => Err(e),
            },
            (&Method::POST, ["api", "backends"]) => match read_json::<NewBackend>(req).await {
                Ok(new) => match new.command() {
                    Ok(command) => Ok(self.run(command, &method, &path, peer).await),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            (&Method::DELETE, ["api", "backends", name]) => Ok(self
                .run(Command::Remove((*name).to_owned()), &method, &path, peer)
                .await),
            (&Method::GET, ["api", "sessions"]) => self.sessions(&query),
            (&Method::GET, ["api", "sessions", session, "history"]) => teach::history(&self.shared, session),
            (&Method::POST, ["api", "sessions", session, "follow"]) => teach::follow(&self.shared, session),
            (&Method::DELETE, ["api", "sessions", session, "follow"]) => teach::unfollow(&self.shared, session),
            (&Method::GET, ["api", "probe"]) => teach::probe(&self.shared, &query),
            (&Method::GET, ["api", "moves"]) => teach::moves(&self.shared, &query),
            (&Method::GET, ["api", "ring"]) => self.ring(&query),
            (&Method::GET, ["api", "stats"]) => Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(self.shared.stats_view()).unwrap_or_default(),
            )),
            (&Method::PUT, ["api", "placement"]) => match read_json::<Named>(req).await {
                Ok(n) => match n.name.parse::<Placement>() {
                    Ok(p) => Ok(self.run(Command::Placement(p), &method, &path, peer).await),
                    Err(e) => Err(ApiError::bad(e)),
                },
                Err(e) => Err(e),
            },
            (&Method::PUT, ["api", "affinity"]) => match read_json::<Named>(req).await {
                Ok(n) => match n.name.parse::<AffinityMode>() {
                    Ok(m) => Ok(self.run(Command::Affinity(m), &method, &path, peer).await),
                    Err(e) => Err(ApiError::bad(e)),
                },
                Err(e) => Err(e),
            },
            (&Method::PUT, ["api", "vnodes"]) => match read_json::<Valued>(req).await {
                Ok(v) => match u32::try_from(v.value) {
                    Ok(n) if (1..=10_000).contains(&n) => Ok(self.run(Command::Vnodes(n), &method, &path, peer).await),
                    _ => Err(ApiError::bad("vnodes: use a whole number from 1 to 10000")),
                },
                Err(e) => Err(e),
            },
            (&Method::PUT, ["api", "traffic"]) => match read_json::<TrafficChange>(req).await {
                Ok(t) => Ok(self.traffic(t, &method, &path, peer).await),
                Err(e) => Err(e),
            },
            (&Method::POST, ["api", "restart"]) => Ok(self.run(Command::Restart, &method, &path, peer).await),
            (&Method::GET, ["api", "events"]) => self.events(),
            (&Method::GET, ["metrics"]) => {
                let mut r = Response::new(Either::Left(Full::new(Bytes::from(metrics::exposition(&self.shared)))));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                Ok(r)
            }
            (_, ["api", ..]) | (_, ["metrics"]) => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {method} {path} (see the admin API list in the README)"),
            )),
            _ => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {method} {path}"),
            )),
        };
        routed.unwrap_or_else(ApiError::into_response)
    }

    /// Runs a command and logs who asked for it.
    async fn run(&self, command: Command, method: &Method, path: &str, peer: SocketAddr) -> Response<AdminBody> {
        match self.commands.execute(command).await {
            Ok(text) => {
                tracing::info!("admin API: {method} {path} from {peer}: {text}");
                json_response(StatusCode::OK, &json!({ "ok": text }))
            }
            Err(e) => {
                tracing::info!("admin API: {method} {path} from {peer} refused: {e}");
                error(status_of(&e), e)
            }
        }
    }

    async fn traffic(&self, t: TrafficChange, method: &Method, path: &str, peer: SocketAddr) -> Response<AdminBody> {
        let mut commands = Vec::new();
        if let Some(on) = t.on {
            commands.push(Command::Traffic(on));
        }
        if let Some(rate) = t.rate {
            commands.push(Command::TrafficRate(rate));
        }
        if commands.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"on\": true|false} and/or {\"rate\": N}",
            );
        }
        let mut last = None;
        for c in commands {
            let r = self.run(c, method, path, peer).await;
            if r.status() != StatusCode::OK {
                return r;
            }
            last = Some(r);
        }
        last.unwrap_or_else(|| error(StatusCode::BAD_REQUEST, "nothing to do"))
    }

    fn sessions(&self, query: &str) -> Result<Response<AdminBody>, ApiError> {
        let topo = self.shared.router.topology();
        let filter = match param(query, "backend") {
            None => None,
            Some(name) => match topo.find(name) {
                Some(b) => Some(b.id),
                None => return Err(ApiError(StatusCode::NOT_FOUND, format!("no backend named {name:?}"))),
            },
        };
        let limit = match param(query, "limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if n <= 100_000 => n,
            Some(_) => return Err(ApiError::bad("limit must be a whole number up to 100000")),
        };
        let now = self.shared.clock.now().secs();
        let list: Vec<Value> = self
            .shared
            .router
            .sessions()
            .map(|t| t.list(limit, |s| filter.is_none_or(|f| s.backend == f)))
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                json!({
                    "session": s.name().to_string(),
                    "fingerprint": s.name().fingerprint_hex(),
                    "backend": &*topo.backend(s.backend).name,
                    "position": s.position,
                    "age_secs": now.saturating_sub(s.created_secs),
                    "idle_secs": now.saturating_sub(s.last_seen_secs),
                    "requests": s.requests,
                    "reassignments": s.reassignments,
                })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "total": self.shared.router.session_count(), "sessions": list }),
        ))
    }

    fn ring(&self, query: &str) -> Result<Response<AdminBody>, ApiError> {
        let topo = self.shared.router.topology();
        let number = |key: &str| -> Result<Option<usize>, ApiError> {
            param(query, key)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| ApiError::bad(format!("{key}={v:?} is not a whole number")))
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let limit = number("limit")?;
        if limit.is_some_and(|l| l > RING_PAGE) {
            return Err(ApiError::bad(format!("limit must be at most {RING_PAGE}")));
        }
        let backends: Vec<Value> = topo
            .members()
            .map(|b| {
                json!({
                    "name": &*b.name,
                    "state": topo.state(b.id),
                    "weight": topo.weight(b.id),
                    "vnodes": topo.vnode_count(b.id),
                    "share": topo.share(b.id),
                    "effective_share": topo.effective_share(b.id),
                })
            })
            .collect();
        let total = topo.ring().len();
        let listed = limit.or((total <= RING_PAGE).then_some(RING_PAGE));
        let vnodes: Option<Vec<Value>> = listed.map(|limit| {
            topo.ring()
                .vnodes()
                .skip(offset)
                .take(limit)
                .map(|v| json!([v.position, &*topo.backend(v.owner).name]))
                .collect()
        });
        let mut body = json!({
            "vnode_hash": self.shared.config().routing.vnode_hash,
            "vnode_count": total,
            "backends": backends,
            "vnodes": vnodes,
        });
        if listed.is_none() {
            body["paging"] = json!(format!(
                "{total} vnodes: list them a page at a time with ?offset=0&limit={RING_PAGE}"
            ));
        }
        Ok(json_response(StatusCode::OK, &body))
    }

    fn events(&self) -> Result<Response<AdminBody>, ApiError> {
        let max = self.shared.config().admin.max_event_streams;
        let Some(place) = self.streams.take(max) else {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{max} event streams are open already, the most allowed (admin.max_event_streams)"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return Ok(r);
        };
        let frames: EventFrames = Box::pin(events::stream(Arc::clone(&self.shared), place, self.shutdown.clone()));
        let mut r = Response::new(Either::Right(StreamBody::new(frames)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        Ok(r)
    }
}

/// The first value of `key` in a query string, an empty one included: a
/// parameter given without a value is a mistake to report, not a default.
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn backend_action(name: &str, action: &str, query: &str) -> Result<Command, ApiError> {
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        match param(query, key) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad(format!("{key}={v:?} is not a whole number"))),
        }
    };
    let seconds = |key: &str| -> Result<Option<Duration>, ApiError> {
        match number(key)? {
            Some(s) if (1..=86_400).contains(&s) => Ok(Some(Duration::from_secs(s))),
            Some(s) => Err(ApiError::bad(format!("{key}={s}: use 1 to 86400 seconds"))),
            None => Ok(None),
        }
    };
    let name = name.to_owned();
    Ok(match action {
        "kill" => Command::Kill(name),
        "revive" => Command::Revive(name),
        "drain" => Command::Drain {
            backend: name,
            timeout: seconds("timeout_secs")?,
        },
        "undrain" => Command::Undrain(name),
        "extend" => Command::Extend {
            backend: name,
            by: seconds("timeout_secs")?.unwrap_or(Duration::from_secs(30)),
        },
        "weight" => match number("value")? {
            Some(v) if (1..=100).contains(&v) => Command::Weight {
                backend: name,
                weight: v as u32,
            },
            _ => return Err(ApiError::bad("weight needs ?value=N with N from 1 to 100")),
        },
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: use kill, revive, drain, undrain, extend or weight"),
            ));
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    name: Option<String>,
    addr: Option<String>,
    weight: Option<u32>,
    demo: Option<bool>,
}

impl NewBackend {
    fn command(self) -> Result<Command, ApiError> {
        match self {
            NewBackend {
                demo: Some(true),
                name: None,
                addr: None,
                weight: None,
            } => Ok(Command::AddDemo),
            NewBackend {
                name: Some(name),
                addr: Some(addr),
                weight,
                demo: None | Some(false),
            } => {
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| ApiError::bad(format!("addr {addr:?} is not an IP:PORT address")))?;
                BackendSpec::new(&name, addr, weight.unwrap_or(1))
                    .map(Command::Add)
                    .map_err(|e| ApiError::bad(e.to_string()))
            }
            _ => Err(ApiError::bad(
                "expected {\"name\":…,\"addr\":\"IP:PORT\",\"weight\":N} or {\"demo\":true}",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Valued {
    value: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficChange {
    on: Option<bool>,
    rate: Option<f64>,
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
    serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
}
