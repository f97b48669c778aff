//! The engine over real sockets: commands run in arrival order, health
//! state is the engine's (rise after revive and add, nothing counted while
//! killed), passive health never stalls the proxy, routing policy per
//! affinity mode, what a finished drain leaves, and drain timing on a
//! paused clock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Client, Lb, Recorder, admin_json, test_config, wait_event, wait_until};
use http::{Method, StatusCode};
use ringside::bus::{BusEvent, DetectedBy, DrainEnd};
use ringside::config::BackendEntry;
use ringside::demo::backend::DemoBackend;
use ringside::engine::{Command, CommandError};
use ringside::router::affinity::AffinityMode;
use ringside::router::{Placement, SessionKey};

const SECS: Duration = Duration::from_secs(1);

/// An external backend entry.
fn entry(name: &str, addr: std::net::SocketAddr) -> BackendEntry {
    BackendEntry {
        name: name.into(),
        addr,
        weight: 1,
    }
}

/// The health column of `name` (e.g. `checking 1/3`).
fn health(lb: &Lb, name: &str) -> String {
    lb.handle
        .backends_view()
        .into_iter()
        .find(|b| b.name == name)
        .map(|b| b.health)
        .unwrap_or_default()
}

fn weight(lb: &Lb, name: &str) -> u32 {
    lb.handle
        .backends_view()
        .into_iter()
        .find(|b| b.name == name)
        .unwrap()
        .weight
}

