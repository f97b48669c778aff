//! Bounded under slow, idle and flooding clients: every limit and timeout
//! over real sockets, with short configured values so the tests stay fast —
//! keep-alive idle (advertised), parked idle and silent connections, a slow
//! head within its time, a stalled request body (408, not the backend's
//! fault), a client that reads nothing, the cap on client connections, a
//! backend's cap and queue (503 + Retry-After), descriptor exhaustion under
//! a low `ulimit -n` (no backend blamed), and an idle tunnel.

#[path = "conformance/support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, Client, Ringside, Step, WAIT, ok};

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n\r\n").into_bytes()
}

fn one_backend(backend: &Backend, lines: &str) -> Ringside {
    Ringside::with_proxy_config(&[("b1", backend.addr)], lines)
}

fn backend_state(ringside: &Ringside, name: &str) -> String {
    let answer = ringside.admin_request("GET", &format!("/api/backends/{name}"));
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    v["state"].as_str().unwrap_or("?").to_owned()
}

#[test]
fn an_idle_keep_alive_connection_closes_after_its_advertised_timeout() {
    let backend = Backend::ok("x");
    let ringside = one_backend(&backend, "keepalive_timeout_ms = 1000");
    let mut c = Client::connect(ringside.proxy);
    c.send(&get("/"));
    let first = c.response();
    assert_eq!(first.status(), 200, "{}", first.describe());
    assert_eq!(first.header("keep-alive").as_deref(), Some("timeout=1"));
    // Still open right away: a second request on it is answered.
    c.send(&get("/again"));
    assert_eq!(c.response().status(), 200);
    assert!(c.closes_within(WAIT), "idle past the timeout, the connection closes");
}

#[test]
fn a_slow_head_within_the_head_timeout_is_served_after_a_quick_request() {
    let backend = Backend::ok("x");
    let ringside = one_backend(&backend, "header_read_timeout_ms = 1000");
    let mut c = Client::connect(ringside.proxy);
    c.send(&get("/quick"));
    assert_eq!(c.response().status(), 200);
    // Right away (before the connection would park), a head sent in three
    // parts over 600 ms: the limits timer, armed for the idle connection,
    // fires in between and must not cut a head still within its time.
    c.send(b"GET /slow HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"Host: app.example\r\n");
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"\r\n");
    let slow = c.response();
    assert_eq!(slow.status(), 200, "{}", slow.describe());
    assert_eq!(backend.requests().len(), 2);
}

#[test]
fn a_parked_idle_connection_is_served_when_it_speaks_again() {
    let backend = Backend::ok("x");
    let ringside = one_backend(&backend, "");
    let mut c = Client::connect(ringside.proxy);
    c.send(&get("/"));
    assert_eq!(c.response().status(), 200);
    // Idle for a while, the connection gives hyper's buffers back.
    let deadline = Instant::now() + WAIT;
    while ringside.counter("/parked_connections") == 0 {
        assert!(Instant::now() < deadline, "the idle connection was never parked");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.send(&get("/after-a-pause"));
    let again = c.response();
    assert_eq!(again.status(), 200, "{}", again.describe());
    assert_eq!(ringside.counter("/parked_connections"), 0);
    assert_eq!(backend.requests().len(), 2);
}

#[test]
fn a_connection_that_never_speaks_is_parked_then_closed_at_the_head_timeout() {
    let backend = Backend::ok("x");
    let ringside = one_backend(&backend, "header_read_timeout_ms = 1000");
    let mut c = Client::connect(ringside.proxy);
    // Held with no buffer until it speaks.
    let parked = ringside.wait_counter("/parked_connections", 1);
    assert!(parked >= 1, "{}", ringside.stats());
    assert!(
        c.closes_within(WAIT),
        "a silent connection is closed at the head timeout"
    );
    assert!(ringside.wait_counter("/client_timeouts", 1) >= 1);
    assert_eq!(ringside.counter("/parked_connections"), 0);
    assert!(
        backend.connections().is_empty(),
        "no backend connection for a silent client"
    );
    // One that speaks at once is served as usual.
    let mut d = Client::connect(ringside.proxy);
    d.send(&get("/"));
    assert_eq!(d.response().status(), 200);
}

#[test]
fn a_request_body_stalled_past_the_client_timeout_is_408_and_not_the_backends_fault() {
    let backend = Backend::ok("x");
    let ringside = one_backend(&backend, "client_timeout_ms = 300\nbackend_timeout_ms = 10000");
    let mut c = Client::connect(ringside.proxy);
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\n0123456789");
    let answer = c.response();
    assert_eq!(answer.status(), 408, "{}", answer.describe());
    assert!(
        backend.wait_until(|conns| conns.iter().all(|c| c.closed)),
        "the backend connection is released"
    );
    assert!(backend.requests().is_empty(), "no complete request reached the backend");
    assert!(ringside.wait_counter("/client_timeouts", 1) >= 1);
    assert_eq!(ringside.counter("/responses/bad_gateway_502"), 0);
    assert_eq!(ringside.counter("/responses/gateway_timeout_504"), 0);
    assert_eq!(backend_state(&ringside, "b1"), "up");
}

#[test]
fn a_client_that_reads_nothing_is_cut_and_its_backend_connection_released() {
    // Eight megabytes, more than every socket buffer on the way holds.
    let big = vec![b'x'; 8 << 20];
    let answer = [
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes(),
        big,
    ]
    .concat();
    let backend = Backend::answering(answer);
    let ringside = one_backend(&backend, "client_timeout_ms = 300");
    let mut c = Client::connect(ringside.proxy);
    c.send(&get("/download"));
    // Read nothing at all.
    assert!(
        backend.wait_until(|conns| !conns.is_empty() && conns.iter().all(|c| c.closed)),
        "the backend's connection is closed once the client is cut"
    );
    assert!(ringside.wait_counter("/client_timeouts", 1) >= 1);
    assert_eq!(backend_state(&ringside, "b1"), "up");
    drop(c);
}

#[test]
fn beyond_the_connection_cap_clients_wait_in_the_backlog_and_are_served_in_turn() {
    let backend = Backend::ok("x");
    let ringside = one_backend(&backend, "[limits]\nmax_connections = 2");
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(ringside.proxy);
            c.send(&get("/hold"));
            assert_eq!(c.response().status(), 200);
            c
        })
        .collect();
    let mut third = Client::connect(ringside.proxy);
    third.send(&get("/third"));
    // Not accepted while two are open: nothing comes back yet.
    assert!(
        !third.closes_within(Duration::from_millis(500)),
        "a connection beyond the cap is not half-served"
    );
    assert_eq!(
        backend.requests().len(),
        2,
        "the third request has not reached the backend"
    );
    held.pop().unwrap().close();
    let answer = third.response();
    assert_eq!(answer.status(), 200, "{}", answer.describe());
}

