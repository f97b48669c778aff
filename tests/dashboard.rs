//! The dashboard rendered in-process with ratatui's TestBackend from fixed
//! states (snapshots at 80×24, 100×30 and 160×48), its key handling and
//! how events change its state. The teaching views are in `dashboard/teach.rs`.

#[path = "dashboard/teach.rs"]
mod teach;

use std::collections::VecDeque;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ringside::bus::BusEvent;
use ringside::dashboard::app::{
    Action, App, FlashKind, LogKind, Mode, Msg, Panel, Popup, SessionRow, Snapshot, SortBy,
};
use ringside::dashboard::lesson::LessonState;
use ringside::dashboard::view;
use ringside::engine::Command;
use ringside::engine::view::{BackendView, ResponsesView, StatsView};
use ringside::experiment::scenario::StepView;
use ringside::router::affinity::AffinityMode;
use ringside::router::ring::RingMember;
use ringside::router::{
    BackendId, BackendState, ChangeKind, Event, Placement, RemapSummary, Ring, SessionName, StatsSnapshot, Via,
    VnodeHash,
};

const SIZES: [(u16, u16); 3] = [(80, 24), (100, 30), (160, 48)];

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
        requests: 100,
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
        redispatched: 4,
        ring: 1032,
        modulo: 2071,
        ideal: 1.0 / 3.0,
        backends_before: 3,
        backends_after: 2,
    }
}

fn stats() -> StatsView {
    StatsView {
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
        client_connections_per_thread: Vec::new(),
        closed_by_drain: 0,
        lost_in_flight: 0,
        store: None,
        dropped_events: 17,
        sampled_out_events: 200,
        lost_sessions: 9,
        last_remap: Some(remap()),
        last_remap_text: Some(remap().to_string()),
        uptime_secs: 754,
        placement: Placement::Ring,
        affinity: AffinityMode::LbCookie,
    }
}

/// The ring's owners for new keys at every sample, and its vnodes.
/// A ring as the dashboard gets it: owners of new keys by sample, vnodes, shares.
struct RingView {
    owners: Vec<Option<usize>>,
    ticks: Vec<(u32, usize)>,
    shares: Vec<f64>,
}

fn ring_of(names: &[&str], states: &[BackendState], vnodes: u32) -> RingView {
    let members: Vec<RingMember<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| RingMember {
            id: BackendId(i as u32),
            name: n,
            weight: 1,
        })
        .collect();
    let ring = Ring::build(&members, vnodes, VnodeHash::Mixed);
    let takes = |id: BackendId| states[id.index()].takes_new_sessions();
    let samples = ringside::dashboard::scene::RING_SAMPLES;
    let owners = (0..samples)
        .map(|i| {
            let p = ((i as u64) << 32) / samples as u64;
            ring.lookup(p as u32, takes).map(|v| v.owner.index())
        })
        .collect();
    let ticks = ring.vnodes().map(|v| (v.position, v.owner.index())).collect();
    RingView {
        owners,
        ticks,
        shares: ring.shares(names.len(), takes),
    }
}

