//! The admin API as a web page, a rebinding attacker or a careless script
//! would use it, over real sockets: cross-site and foreign-Host requests are
//! refused with nothing changed, session keys are never shown, every bad
//! parameter is a clear 400 (404, 409), no input gets anything but an HTTP
//! answer, loops are refused, event streams are capped and end at shutdown,
//! the ring is paged, and removed backends' memory is reused.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Lb, Recorder, Topo, exchange, request, test_config, topo};
use http::{Method, StatusCode};
use ringside::config::BackendEntry;
use ringside::router::SessionKey;
use ringside::router::affinity::AffinityMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECS: Duration = Duration::from_secs(1);

/// Sends raw request bytes to the admin API and insists on an answer that
/// gives no CORS allowance.
async fn ask(admin: SocketAddr, bytes: &[u8]) -> common::RawAnswer {
    let answer = exchange(admin, bytes)
        .await
        .unwrap_or_else(|| panic!("no answer to {}", String::from_utf8_lossy(bytes)));
    assert!(
        !answer.head.to_ascii_lowercase().contains("access-control-"),
        "a CORS allowance in the answer to {}:\n{}",
        String::from_utf8_lossy(bytes),
        answer.head
    );
    answer
}

#[tokio::test]
async fn browser_shaped_and_rebinding_requests_are_refused_and_change_nothing() {
    let mut config = test_config();
    config.admin.allowed_hosts = vec!["admin.lab".into()];
    let lb = Lb::start(config).await;
    let own = lb.admin.to_string();
    let port = lb.admin.port();
    let evil = format!("evil.example:{port}");
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1).max(1));
    let evil_page = ("origin", "https://evil.example");
    let cross = ("sec-fetch-site", "cross-site");
    let host = ("host", own.as_str());
    let form = ("content-type", "application/x-www-form-urlencoded");
    let json = ("content-type", "application/json");
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "a no-cors fetch with a text/plain body kills a backend",
            request(
                "POST",
                "/api/backends/api-1/kill",
                &[host, evil_page, cross, ("content-type", "text/plain;charset=UTF-8")],
                Some("kill"),
            ),
        ),
        (
            "an auto-submitted form adds the attacker's backend",
            request(
                "POST",
                "/api/backends",
                &[host, evil_page, cross, form],
                Some("name=evil&addr=203.0.113.9%3A80&weight=100"),
            ),
        ),
        (
            "a form whose body is JSON",
            request(
                "POST",
                "/api/backends",
                &[host, evil_page, cross, form],
                Some(r#"{"name":"evil","addr":"203.0.113.9:80","weight":100}"#),
            ),
        ),
        (
            "a no-cors POST with no body and a foreign Origin",
            request("POST", "/api/backends/api-2/kill", &[host, evil_page], None),
        ),
        (
            "a sandboxed page: Origin null",
            request("POST", "/api/backends/api-2/kill", &[host, ("origin", "null")], None),
        ),
        (
            "Sec-Fetch-Site: same-site",
            request(
                "POST",
                "/api/backends/api-2/kill",
                &[host, ("sec-fetch-site", "same-site")],
                None,
            ),
        ),
        (
            "JSON from another site",
            request(
                "PUT",
                "/api/placement",
                &[host, evil_page, json],
                Some(r#"{"name":"round-robin"}"#),
            ),
        ),
        (
            "a page on another port of loopback",
            request(
                "POST",
                "/api/backends/api-1/kill",
                &[host, ("origin", "http://127.0.0.1:1")],
                None,
            ),
        ),
        (
            "a text/plain body without any Origin",
            request(
                "POST",
                "/api/backends/api-1/weight?value=100",
                &[host, ("content-type", "text/plain")],
                Some("x"),
            ),
        ),
        (
            "a body with no Content-Type",
            request("POST", "/api/backends/api-1/kill", &[host], Some("{}")),
        ),
        (
            "DNS rebinding: a write under a foreign Host",
            request("POST", "/api/backends/api-1/kill", &[("host", evil.as_str())], None),
        ),
        (
            "DNS rebinding: JSON under a foreign Host",
            request(
                "POST",
                "/api/backends",
                &[("host", evil.as_str()), json],
                Some(r#"{"name":"evil","addr":"203.0.113.9:80"}"#),
            ),
        ),
        (
            "one of our names on another port",
            request(
                "POST",
                "/api/backends/api-1/kill",
                &[("host", other_port.as_str())],
                None,
            ),
        ),
        (
            "two Host headers",
            request(
                "POST",
                "/api/backends/api-1/kill",
                &[host, ("host", evil.as_str())],
                None,
            ),
        ),
        (
            "two Host headers, both ours",
            request("GET", "/api/sessions", &[host, host], None),
        ),
        ("no Host", request("POST", "/api/backends/api-1/kill", &[], None)),
        (
            "a CORS preflight",
            request(
                "OPTIONS",
                "/api/backends/api-1/kill",
                &[
                    host,
                    evil_page,
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
                None,
            ),
        ),
    ];
    let before = topo(&lb.handle);
    for (what, bytes) in &attacks {
        let answer = ask(lb.admin, bytes).await;
        assert_eq!(answer.status, 403, "{what}: {answer:?}");
        assert!(answer.body.contains("\"error\""), "{what}: {}", answer.body);
        assert_eq!(topo(&lb.handle), before, "{what} changed the topology");
    }
    // DNS rebinding on reads: nothing is shown to a foreign Host.
    for path in [
        "/api/sessions",
        "/api/stats",
        "/metrics",
        "/api/events",
        "/api/backends",
        "/api/ring",
    ] {
        for bad in [evil.as_str(), "localhost.evil.example", other_port.as_str()] {
            let answer = ask(lb.admin, &request("GET", path, &[("host", bad)], None)).await;
            assert_eq!(answer.status, 403, "GET {path} with Host {bad}: {answer:?}");
            assert!(!answer.body.contains("api-1"), "{path} showed data: {}", answer.body);
        }
    }
    // A preflight from our own page gets no allowance either.
    let own_origin = format!("http://{own}");
    let preflight = ask(
        lb.admin,
        &request(
            "OPTIONS",
            "/api/backends",
            &[
                host,
                ("origin", own_origin.as_str()),
                ("access-control-request-method", "DELETE"),
            ],
            None,
        ),
    )
    .await;
    assert!(preflight.status >= 400, "{preflight:?}");
    assert_eq!(topo(&lb.handle), before);

    // What is allowed: curl, the API's own page, its own names.
    let curl = ask(lb.admin, &request("POST", "/api/backends/api-1/kill", &[host], None)).await;
    assert_eq!(curl.status, 200, "a bodiless POST from curl: {curl:?}");
    assert!(curl.body.contains("killed api-1"), "{}", curl.body);
    let page = ask(
        lb.admin,
        &request(
            "PUT",
            "/api/placement",
            &[
                host,
                ("origin", own_origin.as_str()),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            Some(r#"{"name":"round-robin"}"#),
        ),
    )
    .await;
    assert_eq!(page.status, 200, "same-origin JSON: {page:?}");
    assert_eq!(lb.handle.stats_view().placement.to_string(), "round-robin");
    let localhost = format!("localhost:{port}");
    let lab = format!("admin.lab:{port}");
    let lab_origin = format!("http://{lab}");
    for name in [localhost.as_str(), "localhost", "LOCALHOST", "admin.lab", lab.as_str()] {
        let answer = ask(lb.admin, &request("GET", "/api/stats", &[("host", name)], None)).await;
        assert_eq!(answer.status, 200, "Host {name}: {answer:?}");
    }
    let answer = ask(
        lb.admin,
        &request(
            "POST",
            "/api/backends/api-3/weight?value=7",
            &[("host", lab.as_str()), ("origin", lab_origin.as_str()), json],
            Some("{}"),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(lb.handle.router().topology().weight(ringside::router::BackendId(2)), 7);
    lb.handle.shutdown().await;

    // A token stays required, and does not make a cross-site request acceptable.
    let mut config = test_config();
    config.admin.token = Some("a token of sixteen+ chars".into());
    let lb = Lb::start(config).await;
    let own = lb.admin.to_string();
    let bearer = ("authorization", "Bearer a token of sixteen+ chars");
    let before = topo(&lb.handle);
    let no_token = ask(
        lb.admin,
        &request("POST", "/api/backends/api-1/kill", &[("host", own.as_str())], None),
    )
    .await;
    assert_eq!(no_token.status, 401, "{no_token:?}");
    let cross_with_token = ask(
        lb.admin,
        &request(
            "POST",
            "/api/backends/api-1/kill",
            &[("host", own.as_str()), bearer, evil_page, cross],
            None,
        ),
    )
    .await;
    assert_eq!(cross_with_token.status, 403, "{cross_with_token:?}");
    assert_eq!(topo(&lb.handle), before);
    let with_token = ask(
        lb.admin,
        &request(
            "POST",
            "/api/backends/api-1/kill",
            &[("host", own.as_str()), bearer],
            None,
        ),
    )
    .await;
    assert_eq!(with_token.status, 200, "{with_token:?}");
    lb.handle.shutdown().await;
}

/// Random ids with no hex digit, no decimal digit: a prefix of one can only
/// show up in a text if that text shows the id.
fn secret_ids(rng: &mut fastrand::Rng, n: usize) -> Vec<String> {
    const LETTERS: &[u8] = b"ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ";
    (0..n)
        .map(|_| (0..24).map(|_| LETTERS[rng.usize(..LETTERS.len())] as char).collect())
        .collect()
}

/// Reads what an `/api/events` stream has sent until `done` holds (5 s at most).
async fn read_stream(s: &mut TcpStream, got: &mut String, done: impl Fn(&str) -> bool) {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    while !done(got) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the event stream went quiet")
            .expect("the event stream broke");
        assert!(n > 0, "the event stream ended: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Opens `/api/events` and reads its head.
async fn open_events(admin: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET /api/events HTTP/1.1\r\nhost: {admin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = String::new();
    read_stream(&mut s, &mut head, |h| h.contains("\r\n\r\n")).await;
    (s, head)
}

/// The dashboard as it would draw now, after the events in `events`.
fn dashboard_text(lb: &Lb, events: &mut ringside::bus::Subscription) -> String {
    use ringside::dashboard::app::App;
    let shared = lb.handle.shared();
    let mut app = App::new(true, "log".into());
    let snapshot = ringside::dashboard::snapshot(shared);
    let debug = format!("{snapshot:?}");
    app.set_snapshot(snapshot);
    let mut waiting = Vec::new();
    events.drain_into(&mut waiting);
    for e in &waiting {
        app.on_event(&e.event, 1, |id| shared.backend_name(id));
    }
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(200, 60)).unwrap();
    terminal
        .draw(|f| {
            ringside::dashboard::view::draw(&app, f);
        })
        .unwrap();
    let buffer = terminal.backend().buffer();
    let mut screen = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            screen.push_str(buffer[(x, y)].symbol());
        }
        screen.push('\n');
    }
    format!("{debug}\n{screen}")
}

/// Collects what ringside logs (every test of this binary, at trace level).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn session_keys_are_never_shown_only_their_fingerprints() {
    let logs = Logs::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("ringside=trace")
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    let mut rng = fastrand::Rng::with_seed(14);
    for mode in [AffinityMode::AppCookie, AffinityMode::Header, AffinityMode::Query] {
        let mut config = test_config();
        config.affinity.mode = mode;
        let lb = Lb::start(config).await;
        let (mut stream, head) = open_events(lb.admin).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut bus = lb.handle.shared().bus.subscribe();
        // Session ids the application made (logins), and ids of our own.
        let mut ids = Vec::new();
        for i in 0..3 {
            let mut c = Client::default();
            let login = c.post(lb.proxy, &format!("/login?user=u{i}")).await;
            assert_eq!(login.status, StatusCode::OK, "{mode}: {}", login.body);
            ids.push(c.jar["session_id"].clone());
        }
        ids.extend(secret_ids(&mut rng, 3));
        for id in &ids {
            let mut c = Client::default();
            let path = match mode {
                AffinityMode::Query => format!("/profile?session={id}"),
                AffinityMode::Header => {
                    c.headers.push(("x-session-id".into(), id.clone()));
                    "/profile".into()
                }
                _ => {
                    c.jar.insert("session_id".into(), id.clone());
                    "/profile".into()
                }
            };
            for _ in 0..2 {
                let r = c.get(lb.proxy, &path).await;
                assert!(
                    r.status.is_success() || r.status == StatusCode::UNAUTHORIZED,
                    "{mode}: {r:?}"
                );
            }
        }
        // Sessions move (and are logged moving) when their backend goes.
        lb.handle
            .execute(ringside::engine::Command::Kill("api-1".into()))
            .await
            .unwrap();
        lb.wait_state("api-1", "killed", 3 * SECS).await;
        let fingerprints: Vec<u64> = ids
            .iter()
            .map(|id| lb.handle.router().fingerprint(SessionKey::Text(id.as_bytes())).unwrap())
            .collect();
        // Everything an operator can read.
        let (_, sessions) = common::admin_json(lb.admin, Method::GET, "/api/sessions?limit=1000", None).await;
        let sessions = sessions.to_string();
        let metrics = common::raw(
            lb.admin,
            http::Request::get("/metrics")
                .header("host", lb.admin.to_string())
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .body;
        // The stream has sent what happened once a per-second figure follows it.
        let mut events = String::new();
        let newest = format!("#{:08x}", fingerprints.last().unwrap() >> 32);
        read_stream(&mut stream, &mut events, |t| {
            t.contains(&newest) && t[t.find(&newest).unwrap()..].contains("\"type\":\"second\"")
        })
        .await;
        let dashboard = dashboard_text(&lb, &mut bus);
        let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        assert!(logged.contains("killed api-1"), "nothing logged: {logged}");
        for (id, fp) in ids.iter().zip(&fingerprints) {
            // The application's ids are hex: eight digits make a chance match negligible.
            let prefix = if id.bytes().all(|b| b.is_ascii_hexdigit()) {
                &id[..8]
            } else {
                &id[..6]
            };
            for (what, text) in [
                ("/api/sessions", &sessions),
                ("/api/events", &events),
                ("/metrics", &metrics),
                ("the dashboard", &dashboard),
                ("the log", &logged),
            ] {
                assert!(!text.contains(prefix), "{mode}: {what} shows {prefix}…:\n{text}");
            }
            let short = format!("#{:08x}", fp >> 32);
            assert!(sessions.contains(&short), "{mode}: {short} missing:\n{sessions}");
            assert!(sessions.contains(&format!("{fp:016x}")), "{mode}: {sessions}");
            assert!(events.contains(&short), "{mode}: {short} missing:\n{events}");
            assert!(dashboard.contains(&short), "{mode}: {short} missing:\n{dashboard}");
        }
        lb.handle.shutdown().await;
    }
}

/// Sends one admin request with a JSON body (or none) from an allowed client.
async fn call(lb: &Lb, method: &str, path: &str, body: Option<&str>) -> common::RawAnswer {
    let host = lb.admin.to_string();
    let mut headers = vec![("host", host.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    ask(lb.admin, &request(method, path, &headers, body)).await
}

#[tokio::test]
async fn every_bad_parameter_is_a_clear_refusal_that_changes_nothing() {
    let lb = Lb::start(test_config()).await;
    let max = u64::MAX.to_string();
    let mut cases: Vec<(String, String, Option<String>, u16)> = Vec::new();
    let mut post = |path: String, status: u16| cases.push(("POST".into(), path, None, status));
    for action in ["drain", "extend"] {
        for t in [
            "0",
            "86401",
            max.as_str(),
            "18446744073709551616",
            "-1",
            "x",
            "",
            "1.5",
            "1e3",
        ] {
            post(format!("/api/backends/api-1/{action}?timeout_secs={t}"), 400);
        }
    }
    for v in [
        "0",
        "101",
        "4294967297",
        max.as_str(),
        "99999999999999999999",
        "-1",
        "x",
        "",
    ] {
        post(format!("/api/backends/api-1/weight?value={v}"), 400);
    }
    post("/api/backends/api-1/weight".into(), 400);
    post("/api/backends/api-1/drain?timeout_secs".into(), 400);
    post("/api/backends/nope/kill".into(), 404);
    post("/api/backends/nope/drain?timeout_secs=5".into(), 404);
    post("/api/backends/api-1/explode".into(), 404);
    post("/api/backends/api-1/revive".into(), 409);
    post("/api/backends/api-1/undrain".into(), 409);
    post("/api/backends/api-1/extend?timeout_secs=5".into(), 409);
    let long = "a".repeat(33);
    let mut add = |body: String, status: u16| cases.push(("POST".into(), "/api/backends".into(), Some(body), status));
    for name in [".", "..", "-", "_x", "", "a b", "a/b", "äpi", "api\u{0}", long.as_str()] {
        add(
            serde_json::json!({"name": name, "addr": "127.0.0.2:9"}).to_string(),
            400,
        );
    }
    for addr in [
        "127.0.0.1:0",
        "127.0.0.1",
        "localhost:80",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "",
        "[::1]",
    ] {
        add(serde_json::json!({"name": "ok", "addr": addr}).to_string(), 400);
    }
    for weight in ["0", "101", "4294967296", "-1", "1.5", "\"5\""] {
        add(
            format!(r#"{{"name":"ok","addr":"127.0.0.2:9","weight":{weight}}}"#),
            400,
        );
    }
    add(r#"{"name":"api-1","addr":"127.0.0.2:9"}"#.into(), 409);
    add(r#"{"demo":true,"addr":"0.0.0.0:9000"}"#.into(), 400);
    add(r#"{"demo":true,"name":"x"}"#.into(), 400);
    add(r#"{"demo":false}"#.into(), 400);
    add(r#"{"name":"ok","addr":"127.0.0.2:9","color":"red"}"#.into(), 400);
    let mut put =
        |path: &str, body: &str, status: u16| cases.push(("PUT".into(), path.into(), Some(body.into()), status));
    for v in ["0", "10001", "-1", "1e10", "\"150\"", "4294967446"] {
        put("/api/vnodes", &format!(r#"{{"value":{v}}}"#), 400);
    }
    put("/api/placement", r#"{"name":"modulo"}"#, 400);
    put("/api/placement", r#"{"name":""}"#, 400);
    put("/api/affinity", r#"{"name":"telepathy"}"#, 400);
    put("/api/traffic", "{}", 400);
    for rate in ["0", "-1", "1e300", "\"NaN\""] {
        put("/api/traffic", &format!(r#"{{"rate":{rate}}}"#), 400);
    }
    let mut get = |path: &str, status: u16| cases.push(("GET".into(), path.into(), None, status));
    get("/api/sessions?limit=x", 400);
    get("/api/sessions?limit=100001", 400);
    get("/api/sessions?backend=nope", 404);
    get("/api/ring?limit=4097", 400);
    get("/api/ring?offset=-1", 400);
    get("/api/ring?limit=", 400);
    get("/api/sessions?limit=", 400);
    get("/api/backends/nope", 404);
    cases.push(("DELETE".into(), "/api/backends/nope".into(), None, 404));

    let before = topo(&lb.handle);
    for (method, path, body, status) in &cases {
        let answer = call(&lb, method, path, body.as_deref()).await;
        assert_eq!(answer.status, *status, "{method} {path} {body:?}: {}", answer.body);
        let error: serde_json::Value =
            serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {}", answer.body));
        let text = error["error"].as_str().unwrap_or_default();
        assert!(
            text.len() > 10,
            "{method} {path} {body:?}: no clear reason: {}",
            answer.body
        );
        assert_eq!(
            topo(&lb.handle),
            before,
            "{method} {path} {body:?} changed the topology"
        );
    }

    // The old panic: a drain of u64::MAX seconds left the backend draining
    // forever with no drain task, and undrain answered 409.
    let answer = call(
        &lb,
        "POST",
        &format!("/api/backends/api-1/drain?timeout_secs={max}"),
        None,
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("86400"), "{}", answer.body);
    assert_eq!(lb.state("api-1"), "up");
    assert_eq!(call(&lb, "POST", "/api/backends/api-1/undrain", None).await.status, 409);
    // A drain at the longest, then an extension past 24 h, is refused too.
    let mut c = Client::default();
    assert_eq!(c.get(lb.proxy, "/").await.status, StatusCode::OK);
    let home = c.get(lb.proxy, "/").await.backend().unwrap().to_owned();
    let drain = format!("/api/backends/{home}/drain?timeout_secs=86400");
    assert_eq!(call(&lb, "POST", &drain, None).await.status, 200);
    let extend = format!("/api/backends/{home}/extend?timeout_secs=1");
    let answer = call(&lb, "POST", &extend, None).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(lb.state(&home), "draining");
    let undrain = format!("/api/backends/{home}/undrain");
    assert_eq!(call(&lb, "POST", &undrain, None).await.status, 200);
    assert_eq!(lb.state(&home), "up");

    // Demo backends are started on loopback only.
    let answer = call(&lb, "POST", "/api/backends", Some(r#"{"demo":true}"#)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let added = lb.handle.backends_view().pop().unwrap();
    assert!(added.addr.starts_with("127.0.0.1:"), "{added:?}");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn more_than_256_backends_is_a_conflict() {
    let mut config = test_config();
    config.routing.vnodes = 2;
    config.health.interval_ms = 3_600_000;
    let lb = Lb::start(config).await;
    for i in 3..256 {
        let body = format!(r#"{{"name":"b{i}","addr":"127.0.0.2:{}"}}"#, 10_000 + i);
        let answer = call(&lb, "POST", "/api/backends", Some(&body)).await;
        assert_eq!(answer.status, 200, "backend {i}: {answer:?}");
    }
    assert_eq!(lb.handle.backends_view().len(), 256);
    let before = topo(&lb.handle);
    let answer = call(
        &lb,
        "POST",
        "/api/backends",
        Some(r#"{"name":"one-more","addr":"127.0.0.2:9"}"#),
    )
    .await;
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.body.contains("256"), "{}", answer.body);
    let answer = call(&lb, "POST", "/api/backends", Some(r#"{"demo":true}"#)).await;
    assert_eq!(answer.status, 409, "a demo backend too: {answer:?}");
    assert_eq!(topo(&lb.handle), before);
    // One out, one in.
    assert_eq!(call(&lb, "DELETE", "/api/backends/b100", None).await.status, 200);
    let answer = call(
        &lb,
        "POST",
        "/api/backends",
        Some(r#"{"name":"one-more","addr":"127.0.0.2:9"}"#),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    lb.handle.shutdown().await;
}

/// Whether `after` differs from `before` at most by drains that ended on
/// their own (the engine's tick turns an empty `draining` into `drained`).
fn same_but_finished_drains(before: &Topo, after: &Topo) -> bool {
    let mut settled = before.clone();
    for (b, a) in settled.backends.iter_mut().zip(&after.backends) {
        if b.0 == a.0 && b.1 == "draining" && a.1 == "drained" {
            b.1 = "drained".into();
        }
    }
    settled == *after
}

/// One random request for the admin API, and a description of it.
fn random_request(rng: &mut fastrand::Rng, admin: SocketAddr, proxy: SocketAddr) -> (String, Vec<u8>) {
    fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
        from[rng.usize(..from.len())]
    }
    let methods = [
        "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW",
    ];
    let backend = pick(
        rng,
        &[
            "api-1", "api-2", "api-3", "api-4", "fz1", "fz2", "nope", "..", "%61pi-1",
        ],
    );
    let action = pick(
        rng,
        &["kill", "revive", "drain", "undrain", "extend", "weight", "", "x"],
    );
    // Mostly the real endpoints (sometimes with another method), else words and garbage.
    let endpoints = [
        ("GET", "api/backends".to_owned()),
        ("GET", format!("api/backends/{backend}")),
        ("POST", format!("api/backends/{backend}/{action}")),
        ("POST", format!("api/backends/{backend}/{action}")),
        ("POST", format!("api/backends/{backend}/{action}")),
        ("POST", format!("api/backends/{backend}/{action}")),
        ("POST", format!("api/backends/{backend}/{action}")),
        ("POST", format!("api/backends/{backend}/{action}")),
        ("POST", "api/backends".into()),
        ("POST", "api/backends".into()),
        ("DELETE", format!("api/backends/{backend}")),
        ("GET", "api/sessions".into()),
        ("GET", "api/ring".into()),
        ("GET", "api/stats".into()),
        ("PUT", "api/placement".into()),
        ("PUT", "api/affinity".into()),
        ("PUT", "api/vnodes".into()),
        ("PUT", "api/traffic".into()),
        ("POST", "api/restart".into()),
        ("GET", "metrics".into()),
        ("GET", "api/events".into()),
    ];
    let long = "x".repeat(300);
    let garbage = [
        "..",
        ".",
        "%2e%2e",
        "%00",
        "%ff",
        "%",
        "ä",
        "*",
        ";",
        "api-1;kill",
        "",
        long.as_str(),
    ];
    let words = [
        "api",
        "backends",
        "api-1",
        "api-2",
        "api-3",
        "api-9",
        "fz1",
        "kill",
        "revive",
        "drain",
        "undrain",
        "extend",
        "weight",
        "sessions",
        "ring",
        "stats",
        "metrics",
        "placement",
        "affinity",
        "vnodes",
        "traffic",
        "restart",
    ];
    let mut segments: Vec<String> = Vec::new();
    // Half the time a real endpoint gets parameters of the kind it takes.
    let mut fit = None;
    let method = if rng.u8(..10) < 7 {
        let (method, path) = &endpoints[rng.usize(..endpoints.len())];
        segments.push(path.clone());
        if rng.bool() {
            fit = Some(path.clone());
        }
        if rng.u8(..5) == 0 { pick(rng, &methods) } else { method }
    } else {
        for _ in 0..rng.usize(0..5) {
            segments.push(if rng.u8(..4) == 0 {
                pick(rng, &garbage).into()
            } else {
                pick(rng, &words).into()
            });
        }
        pick(rng, &methods)
    };
    let mut path = format!("/{}", segments.join("/"));
    let fit = fit.as_deref().unwrap_or("");
    if fit.ends_with("/drain") || fit.ends_with("/extend") {
        path.push_str("?timeout_secs=");
        path.push_str(pick(
            rng,
            &[
                "0",
                "1",
                "2",
                "30",
                "86400",
                "86401",
                "18446744073709551615",
                "-1",
                "x",
                "",
            ],
        ));
    } else if fit.ends_with("/weight") {
        path.push_str("?value=");
        path.push_str(pick(rng, &["0", "1", "2", "50", "100", "101", "4294967297", "-1", ""]));
    } else if rng.bool() {
        let keys = [
            "timeout_secs",
            "value",
            "limit",
            "offset",
            "backend",
            "x",
            "timeout_secs",
        ];
        let values = [
            "0",
            "1",
            "5",
            "30",
            "86400",
            "86401",
            "18446744073709551615",
            "99999999999999999999",
            "-1",
            "x",
            "",
            "1.5",
            "api-1",
            "%00",
            "%ff",
            "4096",
            "4097",
        ];
        let pairs: Vec<String> = (0..rng.usize(1..4))
            .map(|_| format!("{}={}", pick(rng, &keys), pick(rng, &values)))
            .collect();
        path.push('?');
        path.push_str(&pairs.join("&"));
    }
    let proxy_addr = proxy.to_string();
    let some_port = format!("127.0.0.2:{}", rng.u16(1..65535));
    let kind = match fit {
        "api/backends" => pick(rng, &["5", "5", "9"]).parse().unwrap(),
        "api/placement" | "api/affinity" => 6,
        "api/vnodes" => 7,
        "api/traffic" => 8,
        _ => rng.u8(..11),
    };
    let body: Option<String> = match kind {
        0..=3 => None,
        9 => Some(r#"{"demo":true}"#.into()),
        4 => Some(pick(rng, &["name=x&addr=1.2.3.4:80", "kill", "{", "\u{0}\u{1}\u{2}", "[]", "null", "\"\""]).into()),
        5 => Some(
            serde_json::json!({
                "name": pick(rng, &["fz1", "fz2", "api-1", ".", "a b", "ä", "", "-x"]),
                "addr": pick(rng, &["127.0.0.2:9", "127.0.0.1:0", "nowhere", "[::1]:80", "0.0.0.0:80", proxy_addr.as_str(), some_port.as_str()]),
                "weight": ([0i64, 1, 3, 100, 101, -1][rng.usize(..6)]),
            })
            .to_string(),
        ),
        6 => Some(
            serde_json::json!({"name": pick(rng, &["ring", "round-robin", "bounded-ring", "p2c", "lb-cookie", "source-ip", "none", "modulo", ""])})
                .to_string(),
        ),
        7 => Some(serde_json::json!({"value": ([0i64, 1, 2, 50, 150, 10_001, -1][rng.usize(..7)])}).to_string()),
        8 => Some(serde_json::json!({"demo": rng.bool(), "rate": ([0.0, 5.0, -1.0][rng.usize(..3)])}).to_string()),
        _ => Some(format!(
            r#"{{"{}": [{}, {{"on": false}}], "n": {}}}"#,
            pick(rng, &["name", "value", "on", "rate", "demo"]),
            rng.i64(..),
            rng.f64()
        )),
    };
    // Half the requests come from a well-behaved client, so that the
    // handlers behind the guard get their share of the garbage.
    let polite = rng.bool();
    let own = admin.to_string();
    let localhost = format!("localhost:{}", admin.port());
    let evil = format!("evil.example:{}", admin.port());
    let own_origin = format!("http://{own}");
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if polite {
        headers.push(("host", own.as_str()));
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let bytes = request(method, &path, &headers, body.as_deref());
        return (format!("{method} {path} {headers:?} {body:?}"), bytes);
    }
    match rng.u8(..10) {
        0..=5 => headers.push(("host", own.as_str())),
        6 => headers.push(("host", localhost.as_str())),
        7 => headers.push(("host", evil.as_str())),
        8 => {}
        _ => headers.extend([("host", own.as_str()), ("host", evil.as_str())]),
    }
    match rng.u8(..8) {
        0 => headers.push(("origin", "https://evil.example")),
        1 => headers.push(("origin", "null")),
        2 => headers.push(("origin", own_origin.as_str())),
        _ => {}
    }
    if rng.u8(..6) == 0 {
        headers.push((
            "sec-fetch-site",
            pick(rng, &["cross-site", "same-site", "same-origin", "none"]),
        ));
    }
    if body.is_some() || rng.u8(..4) == 0 {
        headers.push((
            "content-type",
            pick(
                rng,
                &[
                    "application/json",
                    "application/json",
                    "application/json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                ],
            ),
        ));
    }
    let bytes = request(method, &path, &headers, body.as_deref());
    (format!("{method} {path} {headers:?} {body:?}"), bytes)
}

#[tokio::test]
async fn random_admin_requests_always_get_an_answer_and_refusals_change_nothing() {
    let mut config = test_config();
    // Only commands change the topology here: no checks after the first.
    config.health.interval_ms = 3_600_000;
    config.demo.health_interval_ms = 3_600_000;
    let lb = Lb::start(config).await;
    let seed = std::env::var("RINGSIDE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1415u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let deadline = tokio::time::Instant::now() + 40 * SECS;
    let (mut refused, mut accepted, mut writes) = (0, 0, 0);
    for i in 0..1000 {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        let (what, bytes) = random_request(&mut rng, lb.admin, lb.proxy);
        let before = topo(&lb.handle);
        let answer = exchange(lb.admin, &bytes)
            .await
            .unwrap_or_else(|| panic!("seed {seed}, request {i}: no answer (a panic?) to {what}"));
        assert!(
            !answer.head.to_ascii_lowercase().contains("access-control-"),
            "seed {seed}, request {i}: {what}: {}",
            answer.head
        );
        if answer.status >= 400 {
            refused += 1;
            let after = topo(&lb.handle);
            assert!(
                same_but_finished_drains(&before, &after),
                "seed {seed}, request {i}: the refused {what} ({}: {}) changed the topology:\n{before:?}\n{after:?}",
                answer.status,
                answer.body
            );
        } else {
            accepted += 1;
            writes += usize::from(!what.starts_with("GET"));
        }
    }
    assert!(
        refused >= 300 && accepted >= 100 && writes >= 30,
        "{refused} refused, {accepted} accepted ({writes} writes)"
    );
    // Still serving.
    let (s, _) = common::admin_json(lb.admin, Method::GET, "/api/backends", None).await;
    assert_eq!(s, StatusCode::OK);
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_is_ringside_itself_is_refused_at_start_and_through_the_api() {
    for own in ["proxy", "admin API"] {
        let mut config = test_config();
        let listeners = ringside::app::Listeners::bind(&config).unwrap();
        let addr = match own {
            "proxy" => listeners.proxy.local_addr().unwrap(),
            _ => listeners.admin.local_addr().unwrap(),
        };
        config.backends = vec![BackendEntry {
            name: "me".into(),
            addr,
            weight: 1,
        }];
        let err = match ringside::app::start(listeners, config, Default::default()).await {
            Ok(_) => panic!("started with a backend at its own {own}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&addr.to_string()) && err.contains(own) && err.contains("loop"),
            "{err}"
        );
    }
    let lb = Lb::start(test_config()).await;
    let before = topo(&lb.handle);
    let unspecified = SocketAddr::from(([0, 0, 0, 0], lb.proxy.port()));
    for addr in [lb.proxy, lb.admin, unspecified] {
        let body = format!(r#"{{"name":"me","addr":"{addr}"}}"#);
        let answer = call(&lb, "POST", "/api/backends", Some(&body)).await;
        assert_eq!(answer.status, 400, "{addr}: {answer:?}");
        assert!(answer.body.contains("loop"), "{}", answer.body);
        assert_eq!(topo(&lb.handle), before);
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_request_that_comes_back_gets_508_at_once() {
    let recorder = Recorder::start().await;
    let mut config = test_config();
    config.backends = vec![BackendEntry {
        name: "recorder".into(),
        addr: recorder.addr,
        weight: 1,
    }];
    let lb = Lb::start(config).await;
    let first = Client::default().get(lb.proxy, "/first").await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let via = recorder.proxied()[0]
        .headers
        .get("via")
        .expect("a Via entry is added")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(via.starts_with("1.1 ringside-"), "{via}");
    let forwarded = recorder.proxied().len();
    for carried in [via.clone(), format!("1.0 corporate-cache, {via}")] {
        let mut c = Client::default();
        c.headers.push(("via".into(), carried.clone()));
        let back = c.get(lb.proxy, "/again").await;
        assert_eq!(back.status, StatusCode::LOOP_DETECTED, "{carried}: {back:?}");
        assert!(back.body.contains("Loop Detected"), "{}", back.body);
    }
    assert_eq!(recorder.proxied().len(), forwarded, "a looping request was forwarded");
    // Another ringside's entry is no loop.
    let other = if via.ends_with("deadbeef") {
        "1.1 ringside-feedface"
    } else {
        "1.1 ringside-deadbeef"
    };
    let mut c = Client::default();
    c.headers.push(("via".into(), other.into()));
    assert_eq!(c.get(lb.proxy, "/chain").await.status, StatusCode::OK);
    let (_, stats) = common::admin_json(lb.admin, Method::GET, "/api/stats", None).await;
    assert_eq!(stats["loops_refused"], 2, "{stats}");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn event_streams_are_capped_freed_on_close_and_ended_at_shutdown() {
    let mut config = test_config();
    config.admin.max_event_streams = 2;
    let lb = Lb::start(config).await;
    let (first, head) = open_events(lb.admin).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut second, head) = open_events(lb.admin).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let third = ask(
        lb.admin,
        &request("GET", "/api/events", &[("host", lb.admin.to_string().as_str())], None),
    )
    .await;
    assert_eq!(third.status, 503, "{third:?}");
    assert!(third.header("retry-after").is_some(), "{}", third.head);
    assert!(third.body.contains("max_event_streams"), "{}", third.body);
    // Closing one frees its place once the server notices (at its next
    // write: a per-second figure at the latest).
    drop(first);
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    let mut replacement = loop {
        let (s, head) = open_events(lb.admin).await;
        if head.starts_with("HTTP/1.1 200") {
            break s;
        }
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Both streams end (EOF) when ringside shuts down.
    tokio::time::timeout(10 * SECS, lb.handle.shutdown())
        .await
        .expect("shut down within 10 s");
    for s in [&mut second, &mut replacement] {
        let mut rest = Vec::new();
        tokio::time::timeout(5 * SECS, s.read_to_end(&mut rest))
            .await
            .expect("an event stream outlived the shutdown")
            .unwrap();
        assert!(String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"), "a clean end");
    }
}

#[tokio::test]
async fn a_large_ring_is_paged() {
    let lb = Lb::start(test_config()).await;
    for name in ["api-1", "api-2", "api-3"] {
        let answer = call(&lb, "POST", &format!("/api/backends/{name}/weight?value=10"), None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let total = 3 * 10 * 150;
    let (s, ring) = common::admin_json(lb.admin, Method::GET, "/api/ring", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ring["vnode_count"], total);
    assert!(
        ring["vnodes"].is_null(),
        "the full list is not sent: {}",
        ring["vnodes"]
    );
    assert!(ring["paging"].as_str().unwrap().contains("offset="), "{ring}");
    assert_eq!(ring["backends"].as_array().unwrap().len(), 3);
    let mut all = Vec::new();
    for offset in [0, 4096] {
        let (s, page) = common::admin_json(
            lb.admin,
            Method::GET,
            &format!("/api/ring?offset={offset}&limit=4096"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        all.extend(page["vnodes"].as_array().unwrap().clone());
    }
    assert_eq!(all.len(), total);
    let positions: Vec<u64> = all.iter().map(|v| v[0].as_u64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "pages join in ring order");
    let (s, _) = common::admin_json(lb.admin, Method::GET, "/api/ring?limit=4097", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, beyond) = common::admin_json(lb.admin, Method::GET, "/api/ring?offset=99999&limit=10", None).await;
    assert_eq!(beyond["vnodes"].as_array().map(Vec::len), Some(0));
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn removed_backends_free_their_place() {
    let mut config = test_config();
    config.health.interval_ms = 3_600_000;
    let lb = Lb::start(config).await;
    let base = lb.handle.router().topology().backend_count();
    for i in 0..500 {
        let answer = call(
            &lb,
            "POST",
            "/api/backends",
            Some(&format!(r#"{{"name":"tmp","addr":"127.0.0.2:{}"}}"#, 1000 + i)),
        )
        .await;
        assert_eq!(answer.status, 200, "cycle {i}: {answer:?}");
        let answer = call(&lb, "DELETE", "/api/backends/tmp", None).await;
        assert_eq!(answer.status, 200, "cycle {i}: {answer:?}");
    }
    let count = lb.handle.router().topology().backend_count();
    assert!(count <= base + 1, "{count} backend slots after 500 add/remove cycles");
    assert_eq!(lb.handle.backends_view().len(), base);
    lb.handle.shutdown().await;
}
