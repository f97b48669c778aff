//! Faults survived on loopback: a backend dying in the middle of a response,
//! a backend that accepts and never answers, every backend down, and a
//! backend that flaps up and down every second.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Lb, test_config};
use http::StatusCode;
use ringside::config::{BackendEntry, Config};
use ringside::demo::backend::DemoBackend;
use ringside::engine::Command;
use ringside::router::affinity::AffinityMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECS: Duration = Duration::from_secs(1);

/// A backend that reads a request head and then does what `behave` says
/// with the raw socket.
async fn scripted_backend<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(String, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let behave = Arc::clone(&behave);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                behave(String::from_utf8_lossy(&head).into_owned(), s).await;
            });
        }
    });
    addr
}

fn external(config: &mut Config, backends: &[(&str, SocketAddr)]) {
    config.backends = backends
        .iter()
        .map(|(name, addr)| BackendEntry {
            name: (*name).into(),
            addr: *addr,
            weight: 1,
        })
        .collect();
}

/// Waits until no client connection and no backend connection is open.
async fn wait_quiet(lb: &Lb) {
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    loop {
        let open = lb.handle.stats_view().client_connections;
        let active: u64 = lb.handle.backends_view().iter().map(|b| b.active).sum();
        if open == 0 && active == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} client and {active} backend connections still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backend_dying_mid_response_ends_only_that_request() {
    let dying = scripted_backend(|head, mut s| async move {
        if head.starts_with("GET /health") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        } else if head.contains(" /half ") {
            // Headers and a tenth of the body, then the process "dies".
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
        }
        // Anything else: closed before any answer.
    })
    .await;
    let mut config = test_config();
    external(&mut config, &[("dying", dying)]);
    config.affinity.mode = AffinityMode::None;
    let lb = Lb::start(config).await;
    lb.wait_state("dying", "up", 3 * SECS).await;

    // Before the headers: a clean 502, for an idempotent GET and a POST.
    for method in ["GET", "POST"] {
        let mut s = TcpStream::connect(lb.proxy).await.unwrap();
        s.write_all(format!("{method} /none HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(5 * SECS, s.read(&mut answer))
            .await
            .expect("an answer, not a hang")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 502"), "{method}: {answer}");
    }
    // The GET was resendable (there was nowhere else to send it); the POST
    // was taken by the backend and must not be repeated: lost in flight.
    let stats = lb.handle.stats_view();
    assert_eq!(stats.responses.bad_gateway_502, 2);
    assert_eq!(stats.lost_in_flight, 1);
    // After the headers: the client sees them, then the connection closes
    // short of the promised length.
    let mut s = TcpStream::connect(lb.proxy).await.unwrap();
    s.write_all(b"GET /half HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(5 * SECS, s.read_to_end(&mut answer))
        .await
        .expect("the connection closes, nothing hangs")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    drop(s);
    wait_quiet(&lb).await;
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_504_and_is_marked_down() {
    let silent = scripted_backend(|_, s| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    })
    .await;
    let live = DemoBackend::start("live", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    external(&mut config, &[("silent", silent), ("live", live.addr())]);
    config.affinity.mode = AffinityMode::None;
    config.routing.placement = ringside::router::Placement::RoundRobin;
    config.proxy.backend_timeout_ms = 800;
    config.health.interval_ms = 1000;
    config.health.timeout_ms = 300;
    let lb = Lb::start(config).await;

    // Four requests at once: two wait on the silent backend, two go to the
    // live one and are answered while the other two are still waiting.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..4 {
        let done = done_tx.clone();
        let proxy = lb.proxy;
        tokio::spawn(async move {
            let _ = done.send(Client::default().get(proxy, "/").await.status);
        });
    }
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(tokio::time::timeout(5 * SECS, done_rx.recv()).await.unwrap().unwrap());
    }
    assert_eq!(
        order,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::GATEWAY_TIMEOUT,
            StatusCode::GATEWAY_TIMEOUT
        ]
    );
    lb.wait_state("silent", "down", 5 * SECS).await;
    for _ in 0..6 {
        let a = Client::default().get(lb.proxy, "/").await;
        assert_eq!((a.status, a.backend()), (StatusCode::OK, Some("live")));
    }
    assert_eq!(lb.handle.stats_view().responses.gateway_timeout_504, 2);
    lb.handle.shutdown().await;
    live.kill().await;
}

#[tokio::test]
async fn all_backends_down_is_503_at_once_then_a_revival_serves() {
    let lb = Lb::start(test_config()).await;
    for name in ["api-1", "api-2", "api-3"] {
        lb.handle.execute(Command::Kill(name.into())).await.unwrap();
    }
    for name in ["api-1", "api-2", "api-3"] {
        lb.wait_state(name, "killed", 3 * SECS).await;
    }
    let started = tokio::time::Instant::now();
    let a = Client::default().get(lb.proxy, "/").await;
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers.get("retry-after").unwrap(), "1");
    assert!(took < SECS, "503 took {took:?}: nothing to wait for");
    lb.handle.execute(Command::Revive("api-2".into())).await.unwrap();
    lb.wait_state("api-2", "up", 3 * SECS).await;
    let a = Client::default().get(lb.proxy, "/").await;
    assert_eq!((a.status, a.backend()), (StatusCode::OK, Some("api-2")));
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_flapping_backend_moves_each_session_at_most_once() {
    let steady = DemoBackend::start("steady", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let flappy = DemoBackend::start("flappy", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    external(&mut config, &[("steady", steady.addr()), ("flappy", flappy.addr())]);
    config.health.fall = 2;
    config.health.rise = 2;
    let lb = Lb::start(config).await;
    lb.wait_state("flappy", "up", 3 * SECS).await;

    // Up and down every second for six seconds, while 20 clients with cookie
    // jars keep asking.
    let flapper = {
        let flappy = flappy.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(SECS).await;
                flappy.kill().await;
                tokio::time::sleep(SECS).await;
                flappy.revive().await.unwrap();
            }
        })
    };
    let mut clients = vec![Client::default(); 20];
    let mut seen: HashMap<usize, Vec<String>> = HashMap::new();
    let mut failures = 0;
    while !flapper.is_finished() {
        for (i, c) in clients.iter_mut().enumerate() {
            let a = c.get(lb.proxy, "/").await;
            match a.backend() {
                Some(b) => {
                    let trail = seen.entry(i).or_default();
                    if trail.last().map(String::as_str) != Some(b) {
                        trail.push(b.to_owned());
                    }
                }
                None => failures += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_flappy = seen.values().filter(|t| t[0] == "flappy").count();
    assert!(
        on_flappy > 0,
        "no session ever started on the flapping backend: {seen:?}"
    );
    for (client, trail) in &seen {
        match trail.as_slice() {
            [_] => {}
            [from, to] => assert_eq!((from.as_str(), to.as_str()), ("flappy", "steady"), "client {client}"),
            _ => panic!("client {client} oscillated: {trail:?}"),
        }
    }
    assert!(failures <= 3, "{failures} failed requests: at most one per kill");
    // Counters agree with each other.
    let stats = lb.handle.stats_view();
    let per_backend: u64 = lb.handle.backends_view().iter().map(|b| b.sessions).sum();
    assert_eq!(per_backend, stats.router.sessions);
    let moved = seen.values().filter(|t| t.len() == 2).count() as u64;
    assert!(
        stats.router.reassigned >= moved,
        "{} < {moved}",
        stats.router.reassigned
    );
    wait_quiet(&lb).await;
    lb.handle.shutdown().await;
    steady.kill().await;
    flappy.kill().await;
}