#[test]
fn a_backend_at_its_cap_queues_requests_then_answers_503_with_retry_after() {
    let backend = Backend::scripted(|req| {
        if req.target() == "/slow" {
            vec![Step::Sleep(Duration::from_millis(1500)), Step::Send(ok("slow"))]
        } else {
            vec![Step::Send(ok("fast"))]
        }
    });
    let ringside = one_backend(
        &backend,
        "backend_timeout_ms = 5000\n[limits]\nmax_conns_per_backend = 1\nqueue_timeout_ms = 300",
    );
    let mut slow = Client::connect(ringside.proxy);
    slow.send(&get("/slow"));
    backend.wait_requests(1);
    let view = ringside.admin_request("GET", "/api/backends/b1");
    let v: Value = serde_json::from_slice(&view.body).unwrap();
    assert_eq!((v["in_use"].as_u64(), v["cap"].as_u64()), (Some(1), Some(1)), "{v}");
    let mut waiting = Client::connect(ringside.proxy);
    waiting.send(&get("/fast"));
    let refused = waiting.response();
    assert_eq!(refused.status(), 503, "{}", refused.describe());
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert!(ringside.counter("/queue_timeouts") >= 1);
    assert_eq!(slow.response().status(), 200);
    // With the place free again, the next request is served.
    let mut next = Client::connect(ringside.proxy);
    next.send(&get("/fast"));
    assert_eq!(next.response().status(), 200);
    assert_eq!(backend_state(&ringside, "b1"), "up");
}

#[test]
fn descriptor_exhaustion_under_a_low_ulimit_blames_no_backend() {
    let backend = Backend::scripted(|_| vec![Step::Sleep(Duration::from_millis(300)), Step::Send(ok("x"))]);
    // The cap set far beyond what 128 descriptors allow, so ringside really
    // runs out.
    let ringside = Ringside::with_fd_limit(
        &[("b1", backend.addr)],
        "backend_timeout_ms = 5000\n[limits]\nmax_connections = 1000",
        128,
    );
    let clients: Vec<std::thread::JoinHandle<u16>> = (0..200)
        .map(|_| {
            let proxy = ringside.proxy;
            std::thread::spawn(move || {
                let Ok(mut s) = std::net::TcpStream::connect(proxy) else {
                    return 0;
                };
                let _ = s.set_read_timeout(Some(WAIT));
                if std::io::Write::write_all(&mut s, b"GET /burst HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    .is_err()
                {
                    return 0;
                }
                let mut buf = [0u8; 64];
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(n) if n >= 12 => std::str::from_utf8(&buf[9..12])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    _ => 0,
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.contains(&200), "some of the burst is served: {statuses:?}");
    let stats = ringside.stats();
    assert!(
        stats["local_errors"].as_u64().unwrap_or(0) > 0,
        "ringside ran out of descriptors and counted it as its own: {stats}"
    );
    assert_eq!(backend_state(&ringside, "b1"), "up", "the backend is not blamed");
    assert!(
        ringside
            .log_tail(64 * 1024)
            .contains("ringside is out of file descriptors"),
        "the log says whose fault it is: {}",
        ringside.log_tail(4096)
    );
    // Once the burst is over, requests are served again.
    let mut c = Client::connect(ringside.proxy);
    c.send(&get("/after"));
    assert_eq!(c.response().status(), 200);
}

#[test]
fn a_tunnel_idle_past_its_timeout_is_closed() {
    let backend = Backend::scripted(|_| {
        vec![
            Step::Send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n".to_vec()),
            Step::Sleep(Duration::from_secs(30)),
        ]
    });
    let ringside = one_backend(&backend, "tunnel_timeout_ms = 400");
    let mut c = Client::connect(ringside.proxy);
    c.send(b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n");
    let switched = c.head_response();
    assert_eq!(switched.status(), 101, "{}", switched.describe());
    assert!(c.closes_within(WAIT), "an idle tunnel is closed at its timeout");
}
