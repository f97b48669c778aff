//! The live proxy on loopback: persistence in every affinity mode, the
//! article's three curl tests, redispatch, kill and detection, drains,
//! tunnels, health checks and ringside's own error answers.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Lb, admin_json, test_config};
use http::{Method, StatusCode};
use ringside::config::BackendEntry;
use ringside::demo::backend::DemoBackend;
use ringside::engine::Command;
use ringside::router::affinity::AffinityMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECS: Duration = Duration::from_secs(1);

#[tokio::test]
async fn the_balancer_cookie_keeps_a_client_on_one_backend() {
    let lb = Lb::start(test_config()).await;
    let mut client = Client::default();
    let first = client.get(lb.proxy, "/").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.body.starts_with("Backend Server api-"), "{}", first.body);
    let cookie = first
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("SERVERID="))
        .expect("SERVERID set");
    assert!(
        cookie.contains("Path=/") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("api-"),
        "the cookie must not show a backend name: {cookie}"
    );
    let home = first.backend().unwrap().to_owned();
    for _ in 0..10 {
        let next = client.get(lb.proxy, "/").await;
        assert_eq!(next.backend(), Some(home.as_str()));
        assert!(
            next.set_cookies().is_empty(),
            "the cookie is set only when a session is created or moved"
        );
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn the_balancer_cookie_never_reaches_the_backend() {
    // A backend that echoes the Cookie header it received.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let cookie = text
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("cookie:"))
                    .unwrap_or("cookie: <none>")
                    .to_owned();
                let body = format!("{cookie}\n");
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    let mut config = test_config();
    config.backends = vec![BackendEntry {
        name: "echo".into(),
        addr,
        weight: 1,
    }];
    let lb = Lb::start(config).await;
    let mut client = Client::default();
    client.get(lb.proxy, "/").await;
    client.jar.insert("theme".into(), "dark".into());
    let seen = client.get(lb.proxy, "/").await;
    assert!(client.jar.contains_key("SERVERID"));
    assert!(seen.body.contains("theme=dark"), "{}", seen.body);
    assert!(!seen.body.contains("SERVERID"), "{}", seen.body);
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn every_affinity_mode_keeps_a_logged_in_user() {
    for mode in [
        AffinityMode::AppCookie,
        AffinityMode::Header,
        AffinityMode::Query,
        AffinityMode::LbCookie,
    ] {
        let mut config = test_config();
        config.affinity.mode = mode;
        config.routing.placement = ringside::router::Placement::RoundRobin;
        let lb = Lb::start(config).await;
        let mut client = Client::default();
        let login = client.post(lb.proxy, "/login?user=sydney").await;
        assert_eq!(login.status, StatusCode::OK, "{mode}: {}", login.body);
        let id = client.jar.get("session_id").cloned().expect("session_id cookie");
        let query = if mode == AffinityMode::Query {
            format!("?session={id}")
        } else {
            String::new()
        };
        if mode == AffinityMode::Header {
            client.headers.push(("x-session-id".into(), id.clone()));
        }
        if mode == AffinityMode::Query {
            // Only the query parameter carries the id.
            client.jar.remove("session_id");
        }
        for _ in 0..6 {
            let r = client.get(lb.proxy, &format!("/profile{query}")).await;
            assert_eq!(r.status, StatusCode::OK, "{mode}: {}", r.body);
            assert_eq!(r.backend(), login.backend(), "{mode}");
        }
        // The application's logout deletes its cookie: the balancer's session
        // for that id ends too (the balancer's own cookie session does not).
        let bye = client.post(lb.proxy, &format!("/logout{query}")).await;
        assert_eq!(bye.status, StatusCode::OK, "{mode}: {}", bye.body);
        let ended = lb.handle.stats_view().router.ended;
        assert_eq!(ended, u64::from(mode != AffinityMode::LbCookie), "{mode}");
        lb.handle.shutdown().await;
    }
}

#[tokio::test]
async fn without_affinity_sydney_loses_her_session() {
    let mut config = test_config();
    config.affinity.mode = AffinityMode::None;
    config.routing.placement = ringside::router::Placement::RoundRobin;
    let lb = Lb::start(config).await;
    let mut client = Client::default();
    client.post(lb.proxy, "/login?user=sydney").await;
    let r = client.get(lb.proxy, "/profile").await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "round-robin sent her elsewhere: {}",
        r.body
    );
    assert!(r.body.contains("who are you"));
    let backends: HashSet<String> = futures_backends(&lb, 6).await;
    assert!(backends.len() >= 2, "{backends:?}");
    lb.handle.shutdown().await;
}

