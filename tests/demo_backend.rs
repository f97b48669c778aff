//! The demo backend on real loopback sockets: its pages and sessions (by
//! cookie, header and query parameter), that a kill is real and a revive
//! starts empty, the upgrade echo, and the request body limit.
//!
//! The client here is a tiny raw HTTP/1.1 one over `TcpStream`, so the tests
//! see exactly what goes over the wire (and when a connection really ends).

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringside::demo::backend::DemoBackend;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Every test is done within this, or fails.
const LIMIT: Duration = Duration::from_secs(15);
/// How long a connection may take to end after a kill.
const ENDS_WITHIN: Duration = Duration::from_secs(3);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test).await.expect("the test took too long");
}

async fn demo(name: &str) -> DemoBackend {
    DemoBackend::start(name, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value a `Set-Cookie: session_id=…` sets, with its attributes.
    fn set_cookie(&self) -> Option<&str> {
        self.header("set-cookie")
    }

    /// Checks what every answer has: the `x-backend` header and one line naming the backend.
    fn assert_from(&self, name: &str) {
        assert_eq!(self.header("x-backend"), Some(name), "{self:?}");
        assert!(self.body.starts_with(&format!("Backend Server {name}")), "{self:?}");
        assert!(self.body.ends_with('\n') && self.body.lines().count() == 1, "{self:?}");
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    async fn send_head(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body_len: Option<usize>) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: demo\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(len) = body_len {
            head.push_str(&format!("content-length: {len}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    }

    async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let len = (method == "POST").then_some(0);
        self.send_head(method, path, headers, len).await;
        self.read_answer().await
    }

    async fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("a header line");
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        (status, headers)
    }

    async fn read_answer(&mut self) -> Answer {
        let (status, headers) = self.read_head().await;
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("the demo backend sends a content-length");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    /// Waits until the server ends the connection (EOF or reset); fails if
    /// that takes longer than [`ENDS_WITHIN`] or if more bytes arrive.
    async fn assert_ends(&mut self, what: &str) {
        let mut rest = Vec::new();
        match tokio::time::timeout(ENDS_WITHIN, self.stream.read_to_end(&mut rest)).await {
            Err(_) => panic!("{what}: the connection was not dropped"),
            Ok(Ok(_)) => assert!(rest.is_empty(), "{what}: got {:?}", String::from_utf8_lossy(&rest)),
            Ok(Err(e)) => assert!(
                matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                "{what}: {e}"
            ),
        }
    }
}

/// One request on a fresh connection.
async fn once(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    Conn::open(addr).await.request(method, path, headers).await
}

/// Logs in and returns the session id from the cookie.
async fn login(conn: &mut Conn, name: &str, user: &str) -> String {
    let a = conn.request("POST", &format!("/login?user={user}"), &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.assert_from(name);
    let cookie = a.set_cookie().expect("login sets a cookie");
    let id = cookie
        .strip_prefix("session_id=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    assert_eq!(cookie, format!("session_id={id}; Path=/; HttpOnly"));
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(
        a.body,
        format!("Backend Server {name}: welcome {user} (session {id})\n")
    );
    id
}

/// profile → cart → cart → logout with the session carried however `carry` says.
async fn session_flow(b: &DemoBackend, carry: impl Fn(&str) -> (String, Vec<(String, String)>)) {
    let mut c = Conn::open(b.addr()).await;
    let id = login(&mut c, "api-1", "sydney").await;
    assert_eq!(b.sessions(), 1);
    let (suffix, headers) = carry(&id);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let sep = |path: &str| if path.contains('?') { '&' } else { '?' };
    let at = |path: &str| {
        if suffix.is_empty() {
            path.to_owned()
        } else {
            format!("{path}{}{suffix}", sep(path))
        }
    };

    let a = c.request("GET", &at("/profile"), &headers).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Backend Server api-1: profile of sydney\n")
    );
    a.assert_from("api-1");
    let a = c.request("POST", &at("/cart?item=boost"), &headers).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Backend Server api-1: added boost (1 items)\n")
    );
    let a = c.request("POST", &at("/cart?item=tea"), &headers).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Backend Server api-1: added tea (2 items)\n")
    );
    let a = c.request("GET", &at("/cart"), &headers).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Backend Server api-1: cart of sydney: boost, tea\n")
    );
    let a = c.request("POST", &at("/logout"), &headers).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "Backend Server api-1: goodbye sydney\n")
    );
    assert_eq!(a.set_cookie(), Some("session_id=; Path=/; Max-Age=0"));
    assert_eq!(b.sessions(), 0);

    // After the logout the session is gone, on every page that needs one.
    for (method, path) in [
        ("GET", "/profile"),
        ("POST", "/cart?item=x"),
        ("GET", "/cart"),
        ("POST", "/logout"),
    ] {
        let a = c.request(method, &at(path), &headers).await;
        assert_eq!(a.status, 401, "{method} {path}: {a:?}");
        assert_eq!(a.body, "Backend Server api-1: who are you? please log in\n");
        a.assert_from("api-1");
    }
}

