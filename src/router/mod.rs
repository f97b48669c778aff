//! The Router: ringside's I/O-free brain. Backends and their states, the
//! hash ring, placements, affinity policy, the session tables and remap
//! accounting. It has no clock (time is passed in) and does no I/O, so the
//! proxy, the simulator and the experiments share it and tests drive it
//! deterministically.
//!
//! Requests read an immutable [`Topology`] snapshot without locks and lock
//! one session-table shard for a few hundred nanoseconds; topology changes
//! are serialized and publish a new snapshot atomically.
//!
//! Files: routing in `route`, topology changes in `changes`, what other
//! balancers taught through the session store in `sync`, the bookkeeping
//! every session change shares in `session` and `ledger`.

pub mod affinity;
pub mod backend;
mod changes;
pub mod event;
pub mod hash;
pub mod lb_cookie;
pub mod ledger;
pub mod moves;
pub mod placement;
pub mod probe;
pub mod remap;
pub mod ring;
mod route;
pub mod session;
mod sync;
pub mod topology;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::counter::Counter;

pub use backend::{Backend, BackendId, BackendSpec, BackendState};
pub use event::{Event, EventSink, NullSink, SessionEnd, Via};
pub use hash::KeyDomain;
pub use moves::{Moves, SessionMove};
pub use placement::Placement;
pub use remap::{ChangeKind, RemapSummary};
pub use ring::{Ring, VnodeHash};
pub use session::{SessionInfo, SessionName, SessionTable};
pub use sync::Adoption;
pub(crate) use sync::newer;
pub use topology::Topology;

use affinity::{Affinity, AffinityConfig, AffinityMode, RequestView};
use hash::Fingerprinter;
use lb_cookie::{CookieCodec, Protection};
use ledger::Ledger;
use placement::Placer;

/// The most backends a router holds at once (removed ones aside).
pub const MAX_BACKENDS: usize = 256;

/// The most virtual nodes the ring holds: beyond this a change is refused
/// (each costs memory and rebuild time on every topology change).
pub const MAX_VNODES: usize = 1_000_000;

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
    /// A backend name that is not `[A-Za-z0-9][A-Za-z0-9._-]{0,31}`.
    #[error("bad backend name {0:?}: use 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    BadName(String),
    /// A weight outside 1–100.
    #[error("bad weight {0:?}: use a whole number from 1 to 100")]
    BadWeight(String),
    /// A `--backend` value that does not parse, or an unusable address.
    #[error("bad backend {0}")]
    BadSpec(String),
    /// A name that is already in use.
    #[error("a backend named {0:?} already exists: names must be unique")]
    DuplicateName(String),
    /// No backend has that name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// The router holds [`MAX_BACKENDS`] already.
    #[error("there are {MAX_BACKENDS} backends already, the most ringside holds: remove one first")]
    TooManyBackends,
    /// The change would put more than [`MAX_VNODES`] on the ring.
    #[error(
        "the ring would hold {0} virtual nodes, more than the {MAX_VNODES} ringside allows: lower the weight or the vnodes"
    )]
    TooManyVnodes(usize),
    /// Nothing can take the request.
    #[error("no backend is available")]
    NoBackend,
    /// [`Router::route_cached`] found no session for the key: ask the
    /// session store about the proposal, then [`Router::route_agreed`].
    #[error("the session is not in the local table")]
    NotCached(Proposal),
}

/// Where the router would put a key its local table missed, for the session
/// store to confirm before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// The key's domain.
    pub domain: KeyDomain,
    /// The key's fingerprint.
    pub fingerprint: u64,
    /// The key's ring position.
    pub position: u32,
    /// The backend this balancer chose.
    pub backend: BackendId,
    /// How it chose it.
    pub via: Via,
    /// `Created` (placed), `Adopted` (the backend a balancer cookie named)
    /// or `Reassigned` (the cookie named a backend that left).
    pub outcome: Outcome,
}