async fn futures_backends(lb: &Lb, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let r = Client::default().get(lb.proxy, "/").await;
        seen.insert(r.backend().unwrap_or("?").to_owned());
    }
    seen
}

/// The article's test 1: consistent hashing on the client address.
#[tokio::test]
async fn article_test_1_source_ip_sticks() {
    let mut config = test_config();
    config.affinity.mode = AffinityMode::SourceIp;
    let lb = Lb::start(config).await;
    let first = Client::default().get(lb.proxy, "/").await;
    for _ in 0..10 {
        let r = Client::default().get(lb.proxy, "/").await;
        assert_eq!(r.backend(), first.backend());
    }
    // Clients behind a trusted proxy are told apart by X-Forwarded-For.
    let mut seen = HashSet::new();
    for i in 0..30 {
        let mut c = Client::default();
        c.headers.push(("x-forwarded-for".into(), format!("198.51.100.{i}")));
        seen.insert(c.get(lb.proxy, "/").await.backend().unwrap().to_owned());
    }
    assert!(seen.len() >= 2, "{seen:?}");
    lb.handle.shutdown().await;
}

/// The article's tests 2 and 3: cookie persistence, then the server dies and
/// requests move automatically — with zero errors for the client.
#[tokio::test]
async fn article_tests_2_and_3_cookie_then_failover() {
    let lb = Lb::start(test_config()).await;
    let mut client = Client::default();
    let home = client.get(lb.proxy, "/").await.backend().unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(client.get(lb.proxy, "/").await.backend(), Some(home.as_str()));
    }
    let old_cookie = client.jar["SERVERID"].clone();
    lb.handle.execute(Command::Kill(home.clone())).await.unwrap();
    let mut after = Vec::new();
    for _ in 0..8 {
        let r = client.get(lb.proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK, "no client-visible error: {}", r.body);
        after.push(r.backend().unwrap().to_owned());
    }
    assert!(after.iter().all(|b| *b != home), "{after:?}");
    assert!(
        after.windows(2).all(|w| w[0] == w[1]),
        "it sticks to its new backend: {after:?}"
    );
    assert_ne!(client.jar["SERVERID"], old_cookie, "the cookie was rewritten");
    lb.wait_state(&home, "killed", 3 * SECS).await;
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_kill_is_detected_and_only_its_sessions_move() {
    let lb = Lb::start(test_config()).await;
    let mut clients: Vec<Client> = vec![Client::default(); 30];
    let mut homes = Vec::new();
    for c in &mut clients {
        homes.push(c.get(lb.proxy, "/").await.backend().unwrap().to_owned());
    }
    let victim = homes[0].clone();
    let on_victim = homes.iter().filter(|h| **h == victim).count() as u64;
    lb.handle.execute(Command::Kill(victim.clone())).await.unwrap();
    lb.wait_state(&victim, "killed", 3 * SECS).await;
    let view = lb.handle.backends_view();
    let v = view.iter().find(|b| b.name == victim).unwrap();
    let detected = v.detected_after_ms.expect("time to detection measured");
    assert!(detected < 2000, "{detected} ms");
    assert_eq!(v.sessions, 0);
    assert_eq!(lb.handle.stats_view().router.reassigned, on_victim);
    let remap = lb.handle.stats_view().last_remap.unwrap();
    assert_eq!(remap.moved, on_victim);
    for (c, home) in clients.iter_mut().zip(&homes) {
        let r = c.get(lb.proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK);
        if *home != victim {
            assert_eq!(r.backend(), Some(home.as_str()), "sessions elsewhere never move");
        }
    }
    // Revive: health checks bring it back; sessions stay where they are.
    lb.handle.execute(Command::Revive(victim.clone())).await.unwrap();
    lb.wait_state(&victim, "up", 3 * SECS).await;
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_refused_connect_is_redispatched_without_errors() {
    let demo = DemoBackend::start("live", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = test_config();
    config.health.interval_ms = 60_000; // only passive health acts here
    config.backends = vec![
        BackendEntry {
            name: "dead".into(),
            addr: closed,
            weight: 1,
        },
        BackendEntry {
            name: "live".into(),
            addr: demo.addr(),
            weight: 1,
        },
    ];
    config.routing.placement = ringside::router::Placement::RoundRobin;
    let lb = Lb::start(config).await;
    for _ in 0..10 {
        let r = Client::default().get(lb.proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.backend(), Some("live"));
    }
    assert!(lb.handle.stats_view().redispatched >= 1);
    assert_eq!(lb.state("dead"), "down", "fall connect failures mark it down");
    lb.handle.shutdown().await;
    demo.kill().await;
}

#[tokio::test]
async fn health_checks_fall_and_rise() {
    let outside = DemoBackend::start("outside", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    config.backends = vec![BackendEntry {
        name: "outside".into(),
        addr: outside.addr(),
        weight: 1,
    }];
    let lb = Lb::start(config).await;
    outside.kill().await;
    lb.wait_state("outside", "down", 3 * SECS).await;
    let r = Client::default().get(lb.proxy, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    assert!(r.body.starts_with("503"), "{}", r.body);
    outside.revive().await.unwrap();
    lb.wait_state("outside", "up", 3 * SECS).await;
    assert_eq!(Client::default().get(lb.proxy, "/").await.status, StatusCode::OK);
    lb.handle.shutdown().await;
    outside.kill().await;
}

#[tokio::test]
async fn a_slow_backend_gets_504_and_a_broken_one_502() {
    // Closes every connection as soon as a request arrives.
    let broken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_addr = broken.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = broken.accept().await else { return };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let slow = DemoBackend::start("slow", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    config.proxy.backend_timeout_ms = 300;
    config.proxy.retries = 0;
    config.backends = vec![
        BackendEntry {
            name: "slow".into(),
            addr: slow.addr(),
            weight: 1,
        },
        BackendEntry {
            name: "broken".into(),
            addr: broken_addr,
            weight: 1,
        },
    ];
    config.affinity.mode = AffinityMode::None;
    config.routing.placement = ringside::router::Placement::RoundRobin;
    config.health.interval_ms = 60_000;
    let lb = Lb::start(config).await;
    let mut statuses = HashSet::new();
    for _ in 0..4 {
        statuses.insert(Client::default().post(lb.proxy, "/stall").await.status);
    }
    assert!(statuses.contains(&StatusCode::GATEWAY_TIMEOUT), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    lb.handle.shutdown().await;
    slow.kill().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_slow_headers_are_cut_off() {
    let mut config = test_config();
    config.proxy.max_header_bytes = 8192;
    config.proxy.header_read_timeout_ms = 300;
    let lb = Lb::start(config).await;
    let mut s = TcpStream::connect(lb.proxy).await.unwrap();
    let big = "x".repeat(20_000);
    s.write_all(format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(5 * SECS, s.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // A client that sends its headers too slowly is disconnected.
    let mut slow = TcpStream::connect(lb.proxy).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(5 * SECS, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client was not cut off");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn upgrades_are_tunnelled_and_counted() {
    let mut config = test_config();
    config.demo.backends = 1;
    let lb = Lb::start(config).await;
    let mut s = TcpStream::connect(lb.proxy).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(5 * SECS, s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echo = vec![0u8; 23];
    tokio::time::timeout(5 * SECS, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping through the tunnel");
    assert_eq!(
        lb.handle.backends_view()[0].active,
        1,
        "an open tunnel is an active connection"
    );
    assert_eq!(lb.handle.stats_view().tunnels, 1);
    drop(s);
    let deadline = tokio::time::Instant::now() + 3 * SECS;
    while lb.handle.backends_view()[0].active != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tunnel was not counted down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_drain_keeps_sessions_refuses_new_ones_then_ends() {
    let lb = Lb::start(test_config()).await;
    // Demo traffic runs through the whole drain.
    let (events, _rx) = tokio::sync::mpsc::channel(1024);
    let traffic = ringside::demo::traffic::Traffic::start(
        lb.proxy,
        ringside::demo::traffic::TrafficConfig {
            clients: 10,
            rate: 100.0,
            ..Default::default()
        },
        events,
        false,
    );
    let mut clients: Vec<Client> = vec![Client::default(); 24];
    let mut homes = Vec::new();
    for c in &mut clients {
        homes.push(c.get(lb.proxy, "/").await.backend().unwrap().to_owned());
    }
    let target = homes[0].clone();
    lb.handle
        .execute(Command::Drain {
            backend: target.clone(),
            timeout: Some(Duration::from_secs(2)),
        })
        .await
        .unwrap();
    assert_eq!(lb.state(&target), "draining");
    for (c, home) in clients.iter_mut().zip(&homes) {
        assert_eq!(
            c.get(lb.proxy, "/").await.backend(),
            Some(home.as_str()),
            "existing sessions stay"
        );
    }
    for _ in 0..20 {
        assert_ne!(
            Client::default().get(lb.proxy, "/").await.backend(),
            Some(target.as_str()),
            "no new session lands there"
        );
    }
    lb.wait_state(&target, "drained", 5 * SECS).await;
    for c in clients.iter_mut() {
        let r = c.get(lb.proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.backend(), Some(target.as_str()));
    }
    let t = traffic.stats();
    traffic.stop().await;
    assert!(t.requests > 100, "{t:?}");
    assert_eq!(t.errors + t.status_5xx, 0, "the drain cost no request: {t:?}");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_drives_and_reports() {
    let lb = Lb::start(test_config()).await;
    // A backend with a session, so that its drain does not end at once.
    let home = Client::default().get(lb.proxy, "/").await.backend().unwrap().to_owned();
    let (s, backends) = admin_json(lb.admin, Method::GET, "/api/backends", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(backends.as_array().unwrap().len(), 3);
    for key in [
        "name",
        "addr",
        "state",
        "healthy",
        "active",
        "requests",
        "sessions",
        "ring_share",
        "p50_ms",
        "p99_ms",
        "weight",
    ] {
        assert!(backends[0].get(key).is_some(), "missing {key}");
    }
    let (s, one) = admin_json(lb.admin, Method::GET, "/api/backends/api-2", None).await;
    assert_eq!((s, one["name"].as_str()), (StatusCode::OK, Some("api-2")));
    let (s, e) = admin_json(lb.admin, Method::GET, "/api/backends/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("nope"));
    let (s, _) = admin_json(lb.admin, Method::POST, "/api/backends/api-2/weight?value=3", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = admin_json(lb.admin, Method::POST, "/api/backends/api-2/weight?value=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = admin_json(
        lb.admin,
        Method::POST,
        &format!("/api/backends/{home}/drain?timeout_secs=60"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = admin_json(
        lb.admin,
        Method::POST,
        &format!("/api/backends/{home}/extend?timeout_secs=30"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let undrain = format!("/api/backends/{home}/undrain");
    let (s, _) = admin_json(lb.admin, Method::POST, &undrain, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = admin_json(lb.admin, Method::POST, &undrain, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, added) = admin_json(lb.admin, Method::POST, "/api/backends", Some(r#"{"demo":true}"#)).await;
    assert_eq!(s, StatusCode::OK, "{added}");
    assert_eq!(lb.handle.backends_view().len(), 4);
    let (s, _) = admin_json(lb.admin, Method::POST, "/api/backends", Some("{not json")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = admin_json(lb.admin, Method::DELETE, "/api/backends/api-4", None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, sessions) = admin_json(lb.admin, Method::GET, "/api/sessions?limit=10", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sessions["total"], 1);
    let (_, ring) = admin_json(lb.admin, Method::GET, "/api/ring", None).await;
    assert!(ring["vnodes"].as_array().unwrap().len() >= 450);
    let (s, _) = admin_json(
        lb.admin,
        Method::PUT,
        "/api/placement",
        Some(r#"{"name":"bounded-ring"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(lb.handle.router().placement(), ringside::router::Placement::BoundedRing);
    let (s, _) = admin_json(lb.admin, Method::PUT, "/api/affinity", Some(r#"{"name":"telepathy"}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, stats) = admin_json(lb.admin, Method::GET, "/api/stats", None).await;
    assert_eq!(stats["created"], 1);
    assert!(stats["last_remap_text"].as_str().unwrap().contains("api-4"));
    let (s, _) = admin_json(lb.admin, Method::GET, "/api/unknown", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn events_stream_and_metrics() {
    let lb = Lb::start(test_config()).await;
    let mut s = TcpStream::connect(lb.admin).await.unwrap();
    s.write_all(b"GET /api/events HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Subscribed once the answer's head has arrived.
    let mut got = String::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + 3 * SECS;
    while !got.contains("\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the stream's head")
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    lb.handle.execute(Command::Kill("api-1".into())).await.unwrap();
    while !got.contains("\"type\":\"command\"") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("an event")
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("application/x-ndjson"), "{got}");
    assert!(got.contains("killed api-1"), "{got}");
    let metrics = common::raw(
        lb.admin,
        http::Request::get("/metrics")
            .header("host", "localhost")
            .body(http_body_util::Empty::new())
            .unwrap(),
    )
    .await;
    assert!(
        metrics.body.contains("ringside_backend_up{backend=\"api-2\"} 1"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("# TYPE ringside_requests_total counter"));
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_says_which() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config();
    config.listen = taken.local_addr().unwrap();
    let err = ringside::app::bind_and_start(config, Default::default())
        .await
        .unwrap_err()
        .to_string();
    let addr: SocketAddr = taken.local_addr().unwrap();
    assert!(err.contains(&addr.to_string()) && err.contains("proxy"), "{err}");
}

#[tokio::test]
async fn a_drain_timeout_closes_open_tunnels() {
    let mut config = test_config();
    config.demo.backends = 1;
    let lb = Lb::start(config).await;
    let mut s = TcpStream::connect(lb.proxy).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));
    lb.handle
        .execute(Command::Drain {
            backend: "api-1".into(),
            timeout: Some(Duration::from_secs(1)),
        })
        .await
        .unwrap();
    assert_eq!(lb.state("api-1"), "draining", "an open tunnel keeps the drain going");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(5 * SECS, s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel was not closed at the drain timeout");
    assert_eq!(
        lb.handle.stats_view().closed_by_drain,
        1,
        "the closed tunnel is counted"
    );
    lb.wait_state("api-1", "drained", 3 * SECS).await;
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn killing_an_external_backend_forces_it_out_at_once() {
    let outside = DemoBackend::start("ext", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let other = DemoBackend::start("other", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    config.backends = vec![
        BackendEntry {
            name: "ext".into(),
            addr: outside.addr(),
            weight: 1,
        },
        BackendEntry {
            name: "other".into(),
            addr: other.addr(),
            weight: 1,
        },
    ];
    let lb = Lb::start(config).await;
    let text = lb.handle.execute(Command::Kill("ext".into())).await.unwrap();
    assert!(text.contains("forced out"), "{text}");
    assert_eq!(lb.state("ext"), "killed", "at once, no detection needed");
    for _ in 0..5 {
        assert_eq!(Client::default().get(lb.proxy, "/").await.backend(), Some("other"));
    }
    // Maintenance: health checks keep probing (and succeeding) but leave it
    // alone until it is revived.
    let probes = outside.requests();
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    while outside.requests() < probes + 3 {
        assert!(tokio::time::Instant::now() < deadline, "no health checks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lb.state("ext"), "killed");
    lb.handle.execute(Command::Revive("ext".into())).await.unwrap();
    lb.wait_state("ext", "up", 3 * SECS).await;
    lb.handle.shutdown().await;
    outside.kill().await;
    other.kill().await;
}

#[tokio::test]
async fn a_killed_backend_is_not_retired_as_drained() {
    let mut config = test_config();
    config.demo.health_interval_ms = 60_000; // only the drain and the proxy act here
    let lb = Lb::start(config).await;
    let mut client = Client::default();
    let home = client.get(lb.proxy, "/").await.backend().unwrap().to_owned();
    lb.handle
        .execute(Command::Drain {
            backend: home.clone(),
            timeout: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    lb.handle.execute(Command::Kill(home.clone())).await.unwrap();
    // The session's next request finds the server gone and moves elsewhere,
    // leaving the backend empty; a drain would now "end" and retire it.
    let mut bus = lb.handle.shared().bus.subscribe();
    assert_eq!(client.get(lb.proxy, "/").await.status, StatusCode::OK);
    // Two ticks later (each checks the drains, then reports the second).
    for _ in 0..2 {
        let deadline = tokio::time::Instant::now() + 3 * SECS;
        loop {
            let e = tokio::time::timeout_at(deadline, bus.recv())
                .await
                .expect("a tick within 3 s")
                .unwrap();
            if matches!(e.event, ringside::bus::BusEvent::Second { .. }) {
                break;
            }
        }
    }
    assert_eq!(lb.state(&home), "draining", "killed, awaiting detection — not removed");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_shutdown_lets_the_request_in_flight_finish_then_closes() {
    let outside = DemoBackend::start("ext", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut config = test_config();
    config.proxy.threads = 2;
    config.backends = vec![BackendEntry {
        name: "ext".into(),
        addr: outside.addr(),
        weight: 1,
    }];
    let lb = Lb::start(config).await;
    let mut idle = TcpStream::connect(lb.proxy).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = idle.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    // Several, so that some were handed from the thread that accepted
    // them to another (see proxy::spread) and the shutdown waits for them too.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(lb.proxy).await.unwrap();
        s.write_all(b"GET /sleep?ms=500 HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    // In flight once the proxy is forwarding them.
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    while lb.handle.backends_view()[0].active < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the requests were never forwarded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let per_thread = lb.handle.stats_view().client_connections_per_thread;
    assert!(
        per_thread.len() == 2 && per_thread.iter().sum::<usize>() == 5 && !per_thread.contains(&0),
        "{per_thread:?}"
    );
    lb.handle.shutdown().await;

    for busy in &mut busy {
        let mut answer = Vec::new();
        tokio::time::timeout(5 * SECS, busy.read_to_end(&mut answer))
            .await
            .expect("answered, then closed")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("Backend Server ext"), "{answer}");
    }
    // An idle keep-alive connection is closed at once.
    let mut rest = Vec::new();
    tokio::time::timeout(5 * SECS, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(rest.is_empty());
    // And nothing new is accepted.
    let refused = async {
        while TcpStream::connect(lb.proxy).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(5 * SECS, refused)
        .await
        .expect("the listener is closed");
    outside.kill().await;
}

/// Sends one keep-alive request on `s` and reads its whole answer.
async fn one_request(s: &mut TcpStream, cookie: Option<&str>) -> String {
    let cookie = cookie.map(|c| format!("cookie: {c}\r\n")).unwrap_or_default();
    s.write_all(format!("GET / HTTP/1.1\r\nhost: a\r\n{cookie}\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(5 * SECS, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if answer.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test]
async fn new_connections_are_spread_over_the_proxy_threads_and_keep_their_sessions() {
    let mut config = test_config();
    config.proxy.threads = 3;
    let lb = Lb::start(config).await;
    let per_thread = || async { lb.handle.stats_view().client_connections_per_thread };
    // One after another: each goes to a thread with the fewest.
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut s = TcpStream::connect(lb.proxy).await.unwrap();
        assert!(one_request(&mut s, None).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    assert_eq!(per_thread().await, vec![4, 4, 4]);
    // A burst: without spreading, one awake thread accepts most of it.
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..30 {
        connecting.spawn(TcpStream::connect(lb.proxy));
    }
    let mut burst: Vec<TcpStream> = connecting.join_all().await.into_iter().map(Result::unwrap).collect();
    for s in &mut burst {
        assert!(one_request(s, None).await.starts_with("HTTP/1.1 200"));
    }
    let counts = per_thread().await;
    assert_eq!(counts.iter().sum::<usize>(), 42, "{counts:?}");
    assert!(
        counts.iter().all(|&n| (11..=17).contains(&n)),
        "42 connections on 3 threads: {counts:?}"
    );
    // Whichever thread serves it, a connection keeps its session.
    let mut client = Client::default();
    let home = client.get(lb.proxy, "/").await.backend().unwrap().to_owned();
    let cookie = format!("SERVERID={}", client.jar["SERVERID"]);
    for s in burst.iter_mut().chain(held.iter_mut()) {
        let answer = one_request(s, Some(&cookie)).await;
        assert!(answer.contains(&format!("x-backend: {home}")), "{answer}");
        assert!(!answer.contains("set-cookie: SERVERID"), "{answer}");
    }
    drop((held, burst));
    lb.handle.shutdown().await;
}