/// A fixed state: api-1 up, api-2 killed, api-3 draining, api-4 down.
fn fixture_with(vnodes: u32) -> App {
    let names = ["api-1", "api-2", "api-3", "api-4"];
    let states = [
        BackendState::Up,
        BackendState::Killed,
        BackendState::Draining,
        BackendState::Down,
    ];
    let RingView { owners, ticks, shares } = ring_of(&names, &states, vnodes);
    let mut backends: Vec<BackendView> = names.iter().zip(states).map(|(n, s)| backend(n, s)).collect();
    for (b, share) in backends.iter_mut().zip(&shares) {
        b.ring_share = *share;
    }
    backends[0].sessions = 1032 + 700;
    backends[0].requests = 9000;
    backends[0].active = 3;
    backends[1].detected_after_ms = Some(2140);
    backends[1].failure = Some("connection refused".into());
    backends[2].sessions = 12;
    backends[2].active = 2;
    backends[2].drain_left_secs = Some(12);
    backends[3].health = "rise 1/2".into();
    backends[3].demo = false;
    backends[3].requests = 0;
    backends[3].failure = Some("timeout after 1000 ms".into());
    let sessions: Vec<SessionRow> = (0..30u32)
        .map(|i| SessionRow {
            key: format!("#{:08x}", u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32),
            fingerprint: u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            client: (i < 20).then(|| format!("client-{i}")),
            backend: if i % 5 == 0 { "api-3".into() } else { "api-1".into() },
            age_secs: 600 - i * 7,
            idle_secs: i,
            requests: 40 - i,
            reassignments: u16::from(i % 3 == 0) + u16::from(i == 7) * 2,
            position: i.wrapping_mul(0x0800_0000),
        })
        .collect();
    let mut app = App::new(false, "/tmp/ringside.log".into());
    app.set_snapshot(Snapshot {
        proxy: "127.0.0.1:8080".into(),
        admin: "127.0.0.1:8090".into(),
        backends,
        stats: Some(stats()),
        sessions,
        vnodes: ticks,
        owners,
        vnodes_per_weight: vnodes,
        traffic: Some((true, 50.0)),
        drain_timeout_secs: 30,
    });
    let live = app.live_mut();
    live.history = vec![
        ("api-1".into(), VecDeque::from([20, 25, 30, 28, 40, 45, 50, 48])),
        ("api-2".into(), VecDeque::from([20, 22, 25, 0, 0, 0, 0, 0])),
        ("api-3".into(), VecDeque::from([20, 18, 10, 5, 2, 1, 0, 0])),
    ];
    live.rps = 50;
    live.errors_per_sec = 1;
    let name = |id: BackendId| names[id.index()].to_owned();
    for (at, e) in [
        (
            750,
            BusEvent::Router(Event::Routed {
                session: Some(SessionName {
                    fingerprint: 0x5d10_b5fd_c90e_2f81,
                    address: None,
                }),
                position: 0x4000_0000,
                backend: BackendId(0),
                via: Via::Placement,
                at: ringside::router::Timestamp(0),
            }),
        ),
        (751, BusEvent::Command("killed api-2: its server stopped".into())),
        (
            753,
            BusEvent::Detected {
                backend: "api-2".into(),
                after_ms: 2140,
                by: ringside::bus::DetectedBy::Connect,
            },
        ),
        (
            753,
            BusEvent::Router(Event::BackendState {
                backend: BackendId(1),
                from: BackendState::Up,
                to: BackendState::Killed,
            }),
        ),
        (753, BusEvent::Router(Event::Remap(remap()))),
        (
            754,
            BusEvent::Drain {
                backend: "api-3".into(),
                active: 1,
                sessions: 12,
                remaining_secs: 12,
                done: None,
            },
        ),
    ] {
        app.on_event(&e, at, name);
    }
    app.on_reply(
        &Command::Kill("api-2".into()),
        Ok("killed api-2: its server stopped; the balancer will notice by failed connects and health checks"),
    );
    app
}

fn fixture() -> App {
    fixture_with(150)
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

fn text(app: &App, (w, h): (u16, u16)) -> String {
    screen(&render(app, w, h))
}

/// Draws like the UI loop does: the app learns what the frame could show.
fn draw(app: &mut App, (w, h): (u16, u16)) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    let mut viewport = Default::default();
    terminal
        .draw(|f| {
            viewport = view::draw(app, f).1;
        })
        .unwrap();
    app.viewport = viewport;
    screen(&terminal)
}

/// One snapshot, kept in `tests/snapshots` with the others.
fn snapshot(name: impl AsRef<str>, screen: String) {
    insta::assert_snapshot!(name.as_ref(), screen);
}

/// One snapshot per size, named `NAME_WxH`.
fn snapshots(name: &str, app: &App) {
    for size in SIZES {
        insta::assert_snapshot!(format!("{name}_{}x{}", size.0, size.1), text(app, size));
    }
}

fn footer(screen: &str) -> &str {
    screen.lines().last().unwrap()
}

#[test]
fn whole_screen() {
    snapshots("whole_screen", &fixture());
}

