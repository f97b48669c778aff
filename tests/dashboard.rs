//! The dashboard rendered in-process with ratatui's TestBackend from fixed
//! states (snapshots), its key handling and how events change its state.

use std::collections::VecDeque;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ringside::bus::BusEvent;
use ringside::dashboard::app::{Action, App, LogKind, Msg, Panel, SessionRow, Snapshot};
use ringside::dashboard::view;
use ringside::engine::Command;
use ringside::engine::view::{BackendView, ResponsesView, StatsView};
use ringside::router::ring::RingMember;
use ringside::router::{
    BackendId, BackendState, ChangeKind, Event, RemapSummary, Ring, SessionName, StatsSnapshot, Via, VnodeHash,
};

fn backend(name: &str, state: BackendState) -> BackendView {
    BackendView {
        name: name.into(),
        addr: format!("127.0.0.1:808{}", &name[4..]),
        state,
        healthy: state.keeps_sessions(),
        health: String::new(),
        failure: None,
        demo: true,
        weight: 1,
        active: 0,
        requests: 0,
        sessions: 0,
        ring_share: 0.0,
        p50_ms: Some(0.4),
        p99_ms: Some(1.2),
        detected_after_ms: None,
        drain_left_secs: None,
        in_use: 0,
        cap: 100,
        queued: 0,
    }
}

fn remap() -> RemapSummary {
    RemapSummary {
        backend: "api-2".into(),
        kind: ChangeKind::Left,
        sessions: 3100,
        moved: 1032,
        ring: 1032,
        modulo: 2071,
        ideal: 1.0 / 3.0,
        backends_before: 3,
        backends_after: 2,
    }
}

