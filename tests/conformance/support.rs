//! Support for the conformance suite: the built binary as a subprocess, a raw
//! recording backend, raw clients, an HTTP/1.x message parser that keeps the
//! bytes it saw, and the admin API's counters.
//!
//! Everything is on 127.0.0.1 with ports chosen by the OS, and every wait is
//! bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any single wait in the suite lasts.
pub const WAIT: Duration = Duration::from_secs(5);

/// Where `/api/stats` is expected to count client errors: ringside's own 4xx
/// for malformed requests and uploads the client abandoned. (Not there
/// today; change it here if the implementation names it otherwise.)
pub const CLIENT_ERRORS: &str = "/responses/client_errors";
/// ringside's own 502s in `/api/stats`.
pub const BAD_GATEWAY: &str = "/responses/bad_gateway_502";
/// Requests a backend failed after taking them, in `/api/stats`.
pub const LOST_IN_FLIGHT: &str = "/lost_in_flight";

// ---------------------------------------------------------------------------
// ringside as a subprocess.

/// A running `ringside --headless`, killed on drop (also when a test panics,
/// in which case the tail of its log is printed).
pub struct Ringside {
    child: Child,
    dir: PathBuf,
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The admin API's address.
    pub admin: SocketAddr,
}

impl Ringside {
    /// Starts ringside in front of `backends` (name, address) with default
    /// settings for the suite.
    pub fn start(backends: &[(&str, SocketAddr)]) -> Ringside {
        Ringside::with_proxy_config(backends, "")
    }

    /// Same, with `proxy_lines` added to the config file's `[proxy]` table
    /// (e.g. `backend_timeout_ms = 500`).
    pub fn with_proxy_config(backends: &[(&str, SocketAddr)], proxy_lines: &str) -> Ringside {
        Ringside::launch(backends, proxy_lines, None)
    }

    /// Same, run with at most `fds` file descriptors (soft and hard limit).
    pub fn with_fd_limit(backends: &[(&str, SocketAddr)], proxy_lines: &str, fds: u32) -> Ringside {
        Ringside::launch(backends, proxy_lines, Some(fds))
    }

    fn launch(backends: &[(&str, SocketAddr)], proxy_lines: &str, fd_limit: Option<u32>) -> Ringside {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringside-conformance-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("ringside.toml");
        std::fs::write(
            &config,
            format!(
                "[health]\ninterval_ms = 250\ntimeout_ms = 1000\n\n[proxy]\nconnect_timeout_ms = 1000\n{proxy_lines}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        if let Ok(reference) = std::env::var("CONFORMANCE_REFERENCE") {
            return start_reference(&reference, backends, proxy_lines, dir, log);
        }
        let mut command = match fd_limit {
            None => Command::new(env!("CARGO_BIN_EXE_ringside")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_ringside"),
                ]);
                c
            }
        };
        command.args([
            "--headless",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--config",
        ]);
        command.arg(&config);
        for (name, addr) in backends {
            command.args(["--backend", &format!("{name}={addr}")]);
        }
        let mut child = command
            .env("RINGSIDE_COOKIE_SECRET", "conformance-secret-conformance-secret-40")
            .env("XDG_STATE_HOME", dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the ringside binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut ringside = Ringside {
            child,
            dir,
            proxy: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ringside prints its addresses within 20 s");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("one JSON line, got {line:?}: {e}"));
        ringside.proxy = v["proxy"].as_str().unwrap().parse().unwrap();
        ringside.admin = v["admin"].as_str().unwrap().parse().unwrap();
        ringside
    }

    /// `GET /api/stats`.
    pub fn stats(&self) -> Value {
        let answer = self.admin_request("GET", "/api/stats");
        assert_eq!(answer.status(), 200, "GET /api/stats: {}", answer.describe());
        serde_json::from_slice(&answer.body).expect("/api/stats is JSON")
    }

    /// A counter of `/api/stats` at a JSON pointer; panics naming it when absent.
    pub fn counter(&self, pointer: &str) -> u64 {
        let stats = self.stats();
        stats
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("/api/stats has no counter at {pointer}: {stats}"))
    }

