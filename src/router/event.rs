//! Events: everything the router decides, for the dashboard, logs and tests.

use std::sync::{Arc, Mutex};

use super::backend::BackendState;
use super::moves::Moves;
use super::remap::RemapSummary;
use super::session::SessionName;
use super::{BackendId, Timestamp};

/// How a request found its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// A valid balancer cookie whose session the table did not hold.
    Cookie,
    /// The session table.
    Table,
    /// The placement, for a key with no session yet (or no key at all).
    Placement,
    /// The session's backend had left; it was moved.
    Reassignment,
    /// A new session placed where the client's application session lives.
    AppSession,
}

/// Why a session left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionEnd {
    /// Idle longer than the timeout.
    Expired,
    /// The table was full and it was the least recently used.
    Evicted,
    /// Ended on purpose (logout).
    Ended,
}

/// Something the router did.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A request was routed.
    Routed {
        /// The session, when the request had one.
        session: Option<SessionName>,
        /// The key's ring position.
        position: u32,
        /// Where it went.
        backend: BackendId,
        /// How.
        via: Via,
        /// When.
        at: Timestamp,
    },
    /// A session was created.
    SessionCreated {
        /// The session.
        session: SessionName,
        /// Its backend.
        backend: BackendId,
    },
    /// A session left the table.
    SessionEnded {
        /// The session.
        session: SessionName,
        /// Its backend.
        backend: BackendId,
        /// Why.
        reason: SessionEnd,
    },
    /// A session was moved because its backend left.
    SessionReassigned {
        /// The session.
        session: SessionName,
        /// The backend it left.
        from: BackendId,
        /// The backend it has now.
        to: BackendId,
    },
    /// A backend changed state.
    BackendState {
        /// Which.
        backend: BackendId,
        /// Its state before.
        from: BackendState,
        /// Its state now.
        to: BackendState,
    },
    /// The outcome of a topology change.
    Remap(RemapSummary),
    /// A balancer cookie failed verification and was ignored.
    ForgedCookie,
}

/// Where the router sends events. Implementations must never block: a slow
/// consumer drops events (and counts them), it never slows routing.
pub trait EventSink: Send + Sync {
    /// Delivers one event.
    fn emit(&self, event: Event);

    /// Whether anyone listens to per-request events; when false the router
    /// skips building them.
    fn wants_routed(&self) -> bool {
        true
    }

    /// Takes what a topology change did to the sessions: once per change,
    /// beside [`Event::Remap`] (kept apart from the event stream so that
    /// per-request sampling never drops it). Ignored unless overridden.
    fn moves(&self, moves: Arc<Moves>) {
        let _ = moves;
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _: Event) {}

    fn wants_routed(&self) -> bool {
        false
    }
}

/// Keeps every event in memory, for tests and the simulator.
#[derive(Debug, Default)]
pub struct CollectSink {
    events: Mutex<Vec<Event>>,
    moves: Mutex<Vec<Arc<Moves>>>,
}

impl CollectSink {
    /// Takes the events collected so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the moves collected so far, one per topology change.
    pub fn take_moves(&self) -> Vec<Arc<Moves>> {
        std::mem::take(&mut *self.moves.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl EventSink for CollectSink {
    fn emit(&self, event: Event) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    fn moves(&self, moves: Arc<Moves>) {
        self.moves.lock().unwrap_or_else(|e| e.into_inner()).push(moves);
    }
}
