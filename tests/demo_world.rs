//! The demo world on loopback: the stateful demo backend (and that its kill
//! is real), and the synthetic clients that notice lost sessions.

mod common;

use std::time::Duration;

use common::{Client, Lb, test_config, wait_until};
use http::StatusCode;
use ringside::demo::backend::DemoBackend;
use ringside::demo::traffic::{Traffic, TrafficConfig, TrafficEvent};
use ringside::router::affinity::AffinityMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const SECS: Duration = Duration::from_secs(1);

async fn demo() -> DemoBackend {
    DemoBackend::start("api-7", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_demo_app_keeps_sessions_in_memory() {
    let b = demo().await;
    let mut c = Client::default();
    let home = c.get(b.addr(), "/").await;
    assert_eq!(home.body, "Backend Server api-7\n");
    assert_eq!(home.backend(), Some("api-7"));
    assert_eq!(c.get(b.addr(), "/health").await.status, StatusCode::OK);
    assert_eq!(c.get(b.addr(), "/profile").await.status, StatusCode::UNAUTHORIZED);
    let login = c.post(b.addr(), "/login?user=sydney").await;
    assert!(login.body.contains("welcome sydney"), "{}", login.body);
    let id = c.jar["session_id"].clone();
    assert_eq!(b.sessions(), 1);
    assert!(c.get(b.addr(), "/profile").await.body.contains("profile of sydney"));
    assert!(
        c.post(b.addr(), "/cart?item=boost")
            .await
            .body
            .contains("added boost (1 items)")
    );
    assert!(c.get(b.addr(), "/cart").await.body.contains("cart of sydney: boost"));
    // The same session by header or by query parameter.
    let mut by_header = Client::default();
    by_header.headers.push(("x-session-id".into(), id.clone()));
    assert_eq!(by_header.get(b.addr(), "/profile").await.status, StatusCode::OK);
    assert_eq!(
        Client::default()
            .get(b.addr(), &format!("/profile?session={id}"))
            .await
            .status,
        StatusCode::OK
    );
    let bye = c.post(b.addr(), "/logout").await;
    assert!(bye.body.contains("goodbye sydney"));
    assert!(!c.jar.contains_key("session_id"), "logout deletes the cookie");
    let after = by_header.get(b.addr(), "/profile").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body, "Backend Server api-7: who are you? please log in\n");
    assert_eq!(c.get(b.addr(), "/nope").await.status, StatusCode::NOT_FOUND);
    b.kill().await;
}

#[tokio::test]
async fn a_kill_is_real_and_a_revive_starts_empty() {
    let b = demo().await;
    let mut c = Client::default();
    c.post(b.addr(), "/login").await;
    // An idle keep-alive connection and a request in flight.
    let mut idle = TcpStream::connect(b.addr()).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(n > 0);
    let mut stalled = TcpStream::connect(b.addr()).await.unwrap();
    let served = b.requests();
    stalled
        .write_all(b"GET /stall HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // In flight once the backend has it.
    wait_until("the stalled request to arrive", 3 * SECS, || b.requests() > served).await;
    b.kill().await;
    assert!(!b.is_running());
    assert!(TcpStream::connect(b.addr()).await.is_err(), "connects are refused");
    for s in [&mut idle, &mut stalled] {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(3 * SECS, s.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "an open connection was not dropped");
    }
    assert_eq!(b.sessions(), 0);
    b.revive().await.unwrap();
    let r = c.get(b.addr(), "/profile").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "sessions died with the kill");
    b.kill().await;
}

#[tokio::test]
async fn upgrades_echo_and_bodies_are_limited() {
    let b = demo().await;
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));
    s.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    let mut big = TcpStream::connect(b.addr()).await.unwrap();
    let body = vec![b'x'; (1 << 20) + 10];
    big.write_all(
        format!(
            "POST /cart HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let _ = big.write_all(&body).await;
    let mut answer = vec![0u8; 512];
    let n = big.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"));
    b.kill().await;
}

fn traffic(proxy: std::net::SocketAddr, rate: f64, nat_share: f64) -> (Traffic, mpsc::Receiver<TrafficEvent>) {
    let (tx, rx) = mpsc::channel(4096);
    let t = Traffic::start(
        proxy,
        TrafficConfig {
            clients: 8,
            rate,
            nat_share,
            ..TrafficConfig::default()
        },
        tx,
        false,
    );
    (t, rx)
}

#[tokio::test]
async fn sticky_sessions_lose_nothing_and_no_affinity_loses_sessions() {
    for (mode, should_lose) in [(AffinityMode::LbCookie, false), (AffinityMode::None, true)] {
        let mut config = test_config();
        config.affinity.mode = mode;
        let lb = Lb::start(config).await;
        let (t, mut rx) = traffic(lb.proxy, 200.0, 0.0);
        // Enough logins and session use to tell; without affinity, until a loss.
        wait_until(&format!("{mode}: traffic"), 10 * SECS, || {
            let s = t.stats();
            s.requests > 200 && s.logins > 0 && (!should_lose || s.lost_sessions > 0)
        })
        .await;
        let stats = t.stats();
        t.stop().await;
        assert!(stats.requests > 50 && stats.logins > 0, "{mode}: {stats:?}");
        assert_eq!(stats.errors + stats.status_5xx, 0, "{mode}: {stats:?}");
        let mut lost_events = 0;
        while let Ok(e) = rx.try_recv() {
            if let TrafficEvent::LostSession { backend, .. } = e {
                assert!(backend.is_some_and(|b| b.starts_with("api-")));
                lost_events += 1;
            }
        }
        if should_lose {
            assert!(stats.lost_sessions > 0 && lost_events > 0, "{mode}: {stats:?}");
        } else {
            assert_eq!(stats.lost_sessions, 0, "{mode}: {stats:?}");
        }
        lb.handle.shutdown().await;
    }
}

#[tokio::test]
async fn the_rate_is_respected_paused_and_changed() {
    let lb = Lb::start(test_config()).await;
    let (t, _rx) = traffic(lb.proxy, 20.0, 0.3);
    let started = tokio::time::Instant::now();
    wait_until("30 requests", 10 * SECS, || t.stats().requests >= 30).await;
    // At 20/s with a tenth of a second of burst, 30 take at least 1.4 s.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1200), "30 requests in {took:?} at 20/s");
    t.pause();
    assert!(!t.is_running());
    // Paused, even a high rate sends nothing: clients finish the request in
    // hand and the permits already granted (a burst), then stop. The window
    // only observes that: ignored, the pause would let ~600 requests through.
    t.set_rate(2000.0);
    assert_eq!(t.rate(), 2000.0);
    let at_pause = t.stats().requests;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = t.stats().requests;
    assert!(
        paused <= at_pause + 8 + 2,
        "{} requests while paused",
        paused - at_pause
    );
    t.set_rate(200.0);
    t.resume();
    let resumed = tokio::time::Instant::now();
    wait_until("100 more requests", 10 * SECS, || t.stats().requests >= paused + 100).await;
    let took = resumed.elapsed();
    // At 200/s (burst 20): at least 0.4 s, and well under the 5 s of 20/s.
    assert!(
        took >= Duration::from_millis(300) && took < 4 * SECS,
        "100 requests in {took:?} at 200/s"
    );
    t.stop().await;
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn clients_behind_one_nat_address_pile_onto_one_backend_with_source_ip() {
    let mut config = test_config();
    config.affinity.mode = AffinityMode::SourceIp;
    let lb = Lb::start(config).await;
    let (t, _rx) = traffic(lb.proxy, 200.0, 1.0);
    wait_until("100 requests", 10 * SECS, || t.stats().requests >= 100).await;
    t.stop().await;
    let busy: Vec<u64> = lb.handle.backends_view().iter().map(|b| b.requests).collect();
    assert_eq!(
        busy.iter().filter(|&&r| r > 0).count(),
        1,
        "all on one backend: {busy:?}"
    );
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_dead_proxy_counts_errors_and_stops_promptly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (t, _rx) = traffic(closed, 100.0, 0.0);
    wait_until("errors counted", 5 * SECS, || t.stats().errors > 0).await;
    tokio::time::timeout(2 * SECS, t.stop())
        .await
        .expect("stop() returns promptly");
}
