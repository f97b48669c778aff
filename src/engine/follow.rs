//! Following one client: for each followed session, a bounded history —
//! each backend it lived on, when and why it moved, how it ended, and
//! whether its user lost their login. Following is opt-in per session (at
//! most [`MAX_FOLLOWED`]). A task of its own records it from the event bus
//! and checks it against the session table at every topology change and
//! once a second (the bus samples per-request events, so a move can go
//! unheard); it subscribes only while something is followed. Nothing here
//! runs on a request's path.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::Shared;
use crate::bus::{BusEvent, Subscription};
use crate::demo::traffic::TrafficEvent;
use crate::router::{BackendId, BackendState, Event, SessionEnd, SessionKey, SessionName};
use crate::shutdown::ShutdownSignal;

/// The most sessions followed at once.
pub const MAX_FOLLOWED: usize = 256;

/// The most happenings kept per session; older ones are dropped (and counted).
pub const HISTORY_LEN: usize = 64;

/// Why a followed session moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveWhy {
    /// Its backend was killed by the operator.
    Killed,
    /// Its backend failed its health checks.
    Down,
    /// Its backend was removed.
    Removed,
    /// Its backend's drain ended.
    Drained,
    /// Its backend was still in service: a connect to it failed and the
    /// request went on to the next backend (or the application moved it).
    Redispatch,
}

impl MoveWhy {
    /// Why a session leaves a backend that is now in `state`.
    pub fn leaving(state: BackendState) -> MoveWhy {
        match state {
            BackendState::Killed => MoveWhy::Killed,
            BackendState::Down => MoveWhy::Down,
            BackendState::Removed => MoveWhy::Removed,
            BackendState::Drained => MoveWhy::Drained,
            BackendState::Up | BackendState::Draining => MoveWhy::Redispatch,
        }
    }
}

/// How a followed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndWhy {
    /// The user logged out.
    Logout,
    /// Idle past the timeout.
    Expired,
    /// The table was full and it was the least recently used.
    Evicted,
    /// It left the table unheard (a restart of the lesson, or an event dropped).
    Gone,
}

impl From<SessionEnd> for EndWhy {
    fn from(e: SessionEnd) -> Self {
        match e {
            SessionEnd::Ended => EndWhy::Logout,
            SessionEnd::Expired => EndWhy::Expired,
            SessionEnd::Evicted => EndWhy::Evicted,
        }
    }
}

/// One thing that happened to a followed session; `at_ms` is router time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum Happening {
    /// It was placed on `backend`.
    Placed {
        /// When.
        at_ms: u64,
        /// Where.
        backend: String,
    },
    /// Following began; it was on `backend`, after `earlier_moves` moves.
    Followed {
        /// When.
        at_ms: u64,
        /// Where it was.
        backend: String,
        /// Moves before following began.
        earlier_moves: u16,
    },
    /// It moved.
    Moved {
        /// When.
        at_ms: u64,
        /// The backend it left.
        from: String,
        /// The backend it has now.
        to: String,
        /// Why.
        why: MoveWhy,
    },
    /// Its user was told "who are you?": their login was lost.
    LostLogin {
        /// When.
        at_ms: u64,
        /// The backend that did not know them.
        backend: Option<String>,
    },
    /// It left the table.
    Ended {
        /// When.
        at_ms: u64,
        /// Its last backend.
        backend: String,
        /// Why.
        why: EndWhy,
    },
}

/// A followed session's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    /// Its name: a short fingerprint, or the client address.
    pub session: String,
    /// The fingerprint in full.
    pub fingerprint: String,
    /// The synthetic client it belongs to, when one does.
    pub client: Option<usize>,
    /// Its backend now; `None` once it ended.
    pub backend: Option<String>,
    /// Times its user lost their login while followed.
    pub lost_logins: u32,
    /// What happened, oldest first (at most [`HISTORY_LEN`]).
    pub happenings: VecDeque<Happening>,
    /// Happenings dropped for room.
    pub dropped: u64,
}

impl History {
    /// Each backend it lived on, in order.
    pub fn lived_on(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for h in &self.happenings {
            let here = match h {
                Happening::Placed { backend, .. } | Happening::Followed { backend, .. } => backend,
                Happening::Moved { to, .. } => to,
                _ => continue,
            };
            if out.last() != Some(&here.as_str()) {
                out.push(here);
            }
        }
        out
    }

    fn push(&mut self, h: Happening) {
        if self.happenings.len() == HISTORY_LEN {
            self.happenings.pop_front();
            self.dropped += 1;
        }
        self.happenings.push_back(h);
    }
}

