//! The Router: ringside's I/O-free brain. Backends and their states, the
//! hash ring, placements, affinity keys, the session table and remap
//! accounting. It has no clock (time is passed in) and does no I/O, so the
//! proxy, the simulator and the experiments share it and tests drive it
//! deterministically.
//!
//! Requests read an immutable [`Topology`] snapshot without locks and lock
//! one session-table shard for a few hundred nanoseconds; topology changes
//! are serialized and publish a new snapshot atomically.

pub mod affinity;
pub mod backend;
pub mod event;
pub mod hash;
pub mod lb_cookie;
pub mod placement;
pub mod remap;
pub mod ring;
pub mod session;
pub mod topology;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use backend::{Backend, BackendId, BackendSpec, BackendState};
pub use event::{Event, EventSink, NullSink, SessionEnd, Via};
pub use placement::Placement;
pub use remap::{ChangeKind, RemapSummary};
pub use ring::{Ring, VnodeHash};
pub use session::{KeyLabel, SessionInfo, SessionTable};
pub use topology::Topology;

use hash::{Fingerprinter, KeyDomain};
use placement::Placer;
use session::Lookup;
use topology::TopologyDraft;

/// Router time: milliseconds since an epoch the caller chooses (the proxy
/// uses its start; the simulator starts at zero and advances on request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `secs` seconds after the epoch.
    pub fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Whole seconds after the epoch, as the session table keeps them.
    pub fn secs(self) -> u32 {
        (self.0 / 1000).min(u64::from(u32::MAX)) as u32
    }
}

/// Errors from the router: each says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// A backend name that is empty, too long or has other characters.
    #[error("bad backend name {0:?}: use 1-64 characters of letters, digits, '.', '_' or '-'")]
    BadName(String),
    /// A weight outside 1–100.
    #[error("bad weight {0:?}: use a whole number from 1 to 100")]
    BadWeight(String),
    /// A `--backend` value that does not parse.
    #[error("bad backend {0}")]
    BadSpec(String),
    /// A name that is already in use.
    #[error("a backend named {0:?} already exists: names must be unique")]
    DuplicateName(String),
    /// No backend has that name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// Nothing can take the request.
    #[error("no backend is available")]
    NoBackend,
    /// [`Router::route_cached`] found no session for the key: ask the
    /// session store, then route again.
    #[error("the session is not in the local table")]
    NotCached {
        /// The key's fingerprint.
        fingerprint: u64,
    },
}

/// Told of the session-table changes that other balancers must learn, to
/// share the table through a session store. Called under a shard lock:
/// implementations only record and return.
pub trait SessionMirror: Send + Sync {
    /// The session `fingerprint` was stored on `backend`: created, or still
    /// in use (then at most a few times per idle timeout).
    fn stored(&self, fingerprint: u64, position: u32, backend: BackendId);
    /// The session moved to `backend` (its backend left, a redispatch, or
    /// the application moved it).
    fn moved(&self, fingerprint: u64, position: u32, backend: BackendId);
    /// The session ended on purpose (logout).
    fn ended(&self, fingerprint: u64);
}

/// Router settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Virtual nodes per unit of weight.
    pub vnodes_per_weight: u32,
    /// How vnode labels become positions.
    pub vnode_hash: VnodeHash,
    /// The placement to start with.
    pub placement: Placement,
    /// Bounded-ring's c: a backend is full at `ceil(c × mean sessions)`.
    pub bound_factor: f64,
    /// Sessions idle this long expire.
    pub idle_timeout_secs: u32,
    /// The most sessions kept; the least recently used go first.
    pub max_sessions: usize,
    /// Seeds session ids, p2c's choices and fingerprints; `None` picks one at random.
    pub seed: Option<u64>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            vnodes_per_weight: ring::DEFAULT_VNODES,
            vnode_hash: VnodeHash::Mixed,
            placement: Placement::Ring,
            bound_factor: 1.25,
            idle_timeout_secs: 30 * 60,
            max_sessions: 1_000_000,
            seed: None,
        }
    }
}

