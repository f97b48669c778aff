//! Conformance with RFC 9110/9111/9112 and RFC 6265 where real clients and
//! servers depend on it (issue #16), over real sockets: the built binary in
//! front of a raw recording backend, driven by raw clients. Each test asserts
//! both what the backend received and what the client got; each is named by
//! the RFC section it checks. `tests/conformance/REFERENCES.md` has what
//! HAProxy 2.6 and nginx 1.22 do with the same bytes;
//! `CONFORMANCE_REFERENCE=haproxy` (or `nginx`) runs the suite against one.

#[path = "conformance/support.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    BAD_GATEWAY, Backend, CLIENT_ERRORS, Client, Framing, LOST_IN_FLIGHT, Message, Ringside, Step, contains,
    describe_conns, exchange, ok, ok_with, one_response, run_bounded, tool_available,
};

/// A GET closing the connection after its answer.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `head` (lines ending in CRLF, no empty line) then `body`.
fn request(head: &str, body: &[u8]) -> Vec<u8> {
    [head.as_bytes(), b"\r\n", body].concat()
}

/// One backend, one ringside in front of it.
fn setup(backend: Backend) -> (Backend, Ringside) {
    let ringside = Ringside::start(&[("app", backend.addr)]);
    (backend, ringside)
}

/// The status and the whole answer, for messages.
fn status_of(m: &Message) -> (u16, String) {
    (m.status(), m.describe())
}

// ---------------------------------------------------------------------------
// Item 1: timeouts count inactivity only (RFC 9112 §9.5).

/// `backend_timeout_ms = 500` for the timeout tests.
const SHORT_TIMEOUT: &str = "backend_timeout_ms = 500";

#[test]
fn rfc9112_9_5_a_steady_upload_longer_than_the_backend_timeout_succeeds() {
    let backend = Backend::ok("got it");
    let ringside = Ringside::with_proxy_config(&[("app", backend.addr)], SHORT_TIMEOUT);
    let (piece, pieces) = (4096, 15);
    let mut c = Client::connect(ringside.proxy);
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            piece * pieces
        )
        .as_bytes(),
    );
    // ~1.5 s of steady upload, never idle for longer than 100 ms.
    for _ in 0..pieces {
        std::thread::sleep(Duration::from_millis(100));
        c.send(&vec![b'u'; piece]);
    }
    let answer = c.response();
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert_eq!(answer.text(), "got it");
    let got = backend.only_request();
    assert_eq!(got.body.len(), piece * pieces, "the whole upload reached the backend");
}

#[test]
fn rfc9112_9_5_a_backend_silent_past_the_timeout_is_504() {
    let backend = Backend::scripted(|_| vec![Step::Sleep(Duration::from_secs(3)), Step::Send(ok("late"))]);
    let ringside = Ringside::with_proxy_config(&[("app", backend.addr)], SHORT_TIMEOUT);
    let started = Instant::now();
    let answer = one_response(ringside.proxy, &get("/silent"));
    assert_eq!(answer.status(), 504, "{}", answer.describe());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(backend.only_request().target(), "/silent");
}