/// Why a session cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// No live session has that fingerprint (in the table that routes now).
    #[error("no live session {0} in the table that routes now")]
    NotFound(String),
    /// The synthetic client has no session yet, or there are no clients.
    #[error("client-{0} has no session yet (are the synthetic clients running?)")]
    NoClientSession(usize),
    /// [`MAX_FOLLOWED`] are followed already.
    #[error("{MAX_FOLLOWED} sessions are followed already, the most at once: stop following one first")]
    TooMany,
}

/// Why a text names no session (see [`Shared::session_named`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Well formed, but no such session (or client) now.
    #[error("no session {0}")]
    Unknown(String),
    /// Not a way to name a session.
    #[error("{0}")]
    Malformed(String),
}

/// A followed session as the recorder keeps it.
#[derive(Debug)]
struct Entry {
    history: History,
    /// Its backend as last recorded; `None` once ended.
    current: Option<BackendId>,
    /// Its last request as last seen in the table, router seconds.
    last_seen_secs: u32,
}

/// Every followed session's history. Owned by [`Shared`].
#[derive(Debug)]
pub struct Follows {
    entries: Mutex<HashMap<u64, Entry>>,
    /// Wakes the recorder when the first session is followed.
    wake: Notify,
    /// The bus subscription made when the first session was followed, so
    /// the recorder hears every event after `follow` returned, however late
    /// it wakes.
    listening: Mutex<Option<Subscription>>,
    count: AtomicUsize,
    /// Bumped whenever a history changes, for views to redraw.
    changed: watch::Sender<u64>,
}

impl Default for Follows {
    fn default() -> Self {
        Follows {
            entries: Mutex::default(),
            wake: Notify::new(),
            listening: Mutex::default(),
            count: AtomicUsize::new(0),
            changed: watch::Sender::new(0),
        }
    }
}

impl Follows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The subscription `follow` made for the recorder, if one waits.
    fn take_listening(&self) -> Option<Subscription> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Sessions followed now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn recount(&self, entries: &HashMap<u64, Entry>) {
        self.count.store(entries.len(), Ordering::Relaxed);
    }

    /// Records that the session is on `to` now — moved from `from` for
    /// `why`, or placed when `from` is `None` — unless that is known already.
    fn arrived(
        &self,
        fingerprint: u64,
        to: BackendId,
        from: Option<(BackendId, MoveWhy)>,
        at_ms: u64,
        name: &dyn Fn(BackendId) -> String,
    ) {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(&fingerprint) else { return };
        if e.current == Some(to) {
            return;
        }
        e.current = Some(to);
        e.history.backend = Some(name(to));
        e.history.push(match from {
            Some((from, why)) => Happening::Moved {
                at_ms,
                from: name(from),
                to: name(to),
                why,
            },
            None => Happening::Placed {
                at_ms,
                backend: name(to),
            },
        });
        drop(entries);
        self.bump();
    }

    fn ended(&self, fingerprint: u64, why: EndWhy, at_ms: u64, name: &dyn Fn(BackendId) -> String) {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(&fingerprint) else { return };
        match e.current.take() {
            Some(b) => {
                e.history.backend = None;
                e.history.push(Happening::Ended {
                    at_ms,
                    backend: name(b),
                    why,
                });
            }
            // Found gone before the event came: the event knows why.
            None => {
                if let Some(Happening::Ended {
                    why: w @ EndWhy::Gone, ..
                }) = e.history.happenings.back_mut()
                {
                    *w = why;
                }
            }
        }
    }

    fn lost_login(&self, client: usize, backend: Option<String>, at_ms: u64) {
        let mut heard = false;
        for e in self.lock().values_mut() {
            if e.history.client == Some(client) {
                e.history.lost_logins += 1;
                e.history.push(Happening::LostLogin {
                    at_ms,
                    backend: backend.clone(),
                });
                heard = true;
            }
        }
        if heard {
            self.bump();
        }
    }
}

