//! The dashboard's state and how it changes: fed by snapshots of the engine
//! and events from the bus, changed by keys. Pure: no terminal, no clock.

use std::collections::VecDeque;

use crate::bus::BusEvent;
use crate::demo::traffic::TrafficEvent;
use crate::engine::Command;
use crate::engine::view::{BackendView, StatsView};
use crate::router::Event;

/// Lines kept in the event log.
pub const LOG_LINES: usize = 200;
/// Seconds of request-rate history per backend (the sparklines).
pub const HISTORY: usize = 30;

/// The panels that take the focus in turn (`Tab`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The backends table (↑/↓ select a backend).
    Backends,
    /// The sessions table (↑/↓ scroll).
    Sessions,
    /// The event log (↑/↓ scroll).
    Log,
}

/// How the sessions table is sorted (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Most recently used first.
    Recent,
    /// Oldest first.
    Age,
    /// Most requests first.
    Requests,
    /// By backend name.
    Backend,
}

impl SortBy {
    fn next(self) -> SortBy {
        match self {
            SortBy::Recent => SortBy::Age,
            SortBy::Age => SortBy::Requests,
            SortBy::Requests => SortBy::Backend,
            SortBy::Backend => SortBy::Recent,
        }
    }

    /// Its name in the panel title.
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Recent => "recent",
            SortBy::Age => "age",
            SortBy::Requests => "requests",
            SortBy::Backend => "backend",
        }
    }
}

/// What an event-log line is about (its colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A request routed.
    Route,
    /// Sessions created, ended or moved.
    Session,
    /// A backend changed state, or was found dead.
    State,
    /// A remap summary.
    Remap,
    /// Forged cookies, lost sessions.
    Alarm,
    /// Drain progress.
    Drain,
    /// What an operator did.
    Command,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Seconds since start.
    pub at_secs: u64,
    /// Its colour.
    pub kind: LogKind,
    /// The text.
    pub text: String,
}

/// One row of the sessions table.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// The key, shortened.
    pub key: String,
    /// Its backend.
    pub backend: String,
    /// Seconds since created.
    pub age_secs: u32,
    /// Seconds since last used.
    pub idle_secs: u32,
    /// Requests.
    pub requests: u32,
    /// Reassignments.
    pub reassignments: u16,
    /// Ring position.
    pub position: u32,
}

/// A vnode to draw: its position and its backend's index in the table.
pub type Tick = (u32, usize);

/// Everything the dashboard shows, taken from the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Proxy address.
    pub proxy: String,
    /// Admin API address.
    pub admin: String,
    /// The backends, in id order.
    pub backends: Vec<BackendView>,
    /// Balancer-wide figures.
    pub stats: Option<StatsView>,
    /// The session table (a sample, most recent first).
    pub sessions: Vec<SessionRow>,
    /// Every vnode (or an even sample of them).
    pub vnodes: Vec<Tick>,
    /// Whether the synthetic clients run, and their rate.
    pub traffic: Option<(bool, f64)>,
    /// The configured drain timeout, for the drain gauge.
    pub drain_timeout_secs: u64,
}

/// The route most recently shown on the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRoute {
    /// The key, shortened.
    pub key: String,
    /// Its position.
    pub position: u32,
    /// The backend it went to.
    pub backend: String,
}

