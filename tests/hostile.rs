//! Hostile input over real sockets: smuggling attempts, malformed requests,
//! forged and absurd cookies, spoofed X-Forwarded-For, and abuse of the admin
//! API. Nothing reaches a backend that should not, nothing panics, and the
//! proxy keeps serving afterwards.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Lb, admin_json, test_config};
use http::{Method, StatusCode};
use ringside::config::BackendEntry;
use ringside::router::affinity::AffinityMode;
use ringside::router::lb_cookie::{CookieCodec, Protection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECS: Duration = Duration::from_secs(1);

/// A backend that answers every request 200 and records each request head.
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let head = format!("{} {} {:?}", req.method(), req.uri(), req.headers());
                    seen.lock().unwrap().push(head);
                    async move {
                        use http_body_util::BodyExt;
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"recorded"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, heads)
}

async fn lb_over_recorder() -> (Lb, Arc<Mutex<Vec<String>>>) {
    let (addr, heads) = recording_backend().await;
    let mut config = test_config();
    config.backends = vec![BackendEntry {
        name: "recorder".into(),
        addr,
        weight: 1,
    }];
    config.health.path = "/".into();
    (Lb::start(config).await, heads)
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes
/// it (or 5 s pass); returns everything it said.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(5 * SECS, s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect()
}

#[tokio::test]
async fn conflicting_framing_is_refused_and_never_forwarded() {
    let (lb, heads) = lb_over_recorder().await;
    let attacks: [&[u8]; 2] = [
        // A normal request first, so the attack is not the connection's first.
        b"GET /ok HTTP/1.1\r\nhost: a\r\n\r\nPOST /te-first HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 35\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: \r\n\r\n",
        b"POST /cl-first HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n5c\r\nGPOST /smuggled HTTP/1.1\r\n\r\n0\r\n\r\n",
    ];
    let first = exchange(lb.proxy, attacks[0]).await;
    assert_eq!(statuses(&first), ["200", "400"], "{first}");
    assert!(first.to_ascii_lowercase().contains("connection: close"), "{first}");
    let second = exchange(lb.proxy, attacks[1]).await;
    assert_eq!(statuses(&second), ["400"], "{second}");

    // hyper's own refusals: differing lengths, a non-chunked coding, junk.
    for bad in [
        &b"POST /two-lengths HTTP/1.1\r\nhost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"POST /xchunked HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /space HTTP/1.1\r\nhost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST /plus HTTP/1.1\r\nhost: a\r\nContent-Length: +4\r\n\r\nabcd",
        b"GET /http10-te HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(lb.proxy, bad).await;
        assert_eq!(statuses(&answer), ["400"], "{}: {answer}", String::from_utf8_lossy(bad));
    }

    let forwarded = heads.lock().unwrap().clone();
    let requests: Vec<&String> = forwarded.iter().filter(|h| !h.starts_with("GET / ")).collect();
    assert_eq!(requests.len(), 1, "only GET /ok reaches the backend: {requests:?}");
    assert!(requests[0].starts_with("GET /ok"), "{requests:?}");
    assert_eq!(lb.handle.stats_view().smuggling_refused, 2);
    let (_, metrics) = admin_text(lb.admin, "/metrics").await;
    assert!(metrics.contains("ringside_smuggling_refused_total 2"), "{metrics}");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_chunked_body_keeps_the_connection_in_step() {
    // Chunked bodies whose data looks like a conflicting head must not
    // confuse the guard into refusing the next, honest request.
    let (lb, heads) = lb_over_recorder().await;
    let body = "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let pipelined = format!(
        "POST /upload HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n\
         POST /fixed HTTP/1.1\r\nhost: a\r\nContent-Length: {}\r\n\r\n{body}\
         GET /last HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        body.len(),
        body.len()
    );
    let answer = exchange(lb.proxy, pipelined.as_bytes()).await;
    assert_eq!(statuses(&answer), ["200", "200", "200"], "{answer}");
    let forwarded = heads.lock().unwrap().clone();
    for path in ["POST /upload", "POST /fixed", "GET /last"] {
        assert!(
            forwarded.iter().any(|h| h.starts_with(path)),
            "{path} missing: {forwarded:?}"
        );
    }
    assert_eq!(lb.handle.stats_view().smuggling_refused, 0);
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_slow_headers_are_cut_off() {
    let mut config = test_config();
    config.proxy.header_read_timeout_ms = 500;
    let lb = Lb::start(config).await;
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nx-nul: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: value\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
    ] {
        let answer = exchange(lb.proxy, bad).await;
        assert!(answer.is_empty() || statuses(&answer) == ["400"], "{bad:?}: {answer}");
    }
    // One byte every 100 ms: cut off by the 500 ms header timeout long
    // before the head is complete.
    let mut drip = TcpStream::connect(lb.proxy).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nhost: a\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_after = None;
    for (i, byte) in head.iter().enumerate() {
        if drip.write_all(&[*byte]).await.is_err() {
            cut_after = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), drip.read(&mut probe)).await {
            let said = String::from_utf8_lossy(&probe[..n]).into_owned();
            assert!(n == 0 || said.starts_with("HTTP/1.1 408"), "{said}");
            cut_after = Some(i);
            break;
        }
    }
    let cut_after = cut_after.expect("a one-byte-per-100-ms client was never cut off");
    assert!(cut_after < head.len() - 1, "cut off only after {cut_after} bytes");
    // Still serving.
    assert_eq!(Client::default().get(lb.proxy, "/").await.status, StatusCode::OK);
    lb.handle.shutdown().await;
}