/// What the session store made of a [`Proposal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// The store holds the proposal now, or needs nothing (a balancer
    /// cookie's own backend): it is stored here as proposed.
    Ours {
        /// The store's version of it (0 when not written).
        version: u32,
    },
    /// The session was in the store already: it is taken.
    Theirs {
        /// Its backend.
        backend: BackendId,
        /// The store's version of it.
        version: u32,
    },
    /// The store could not be asked: the key is placed as without a store,
    /// and the change waits to be written.
    Unknown,
}

/// Why a session is told to the store mirror as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Placed here without asking the store.
    Placed,
    /// A valid balancer cookie routed it and the table had lost it.
    Adopted,
    /// A backend's response set it: that backend is where it lives.
    Learned,
    /// Still in use (at most a few times per idle timeout).
    Refreshed,
}

/// Told of the active table's changes that other balancers must learn, to
/// share it through a session store. Called under a shard lock:
/// implementations only record and return.
pub trait SessionMirror: Send + Sync {
    /// The session `fingerprint` is on `backend`, for the reason `why`.
    fn stored(&self, domain: KeyDomain, fingerprint: u64, position: u32, backend: BackendId, why: Stored);
    /// The session moved to `to`: from `from` (its backend left, or a
    /// redispatch), or, with `None`, where the application put it.
    fn moved(&self, domain: KeyDomain, fingerprint: u64, position: u32, from: Option<BackendId>, to: BackendId);
    /// The session ended on purpose (logout).
    fn ended(&self, domain: KeyDomain, fingerprint: u64);
}

/// The session store a router mirrors its tables to, and the secret every
/// balancer sharing it keys fingerprints with.
pub struct Mirror<'a> {
    /// The shared cookie secret.
    pub shared_secret: &'a [u8],
    /// Where changes go.
    pub sink: Arc<dyn SessionMirror>,
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
    /// The most sessions kept per table; the least recently used go first.
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
    Text(&'a [u8]),
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

impl SessionKey<'_> {
    /// The table its session lives in; `None` for keyless requests.
    pub fn domain(&self) -> Option<KeyDomain> {
        match self {
            SessionKey::Text(_) => Some(KeyDomain::Text),
            SessionKey::Source(_) => Some(KeyDomain::Ip),
            SessionKey::Cookie { .. } | SessionKey::NewCookie => Some(KeyDomain::Cookie),
            SessionKey::None => None,
        }
    }
}

/// A request as the router reads it: its key, and the fingerprint of the
/// application session it carries (to follow a logout, or to place a new
/// session where the user is already logged in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey<'a> {
    /// What it routes by.
    pub key: SessionKey<'a>,
    /// The application session's fingerprint, when the request carries one.
    pub app_session: Option<u64>,
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
    /// The table of the session, when there is one.
    pub domain: Option<KeyDomain>,
}

impl Route {
    /// True when the response creates or moves the session (a cache must not
    /// keep it: the cookie it carries is one client's).
    pub fn changes_session(&self) -> bool {
        matches!(self.outcome, Outcome::Created | Outcome::Reassigned { .. }) || self.set_cookie
    }
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Sessions created.
    pub created: Counter,
    /// Sessions expired after their idle timeout.
    pub expired: Counter,
    /// Sessions evicted because the table was full.
    pub evicted: Counter,
    /// Sessions ended on purpose.
    pub ended: Counter,
    /// Sessions moved because their backend left.
    pub reassigned: Counter,
    /// Balancer cookies that failed verification.
    pub forged_cookies: Counter,
    /// Sessions taken in or moved from the session store.
    pub synced: Counter,
    /// Requests routed.
    pub routed: Counter,
    /// Requests for which no backend was available.
    pub unroutable: Counter,
    /// The last topology change's summary.
    pub last_remap: Mutex<Option<RemapSummary>>,
    /// The last topology change's sessions, sampled, with where each went.
    pub last_moves: Mutex<Option<Arc<Moves>>>,
}

