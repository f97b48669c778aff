//! The event bus: routing decisions, state changes and drain steps on their
//! way to the dashboard, the log and `/api/events`.
//!
//! It can never slow the proxy: publishing is a few atomic operations and a
//! bounded broadcast that overwrites what a slow subscriber has not read
//! (the subscriber counts those as dropped). Per-request events are sampled
//! to a budget per 100 ms window and skipped entirely when nobody listens;
//! the per-second figures come from counters, not from events.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::clock::Clock;
use crate::counter::Counter;
use crate::demo::traffic::TrafficEvent;
use crate::router::{Event, EventSink, Moves, Topology};

/// Per-request events let through in each 100 ms window.
pub const SAMPLE_BUDGET: u64 = 40;

/// Events buffered for each subscriber before the oldest are overwritten.
pub const CAPACITY: usize = 4096;

/// What found a killed backend dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectedBy {
    /// Active health checks (`fall` failures in a row).
    HealthCheck,
    /// The proxy's connects (`fall` failures in a row): passive health.
    Connect,
}

impl std::fmt::Display for DetectedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DetectedBy::HealthCheck => "health-check",
            DetectedBy::Connect => "connect",
        })
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainEnd {
    /// No session and no connection was left.
    Empty,
    /// The timeout came: what was left was closed and moved.
    Timeout,
}

impl std::fmt::Display for DrainEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DrainEnd::Empty => "empty",
            DrainEnd::Timeout => "timeout",
        })
    }
}

/// Everything that travels on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// A router decision.
    Router(Event),
    /// A drain's progress, once a second, and its end.
    Drain {
        /// The draining backend.
        backend: String,
        /// Connections still open to it.
        active: u64,
        /// Sessions it still holds.
        sessions: u64,
        /// Seconds left before the timeout.
        remaining_secs: u64,
        /// The drain ended, and how.
        done: Option<DrainEnd>,
    },
    /// A killed backend was found down: how long it took and by what.
    Detected {
        /// The backend.
        backend: String,
        /// Milliseconds from the kill to its state going down.
        after_ms: u64,
        /// What noticed.
        by: DetectedBy,
    },
    /// Something the demo clients saw.
    Traffic(TrafficEvent),
    /// An operator action and what it did, for the log.
    Command(String),
    /// Once a second: what happened in the last second, so a subscriber that
    /// dropped events still has the figures.
    Second {
        /// Requests answered in the last second.
        requests: u64,
        /// 5xx answers in the last second.
        errors: u64,
        /// Live sessions now.
        sessions: u64,
        /// Sessions the demo clients lost, in total.
        lost_sessions: u64,
        /// Events dropped for lagging subscribers, in total.
        dropped: u64,
    },
}

impl BusEvent {
    /// Per-request events, which are sampled.
    fn is_high_volume(&self) -> bool {
        match self {
            BusEvent::Router(e) => !matches!(e, Event::BackendState { .. } | Event::Remap(_)),
            BusEvent::Traffic(TrafficEvent::LoggedIn { .. }) => true,
            _ => false,
        }
    }

    /// The event as one JSON object, backend ids resolved to names;
    /// `at_ms` is when it was published.
    pub fn to_json(&self, topo: &Topology, at_ms: u64) -> Value {
        let name = |id: crate::router::BackendId| -> Value {
            if id.index() < topo.backend_count() {
                Value::from(&*topo.backend(id).name)
            } else {
                Value::Null
            }
        };
        match self {
            BusEvent::Router(e) => match e {
                Event::Routed {
                    session,
                    position,
                    backend,
                    via,
                    at,
                } => json!({"type": "routed", "session": session.map(|s| s.to_string()), "position": position,
                    "backend": name(*backend), "via": via, "at_ms": at.0}),
                Event::SessionCreated { session, backend } => {
                    json!({"type": "session-created", "session": session.to_string(), "backend": name(*backend)})
                }
                Event::SessionEnded {
                    session,
                    backend,
                    reason,
                } => {
                    json!({"type": "session-ended", "session": session.to_string(), "backend": name(*backend), "reason": reason})
                }
                Event::SessionReassigned { session, from, to } => {
                    json!({"type": "session-reassigned", "session": session.to_string(), "from": name(*from), "to": name(*to)})
                }
                Event::BackendState { backend, from, to } => {
                    json!({"type": "backend-state", "backend": name(*backend), "from": from, "to": to})
                }
                Event::Remap(summary) => json!({"type": "remap", "summary": summary.to_string(), "remap": summary}),
                Event::ForgedCookie => json!({"type": "forged-cookie"}),
            },
            BusEvent::Drain {
                backend,
                active,
                sessions,
                remaining_secs,
                done,
            } => json!({"type": "drain", "backend": backend, "active": active, "sessions": sessions,
                "remaining_secs": remaining_secs, "done": done}),
            BusEvent::Detected { backend, after_ms, by } => {
                json!({"type": "detected", "backend": backend, "after_ms": after_ms, "by": by})
            }
            BusEvent::Traffic(TrafficEvent::LostSession { client, backend }) => {
                json!({"type": "lost-session", "client": client, "backend": backend})
            }
            BusEvent::Traffic(TrafficEvent::LoggedIn { client, backend }) => {
                json!({"type": "logged-in", "client": client, "backend": backend})
            }
            BusEvent::Command(text) => json!({"type": "command", "text": text, "at_ms": at_ms}),
            BusEvent::Second {
                requests,
                errors,
                sessions,
                lost_sessions,
                dropped,
            } => json!({"type": "second", "requests": requests, "errors": errors, "sessions": sessions,
                "lost_sessions": lost_sessions, "dropped": dropped, "at_ms": at_ms}),
        }
    }
}

