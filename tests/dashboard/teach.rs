//! The teaching views in the dashboard: watching a move, modulo beside the
//! ring, probing a key, following a client, the lesson's card, pause and
//! report, and a capture's flash — from the real router where the data
//! comes from it.

use std::collections::VecDeque;
use std::sync::Arc;

use ratatui::style::Color;

use ringside::bus::BusEvent;
use ringside::dashboard::app::{App, FlashKind, Mode, Msg, PromptKind, Request, SessionRow};
use ringside::dashboard::follow::Followed;
use ringside::dashboard::lesson::LessonControl;
use ringside::dashboard::moves::{GLIDE_FRAMES, MovesView, WATCH_SECS};
use ringside::engine::follow::{Happening, History, MoveWhy};
use ringside::experiment::scenario::{Outcome, Phase, Report};
use ringside::router::affinity::AffinityMode;
use ringside::router::probe::Skip;
use ringside::router::{BackendSpec, BackendState, Event, NullSink, Router, RouterConfig, SessionKey, Timestamp};

use super::{SIZES, fixture, footer, lesson, render, snapshot, snapshots, text};

/// A router like the fixture — api-4 down, api-3 draining — with 40
/// sessions, then api-2 killed; and its last change's moves.
fn killed_router() -> (Router, MovesView) {
    let r = Router::new(
        RouterConfig {
            seed: Some(3),
            ..RouterConfig::default()
        },
        Arc::new(NullSink),
    );
    r.set_affinity(AffinityMode::AppCookie);
    for i in 1..=4u16 {
        let spec = BackendSpec::new(&format!("api-{i}"), ([127, 0, 0, 1], 9000 + i).into(), 1).unwrap();
        r.add_backend(&spec).unwrap();
    }
    for k in 0..40 {
        r.route(SessionKey::Text(format!("user-{k}").as_bytes()), Timestamp(0))
            .unwrap();
    }
    r.set_state("api-4", BackendState::Down).unwrap();
    r.set_state("api-3", BackendState::Draining).unwrap();
    r.set_state("api-2", BackendState::Killed).unwrap();
    let topo = r.topology();
    let moves = MovesView::new(&r.last_moves().unwrap(), |id| topo.backend(id).name.to_string());
    (r, moves)
}

/// The fixture with the router's sessions, just after the kill.
fn after_kill() -> (App, Router) {
    let (r, moves) = killed_router();
    let mut app = fixture();
    let mut snapshot = app.scene().snapshot.clone();
    let topo = r.topology();
    let mut ring: Vec<u32> = topo.ring().vnodes().map(|v| v.position).collect();
    let mut drawn: Vec<u32> = snapshot.vnodes.iter().map(|(p, _)| *p).collect();
    ring.sort_unstable();
    drawn.sort_unstable();
    assert_eq!(ring, drawn, "the fixture draws the router's ring");
    snapshot.sessions = r
        .sessions()
        .unwrap()
        .list(500, |_| true)
        .into_iter()
        .map(|s| SessionRow {
            key: s.name().to_string(),
            fingerprint: s.fingerprint,
            client: None,
            backend: topo.backend(s.backend).name.to_string(),
            age_secs: 60,
            idle_secs: 1,
            requests: s.requests,
            reassignments: s.reassignments,
            position: s.position,
        })
        .collect();
    app.set_snapshot(snapshot);
    let remap = BusEvent::Router(Event::Remap(moves.summary.clone()));
    app.on_event(&remap, 760, |_| String::new());
    app.set_moves(moves, true);
    (app, r)
}

#[test]
fn a_change_is_watched_its_moved_sessions_glide_and_are_counted() {
    let (mut app, _router) = after_kill();
    let m = app.scene().moves.clone().unwrap();
    assert!(
        m.summary.moved > 0 && m.moved().count() as u64 == m.summary.moved,
        "{m:?}"
    );
    assert!(
        m.moved().all(|s| s.from == "api-2" && s.to == "api-1"),
        "only api-2's sessions move, to the one backend taking them"
    );
    assert!(app.animating(), "a change starts a glide");
    let start = text(&app, (80, 24));
    assert!(start.contains(&m.headline), "the counter:\n{start}");
    for _ in 0..GLIDE_FRAMES / 2 {
        app.tick_frame();
    }
    snapshot("watch_gliding_80x24", text(&app, (80, 24)));
    for _ in 0..GLIDE_FRAMES {
        app.tick_frame();
    }
    assert!(!app.animating(), "no frames once the glide is over");
    snapshots("watch_settled", &app);
    let wide = text(&app, (160, 48));
    assert!(wide.contains(&format!("moved {}", m.summary.moved)), "{wide}");
    assert!(wide.contains("● moved by api-2"), "{wide}");
    // Without colour the moved sessions still stand out.
    app.no_color = true;
    assert!(text(&app, (80, 24)).contains('●'));
    // The highlight ends; w brings the glide back.
    for _ in 0..WATCH_SECS {
        app.tick_second();
    }
    assert!(app.watching().is_none());
    assert!(!text(&app, (80, 24)).contains('●'));
    assert!(text(&app, (80, 24)).contains(&m.headline), "the counter stays");
    app.update(Msg::Watch);
    assert!(app.animating());
    assert!(
        app.flash
            .as_ref()
            .unwrap()
            .text
            .contains("watching the last change again")
    );
    // A change the dashboard did not see happen is shown, not replayed.
    let mut late = fixture();
    late.set_moves(m, false);
    assert!(!late.animating());
}

