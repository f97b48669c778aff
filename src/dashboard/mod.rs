//! The dashboard: the ring, the backends and the sessions, live, with keys
//! to kill, revive or drain a backend.
//!
//! It reads aggregated state and a bounded, sampled event stream, drains the
//! stream once per frame and draws at most 30 frames a second, only when
//! something changed — it can never slow the proxy. The terminal is restored
//! on quit, on error and on panic.

pub mod app;
pub mod input;
pub mod view;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent};
use ratatui::crossterm::execute;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::engine::Engine;
use app::{App, LogKind, SessionRow, Snapshot};

/// Most vnodes drawn on the ring; more are sampled evenly.
const MAX_TICKS: usize = 720;
/// Most sessions drawn and listed.
const MAX_SESSIONS: usize = 500;

/// Runs the dashboard on the embedded demo (or the configured backends)
/// until the user quits. Needs a terminal on stdout.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_with(config, |_| {}).await
}

/// Like [`run`], calling `on_start` with the engine once it runs (a scenario
/// drives it from there).
pub async fn run_with(config: Config, on_start: impl FnOnce(&Arc<Engine>)) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("stdout is not a terminal, so there is no dashboard to draw: run `ringside --headless` instead");
    }
    let log_path = config.log.file.clone();
    let _log_guard = log_to_file(&config)?;
    let traffic = config.traffic.enabled.unwrap_or(true);
    let running = Engine::start(config, traffic).await?;
    let engine = Arc::clone(&running.engine);
    let admin_addr = running.admin_listener.local_addr()?;
    tokio::spawn(crate::admin::serve(Arc::clone(&engine), running.admin_listener));
    on_start(&engine);
    let result = {
        let mut terminal = TerminalGuard::enter()?;
        ui_loop(
            &engine,
            &mut terminal,
            admin_addr.to_string(),
            log_path.display().to_string(),
        )
        .await
    };
    engine.shutdown().await;
    println!("ringside: the log is in {}", log_path.display());
    result
}

/// Logs go to a file while the dashboard owns the terminal (non-blocking).
fn log_to_file(config: &Config) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let path = &config.log.file;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    Ok(guard)
}

/// Owns the terminal: raw mode, alternate screen, mouse capture; gives them
/// back on drop and on panic.
struct TerminalGuard {
    terminal: ratatui::DefaultTerminal,
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
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        ratatui::restore();
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

async fn ui_loop(
    engine: &Arc<Engine>,
    terminal: &mut TerminalGuard,
    admin: String,
    log_path: String,
) -> anyhow::Result<()> {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut app = App::new(no_color, log_path);
    let stop = Arc::new(AtomicBool::new(false));
    let mut input = spawn_input(Arc::clone(&stop));
    let mut bus = engine.bus().subscribe();
    let (failures_tx, mut failures) = mpsc::channel::<String>(64);
    let mut frame = tokio::time::interval(Duration::from_millis(33));
    let mut data = tokio::time::interval(Duration::from_millis(250));
    let mut second = tokio::time::interval(Duration::from_secs(1));
    for t in [&mut frame, &mut data, &mut second] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    }
    let mut areas = input::Areas::default();
    let mut events = Vec::new();
    let mut dirty = true;
    app.set_snapshot(snapshot(engine, &admin));
    let result = loop {
        tokio::select! {
            Some(e) = input.recv() => {
                if let Some(msg) = input::message(&e, app.typing, &areas) {
                    if let Some(command) = app.update(msg) {
                        let engine = Arc::clone(engine);
                        let failures = failures_tx.clone();
                        tokio::spawn(async move {
                            if let Err(e) = engine.execute(command).await {
                                let _ = failures.try_send(e.to_string());
                            }
                        });
                    }
                    if app.quit {
                        break Ok(());
                    }
                }
                dirty = true;
            }
            Some(text) = failures.recv() => {
                app.log_line(engine.clock().uptime_secs(), LogKind::Alarm, text);
                dirty = true;
            }
            _ = data.tick() => {
                app.set_snapshot(snapshot(engine, &admin));
                dirty = true;
            }
            _ = second.tick() => app.tick_second(),
            _ = frame.tick() => {
                bus.drain_into(&mut events);
                if !events.is_empty() {
                    let topo = engine.router().topology();
                    let at = engine.clock().uptime_secs();
                    for e in events.drain(..) {
                        app.on_event(&e, at, |id| {
                            if id.index() < topo.backend_count() { topo.backend(id).name.to_string() } else { "?".into() }
                        });
                    }
                    dirty = true;
                }
                if dirty {
                    if let Err(e) = terminal.terminal.draw(|f| areas = view::draw(&app, f)) {
                        break Err(e.into());
                    }
                    dirty = false;
                }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    result
}

/// What the dashboard shows, taken from the engine.
pub fn snapshot(engine: &Engine, admin: &str) -> Snapshot {
    let backends = engine.backends_view();
    let topo = engine.router().topology();
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
    let now = engine.clock().now().secs();
    let sessions = engine
        .router()
        .sessions()
        .list(MAX_SESSIONS, |_| true)
        .into_iter()
        .map(|s| SessionRow {
            key: s.label.to_string(),
            backend: topo.backend(s.backend).name.to_string(),
            age_secs: now.saturating_sub(s.created_secs),
            idle_secs: now.saturating_sub(s.last_seen_secs),
            requests: s.requests,
            reassignments: s.reassignments,
            position: s.position,
        })
        .collect();
    Snapshot {
        proxy: engine.proxy_addr().to_string(),
        admin: admin.to_owned(),
        stats: Some(engine.stats_view()),
        backends,
        sessions,
        vnodes,
        traffic: engine.traffic_state(),
        drain_timeout_secs: engine.config().drain.timeout_secs,
    }
}