/// A fixed state: api-1 up, api-2 killed, api-3 draining, api-4 down.
fn fixture() -> App {
    let names = ["api-1", "api-2", "api-3", "api-4"];
    let members: Vec<RingMember<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| RingMember {
            id: BackendId(i as u32),
            name: n,
            weight: 1,
        })
        .collect();
    let ring = Ring::build(&members, 150, VnodeHash::Mixed);
    let shares = ring.shares(4, |id| id.0 == 0);
    let mut backends = vec![
        backend("api-1", BackendState::Up),
        backend("api-2", BackendState::Killed),
        backend("api-3", BackendState::Draining),
        backend("api-4", BackendState::Down),
    ];
    for (b, share) in backends.iter_mut().zip(&shares) {
        b.ring_share = *share;
    }
    backends[0].sessions = 1032 + 700;
    backends[0].requests = 9000;
    backends[0].active = 3;
    backends[1].detected_after_ms = Some(2140);
    backends[2].sessions = 12;
    backends[2].active = 2;
    backends[2].drain_left_secs = Some(12);
    backends[3].health = "rise 1/2".into();
    let sessions: Vec<SessionRow> = (0..30u32)
        .map(|i| SessionRow {
            key: format!("#{:08x}", u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32),
            backend: if i % 5 == 0 { "api-3".into() } else { "api-1".into() },
            age_secs: 600 - i * 7,
            idle_secs: i,
            requests: 40 - i,
            reassignments: u16::from(i % 3 == 0),
            position: i.wrapping_mul(0x0800_0000),
        })
        .collect();
    let stats = StatsView {
        router: StatsSnapshot {
            sessions: 1744,
            created: 3100,
            expired: 0,
            evicted: 0,
            ended: 0,
            reassigned: 1032,
            forged_cookies: 1,
            synced: 0,
            routed: 9500,
            unroutable: 0,
        },
        responses: ResponsesView {
            total: 9500,
            ok_2xx: 9400,
            redirect_3xx: 0,
            client_4xx: 95,
            server_5xx: 5,
            bad_gateway_502: 0,
            unavailable_503: 5,
            gateway_timeout_504: 0,
            client_errors: 0,
        },
        redispatched: 4,
        tunnels: 0,
        smuggling_refused: 0,
        client_timeouts: 0,
        local_errors: 0,
        queued: 0,
        queue_timeouts: 0,
        parked_connections: 0,
        connection_cap: 1000,
        fd_limit: 4096,
        loops_refused: 0,
        client_connections: 0,
        closed_by_drain: 0,
        lost_in_flight: 0,
        store: None,
        dropped_events: 17,
        sampled_out_events: 200,
        lost_sessions: 9,
        last_remap: Some(remap()),
        last_remap_text: Some(remap().to_string()),
        uptime_secs: 754,
        placement: ringside::router::Placement::Ring,
        affinity: ringside::router::affinity::AffinityMode::LbCookie,
    };
    let mut app = App::new(false, "/tmp/ringside.log".into());
    app.set_snapshot(Snapshot {
        proxy: "127.0.0.1:8080".into(),
        admin: "127.0.0.1:8090".into(),
        backends,
        stats: Some(stats),
        sessions,
        vnodes: ring.vnodes().map(|v| (v.position, v.owner.index())).collect(),
        traffic: Some((true, 50.0)),
        drain_timeout_secs: 30,
    });
    app.history = vec![
        ("api-1".into(), VecDeque::from([20, 25, 30, 28, 40, 45, 50, 48])),
        ("api-2".into(), VecDeque::from([20, 22, 25, 0, 0, 0, 0, 0])),
        ("api-3".into(), VecDeque::from([20, 18, 10, 5, 2, 1, 0, 0])),
    ];
    app.rps = 50;
    app.errors_per_sec = 1;
    let name = |id: BackendId| names[id.index()].to_owned();
    app.on_event(
        &BusEvent::Router(Event::Routed {
            session: Some(SessionName {
                fingerprint: 0x5d10_b5fd_c90e_2f81,
                address: None,
            }),
            position: 0x4000_0000,
            backend: BackendId(0),
            via: Via::Placement,
            at: ringside::router::Timestamp(0),
        }),
        750,
        name,
    );
    app.on_event(&BusEvent::Command("killed api-2: its server stopped".into()), 751, name);
    app.on_event(
        &BusEvent::Detected {
            backend: "api-2".into(),
            after_ms: 2140,
            by: ringside::bus::DetectedBy::Connect,
        },
        753,
        name,
    );
    app.on_event(
        &BusEvent::Router(Event::BackendState {
            backend: BackendId(1),
            from: BackendState::Up,
            to: BackendState::Killed,
        }),
        753,
        name,
    );
    app.on_event(&BusEvent::Router(Event::Remap(remap())), 753, name);
    app.on_event(
        &BusEvent::Drain {
            backend: "api-3".into(),
            active: 2,
            sessions: 12,
            remaining_secs: 12,
            done: None,
        },
        754,
        name,
    );
    app
}

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| {
            view::draw(app, f);
        })
        .unwrap();
    terminal
}

