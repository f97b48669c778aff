//! The dashboard: the ring, the backends and the sessions, live, with keys
//! to kill, revive or drain a backend.
//!
//! It reads aggregated state and a bounded, sampled event stream, drains the
//! stream once per frame and draws at most 30 frames a second, only when
//! something changed — it can never slow the proxy. The terminal is restored
//! on quit, on error and on panic.
//!
//! Files: the UI loop here; pure state in `app` (keys) and `scene` (what is
//! shown); `input` maps keys and the mouse; `view` draws; `lesson` is what a
//! scripted lesson shows; `moves` the last change's sessions and their
//! glide; `follow` the followed session; `perform` what the loop does for
//! the app's requests; `export` saves a frame; `text` fits text to the screen.

pub mod app;
pub mod export;
pub mod follow;
pub mod input;
pub mod lesson;
pub mod moves;
pub mod perform;
pub mod scene;
pub mod text;
pub mod view;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent};
use ratatui::crossterm::execute;
use tokio::sync::{mpsc, watch};

use crate::app::Handle;
use crate::engine::{Command, CommandError, Shared};
use crate::experiment::scenario::Lesson;
use app::App;
use moves::MovesView;
use scene::{RING_SAMPLES, SessionRow, Snapshot};

/// Most vnodes drawn on the ring; more are sampled evenly.
const MAX_TICKS: usize = 720;
/// Most sessions drawn and listed.
const MAX_SESSIONS: usize = 500;
/// Most demo clients named in the sessions table.
const MAX_CLIENTS: usize = 1000;

/// Runs the dashboard on a started ringside until the user quits or the
/// terminal goes away (SIGHUP). Needs a terminal on stdout; owns no socket
/// and starts nothing: every key is a command sent, in order, to `handle`.
pub async fn run(handle: &Handle, log_path: &str) -> anyhow::Result<()> {
    run_lesson(handle, log_path, None).await
}

/// Runs the dashboard with a scripted lesson shown above it, driven by
/// its keys (pause, next step, replay).
pub async fn run_lesson(handle: &Handle, log_path: &str, lesson: Option<&Lesson>) -> anyhow::Result<()> {
    require_terminal()?;
    let mut terminal = TerminalGuard::enter()?;
    ui_loop(handle, &mut terminal, log_path.to_owned(), lesson).await
}

/// Refuses to start a dashboard without a terminal to draw it on (checked
/// before anything is bound or started).
pub fn require_terminal() -> anyhow::Result<()> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("stdout is not a terminal, so there is no dashboard to draw: run `ringside --headless` instead");
    }
    Ok(())
}

/// Owns the terminal: raw mode, alternate screen, mouse capture; gives them
/// back on drop and on panic.
struct TerminalGuard {
    /// Always `Some` until dropped.
    terminal: Option<ratatui::DefaultTerminal>,
}

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        // Our hook first (mouse capture off), then ratatui's (screen and raw mode).
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(std::io::stdout(), DisableMouseCapture);
            previous(info);
        }));
        let terminal = ratatui::init();
        execute!(std::io::stdout(), EnableMouseCapture)?;
        Ok(TerminalGuard {
            terminal: Some(terminal),
        })
    }

    /// Draws a frame; returns a copy of it when `keep`.
    fn draw(
        &mut self,
        keep: bool,
        render: impl FnOnce(&mut ratatui::Frame<'_>),
    ) -> std::io::Result<Option<ratatui::buffer::Buffer>> {
        match &mut self.terminal {
            Some(t) => t.draw(render).map(|f| keep.then(|| f.buffer.clone())),
            None => Ok(None),
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        if let Some(mut terminal) = self.terminal.take()
            && terminal.show_cursor().is_err()
        {
            // The terminal is gone (a hangup): there is nothing to restore,
            // and ratatui's own clean-up would report its failure on a
            // stderr that is gone too — a panic in a drop, then an abort.
            std::mem::forget(terminal);
        }
        let _ = ratatui::try_restore();
    }
}

/// Reads terminal events on a thread of its own (crossterm's read blocks).
fn spawn_input(stop: Arc<AtomicBool>) -> mpsc::Receiver<TermEvent> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(50)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// A command on its way through the engine, and its outcome.
type Reply = Pin<Box<dyn Future<Output = (Command, Result<String, CommandError>)> + Send>>;

/// Waits for a change on an optional watch; forgets it once its sender is gone.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
            }
        }
        None => std::future::pending().await,
    }
}

