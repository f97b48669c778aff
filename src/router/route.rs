//! Routing one request: the session table first, then the placement; a
//! redispatch when its backend cannot be reached; what a response teaches.

use std::sync::Arc;

use http::HeaderMap;

use super::Stored;
use super::affinity::{self, Lesson};
use super::hash::KeyDomain;
use super::session::{Lookup, MoveKind, NewSession, Origin, SessionName};
use super::topology::Topology;
use super::{
    Agreement, BackendId, Event, Outcome, Proposal, RequestKey, Route, Router, RouterError, SessionKey, Timestamp, Via,
    inc,
};

/// What routing does with a key the local table misses.
#[derive(Clone, Copy)]
enum OnMiss<'p> {
    /// Places it and stores the session (told to the store mirror).
    Place,
    /// Stores nothing: answers [`RouterError::NotCached`] with a proposal.
    Propose,
    /// Stores what the session store agreed to.
    Agreed(&'p Proposal, Agreement),
}

impl Router {
    /// Routes one request by `key` at time `now`.
    pub fn route(&self, key: SessionKey<'_>, now: Timestamp) -> Result<Route, RouterError> {
        self.route_or_miss(RequestKey { key, app_session: None }, now, OnMiss::Place)
    }

    /// Routes a request as [`Router::read_request`] read it: a new session
    /// goes where the client's application session already lives, if it does.
    pub fn route_request(&self, request: &RequestKey<'_>, now: Timestamp) -> Result<Route, RouterError> {
        self.route_or_miss(*request, now, OnMiss::Place)
    }

    /// Like [`Router::route_request`], but a key with no session in the local
    /// table is not stored: the answer is [`RouterError::NotCached`] with
    /// where it would go, for the session store to confirm. New
    /// balancer-cookie sessions are placed as usual: their cookie routes on
    /// its own.
    pub fn route_cached(&self, request: &RequestKey<'_>, now: Timestamp) -> Result<Route, RouterError> {
        self.route_or_miss(*request, now, OnMiss::Propose)
    }

    /// Routes a request whose key [`Router::route_cached`] missed, as the
    /// session store agreed: the proposal stored untold, another balancer's
    /// backend taken, or — store unknown — placed as by
    /// [`Router::route_request`].
    pub fn route_agreed(
        &self,
        request: &RequestKey<'_>,
        now: Timestamp,
        proposal: &Proposal,
        agreement: Agreement,
    ) -> Result<Route, RouterError> {
        self.route_or_miss(*request, now, OnMiss::Agreed(proposal, agreement))
    }

    /// The route again after the session store settled a move the route made:
    /// when another balancer had moved the session first, it now lives on
    /// that balancer's choice, and the request goes there.
    pub fn rehome(&self, route: Route) -> Route {
        let (Some(fingerprint), Some(domain)) = (route.fingerprint, route.domain) else {
            return route;
        };
        let Some(home) = self.table(domain).get(fingerprint).map(|s| s.backend) else {
            return route;
        };
        let topo = self.topology.load();
        if home == route.backend.id || !topo.state(home).keeps_sessions() {
            return route;
        }
        let backend = Arc::clone(topo.backend(home));
        backend.counters.requests.incr();
        Route {
            backend,
            set_cookie: route.session_id.is_some(),
            ..route
        }
    }

    fn route_or_miss(
        &self,
        request: RequestKey<'_>,
        now: Timestamp,
        on_miss: OnMiss<'_>,
    ) -> Result<Route, RouterError> {
        let topo = self.topology.load();
        let result = self.route_in(&topo, request, now, on_miss);
        let stats = &self.ledger.stats;
        match &result {
            Ok(r) => {
                inc(&stats.routed);
                r.backend.counters.requests.incr();
                if self.ledger.events.wants_routed() {
                    self.ledger.events.emit(Event::Routed {
                        session: route_name(request.key, r),
                        position: r.position,
                        backend: r.backend.id,
                        via: r.via,
                        at: now,
                    });
                }
            }
            Err(RouterError::NotCached(_)) => {}
            Err(_) => inc(&stats.unroutable),
        }
        result
    }