#[tokio::test]
async fn submitted_commands_run_in_the_order_they_were_submitted() {
    let ext = Recorder::start().await;
    let other = Recorder::start().await;
    let mut config = test_config();
    config.backends = vec![entry("ext", ext.addr), entry("other", other.addr)];
    let lb = Lb::start(config).await;
    for round in 0..5 {
        // An external backend is killed at once, so a revive run first
        // would be refused ("up, not killed") and the kill would stand.
        let kill = lb.handle.submit(Command::Kill("ext".into())).unwrap();
        let revive = lb.handle.submit(Command::Revive("ext".into())).unwrap();
        let (k, r) = (kill.await.unwrap(), revive.await.unwrap());
        assert!(k.is_ok() && r.is_ok(), "round {round}: {k:?} then {r:?}");
        lb.wait_state("ext", "up", 5 * SECS).await;
    }
    // A burst of key presses: each reply names the weight it set, in order.
    let presses: Vec<_> = (0..20)
        .map(|_| {
            lb.handle
                .submit(Command::WeightBy {
                    backend: "ext".into(),
                    delta: 1,
                })
                .unwrap()
        })
        .collect();
    for (i, p) in presses.into_iter().enumerate() {
        let text = p.await.unwrap().unwrap();
        assert!(
            text.starts_with(&format!("ext: weight {} ", i + 2)),
            "press {i}: {text}"
        );
    }
    assert_eq!(weight(&lb, "ext"), 21);
    // At the cap, the presses beyond 100 are the ones refused.
    lb.handle
        .execute(Command::Weight {
            backend: "ext".into(),
            weight: 95,
        })
        .await
        .unwrap();
    let presses: Vec<_> = (0..10)
        .map(|_| {
            lb.handle
                .submit(Command::WeightBy {
                    backend: "ext".into(),
                    delta: 1,
                })
                .unwrap()
        })
        .collect();
    let mut outcomes = Vec::new();
    for p in presses {
        outcomes.push(p.await.unwrap());
    }
    for (i, o) in outcomes.iter().enumerate() {
        match (i < 5, o) {
            (true, Ok(text)) => assert!(text.starts_with(&format!("ext: weight {} ", 96 + i)), "{text}"),
            (false, Err(CommandError::BadValue(text))) => assert!(text.contains("already 100"), "{text}"),
            _ => panic!("press {i}: {o:?}"),
        }
    }
    assert_eq!(weight(&lb, "ext"), 100);
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn concurrent_admin_requests_run_one_at_a_time() {
    let ext = Recorder::start().await;
    let other = Recorder::start().await;
    let mut config = test_config();
    config.backends = vec![entry("ext", ext.addr), entry("other", other.addr)];
    let lb = Lb::start(config).await;
    let mut bus = lb.handle.shared().bus.subscribe();
    let weights: Vec<_> = (1..=20)
        .map(|w| {
            let admin = lb.admin;
            tokio::spawn(async move {
                admin_json(
                    admin,
                    Method::POST,
                    &format!("/api/backends/ext/weight?value={w}"),
                    None,
                )
                .await
            })
        })
        .collect();
    for t in weights {
        let (s, body) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    // The engine ran them in some order, each whole: the weight left is the
    // one its last command set.
    let mut order = Vec::new();
    while order.len() < 20 {
        let e = wait_event(
            &mut bus,
            5 * SECS,
            "a weight command",
            |e| matches!(e, BusEvent::Command(t) if t.starts_with("ext: weight ")),
        )
        .await;
        let BusEvent::Command(text) = e else { unreachable!() };
        let w: u32 = text["ext: weight ".len()..].split(' ').next().unwrap().parse().unwrap();
        order.push(w);
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=20).collect::<Vec<_>>());
    assert_eq!(weight(&lb, "ext"), *order.last().unwrap(), "{order:?}");

    // Kills and revives from many clients at once: a kill is refused on a
    // killed backend, so two kills never run back to back, and the state
    // left is what the last one did.
    let actions: Vec<_> = (0..20)
        .map(|i| {
            let admin = lb.admin;
            let action = if i % 2 == 0 { "kill" } else { "revive" };
            tokio::spawn(
                async move { admin_json(admin, Method::POST, &format!("/api/backends/ext/{action}"), None).await },
            )
        })
        .collect();
    let mut done = 0;
    for t in actions {
        let (s, body) = t.await.unwrap();
        assert!(s == StatusCode::OK || s == StatusCode::CONFLICT, "{s}: {body}");
        done += usize::from(s == StatusCode::OK);
    }
    let mut ran = Vec::new();
    while ran.len() < done {
        let e = wait_event(
            &mut bus,
            5 * SECS,
            "a kill or revive",
            |e| matches!(e, BusEvent::Command(t) if t.starts_with("killed ext") || t.starts_with("revived ext")),
        )
        .await;
        let BusEvent::Command(text) = e else { unreachable!() };
        ran.push(text.starts_with("killed"));
    }
    assert!(
        ran.windows(2).all(|w| !(w[0] && w[1])),
        "two kills ran back to back: {ran:?}"
    );
    match ran.last() {
        Some(true) => assert_eq!(lb.state("ext"), "killed"),
        _ => lb.wait_state("ext", "up", 5 * SECS).await,
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn revive_after_remove_is_a_conflict_naming_add() {
    let lb = Lb::start(test_config()).await;
    lb.handle.execute(Command::Remove("api-2".into())).await.unwrap();
    for command in [Command::Revive("api-2".into()), Command::Kill("api-2".into())] {
        match lb.handle.execute(command.clone()).await {
            Err(CommandError::Conflict(text)) => assert!(text.contains("add"), "{text}"),
            other => panic!("{command:?}: {other:?}"),
        }
    }
    let (s, body) = admin_json(lb.admin, Method::POST, "/api/backends/api-2/revive", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("add"), "{body}");
    assert_eq!(lb.state("api-2"), "absent");
    // Adding it again is the way back.
    let (s, body) = admin_json(lb.admin, Method::POST, "/api/backends", Some(r#"{"demo":true}"#)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    lb.wait_state("api-2", "up", 5 * SECS).await;
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_revived_backend_comes_back_after_rise_good_checks_and_none_count_while_killed() {
    let ext = Recorder::start().await;
    let other = DemoBackend::start("other", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    config.backends = vec![entry("ext", ext.addr), entry("other", other.addr())];
    config.health.rise = 3;
    // Each step shows for one interval; the view is sampled every 5 ms.
    config.health.interval_ms = 400;
    config.routing.placement = Placement::RoundRobin;
    config.affinity.mode = AffinityMode::None;
    let lb = Lb::start(config).await;
    lb.handle.execute(Command::Kill("ext".into())).await.unwrap();
    assert_eq!(lb.state("ext"), "killed");
    // Its checker keeps probing, and every probe succeeds, but none counts:
    // the health column stays empty throughout.
    let checks = ext.health_checks();
    let mut shown = std::collections::BTreeSet::new();
    wait_until("four checks of the killed backend", 5 * SECS, || {
        shown.insert(health(&lb, "ext"));
        ext.health_checks() >= checks + 4
    })
    .await;
    assert_eq!(lb.state("ext"), "killed");
    assert_eq!(
        shown.into_iter().collect::<Vec<_>>(),
        [""],
        "progress counted while killed"
    );

    // Traffic all along: a backend taking requests too early would get some.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, proxy) = (Arc::clone(&stop), lb.proxy);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = Client::default().get(proxy, "/").await;
                assert_eq!(r.status, StatusCode::OK, "{r:?}");
            }
        })
    };
    let text = lb.handle.execute(Command::Revive("ext".into())).await.unwrap();
    assert!(text.contains("up after 3 good checks"), "{text}");
    let mark = ext.seen().len();
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + 10 * SECS;
    loop {
        let now = match lb.state("ext").as_str() {
            "up" => "up".to_owned(),
            _ => health(&lb, "ext"),
        };
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == "up" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never up: {seen:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = ["checking 1/3", "checking 2/3", "up"];
    let tail: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "checking 0/3")
        .collect();
    assert_eq!(tail, expected, "{seen:?}");
    // Once up, it takes traffic; the first request it got came after three checks.
    wait_until("a request routed to ext", 5 * SECS, || !ext.proxied().is_empty()).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let after: Vec<_> = ext.seen().into_iter().skip(mark).collect();
    let first = after.iter().position(|s| s.path != "/health").unwrap();
    assert!(first >= 3, "routed after {first} checks: {after:?}");
    lb.handle.shutdown().await;
    other.kill().await;
}

#[tokio::test]
async fn an_added_backend_takes_no_traffic_before_rise_good_checks() {
    let other = DemoBackend::start("other", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = test_config();
    config.backends = vec![entry("other", other.addr())];
    config.health.rise = 3;
    config.health.interval_ms = 250;
    config.routing.placement = Placement::RoundRobin;
    config.affinity.mode = AffinityMode::None;
    let lb = Lb::start(config).await;
    let fresh = Recorder::start().await;
    let body = format!(r#"{{"name":"fresh","addr":"{}"}}"#, fresh.addr);
    let (s, answer) = admin_json(lb.admin, Method::POST, "/api/backends", Some(&body)).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert!(
        answer["ok"].as_str().unwrap().contains("after 3 good health checks"),
        "{answer}"
    );
    assert_ne!(lb.state("fresh"), "up");
    // Every request is placed afresh, round robin: "fresh" gets one as soon as it may.
    let deadline = tokio::time::Instant::now() + 10 * SECS;
    while fresh.proxied().is_empty() {
        let r = Client::default().get(lb.proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(tokio::time::Instant::now() < deadline, "fresh never took traffic");
    }
    let seen = fresh.seen();
    let first = seen.iter().position(|s| s.path != "/health").unwrap();
    assert!(first >= 3, "a proxied request after {first} checks: {seen:?}");

    // A wrong address is checked, never routed to.
    let wrong = common::closed_port();
    let redispatched = lb.handle.stats_view().redispatched;
    let body = format!(r#"{{"name":"wrong","addr":"{wrong}"}}"#);
    let (s, answer) = admin_json(lb.admin, Method::POST, "/api/backends", Some(&body)).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    for _ in 0..30 {
        let r = Client::default().get(lb.proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_ne!(r.backend(), None);
    }
    wait_until("a failed check of the wrong address", 5 * SECS, || {
        lb.handle
            .shared()
            .backend_view("wrong")
            .is_some_and(|b| b.failure.as_deref() == Some("connection refused"))
    })
    .await;
    assert_eq!(lb.state("wrong"), "down");
    assert_eq!(
        lb.handle.stats_view().redispatched,
        redispatched,
        "a connect to the wrong address was tried"
    );
    lb.handle.shutdown().await;
    other.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_never_stalls_the_proxy() {
    let mut config = test_config();
    // Only the proxy's failed connects find the dead backend here.
    config.demo.health_interval_ms = 3_600_000;
    let lb = Lb::start(config).await;
    let now = lb.handle.shared().clock.now();
    for _ in 0..20_000 {
        lb.handle.router().route(SessionKey::NewCookie, now).unwrap();
    }
    assert_eq!(lb.handle.router().session_count(), 20_000);
    // Clients at home on each backend.
    let mut homes: Vec<(Client, String)> = Vec::new();
    while ["api-1", "api-2", "api-3"]
        .iter()
        .any(|n| homes.iter().filter(|(_, h)| h == n).count() < 3)
    {
        let mut c = Client::default();
        let home = c.get(lb.proxy, "/").await.backend().unwrap().to_owned();
        homes.push((c, home));
    }
    let victim = "api-2";
    let on_victim = lb.handle.backends_view()[1].sessions;
    assert!(on_victim > 5_000, "{on_victim}");
    let (victims, healthy): (Vec<_>, Vec<_>) = homes.into_iter().partition(|(_, h)| h == victim);

    // The others keep asking, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let loop_task = {
        let (stop, answered, slowest, proxy) =
            (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&slowest), lb.proxy);
        tokio::spawn(async move {
            let mut healthy = healthy;
            while !stop.load(Ordering::Relaxed) {
                for (c, home) in healthy.iter_mut() {
                    let started = std::time::Instant::now();
                    let r = c.get(proxy, "/").await;
                    assert_eq!(r.status, StatusCode::OK, "{r:?}");
                    assert_eq!(r.backend(), Some(home.as_str()), "a healthy session moved");
                    slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut bus = lb.handle.shared().bus.subscribe();
    lb.handle.execute(Command::Kill(victim.into())).await.unwrap();
    // The victim's clients find its connects refused: redispatched at once,
    // and after `fall` failures the engine takes it out and moves its sessions.
    // (A moved session goes straight to its new backend, so new clients,
    // some placed on the victim until it is out, keep the failures coming.)
    let deadline = tokio::time::Instant::now() + 10 * SECS;
    let mut victims = victims;
    while lb.state(victim) != "killed" {
        victims.push((Client::default(), String::new()));
        for (c, _) in victims.iter_mut() {
            let r = c.get(lb.proxy, "/").await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            assert_ne!(r.backend(), Some(victim));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead backend was never taken out"
        );
    }
    let detected = wait_event(
        &mut bus,
        5 * SECS,
        "the detection",
        |e| matches!(e, BusEvent::Detected { backend, .. } if backend == victim),
    )
    .await;
    assert!(
        matches!(
            detected,
            BusEvent::Detected {
                by: DetectedBy::Connect,
                ..
            }
        ),
        "{detected:?}"
    );
    // Every session on it moved: by the remap, or one by one when a
    // victim's client was redispatched before the detection.
    let remap = lb.handle.stats_view().last_remap.unwrap();
    assert!(remap.moved + victims.len() as u64 >= on_victim, "{remap:?}");
    assert_eq!(lb.handle.backends_view()[1].sessions, 0);
    // Healthy requests kept being answered through the remap.
    let before = answered.load(Ordering::Relaxed);
    wait_until("more healthy answers", 5 * SECS, || {
        answered.load(Ordering::Relaxed) >= before + 6
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    loop_task.await.unwrap();
    let slowest = slowest.load(Ordering::Relaxed);
    assert!(slowest < 3_000, "a healthy request took {slowest} ms");
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn source_ip_logout_ends_only_the_application_session() {
    let mut config = test_config();
    config.affinity.mode = AffinityMode::SourceIp;
    let lb = Lb::start(config).await;
    let behind = |user: &str| {
        let mut c = Client::default();
        c.headers.push(("x-forwarded-for".into(), "203.0.113.7".into()));
        (c, user.to_owned())
    };
    let mut people = [behind("alice"), behind("bob"), behind("carol")];
    let mut home = None;
    for (c, user) in people.iter_mut() {
        let login = c.post(lb.proxy, &format!("/login?user={user}")).await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        assert!(home.is_none() || home.as_deref() == login.backend());
        home = login.backend().map(str::to_owned);
    }
    let home = home.unwrap();
    let sessions = || async {
        let (_, s) = admin_json(lb.admin, Method::GET, "/api/sessions", None).await;
        s
    };
    let before = sessions().await;
    assert_eq!(before["total"], 1, "{before}");
    assert_eq!(before["sessions"][0]["session"], "203.0.113.7", "{before}");
    let bye = people[0].0.post(lb.proxy, "/logout").await;
    assert_eq!(bye.status, StatusCode::OK, "{bye:?}");
    let after = sessions().await;
    assert_eq!(after["total"], 1, "the address session ended: {after}");
    assert_eq!(after["sessions"][0]["backend"], before["sessions"][0]["backend"]);
    assert_eq!(after["sessions"][0]["reassignments"], 0);
    assert_eq!(lb.handle.stats_view().router.reassigned, 0);
    for (c, user) in people.iter_mut().skip(1) {
        let r = c.get(lb.proxy, "/profile").await;
        assert_eq!(r.status, StatusCode::OK, "{user} was moved: {r:?}");
        assert_eq!(r.backend(), Some(home.as_str()));
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn affinity_none_keeps_no_session() {
    let mut config = test_config();
    config.affinity.mode = AffinityMode::None;
    let lb = Lb::start(config).await;
    for i in 0..6 {
        let login = Client::default().post(lb.proxy, &format!("/login?user=u{i}")).await;
        assert_eq!(login.status, StatusCode::OK);
    }
    let (_, s) = admin_json(lb.admin, Method::GET, "/api/sessions", None).await;
    assert_eq!(s["total"], 0, "{s}");
    assert_eq!(lb.handle.stats_view().router.created, 0);
    assert_eq!(
        lb.handle.router().table(ringside::router::KeyDomain::Text).len(),
        0,
        "application sessions were learned"
    );
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_live_switch_to_app_cookie_keeps_logged_in_users() {
    let mut config = test_config();
    config.routing.placement = Placement::RoundRobin;
    let lb = Lb::start(config).await;
    let mut users = Vec::new();
    for i in 0..6 {
        let mut c = Client::default();
        let login = c.post(lb.proxy, &format!("/login?user=u{i}")).await;
        assert_eq!(login.status, StatusCode::OK);
        assert!(c.jar.contains_key("SERVERID") && c.jar.contains_key("session_id"));
        users.push((c, login.backend().unwrap().to_owned()));
    }
    let mut bus = lb.handle.shared().bus.subscribe();
    let (s, answer) = admin_json(lb.admin, Method::PUT, "/api/affinity", Some(r#"{"name":"app-cookie"}"#)).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    let said = wait_event(
        &mut bus,
        5 * SECS,
        "the switch in the event log",
        |e| matches!(e, BusEvent::Command(t) if t.starts_with("affinity is now app-cookie")),
    )
    .await;
    let BusEvent::Command(text) = said else { unreachable!() };
    assert!(
        text.contains("the 6 application sessions known route from now on"),
        "{text}"
    );
    assert!(text.contains("6 balancer-cookie sessions are kept aside"), "{text}");
    for (c, home) in users.iter_mut() {
        for _ in 0..3 {
            let r = c.get(lb.proxy, "/profile").await;
            assert_eq!(r.status, StatusCode::OK, "logged out by the switch: {r:?}");
            assert_eq!(r.backend(), Some(home.as_str()));
        }
    }
    lb.handle.shutdown().await;
}

#[tokio::test]
async fn a_finished_drain_leaves_the_backend_drained_until_killed_undrained_or_revived() {
    let lb = Lb::start(test_config()).await;
    let drain = |lb: &Lb| {
        let handle = lb.handle.clone();
        async move {
            handle
                .execute(Command::Drain {
                    backend: "api-2".into(),
                    timeout: Some(60 * SECS),
                })
                .await
                .unwrap();
        }
    };
    let mut bus = lb.handle.shared().bus.subscribe();
    drain(&lb).await;
    // Empty: it ends at the next tick, and stays out of the pool.
    wait_event(
        &mut bus,
        5 * SECS,
        "the drain's end",
        |e| matches!(e, BusEvent::Drain { backend, done: Some(DrainEnd::Empty), .. } if backend == "api-2"),
    )
    .await;
    assert_eq!(lb.state("api-2"), "drained");
    for _ in 0..12 {
        assert_ne!(Client::default().get(lb.proxy, "/").await.backend(), Some("api-2"));
    }
    // `x` works on it…
    let text = lb.handle.execute(Command::Kill("api-2".into())).await.unwrap();
    assert!(text.contains("killed api-2"), "{text}");
    lb.wait_state("api-2", "killed", 3 * SECS).await;
    // …and `r` brings it back.
    lb.handle.execute(Command::Revive("api-2".into())).await.unwrap();
    lb.wait_state("api-2", "up", 5 * SECS).await;
    // `u` returns a drained backend to service at once.
    drain(&lb).await;
    lb.wait_state("api-2", "drained", 5 * SECS).await;
    lb.handle.execute(Command::Undrain("api-2".into())).await.unwrap();
    assert_eq!(lb.state("api-2"), "up");
    // So does `r`.
    drain(&lb).await;
    lb.wait_state("api-2", "drained", 5 * SECS).await;
    lb.handle.execute(Command::Revive("api-2".into())).await.unwrap();
    lb.wait_state("api-2", "up", 5 * SECS).await;
    lb.handle.shutdown().await;
}

/// The engine's clock is tokio's: on a paused runtime a drain's timeout
/// passes in virtual time. Health checks are real TCP probes (and tokio
/// jumps the paused clock over I/O waits), so only timers without I/O are
/// driven this way: checks are pushed an hour out.
#[tokio::test(start_paused = true)]
async fn a_drain_times_out_on_the_engine_clock() {
    let mut config = test_config();
    config.demo.backends = 2;
    config.demo.health_interval_ms = 3_600_000;
    let lb = Lb::start(config).await;
    // A session on api-1 keeps its drain from ending empty.
    let now = lb.handle.shared().clock.now();
    while lb.handle.backends_view()[0].sessions == 0 {
        lb.handle.router().route(SessionKey::NewCookie, now).unwrap();
    }
    let sessions = lb.handle.backends_view()[0].sessions;
    let (virtual_start, real_start) = (tokio::time::Instant::now(), std::time::Instant::now());
    lb.handle
        .execute(Command::Drain {
            backend: "api-1".into(),
            timeout: Some(600 * SECS),
        })
        .await
        .unwrap();
    lb.handle
        .execute(Command::Extend {
            backend: "api-1".into(),
            by: 300 * SECS,
        })
        .await
        .unwrap();
    // The countdown from here on.
    let mut bus = lb.handle.shared().bus.subscribe();
    let mut left = Vec::new();
    let end = loop {
        assert!(virtual_start.elapsed() < 1000 * SECS, "no end to the drain: {left:?}");
        let e = bus.recv().await.expect("the bus");
        if let BusEvent::Drain {
            backend,
            remaining_secs,
            done,
            ..
        } = &e.event
            && backend == "api-1"
        {
            left.push(*remaining_secs);
            if let Some(end) = done {
                break *end;
            }
        }
    };
    assert_eq!(end, DrainEnd::Timeout);
    let took = virtual_start.elapsed();
    assert!(took >= 900 * SECS && took < 905 * SECS, "{took:?}");
    assert!(
        real_start.elapsed() < 30 * SECS,
        "{:?} of real time",
        real_start.elapsed()
    );
    assert!(left.windows(2).all(|w| w[0] >= w[1]), "the countdown went back up");
    assert_eq!(lb.state("api-1"), "drained");
    assert_eq!(lb.handle.backends_view()[0].sessions, 0);
    assert!(lb.handle.stats_view().router.reassigned >= sessions);
    lb.handle.shutdown().await;
}