#[test]
fn rfc9112_9_5_a_slow_steady_download_longer_than_the_timeout_completes() {
    let backend = Backend::scripted(|_| {
        let mut steps = vec![Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n".to_vec())];
        for _ in 0..15 {
            steps.push(Step::Sleep(Duration::from_millis(100)));
            steps.push(Step::Send(b"d".to_vec()));
        }
        steps
    });
    let ringside = Ringside::with_proxy_config(&[("app", backend.addr)], SHORT_TIMEOUT);
    let answer = one_response(ringside.proxy, &get("/download"));
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert!(answer.complete, "{}", answer.describe());
    assert_eq!(answer.text(), "d".repeat(15));
}

#[test]
fn rfc9112_9_5_a_response_body_stalled_past_the_timeout_is_cut() {
    let backend = Backend::scripted(|_| {
        vec![
            Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
            Step::Sleep(Duration::from_secs(4)),
            Step::Send(b"defghij".to_vec()),
        ]
    });
    let ringside = Ringside::with_proxy_config(&[("app", backend.addr)], SHORT_TIMEOUT);
    let mut c = Client::connect(ringside.proxy);
    c.send(&get("/stall"));
    let started = Instant::now();
    let closed = c.closes_within(Duration::from_secs(3));
    assert!(
        closed,
        "a body idle for 3 s past a 500 ms inactivity timeout should have been cut (waited {:?})",
        started.elapsed()
    );
    let answer = c.response();
    assert!(!answer.complete, "the cut answer is short: {}", answer.describe());
}

// ---------------------------------------------------------------------------
// Item 2: cookies are bytes; only the balancer's cookie is removed
// (RFC 6265 §5.4; §4.2.1 for the `; ` separator clients send).

/// Two backends that name themselves in `X-Backend`.
fn two_named_backends(extra: &'static str) -> (Backend, Backend) {
    let named = |name: &'static str| {
        Backend::scripted(move |_| vec![Step::Send(ok_with(name, &format!("X-Backend: {name}\r\n{extra}")))])
    };
    (named("a"), named("b"))
}

/// The balancer cookie's `NAME=value` from a first answer.
fn balancer_cookie(answer: &Message) -> String {
    let set = answer
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("SERVERID="))
        .unwrap_or_else(|| panic!("a first request gets the balancer cookie: {}", answer.describe()));
    set.split(';').next().unwrap().to_owned()
}