#[test]
fn help_fits_or_scrolls() {
    let mut app = fixture();
    app.update(Msg::Help);
    snapshots("help", &app);
    // At 80×24 it scrolls: its last line, `q` and Ctrl-C, come into view.
    let first = draw(&mut app, (80, 24));
    assert!(first.contains("help 1–"), "{first}");
    app.update(Msg::Last);
    let end = draw(&mut app, (80, 24));
    assert!(end.contains("vnode passed by and why"), "the last word: {end}");
    // On a tall terminal everything fits.
    app.update(Msg::First);
    let tall = text(&app, (160, 64));
    assert!(tall.contains(" help — Esc or ? closes "), "{tall}");
    assert!(tall.contains("lost") && tall.contains("dead server's memory"), "{tall}");
}

#[test]
fn delete_asks_first() {
    let mut app = fixture();
    app.update(Msg::Down);
    assert_eq!(
        app.update(Msg::Act(Action::Remove)),
        None,
        "nothing is sent before the answer"
    );
    assert_eq!(app.mode(), Mode::Confirm);
    snapshots("confirm_remove", &app);
    // Anything but y is no.
    assert_eq!(app.update(Msg::No), None);
    assert_eq!(app.mode(), Mode::Normal);
    assert!(app.flash.as_ref().unwrap().text.contains("not done"));
    app.update(Msg::Act(Action::Remove));
    assert_eq!(app.update(Msg::Yes), Some(Command::Remove("api-2".into())));
    // So does a restart of the lesson.
    app.update(Msg::Act(Action::Restart));
    let asked = text(&app, (80, 24));
    assert!(
        asked.contains("Start the lesson afresh?") && asked.contains("1,744 sessions"),
        "{asked}"
    );
    assert_eq!(app.update(Msg::Yes), Some(Command::Restart));
}

#[test]
fn pickers_choose_a_placement_or_an_affinity() {
    let mut app = fixture();
    assert_eq!(app.update(Msg::Act(Action::PickPlacement)), None);
    snapshots("picker_placement", &app);
    // Already in force: said, not sent.
    assert_eq!(app.update(Msg::Yes), None);
    assert!(app.flash.as_ref().unwrap().text.contains("already"));
    app.update(Msg::Act(Action::PickPlacement));
    app.update(Msg::Down);
    assert_eq!(app.update(Msg::Yes), Some(Command::Placement(Placement::BoundedRing)));
    app.update(Msg::Act(Action::PickAffinity));
    let shown = text(&app, (80, 24));
    assert!(shown.contains("● lb-cookie") && shown.contains("6   none"), "{shown}");
    // Straight to `none`: no mode in between is switched to.
    assert_eq!(app.update(Msg::Pick(5)), Some(Command::Affinity(AffinityMode::None)));
    app.update(Msg::Act(Action::PickAffinity));
    assert_eq!(app.update(Msg::Back), None);
    assert_eq!(app.mode(), Mode::Normal);
}

#[test]
fn popups_are_modal() {
    let mut app = fixture();
    app.update(Msg::Help);
    assert_eq!(app.update(Msg::Down), None);
    assert_eq!(app.update(Msg::Act(Action::Kill)), None, "no kill behind the help");
    assert_eq!(app.selected, 0, "j scrolled the help, not the table");
    app.update(Msg::Back);
    assert_eq!(app.mode(), Mode::Normal);
    app.update(Msg::Act(Action::PickAffinity));
    assert_eq!(app.update(Msg::Act(Action::Kill)), None);
    assert_eq!(app.update(Msg::Freeze), None);
    assert!(!app.is_frozen());
}