async fn ui_loop(
    handle: &Handle,
    terminal: &mut TerminalGuard,
    log_path: String,
    lesson: Option<&Lesson>,
) -> anyhow::Result<()> {
    let shared = Arc::clone(handle.shared());
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut app = App::new(no_color, log_path.clone());
    let mut lesson_rx = lesson.map(Lesson::state);
    let mut moves_rx = Some(shared.bus.watch_moves());
    let mut follows_rx = Some(shared.watch_follows());
    let mut capture = false;
    let stop = Arc::new(AtomicBool::new(false));
    let mut input = spawn_input(Arc::clone(&stop));
    let mut bus = shared.bus.subscribe();
    let mut hangups = crate::signals::Hangups::catch();
    let mut replies: FuturesUnordered<Reply> = FuturesUnordered::new();
    let mut frame = tokio::time::interval(Duration::from_millis(33));
    let mut data = tokio::time::interval(Duration::from_millis(250));
    let mut second = tokio::time::interval(Duration::from_secs(1));
    for t in [&mut frame, &mut data, &mut second] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    }
    let mut areas = input::Areas::default();
    let mut events = Vec::new();
    let mut dirty = true;
    app.set_snapshot(snapshot(&shared));
    // A change before the dashboard started is shown, not replayed; the
    // backends joining at start, with no session yet, are no lesson.
    let before = moves_rx.as_mut().and_then(|r| r.borrow_and_update().clone());
    if let Some(m) = before.filter(|m| m.summary.sessions > 0) {
        app.set_moves(MovesView::new(&m, |id| shared.backend_name(id)), false);
    }
    if let Some(rx) = &mut lesson_rx {
        app.set_lesson(rx.borrow_and_update().clone());
    }
    for request in app.take_requests() {
        perform::perform(request, &shared, lesson, &mut app);
    }
    let result = loop {
        tokio::select! {
            e = input.recv() => {
                // The terminal is gone when its reader stops.
                let Some(e) = e else { break Ok(()) };
                if let Some(msg) = input::message(&e, app.mode(), &areas)
                    && let Some(command) = app.update(msg)
                {
                    // Queued now, in key order; the outcome arrives later.
                    match handle.submit(command.clone()) {
                        Ok(pending) => replies.push(Box::pin(async move {
                            let outcome = pending.await.unwrap_or(Err(CommandError::Stopped));
                            (command, outcome)
                        })),
                        Err(e) => app.on_reply(&command, Err(e.to_string())),
                    }
                }
                for request in app.take_requests() {
                    capture |= perform::perform(request, &shared, lesson, &mut app);
                }
                if app.quit {
                    break Ok(());
                }
                dirty = true;
            }
            () = changed(&mut moves_rx) => {
                let latest = moves_rx.as_mut().and_then(|r| r.borrow_and_update().clone());
                if let Some(m) = latest {
                    app.set_moves(MovesView::new(&m, |id| shared.backend_name(id)), true);
                    dirty = true;
                }
            }
            () = changed(&mut follows_rx) => {
                if let Some(fp) = app.following() {
                    app.set_followed(perform::followed_now(&shared, fp));
                    dirty = true;
                }
            }
            () = changed(&mut lesson_rx) => {
                if let Some(rx) = &mut lesson_rx {
                    let mut state = rx.borrow_and_update().clone();
                    lesson::refresh(&mut state, tokio::time::Instant::now());
                    app.set_lesson(state);
                    dirty = true;
                }
            }
            Some((command, outcome)) = replies.next(), if !replies.is_empty() => {
                app.on_reply(&command, outcome.as_deref().map_err(ToString::to_string));
                dirty = true;
            }
            _ = hangups.next() => {
                tracing::info!("the terminal went away (SIGHUP): shutting down");
                break Ok(());
            }
            _ = data.tick() => {
                app.set_snapshot(snapshot(&shared));
                if let Some(fp) = app.following() {
                    app.set_followed(perform::followed_now(&shared, fp));
                }
                if let Some(key) = app.probing().map(str::to_owned) {
                    let result = perform::probe(&shared, &key);
                    app.on_probe(key, result);
                }
                if let Some(l) = &mut app.lesson {
                    lesson::refresh(l, tokio::time::Instant::now());
                }
                dirty = true;
            }
            _ = second.tick() => app.tick_second(),
            _ = frame.tick() => {
                bus.drain_into(&mut events);
                if !events.is_empty() {
                    let at = shared.clock.uptime_secs();
                    for e in events.drain(..) {
                        app.on_event(&e, at, |id| shared.backend_name(id));
                    }
                    dirty = true;
                }
                // A glide draws every frame while it lasts, and only then.
                if app.animating() {
                    dirty = true;
                }
                if dirty || capture {
                    let drawn = terminal.draw(capture, |f| {
                        let (a, viewport) = view::draw(&app, f);
                        areas = a;
                        app.viewport = viewport;
                    });
                    let mut saved = false;
                    match drawn {
                        Ok(Some(frame)) => {
                            perform::capture(&frame, &perform::capture_dirs(&log_path), &mut app);
                            (capture, saved) = (false, true);
                        }
                        Ok(None) => {}
                        Err(e) if terminal_gone(&e) => {
                            tracing::info!("the terminal went away ({e}): shutting down");
                            break Ok(());
                        }
                        Err(e) => break Err(e.into()),
                    }
                    app.tick_frame();
                    // The flash line says where the screen went: drawn next frame.
                    dirty = saved;
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    if let Some(fp) = app.following() {
        shared.unfollow(fp);
    }
    result
}

/// Whether a failed write means the terminal was closed (a hangup: the
/// tty answers EIO or ENXIO), which is a clean shutdown, not an error.
fn terminal_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe || (cfg!(unix) && matches!(e.raw_os_error(), Some(5 | 6)))
}

/// What the dashboard shows, taken from the engine.
pub fn snapshot(shared: &Shared) -> Snapshot {
    let backends = shared.backends_view();
    let topo = shared.router.topology();
    let index_of = |id: crate::router::BackendId| {
        let name = &*topo.backend(id).name;
        backends.iter().position(|b| b.name == name)
    };
    let ring = topo.ring();
    let step = ring.len().div_ceil(MAX_TICKS).max(1);
    let vnodes = ring
        .vnodes()
        .step_by(step)
        .filter_map(|v| index_of(v.owner).map(|i| (v.position, i)))
        .collect();
    let owners = (0..RING_SAMPLES)
        .map(|i| {
            let position = ((i as u64) << 32) / RING_SAMPLES as u64;
            topo.ring_owner(position as u32).and_then(index_of)
        })
        .collect();
    let clients = client_names(shared);
    let now = shared.clock.now().secs();
    let sessions = shared
        .router
        .sessions()
        .map(|t| t.list(MAX_SESSIONS, |_| true))
        .unwrap_or_default()
        .into_iter()
        .map(|s| SessionRow {
            key: s.name().to_string(),
            fingerprint: s.fingerprint,
            client: clients.get(&s.fingerprint).cloned(),
            backend: topo.backend(s.backend).name.to_string(),
            age_secs: now.saturating_sub(s.created_secs),
            idle_secs: now.saturating_sub(s.last_seen_secs),
            requests: s.requests,
            reassignments: s.reassignments,
            position: s.position,
        })
        .collect();
    Snapshot {
        proxy: shared.proxy_addr.to_string(),
        admin: shared.admin_addr.to_string(),
        stats: Some(shared.stats_view()),
        backends,
        sessions,
        vnodes,
        owners,
        vnodes_per_weight: shared.router.vnodes(),
        traffic: shared.traffic().map(|t| (t.is_running(), t.rate())),
        drain_timeout_secs: shared.config().drain.timeout_secs,
    }
}

/// The demo client each session belongs to, by fingerprint: worked out
/// from the clients' cookie jars and addresses, away from the proxy's
/// request path. Clients behind one NAT address share a session: the
/// first is named and the others counted (`client-0 +5`).
fn client_names(shared: &Shared) -> HashMap<u64, String> {
    let mut by_fingerprint: HashMap<u64, Vec<usize>> = HashMap::new();
    if let Some(traffic) = shared.traffic() {
        for (client, fp) in traffic.registry().sessions(&shared.router, MAX_CLIENTS) {
            by_fingerprint.entry(fp).or_default().push(client);
        }
    }
    by_fingerprint
        .into_iter()
        .map(|(fp, clients)| {
            let name = match clients.as_slice() {
                [one] => format!("client-{one}"),
                [first, rest @ ..] => format!("client-{first} +{}", rest.len()),
                [] => String::new(),
            };
            (fp, name)
        })
        .collect()
}