/// A `SERVERID` value made with another key, the same layout.
fn foreign_cookie(protection: Protection, backend: &ringside::router::Backend) -> String {
    let codec = CookieCodec::new("SERVERID", protection, Some(b"another key, another key, another key!")).unwrap();
    codec.encode(42, backend)
}

#[tokio::test]
async fn forged_cookies_are_ignored_counted_and_never_trusted() {
    let mut config = test_config();
    config.proxy.max_header_bytes = 256 * 1024;
    let lb = Lb::start(config).await;
    let mut client = Client::default();
    let first = client.get(lb.proxy, "/").await;
    let home = first.backend().unwrap().to_owned();
    let good = client.jar["SERVERID"].clone();
    let backend = Arc::clone(lb.handle.router().topology().members().next().unwrap());

    let mut forgeries: Vec<Vec<u8>> = vec![
        format!("SERVERID={}", &good[..good.len() / 2]).into_bytes(),
        format!("SERVERID={}A", &good[..good.len() - 1]).into_bytes(),
        format!("SERVERID={}", foreign_cookie(Protection::Private, &backend)).into_bytes(),
        format!("SERVERID={}", foreign_cookie(Protection::Signed, &backend)).into_bytes(),
        b"SERVERID=api-2".to_vec(),
        b"SERVERID=".to_vec(),
        b"SERVERID=\xff\xfe\xfd".to_vec(),
        b"SERVERID=%00%ff; SERVERID=\"quoted\"".to_vec(),
    ];
    let thousands: String = (0..3000).map(|i| format!("c{i}=v{i}; ")).collect();
    forgeries.push(format!("{thousands}SERVERID=AAAA").into_bytes());
    let before = lb.handle.stats_view().router.forged_cookies;
    for cookie in &forgeries {
        let mut req = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncookie: ".to_vec();
        req.extend_from_slice(cookie);
        req.extend_from_slice(b"\r\n\r\n");
        let answer = exchange(lb.proxy, &req).await;
        assert_eq!(
            statuses(&answer),
            ["200"],
            "{}: {answer}",
            String::from_utf8_lossy(cookie)
        );
        assert!(
            answer.contains("set-cookie: SERVERID="),
            "a forged cookie gets a fresh session: {answer}"
        );
    }
    let forged = lb.handle.stats_view().router.forged_cookies - before;
    assert!(forged >= 6, "forged cookies counted: {forged}");
    // The honest client is where it was.
    for _ in 0..5 {
        assert_eq!(client.get(lb.proxy, "/").await.backend(), Some(home.as_str()));
    }
    lb.handle.shutdown().await;
}