fn screen(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn whole_screen_at_80x24() {
    insta::assert_snapshot!(screen(&render(&fixture(), 80, 24)));
}

#[test]
fn whole_screen_at_160x48() {
    insta::assert_snapshot!(screen(&render(&fixture(), 160, 48)));
}

#[test]
fn help_overlay_at_80x24() {
    let mut app = fixture();
    app.update(Msg::Help);
    insta::assert_snapshot!(screen(&render(&app, 80, 24)));
}

#[test]
fn every_state_reads_without_colour() {
    let text = screen(&render(&fixture(), 160, 48));
    for label in [
        "▲ up",
        "✖ killed",
        "◐ draining",
        "▼ down",
        "rise 1/2",
        "detected in 2.1s",
        "12s left",
    ] {
        assert!(text.contains(label), "missing {label:?}");
    }
    assert!(text.contains("api-2 left: 1,032 of 3,100 sessions moved (33.3%)"));
    assert!(text.contains("#5d10b5fd → api-1"), "the last routed session is named");
}

#[test]
fn no_color_draws_no_colour() {
    let mut app = fixture();
    app.no_color = true;
    let terminal = render(&app, 160, 48);
    let buffer = terminal.backend().buffer();
    for cell in buffer.content() {
        assert_eq!(cell.fg, Color::Reset, "{cell:?}");
    }
    let coloured = render(&fixture(), 160, 48);
    assert!(
        coloured
            .backend()
            .buffer()
            .content()
            .iter()
            .any(|c| c.fg != Color::Reset)
    );
}

#[test]
fn any_size_renders_without_panicking() {
    let app = fixture();
    for (w, h) in [
        (1, 1),
        (10, 3),
        (39, 9),
        (40, 10),
        (60, 15),
        (80, 24),
        (100, 30),
        (120, 40),
        (200, 60),
        (300, 100),
    ] {
        let text = screen(&render(&app, w, h));
        if w < 40 || h < 10 {
            assert!(text.contains("enlarge") || w < 10, "{w}×{h}: {text}");
        }
    }
    let mut help = fixture();
    help.update(Msg::Help);
    for (w, h) in [(40, 10), (50, 12), (80, 24)] {
        render(&help, w, h);
    }
}

#[test]
fn keys_become_commands_for_the_selected_backend() {
    let mut app = fixture();
    assert_eq!(app.update(Msg::Down), None);
    assert_eq!(app.selected_backend().unwrap().name, "api-2");
    assert_eq!(app.update(Msg::Act(Action::Kill)), Some(Command::Kill("api-2".into())));
    assert_eq!(
        app.update(Msg::Act(Action::Revive)),
        Some(Command::Revive("api-2".into()))
    );
    assert_eq!(
        app.update(Msg::Act(Action::Drain)),
        Some(Command::Drain {
            backend: "api-2".into(),
            timeout: None
        })
    );
    assert_eq!(
        app.update(Msg::Act(Action::Undrain)),
        Some(Command::Undrain("api-2".into()))
    );
    assert!(matches!(
        app.update(Msg::Act(Action::Extend)),
        Some(Command::Extend { .. })
    ));
    assert_eq!(
        app.update(Msg::Act(Action::WeightUp)),
        Some(Command::WeightBy {
            backend: "api-2".into(),
            delta: 1
        })
    );
    assert_eq!(
        app.update(Msg::Act(Action::WeightDown)),
        Some(Command::WeightBy {
            backend: "api-2".into(),
            delta: -1
        })
    );
    assert_eq!(app.update(Msg::Act(Action::AddDemo)), Some(Command::AddDemo));
    assert_eq!(
        app.update(Msg::Act(Action::Remove)),
        Some(Command::Remove("api-2".into()))
    );
    assert_eq!(
        app.update(Msg::Act(Action::NextPlacement)),
        Some(Command::Placement(ringside::router::Placement::BoundedRing))
    );
    assert_eq!(
        app.update(Msg::Act(Action::NextAffinity)),
        Some(Command::Affinity(ringside::router::affinity::AffinityMode::AppCookie))
    );
    assert_eq!(
        app.update(Msg::Act(Action::ToggleTraffic)),
        Some(Command::Traffic(false))
    );
    assert_eq!(
        app.update(Msg::Act(Action::FasterTraffic)),
        Some(Command::TrafficRateBy(1.5))
    );
    assert!(
        matches!(app.update(Msg::Act(Action::SlowerTraffic)), Some(Command::TrafficRateBy(f)) if (f - 1.0 / 1.5).abs() < 1e-9)
    );
    // Selection stays within the table.
    for _ in 0..10 {
        app.update(Msg::Down);
    }
    assert_eq!(app.selected, 3);
    app.update(Msg::SelectBackend(0));
    assert_eq!(app.selected, 0);
    app.update(Msg::SelectBackend(99));
    assert_eq!(app.selected, 0);
    app.update(Msg::Quit);
    assert!(app.quit);
}

#[test]
fn panels_filters_sorting_and_freezing() {
    let mut app = fixture();
    app.update(Msg::NextPanel);
    assert_eq!(app.focus, Panel::Sessions);
    app.update(Msg::Down);
    assert_eq!(app.session_scroll, 1);
    app.update(Msg::NextPanel);
    assert_eq!(app.focus, Panel::Log);
    app.update(Msg::NextPanel);
    assert_eq!(app.focus, Panel::Backends);
    // Sort by requests: the busiest first.
    app.update(Msg::Sort);
    app.update(Msg::Sort);
    assert_eq!(app.visible_sessions()[0].requests, 40);
    // Only the selected backend's sessions.
    app.update(Msg::SelectBackend(2));
    app.update(Msg::ToggleOnlySelected);
    assert!(app.visible_sessions().iter().all(|s| s.backend == "api-3"));
    assert_eq!(app.visible_sessions().len(), 6);
    app.update(Msg::ToggleOnlySelected);
    // A text filter.
    app.update(Msg::StartFilter);
    assert!(app.typing);
    let key = app.snapshot.sessions[7].key.clone();
    for c in key.chars().take(6) {
        app.update(Msg::FilterChar(c));
    }
    app.update(Msg::FilterDone(true));
    assert!(!app.typing);
    assert!(app.visible_sessions().iter().all(|s| s.key.starts_with(&key[..6])));
    app.update(Msg::StartFilter);
    app.update(Msg::FilterDone(false));
    assert_eq!(app.visible_sessions().len(), 30);
    // Freeze: new snapshots and log lines wait.
    app.update(Msg::Freeze);
    let lines = app.log.len();
    app.set_snapshot(Snapshot::default());
    app.log_line(1, LogKind::Command, "ignored while frozen".into());
    assert_eq!(app.snapshot.backends.len(), 4);
    assert_eq!(app.log.len(), lines);
    app.update(Msg::Freeze);
    app.set_snapshot(Snapshot::default());
    assert!(app.snapshot.backends.is_empty());
}

#[test]
fn events_update_the_state() {
    let app = fixture();
    assert_eq!(app.remap.as_deref(), Some(remap().to_string().as_str()));
    let last = app.last_route.as_ref().unwrap();
    assert_eq!((last.backend.as_str(), last.position), ("api-1", 0x4000_0000));
    let kinds: Vec<LogKind> = app.log.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            LogKind::Route,
            LogKind::Command,
            LogKind::State,
            LogKind::State,
            LogKind::Remap,
            LogKind::Drain
        ]
    );
    // Routes the table made are not logged (the ring shows the latest).
    let mut app = fixture();
    let before = app.log.len();
    app.on_event(
        &BusEvent::Router(Event::Routed {
            session: Some(SessionName::default()),
            position: 7,
            backend: BackendId(0),
            via: Via::Table,
            at: ringside::router::Timestamp(0),
        }),
        800,
        |_| "api-1".into(),
    );
    assert_eq!(app.log.len(), before);
    assert_eq!(app.last_route.as_ref().unwrap().position, 7);
    app.on_event(
        &BusEvent::Second {
            requests: 120,
            errors: 3,
            sessions: 10,
            lost_sessions: 0,
            dropped: 0,
        },
        801,
        |_| String::new(),
    );
    assert_eq!((app.rps, app.errors_per_sec), (120, 3));
    app.tick_second();
    assert!(app.history_of("api-1").is_some());
}

#[test]
fn the_header_shows_the_session_store_and_its_trouble() {
    let mut app = fixture();
    let view = |state| ringside::store::StoreView {
        url: "redis://127.0.0.1:6379".into(),
        state,
        degraded_total: 1,
        errors: 3,
        lookups: 10,
        hits: 9,
        writes: 100,
        dropped_writes: 0,
        remote_updates: 2,
        resyncs: 2,
        pending: 0,
        waits: 7,
        conflicts: 1,
        keys: 42,
        keys_max: 100_000,
        unshared: 0,
    };
    for (state, text) in [
        (ringside::store::StoreState::Ok, "store redis ok"),
        (ringside::store::StoreState::Degraded, "store REDIS DEGRADED"),
    ] {
        app.snapshot.stats.as_mut().unwrap().store = Some(view(state));
        let top = screen(&render(&app, 160, 48));
        let header = top.lines().next().unwrap();
        assert!(header.contains(text), "{header}");
        assert!(header.contains("42/100000 keys"), "{header}");
    }
    app.snapshot.stats.as_mut().unwrap().store = None;
    assert!(!screen(&render(&app, 160, 48)).contains("store"));
}