/// What a request is routed by, once extracted from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKey<'a> {
    /// No key: placed afresh, no session kept (affinity `none`).
    None,
    /// An application session id (cookie, header or query parameter).
    Text(&'a str),
    /// The client address (affinity `source-ip`).
    Source(IpAddr),
    /// A verified balancer cookie: its session id and the backend it named.
    Cookie {
        /// The session id inside the cookie.
        session: u64,
        /// The backend the cookie named, if that backend is known.
        backend: Option<BackendId>,
    },
    /// Balancer-cookie mode without a valid cookie: start a new session.
    NewCookie,
}

/// How the session fared on this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new session was stored.
    Created,
    /// The session table routed it.
    Kept,
    /// A valid balancer cookie routed it and the session was stored again.
    Adopted,
    /// The session was moved (now, or since the last request) from `from`.
    Reassigned {
        /// The backend it left, when known.
        from: Option<BackendId>,
    },
    /// No session: affinity `none`.
    Stateless,
}

/// A routing decision.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where the request goes.
    pub backend: Arc<Backend>,
    /// How it was found.
    pub via: Via,
    /// What happened to the session.
    pub outcome: Outcome,
    /// The key's ring position.
    pub position: u32,
    /// The balancer-cookie session id, in balancer-cookie mode.
    pub session_id: Option<u64>,
    /// True when the client's balancer cookie must be (re)written.
    pub set_cookie: bool,
    /// The session's fingerprint, when there is a session.
    pub fingerprint: Option<u64>,
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Sessions created.
    pub created: AtomicU64,
    /// Sessions expired after their idle timeout.
    pub expired: AtomicU64,
    /// Sessions evicted because the table was full.
    pub evicted: AtomicU64,
    /// Sessions ended on purpose.
    pub ended: AtomicU64,
    /// Sessions moved because their backend left.
    pub reassigned: AtomicU64,
    /// Balancer cookies that failed verification.
    pub forged_cookies: AtomicU64,
    /// Sessions taken in or moved from the session store.
    pub synced: AtomicU64,
    /// Requests routed.
    pub routed: AtomicU64,
    /// Requests for which no backend was available.
    pub unroutable: AtomicU64,
    /// The last topology change's summary.
    pub last_remap: Mutex<Option<RemapSummary>>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

/// A plain copy of [`RouterStats`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Live sessions.
    pub sessions: u64,
    /// Sessions created.
    pub created: u64,
    /// Sessions expired.
    pub expired: u64,
    /// Sessions evicted.
    pub evicted: u64,
    /// Sessions ended on purpose.
    pub ended: u64,
    /// Sessions reassigned.
    pub reassigned: u64,
    /// Forged balancer cookies seen.
    pub forged_cookies: u64,
    /// Sessions taken in or moved from the session store.
    pub synced: u64,
    /// Requests routed.
    pub routed: u64,
    /// Requests with no backend available.
    pub unroutable: u64,
}

/// The router. Share it behind an `Arc`; every method takes `&self`.
pub struct Router {
    config: RouterConfig,
    /// Virtual nodes per unit of weight now (starts from the config).
    vnodes: std::sync::atomic::AtomicU32,
    topology: ArcSwap<Topology>,
    /// Serializes topology changes (never held by requests).
    changes: Mutex<u64>,
    placer: Placer,
    sessions: SessionTable,
    fingerprinter: Fingerprinter,
    stats: RouterStats,
    events: Arc<dyn EventSink>,
    mirror: Option<Arc<dyn SessionMirror>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no backends that sends events to `events`.
    pub fn new(config: RouterConfig, events: Arc<dyn EventSink>) -> Self {
        let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
        Router {
            placer: Placer::new(config.placement, config.bound_factor, seed),
            sessions: SessionTable::new(config.max_sessions, config.idle_timeout_secs),
            fingerprinter: Fingerprinter::new(hash::mix64(seed ^ 0x6a09_e667_f3bc_c908)),
            topology: ArcSwap::from_pointee(Topology::default()),
            vnodes: std::sync::atomic::AtomicU32::new(config.vnodes_per_weight),
            changes: Mutex::new(0),
            stats: RouterStats::default(),
            events,
            mirror: None,
            config,
        }
    }