/// The dashboard's whole state.
#[derive(Debug, Clone)]
pub struct App {
    /// The latest snapshot.
    pub snapshot: Snapshot,
    /// The selected backend's index.
    pub selected: usize,
    /// The focused panel.
    pub focus: Panel,
    /// Sessions table order.
    pub sort: SortBy,
    /// Sessions shown only for the selected backend.
    pub only_selected: bool,
    /// Text filter on session keys; `Some` while typing or set.
    pub filter: Option<String>,
    /// True while typing the filter.
    pub typing: bool,
    /// Sessions table scroll.
    pub session_scroll: usize,
    /// Event log scroll (0 = newest at the bottom).
    pub log_scroll: usize,
    /// The view is frozen (`space`).
    pub frozen: bool,
    /// The help overlay is shown.
    pub help: bool,
    /// The event log, oldest first.
    pub log: VecDeque<LogLine>,
    /// The last route, for the arc on the ring.
    pub last_route: Option<LastRoute>,
    /// The last remap summary.
    pub remap: Option<String>,
    /// Requests per second by backend name, oldest first.
    pub history: Vec<(String, VecDeque<u64>)>,
    /// Requests per second overall (last second).
    pub rps: u64,
    /// 5xx per second overall (last second).
    pub errors_per_sec: u64,
    /// Set on quit.
    pub quit: bool,
    /// Colours are off (`NO_COLOR`).
    pub no_color: bool,
    /// Where the log file is, for the footer and the goodbye line.
    pub log_path: String,
    last_requests: Vec<(String, u64)>,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// Select the previous row of the focused panel.
    Up,
    /// Select the next row.
    Down,
    /// Focus the next panel.
    NextPanel,
    /// Select a row by index in the backends table (mouse).
    SelectBackend(usize),
    /// Scroll the focused panel (mouse wheel): negative is up.
    Scroll(i32),
    /// An action on the selected backend or the balancer.
    Act(Action),
    /// Start typing a filter.
    StartFilter,
    /// A character of the filter.
    FilterChar(char),
    /// Delete the filter's last character.
    FilterBack,
    /// Finish typing (Enter) or clear (Esc while typing).
    FilterDone(bool),
    /// Cycle the sessions table's order.
    Sort,
    /// Show only the selected backend's sessions, or all.
    ToggleOnlySelected,
    /// Freeze or unfreeze the view.
    Freeze,
    /// Show or hide the help.
    Help,
    /// Leave.
    Quit,
}

/// Operator actions, turned into engine commands with the current selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `x`.
    Kill,
    /// `r`.
    Revive,
    /// `d`.
    Drain,
    /// `u`.
    Undrain,
    /// `e`.
    Extend,
    /// `+`.
    WeightUp,
    /// `-`.
    WeightDown,
    /// `a`.
    AddDemo,
    /// `Delete`.
    Remove,
    /// `p`.
    NextPlacement,
    /// `m`.
    NextAffinity,
    /// `t`.
    ToggleTraffic,
    /// `]`.
    FasterTraffic,
    /// `[`.
    SlowerTraffic,
}

impl App {
    /// A dashboard over an empty snapshot.
    pub fn new(no_color: bool, log_path: String) -> Self {
        App {
            snapshot: Snapshot::default(),
            selected: 0,
            focus: Panel::Backends,
            sort: SortBy::Recent,
            only_selected: false,
            filter: None,
            typing: false,
            session_scroll: 0,
            log_scroll: 0,
            frozen: false,
            help: false,
            log: VecDeque::with_capacity(LOG_LINES),
            last_route: None,
            remap: None,
            history: Vec::new(),
            rps: 0,
            errors_per_sec: 0,
            quit: false,
            no_color,
            log_path,
            last_requests: Vec::new(),
        }
    }

    /// The selected backend.
    pub fn selected_backend(&self) -> Option<&BackendView> {
        self.snapshot.backends.get(self.selected)
    }