    /// Waits up to [`WAIT`] for the counter at `pointer` to reach `at_least`;
    /// returns its last value.
    pub fn wait_counter(&self, pointer: &str, at_least: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.counter(pointer);
            if v >= at_least || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// A request to the admin API; panics if it does not answer.
    pub fn admin_request(&self, method: &str, path: &str) -> Message {
        let mut c = Client::connect(self.admin);
        c.send(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.admin
            )
            .as_bytes(),
        );
        c.response()
    }

    /// The last `max` bytes of ringside's log.
    pub fn log_tail(&self, max: usize) -> String {
        let log = std::fs::read(self.dir.join("stderr.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(max)..]).into_owned()
    }
}

impl Drop for Ringside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ringside's log (tail) ---\n{}", self.log_tail(3000));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `CONFORMANCE_REFERENCE=haproxy|nginx`: the suite runs against that proxy
/// instead, to check the tests themselves (configured as in
/// `references.py`; HAProxy also inserts `SERVERID` like ringside). Tests of
/// ringside's admin API cannot pass there.
fn start_reference(
    kind: &str,
    backends: &[(&str, SocketAddr)],
    proxy_lines: &str,
    dir: PathBuf,
    log: std::fs::File,
) -> Ringside {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let timeout = if proxy_lines.contains("backend_timeout_ms = 500") {
        "500ms"
    } else {
        "30s"
    };
    let config = dir.join("reference.conf");
    let mut command = match kind {
        "haproxy" => {
            let servers: String = backends
                .iter()
                .map(|(name, addr)| format!("    server {name} {addr} cookie {name}\n"))
                .collect();
            std::fs::write(
                &config,
                format!(
                    "defaults\n    mode http\n    option forwardfor\n    timeout connect 1s\n    timeout client 10s\n    timeout server {timeout}\n\
                     frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n\
                     backend b\n    cookie SERVERID insert indirect nocache\n{servers}"
                ),
            )
            .unwrap();
            let mut c = Command::new("haproxy");
            c.arg("-db").arg("-f").arg(&config);
            c
        }
        "nginx" => {
            let servers: String = backends.iter().map(|(_, addr)| format!("server {addr}; ")).collect();
            let d = dir.display();
            std::fs::write(
                &config,
                format!(
                    "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
                     events {{ worker_connections 256; }}\n\
                     http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
                     upstream be {{ {servers} }}\n\
                     server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://be; proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\"; proxy_set_header Host $host;\n\
                     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                     proxy_read_timeout {timeout}; proxy_send_timeout {timeout}; }} }} }}\n"
                ),
            )
            .unwrap();
            let mut c = Command::new("nginx");
            c.arg("-p").arg(&dir).arg("-c").arg(&config);
            c
        }
        other => panic!("CONFORMANCE_REFERENCE={other}: use haproxy or nginx"),
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {kind}: {e}"));
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(proxy).is_err() {
        assert!(Instant::now() < deadline, "{kind} did not listen on {proxy}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ringside {
        child,
        dir,
        proxy,
        // No admin API: counters and kills fail, as they should.
        admin: SocketAddr::from(([127, 0, 0, 1], 1)),
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.x messages, parsed from raw bytes.

/// How a message's body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no framing header on a request; 1xx, 204, 304, HEAD answers).
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Read until the connection closed (a response with neither).
    UntilClose,
}

/// One request or response as it was on the wire.
#[derive(Debug, Clone)]
pub struct Message {
    /// The start line, without its line end.
    pub start: String,
    /// Field lines in order: lower-case name, raw value bytes (trimmed).
    pub fields: Vec<(String, Vec<u8>)>,
    /// The head's raw bytes, line ends included.
    pub head: Vec<u8>,
    /// How the body was delimited.
    pub framing: Framing,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Interim (1xx) responses received before this one.
    pub interim: Vec<Message>,
    /// False when the connection closed before the body was complete.
    pub complete: bool,
}

impl Message {
    /// The status code of a response (0 for a request).
    pub fn status(&self) -> u16 {
        self.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The method of a request.
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// The request-target of a request.
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// The protocol version: a request's last word, a response's first.
    pub fn version(&self) -> &str {
        if self.start.starts_with("HTTP/") {
            self.start.split(' ').next().unwrap_or("")
        } else {
            self.start.rsplit(' ').next().unwrap_or("")
        }
    }

    /// Every value of `name` (any case), as raw bytes.
    pub fn all_raw(&self, name: &str) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Every value of `name`, as (lossy) text.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.all_raw(name)
            .into_iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The first value of `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }

    /// True when `name` has a comma-separated member equal to `token` (any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(',').map(|t| t.trim().to_owned()).collect::<Vec<_>>())
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// The trailer `name`, as text.
    pub fn trailer(&self, name: &str) -> Option<String> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A short description for assertion messages: head and body.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for i in &self.interim {
            s.push_str(&String::from_utf8_lossy(&i.head));
        }
        s.push_str(&String::from_utf8_lossy(&self.head));
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
        s.push_str(&format!(
            "[body {:?}: {body:?}{}]",
            self.framing,
            if self.complete { "" } else { " INCOMPLETE" }
        ));
        if !self.trailers.is_empty() {
            s.push_str(&format!(" [trailers {:?}]", self.trailers));
        }
        s
    }
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A whole message, and how many bytes it took.
    Complete(Message, usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a message this parser understands; the reason.
    Invalid(String),
}

/// What kind of message to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request.
    Request,
    /// A response to a request with this method's body rules (`HEAD` has none).
    Response { head_request: bool },
}

/// Parses one message at the start of `buf`. `eof`: no more bytes will come
/// (ends a body delimited by close; an incomplete body is returned with
/// `complete: false`).
pub fn parse(buf: &[u8], kind: Kind, eof: bool) -> Parsed {
    let Some(head_end) = head_end(buf) else {
        return Parsed::Incomplete;
    };
    let head = &buf[..head_end];
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or("").to_owned();
    let mut fields = Vec::new();
    for raw_line in split_lines(head).into_iter().skip(1) {
        if raw_line.is_empty() {
            continue;
        }
        let Some(colon) = raw_line.iter().position(|&b| b == b':') else {
            return Parsed::Invalid(format!(
                "field line without a colon: {:?}",
                String::from_utf8_lossy(raw_line)
            ));
        };
        let name = String::from_utf8_lossy(&raw_line[..colon]).to_ascii_lowercase();
        fields.push((name, trim(&raw_line[colon + 1..]).to_vec()));
    }
    let mut m = Message {
        start,
        fields,
        head: head.to_vec(),
        framing: Framing::None,
        body: Vec::new(),
        trailers: Vec::new(),
        interim: Vec::new(),
        complete: true,
    };
    let status = m.status();
    let bodiless = match kind {
        Kind::Request => false,
        Kind::Response { head_request } => {
            head_request || (100..200).contains(&status) || status == 204 || status == 304
        }
    };
    if bodiless {
        return Parsed::Complete(m, head_end);
    }
    let te = m.all("transfer-encoding").join(",");
    let chunked = te
        .rsplit(',')
        .next()
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
    let rest = &buf[head_end..];
    if chunked {
        m.framing = Framing::Chunked;
        match dechunk(rest) {
            Dechunked::Done { body, trailers, used } => {
                m.body = body;
                m.trailers = trailers;
                Parsed::Complete(m, head_end + used)
            }
            Dechunked::Short { body } if eof => {
                m.body = body;
                m.complete = false;
                Parsed::Complete(m, buf.len())
            }
            Dechunked::Short { .. } => Parsed::Incomplete,
            Dechunked::Bad(why) => Parsed::Invalid(why),
        }
    } else if let Some(cl) = m.header("content-length") {
        let Ok(n) = cl.trim().parse::<usize>() else {
            return Parsed::Invalid(format!("Content-Length {cl:?}"));
        };
        m.framing = Framing::Length(n as u64);
        if rest.len() >= n {
            m.body = rest[..n].to_vec();
            Parsed::Complete(m, head_end + n)
        } else if eof {
            m.body = rest.to_vec();
            m.complete = false;
            Parsed::Complete(m, buf.len())
        } else {
            Parsed::Incomplete
        }
    } else if kind == Kind::Request {
        Parsed::Complete(m, head_end)
    } else if eof {
        m.framing = Framing::UntilClose;
        m.body = rest.to_vec();
        Parsed::Complete(m, buf.len())
    } else {
        Parsed::Incomplete
    }
}

/// Where the head ends (after its empty line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    // Empty lines before a start line are skipped by recipients; so here.
    while buf[i..].starts_with(b"\r\n") {
        i += 2;
    }
    let mut line_start = i;
    while let Some(nl) = buf[line_start..].iter().position(|&b| b == b'\n') {
        let line = &buf[line_start..line_start + nl];
        if (line.is_empty() || line == b"\r") && line_start > i {
            return Some(line_start + nl + 1);
        }
        line_start += nl + 1;
    }
    None
}

fn split_lines(head: &[u8]) -> Vec<&[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

enum Dechunked {
    Done {
        body: Vec<u8>,
        trailers: Vec<(String, Vec<u8>)>,
        used: usize,
    },
    Short {
        body: Vec<u8>,
    },
    Bad(String),
}

/// Decodes a chunked body (CRLF line ends, as a sender must use).
fn dechunk(buf: &[u8]) -> Dechunked {
    let mut body = Vec::new();
    let mut i = 0;
    loop {
        let Some(nl) = find(&buf[i..], b"\r\n") else {
            return Dechunked::Short { body };
        };
        let line = &buf[i..i + nl];
        let size_text = String::from_utf8_lossy(line.split(|&b| b == b';').next().unwrap_or(b""));
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            return Dechunked::Bad(format!("chunk-size line {:?}", String::from_utf8_lossy(line)));
        };
        i += nl + 2;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some(nl) = find(&buf[i..], b"\r\n") else {
                    return Dechunked::Short { body };
                };
                let line = &buf[i..i + nl];
                i += nl + 2;
                if line.is_empty() {
                    return Dechunked::Done {
                        body,
                        trailers,
                        used: i,
                    };
                }
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
                    trailers.push((name, trim(&line[colon + 1..]).to_vec()));
                }
            }
        }
        if buf.len() < i + size + 2 {
            body.extend_from_slice(&buf[i..buf.len().min(i + size)]);
            return Dechunked::Short { body };
        }
        body.extend_from_slice(&buf[i..i + size]);
        if &buf[i + size..i + size + 2] != b"\r\n" {
            return Dechunked::Bad("chunk data not followed by CRLF".into());
        }
        i += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

// ---------------------------------------------------------------------------
// Raw clients.

/// A raw client connection with a read buffer.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Connects to `addr`; every read waits at most [`WAIT`].
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes`; a failed write (the peer closed) is ignored: what was
    /// answered is what the test looks at.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Like [`Client::send`], but reports whether the write went through.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Shuts the write side (a half-close).
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Closes both sides now.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads more bytes; false at end of stream or after [`WAIT`].
    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next final response (interim 1xx ones attached), or why there is none.
    pub fn try_response_to(&mut self, head_request: bool) -> Result<Message, String> {
        let mut interim = Vec::new();
        loop {
            match parse(&self.buf, Kind::Response { head_request }, self.eof) {
                Parsed::Complete(mut m, used) => {
                    self.buf.drain(..used);
                    if (100..200).contains(&m.status()) && m.status() != 101 {
                        interim.push(m);
                        continue;
                    }
                    m.interim = interim;
                    return Ok(m);
                }
                Parsed::Invalid(why) => return Err(format!("{why}; got {:?}", String::from_utf8_lossy(&self.buf))),
                Parsed::Incomplete if self.eof => {
                    return Err(format!(
                        "no (complete) answer: connection closed or silent for {WAIT:?} after {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Parsed::Incomplete => {
                    self.fill();
                }
            }
        }
    }

    /// The next final response; panics when there is none.
    pub fn response(&mut self) -> Message {
        self.try_response_to(false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next final response to a HEAD request; panics when there is none.
    pub fn head_response(&mut self) -> Message {
        self.try_response_to(true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every response until the connection closes (or stays silent for [`WAIT`]).
    pub fn responses_until_close(&mut self) -> Vec<Message> {
        let mut all = Vec::new();
        while let Ok(m) = self.try_response_to(false) {
            all.push(m);
        }
        all
    }

    /// True when the peer closes the connection within `within` (bytes it
    /// still sends are kept for later reads).
    pub fn closes_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let deadline = Instant::now() + within;
        while !self.eof && Instant::now() < deadline {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    break;
                }
                Err(_) => self.eof = true,
            }
        }
        self.stream.set_read_timeout(Some(WAIT)).unwrap();
        self.eof
    }
}

/// Writes `bytes` on a fresh connection and returns every response read
/// until ringside closes it.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<Message> {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.responses_until_close()
}

/// Writes `bytes` on a fresh connection and returns the one response.
pub fn one_response(addr: SocketAddr, bytes: &[u8]) -> Message {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.response()
}

// ---------------------------------------------------------------------------
// The raw recording backend.

/// What the backend does to answer, step by step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Close the connection.
    Close,
}

/// `200 OK` with a `Content-Length` body.
pub fn ok(body: &str) -> Vec<u8> {
    ok_with(body, "")
}

/// `200 OK` with extra header lines (each ending in CRLF) and a body.
pub fn ok_with(body: &str, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len()).into_bytes()
}

type Script = dyn Fn(&Message) -> Vec<Step> + Send + Sync;

/// One connection ringside opened to the backend.
#[derive(Debug, Clone)]
pub struct BackendConn {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// The complete requests parsed from them.
    pub requests: Vec<Message>,
    /// Ringside closed it.
    pub closed: bool,
    /// It carried ringside's health checks (not reported).
    health: bool,
    opened: Instant,
}

#[derive(Default)]
struct Record {
    conns: Vec<BackendConn>,
}

/// A raw TCP backend: records every byte per connection, answers each
/// complete request with the steps its script returns, and answers
/// ringside's health checks (`GET /health`, `User-Agent: ringside-health`)
/// with 200 without recording them.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    record: Arc<(Mutex<Record>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// A backend that answers every request with `answer`'s bytes.
    pub fn answering(answer: Vec<u8>) -> Backend {
        Backend::scripted(move |_| vec![Step::Send(answer.clone())])
    }

    /// A backend that answers every request `200 OK` with `body`.
    pub fn ok(body: &str) -> Backend {
        Backend::answering(ok(body))
    }

    /// A backend that answers `200 OK` with `body` the way uvicorn does:
    /// with a length to HTTP/1.1 requests, but to an HTTP/1.0 one without a
    /// length, `Connection: close`, delimited by closing.
    pub fn like_uvicorn(body: &'static str) -> Backend {
        Backend::scripted(move |req| {
            if req.version() == "HTTP/1.0" {
                let unframed = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}");
                vec![Step::Send(unframed.into_bytes()), Step::Close]
            } else {
                vec![Step::Send(ok(body))]
            }
        })
    }

    /// A backend that answers each request with `script(request)`.
    pub fn scripted(script: impl Fn(&Message) -> Vec<Step> + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new((Mutex::new(Record::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (rec, stopping) = (Arc::clone(&record), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (rec, script) = (Arc::clone(&rec), Arc::clone(&script));
                std::thread::spawn(move || serve(stream, &rec, &*script));
            }
        });
        Backend { addr, record, stop }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connections ringside opened for requests (health checks left
    /// out), once any just-opened one has said what it is for.
    pub fn connections(&self) -> Vec<BackendConn> {
        // A connection with no bytes yet may be a health check about to
        // speak; give such connections a moment to say so.
        let settled = |r: &Record| {
            r.conns
                .iter()
                .all(|c| !c.bytes.is_empty() || c.closed || c.opened.elapsed() > Duration::from_millis(300))
        };
        let (lock, cv) = &*self.record;
        let mut r = lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + Duration::from_millis(400);
        while !settled(&r) && Instant::now() < deadline {
            r = cv
                .wait_timeout(r, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        r.conns.iter().filter(|c| !c.health).cloned().collect()
    }

    /// Every complete request received, in order of connection then arrival.
    pub fn requests(&self) -> Vec<Message> {
        self.connections().into_iter().flat_map(|c| c.requests).collect()
    }

    /// The only request received; panics naming what was received otherwise.
    pub fn only_request(&self) -> Message {
        let conns = self.connections();
        let requests: Vec<Message> = conns.iter().flat_map(|c| c.requests.clone()).collect();
        assert_eq!(
            requests.len(),
            1,
            "the backend should have received exactly one request; it received {}",
            describe_conns(&conns)
        );
        requests.into_iter().next().unwrap()
    }

    /// Waits up to [`WAIT`] for `n` complete requests; returns them.
    pub fn wait_requests(&self, n: usize) -> Vec<Message> {
        self.wait_until(|conns| conns.iter().map(|c| c.requests.len()).sum::<usize>() >= n);
        self.requests()
    }

    /// Waits up to [`WAIT`] for `check` to hold on the request connections;
    /// returns whether it did.
    pub fn wait_until(&self, check: impl Fn(&[BackendConn]) -> bool) -> bool {
        self.wait_until_within(WAIT, check)
    }

    /// Waits up to `within` for `check` to hold on the request connections;
    /// returns whether it did.
    pub fn wait_until_within(&self, within: Duration, check: impl Fn(&[BackendConn]) -> bool) -> bool {
        let (lock, cv) = &*self.record;
        let mut r = lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + within;
        loop {
            let conns: Vec<BackendConn> = r.conns.iter().filter(|c| !c.health).cloned().collect();
            if check(&conns) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            r = cv.wait_timeout(r, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Asserts that ringside opened no connection for a request.
    pub fn assert_untouched(&self, what: &str) {
        let conns = self.connections();
        assert!(
            conns.is_empty(),
            "{what}: the backend should have seen no connection; it saw {}",
            describe_conns(&conns)
        );
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// The connections as text, for assertion messages.
pub fn describe_conns(conns: &[BackendConn]) -> String {
    if conns.is_empty() {
        return "no connection".into();
    }
    conns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let shown = &c.bytes[..c.bytes.len().min(600)];
            format!(
                "\n  connection {i} ({} bytes{}): {:?}",
                c.bytes.len(),
                if c.closed { ", closed" } else { "" },
                String::from_utf8_lossy(shown)
            )
        })
        .collect()
}

fn is_health_check(m: &Message) -> bool {
    m.target() == "/health" && m.header("user-agent").is_some_and(|ua| ua == "ringside-health")
}

/// One backend connection: read, record, answer.
fn serve(mut stream: TcpStream, record: &(Mutex<Record>, Condvar), script: &Script) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let (lock, cv) = record;
    let index = {
        let mut r = lock.lock().unwrap_or_else(|e| e.into_inner());
        r.conns.push(BackendConn {
            bytes: Vec::new(),
            requests: Vec::new(),
            closed: false,
            health: false,
            opened: Instant::now(),
        });
        cv.notify_all();
        r.conns.len() - 1
    };
    let update = |f: &mut dyn FnMut(&mut BackendConn)| {
        let mut r = lock.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r.conns[index]);
        cv.notify_all();
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut parsing = true;
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            update(&mut |c| c.closed = true);
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        // A health check is told apart in the same step that records its
        // bytes, so no reader ever counts it as a request connection.
        let health = matches!(parse(&buf, Kind::Request, false), Parsed::Complete(m, _) if is_health_check(&m));
        update(&mut |c| {
            c.bytes.extend_from_slice(&chunk[..n]);
            c.health |= health && c.requests.is_empty();
        });
        while parsing {
            match parse(&buf, Kind::Request, false) {
                Parsed::Complete(m, used) => {
                    buf.drain(..used);
                    if is_health_check(&m) {
                        update(&mut |c| c.health = true);
                        let _ =
                            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                        return;
                    }
                    update(&mut |c| c.requests.push(m.clone()));
                    for step in script(&m) {
                        match step {
                            Step::Send(bytes) => {
                                if stream.write_all(&bytes).is_err() {
                                    break;
                                }
                            }
                            Step::Sleep(d) => std::thread::sleep(d),
                            Step::Close => {
                                let _ = stream.shutdown(Shutdown::Both);
                                update(&mut |c| c.closed = true);
                                return;
                            }
                        }
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Invalid(_) => parsing = false,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// External clients.

/// True when `program` can be run; otherwise says the test is skipped, or
/// fails under `CI` (where `.ci/run` installs it).
pub fn tool_available(program: &str, version_arg: &str, package: &str) -> bool {
    if Command::new(program).arg(version_arg).output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is required under CI (.ci/run installs {package})"
    );
    eprintln!("skipped: {program} is not installed ({package})");
    false
}

/// Runs `command` to completion within `within`; returns its stdout.
pub fn run_bounded(command: &mut Command, within: Duration) -> String {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap()
}