/// An event as published: when, and its JSON line, made once for every
/// stream that wants it.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub event: BusEvent,
    /// Router time when it was published.
    pub at_ms: u64,
    json: OnceLock<Bytes>,
}

impl std::ops::Deref for Published {
    type Target = BusEvent;

    fn deref(&self) -> &BusEvent {
        &self.event
    }
}

impl Published {
    /// The event as one line of JSON, newline included; serialized by the
    /// first stream that asks, shared by the others.
    pub fn json_line(&self, topo: &Topology) -> Bytes {
        self.json
            .get_or_init(|| {
                let mut line = serde_json::to_vec(&self.event.to_json(topo, self.at_ms)).unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            })
            .clone()
    }
}

/// The bus. Share it behind an `Arc`; it is the router's [`EventSink`].
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
    clock: Clock,
    subscribers: AtomicUsize,
    /// Events subscribers missed because they lagged.
    dropped: AtomicU64,
    /// Per-request events left out by sampling (counted on each thread's
    /// own line: every proxy thread counts them).
    sampled_out: Counter,
    /// The current 100 ms window, and how much of its budget is spent.
    window: AtomicU64,
    spent: AtomicU64,
    /// The last topology change's moves: one value per change, never sampled.
    moves: watch::Sender<Option<Arc<Moves>>>,
}

impl EventBus {
    /// A bus timing its sampling windows with `clock`.
    pub fn new(clock: Clock) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventBus {
            tx,
            clock,
            subscribers: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            sampled_out: Counter::default(),
            window: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            moves: watch::Sender::new(None),
        }
    }

    /// The last topology change's moves, now and at every change after:
    /// a view that starts late still sees the last one.
    pub fn watch_moves(&self) -> watch::Receiver<Option<Arc<Moves>>> {
        self.moves.subscribe()
    }

    /// Publishes an event; never blocks.
    pub fn publish(&self, event: BusEvent) {
        if self.subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        if event.is_high_volume() && !self.take_budget() {
            self.sampled_out.incr();
            return;
        }
        let _ = self.tx.send(Arc::new(Published {
            event,
            at_ms: self.clock.now().0,
            json: OnceLock::new(),
        }));
    }

    fn take_budget(&self) -> bool {
        let window = self.clock.now().0 / 100;
        if self.window.load(Ordering::Relaxed) != window {
            self.window.store(window, Ordering::Relaxed);
            self.spent.store(0, Ordering::Relaxed);
        }
        // Once the window's budget is spent (most requests under load), a
        // read suffices: no write to a line both proxy threads would share.
        self.spent.load(Ordering::Relaxed) < SAMPLE_BUDGET && self.spent.fetch_add(1, Ordering::Relaxed) < SAMPLE_BUDGET
    }

    /// Subscriptions open now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// A new subscription, starting with the next event.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx: self.tx.subscribe(),
            bus: Arc::clone(self),
        }
    }

    /// Events subscribers missed because they lagged.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Per-request events left out by sampling.
    pub fn sampled_out(&self) -> u64 {
        self.sampled_out.get()
    }

    /// The bus's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl EventSink for EventBus {
    fn emit(&self, event: Event) {
        self.publish(BusEvent::Router(event));
    }

    fn wants_routed(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    fn moves(&self, moves: Arc<Moves>) {
        self.moves.send_replace(Some(moves));
    }
}

/// One subscriber's stream of events.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Published>>,
    bus: Arc<EventBus>,
}

impl Subscription {
    /// The next event; `None` when the bus is gone. Lag is counted, not fatal.
    pub async fn recv(&mut self) -> Option<Arc<Published>> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.bus.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Every event waiting now, without waiting: for a frame's worth at once.
    pub fn drain_into(&mut self, out: &mut Vec<Arc<Published>>) {
        loop {
            match self.rx.try_recv() {
                Ok(e) => out.push(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.bus.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => return,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nobody_listening_costs_nothing_and_lag_is_counted() {
        let bus = Arc::new(EventBus::new(Clock::start()));
        assert!(!bus.wants_routed());
        bus.publish(BusEvent::Command("unheard".into()));
        let mut sub = bus.subscribe();
        assert!(bus.wants_routed());
        for i in 0..CAPACITY + 10 {
            bus.publish(BusEvent::Command(format!("c{i}")));
        }
        let first = sub.recv().await.unwrap();
        assert_eq!(first.event, BusEvent::Command("c10".into()));
        assert_eq!(bus.dropped(), 10);
        drop(sub);
        assert!(!bus.wants_routed());
    }

    #[tokio::test]
    async fn per_request_events_are_sampled_to_the_budget() {
        let bus = Arc::new(EventBus::new(Clock::start()));
        let mut sub = bus.subscribe();
        for _ in 0..1000 {
            bus.emit(Event::ForgedCookie);
        }
        bus.publish(BusEvent::Command("always".into()));
        let mut got = Vec::new();
        sub.drain_into(&mut got);
        // Within one or two windows: at most two budgets, and the command.
        assert!(got.len() as u64 <= 2 * SAMPLE_BUDGET + 1, "{}", got.len());
        assert_eq!(got[got.len() - 1].event, BusEvent::Command("always".into()));
        assert!(bus.sampled_out() >= 1000 - 2 * SAMPLE_BUDGET);
    }
}