#[test]
fn rfc6265_5_4_a_non_ascii_cookie_keeps_the_session_and_is_passed_as_bytes() {
    let (a, b) = two_named_backends("");
    let ringside = Ringside::start(&[("a", a.addr), ("b", b.addr)]);
    let first = one_response(ringside.proxy, &get("/"));
    assert_eq!(first.status(), 200, "{}", first.describe());
    let session = balancer_cookie(&first);
    let home = first.text();
    for i in 0..4 {
        let req = [
            b"GET /again HTTP/1.1\r\nHost: app.example\r\nCookie: city=Z\xc3\xbcrich; ".as_slice(),
            session.as_bytes(),
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        let answer = one_response(ringside.proxy, &req);
        assert_eq!(answer.status(), 200, "{}", answer.describe());
        assert!(
            answer.all("set-cookie").is_empty(),
            "request {i}: the session was read, so no new cookie: {}",
            answer.describe()
        );
        assert_eq!(answer.text(), home, "request {i}: the session stays on backend {home}");
    }
    let home_backend = if home == "a" { &a } else { &b };
    for got in home_backend.requests().iter().filter(|r| r.target() == "/again") {
        assert_eq!(
            got.all_raw("cookie"),
            vec![b"city=Z\xc3\xbcrich".as_slice()],
            "the balancer cookie is stripped, the rest passed byte for byte: {}",
            String::from_utf8_lossy(&got.head)
        );
    }
}

#[test]
fn rfc6265_5_4_only_the_balancer_cookie_is_removed_the_rest_byte_for_byte() {
    let (backend, ringside) = setup(Backend::ok("c"));
    let session = balancer_cookie(&one_response(ringside.proxy, &get("/")));
    let cases = [
        (format!("a=1;b=2; {session}"), "a=1;b=2"),
        (format!("{session}; a=1;b=2"), "a=1;b=2"),
    ];
    for (i, (sent, expected)) in cases.iter().enumerate() {
        let req = format!("GET /c{i} HTTP/1.1\r\nHost: app.example\r\nCookie: {sent}\r\nConnection: close\r\n\r\n");
        let answer = one_response(ringside.proxy, req.as_bytes());
        assert_eq!(answer.status(), 200, "{}", answer.describe());
        let got = backend
            .requests()
            .into_iter()
            .find(|r| r.target() == format!("/c{i}"))
            .expect("the request reached the backend");
        assert_eq!(
            got.all("cookie"),
            vec![expected.to_owned()],
            "Cookie: {sent:?} should reach the backend as {expected:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Item 3: an answer with both framing headers loses its length (RFC 9112 §6.3).

#[test]
fn rfc9112_6_3_response_with_length_and_chunked_loses_the_length() {
    let (backend, ringside) = setup(Backend::answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
    ));
    let answer = one_response(ringside.proxy, &get("/"));
    backend.only_request();
    if answer.status() == 502 {
        return;
    }
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert!(
        answer.all("content-length").is_empty(),
        "the stale Content-Length must go (or 502): {}",
        answer.describe()
    );
    assert!(answer.complete, "{}", answer.describe());
    assert_eq!(answer.text(), "hello");
}

// ---------------------------------------------------------------------------
// Item 4: Host (RFC 9112 §3.2, §3.2.2).

/// Sends `bytes`, expects 400 and no backend connection.
fn refused_400(bytes: &[u8], what: &str) {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answers = exchange(ringside.proxy, bytes);
    let statuses: Vec<(u16, String)> = answers.iter().map(status_of).collect();
    assert_eq!(
        answers.first().map(Message::status),
        Some(400),
        "{what}: answers {statuses:?}; backend saw {}",
        describe_conns(&backend.connections())
    );
    backend.assert_untouched(what);
}

#[test]
fn rfc9112_3_2_two_host_fields_are_400() {
    refused_400(
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "two Host fields",
    );
}

#[test]
fn rfc9112_3_2_a_missing_host_on_http11_is_400() {
    refused_400(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "no Host");
}

#[test]
fn rfc9112_3_2_a_host_with_a_space_is_400() {
    refused_400(b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n", "Host: a b");
}

#[test]
fn rfc9112_3_2_a_host_with_a_path_and_userinfo_is_400() {
    refused_400(
        b"GET / HTTP/1.1\r\nHost: evil.com/x@a\r\nConnection: close\r\n\r\n",
        "Host: evil.com/x@a",
    );
}

#[test]
fn rfc9112_3_2_connection_naming_host_cannot_remove_it() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(
        ringside.proxy,
        b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: host, close\r\n\r\n",
    );
    if answer.status() == 400 {
        backend.assert_untouched("Connection: host");
        return;
    }
    assert_eq!(
        answer.status(),
        200,
        "400, or forwarded with its Host: {}",
        answer.describe()
    );
    let got = backend.only_request();
    assert_eq!(
        got.all("host"),
        vec!["app.example"],
        "Host is end-to-end; `Connection: host` must not delete it: {}",
        String::from_utf8_lossy(&got.head)
    );
}

#[test]
fn rfc9112_3_2_2_an_absolute_form_authority_replaces_host() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(
        ringside.proxy,
        b"GET http://origin.example/p?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    let got = backend.only_request();
    assert_eq!(got.start, "GET /p?q=1 HTTP/1.1", "forwarded in origin-form");
    assert_eq!(
        got.all("host"),
        vec!["origin.example"],
        "the target's authority replaces Host: {}",
        String::from_utf8_lossy(&got.head)
    );
}

// ---------------------------------------------------------------------------
// Item 5: GET and HEAD keep a chunked body (RFC 9110 §9.3.1, §9.3.2;
// RFC 9112 §6.1).

fn chunked_body_is_forwarded(method: &str) {
    let (backend, ringside) = setup(Backend::answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
    ));
    let mut c = Client::connect(ringside.proxy);
    c.send(&request(
        &format!("{method} /b HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"),
        b"5\r\nhello\r\n0\r\n\r\n",
    ));
    let answer = if method == "HEAD" {
        c.head_response()
    } else {
        c.response()
    };
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    let got = backend.only_request();
    assert!(
        matches!(got.framing, Framing::Chunked | Framing::Length(5)),
        "{method}: the body keeps a framing: {}",
        String::from_utf8_lossy(&got.head)
    );
    assert_eq!(got.body, b"hello", "{method}: the body reaches the backend");
}

#[test]
fn rfc9110_9_3_1_a_get_with_a_chunked_body_is_forwarded_with_it() {
    chunked_body_is_forwarded("GET");
}

#[test]
fn rfc9110_9_3_2_a_head_with_a_chunked_body_is_forwarded_with_it() {
    chunked_body_is_forwarded("HEAD");
}

// ---------------------------------------------------------------------------
// Item 6: HTTP/1.0 clients (RFC 9112 §9.3, RFC 9110 §2.5, §6.2).

#[test]
fn rfc9112_9_3_an_http10_keep_alive_client_keeps_its_connection() {
    let (backend, ringside) = setup(Backend::like_uvicorn("ten"));
    let mut c = Client::connect(ringside.proxy);
    for path in ["/a", "/b"] {
        c.send(format!("GET {path} HTTP/1.0\r\nHost: app.example\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let answer = c
            .try_response_to(false)
            .unwrap_or_else(|e| panic!("{path} on the kept-alive connection: {e}"));
        assert_eq!(answer.status(), 200, "{}", answer.describe());
        assert_eq!(answer.version(), "HTTP/1.1", "ringside answers with its own version");
        assert!(
            answer.has_token("connection", "keep-alive"),
            "a 1.0 client is told the connection stays open: {}",
            answer.describe()
        );
        assert_eq!(answer.framing, Framing::Length(3), "{}", answer.describe());
        assert_eq!(answer.text(), "ten");
    }
    assert_eq!(backend.requests().len(), 2);
}

#[test]
fn rfc9112_9_3_an_http10_client_never_gets_chunked() {
    let (backend, ringside) = setup(Backend::answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
    ));
    let mut c = Client::connect(ringside.proxy);
    c.send(b"GET / HTTP/1.0\r\nHost: app.example\r\nConnection: keep-alive\r\n\r\n");
    let answer = c.response();
    backend.only_request();
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert!(
        answer.all("transfer-encoding").is_empty(),
        "RFC 9112 §6.1: no Transfer-Encoding to a 1.0 client: {}",
        answer.describe()
    );
    assert!(answer.complete, "{}", answer.describe());
    assert_eq!(answer.text(), "hello");
    if answer.framing == Framing::UntilClose {
        assert!(
            !answer.has_token("connection", "keep-alive"),
            "a body delimited by closing cannot promise keep-alive: {}",
            answer.describe()
        );
    }
}

#[test]
fn rfc9110_2_5_an_http10_request_reaches_the_backend_as_http11() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(ringside.proxy, b"GET /old HTTP/1.0\r\nHost: app.example\r\n\r\n");
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    let got = backend.only_request();
    assert_eq!(got.start, "GET /old HTTP/1.1", "ringside speaks HTTP/1.1 to backends");
    assert_eq!(got.all("host"), vec!["app.example"]);
}

#[test]
fn rfc9112_9_3_ab_keep_alive_keeps_every_request() {
    if !tool_available("ab", "-V", "apache2-utils") {
        return;
    }
    // Behind a backend that answers HTTP/1.0 requests unframed, as uvicorn does.
    let (_backend, ringside) = setup(Backend::like_uvicorn("ab"));
    let out = run_bounded(
        Command::new("ab").args([
            "-k",
            "-n",
            "500",
            "-c",
            "1",
            "-s",
            "5",
            &format!("http://{}/ab", ringside.proxy),
        ]),
        Duration::from_secs(40),
    );
    let field = |name: &str| -> u64 {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ab printed no {name:?}: {out}"))
    };
    let got = (
        field("Complete requests:"),
        field("Failed requests:"),
        field("Keep-Alive requests:"),
    );
    assert_eq!(
        got,
        (500, 0, 500),
        "(complete, failed, kept alive) of ab -k -n 500 -c 1; nginx: (500, 0, 500)"
    );
}

// ---------------------------------------------------------------------------
// Item 7: transfer codings ringside does not apply (RFC 9112 §6.1, §7).

/// `gzip` of "hello" (mtime 0).
const GZIP_HELLO: [u8; 25] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x86, 0xa6,
    0x10, 0x36, 0x05, 0x00, 0x00, 0x00,
];

#[test]
fn rfc9112_6_1_a_request_with_an_unknown_coding_is_501() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let body = [
        format!("{:x}\r\n", GZIP_HELLO.len()).as_bytes(),
        &GZIP_HELLO,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let answers = exchange(
        ringside.proxy,
        &request(
            "POST /z HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n",
            &body,
        ),
    );
    let statuses: Vec<(u16, String)> = answers.iter().map(status_of).collect();
    assert_eq!(
        answers.first().map(Message::status),
        Some(501),
        "a coding ringside does not apply is 501 (nginx; HAProxy 422): {statuses:?}"
    );
    backend.assert_untouched("Transfer-Encoding: gzip, chunked");
}

#[test]
fn rfc9112_6_1_an_answer_with_an_unknown_coding_still_says_so() {
    let backend = Backend::answering(
        [
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n",
                GZIP_HELLO.len()
            )
            .as_bytes(),
            &GZIP_HELLO,
            b"\r\n0\r\n\r\n",
        ]
        .concat(),
    );
    let (_backend, ringside) = setup(backend);
    let answer = one_response(ringside.proxy, &get("/z"));
    if answer.status() == 502 {
        return;
    }
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    let says_gzip = answer.has_token("transfer-encoding", "gzip") || answer.has_token("content-encoding", "gzip");
    assert!(
        answer.body == GZIP_HELLO && says_gzip || answer.text() == "hello",
        "gzip bytes must come with a header saying gzip (or be decoded, or 502): {}",
        answer.describe()
    );
}