    /// Takes a new snapshot (ignored while frozen).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        if self.frozen {
            return;
        }
        self.snapshot = snapshot;
        if self.selected >= self.snapshot.backends.len() {
            self.selected = self.snapshot.backends.len().saturating_sub(1);
        }
    }

    /// Once a second: per-backend request rates for the sparklines.
    pub fn tick_second(&mut self) {
        let now: Vec<(String, u64)> = self
            .snapshot
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.requests))
            .collect();
        for (name, requests) in &now {
            let before = self
                .last_requests
                .iter()
                .find(|(n, _)| n == name)
                .map_or(*requests, |(_, r)| *r);
            let rate = requests.saturating_sub(before);
            match self.history.iter_mut().find(|(n, _)| n == name) {
                Some((_, h)) => {
                    if h.len() == HISTORY {
                        h.pop_front();
                    }
                    h.push_back(rate);
                }
                None => self.history.push((name.clone(), VecDeque::from([rate]))),
            }
        }
        self.last_requests = now;
    }

    /// The request-rate history of a backend.
    pub fn history_of(&self, name: &str) -> Option<&VecDeque<u64>> {
        self.history.iter().find(|(n, _)| n == name).map(|(_, h)| h)
    }

    /// Adds a line to the event log.
    pub fn log_line(&mut self, at_secs: u64, kind: LogKind, text: String) {
        if self.frozen {
            return;
        }
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(LogLine { at_secs, kind, text });
    }

    /// Takes in one bus event; `name` resolves backend ids.
    pub fn on_event(&mut self, event: &BusEvent, at_secs: u64, name: impl Fn(crate::router::BackendId) -> String) {
        match event {
            BusEvent::Router(e) => match e {
                Event::Routed {
                    session,
                    position,
                    backend,
                    via,
                    ..
                } => {
                    let key = session.map_or_else(|| "(no key)".to_owned(), |s| s.to_string());
                    if !self.frozen {
                        self.last_route = Some(LastRoute {
                            key: key.clone(),
                            position: *position,
                            backend: name(*backend),
                        });
                    }
                    // Requests the table routed are the steady state: the ring
                    // shows the latest; the log keeps the decisions.
                    if *via != crate::router::Via::Table {
                        let via = serde_json::to_value(via)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned));
                        self.log_line(
                            at_secs,
                            LogKind::Route,
                            format!("{key} → {} by {}", name(*backend), via.unwrap_or_default()),
                        );
                    }
                }
                Event::SessionCreated { session, backend } => self.log_line(
                    at_secs,
                    LogKind::Session,
                    format!("session {session} created on {}", name(*backend)),
                ),
                Event::SessionEnded {
                    session,
                    backend,
                    reason,
                } => {
                    let reason = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned));
                    self.log_line(
                        at_secs,
                        LogKind::Session,
                        format!("session {session} on {} {}", name(*backend), reason.unwrap_or_default()),
                    );
                }
                Event::SessionReassigned { session, from, to } => self.log_line(
                    at_secs,
                    LogKind::Session,
                    format!("session {session} moved {} → {}", name(*from), name(*to)),
                ),
                Event::BackendState { backend, from, to } => {
                    self.log_line(at_secs, LogKind::State, format!("{} {from} → {to}", name(*backend)))
                }
                Event::Remap(summary) => {
                    let text = summary.to_string();
                    self.remap = Some(text.clone());
                    self.log_line(at_secs, LogKind::Remap, text);
                }
                Event::ForgedCookie => self.log_line(at_secs, LogKind::Alarm, "forged cookie ignored".into()),
            },
            BusEvent::Drain {
                backend,
                active,
                sessions,
                remaining_secs,
                done,
            } => {
                let text = match done {
                    Some(end) => {
                        format!("drain of {backend} ended ({end}): {active} connections, {sessions} sessions left")
                    }
                    None => {
                        format!("draining {backend}: {active} connections, {sessions} sessions, {remaining_secs}s left")
                    }
                };
                self.log_line(at_secs, LogKind::Drain, text);
            }
            BusEvent::Detected { backend, after_ms, by } => self.log_line(
                at_secs,
                LogKind::State,
                format!("{backend} found dead by {by} {after_ms} ms after the kill"),
            ),
            BusEvent::Traffic(TrafficEvent::LostSession { client, backend }) => self.log_line(
                at_secs,
                LogKind::Alarm,
                format!(
                    "client-{client} lost its session: {} did not know it",
                    backend.as_deref().unwrap_or("the backend")
                ),
            ),
            BusEvent::Traffic(TrafficEvent::LoggedIn { .. }) => {}
            BusEvent::Command(text) => self.log_line(at_secs, LogKind::Command, text.clone()),
            BusEvent::Second { requests, errors, .. } => {
                self.rps = *requests;
                self.errors_per_sec = *errors;
            }
        }
    }

    /// Applies a message; returns the engine command it asks for, if any.
    pub fn update(&mut self, msg: Msg) -> Option<Command> {
        match msg {
            Msg::Quit => self.quit = true,
            Msg::Help => self.help = !self.help,
            Msg::Freeze => self.frozen = !self.frozen,
            Msg::NextPanel => {
                self.focus = match self.focus {
                    Panel::Backends => Panel::Sessions,
                    Panel::Sessions => Panel::Log,
                    Panel::Log => Panel::Backends,
                }
            }
            Msg::Up => self.scroll(-1),
            Msg::Down => self.scroll(1),
            Msg::Scroll(n) => self.scroll(n),
            Msg::SelectBackend(i) => {
                if i < self.snapshot.backends.len() {
                    self.selected = i;
                    self.focus = Panel::Backends;
                }
            }
            Msg::Sort => {
                self.sort = self.sort.next();
                self.session_scroll = 0;
            }
            Msg::ToggleOnlySelected => {
                self.only_selected = !self.only_selected;
                self.session_scroll = 0;
            }
            Msg::StartFilter => {
                self.typing = true;
                self.filter.get_or_insert_with(String::new);
            }
            Msg::FilterChar(c) => {
                if let Some(f) = &mut self.filter
                    && f.len() < 32
                {
                    f.push(c);
                }
                self.session_scroll = 0;
            }
            Msg::FilterBack => {
                if let Some(f) = &mut self.filter {
                    f.pop();
                }
            }
            Msg::FilterDone(keep) => {
                self.typing = false;
                if !keep || self.filter.as_deref() == Some("") {
                    self.filter = None;
                }
            }
            Msg::Act(action) => return self.command(action),
        }
        None
    }

    fn scroll(&mut self, by: i32) {
        let step = |v: usize, max: usize| -> usize { (v as i64 + i64::from(by)).clamp(0, max as i64) as usize };
        match self.focus {
            Panel::Backends => {
                self.selected = step(self.selected, self.snapshot.backends.len().saturating_sub(1));
            }
            Panel::Sessions => {
                self.session_scroll = step(self.session_scroll, self.visible_sessions().len().saturating_sub(1));
            }
            Panel::Log => {
                // Up goes back in time.
                let back = (self.log_scroll as i64 - i64::from(by)).clamp(0, self.log.len().saturating_sub(1) as i64);
                self.log_scroll = back as usize;
            }
        }
    }

    fn command(&self, action: Action) -> Option<Command> {
        let name = self.selected_backend().map(|b| b.name.clone());
        let traffic = self.snapshot.traffic;
        Some(match action {
            Action::Kill => Command::Kill(name?),
            Action::Revive => Command::Revive(name?),
            Action::Drain => Command::Drain {
                backend: name?,
                timeout: None,
            },
            Action::Undrain => Command::Undrain(name?),
            Action::Extend => Command::Extend {
                backend: name?,
                by: std::time::Duration::from_secs(30),
            },
            Action::WeightUp => Command::WeightBy {
                backend: name?,
                delta: 1,
            },
            Action::WeightDown => Command::WeightBy {
                backend: name?,
                delta: -1,
            },
            Action::AddDemo => Command::AddDemo,
            Action::Remove => Command::Remove(name?),
            Action::NextPlacement => {
                let current = self.snapshot.stats.as_ref().map(|s| s.placement).unwrap_or_default();
                Command::Placement(current.next())
            }
            Action::NextAffinity => {
                let current = self.snapshot.stats.as_ref().map(|s| s.affinity).unwrap_or_default();
                Command::Affinity(current.next())
            }
            Action::ToggleTraffic => Command::Traffic(!traffic.is_some_and(|(on, _)| on)),
            Action::FasterTraffic => Command::TrafficRateBy(1.5),
            Action::SlowerTraffic => Command::TrafficRateBy(1.0 / 1.5),
        })
    }

    /// The sessions the table shows, filtered and sorted.
    pub fn visible_sessions(&self) -> Vec<&SessionRow> {
        let selected = self.selected_backend().map(|b| b.name.as_str());
        let mut rows: Vec<&SessionRow> = self
            .snapshot
            .sessions
            .iter()
            .filter(|s| !self.only_selected || Some(s.backend.as_str()) == selected)
            .filter(|s| self.filter.as_deref().is_none_or(|f| s.key.contains(f)))
            .collect();
        match self.sort {
            SortBy::Recent => rows.sort_by_key(|s| s.idle_secs),
            SortBy::Age => rows.sort_by_key(|s| std::cmp::Reverse(s.age_secs)),
            SortBy::Requests => rows.sort_by_key(|s| std::cmp::Reverse(s.requests)),
            SortBy::Backend => rows.sort_by(|a, b| a.backend.cmp(&b.backend)),
        }
        rows
    }
}