#[test]
fn esc_backs_out_and_never_quits() {
    let mut app = fixture();
    app.update(Msg::StartFilter);
    app.update(Msg::FilterChar('#'));
    app.update(Msg::Back);
    assert!(
        !app.typing && app.filter.is_none(),
        "Esc while typing clears the filter"
    );
    app.update(Msg::StartFilter);
    app.update(Msg::FilterChar('#'));
    app.update(Msg::FilterDone);
    app.update(Msg::NextPanel);
    app.update(Msg::ToggleOnlySelected);
    app.update(Msg::Help);
    let mut closed = Vec::new();
    for _ in 0..6 {
        app.update(Msg::Back);
        closed.push((app.popup.is_some(), app.filter.is_some(), app.only_selected, app.focus));
        assert!(!app.quit);
    }
    assert_eq!(
        closed[..4],
        [
            (false, true, true, Panel::Sessions),
            (false, false, true, Panel::Sessions),
            (false, false, false, Panel::Sessions),
            (false, false, false, Panel::Backends),
        ]
    );
    assert!(app.flash.as_ref().unwrap().text.contains("q quits"));
    app.update(Msg::Quit);
    assert!(app.quit);
}

#[test]
fn the_footer_always_offers_help_and_quit() {
    let mut states: Vec<(&str, App)> = vec![("normal", fixture())];
    let mut sessions = fixture();
    sessions.update(Msg::NextPanel);
    states.push(("sessions", sessions));
    let mut log = fixture();
    log.update(Msg::PrevPanel);
    states.push(("log", log));
    let mut frozen = fixture();
    frozen.update(Msg::Freeze);
    states.push(("frozen", frozen));
    let mut picker = fixture();
    picker.update(Msg::Act(Action::PickPlacement));
    states.push(("picker", picker));
    let mut confirm = fixture();
    confirm.update(Msg::Act(Action::Remove));
    states.push(("confirm", confirm));
    for (name, app) in &states {
        for (w, h) in [(80, 24), (100, 30), (160, 48), (40, 12)] {
            let screen = text(app, (w, h));
            let last = footer(&screen);
            assert!(last.ends_with("? help · q quit"), "{name} at {w}×{h}: {last:?}");
        }
    }
    let mut help = fixture();
    help.update(Msg::Help);
    assert!(footer(&text(&help, (80, 24))).contains("q quit"));
    let mut typing = fixture();
    typing.update(Msg::StartFilter);
    typing.update(Msg::FilterChar('3'));
    let screen = text(&typing, (80, 24));
    assert!(
        footer(&screen).contains("filter: 3▏") && footer(&screen).contains("Esc clear"),
        "{screen}"
    );
    insta::assert_snapshot!("typing_a_filter_80x24", screen);
}

#[test]
fn a_flash_message_says_what_each_action_did_at_every_size() {
    let mut app = fixture();
    app.on_reply(
        &Command::WeightBy {
            backend: "api-1".into(),
            delta: -1,
        },
        Err("the weight of api-1 is already 1 (weights are 1 to 100)".into()),
    );
    assert_eq!(app.flash.as_ref().unwrap().kind, FlashKind::Refused);
    for (w, h) in [(40, 10), (40, 12), (80, 24), (100, 30), (160, 48)] {
        let screen = text(&app, (w, h));
        let flash = screen.lines().rev().nth(1).unwrap();
        assert!(flash.starts_with(" ✗ weight api-1 -1: refused"), "{w}×{h}: {flash:?}");
        if w >= 100 {
            assert!(flash.contains("already 1"), "{flash}");
        } else {
            assert!(flash.ends_with('…'), "cut with an ellipsis at {w}×{h}: {flash:?}");
        }
    }
    insta::assert_snapshot!("flash_refused_80x24", text(&app, (80, 24)));
    // It fades after a while.
    for _ in 0..ringside::dashboard::app::FLASH_SECS {
        app.tick_second();
    }
    assert!(app.flash.is_none());
}

