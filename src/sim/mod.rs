//! `ringside sim`: the source task's JSON protocol over stdin/stdout (one
//! message per line, or spread over several lines as the task writes them),
//! driving the real router with simulated backends `api-1 … api-N`.
//!
//! Sessions are keyed by the application's `session_id` cookie, as in the
//! task. A request without one gets a new id from the balancer and a
//! `set_cookie`; an id the table does not know is placed and stored under
//! that id (the client already holds it: no `set_cookie`); `set_cookie` is
//! sent again whenever the session was moved, or when the request's
//! `backend` cookie is stale. Time only moves with `advance_time`.
//! Anything malformed is answered with an `error` line and the simulator
//! carries on; it never panics on input and ends at EOF.

pub mod protocol;

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::router::{
    BackendSpec, BackendState, NullSink, Outcome, Placement, RemapSummary, Router, RouterConfig, RouterError,
    SessionKey, Timestamp,
};
use protocol::{AdvanceOk, ErrorBody, HttpResponse, Ordered, RemapJson, Reply, StateOk, StatsOk, code};

/// The longest line read; longer ones are answered with an error.
pub const MAX_LINE: usize = 1 << 20;

/// Simulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Simulated backends `api-1` … `api-N`.
    pub backends: usize,
    /// Placement for new sessions.
    pub placement: Placement,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: u32,
    /// Seed for session ids and random choices.
    pub seed: u64,
}

/// Runs the simulator until EOF on `input`: a stream of JSON values, one
/// per line or spread over several lines (as the task's samples are
/// written). Each complete value is answered as it arrives; a line that is
/// not JSON is answered with an error and dropped.
pub fn run(mut input: impl BufRead, mut output: impl Write, config: &SimConfig) -> io::Result<()> {
    let mut sim = Simulator::new(config);
    let mut line = Vec::new();
    // A value begun on earlier lines.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match read_line(&mut input, &mut line, MAX_LINE)? {
            Line::Eof => {
                if !pending.is_empty() {
                    let text = "the input ended inside a JSON value".to_owned();
                    write_line(&mut output, "client", error(None, code::MALFORMED, text))?;
                }
                return Ok(());
            }
            Line::TooLong => {
                pending.clear();
                let text = format!("line longer than {MAX_LINE} bytes");
                write_line(&mut output, "client", error(None, code::MALFORMED, text))?;
            }
            Line::Complete => {
                if std::str::from_utf8(&line).is_err() {
                    pending.clear();
                    let text = "the line is not UTF-8".to_owned();
                    write_line(&mut output, "client", error(None, code::MALFORMED, text))?;
                    continue;
                }
                if pending.is_empty() && line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                pending.extend_from_slice(&line);
                pending.push(b'\n');
                if pending.len() > MAX_LINE {
                    pending.clear();
                    let text = format!("a message longer than {MAX_LINE} bytes");
                    write_line(&mut output, "client", error(None, code::MALFORMED, text))?;
                    continue;
                }
                let used = answer_values(&mut sim, &pending, &mut output)?;
                pending.drain(..used);
                if pending.iter().all(u8::is_ascii_whitespace) {
                    pending.clear();
                }
            }
        }
    }
}