// ---------------------------------------------------------------------------
// Item 8: client errors are the client's (RFC 9112 §7.1, §8).

/// The counters a client error must leave alone, and the one it must move.
fn assert_counted_as_client_error(ringside: &Ringside, what: &str) {
    assert_eq!(ringside.counter(BAD_GATEWAY), 0, "{what}: not a 502 of ringside's");
    assert_eq!(
        ringside.counter(LOST_IN_FLIGHT),
        0,
        "{what}: nothing was lost in flight"
    );
    assert!(
        ringside.wait_counter(CLIENT_ERRORS, 1) >= 1,
        "{what}: counted as a client error at {CLIENT_ERRORS}"
    );
}

fn bad_chunked_body(body: &[u8], what: &str) {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answers = exchange(
        ringside.proxy,
        &request(
            "POST /p HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
            body,
        ),
    );
    let statuses: Vec<(u16, String)> = answers.iter().map(status_of).collect();
    assert_eq!(
        answers.first().map(Message::status),
        Some(400),
        "{what}: answers {statuses:?}; backend saw {}",
        describe_conns(&backend.connections())
    );
    backend.assert_untouched(what);
    assert_counted_as_client_error(&ringside, what);
}

#[test]
fn rfc9112_7_1_a_bad_chunk_size_is_400_and_a_client_error() {
    bad_chunked_body(b"zz\r\nhello\r\n0\r\n\r\n", "chunk size zz");
}