#[test]
fn freezing_keeps_every_figure_on_screen() {
    let mut app = fixture();
    app.update(Msg::Freeze);
    let before = text(&app, (160, 48));
    // The engine goes on: rates, snapshots, events, seconds.
    app.on_event(
        &BusEvent::Second {
            requests: 999,
            errors: 0,
            sessions: 1,
            lost_sessions: 0,
            dropped: 0,
        },
        800,
        |_| String::new(),
    );
    let mut next = app.scene().snapshot.clone();
    for b in &mut next.backends {
        b.requests += 5000;
        b.sessions = 0;
    }
    next.sessions.clear();
    app.set_snapshot(next);
    app.tick_second();
    app.on_event(&BusEvent::Command("ignored while frozen".into()), 801, |_| {
        String::new()
    });
    app.flash = None;
    let mut expected = before.lines().collect::<Vec<_>>();
    let after_text = text(&app, (160, 48));
    let mut after = after_text.lines().collect::<Vec<_>>();
    // Only the flash line may differ (it reports actions, not figures).
    let flash = expected.len() - 2;
    expected.remove(flash);
    after.remove(flash);
    assert_eq!(expected, after, "the frozen screen changed");
    assert!(before.contains("❚❚ FROZEN"));
    insta::assert_snapshot!("frozen_80x24", text(&app, (80, 24)));
    // Live again: the figures catch up at once.
    app.update(Msg::Freeze);
    let live = text(&app, (160, 48));
    assert!(live.contains("req/s 999"), "{live}");
    assert!(!live.contains("FROZEN"));
}

#[test]
fn the_ring_reads_without_colour() {
    let mut app = fixture();
    app.no_color = true;
    let terminal = render(&app, 160, 48);
    let buffer = terminal.backend().buffer();
    for cell in buffer.content() {
        assert_eq!(cell.fg, Color::Reset, "{cell:?}");
    }
    let screen = screen(&terminal);
    insta::assert_snapshot!("no_color_160x48", screen);
    // Each backend that takes new keys has its own fill on the ring and in the legend.
    assert!(screen.lines().any(|l| l.starts_with("█ api-1 ████")), "{screen}");
    let ring_cells = screen.matches('█').count();
    assert!(ring_cells > 20, "{ring_cells}");
    // Out of service: no arc, and the legend says so.
    assert!(screen.contains("api-2 killed: no new keys"), "{screen}");
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
fn few_vnodes_draw_long_arcs() {
    // Three backends up, one vnode each: three arcs, three marks.
    let names = ["api-1", "api-2", "api-3"];
    let states = [BackendState::Up; 3];
    let mut app = fixture_with(1);
    let RingView { owners, ticks, shares } = ring_of(&names, &states, 1);
    let mut snapshot = app.scene().snapshot.clone();
    snapshot.backends.truncate(3);
    for (b, share) in snapshot.backends.iter_mut().zip(&shares) {
        b.state = BackendState::Up;
        b.ring_share = *share;
        b.failure = None;
    }
    snapshot.owners = owners;
    snapshot.vnodes = ticks;
    app.set_snapshot(snapshot);
    let screen = text(&app, (160, 48));
    insta::assert_snapshot!("ring_one_vnode_160x48", screen);
    assert_eq!(screen.matches('•').count(), 3, "{screen}");
    assert!(screen.contains("1 vnode/weight"));
}

#[test]
fn v_steps_the_vnodes_live() {
    let mut app = fixture_with(1);
    assert_eq!(app.update(Msg::Act(Action::Vnodes)), Some(Command::Vnodes(4)));
    let mut app = fixture_with(16);
    assert_eq!(app.update(Msg::Act(Action::Vnodes)), Some(Command::Vnodes(150)));
    let mut app = fixture_with(150);
    assert_eq!(app.update(Msg::Act(Action::Vnodes)), Some(Command::Vnodes(1)));
}

#[test]
fn small_terminals_keep_names_whole() {
    for (w, h) in [(40, 12), (50, 14), (60, 16)] {
        let screen = text(&fixture(), (w, h));
        for name in ["api-1", "api-2", "api-3", "api-4"] {
            assert!(screen.contains(name), "{name} at {w}×{h}:\n{screen}");
        }
    }
    insta::assert_snapshot!("small_40x12", text(&fixture(), (40, 12)));
}

#[test]
fn any_size_renders_without_panicking() {
    let mut states = vec![fixture()];
    for msg in [Msg::Help, Msg::Act(Action::Remove), Msg::Act(Action::PickAffinity)] {
        let mut app = fixture();
        app.update(msg);
        states.push(app);
    }
    for app in &states {
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
            let screen = text(app, (w, h));
            if w < 40 || h < 10 {
                assert!(screen.contains("enlarge") || w < 10, "{w}×{h}: {screen}");
            }
        }
    }
}

