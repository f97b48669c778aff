//! The teaching views' data, over real sockets: probing a key (admin API
//! and `ringside ring --probe`), what a change moved, following a session,
//! and a scenario run as a lesson, step by step.

mod common;

use std::time::Duration;

use common::{Client, Lb, admin_json, test_config};
use http::{Method, StatusCode};
use ringside::bus::BusEvent;
use ringside::demo::traffic::TrafficEvent;
use ringside::experiment::scenario::{Lesson, LessonPlan, LessonState};
use ringside::router::ChangeKind;

fn ringside(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .output()
        .expect("run ringside")
}

fn stdout_of(args: &[&str]) -> String {
    let out = ringside(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ring_probe_prints_the_walk_with_each_skip() {
    // visitor-3 hashes just short of 2^32: its walk wraps to the first vnodes.
    let down = stdout_of(&["ring", "--probe", "visitor-3", "--down", "api-2"]);
    insta::assert_snapshot!("probe_owner_down", down);
    let full = stdout_of(&[
        "ring",
        "--probe",
        "late-3",
        "--placement",
        "bounded-ring",
        "--vnodes",
        "1",
        "--backends",
        "8",
        "--keys",
        "100",
    ]);
    insta::assert_snapshot!("probe_bounded_full", full);
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&[
        "ring",
        "--probe",
        "visitor-3",
        "--down",
        "api-2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["probe"]["position"], crc32fast::hash(b"visitor-3"));
    assert_eq!(json["probe"]["walk"]["steps"][0]["skip"]["why"], "down");
    assert_eq!(json["probe"]["walk"]["owner"]["backend"], "api-1");
    for (args, needle) in [
        (
            vec!["ring", "--probe", "x", "--down", "api-9"],
            "no backend named \"api-9\"",
        ),
        (
            vec!["ring", "--probe", "x", "--affinity", "source-ip"],
            "give an IP address",
        ),
        (
            vec!["ring", "--probe", "x", "--affinity", "lb-cookie"],
            "GET /api/probe",
        ),
        (vec!["ring", "--down", "api-1"], "--probe"),
    ] {
        let out = ringside(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_shows_in_the_probe_the_moves_and_the_followed_history() {
    let mut config = test_config();
    config.demo.backends = 3;
    let lb = Lb::start(config).await;
    let mut client = Client::default();
    let first = client.get(lb.proxy, "/").await;
    let home = first.backend().unwrap().to_owned();
    let cookie = client.jar.get("SERVERID").cloned().expect("a balancer cookie");

    // The probe reads the cookie as the proxy does and finds its session.
    let path = format!("/api/probe?mode=lb-cookie&key={}", encode(&cookie));
    let (status, p) = admin_json(lb.admin, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["walk"]["owner"]["backend"], home.as_str());
    assert_eq!(p["routes_to"]["backend"], home.as_str());
    assert_eq!(p["routes_to"]["via"], "table");
    assert_eq!(p["cookie_names"], home.as_str());
    assert!(!p.to_string().contains(&cookie), "the key is not echoed back");
    let fingerprint = {
        let (_, s) = admin_json(lb.admin, Method::GET, "/api/sessions", None).await;
        s["sessions"][0]["fingerprint"].as_str().unwrap().to_owned()
    };
    assert_eq!(p["session"]["name"], format!("#{}", &fingerprint[..8]));

    for (query, needle) in [
        ("/api/probe", "needs ?key"),
        ("/api/probe?key=%zz", "percent-encoded"),
        ("/api/probe?key=abc&mode=none", "affinity none"),
        ("/api/probe?key=abc&mode=sideways", "unknown affinity mode"),
        ("/api/probe?key=forged&mode=lb-cookie", "not a balancer cookie"),
    ] {
        let (status, body) = admin_json(lb.admin, Method::GET, query, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{query}: {body}");
    }

    // Follow the session, then kill its backend and wait for the change.
    let (status, h) = admin_json(
        lb.admin,
        Method::POST,
        &format!("/api/sessions/{fingerprint}/follow"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["history"]["happenings"][0]["what"], "placed");
    let mut moves = lb.handle.shared().bus.watch_moves();
    moves.mark_unchanged();
    let (status, _) = admin_json(lb.admin, Method::POST, &format!("/api/backends/{home}/kill"), None).await;
    assert_eq!(status, StatusCode::OK);
    let m = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            moves.changed().await.unwrap();
            let m = moves.borrow_and_update().clone().unwrap();
            if m.summary.kind == ChangeKind::Left {
                return m;
            }
        }
    })
    .await
    .expect("the kill is found within 10 s");
    assert_eq!(m.summary.backend, home);
    assert_eq!((m.summary.sessions, m.summary.moved, m.kept()), (1, 1, 0));
    let ours = m.sessions[0];
    assert!(ours.moved());
    assert_eq!(format!("{:016x}", ours.session.fingerprint), fingerprint);
    let to = lb.handle.shared().backend_name(ours.to);

    let (_, listed) = admin_json(lb.admin, Method::GET, "/api/moves", None).await;
    // Whether modulo would move it too depends on where the key hashes.
    assert_eq!(
        listed["headline"],
        format!("moved 1 · kept 0 · modulo would move {}", m.summary.modulo)
    );
    assert_eq!(listed["sessions"][0]["from"], home.as_str());
    assert_eq!(listed["sessions"][0]["to"], to.as_str());

    // The walk now passes the killed backend by, and the session went to the owner.
    let (_, p) = admin_json(lb.admin, Method::GET, &path, None).await;
    assert_eq!(p["walk"]["steps"][0]["backend"], home.as_str());
    assert_eq!(p["walk"]["steps"][0]["skip"]["why"], "killed");
    assert_eq!(p["walk"]["owner"]["backend"], to.as_str());
    assert_eq!(p["session"]["backend"], to.as_str());

    // The history records the move and why, once the recorder has heard of it.
    let history = format!("/api/sessions/%23{}/history", &fingerprint[..8]);
    let h = wait_for(&lb, &history, |h| {
        h["history"]["happenings"].as_array().unwrap().len() >= 2
    })
    .await;
    let moved = &h["history"]["happenings"][1];
    assert_eq!(
        (moved["what"].as_str(), moved["why"].as_str()),
        (Some("moved"), Some("killed"))
    );
    assert_eq!(moved["from"], home.as_str());
    assert_eq!(h["lived_on"], serde_json::json!([home, to]));
    let (status, _) = admin_json(
        lb.admin,
        Method::DELETE,
        &format!("/api/sessions/{fingerprint}/follow"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin_json(lb.admin, Method::GET, &history, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    lb.handle.shutdown().await;
}

/// Reads an admin endpoint until `done` holds, again each time a followed
/// session's history changes (the recorder runs on its own task).
async fn wait_for(lb: &Lb, path: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut changed = lb.handle.shared().watch_follows();
    let wait = async {
        loop {
            changed.borrow_and_update();
            let (status, body) = admin_json(lb.admin, Method::GET, path, None).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            changed.changed().await.expect("ringside runs");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{path} within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_client_is_followed_by_name_and_its_lost_login_is_recorded() {
    let mut config = test_config();
    config.demo.backends = 2;
    config.traffic.clients = 3;
    config.traffic.rate = 30.0;
    let handle = ringside::app::bind_and_start(config, ringside::app::StartOptions { traffic: true })
        .await
        .unwrap();
    let lb = Lb {
        proxy: handle.proxy_addr(),
        admin: handle.admin_addr(),
        handle,
    };
    // client-1 has a session once its first answer set the balancer cookie:
    // try again at each event on the bus (the clients' requests make some).
    let mut events = lb.handle.shared().bus.subscribe();
    let follow = async {
        loop {
            let (status, h) = admin_json(lb.admin, Method::POST, "/api/sessions/client-1/follow", None).await;
            if status == StatusCode::OK {
                return h;
            }
            events.recv().await.expect("ringside runs");
        }
    };
    let h = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .expect("client-1 has a session within 10 s");
    assert_eq!(h["history"]["client"], 1);
    let fingerprint = h["history"]["fingerprint"].as_str().unwrap().to_owned();
    // The clients' own report of a lost login, as it travels on the bus.
    lb.handle
        .shared()
        .bus
        .publish(BusEvent::Traffic(TrafficEvent::LostSession {
            client: 1,
            backend: Some("api-2".into()),
        }));
    let h = wait_for(&lb, "/api/sessions/client-1/history", |h| {
        h["history"]["lost_logins"] == 1
    })
    .await;
    assert_eq!(h["history"]["fingerprint"], fingerprint.as_str());
    let last = h["history"]["happenings"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        serde_json::json!({"what": "lost-login", "at_ms": last["at_ms"], "backend": "api-2"})
    );
    let (status, body) = admin_json(lb.admin, Method::POST, "/api/sessions/client-99/follow", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    lb.handle.shutdown().await;
}

/// Waits for the lesson's state to satisfy `done`, on the watch (no polling).
async fn lesson_state(
    state: &mut tokio::sync::watch::Receiver<LessonState>,
    done: impl Fn(&LessonState) -> bool,
) -> LessonState {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let s = state.borrow_and_update().clone();
            if done(&s) {
                return s;
            }
            state.changed().await.expect("the lesson runs");
        }
    })
    .await
    .expect("the lesson state within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesson_pauses_steps_finishes_and_replays_on_a_stage_set_again() {
    let path = format!("{}/assets/scenarios/vnodes.toml", env!("CARGO_MANIFEST_DIR"));
    let plan = LessonPlan::load(std::path::Path::new(&path)).unwrap();
    assert_eq!(plan.headline, "vnodes — why virtual nodes.");
    assert!(
        plan.caption
            .starts_with("With one position per backend the ring is cut"),
        "{}",
        plan.caption
    );
    let handle = ringside::app::bind_and_start(plan.config(), ringside::app::StartOptions { traffic: true })
        .await
        .unwrap();
    // Four lesson seconds per wall second.
    let lesson = Lesson::start(handle.clone(), plan, 4.0);
    lesson.pause();
    let mut state = lesson.state();
    let s = lesson_state(&mut state, |s| s.paused).await;
    assert_eq!((s.current, s.next, s.run), (None, Some(0), 1));
    assert_eq!(s.steps[1].label, "150 vnodes");

    lesson.step();
    let s = lesson_state(&mut state, |s| s.current == Some(0)).await;
    assert!(s.paused && s.steps[0].done && !s.steps[1].done);
    assert_eq!((s.elapsed_secs, s.next), (1.5, Some(1)));
    assert_eq!(s.checks.len(), 1);
    assert!(s.checks[0].passed, "{:?}", s.checks);
    assert_eq!(handle.router().vnodes(), 1);

    lesson.step();
    let s = lesson_state(&mut state, |s| s.current == Some(1)).await;
    assert!(s.log.iter().any(|l| l.contains("150 vnodes")), "{:?}", s.log);
    assert_eq!(handle.router().vnodes(), 150);
    assert!(s.next_due.is_none(), "no countdown while paused");

    lesson.resume();
    let running = lesson_state(&mut state, |s| !s.paused).await;
    assert!(running.next_due.is_some() && running.next_in_secs <= 1.5);
    let report = tokio::time::timeout(Duration::from_secs(10), lesson.finished())
        .await
        .expect("the rest of the lesson within 10 s")
        .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.checks.len(), 2);

    // A replay sets the stage again (1 vnode a backend), so the first check holds again.
    lesson.replay();
    let s = lesson_state(&mut state, |s| s.run == 2 && !s.resetting).await;
    assert!(s.report.is_none() && s.checks.is_empty());
    assert!(s.log.iter().any(|l| l.contains("1 vnodes")), "{:?}", s.log);
    let report = tokio::time::timeout(Duration::from_secs(10), lesson.finished())
        .await
        .expect("the replay within 10 s")
        .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.checks.len(), 2);
    drop(lesson);
    handle.shutdown().await;
}