#[test]
fn rfc9112_7_1_a_bare_lf_after_chunk_data_is_400_and_a_client_error() {
    bad_chunked_body(b"5\r\nhello\n0\r\n\r\n", "bare LF after chunk data");
}

#[test]
fn rfc9112_8_a_client_abandoning_its_upload_is_a_client_error() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let mut c = Client::connect(ringside.proxy);
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 1000\r\n\r\n0123456789");
    // Let the head reach the backend if ringside streams uploads (HAProxy
    // does; nginx buffers them and never connects): either is fine.
    backend.wait_until_within(Duration::from_secs(1), |conns| {
        conns.iter().any(|c| contains(&c.bytes, b"\r\n\r\n"))
    });
    c.close();
    assert!(
        backend.wait_until(|conns| conns.iter().all(|c| c.closed)),
        "the backend's connection for the abandoned upload is closed: {}",
        describe_conns(&backend.connections())
    );
    assert!(
        backend.requests().is_empty(),
        "no complete request reached the backend: {}",
        describe_conns(&backend.connections())
    );
    assert_counted_as_client_error(&ringside, "an abandoned upload");
}

// ---------------------------------------------------------------------------
// Item 9: Content-Length with Transfer-Encoding is never forwarded
// (RFC 9112 §6.3 item 3, §11.2).