#[test]
fn modulo_beside_the_ring_marks_what_each_would_have_moved() {
    let mut none = fixture();
    none.update(Msg::Modulo);
    assert!(!none.modulo);
    assert!(none.flash.as_ref().unwrap().text.contains("no change yet"));

    let (mut app, _router) = after_kill();
    app.update(Msg::Modulo);
    assert!(app.modulo);
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(format!("modulo_{w}x{h}"), text(&app, (w, h)));
    }
    let screen = text(&app, (80, 24));
    for needle in ["ring moved", "hash % N moved", "ideal K/N", "(N−1)/N", "% ring only"] {
        assert!(screen.contains(needle), "{needle}:\n{screen}");
    }
    // More sessions move on the modulo side.
    let m = app.scene().moves.clone().unwrap();
    assert!(m.summary.modulo > m.summary.ring, "{:?}", m.summary);
    let half = |s: &str, right: bool| -> usize {
        s.lines()
            .map(|l| {
                let chars: Vec<char> = l.chars().collect();
                let (a, b) = chars.split_at(chars.len().min(40));
                if right { b } else { a }.iter().filter(|&&c| c == '●').count()
            })
            .sum()
    };
    let wide = text(&app, (80, 24));
    assert!(half(&wide, true) > half(&wide, false), "{wide}");
    app.update(Msg::Back);
    assert!(!app.modulo, "Esc goes back to the ring");
}

#[test]
fn the_probe_walks_a_typed_key_past_a_killed_backend() {
    let (router, _) = killed_router();
    let key = (0..10_000)
        .map(|i| format!("visitor-{i}"))
        .find(|k| {
            let p = router.probe(k.as_bytes(), None, Timestamp(0)).unwrap();
            p.walk.steps[0].skip == Some(Skip::Killed)
        })
        .expect("a key whose walk starts at api-2");
    let mut app = fixture();
    app.update(Msg::Probe);
    assert_eq!(app.mode(), Mode::Prompt);
    for c in key.chars() {
        app.update(Msg::TypeChar(c));
    }
    assert!(app.take_requests().is_empty(), "nothing is probed before Enter");
    app.update(Msg::Submit);
    assert_eq!(app.take_requests(), [Request::Probe(key.clone())]);
    let result = router
        .probe(key.as_bytes(), None, Timestamp(0))
        .map_err(|e| e.to_string());
    app.on_probe(key.clone(), result);
    assert_eq!(app.probing(), Some(key.as_str()), "probed again at each snapshot");
    snapshots("probe", &app);
    let screen = text(&app, (80, 24));
    for needle in ["skipped: api-2 is killed", "owner: api-1", "◇", "◈"] {
        assert!(screen.contains(needle), "{needle}:\n{screen}");
    }
    assert!(footer(&screen).contains("Enter probe"), "{screen}");
    // A key the router refuses says why.
    app.on_probe("x".into(), Err("the key is empty".into()));
    assert!(text(&app, (80, 24)).contains("✗ the key is empty"));
    // Esc closes it, and the ring shows the last route again.
    app.update(Msg::Back);
    assert!(app.probed.is_none() && app.probing().is_none());
    assert!(!text(&app, (80, 24)).contains('◇'));
}

/// client-7, placed on api-2, moved to api-1 by the kill, then told "who are you?".
fn followed() -> Followed {
    Followed {
        fingerprint: 0x5d10_b5fd_c90e_2f81,
        history: History {
            session: "#5d10b5fd".into(),
            fingerprint: "5d10b5fdc90e2f81".into(),
            client: Some(7),
            backend: Some("api-1".into()),
            lost_logins: 1,
            happenings: VecDeque::from([
                Happening::Placed {
                    at_ms: 512_000,
                    backend: "api-2".into(),
                },
                Happening::Moved {
                    at_ms: 751_400,
                    from: "api-2".into(),
                    to: "api-1".into(),
                    why: MoveWhy::Killed,
                },
                Happening::LostLogin {
                    at_ms: 752_100,
                    backend: Some("api-1".into()),
                },
            ]),
            dropped: 0,
        },
        position: Some(0x4000_0000),
    }
}