#[test]
fn the_last_change_is_wrapped_never_cut_mid_word() {
    let app = fixture();
    for (w, h) in SIZES {
        // Narrower than 110 columns, the same in fewer words.
        let summary = if w >= 110 { remap().to_string() } else { remap().brief() };
        let screen = text(&app, (w, h));
        let lines: Vec<&str> = screen
            .lines()
            .skip_while(|l| !l.contains("last change:"))
            .take_while(|l| !l.starts_with('┌'))
            .map(str::trim)
            .collect();
        let shown = lines.join(" ");
        assert!(!lines.is_empty(), "{w}×{h}:\n{screen}");
        if let Some(cut) = shown.strip_suffix('…') {
            assert!(
                format!("last change: {summary}").starts_with(cut.trim_end()),
                "{w}×{h}: {shown}"
            );
        } else {
            assert_eq!(shown, format!("last change: {summary}"), "{w}×{h}");
        }
    }
}

#[test]
fn a_backend_at_its_cap_shows_its_queue() {
    let mut app = fixture();
    let mut snapshot = app.scene().snapshot.clone();
    snapshot.backends[0].in_use = 100;
    snapshot.backends[0].queued = 7;
    app.set_snapshot(snapshot.clone());
    let screen = text(&app, (160, 48));
    assert!(screen.contains("7 queued · 100/100 in use"), "{screen}");
    snapshot.backends[0].queued = 0;
    app.set_snapshot(snapshot);
    assert!(text(&app, (160, 48)).contains("at its cap of 100"));
}

#[test]
fn every_state_reads_without_colour() {
    let screen = text(&fixture(), (160, 48));
    for label in [
        "▲ up",
        "✖ killed",
        "◐ draining",
        "▼ down",
        "rise 1/2",
        "detected in 2.1s",
        "connection refused",
        "timeout after 1000 ms",
        "12s left",
    ] {
        assert!(screen.contains(label), "missing {label:?}");
    }
    assert!(screen.contains(
        "api-2 left: 1,032 of 3,100 sessions moved (33.3%), 4 of them by redispatch before it was found down"
    ));
    assert!(
        screen.contains("last key #5d10b5fd → api-1"),
        "the last routed session is named"
    );
}

#[test]
fn figures_say_only_what_is_true() {
    let mut app = fixture();
    let mut snapshot = app.scene().snapshot.clone();
    // Revived: no detection time; no traffic: no latency.
    snapshot.backends[1].state = BackendState::Up;
    snapshot.backends[1].failure = None;
    snapshot.backends[1].requests = 0;
    app.set_snapshot(snapshot);
    let screen = text(&app, (160, 48));
    let row = screen
        .lines()
        .find(|l| l.contains("api-2 ") && l.contains("▲ up"))
        .unwrap();
    assert!(!row.contains("detected"), "{row}");
    assert!(row.contains(" – "), "{row}");
    // A drain speaks of one connection, not `1 connections`.
    assert!(
        screen.contains("draining api-3: 1 connection, 12 sessions, 12s left"),
        "{screen}"
    );
    // Nothing can take a request: the header says so.
    let mut none = app.scene().snapshot.clone();
    for b in &mut none.backends {
        b.state = BackendState::Down;
    }
    app.set_snapshot(none);
    let header = text(&app, (80, 24));
    assert!(
        header.lines().nth(1).unwrap().contains("no backend takes requests"),
        "{header}"
    );
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
    // Weights and rates change from their value now, so fast keys add up.
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
    // Selection stays within the table; g and G go to its ends.
    for _ in 0..10 {
        app.update(Msg::Down);
    }
    assert_eq!(app.selected, 3);
    app.update(Msg::First);
    assert_eq!(app.selected, 0);
    app.update(Msg::Last);
    assert_eq!(app.selected, 3);
    app.update(Msg::SelectBackend(0));
    assert_eq!(app.selected, 0);
    app.update(Msg::SelectBackend(99));
    assert_eq!(app.selected, 0);
    app.update(Msg::Quit);
    assert!(app.quit);
}