/// The smuggling attempt: both framing headers, after `before` on the same
/// connection. Asserts it is answered 400 and never reaches the backend.
fn smuggled_after(before: &[u8], smuggle_head: &str, what: &str) {
    let (backend, ringside) = setup(Backend::ok("x"));
    let bytes = [before, &request(smuggle_head, b"0\r\n\r\nX")].concat();
    let answers = exchange(ringside.proxy, &bytes);
    let statuses: Vec<(u16, String)> = answers.iter().map(status_of).collect();
    assert_eq!(answers.last().map(Message::status), Some(400), "{what}: {statuses:?}");
    let conns = backend.connections();
    assert!(
        !conns.iter().any(|c| contains(&c.bytes, b"/smuggled")),
        "{what}: the request with both framing headers reached the backend: {}",
        describe_conns(&conns)
    );
}

const SMUGGLE: &str = "POST /smuggled HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n";

#[test]
fn rfc9112_6_3_length_and_chunked_after_an_upgrade_header_are_refused() {
    smuggled_after(
        b"GET /u HTTP/1.1\r\nHost: app.example\r\nUpgrade: foo\r\n\r\n",
        SMUGGLE,
        "after a request with Upgrade",
    );
}

#[test]
fn rfc9112_6_3_length_and_a_long_transfer_encoding_line_are_refused() {
    let head = format!(
        "POST /smuggled HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nTransfer-Encoding:{}chunked\r\nConnection: close\r\n",
        " ".repeat(300)
    );
    smuggled_after(b"", &head, "a 300-byte Transfer-Encoding line");
}

#[test]
fn rfc9112_6_3_a_long_content_length_line_and_chunked_are_refused() {
    let head = format!(
        "POST /smuggled HTTP/1.1\r\nHost: app.example\r\nContent-Length:{}5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
        " ".repeat(300)
    );
    smuggled_after(b"", &head, "a 300-byte Content-Length line");
}

#[test]
fn rfc9112_6_3_length_and_chunked_after_a_long_chunk_extension_are_refused() {
    let before = request(
        "POST /e HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n",
        format!("1;e={}\r\nx\r\n0\r\n\r\n", "a".repeat(300)).as_bytes(),
    );
    smuggled_after(&before, SMUGGLE, "after a 300-byte chunk extension");
}

#[test]
fn rfc9112_6_3_length_and_chunked_after_a_long_chunk_size_line_are_refused() {
    let before = request(
        "POST /e HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n",
        format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(300)).as_bytes(),
    );
    smuggled_after(&before, SMUGGLE, "after a 300-byte chunk-size line");
}

// ---------------------------------------------------------------------------
// Item 10: an answer that sets the balancer cookie is private
// (RFC 9111 §5.2.2.7; HAProxy's `cookie … nocache`).

fn assert_private(answer: &Message, what: &str) {
    assert!(
        answer.all("set-cookie").iter().any(|c| c.starts_with("SERVERID=")),
        "{what}: the answer sets the balancer cookie: {}",
        answer.describe()
    );
    assert!(
        answer.has_token("cache-control", "private"),
        "{what}: an answer carrying a session cookie must not be stored by shared caches: {}",
        answer.describe()
    );
}

#[test]
fn rfc9111_5_2_2_7_a_new_session_answer_marked_public_becomes_private() {
    let (_backend, ringside) = setup(Backend::answering(ok_with(
        "x",
        "Cache-Control: public, max-age=60\r\n",
    )));
    let answer = one_response(ringside.proxy, &get("/"));
    assert_private(&answer, "Cache-Control: public");
}