fn get(c: &Counter) -> u64 {
    c.get()
}

fn inc(c: &Counter) {
    c.incr();
}

/// A plain copy of [`RouterStats`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Live sessions (of the table in force).
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

/// What an affinity switch did to the session tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinitySwitch {
    /// The mode before.
    pub from: AffinityMode,
    /// The mode now.
    pub to: AffinityMode,
    /// Sessions that route from now on (the new mode's table).
    pub kept: u64,
    /// Sessions of the old mode's table, kept aside (they route again if
    /// the mode comes back, until they expire).
    pub aside: u64,
}

impl std::fmt::Display for AffinitySwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "affinity is now {}", self.to)?;
        match self.to.domain() {
            Some(d) => write!(f, ": the {} {} known route from now on", self.kept, d.sessions_noun())?,
            None => f.write_str(": every request is placed afresh, no session is kept")?,
        }
        if let Some(d) = self.from.domain()
            && self.from.domain() != self.to.domain()
        {
            write!(
                f,
                "; {} {} are kept aside (they route again if you switch back)",
                self.aside,
                d.sessions_noun()
            )?;
        }
        Ok(())
    }
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
    /// One table per [`KeyDomain`], by [`KeyDomain::index`].
    tables: [SessionTable; KeyDomain::COUNT],
    fingerprinter: Fingerprinter,
    ledger: Arc<Ledger>,
    affinity: Affinity,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.config)
            .field("affinity", &self.affinity.mode())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no backends that sends events to `events`, in the
    /// default affinity mode (`lb-cookie`) with a random cookie key.
    pub fn new(config: RouterConfig, events: Arc<dyn EventSink>) -> Self {
        let codec = CookieCodec::new(lb_cookie::DEFAULT_COOKIE_NAME, Protection::Private, None)
            .expect("a generated key is long enough");
        Router::build(config, events, Affinity::new(AffinityConfig::default(), codec), None)
    }

    /// A router reading keys with `affinity`; with `mirror`, its tables are
    /// mirrored to a session store and fingerprints are keyed by the shared
    /// secret, so that every balancer sharing it agrees on them.
    pub fn build(
        config: RouterConfig,
        events: Arc<dyn EventSink>,
        affinity: Affinity,
        mirror: Option<Mirror<'_>>,
    ) -> Self {
        let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
        let fingerprinter = match &mirror {
            Some(m) => Fingerprinter::from_shared_secret(m.shared_secret),
            None => Fingerprinter::new(hash::mix64(seed ^ 0x6a09_e667_f3bc_c908)),
        };
        let ledger = Arc::new(Ledger::new(events, mirror.map(|m| m.sink)));
        ledger.set_active(affinity.mode().domain());
        let table = |d| SessionTable::new(d, config.max_sessions, config.idle_timeout_secs, Arc::clone(&ledger));
        Router {
            placer: Placer::new(config.placement, config.bound_factor, seed),
            tables: KeyDomain::ALL.map(table),
            fingerprinter,
            topology: ArcSwap::from_pointee(Topology::default()),
            vnodes: std::sync::atomic::AtomicU32::new(config.vnodes_per_weight),
            changes: Mutex::new(0),
            ledger,
            affinity,
            config,
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

    /// The table whose sessions route now; `None` in affinity `none`.
    pub fn sessions(&self) -> Option<&SessionTable> {
        self.ledger.active().map(|d| self.table(d))
    }

    /// Live sessions that route now.
    pub fn session_count(&self) -> u64 {
        self.sessions().map_or(0, SessionTable::len)
    }

    /// The table of `domain`.
    pub fn table(&self, domain: KeyDomain) -> &SessionTable {
        &self.tables[domain.index()]
    }

    /// Live sessions on `backend` that route now.
    pub fn sessions_on(&self, backend: &Backend) -> u64 {
        self.ledger.active().map_or(0, |d| backend.counters.sessions(d))
    }

    /// The counters.
    pub fn stats(&self) -> &RouterStats {
        &self.ledger.stats
    }

    /// A copy of the counters.
    pub fn stats_snapshot(&self) -> StatsSnapshot {
        let s = &self.ledger.stats;
        StatsSnapshot {
            sessions: self.session_count(),
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

    /// The last topology change's summary.
    pub fn last_remap(&self) -> Option<RemapSummary> {
        self.ledger
            .stats
            .last_remap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last topology change's sessions (a sample) and where each went.
    pub fn last_moves(&self) -> Option<Arc<Moves>> {
        self.ledger
            .stats
            .last_moves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        self.placer.place(
            &self.topology.load(),
            position,
            self.ledger.active(),
            self.session_count(),
        )
    }

    /// A fresh random 64-bit value (session ids).
    pub fn random(&self) -> u64 {
        self.placer.random()
    }

    /// The affinity extractor and the mode in force.
    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// Switches the affinity mode: the table of the new mode's keys routes
    /// from now on; the old one is kept aside, uncounted, until it expires.
    pub fn set_affinity(&self, mode: AffinityMode) -> AffinitySwitch {
        let from = self.affinity.mode();
        self.affinity.set_mode(mode);
        self.ledger.set_active(mode.domain());
        AffinitySwitch {
            from,
            to: mode,
            kept: mode.domain().map_or(0, |d| self.table(d).len()),
            aside: from.domain().map_or(0, |d| self.table(d).len()),
        }
    }

    /// Reads a request's key under the mode in force; a balancer cookie that
    /// fails verification is counted as forged.
    pub fn read_request<'a>(&self, view: &RequestView<'a>) -> RequestKey<'a> {
        let x = self.affinity.extract(view, &self.topology.load());
        if x.forged {
            self.note_forged_cookie();
        }
        RequestKey {
            key: x.key,
            app_session: x
                .app_session
                .map(|id| self.fingerprinter.fingerprint(KeyDomain::Text, id)),
        }
    }

    /// Counts a balancer cookie that failed verification.
    pub fn note_forged_cookie(&self) {
        inc(&self.ledger.stats.forged_cookies);
        self.ledger.events.emit(Event::ForgedCookie);
    }

    /// The fingerprint of `key` (as the tables and the store know it).
    pub fn fingerprint(&self, key: SessionKey<'_>) -> Option<u64> {
        let mut buf = [0u8; 16];
        let (domain, bytes) = route::key_material(key, &mut buf)?;
        Some(self.fingerprinter.fingerprint(domain, bytes))
    }

    /// Forgets every session of every table, the counters and the last
    /// remap (a lesson starts afresh; the topology stays). Returns how many
    /// sessions were forgotten.
    pub fn clear_sessions(&self) -> u64 {
        let topo = self.topology.load();
        let n = self.tables.iter().map(|t| t.clear(&topo)).sum();
        let s = &self.ledger.stats;
        for c in [
            &s.created,
            &s.expired,
            &s.evicted,
            &s.ended,
            &s.reassigned,
            &s.forged_cookies,
            &s.synced,
            &s.routed,
            &s.unroutable,
        ] {
            c.reset();
        }
        for b in topo.members() {
            b.counters.requests.reset();
        }
        *self.ledger.stats.last_remap.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.ledger.stats.last_moves.lock().unwrap_or_else(|e| e.into_inner()) = None;
        n
    }

    /// Expires sessions idle past the timeout at `now` in every table;
    /// returns how many of the active table's expired.
    pub fn sweep(&self, now: Timestamp) -> u64 {
        let topo = self.topology.load();
        let mut active = 0;
        for t in &self.tables {
            let n = t.sweep(&topo, now.secs());
            if self.ledger.is_active(t.domain()) {
                active = n;
            }
        }
        active
    }
}