#[test]
fn sessions_name_their_client_sort_and_filter() {
    let mut app = fixture();
    let screen = text(&app, (160, 48));
    assert!(screen.contains("client-7"), "{screen}");
    app.update(Msg::NextPanel);
    assert_eq!(app.focus, Panel::Sessions);
    app.viewport.sessions = 10;
    app.update(Msg::Down);
    assert_eq!(app.session_scroll, 1);
    app.update(Msg::PageDown);
    assert_eq!(app.session_scroll, 11);
    app.update(Msg::Last);
    assert_eq!(app.session_scroll, 20);
    app.update(Msg::First);
    assert_eq!(app.session_scroll, 0);
    // By moves, the most moved first; by requests, the busiest.
    app.update(Msg::SortBy(SortBy::Moves));
    assert_eq!(app.visible_sessions()[0].key, app.scene().snapshot.sessions[7].key);
    app.update(Msg::SortBy(SortBy::Requests));
    assert_eq!(app.visible_sessions()[0].requests, 40);
    // Only the selected backend's sessions.
    app.update(Msg::SelectBackend(2));
    app.update(Msg::ToggleOnlySelected);
    assert!(app.visible_sessions().iter().all(|s| s.backend == "api-3"));
    assert_eq!(app.visible_sessions().len(), 6);
    app.update(Msg::ToggleOnlySelected);
    // A filter, by key or client; the title says how many match.
    app.update(Msg::StartFilter);
    for c in "client-1".chars() {
        app.update(Msg::FilterChar(c));
    }
    app.update(Msg::FilterDone);
    assert_eq!(app.visible_sessions().len(), 11, "client-1 and client-10 … 19");
    let screen = text(&app, (160, 48));
    assert!(screen.contains("/client-1 11 of 30 listed"), "{screen}");
    app.update(Msg::Back);
    assert_eq!(app.visible_sessions().len(), 30);
}

#[test]
fn the_log_says_each_thing_once_in_its_colour() {
    let app = fixture();
    let kinds: Vec<LogKind> = app.scene().log.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            LogKind::Route,
            LogKind::Command,
            LogKind::Failure,
            LogKind::Failure,
            LogKind::Remap,
            LogKind::Drain
        ]
    );
    // A command's summary and the command are one line.
    let mut app = fixture();
    let mut reweighted = remap();
    reweighted.kind = ChangeKind::Reweighted;
    let before = app.scene().log.len();
    app.on_event(&BusEvent::Router(Event::Remap(reweighted.clone())), 800, |_| {
        String::new()
    });
    app.on_event(
        &BusEvent::Command(format!("api-2: weight 3 — {reweighted}")),
        800,
        |_| String::new(),
    );
    assert_eq!(app.scene().log.len(), before + 1);
    assert_eq!(app.scene().log.back().unwrap().kind, LogKind::Command);
    // A recovery is green, not red.
    app.on_event(
        &BusEvent::Router(Event::BackendState {
            backend: BackendId(1),
            from: BackendState::Down,
            to: BackendState::Up,
        }),
        801,
        |_| "api-2".into(),
    );
    assert_eq!(app.scene().log.back().unwrap().kind, LogKind::Recovery);
    // Long lines end with an ellipsis.
    app.on_event(&BusEvent::Command("x ".repeat(200)), 802, |_| String::new());
    let screen = text(&app, (160, 48));
    assert!(
        screen.lines().any(|l| l.contains("x x x") && l.contains("…")),
        "{screen}"
    );
    // Routes the table made are not logged (the ring shows the latest).
    let before = app.scene().log.len();
    app.on_event(
        &BusEvent::Router(Event::Routed {
            session: Some(SessionName::default()),
            position: 7,
            backend: BackendId(0),
            via: Via::Table,
            at: ringside::router::Timestamp(0),
        }),
        803,
        |_| "api-1".into(),
    );
    assert_eq!(app.scene().log.len(), before);
    assert_eq!(app.scene().last_route.as_ref().unwrap().position, 7);
}