#[test]
fn rfc9111_5_2_2_7_a_new_session_answer_without_cache_control_becomes_private() {
    let (_backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(ringside.proxy, &get("/"));
    assert_private(&answer, "no Cache-Control");
}

#[test]
fn rfc9111_5_2_2_7_a_moved_session_answer_becomes_private() {
    let (a, b) = two_named_backends("Cache-Control: public, max-age=60\r\n");
    let ringside = Ringside::start(&[("a", a.addr), ("b", b.addr)]);
    let first = one_response(ringside.proxy, &get("/"));
    let session = balancer_cookie(&first);
    let home = first.text();
    let killed = ringside.admin_request("POST", &format!("/api/backends/{home}/kill"));
    assert!(killed.status() < 300, "kill {home}: {}", killed.describe());
    let req = format!("GET / HTTP/1.1\r\nHost: app.example\r\nCookie: {session}\r\nConnection: close\r\n\r\n");
    let moved = one_response(ringside.proxy, req.as_bytes());
    assert_eq!(moved.status(), 200, "{}", moved.describe());
    assert_ne!(moved.text(), home, "the session moved off the killed backend");
    assert_private(&moved, "a moved session");
}

#[test]
fn rfc9111_5_2_2_7_an_answer_that_sets_no_cookie_keeps_its_cache_control() {
    let (_backend, ringside) = setup(Backend::answering(ok_with(
        "x",
        "Cache-Control: public, max-age=60\r\n",
    )));
    let session = balancer_cookie(&one_response(ringside.proxy, &get("/")));
    let req = format!("GET / HTTP/1.1\r\nHost: app.example\r\nCookie: {session}\r\nConnection: close\r\n\r\n");
    let answer = one_response(ringside.proxy, req.as_bytes());
    assert!(answer.all("set-cookie").is_empty(), "{}", answer.describe());
    assert_eq!(
        answer.all("cache-control"),
        vec!["public, max-age=60"],
        "{}",
        answer.describe()
    );
}

// ---------------------------------------------------------------------------
// Item 11: request-target forms (RFC 9112 §3.2.3, §3.2.4; RFC 9110 §9.3.6).

#[test]
fn rfc9110_9_3_6_connect_is_405() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answers = exchange(
        ringside.proxy,
        b"CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443\r\n\r\n",
    );
    let statuses: Vec<(u16, String)> = answers.iter().map(status_of).collect();
    assert_eq!(
        answers.first().map(Message::status),
        Some(405),
        "answers {statuses:?}; backend saw {}",
        describe_conns(&backend.connections())
    );
    backend.assert_untouched("CONNECT");
}

#[test]
fn rfc9112_3_2_3_an_authority_form_target_with_get_is_400() {
    refused_400(
        b"GET origin.example:80 HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
        "GET origin.example:80",
    );
}

#[test]
fn rfc9112_3_2_4_an_asterisk_target_with_get_is_400() {
    refused_400(
        b"GET * HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
        "GET *",
    );
}

#[test]
fn rfc9112_3_2_4_options_asterisk_is_forwarded() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(
        ringside.proxy,
        b"OPTIONS * HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert_eq!(backend.only_request().start, "OPTIONS * HTTP/1.1");
}

// ---------------------------------------------------------------------------
// Item 12: every X-Forwarded-For hop is kept (RFC 9110 §5.3: field lines of
// one name are one list, in order).

#[test]
fn rfc9110_5_3_every_x_forwarded_for_line_is_kept() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(
        ringside.proxy,
        b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    let got = backend.only_request();
    assert_eq!(
        got.all("x-forwarded-for").join(", "),
        "192.0.2.1, 192.0.2.2, 127.0.0.1",
        "{}",
        String::from_utf8_lossy(&got.head)
    );
}

// ---------------------------------------------------------------------------
// Item 13: trailers and 1xx answers are relayed (RFC 9110 §6.5, §10.1.4,
// §15.2; RFC 8297).

const WITH_TRAILER: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n";