    /// A router whose session table is mirrored to `mirror`, fingerprinting
    /// keys with `shared_secret` so that every balancer sharing it agrees on
    /// them.
    pub fn mirrored(
        config: RouterConfig,
        events: Arc<dyn EventSink>,
        shared_secret: &[u8],
        mirror: Arc<dyn SessionMirror>,
    ) -> Self {
        Router {
            fingerprinter: Fingerprinter::from_shared_secret(shared_secret),
            mirror: Some(mirror),
            ..Router::new(config, events)
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The current topology snapshot.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// The session table.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// The counters.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// A copy of the counters.
    pub fn stats_snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            sessions: self.sessions.len(),
            created: get(&s.created),
            expired: get(&s.expired),
            evicted: get(&s.evicted),
            ended: get(&s.ended),
            reassigned: get(&s.reassigned),
            forged_cookies: get(&s.forged_cookies),
            synced: get(&s.synced),
            routed: get(&s.routed),
            unroutable: get(&s.unroutable),
        }
    }

    /// The placement in force.
    pub fn placement(&self) -> Placement {
        self.placer.placement()
    }

    /// Switches the placement for new keys.
    pub fn set_placement(&self, p: Placement) {
        self.placer.set_placement(p);
    }

    /// Where the placement in force would put a new key at `position` now,
    /// without storing a session (for experiments and benchmarks).
    pub fn place(&self, position: u32) -> Option<BackendId> {
        self.placer.place(&self.topology.load(), position, self.sessions.len())
    }

    /// A fresh random 64-bit value (session ids).
    pub fn random(&self) -> u64 {
        self.placer.random()
    }

    /// Counts a balancer cookie that failed verification.
    pub fn note_forged_cookie(&self) {
        inc(&self.stats.forged_cookies);
        self.events.emit(Event::ForgedCookie);
    }

    /// Routes one request by `key` at time `now`.
    pub fn route(&self, key: SessionKey<'_>, now: Timestamp) -> Result<Route, RouterError> {
        self.route_or_miss(key, now, true)
    }

    /// Like [`Router::route`], but a key with no session in the local table
    /// is not placed: the answer is [`RouterError::NotCached`], so the caller
    /// can ask the session store first. New balancer-cookie sessions are
    /// placed as usual.
    pub fn route_cached(&self, key: SessionKey<'_>, now: Timestamp) -> Result<Route, RouterError> {
        self.route_or_miss(key, now, false)
    }

    fn route_or_miss(&self, key: SessionKey<'_>, now: Timestamp, place_missing: bool) -> Result<Route, RouterError> {
        let topo = self.topology.load();
        let result = self.route_in(&topo, key, now, place_missing);
        match &result {
            Ok(r) => {
                inc(&self.stats.routed);
                r.backend.counters.requests.fetch_add(1, Ordering::Relaxed);
                if self.events.wants_routed() {
                    self.events.emit(Event::Routed {
                        key: label_of(key, r.session_id),
                        position: r.position,
                        backend: r.backend.id,
                        via: r.via,
                        at: now,
                    });
                }
            }
            Err(RouterError::NotCached { .. }) => {}
            Err(_) => inc(&self.stats.unroutable),
        }
        result
    }