#[test]
fn a_followed_client_is_marked_on_the_ring_with_its_history() {
    let mut app = fixture();
    // f in the sessions panel names the top row's client.
    app.update(Msg::NextPanel);
    app.update(Msg::Follow);
    match &app.popup {
        Some(ringside::dashboard::app::Popup::Prompt { kind, input, .. }) => {
            assert_eq!((*kind, input.as_str()), (PromptKind::Follow, "client-0"));
        }
        other => panic!("{other:?}"),
    }
    snapshot("follow_prompt_80x24", text(&app, (80, 24)));
    app.update(Msg::Submit);
    assert_eq!(app.take_requests(), [Request::Follow("client-0".into())]);
    app.set_followed(Some(followed()));
    app.update(Msg::PrevPanel);
    snapshots("follow", &app);
    for (w, h) in SIZES {
        let screen = text(&app, (w, h));
        for needle in [
            "following client-7",
            "moved api-2 → api-1: api-2 killed",
            "lost their login (1 time)",
        ] {
            assert!(screen.contains(needle), "{needle} at {w}×{h}:\n{screen}");
        }
        let ring: String = screen.lines().filter(|l| !l.contains("following")).collect();
        assert!(ring.contains('◎'), "its dot at {w}×{h}:\n{screen}");
    }
    assert!(footer(&text(&app, (80, 24))).contains("Esc unfollow"));
    // Esc stops following, here and in the engine.
    app.update(Msg::Back);
    assert_eq!(app.take_requests(), [Request::Unfollow(0x5d10_b5fd_c90e_2f81)]);
    assert!(app.following().is_none());
    assert!(!text(&app, (160, 48)).contains('◎'));
}

fn report() -> Report {
    let phase = |started_by: &str, from_secs: f64, to_secs: f64, notes: Vec<String>| Phase {
        started_by: started_by.into(),
        from_secs,
        to_secs,
        requests: 900,
        status: [896, 0, 4, 0],
        created: 300,
        reassigned: 0,
        lost_sessions: 4,
        load: vec![("api-1".into(), 313), ("api-2".into(), 284), ("api-3".into(), 303)],
        load_max_over_mean: 1.04,
        notes,
    };
    Report {
        scenario: "assets/scenarios/failover.toml".into(),
        phases: vec![
            phase("start", 0.0, 3.0, vec![]),
            phase(
                "kill api-2",
                3.0,
                6.0,
                vec![
                    "api-2 left: 92 of 300 sessions moved (30.7%) — modulo would have moved 70.3%, ideal 33.3%".into(),
                ],
            ),
        ],
        checks: vec![
            Outcome {
                at_secs: 6.0,
                check: "other_errors == 0".into(),
                measured: 0.0,
                passed: true,
            },
            Outcome {
                at_secs: 6.0,
                check: "remap <= 0.2".into(),
                measured: 0.307,
                passed: false,
            },
        ],
    }
}