#[tokio::test]
async fn a_session_by_cookie() {
    bounded(async {
        let b = demo("api-1").await;
        session_flow(&b, |id| {
            (
                String::new(),
                vec![("cookie".into(), format!("theme=dark; session_id={id}"))],
            )
        })
        .await;
        assert_eq!(b.requests(), 10);
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_by_header() {
    bounded(async {
        let b = demo("api-1").await;
        session_flow(&b, |id| (String::new(), vec![("X-Session-ID".into(), id.to_owned())])).await;
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_by_query_parameter() {
    bounded(async {
        let b = demo("api-1").await;
        session_flow(&b, |id| (format!("session={id}"), Vec::new())).await;
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn the_cookie_comes_before_the_header_and_the_header_before_the_query() {
    bounded(async {
        let b = demo("api-2").await;
        let mut c = Conn::open(b.addr()).await;
        let id = login(&mut c, "api-2", "kim").await;
        let cookie = format!("session_id={id}");
        let a = c
            .request(
                "GET",
                "/profile?session=0000000000000000",
                &[("cookie", &cookie), ("x-session-id", "nope")],
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let a = c
            .request(
                "GET",
                "/profile",
                &[("cookie", "session_id=0000000000000000"), ("x-session-id", &id)],
            )
            .await;
        assert_eq!(a.status, 401, "a cookie wins even when unknown: {a:?}");
        let a = c
            .request("GET", &format!("/profile?session={id}"), &[("x-session-id", "nope")])
            .await;
        assert_eq!(a.status, 401, "{a:?}");
        let a = c
            .request("GET", &format!("/profile?session={id}"), &[("cookie", "session_id=")])
            .await;
        assert_eq!(a.status, 200, "an empty cookie counts as none: {a:?}");
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn no_session_or_an_unknown_one_is_401() {
    bounded(async {
        let b = demo("api-3").await;
        let who = "Backend Server api-3: who are you? please log in\n";
        for headers in [
            vec![],
            vec![("cookie", "session_id=deadbeefdeadbeef")],
            vec![("x-session-id", "deadbeefdeadbeef")],
        ] {
            for (method, path) in [
                ("GET", "/profile"),
                ("POST", "/cart?item=x"),
                ("GET", "/cart"),
                ("POST", "/logout"),
            ] {
                let a = once(b.addr(), method, path, &headers).await;
                assert_eq!((a.status, a.body.as_str()), (401, who), "{method} {path} {headers:?}");
                a.assert_from("api-3");
            }
        }
        let a = once(b.addr(), "GET", "/profile?session=deadbeefdeadbeef", &[]).await;
        assert_eq!(a.status, 401);
        // A login without a user is a guest.
        let mut c = Conn::open(b.addr()).await;
        let a = c.request("POST", "/login", &[]).await;
        assert!(
            a.body.starts_with("Backend Server api-3: welcome guest (session "),
            "{a:?}"
        );
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn home_health_and_404() {
    bounded(async {
        let b = demo("api-4").await;
        assert_eq!(b.name(), "api-4");
        assert!(b.is_running());
        let mut c = Conn::open(b.addr()).await;
        let a = c.request("GET", "/", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "Backend Server api-4\n"));
        a.assert_from("api-4");
        let a = c.request("GET", "/health", &[]).await;
        assert_eq!((a.status, a.body.as_str()), (200, "Backend Server api-4: ok\n"));
        a.assert_from("api-4");
        for (method, path) in [
            ("GET", "/nope"),
            ("GET", "/login"),
            ("POST", "/profile"),
            ("DELETE", "/cart"),
        ] {
            let a = c.request(method, path, &[]).await;
            assert_eq!(
                (a.status, a.body.as_str()),
                (404, "Backend Server api-4: no such page\n"),
                "{method} {path}"
            );
            a.assert_from("api-4");
        }
        assert_eq!(b.requests(), 6, "all on one keep-alive connection");
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn sleep_waits_before_answering() {
    bounded(async {
        let b = demo("api-5").await;
        let started = Instant::now();
        let a = once(b.addr(), "GET", "/sleep?ms=300", &[]).await;
        assert_eq!(a.status, 200);
        a.assert_from("api-5");
        assert!(started.elapsed() >= Duration::from_millis(300));
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_kill_is_real_and_a_revive_starts_empty() {
    bounded(async {
        let b = demo("api-6").await;
        let addr = b.addr();
        let mut c = Conn::open(addr).await;
        let id = login(&mut c, "api-6", "ana").await;

        // An idle keep-alive connection, a stalled request, a slow one, and a tunnel.
        let mut idle = Conn::open(addr).await;
        assert_eq!(idle.request("GET", "/health", &[]).await.status, 200);
        let mut stalled = Conn::open(addr).await;
        stalled.send_head("GET", "/stall", &[], None).await;
        let mut slow = Conn::open(addr).await;
        slow.send_head("GET", "/sleep?ms=30000", &[], None).await;
        let mut tunnel = Conn::open(addr).await;
        tunnel
            .send_head(
                "GET",
                "/chat",
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                None,
            )
            .await;
        assert_eq!(tunnel.read_head().await.0, 101);
        // Let the server pick the stalled and slow requests up.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let killed = Instant::now();
        b.kill().await;
        assert!(
            killed.elapsed() < ENDS_WITHIN,
            "a kill does not wait for requests in flight"
        );
        assert!(!b.is_running());
        assert_eq!(b.sessions(), 0, "sessions die with the kill");
        let refused = TcpStream::connect(addr)
            .await
            .expect_err("connects are refused after a kill");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        idle.assert_ends("an idle keep-alive connection").await;
        stalled.assert_ends("a /stall in flight").await;
        slow.assert_ends("a /sleep in flight").await;
        c.assert_ends("the client's own connection").await;
        tunnel.assert_ends("an upgraded tunnel").await;
        // Idempotent.
        b.kill().await;
        assert!(!b.is_running());

        b.revive().await.unwrap();
        assert!(b.is_running());
        assert_eq!(b.addr(), addr, "a revive serves on the same address");
        let a = once(addr, "GET", "/", &[]).await;
        assert_eq!(a.status, 200);
        let a = once(addr, "GET", "/profile", &[("cookie", &format!("session_id={id}"))]).await;
        assert_eq!(a.status, 401, "the old session is gone: {a:?}");
        // A revive while running does nothing.
        let mut c = Conn::open(addr).await;
        login(&mut c, "api-6", "ana").await;
        b.revive().await.unwrap();
        assert_eq!(b.sessions(), 1);
        assert_eq!(c.request("GET", "/profile", &[]).await.status, 401, "no cookie sent");
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_revive_fails_when_the_port_was_taken() {
    bounded(async {
        let b = demo("api-7").await;
        b.kill().await;
        let squatter = std::net::TcpListener::bind(b.addr()).unwrap();
        let err = b.revive().await.expect_err("the port is taken");
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        assert!(!b.is_running());
        drop(squatter);
        b.revive().await.unwrap();
        assert_eq!(once(b.addr(), "GET", "/health", &[]).await.status, 200);
        b.kill().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_revives_racing_each_other() {
    bounded(async {
        let b = demo("api-8").await;
        let mut stalled = Conn::open(b.addr()).await;
        stalled.send_head("GET", "/stall", &[], None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let kills: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.kill().await })
            })
            .collect();
        for k in kills {
            k.await.unwrap();
        }
        assert!(!b.is_running());
        stalled.assert_ends("a /stall in flight").await;
        // A revive right behind a kill waits for it rather than finding the port busy.
        for _ in 0..20 {
            let (killer, reviver) = (b.clone(), b.clone());
            b.revive().await.unwrap();
            let kill = tokio::spawn(async move { killer.kill().await });
            let revive = tokio::spawn(async move { reviver.revive().await });
            kill.await.unwrap();
            revive.await.unwrap().unwrap();
        }
        b.revive().await.unwrap();
        assert_eq!(once(b.addr(), "GET", "/", &[]).await.status, 200);
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_echoes_every_byte() {
    bounded(async {
        let b = demo("api-9").await;
        let mut c = Conn::open(b.addr()).await;
        c.send_head(
            "GET",
            "/anywhere/at/all",
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
            ],
            None,
        )
        .await;
        let (status, headers) = c.read_head().await;
        assert_eq!(status, 101);
        let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(h("upgrade"), Some("websocket"));
        assert_eq!(h("connection"), Some("upgrade"));
        assert_eq!(h("x-backend"), Some("api-9"));
        for msg in [&b"hello"[..], b"GET / HTTP/1.1\r\n\r\n", &[0u8, 255, 1, 254]] {
            c.stream.get_mut().write_all(msg).await.unwrap();
            let mut echo = vec![0u8; msg.len()];
            c.stream.read_exact(&mut echo).await.unwrap();
            assert_eq!(echo, msg);
        }
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = c.stream.into_inner().into_split();
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                w.write_all(&big).await.unwrap();
                // Closing our half ends the tunnel; the server closes its half.
                w.shutdown().await.unwrap();
            })
        };
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(
            back == big,
            "the echo differs ({} bytes back of {})",
            back.len(),
            big.len()
        );

        // Another protocol name is echoed as given.
        let mut c = Conn::open(b.addr()).await;
        c.send_head("GET", "/", &[("connection", "upgrade"), ("upgrade", "foo/2")], None)
            .await;
        let (status, headers) = c.read_head().await;
        assert_eq!(status, 101);
        assert!(headers.contains(&("upgrade".into(), "foo/2".into())), "{headers:?}");
        b.kill().await;
    })
    .await;
}

#[tokio::test]
async fn request_bodies_are_limited_to_1_mib() {
    bounded(async {
        let b = demo("api-10").await;
        let mut c = Conn::open(b.addr()).await;
        let mib = 1 << 20;

        // Exactly 1 MiB is read and ignored.
        c.send_head("POST", "/login?user=big", &[], Some(mib)).await;
        c.stream.get_mut().write_all(&vec![b'x'; mib]).await.unwrap();
        let a = c.read_answer().await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains("welcome big"));

        // One byte more is 413, and the connection still serves.
        c.send_head("POST", "/login", &[], Some(mib + 1)).await;
        c.stream.get_mut().write_all(&vec![b'x'; mib + 1]).await.unwrap();
        let a = c.read_answer().await;
        assert_eq!(a.status, 413, "{a:?}");
        a.assert_from("api-10");
        assert_eq!(b.sessions(), 1, "no session from a refused request");
        assert_eq!(c.request("GET", "/health", &[]).await.status, 200);

        // The same for a chunked body.
        c.send_head("POST", "/login", &[("transfer-encoding", "chunked")], None)
            .await;
        let chunk = vec![b'y'; 64 * 1024];
        let mut wire = Vec::new();
        for _ in 0..17 {
            wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(&chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        c.stream.get_mut().write_all(&wire).await.unwrap();
        let a = c.read_answer().await;
        assert_eq!(a.status, 413, "{a:?}");
        assert_eq!(c.request("GET", "/", &[]).await.status, 200);

        // A huge announced body is refused without being read; the connection closes.
        let mut c = Conn::open(b.addr()).await;
        c.send_head("POST", "/login", &[], Some(1 << 30)).await;
        let a = c.read_answer().await;
        assert_eq!(a.status, 413, "{a:?}");
        c.assert_ends("a connection with an unread body").await;
        assert_eq!(b.sessions(), 1);
        b.kill().await;
    })
    .await;
}