impl Shared {
    /// Starts following the live session `fingerprint` (of the table that
    /// routes now) and returns its history so far.
    pub fn follow(&self, fingerprint: u64) -> Result<History, FollowError> {
        let not_found = || FollowError::NotFound(format!("{fingerprint:016x}"));
        if let Some(e) = self.follows.lock().get(&fingerprint) {
            return Ok(e.history.clone());
        }
        let info = self
            .router
            .sessions()
            .and_then(|t| t.get(fingerprint))
            .ok_or_else(not_found)?;
        let client = self
            .traffic()
            .and_then(|t| t.registry().client_of(fingerprint, &self.router));
        let backend = self.backend_name(info.backend);
        let mut history = History {
            session: info.name().to_string(),
            fingerprint: info.name().fingerprint_hex(),
            client,
            backend: Some(backend.clone()),
            lost_logins: 0,
            happenings: VecDeque::new(),
            dropped: 0,
        };
        history.push(if info.reassignments == 0 {
            Happening::Placed {
                at_ms: u64::from(info.created_secs) * 1000,
                backend,
            }
        } else {
            Happening::Followed {
                at_ms: self.clock.now().0,
                backend,
                earlier_moves: info.reassignments,
            }
        });
        let mut entries = self.follows.lock();
        if entries.len() >= MAX_FOLLOWED {
            return Err(FollowError::TooMany);
        }
        if entries.is_empty() {
            *self.follows.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.bus.subscribe());
        }
        entries.insert(
            fingerprint,
            Entry {
                history: history.clone(),
                current: Some(info.backend),
                last_seen_secs: info.last_seen_secs,
            },
        );
        self.follows.recount(&entries);
        drop(entries);
        self.follows.wake.notify_one();
        self.follows.bump();
        Ok(history)
    }

    /// Starts following synthetic client `client`'s session (`client-7`).
    pub fn follow_client(&self, client: usize) -> Result<History, FollowError> {
        let session = self
            .traffic()
            .and_then(|t| t.registry().session_of(client, &self.router))
            .ok_or(FollowError::NoClientSession(client))?;
        let mut history = self.follow(session.fingerprint)?;
        if history.client.is_none() {
            history.client = Some(client);
            if let Some(e) = self.follows.lock().get_mut(&session.fingerprint) {
                e.history.client = Some(client);
            }
        }
        Ok(history)
    }

    /// Stops following `fingerprint`; returns whether it was followed.
    pub fn unfollow(&self, fingerprint: u64) -> bool {
        let mut entries = self.follows.lock();
        let was = entries.remove(&fingerprint).is_some();
        self.follows.recount(&entries);
        drop(entries);
        if was {
            self.follows.bump();
        }
        was
    }

    /// A number that grows whenever a followed session's history changes:
    /// a view waits on it and redraws.
    pub fn watch_follows(&self) -> watch::Receiver<u64> {
        self.follows.changed.subscribe()
    }

    /// The history of followed session `fingerprint`.
    pub fn history(&self, fingerprint: u64) -> Option<History> {
        self.follows.lock().get(&fingerprint).map(|e| e.history.clone())
    }

    /// The sessions followed now, by fingerprint.
    pub fn followed(&self) -> Vec<SessionName> {
        let mut out: Vec<SessionName> = self
            .follows
            .lock()
            .keys()
            .map(|&fingerprint| SessionName {
                fingerprint,
                address: None,
            })
            .collect();
        out.sort_by_key(|s| s.fingerprint);
        out
    }
}

impl Shared {
    /// The fingerprint a text names: 16 hex digits; `#` and the 8 shown
    /// (among the followed sessions when `among_followed`, else the table);
    /// a client address; or a demo client, `client-N`.
    pub fn session_named(&self, text: &str, among_followed: bool) -> Result<u64, NameError> {
        let unknown = || NameError::Unknown(text.to_owned());
        if let Some(n) = client_number(text) {
            return self
                .traffic()
                .and_then(|t| t.registry().session_of(n, &self.router))
                .map(|s| s.fingerprint)
                .ok_or_else(unknown);
        }
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return self.router.fingerprint(SessionKey::Source(ip)).ok_or_else(unknown);
        }
        let hex = text.strip_prefix('#').unwrap_or(text);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NameError::Malformed(format!(
                "{text:?}: name a session by its fingerprint (16 hex digits, or # and 8), its client address, or client-N"
            )));
        }
        match hex.len() {
            16 => u64::from_str_radix(hex, 16).map_err(|_| unknown()),
            8 => {
                let top = u64::from_str_radix(hex, 16).map_err(|_| unknown())?;
                let matches: Vec<u64> = if among_followed {
                    self.followed()
                        .iter()
                        .map(|s| s.fingerprint)
                        .filter(|f| f >> 32 == top)
                        .collect()
                } else {
                    self.router
                        .sessions()
                        .map(|t| t.list(2, |s| s.fingerprint >> 32 == top))
                        .unwrap_or_default()
                        .iter()
                        .map(|s| s.fingerprint)
                        .collect()
                };
                match matches.as_slice() {
                    [one] => Ok(*one),
                    [] => Err(unknown()),
                    _ => Err(NameError::Malformed(format!(
                        "#{hex} names more than one session: give all 16 digits"
                    ))),
                }
            }
            _ => Err(NameError::Malformed(format!(
                "{text:?}: a fingerprint has 16 hex digits (or 8 after #)"
            ))),
        }
    }

    /// Starts following the session `text` names ([`Shared::session_named`]):
    /// a demo client's by number, so the history names the client.
    pub fn follow_named(&self, text: &str) -> Result<History, FollowNamedError> {
        match client_number(text) {
            Some(n) => Ok(self.follow_client(n)?),
            None => Ok(self.follow(self.session_named(text, false)?)?),
        }
    }
}