#[test]
fn rfc9110_6_5_trailers_reach_a_client_that_sent_te_trailers() {
    let (backend, ringside) = setup(Backend::answering(WITH_TRAILER.to_vec()));
    let answer = one_response(
        ringside.proxy,
        b"GET / HTTP/1.1\r\nHost: app.example\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    backend.only_request();
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert_eq!(answer.text(), "hello");
    assert_eq!(
        answer.trailer("x-checksum").as_deref(),
        Some("abc"),
        "the trailer is relayed: {}",
        answer.describe()
    );
}

#[test]
fn rfc9110_10_1_4_te_trailers_is_passed_to_the_backend() {
    let (backend, ringside) = setup(Backend::answering(WITH_TRAILER.to_vec()));
    one_response(
        ringside.proxy,
        b"GET / HTTP/1.1\r\nHost: app.example\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    let got = backend.only_request();
    assert!(
        got.has_token("te", "trailers"),
        "backends (gRPC and the like) send trailers only when told the client takes them: {}",
        String::from_utf8_lossy(&got.head)
    );
}

#[test]
fn rfc9110_15_2_103_early_hints_is_relayed() {
    let (_backend, ringside) = setup(Backend::answering(
        [
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n".as_slice(),
            &ok("x"),
        ]
        .concat(),
    ));
    let answer = one_response(ringside.proxy, &get("/"));
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert_eq!(answer.text(), "x");
    let hints: Vec<&Message> = answer.interim.iter().filter(|m| m.status() == 103).collect();
    assert_eq!(
        hints.len(),
        1,
        "the 103 is relayed before the 200: {}",
        answer.describe()
    );
    assert_eq!(hints[0].all("link"), vec!["</s.css>; rel=preload"]);
}

// ---------------------------------------------------------------------------
// Item 14: a higher minor version is served as HTTP/1.1 (RFC 9110 §6.2, §2.5).

#[test]
fn rfc9110_6_2_http_1_2_is_served_as_1_1() {
    let (backend, ringside) = setup(Backend::ok("x"));
    let answer = one_response(
        ringside.proxy,
        b"GET / HTTP/1.2\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert_eq!(answer.version(), "HTTP/1.1");
    assert_eq!(backend.only_request().start, "GET / HTTP/1.1");
}

// ---------------------------------------------------------------------------
// Item 15: a half-closed client still gets its answer (RFC 9112 §9.6).

#[test]
fn rfc9112_9_6_a_half_closed_client_gets_its_answer() {
    let (backend, ringside) = setup(Backend::ok("half"));
    let mut c = Client::connect(ringside.proxy);
    c.send(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n");
    c.shutdown_write();
    let answer = c.try_response_to(false).unwrap_or_else(|e| {
        panic!(
            "a complete request followed by a half-close is answered: {e}; backend saw {}",
            describe_conns(&backend.connections())
        )
    });
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    assert_eq!(answer.text(), "half");
    assert_eq!(backend.only_request().target(), "/");
}

/// HAProxy 2.6 forwards the fields `Connection` names and `Keep-Alive`;
/// nginx 1.22 drops `Connection` and `Keep-Alive` but forwards the named
/// fields (case 4g of REFERENCES.md). They disagree, and RFC 9110 §7.6.1
/// says a proxy removes every field its `Connection` names: ringside does,
/// both ways, and keeps every other field.
#[test]
fn rfc9110_7_6_1_fields_connection_names_go_both_ways_the_rest_stays() {
    let (backend, ringside) = setup(Backend::answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: X-Resp\r\nX-Resp: r\r\nKeep-Alive: timeout=9\r\nX-Kept: k\r\n\r\nx"
            .to_vec(),
    ));
    let answer = one_response(
        ringside.proxy,
        b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: k\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer.status(), 200, "{}", answer.describe());
    let got = backend.only_request();
    for gone in ["x-private", "keep-alive", "proxy-connection"] {
        assert!(got.all(gone).is_empty(), "{gone} forwarded: {}", got.describe());
    }
    assert!(!got.has_token("connection", "x-private"), "{}", got.describe());
    assert_eq!(got.all("x-kept"), vec!["k"], "{}", got.describe());
    assert_eq!(got.all("host"), vec!["app.example"], "{}", got.describe());
    for gone in ["x-resp", "keep-alive"] {
        assert!(answer.all(gone).is_empty(), "{gone} relayed: {}", answer.describe());
    }
    assert!(!answer.has_token("connection", "x-resp"), "{}", answer.describe());
    assert_eq!(answer.all("x-kept"), vec!["k"], "{}", answer.describe());
    assert_eq!(answer.text(), "x");
}
