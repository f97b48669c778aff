//! What the dashboard shows: the engine's latest snapshot and what the
//! dashboard derived from the event stream (rates, sparklines, the event
//! log, the last route and the last change), the last change's moves and
//! the followed session. Freezing keeps a copy of it.

use std::collections::VecDeque;

use super::follow::Followed;
use super::moves::MovesView;
use crate::bus::BusEvent;
use crate::demo::traffic::TrafficEvent;
use crate::engine::view::{BackendView, StatsView};
use crate::router::{BackendState, Event};
use crate::text::plural;

/// Lines kept in the event log.
pub const LOG_LINES: usize = 200;
/// Seconds of request-rate history per backend (the sparklines).
pub const HISTORY: usize = 30;
/// Ownership samples around the ring (a quarter of a degree each).
pub const RING_SAMPLES: usize = 1440;

/// What an event-log line means (its colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A request placed or redispatched.
    Route,
    /// Sessions created, ended or moved.
    Session,
    /// A backend failed: down, killed, found dead.
    Failure,
    /// A backend is back: up again.
    Recovery,
    /// Another state change (draining, drained, removed).
    State,
    /// A remap summary.
    Remap,
    /// Forged cookies, lost sessions, refused commands.
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
    /// The session's name (`#3fa2c1e9` or a client address).
    pub key: String,
    /// Its fingerprint.
    pub fingerprint: u64,
    /// The demo client it belongs to (`client-7`), when known.
    pub client: Option<String>,
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
    /// Who owns each of [`RING_SAMPLES`] evenly spaced points of the ring
    /// for a new key now (a backend's index), `None` where nothing takes one.
    pub owners: Vec<Option<usize>>,
    /// Virtual nodes per unit of weight.
    pub vnodes_per_weight: u32,
    /// Whether the synthetic clients run, and their rate.
    pub traffic: Option<(bool, f64)>,
    /// The configured drain timeout, for the drain gauge.
    pub drain_timeout_secs: u64,
}

impl Snapshot {
    /// True when some backend is configured but none takes new requests.
    pub fn nothing_available(&self) -> bool {
        !self.backends.is_empty() && !self.backends.iter().any(|b| b.state.takes_new_sessions())
    }
}

/// The route most recently shown on the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRoute {
    /// The session's name.
    pub key: String,
    /// Its position.
    pub position: u32,
    /// The backend it went to.
    pub backend: String,
}

/// What the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scene {
    /// The latest snapshot.
    pub snapshot: Snapshot,
    /// The event log, oldest first.
    pub log: VecDeque<LogLine>,
    /// The last route, for the arc on the ring.
    pub last_route: Option<LastRoute>,
    /// The last change's remap summary.
    pub remap: Option<crate::router::RemapSummary>,
    /// The last change's moves, session by session.
    pub moves: Option<MovesView>,
    /// The session followed.
    pub followed: Option<Followed>,
    /// Requests per second by backend name, oldest first.
    pub history: Vec<(String, VecDeque<u64>)>,
    /// Requests per second overall (last second).
    pub rps: u64,
    /// 5xx per second overall (last second).
    pub errors_per_sec: u64,
    last_requests: Vec<(String, u64)>,
}

impl Scene {
    /// Takes a new snapshot.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
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
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(LogLine { at_secs, kind, text });
    }

    /// A lesson starts afresh: what was derived from the old one goes.
    pub fn restart(&mut self) {
        self.remap = None;
        self.moves = None;
        self.last_route = None;
        self.history.clear();
        self.last_requests.clear();
    }

    /// Takes in one bus event; `name` resolves backend ids.
    pub fn on_event(&mut self, event: &BusEvent, at_secs: u64, name: impl Fn(crate::router::BackendId) -> String) {
        match event {
            BusEvent::Router(e) => self.on_router_event(e, at_secs, name),
            BusEvent::Drain {
                backend,
                active,
                sessions,
                remaining_secs,
                done,
            } => {
                // The end is logged by the engine's own line, which says more.
                if done.is_none() {
                    let (active, sessions) = (plural(*active, "connection"), plural(*sessions, "session"));
                    let text = format!("draining {backend}: {active}, {sessions}, {remaining_secs}s left");
                    self.log_line(at_secs, LogKind::Drain, text);
                }
            }
            BusEvent::Detected { backend, after_ms, by } => self.log_line(
                at_secs,
                LogKind::Failure,
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
            BusEvent::Command(text) => self.on_command(at_secs, text),
            BusEvent::Second { requests, errors, .. } => {
                self.rps = *requests;
                self.errors_per_sec = *errors;
            }
        }
    }

    fn on_router_event(&mut self, e: &Event, at_secs: u64, name: impl Fn(crate::router::BackendId) -> String) {
        match e {
            Event::Routed {
                session,
                position,
                backend,
                via,
                ..
            } => {
                let key = session.map_or_else(|| "(no key)".to_owned(), |s| s.to_string());
                self.last_route = Some(LastRoute {
                    key: key.clone(),
                    position: *position,
                    backend: name(*backend),
                });
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
                let kind = match to {
                    BackendState::Up => LogKind::Recovery,
                    BackendState::Down | BackendState::Killed => LogKind::Failure,
                    _ => LogKind::State,
                };
                self.log_line(at_secs, kind, format!("{} {from} → {to}", name(*backend)));
            }
            Event::Remap(summary) => {
                let text = summary.to_string();
                self.remap = Some(summary.clone());
                self.log_line(at_secs, LogKind::Remap, text);
            }
            Event::ForgedCookie => self.log_line(at_secs, LogKind::Alarm, "forged cookie ignored".into()),
        }
    }

    /// An operator's command and what it did. Its remap summary was logged
    /// just before, on its own: the two become one line.
    fn on_command(&mut self, at_secs: u64, text: &str) {
        let summary = self
            .log
            .iter()
            .rposition(|l| l.kind == LogKind::Remap && text.ends_with(&format!(" — {}", l.text)));
        if let Some(i) = summary {
            self.log.remove(i);
        }
        self.log_line(at_secs, LogKind::Command, text.to_owned());
    }
}