#[test]
fn a_lesson_opens_paused_steps_replays_and_ends_with_its_report() {
    let mut app = fixture();
    app.flash = None;
    let mut start = lesson();
    (start.elapsed_secs, start.current, start.next, start.next_in_secs) = (0.0, None, Some(0), 3.0);
    start.steps[0].done = false;
    app.set_lesson(start.clone());
    assert_eq!(app.mode(), Mode::Report, "the card opens");
    assert_eq!(app.take_requests(), [Request::Lesson(LessonControl::Pause)]);
    snapshot("lesson_card_80x24", text(&app, (80, 24)));
    app.update(Msg::Yes);
    assert_eq!(app.take_requests(), [Request::Lesson(LessonControl::Resume)]);
    assert_eq!(app.mode(), Mode::Normal);

    // Paused: the band says so, n steps, P goes on.
    let mut paused = lesson();
    paused.paused = true;
    app.set_lesson(paused);
    app.flash = None;
    snapshots("lesson_paused", &app);
    let screen = text(&app, (80, 24));
    assert!(screen.contains("❚❚ paused"), "{screen}");
    assert!(footer(&screen).contains("P go on"), "{screen}");
    app.update(Msg::LessonStep);
    app.update(Msg::LessonPause);
    assert_eq!(
        app.take_requests(),
        [
            Request::Lesson(LessonControl::Step),
            Request::Lesson(LessonControl::Resume)
        ]
    );
    // A replay under way asks first.
    app.update(Msg::LessonReplay);
    assert_eq!(app.mode(), Mode::Confirm);
    app.update(Msg::Yes);
    assert_eq!(app.take_requests(), [Request::Lesson(LessonControl::Replay)]);

    // The end: the report opens once, each check passed or failed.
    let mut ended = lesson();
    (ended.current, ended.next, ended.elapsed_secs) = (Some(1), None, 8.0);
    ended.steps[1].done = true;
    ended.report = Some(report());
    app.set_lesson(ended.clone());
    assert_eq!(app.mode(), Mode::Report);
    let flash = app.flash.clone().unwrap();
    assert_eq!(flash.kind, FlashKind::Refused);
    assert!(flash.text.contains("1 of 2 checks passed"), "{flash:?}");
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(format!("lesson_report_{w}x{h}"), text(&app, (w, h)));
    }
    let screen = text(&app, (80, 24));
    assert!(screen.contains("✓ ok   at 6.0s: other_errors == 0"), "{screen}");
    assert!(screen.contains("✗ FAIL at 6.0s: remap <= 0.2"), "{screen}");
    app.update(Msg::Back);
    app.set_lesson(ended);
    assert_eq!(app.mode(), Mode::Normal, "once per run");
    app.update(Msg::LessonStep);
    assert_eq!(app.mode(), Mode::Report, "n shows it again");
    app.update(Msg::LessonReplay);
    assert_eq!(
        app.take_requests(),
        [Request::Lesson(LessonControl::Replay)],
        "at the end, no question"
    );
    // Without a lesson the keys say so.
    let mut plain = fixture();
    plain.update(Msg::LessonPause);
    assert!(plain.flash.unwrap().text.contains("no lesson runs"));
}

#[test]
fn a_capture_saves_the_frame_and_says_where() {
    let mut app = fixture();
    assert_eq!(app.update(Msg::Capture), None);
    assert_eq!(app.take_requests(), [Request::Capture]);
    // A short name, so the flash shows it whole at 80 columns.
    let dir = std::env::temp_dir().join(format!("rs-cap-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let frame = render(&app, 80, 24).backend().buffer().clone();
    ringside::dashboard::perform::capture(&frame, &[dir.join("missing"), dir.clone()], &mut app);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let (svg, txt) = (&files[0], &files[1]);
    assert_eq!(svg.extension().unwrap(), "svg");
    assert_eq!(txt.extension().unwrap(), "txt");
    assert_eq!(
        std::fs::read_to_string(txt).unwrap(),
        ringside::dashboard::export::to_text(&frame)
    );
    assert!(std::fs::read_to_string(svg).unwrap().starts_with("<svg"));
    let flash = app.flash.clone().unwrap();
    assert_eq!(flash.kind, FlashKind::Done);
    let name = svg.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(flash.text, format!("saved {name} and .txt in {}", dir.display()));
    let stem = svg.file_stem().unwrap().to_string_lossy().into_owned();
    let shown = text(&app, (80, 24))
        .replace(&dir.display().to_string(), "DIR")
        .replace(&stem, "ringside-YYYYMMDD-HHMMSS");
    snapshot("capture_flash_80x24", shown);
    // Nowhere to write: said, not hidden.
    ringside::dashboard::perform::capture(&frame, &[dir.join("missing")], &mut app);
    let refused = app.flash.clone().unwrap();
    assert_eq!(refused.kind, FlashKind::Refused);
    assert!(refused.text.contains("cannot write"), "{refused:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn each_view_fits_80x24_and_keeps_the_footer() {
    let (watched, _r) = after_kill();
    let mut modulo = watched.clone();
    modulo.update(Msg::Modulo);
    let mut probing = fixture();
    probing.update(Msg::Probe);
    let mut following = fixture();
    following.set_followed(Some(followed()));
    let mut lesson_app = fixture();
    lesson_app.set_lesson(lesson());
    let views = [
        ("watched", watched, '●'),
        ("modulo", modulo, '●'),
        ("probing", probing, '▏'),
        ("following", following, '◎'),
        ("lesson", lesson_app, '▶'),
    ];
    for (name, app, _) in &views {
        for (w, h) in [(80, 24), (100, 30), (160, 48), (40, 12)] {
            let screen = text(app, (w, h));
            assert!(footer(&screen).ends_with("q quit"), "{name} at {w}×{h}:\n{screen}");
        }
    }
    // NO_COLOR: not one colour, and each view's mark still reads.
    for (name, mut app, mark) in views {
        app.no_color = true;
        let terminal = render(&app, 80, 24);
        for cell in terminal.backend().buffer().content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "{name}: {cell:?}");
        }
        assert!(text(&app, (80, 24)).contains(mark), "{name} without colour");
    }
}