/// Answers every complete value in `text`; returns how many bytes were
/// used up (an unfinished value at the end waits for more lines; after
/// something that is not JSON, the rest is dropped).
fn answer_values(sim: &mut Simulator, text: &[u8], out: &mut impl Write) -> io::Result<usize> {
    let mut values = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
    loop {
        let start = values.byte_offset();
        match values.next() {
            None => return Ok(text.len()),
            Some(Ok(message)) => sim.answer(message, out)?,
            Some(Err(e)) if e.is_eof() => return Ok(start),
            Some(Err(e)) => {
                write_line(
                    out,
                    "client",
                    error(None, code::MALFORMED, format!("not valid JSON: {e}")),
                )?;
                return Ok(text.len());
            }
        }
    }
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line into `buf` (without the newline), never holding more than
/// `max` bytes: the rest of a longer line is skipped.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (read_any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        read_any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = done.unwrap_or(chunk.len());
        input.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

fn write_line(out: &mut impl Write, dest: &str, body: impl Serialize) -> io::Result<()> {
    let reply = Reply {
        src: "l7_proxy",
        dest,
        body,
    };
    serde_json::to_writer(&mut *out, &reply).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn error(in_reply_to: Option<u64>, code: u32, text: String) -> ErrorBody {
    ErrorBody {
        kind: "error",
        in_reply_to,
        code,
        text,
    }
}

/// A malformed message: the error code and what was wrong.
type Malformed = (u32, String);

struct Simulator {
    router: Router,
    now_secs: u64,
}

impl Simulator {
    fn new(config: &SimConfig) -> Self {
        let router = Router::new(
            RouterConfig {
                placement: config.placement,
                idle_timeout_secs: config.idle_timeout_secs,
                seed: Some(config.seed),
                ..RouterConfig::default()
            },
            Arc::new(NullSink),
        );
        // The task's sessions are keyed by the application's session id.
        router.set_affinity(crate::router::affinity::AffinityMode::AppCookie);
        let sim = Simulator { router, now_secs: 0 };
        for i in 1..=config.backends {
            // Names and addresses are well-formed by construction.
            let _ = sim.add(&format!("api-{i}"));
        }
        sim
    }

    fn add(&self, name: &str) -> Result<(), RouterError> {
        let port = 8080u16.wrapping_add(self.router.topology().backend_count() as u16 + 1);
        let spec = BackendSpec::new(name, SocketAddr::from(([127, 0, 0, 1], port)), 1)?;
        self.router.add_backend(&spec).map(|_| ())
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_secs(self.now_secs)
    }

    fn answer(&mut self, message: Value, out: &mut impl Write) -> io::Result<()> {
        let src = message
            .get("src")
            .and_then(Value::as_str)
            .unwrap_or("client")
            .to_owned();
        let body = message.get("body").and_then(Value::as_object);
        let msg_id = body.and_then(|b| b.get("msg_id")).and_then(Value::as_u64);
        let result = match body {
            None => Err((code::MALFORMED, "expected an object with a \"body\" object".to_owned())),
            Some(body) => self.dispatch(body, msg_id, &src, out),
        };
        match result {
            Ok(()) => Ok(()),
            Err((code, text)) => write_line(out, &src, error(msg_id, code, text)),
        }
    }

    fn dispatch(
        &mut self,
        body: &Map<String, Value>,
        msg_id: Option<u64>,
        src: &str,
        out: &mut impl Write,
    ) -> Result<(), Malformed> {
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .ok_or((code::MALFORMED, "the body needs a string \"type\"".to_owned()))?;
        let reply = |out: &mut dyn Write, b: &dyn erased::Body| b.write(out, src);
        let io_err = |e: io::Error| (code::MALFORMED, format!("could not write the answer: {e}"));
        match kind {
            "http_request" => {
                let r = self.http_request(body)?;
                reply(out, &r).map_err(io_err)
            }
            "backend_down" | "backend_up" | "drain" | "undrain" | "backend_remove" => {
                let name = backend_field(body)?;
                let state = match kind {
                    "backend_down" => BackendState::Down,
                    "drain" => BackendState::Draining,
                    "backend_remove" => BackendState::Removed,
                    _ => BackendState::Up,
                };
                let summary = self.router.set_state(name, state).map_err(unknown)?;
                reply(out, &state_ok(kind, msg_id, name, state, summary)).map_err(io_err)
            }
            "backend_add" => {
                let name = backend_field(body)?;
                self.add(name).map_err(|e| match e {
                    RouterError::DuplicateName(_) | RouterError::BadName(_) => (code::MALFORMED, e.to_string()),
                    e => unknown(e),
                })?;
                let summary = self.router.stats().last_remap.lock().ok().and_then(|s| s.clone());
                reply(out, &state_ok(kind, msg_id, name, BackendState::Up, summary)).map_err(io_err)
            }
            "advance_time" => {
                let secs = body.get("secs").and_then(Value::as_u64).ok_or((
                    code::MALFORMED,
                    "advance_time needs \"secs\": a whole number ≥ 0".to_owned(),
                ))?;
                self.now_secs = self.now_secs.saturating_add(secs.min(u64::from(u32::MAX)));
                let expired = self.router.sweep(self.now());
                let ok = AdvanceOk {
                    kind: "advance_time_ok",
                    in_reply_to: msg_id,
                    now_secs: self.now_secs,
                    expired,
                };
                reply(out, &ok).map_err(io_err)
            }
            "stats" => reply(out, &self.stats(msg_id)).map_err(io_err),
            other => Err((
                code::NOT_SUPPORTED,
                format!(
                    "unknown message type {other:?}: expected http_request, backend_down, backend_up, drain, undrain, backend_add, backend_remove, advance_time or stats"
                ),
            )),
        }
    }

    fn http_request(&mut self, body: &Map<String, Value>) -> Result<HttpResponse, Malformed> {
        let msg_id = body.get("msg_id").and_then(Value::as_u64).ok_or((
            code::MALFORMED,
            "http_request needs \"msg_id\": a whole number".to_owned(),
        ))?;
        let text_field = |key: &str| -> Result<Option<&str>, Malformed> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err((code::MALFORMED, format!("\"{key}\" must be a string"))),
            }
        };
        let method = text_field("method")?.unwrap_or("GET");
        let path = text_field("path")?.unwrap_or("/");
        let cookies = match body.get("cookies") {
            None | Some(Value::Null) => None,
            Some(Value::Object(c)) => Some(c),
            Some(_) => return Err((code::MALFORMED, "\"cookies\" must be an object".to_owned())),
        };
        let cookie = |name: &str| -> Result<Option<&str>, Malformed> {
            match cookies.and_then(|c| c.get(name)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err((code::MALFORMED, format!("cookie \"{name}\" must be a string"))),
            }
        };
        let held = cookie("session_id")?;
        let claimed_backend = cookie("backend")?;
        let generated = held.is_none().then(|| format!("{:016x}", self.router.random()));
        let id = held.or(generated.as_deref()).unwrap_or_default();
        let route = match self.router.route(SessionKey::Text(id.as_bytes()), self.now()) {
            Ok(r) => r,
            Err(_) => {
                return Ok(HttpResponse {
                    kind: "http_response",
                    in_reply_to: msg_id,
                    status: 503,
                    backend: None,
                    set_cookie: None,
                });
            }
        };
        let backend = route.backend.name.to_string();
        let moved = matches!(route.outcome, Outcome::Reassigned { .. });
        let stale = claimed_backend.is_some_and(|b| b != backend);
        let logout = method.eq_ignore_ascii_case("POST") && path.ends_with("/logout");
        let set_cookie = if logout {
            self.router.end_session(SessionKey::Text(id.as_bytes()));
            Some("session_id=; Max-Age=0".to_owned())
        } else if generated.is_some() || moved || stale {
            Some(format!("session_id={id}; backend={backend}"))
        } else {
            None
        };
        Ok(HttpResponse {
            kind: "http_response",
            in_reply_to: msg_id,
            status: 200,
            backend: Some(backend),
            set_cookie,
        })
    }

    fn stats(&self, msg_id: Option<u64>) -> StatsOk {
        let topo = self.router.topology();
        let s = self.router.stats_snapshot();
        StatsOk {
            kind: "stats_ok",
            in_reply_to: msg_id,
            sessions: s.sessions,
            sessions_per_backend: Ordered(
                topo.members()
                    .map(|b| (b.name.to_string(), self.router.sessions_on(b)))
                    .collect(),
            ),
            backends: Ordered(
                topo.members()
                    .map(|b| (b.name.to_string(), topo.state(b.id).as_str()))
                    .collect(),
            ),
            created: s.created,
            reassigned: s.reassigned,
            expired: s.expired,
        }
    }
}