/// A connection remembers the last balancer cookie that verified on it
/// (not to decrypt it again): forgeries on that same connection, right after
/// it, must still be refused one by one, and the valid value still honoured.
#[tokio::test]
async fn forgeries_after_a_valid_cookie_on_one_connection_are_not_taken_for_it() {
    let lb = Lb::start(test_config()).await;
    let mut client = Client::default();
    let home = client.get(lb.proxy, "/").await.backend().unwrap().to_owned();
    let good = client.jar["SERVERID"].clone();
    let mut tampered = good.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let forgeries = [
        String::from_utf8(tampered).unwrap(),
        format!("{good}A"),
        good[..good.len() - 1].to_owned(),
        format!(" {}", &good[1..]),
    ];
    let request = |cookie: &str, last: bool| {
        format!(
            "GET / HTTP/1.1\r\nhost: a\r\ncookie: SERVERID={cookie}\r\n{}\r\n",
            if last { "connection: close\r\n" } else { "" }
        )
    };
    let mut pipeline = request(&good, false);
    for f in &forgeries {
        pipeline += &request(f, false);
        pipeline += &request(&good, false);
    }
    pipeline += &request(&good, true);
    let before = lb.handle.stats_view().router.forged_cookies;
    let answer = exchange(lb.proxy, pipeline.as_bytes()).await;
    let answers: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2 * forgeries.len() + 2, "{answer}");
    for (i, a) in answers.iter().enumerate() {
        assert!(a.starts_with("200"), "answer {i}: {a}");
        let forged = i % 2 == 1 && i < answers.len() - 1;
        assert_eq!(
            a.contains("set-cookie: SERVERID="),
            forged,
            "answer {i}: a forgery gets a fresh session, the valid cookie none: {a}"
        );
        if !forged {
            assert!(a.contains(&format!("x-backend: {home}")), "answer {i}: {a}");
        }
    }
    let forged = lb.handle.stats_view().router.forged_cookies - before;
    assert_eq!(forged, forgeries.len() as u64, "every forgery counted");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_cookie_naming_a_removed_backend_finds_a_live_one() {
    let mut config = test_config();
    config.affinity.protection = Protection::Plain;
    let lb = Lb::start(config).await;
    lb.handle
        .execute(ringside::engine::Command::Remove("api-2".into()))
        .await
        .unwrap();
    for _ in 0..5 {
        let mut c = Client::default();
        c.jar.insert("SERVERID".into(), "api-2".into());
        let a = c.get(lb.proxy, "/").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_ne!(a.backend(), Some("api-2"));
        assert_ne!(c.jar["SERVERID"], "api-2", "the cookie is rewritten");
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let mut config = test_config();
    config.affinity.mode = AffinityMode::SourceIp;
    config.affinity.trusted_proxies = vec!["10.0.0.0/8".into()];
    let lb = Lb::start(config).await;
    let mut landed = HashSet::new();
    for i in 0..40 {
        let mut c = Client::default();
        c.headers.push(("x-forwarded-for".into(), format!("203.0.113.{i}")));
        landed.insert(c.get(lb.proxy, "/").await.backend().unwrap().to_owned());
    }
    assert_eq!(landed.len(), 1, "spoofed addresses chose backends: {landed:?}");
    lb.handle.shutdown().await;

    // From a trusted peer (loopback, the default) the header is believed.
    let mut config = test_config();
    config.affinity.mode = AffinityMode::SourceIp;
    let lb = Lb::start(config).await;
    let mut landed = HashSet::new();
    for i in 0..40 {
        let mut c = Client::default();
        c.headers.push(("x-forwarded-for".into(), format!("203.0.113.{i}")));
        landed.insert(c.get(lb.proxy, "/").await.backend().unwrap().to_owned());
    }
    assert!(landed.len() > 1, "{landed:?}");
    lb.handle.shutdown().await;
}

async fn admin_text(addr: SocketAddr, path: &str) -> (String, String) {
    let answer = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let status = statuses(&answer).first().map(|s| s.to_string()).unwrap_or_default();
    (status, answer)
}

#[tokio::test]
async fn the_admin_api_refuses_what_it_does_not_understand() {
    let lb = Lb::start(test_config()).await;
    for path in ["/nope", "/api/backends/api-1/explode", "/api/../../etc/passwd", "/%ff"] {
        let (s, _) = admin_json(lb.admin, Method::GET, path, None).await;
        assert!(
            s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST,
            "{path}: {s}"
        );
    }
    for body in [
        "{not json",
        "[]",
        "{\"addr\": 5}",
        "\u{0}\u{1}",
        "{\"name\":\"x\",\"addr\":\"nowhere\"}",
    ] {
        let (s, e) = admin_json(lb.admin, Method::POST, "/api/backends", Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e["error"].is_string(), "{e}");
    }
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    let (s, _) = admin_json(lb.admin, Method::POST, "/api/backends", Some(&huge)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = admin_json(lb.admin, Method::DELETE, "/api/stats", None).await;
    assert!(s.is_client_error(), "{s}");
    assert_eq!(lb.handle.backends_view().len(), 3, "nothing changed");
    lb.handle.shutdown().await;

    // With a token, a missing or wrong one is 401 and changes nothing.
    let mut config = test_config();
    config.admin.token = Some("a token of sixteen+ chars".into());
    let lb = Lb::start(config).await;
    let (s, _) = admin_json(lb.admin, Method::POST, "/api/backends/api-1/kill", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let answer = exchange(
        lb.admin,
        b"POST /api/backends/api-1/kill HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer a token of sixteen+ charz\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), ["401"], "{answer}");
    assert_eq!(lb.state("api-1"), "up");
    let answer = exchange(
        lb.admin,
        b"GET /api/backends HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer a token of sixteen+ chars\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), ["200"], "{answer}");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn an_admin_api_beyond_loopback_needs_a_token() {
    let mut config = test_config();
    config.admin.listen = "0.0.0.0:0".parse().unwrap();
    let err = match ringside::app::bind_and_start(config, Default::default()).await {
        Ok(_) => panic!("started an open admin API without a token"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("admin.listen") && err.contains("token"), "{err}");
}