#[test]
fn the_mouse_focuses_and_sorts() {
    let mut app = fixture();
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let mut areas = None;
    terminal
        .draw(|f| {
            areas = Some(view::draw(&app, f).0);
        })
        .unwrap();
    let areas = areas.unwrap();
    let moves = areas.session_columns.iter().find(|c| c.2 == SortBy::Moves).unwrap();
    let click = ratatui::crossterm::event::Event::Mouse(ratatui::crossterm::event::MouseEvent {
        kind: ratatui::crossterm::event::MouseEventKind::Down(ratatui::crossterm::event::MouseButton::Left),
        column: moves.0 + 1,
        row: areas.sessions.y + 1,
        modifiers: ratatui::crossterm::event::KeyModifiers::NONE,
    });
    let msg = ringside::dashboard::input::message(&click, app.mode(), &areas).unwrap();
    assert_eq!(msg, Msg::SortBy(SortBy::Moves));
    app.update(msg);
    assert_eq!((app.sort, app.focus), (SortBy::Moves, Panel::Sessions));
}

/// The failover lesson 4.2 s in: its kill done, a check to come.
fn lesson() -> LessonState {
    LessonState {
        name: "assets/scenarios/failover.toml".into(),
        headline: "failover — a backend dies under traffic.".into(),
        caption: "Its server really stops. The balancer notices by failed connects and health \
                  checks, and only the dead backend's sessions move.\nUsers whose session lived \
                  in the dead server's memory must log in again."
            .into(),
        duration_secs: 8.0,
        elapsed_secs: 4.2,
        paused: false,
        pace: 1.0,
        steps: vec![
            StepView {
                at_secs: 3.0,
                label: "kill api-2".into(),
                done: true,
            },
            StepView {
                at_secs: 6.0,
                label: "expect other_errors == 0".into(),
                done: false,
            },
        ],
        current: Some(0),
        next: Some(1),
        next_in_secs: 1.8,
        next_due: None,
        log: vec!["killed api-2: its server stopped".into()],
        checks: Vec::new(),
        report: None,
        run: 1,
        resetting: false,
    }
}

#[test]
fn a_lesson_shows_its_text_its_step_and_its_end() {
    let mut app = fixture();
    app.set_lesson(lesson());
    app.update(Msg::Back);
    app.flash = None;
    snapshots("lesson", &app);
    let screen = text(&app, (80, 24));
    assert!(screen.contains("failover — a backend dies under traffic."), "{screen}");
    assert!(screen.contains("next in 2s: expect other_errors == 0"), "{screen}");
    let mut ended = lesson();
    ended.report = Some(ringside::experiment::scenario::Report {
        scenario: ended.name.clone(),
        phases: Vec::new(),
        checks: Vec::new(),
    });
    app.set_lesson(ended);
    assert!(text(&app, (80, 24)).contains("the lesson has ended"));
}

#[test]
fn the_header_shows_the_session_store_and_its_trouble() {
    let app = fixture();
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
    for (state, label) in [
        (ringside::store::StoreState::Ok, "store redis ok"),
        (ringside::store::StoreState::Degraded, "store REDIS DEGRADED"),
    ] {
        let mut app = app.clone();
        let mut snapshot = app.scene().snapshot.clone();
        snapshot.stats.as_mut().unwrap().store = Some(view(state));
        app.set_snapshot(snapshot);
        let top = text(&app, (160, 48));
        let header = top.lines().next().unwrap();
        assert!(header.contains(label), "{header}");
        assert!(header.contains("42/100000 keys"), "{header}");
    }
    assert!(!text(&app, (160, 48)).contains("store"));
}

#[test]
fn popup_state_is_plain_data() {
    let mut app = fixture();
    app.update(Msg::Help);
    assert!(matches!(app.popup, Some(Popup::Help { scroll: 0 })));
}