fn backend_field(body: &Map<String, Value>) -> Result<&str, Malformed> {
    body.get("backend").and_then(Value::as_str).ok_or((
        code::MALFORMED,
        "this message needs \"backend\": a backend name".to_owned(),
    ))
}

fn unknown(e: RouterError) -> Malformed {
    match e {
        RouterError::UnknownBackend(_) => (code::UNKNOWN_BACKEND, e.to_string()),
        e => (code::MALFORMED, e.to_string()),
    }
}

fn state_ok(
    kind: &str,
    msg_id: Option<u64>,
    name: &str,
    state: BackendState,
    summary: Option<RemapSummary>,
) -> StateOk {
    StateOk {
        kind: format!("{kind}_ok"),
        in_reply_to: msg_id,
        backend: name.to_owned(),
        state: state.as_str(),
        remap: summary.as_ref().map(RemapJson::from),
        summary: summary.map(|s| s.to_string()),
    }
}

/// Lets the dispatcher write any answer body through one closure.
mod erased {
    use std::io::{self, Write};

    use serde::Serialize;

    /// An answer body.
    pub trait Body {
        /// Writes it as one line in the reply envelope.
        fn write(&self, out: &mut dyn Write, dest: &str) -> io::Result<()>;
    }

    impl<T: Serialize> Body for T {
        fn write(&self, mut out: &mut dyn Write, dest: &str) -> io::Result<()> {
            super::write_line(&mut out, dest, self)
        }
    }
}