    fn route_in(
        &self,
        topo: &Topology,
        request: RequestKey<'_>,
        now: Timestamp,
        on_miss: OnMiss<'_>,
    ) -> Result<Route, RouterError> {
        let key = request.key;
        let mut buf = [0u8; 16];
        let (session_id, claim) = match key {
            SessionKey::None => {
                // A keyless request (a login, say) is placed by the load of
                // the sessions in force, where its session will live.
                let position = self.placer.random() as u32;
                let id = self
                    .placer
                    .place(topo, position, self.ledger.active(), self.session_count())
                    .ok_or(RouterError::NoBackend)?;
                return Ok(Route {
                    backend: Arc::clone(topo.backend(id)),
                    via: Via::Placement,
                    outcome: Outcome::Stateless,
                    position,
                    session_id: None,
                    set_cookie: false,
                    fingerprint: None,
                    domain: None,
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
        let table = self.table(domain);
        let position = super::hash::key_position(bytes);
        let fingerprint = self.fingerprinter.fingerprint(domain, bytes);
        let address = match key {
            SessionKey::Source(ip) => Some(ip),
            _ => None,
        };
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
                domain: Some(domain),
            }
        };

        let mut shard = table.shard_for(fingerprint);
        let lookup = if fresh {
            Lookup::Missing
        } else {
            shard.lookup(fingerprint, now_s, table.idle_secs())
        };
        match lookup {
            Lookup::Live {
                backend,
                moved_from,
                last_seen,
            } if topo.state(backend).keeps_sessions() => {
                if let Some(mirror) = self.ledger.mirror()
                    && refresh_due(table.idle_secs(), last_seen, now_s)
                {
                    mirror.stored(domain, fingerprint, position, backend, Stored::Refreshed);
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
                    table.record_move(topo, &info, to, MoveKind::Local);
                }
                return Ok(route(
                    to,
                    Via::Reassignment,
                    Outcome::Reassigned { from: Some(backend) },
                ));
            }
            Lookup::Expired(info) => table.record_end(topo, &info, super::SessionEnd::Expired, false),
            Lookup::Missing => {}
        }
        if let OnMiss::Agreed(p, agreement) = on_miss
            && p.fingerprint == fingerprint
            && p.domain == domain
        {
            let agreed = match agreement {
                Agreement::Ours { version } => Some((p.backend, p.via, p.outcome, version)),
                Agreement::Theirs { backend, version } => Some((backend, Via::Table, Outcome::Kept, version)),
                Agreement::Unknown => None,
            };
            if let Some((to, via, outcome, version)) = agreed
                && topo.state(to).keeps_sessions()
            {
                let new = NewSession {
                    fingerprint,
                    position,
                    backend: to,
                    address,
                    now: now_s,
                    tell_store: false,
                    version,
                };
                table.create(&mut shard, topo, new, origin_of(outcome));
                return Ok(route(to, via, outcome));
            }
        }

        let placed = || {
            self.placer
                .place(topo, position, Some(domain), table.len())
                .ok_or(RouterError::NoBackend)
        };
        let (to, via, outcome) = match claim {
            Some(b) if topo.state(b).keeps_sessions() => (b, Via::Cookie, Outcome::Adopted),
            Some(b) => (placed()?, Via::Reassignment, Outcome::Reassigned { from: Some(b) }),
            None => match self.app_session_home(topo, domain, request.app_session) {
                Some(home) => (home, Via::AppSession, Outcome::Created),
                None => (placed()?, Via::Placement, Outcome::Created),
            },
        };
        if matches!(on_miss, OnMiss::Propose) && !fresh {
            return Err(RouterError::NotCached(Proposal {
                domain,
                fingerprint,
                position,
                backend: to,
                via,
                outcome,
            }));
        }
        let new = NewSession {
            fingerprint,
            position,
            backend: to,
            address,
            now: now_s,
            tell_store: true,
            version: 0,
        };
        table.create(&mut shard, topo, new, origin_of(outcome));
        Ok(route(to, via, outcome))
    }

    /// Where the client's application session lives, for a new session of
    /// another table: then the user stays where they are logged in.
    fn app_session_home(&self, topo: &Topology, domain: KeyDomain, app_session: Option<u64>) -> Option<BackendId> {
        if domain == KeyDomain::Text {
            return None;
        }
        let home = self.table(KeyDomain::Text).get(app_session?)?.backend;
        topo.state(home).takes_new_sessions().then_some(home)
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
        if let (Some(fingerprint), Some(domain)) = (route.fingerprint, route.domain) {
            let table = self.table(domain);
            let moved = table.shard_for(fingerprint).reassign(fingerprint, to, false);
            if let Some(info) = moved {
                table.record_move(&topo, &info, to, MoveKind::Local);
                if self.ledger.is_active(domain) {
                    route
                        .backend
                        .counters
                        .redispatched_away
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let backend = Arc::clone(topo.backend(to));
        backend.counters.requests.incr();
        if self.ledger.events.wants_routed() {
            self.ledger.events.emit(Event::Routed {
                session: route.fingerprint.map(|fingerprint| SessionName {
                    fingerprint,
                    address: None,
                }),
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
            domain: route.domain,
        })
    }

    /// Takes in what a backend's response says about the application's
    /// session, under the affinity mode in force (see [`affinity`]): a new
    /// session is bound to `backend`, a deleted one (logout) ends the
    /// request's application session — never an address's or a balancer
    /// cookie's session. Returns the fingerprint of the session it bound,
    /// moved or ended, when that session is in the table in force: the
    /// response must not leave before the session store has it. `now` is
    /// read only when there is something to learn.
    pub fn learn_from_response(
        &self,
        headers: &HeaderMap,
        app_session: Option<u64>,
        backend: BackendId,
        now: impl FnOnce() -> Timestamp,
    ) -> Option<u64> {
        let mode = self.affinity.mode();
        let changed = match affinity::lesson(mode, headers, &self.affinity.config().app_cookie)? {
            Lesson::Bind(id) => self.bind_key(SessionKey::Text(id), backend, now()),
            Lesson::End => {
                let fingerprint = app_session?;
                self.table(KeyDomain::Text)
                    .end(&self.topology.load(), fingerprint, true);
                Some(fingerprint)
            }
        };
        changed.filter(|_| self.ledger.is_active(KeyDomain::Text))
    }

    /// Binds `key` to `backend`, as when a response sets the application's
    /// session cookie: a new session, or a session moved to where the
    /// application now keeps it. Returns whether the table changed.
    pub fn bind(&self, key: SessionKey<'_>, backend: BackendId, now: Timestamp) -> bool {
        self.bind_key(key, backend, now).is_some()
    }

    /// [`Router::bind`], answering the fingerprint of a changed session.
    fn bind_key(&self, key: SessionKey<'_>, backend: BackendId, now: Timestamp) -> Option<u64> {
        let topo = self.topology.load();
        if !topo.state(backend).keeps_sessions() {
            return None;
        }
        let mut buf = [0u8; 16];
        let (domain, bytes) = key_material(key, &mut buf)?;
        let table = self.table(domain);
        let fingerprint = self.fingerprinter.fingerprint(domain, bytes);
        let position = super::hash::key_position(bytes);
        let mut shard = table.shard_for(fingerprint);
        match shard.lookup(fingerprint, now.secs(), table.idle_secs()) {
            Lookup::Live { backend: current, .. } if current == backend => None,
            Lookup::Live { .. } => {
                if let Some(info) = shard.reassign(fingerprint, backend, false) {
                    table.record_move(&topo, &info, backend, MoveKind::Learned);
                }
                Some(fingerprint)
            }
            lookup => {
                if let Lookup::Expired(info) = lookup {
                    table.record_end(&topo, &info, super::SessionEnd::Expired, false);
                }
                let address = match key {
                    SessionKey::Source(ip) => Some(ip),
                    _ => None,
                };
                let new = NewSession {
                    fingerprint,
                    position,
                    backend,
                    address,
                    now: now.secs(),
                    tell_store: true,
                    version: 0,
                };
                table.create(&mut shard, &topo, new, Origin::Learned);
                Some(fingerprint)
            }
        }
    }

    /// Ends the session of `key` (logout). Returns whether there was one.
    pub fn end_session(&self, key: SessionKey<'_>) -> bool {
        let mut buf = [0u8; 16];
        let Some((domain, bytes)) = key_material(key, &mut buf) else {
            return false;
        };
        let fingerprint = self.fingerprinter.fingerprint(domain, bytes);
        self.table(domain).end(&self.topology.load(), fingerprint, true)
    }
}

/// How a session stored on a route's outcome is recorded.
fn origin_of(outcome: Outcome) -> Origin {
    match outcome {
        Outcome::Reassigned { from: Some(from) } => Origin::Moved(from),
        Outcome::Adopted => Origin::Adopted,
        Outcome::Kept => Origin::Synced,
        _ => Origin::New,
    }
}

/// A session in use is re-announced to the mirror when its last request
/// was in an earlier quarter of the idle timeout, so the store's expiry
/// keeps pace with traffic at a few writes per session per timeout.
fn refresh_due(idle_secs: u32, last_seen: u32, now: u32) -> bool {
    let quarter = (idle_secs / 4).max(1);
    last_seen / quarter != now / quarter
}

/// The bytes a key is hashed from, and their domain; `None` for keyless requests.
pub(super) fn key_material<'k>(key: SessionKey<'k>, buf: &'k mut [u8; 16]) -> Option<(KeyDomain, &'k [u8])> {
    match key {
        SessionKey::Text(s) => Some((KeyDomain::Text, s)),
        SessionKey::Source(std::net::IpAddr::V4(ip)) => {
            buf[..4].copy_from_slice(&ip.octets());
            Some((KeyDomain::Ip, &buf[..4]))
        }
        SessionKey::Source(std::net::IpAddr::V6(ip)) => {
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

/// How a routed request's session is named in events.
fn route_name(key: SessionKey<'_>, route: &Route) -> Option<SessionName> {
    let fingerprint = route.fingerprint?;
    Some(SessionName {
        fingerprint,
        address: match key {
            SessionKey::Source(ip) => Some(ip),
            _ => None,
        },
    })
}