    fn route_in(
        &self,
        topo: &Topology,
        key: SessionKey<'_>,
        now: Timestamp,
        place_missing: bool,
    ) -> Result<Route, RouterError> {
        let mut buf = [0u8; 16];
        let (session_id, claim) = match key {
            SessionKey::None => {
                let position = self.placer.random() as u32;
                let id = self
                    .placer
                    .place(topo, position, self.sessions.len())
                    .ok_or(RouterError::NoBackend)?;
                return Ok(Route {
                    backend: Arc::clone(topo.backend(id)),
                    via: Via::Placement,
                    outcome: Outcome::Stateless,
                    position,
                    session_id: None,
                    set_cookie: false,
                    fingerprint: None,
                });
            }
            SessionKey::Cookie { session, backend } => (Some(session), backend),
            SessionKey::NewCookie => (Some(self.placer.random()), None),
            SessionKey::Text(_) | SessionKey::Source(_) => (None, None),
        };
        // A new balancer-cookie session cannot be in the table yet.
        let fresh = matches!(key, SessionKey::NewCookie);
        let key = match (key, session_id) {
            (SessionKey::NewCookie, Some(session)) => SessionKey::Cookie { session, backend: None },
            _ => key,
        };
        let (domain, bytes) = key_material(key, &mut buf).ok_or(RouterError::NoBackend)?;
        let position = hash::key_position(bytes);
        let fingerprint = self.fingerprinter.fingerprint(domain, bytes);
        let now_s = now.secs();
        let route = |id: BackendId, via: Via, outcome: Outcome| {
            let set_cookie = session_id.is_some()
                && (matches!(outcome, Outcome::Created | Outcome::Reassigned { .. }) || claim != Some(id));
            Route {
                backend: Arc::clone(topo.backend(id)),
                via,
                outcome,
                position,
                session_id,
                set_cookie,
                fingerprint: Some(fingerprint),
            }
        };

        let mut shard = self.sessions.shard_for(fingerprint);
        let lookup = if fresh {
            Lookup::Missing
        } else {
            shard.lookup(fingerprint, now_s, self.sessions.idle_secs())
        };
        match lookup {
            Lookup::Live {
                backend,
                moved_from,
                last_seen,
            } if topo.state(backend).keeps_sessions() => {
                if let Some(mirror) = &self.mirror
                    && self.refresh_due(last_seen, now_s)
                {
                    mirror.stored(fingerprint, position, backend);
                }
                return Ok(match moved_from {
                    Some(from) => route(backend, Via::Reassignment, Outcome::Reassigned { from: Some(from) }),
                    None => route(backend, Via::Table, Outcome::Kept),
                });
            }
            Lookup::Live { backend, .. } => {
                // Its backend left after the last sweep of reassignments.
                let to = topo.ring_owner(position).ok_or(RouterError::NoBackend)?;
                if let Some(info) = shard.reassign(fingerprint, to, false) {
                    self.count_move(topo, &info, to);
                }
                return Ok(route(
                    to,
                    Via::Reassignment,
                    Outcome::Reassigned { from: Some(backend) },
                ));
            }
            Lookup::Expired(info) => self.count_end(topo, &info, SessionEnd::Expired),
            Lookup::Missing => {}
        }
        if !place_missing && !fresh {
            return Err(RouterError::NotCached { fingerprint });
        }

        let (to, via, outcome) = match claim {
            Some(b) if topo.state(b).keeps_sessions() => (b, Via::Cookie, Outcome::Adopted),
            Some(b) => {
                let to = self
                    .placer
                    .place(topo, position, self.sessions.len())
                    .ok_or(RouterError::NoBackend)?;
                (to, Via::Reassignment, Outcome::Reassigned { from: Some(b) })
            }
            None => {
                let to = self
                    .placer
                    .place(topo, position, self.sessions.len())
                    .ok_or(RouterError::NoBackend)?;
                (to, Via::Placement, Outcome::Created)
            }
        };
        let label = label_of(key, session_id);
        if let Some(evicted) = shard.insert(fingerprint, position, to, label, now_s, self.sessions.is_full()) {
            self.count_end(topo, &evicted, SessionEnd::Evicted);
        }
        if let Some(mirror) = &self.mirror {
            match outcome {
                Outcome::Reassigned { .. } => mirror.moved(fingerprint, position, to),
                _ => mirror.stored(fingerprint, position, to),
            }
        }
        drop(shard);
        self.sessions.add_len(1);
        topo.backend(to).counters.sessions.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Created => {
                inc(&self.stats.created);
                self.events.emit(Event::SessionCreated {
                    key: label,
                    backend: to,
                });
            }
            Outcome::Reassigned { from: Some(from) } => {
                inc(&self.stats.reassigned);
                self.events.emit(Event::SessionReassigned { key: label, from, to });
            }
            _ => {}
        }
        Ok(route(to, via, outcome))
    }

    fn count_end(&self, topo: &Topology, info: &SessionInfo, reason: SessionEnd) {
        self.sessions.add_len(-1);
        dec(&topo.backend(info.backend).counters.sessions);
        inc(match reason {
            SessionEnd::Expired => &self.stats.expired,
            SessionEnd::Evicted => &self.stats.evicted,
            SessionEnd::Ended => &self.stats.ended,
        });
        self.events.emit(Event::SessionEnded {
            key: info.label,
            backend: info.backend,
            reason,
        });
    }

    /// Counts a move of session `before` to `to`, and tells the mirror.
    fn count_move(&self, topo: &Topology, before: &SessionInfo, to: BackendId) {
        self.count_move_quietly(topo, before, to);
        inc(&self.stats.reassigned);
        if let Some(mirror) = &self.mirror {
            mirror.moved(before.fingerprint, before.position, to);
        }
    }

    fn count_move_quietly(&self, topo: &Topology, before: &SessionInfo, to: BackendId) {
        dec(&topo.backend(before.backend).counters.sessions);
        topo.backend(to).counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.events.emit(Event::SessionReassigned {
            key: before.label,
            from: before.backend,
            to,
        });
    }

    /// A session in use is re-announced to the mirror when its last request
    /// was in an earlier quarter of the idle timeout, so the store's expiry
    /// keeps pace with traffic at a few writes per session per timeout.
    fn refresh_due(&self, last_seen: u32, now: u32) -> bool {
        let quarter = (self.sessions.idle_secs() / 4).max(1);
        last_seen / quarter != now / quarter
    }

    /// Redispatch: `route.backend` could not be reached. Sends the request,
    /// and moves its session, to the next backend clockwise from its key that
    /// takes new sessions and is not in `avoid` (the backends already tried).
    pub fn redispatch(&self, route: &Route, avoid: &[BackendId], now: Timestamp) -> Result<Route, RouterError> {
        let topo = self.topology.load();
        let to = topo
            .ring()
            .lookup(route.position, |id| {
                topo.state(id).takes_new_sessions() && id != route.backend.id && !avoid.contains(&id)
            })
            .map(|v| v.owner)
            .ok_or(RouterError::NoBackend)?;
        if let Some(fingerprint) = route.fingerprint {
            let moved = self.sessions.shard_for(fingerprint).reassign(fingerprint, to, false);
            if let Some(info) = moved {
                self.count_move(&topo, &info, to);
            }
        }
        let backend = Arc::clone(topo.backend(to));
        backend.counters.requests.fetch_add(1, Ordering::Relaxed);
        if self.events.wants_routed() {
            self.events.emit(Event::Routed {
                key: label_of(SessionKey::None, route.session_id),
                position: route.position,
                backend: to,
                via: Via::Reassignment,
                at: now,
            });
        }
        Ok(Route {
            backend,
            via: Via::Reassignment,
            outcome: Outcome::Reassigned {
                from: Some(route.backend.id),
            },
            position: route.position,
            session_id: route.session_id,
            set_cookie: route.session_id.is_some(),
            fingerprint: route.fingerprint,
        })
    }

    /// Binds `key` to `backend`, as when a response sets the application's
    /// session cookie: a new session, or a session moved to where the
    /// application now keeps it. Returns whether the table changed.
    pub fn bind(&self, key: SessionKey<'_>, backend: BackendId, now: Timestamp) -> bool {
        let topo = self.topology.load();
        if !topo.state(backend).keeps_sessions() {
            return false;
        }
        let mut buf = [0u8; 16];
        let Some((domain, bytes)) = key_material(key, &mut buf) else {
            return false;
        };
        let fingerprint = self.fingerprinter.fingerprint(domain, bytes);
        let position = hash::key_position(bytes);
        let label = label_of(key, None);
        let mut shard = self.sessions.shard_for(fingerprint);
        match shard.lookup(fingerprint, now.secs(), self.sessions.idle_secs()) {
            Lookup::Live { backend: current, .. } if current == backend => false,
            Lookup::Live { .. } => {
                if let Some(info) = shard.reassign(fingerprint, backend, false) {
                    self.count_move(&topo, &info, backend);
                }
                true
            }
            lookup => {
                if let Lookup::Expired(info) = lookup {
                    self.count_end(&topo, &info, SessionEnd::Expired);
                }
                if let Some(evicted) = shard.insert(
                    fingerprint,
                    position,
                    backend,
                    label,
                    now.secs(),
                    self.sessions.is_full(),
                ) {
                    self.count_end(&topo, &evicted, SessionEnd::Evicted);
                }
                if let Some(mirror) = &self.mirror {
                    mirror.stored(fingerprint, position, backend);
                }
                drop(shard);
                self.sessions.add_len(1);
                topo.backend(backend).counters.sessions.fetch_add(1, Ordering::Relaxed);
                inc(&self.stats.created);
                self.events.emit(Event::SessionCreated { key: label, backend });
                true
            }
        }
    }

    /// Ends the session of `key` (logout). Returns whether there was one.
    pub fn end_session(&self, key: SessionKey<'_>) -> bool {
        let mut buf = [0u8; 16];
        let Some((domain, bytes)) = key_material(key, &mut buf) else {
            return false;
        };
        self.end_route_session(self.fingerprinter.fingerprint(domain, bytes))
    }

    /// Ends the session a route used (its [`Route::fingerprint`]), as when
    /// the application's response deletes its session cookie.
    pub fn end_route_session(&self, fingerprint: u64) -> bool {
        if let Some(mirror) = &self.mirror {
            mirror.ended(fingerprint);
        }
        self.forget(fingerprint)
    }

    /// Removes a session another balancer ended, without telling the
    /// mirror. Returns whether it was here.
    pub fn forget(&self, fingerprint: u64) -> bool {
        let removed = self.sessions.shard_for(fingerprint).remove(fingerprint);
        if let Some(info) = removed {
            self.count_end(&self.topology.load(), &info, SessionEnd::Ended);
        }
        removed.is_some()
    }

    /// Takes in what the session store knows of a session: inserts it
    /// (labelled by its fingerprint), or moves it (reported to its next
    /// request) when it lives elsewhere now.
    /// The mirror is not told. Returns whether the table changed; a backend
    /// that is unknown here or keeps no sessions changes nothing.
    pub fn adopt(&self, fingerprint: u64, position: u32, backend: &str, now: Timestamp) -> bool {
        self.take_in(fingerprint, Some((position, KeyLabel::hex(fingerprint), now)), backend)
    }

    /// Follows a move another balancer made: the session moves to `backend`
    /// if it is here. The mirror is not told.
    pub fn follow(&self, fingerprint: u64, backend: &str) -> bool {
        self.take_in(fingerprint, None, backend)
    }

    fn take_in(&self, fingerprint: u64, insert: Option<(u32, KeyLabel, Timestamp)>, backend: &str) -> bool {
        let topo = self.topology.load();
        let Some(to) = topo.find(backend).map(|b| b.id) else {
            return false;
        };
        if !topo.state(to).keeps_sessions() {
            return false;
        }
        let mut shard = self.sessions.shard_for(fingerprint);
        if let Some(before) = shard.reassign(fingerprint, to, true) {
            drop(shard);
            self.count_move_quietly(&topo, &before, to);
            inc(&self.stats.synced);
            return true;
        }
        let Some((position, label, now)) = insert.filter(|_| !shard.contains(fingerprint)) else {
            return false;
        };
        if let Some(evicted) = shard.insert(fingerprint, position, to, label, now.secs(), self.sessions.is_full()) {
            self.count_end(&topo, &evicted, SessionEnd::Evicted);
        }
        drop(shard);
        self.sessions.add_len(1);
        topo.backend(to).counters.sessions.fetch_add(1, Ordering::Relaxed);
        inc(&self.stats.synced);
        true
    }

    /// Expires sessions idle past the timeout at `now`; returns how many.
    pub fn sweep(&self, now: Timestamp) -> u64 {
        let topo = self.topology.load();
        let mut expired = Vec::new();
        for i in 0..self.sessions.shard_count() {
            self.sessions
                .shard(i)
                .expire(now.secs(), self.sessions.idle_secs(), |info| expired.push(info));
        }
        for info in &expired {
            self.count_end(&topo, info, SessionEnd::Expired);
        }
        expired.len() as u64
    }

    /// Adds a backend (state `up`) and returns its id.
    pub fn add_backend(&self, spec: &BackendSpec) -> Result<BackendId, RouterError> {
        backend::validate_name(&spec.name)?;
        backend::validate_weight(spec.weight)?;
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        if old.find(&spec.name).is_some() {
            return Err(RouterError::DuplicateName(spec.name.clone()));
        }
        let mut draft = TopologyDraft::from(&old);
        let id = BackendId(draft.backends.len() as u32);
        draft.push(
            Backend::new(id, &spec.name, spec.addr),
            spec.weight,
            self.vnodes(),
            self.config.vnode_hash,
        );
        let new = self.publish(&mut generation, draft);
        self.account(&old, &new, Some(id), ChangeKind::Joined);
        Ok(id)
    }

    /// Takes a backend out for good: its sessions are reassigned.
    pub fn remove_backend(&self, name: &str) -> Result<RemapSummary, RouterError> {
        self.set_state(name, BackendState::Removed)?
            .ok_or_else(|| RouterError::UnknownBackend(name.to_owned()))
    }

    /// Changes a backend's state and returns the remap summary when sessions
    /// or new keys are affected (`None` when the state was already that).
    /// Leaving `up`/`draining` for `down`, `killed` or `removed` reassigns the
    /// backend's sessions to the next available backend clockwise.
    pub fn set_state(&self, name: &str, state: BackendState) -> Result<Option<RemapSummary>, RouterError> {
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        let id = self.find_any(&old, name)?;
        let from = old.state(id);
        if from == state {
            return Ok(None);
        }
        let mut draft = TopologyDraft::from(&old);
        draft.set_state(id, state);
        let new = self.publish(&mut generation, draft);
        self.events.emit(Event::BackendState {
            backend: id,
            from,
            to: state,
        });
        let kind = if from.keeps_sessions() && !state.keeps_sessions() {
            ChangeKind::Left
        } else if state.takes_new_sessions() {
            ChangeKind::Joined
        } else if state == BackendState::Draining {
            ChangeKind::Draining
        } else {
            // e.g. down → killed: nothing moves, nothing new arrives.
            return Ok(None);
        };
        Ok(Some(self.account(&old, &new, Some(id), kind)))
    }

    /// Changes a backend's weight (its vnodes and weighted share).
    pub fn set_weight(&self, name: &str, weight: u32) -> Result<RemapSummary, RouterError> {
        backend::validate_weight(weight)?;
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        let id = old
            .find(name)
            .map(|b| b.id)
            .ok_or_else(|| RouterError::UnknownBackend(name.to_owned()))?;
        let mut draft = TopologyDraft::from(&old);
        draft.set_weight(id, weight, self.vnodes(), self.config.vnode_hash);
        let new = self.publish(&mut generation, draft);
        Ok(self.account(&old, &new, Some(id), ChangeKind::Reweighted))
    }

    /// Virtual nodes per unit of weight now.
    pub fn vnodes(&self) -> u32 {
        self.vnodes.load(Ordering::Relaxed)
    }

    /// Re-places every backend with `vnodes` virtual nodes per unit of
    /// weight (1–10,000). Sessions stay where they are; the summary says what
    /// a stateless ring would have moved.
    pub fn set_vnodes(&self, vnodes: u32) -> Result<RemapSummary, RouterError> {
        if !(1..=10_000).contains(&vnodes) {
            return Err(RouterError::BadSpec(format!("{vnodes} vnodes: use 1 to 10000")));
        }
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        if old.members().next().is_none() {
            return Err(RouterError::NoBackend);
        }
        self.vnodes.store(vnodes, Ordering::Relaxed);
        let mut draft = TopologyDraft::from(&old);
        for b in old.members() {
            draft.set_weight(b.id, old.weight(b.id), vnodes, self.config.vnode_hash);
        }
        let new = self.publish(&mut generation, draft);
        Ok(self.account(&old, &new, None, ChangeKind::Reweighted))
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A backend by name, removed ones included (the newest with that name).
    fn find_any(&self, topo: &Topology, name: &str) -> Result<BackendId, RouterError> {
        (0..topo.backend_count())
            .rev()
            .map(|i| topo.backend(BackendId(i as u32)))
            .find(|b| &*b.name == name)
            .map(|b| b.id)
            .ok_or_else(|| RouterError::UnknownBackend(name.to_owned()))
    }

    fn publish(&self, generation: &mut u64, draft: TopologyDraft) -> Arc<Topology> {
        *generation += 1;
        let new = Arc::new(draft.finish(*generation));
        self.topology.store(Arc::clone(&new));
        new
    }

    /// Reassigns the sessions a change strands and counts what moved, what
    /// a stateless ring and modulo would have moved, and the ideal.
    fn account(&self, old: &Topology, new: &Topology, changed: Option<BackendId>, kind: ChangeKind) -> RemapSummary {
        let (mut sessions, mut moved, mut ring, mut modulo) = (0u64, 0u64, 0u64, 0u64);
        let mut stranded = Vec::new();
        for i in 0..self.sessions.shard_count() {
            let mut shard = self.sessions.shard(i);
            for s in shard.iter() {
                sessions += 1;
                ring += u64::from(old.ring_owner(s.position) != new.ring_owner(s.position));
                modulo += u64::from(old.modulo_owner(s.position) != new.modulo_owner(s.position));
                if !new.state(s.backend).keeps_sessions() {
                    stranded.push(s);
                }
            }
            for s in stranded.drain(..) {
                let Some(to) = new.ring_owner(s.position) else {
                    continue; // nothing can take it: it waits for a backend to return
                };
                if shard.reassign(s.fingerprint, to, true).is_some() {
                    moved += 1;
                    self.count_move(new, &s, to);
                }
            }
        }
        let summary = RemapSummary {
            backend: changed.map_or_else(|| "every backend".to_owned(), |id| new.backend(id).name.to_string()),
            kind,
            sessions,
            moved,
            ring,
            modulo,
            ideal: remap::ideal_share(old.serving().len(), new.serving().len()),
            backends_before: old.serving().len(),
            backends_after: new.serving().len(),
        };
        *self.stats.last_remap.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary.clone());
        self.events.emit(Event::Remap(summary.clone()));
        summary
    }
}