/// Why [`Shared::follow_named`] follows nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowNamedError {
    /// The text names no session.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The session cannot be followed.
    #[error(transparent)]
    Follow(#[from] FollowError),
}

/// `client-7` → 7.
pub fn client_number(text: &str) -> Option<usize> {
    text.strip_prefix("client-")?.parse().ok()
}

/// Records the followed sessions' histories until shutdown; listens to the
/// bus only while something is followed.
pub(super) async fn record(shared: Arc<Shared>, mut shutdown: ShutdownSignal) {
    loop {
        while shared.follows.count() == 0 {
            tokio::select! {
                _ = shared.follows.wake.notified() => {}
                _ = shutdown.stopped() => return,
            }
        }
        let mut events = shared
            .follows
            .take_listening()
            .unwrap_or_else(|| shared.bus.subscribe());
        let topo = shared.router.topology();
        let mut states: HashMap<BackendId, BackendState> = (0..topo.backend_count())
            .map(|i| BackendId(i as u32))
            .map(|id| (id, topo.state(id)))
            .collect();
        reconcile(&shared, &states);
        while shared.follows.count() > 0 {
            let event = tokio::select! {
                e = events.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
                _ = shutdown.stopped() => return,
            };
            // Everything was unfollowed and something followed again before
            // this loop noticed: listen from that follow on.
            if let Some(newer) = shared.follows.take_listening() {
                events = newer;
            }
            let at_ms = event.at_ms;
            let name = |id: BackendId| shared.backend_name(id);
            let follows = &shared.follows;
            match &event.event {
                BusEvent::Router(Event::BackendState { backend, to, .. }) => {
                    states.insert(*backend, *to);
                }
                BusEvent::Router(Event::SessionReassigned { session, from, to }) => {
                    let state = states.get(from).copied().unwrap_or(BackendState::Up);
                    let from = Some((*from, MoveWhy::leaving(state)));
                    follows.arrived(session.fingerprint, *to, from, at_ms, &name);
                }
                BusEvent::Router(Event::SessionCreated { session, backend }) => {
                    follows.arrived(session.fingerprint, *backend, None, at_ms, &name);
                }
                BusEvent::Router(Event::SessionEnded { session, reason, .. }) => {
                    follows.ended(session.fingerprint, EndWhy::from(*reason), at_ms, &name);
                }
                BusEvent::Traffic(TrafficEvent::LostSession { client, backend }) => {
                    follows.lost_login(*client, backend.clone(), at_ms);
                }
                BusEvent::Router(Event::Remap(_)) | BusEvent::Second { .. } => reconcile(&shared, &states),
                _ => {}
            }
        }
    }
}

/// Checks every followed session against the table: records a move or an
/// end that no event told of.
fn reconcile(shared: &Shared, states: &HashMap<BackendId, BackendState>) {
    let at_ms = shared.clock.now().0;
    let now_secs = shared.clock.now().secs();
    let table = shared.router.sessions();
    let idle = table.map_or(u32::MAX, |t| t.idle_secs());
    let name = |id: BackendId| shared.backend_name(id);
    let found: Vec<(u64, Option<BackendId>, Option<BackendId>, u32)> = shared
        .follows
        .lock()
        .iter()
        .map(|(&fp, e)| {
            let now = table.and_then(|t| t.get(fp));
            (
                fp,
                e.current,
                now.map(|s| s.backend),
                now.map_or(e.last_seen_secs, |s| s.last_seen_secs),
            )
        })
        .collect();
    for (fp, was, now, last_seen) in found {
        if let Some(e) = shared.follows.lock().get_mut(&fp) {
            e.last_seen_secs = last_seen;
        }
        match (was, now) {
            (Some(from), Some(to)) if from != to => {
                let state = states.get(&from).copied().unwrap_or(BackendState::Up);
                shared
                    .follows
                    .arrived(fp, to, Some((from, MoveWhy::leaving(state))), at_ms, &name);
            }
            (None, Some(to)) => shared.follows.arrived(fp, to, None, at_ms, &name),
            (Some(_), None) => {
                let why = if now_secs.saturating_sub(last_seen) >= idle {
                    EndWhy::Expired
                } else {
                    EndWhy::Gone
                };
                shared.follows.ended(fp, why, at_ms, &name);
            }
            _ => {}
        }
    }
}