/// The bytes a key is hashed from, and their domain; `None` for keyless requests.
fn key_material<'k>(key: SessionKey<'k>, buf: &'k mut [u8; 16]) -> Option<(KeyDomain, &'k [u8])> {
    match key {
        SessionKey::Text(s) => Some((KeyDomain::Text, s.as_bytes())),
        SessionKey::Source(IpAddr::V4(ip)) => {
            buf[..4].copy_from_slice(&ip.octets());
            Some((KeyDomain::Ip, &buf[..4]))
        }
        SessionKey::Source(IpAddr::V6(ip)) => {
            *buf = ip.octets();
            Some((KeyDomain::Ip, &buf[..]))
        }
        SessionKey::Cookie { session, .. } => {
            buf[..8].copy_from_slice(&session.to_le_bytes());
            Some((KeyDomain::Cookie, &buf[..8]))
        }
        SessionKey::None | SessionKey::NewCookie => None,
    }
}

/// The display label of a key.
fn label_of(key: SessionKey<'_>, session_id: Option<u64>) -> KeyLabel {
    match (key, session_id) {
        (_, Some(id)) => KeyLabel::hex(id),
        (SessionKey::Text(s), _) => KeyLabel::new(s),
        (SessionKey::Source(ip), _) => {
            let mut buf = [0u8; 48];
            let mut w = &mut buf[..];
            let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
            let n = 48 - w.len();
            KeyLabel::new(std::str::from_utf8(&buf[..n]).unwrap_or(""))
        }
        _ => KeyLabel::default(),
    }
}
