//! Probing a key: any key text read as an affinity mode would read it, and
//! what the router would do with it — its hash and ring position, the
//! clockwise walk of virtual nodes to the owner with why each vnode before
//! it was passed by, and where the session table routes it if a session
//! exists. Nothing is touched: no session is created, moved or refreshed.
//! The report names sessions by their fingerprint, never by their key.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::affinity::AffinityMode;
use super::backend::BackendState;
use super::placement::{Placement, bounded_capacity};
use super::topology::Topology;
use super::{BackendId, Router, SessionKey, SessionName, Timestamp, Via};

/// The most vnodes a walk lists before the owner; the rest are counted.
pub const WALK_LIMIT: usize = 64;

/// Why the walk passed a vnode by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Skip {
    /// Its backend fails health checks.
    Down,
    /// Its backend was stopped by the operator.
    Killed,
    /// Its backend is draining: it keeps its sessions, takes no new ones.
    Draining,
    /// Its backend's drain ended: out of the pool.
    Drained,
    /// Its backend is out for good (never on the ring; listed for completeness).
    Removed,
    /// Bounded loads: its backend holds `sessions`, at or over `bound`.
    Full {
        /// Sessions it holds.
        sessions: u64,
        /// `ceil(c × (live sessions + 1) / backends)`.
        bound: u64,
    },
}

impl Skip {
    /// Why a backend in `state` takes no new key, if it does not.
    pub fn of_state(state: BackendState) -> Option<Skip> {
        match state {
            BackendState::Up => None,
            BackendState::Down => Some(Skip::Down),
            BackendState::Killed => Some(Skip::Killed),
            BackendState::Draining => Some(Skip::Draining),
            BackendState::Drained => Some(Skip::Drained),
            BackendState::Removed => Some(Skip::Removed),
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Down => f.write_str("down (failing health checks)"),
            Skip::Killed => f.write_str("killed"),
            Skip::Draining => f.write_str("draining (keeps its sessions, takes no new ones)"),
            Skip::Drained => f.write_str("drained (out of the pool)"),
            Skip::Removed => f.write_str("removed"),
            Skip::Full { sessions, bound } => write!(f, "full: {sessions} sessions, bound {bound}"),
        }
    }
}

/// One virtual node on the walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalkStep {
    /// Its index in clockwise order.
    pub index: usize,
    /// Its position on the 2^32 circle.
    pub position: u32,
    /// Its label, `"<backend>-<i>"`.
    pub vnode: String,
    /// Its backend.
    pub backend: String,
    /// Why it was passed by; `None` for the owner.
    pub skip: Option<Skip>,
}

/// The clockwise walk from a position to its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Walk {
    /// The vnodes passed by (at most [`WALK_LIMIT`]), then the owner's.
    pub steps: Vec<WalkStep>,
    /// Vnodes passed by beyond those listed.
    pub unlisted: usize,
    /// The owning vnode; `None` when no backend takes the key.
    pub owner: Option<WalkStep>,
}

/// Walks `topo`'s ring clockwise from `position` to the first vnode whose
/// backend `skip` lets through. Pure: the ring and `skip` decide.
pub fn walk(topo: &Topology, position: u32, mut skip: impl FnMut(BackendId) -> Option<Skip>) -> Walk {
    let ring = topo.ring();
    let mut out = Walk::default();
    let Some(start) = ring.successor(position) else {
        return out;
    };
    for k in 0..ring.len() {
        let index = (start + k) % ring.len();
        let Some(v) = ring.vnode(index) else { break };
        let name = &topo.backend(v.owner).name;
        let step = WalkStep {
            index,
            position: v.position,
            vnode: match topo.vnode_number(v.owner, v.position) {
                Some(i) => format!("{name}-{i}"),
                None => name.to_string(),
            },
            backend: name.to_string(),
            skip: skip(v.owner),
        };
        if step.skip.is_none() {
            out.steps.push(step.clone());
            out.owner = Some(step);
            break;
        }
        if out.steps.len() < WALK_LIMIT {
            out.steps.push(step);
        } else {
            out.unlisted += 1;
        }
    }
    out
}

/// A session the table holds for the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSeen {
    /// Its name: a short fingerprint, or the client address.
    pub name: String,
    /// The backend the table holds it on.
    pub backend: String,
    /// Times it was moved because its backend left.
    pub reassignments: u16,
}

/// Where a request with the key would go now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// The backend.
    pub backend: String,
    /// How it would be found.
    pub via: Via,
    /// It is not the ring walk's owner (sessions stay where they were placed).
    pub differs_from_owner: bool,
}

/// What the router would do with one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    /// The affinity mode the key was read as.
    pub mode: AffinityMode,
    /// What it was read as, in words.
    pub read_as: &'static str,
    /// What was hashed, in words.
    pub hashed: String,
    /// CRC-32 (IEEE) of those bytes: the key's position on the 2^32 ring.
    pub position: u32,
    /// The position as an angle, degrees clockwise from the top.
    pub degrees: f64,
    /// The placement in force.
    pub placement: Placement,
    /// The clockwise walk under that placement (under `ring` for the
    /// placements that do not walk the ring).
    pub walk: Walk,
    /// What a modulo balancer picks: `position % backends taking new keys`.
    pub modulo: Option<String>,
    /// The backend a balancer cookie names (mode `lb-cookie`).
    pub cookie_names: Option<String>,
    /// The key's session, if the table holds one.
    pub session: Option<SessionSeen>,
    /// Where a request with the key would go now.
    pub routes_to: Option<Destination>,
    /// Anything else worth saying.
    pub notes: Vec<String>,
}

/// A key that cannot be probed in the mode asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Mode `none` routes by nothing.
    #[error("affinity none routes by no key: every request is placed afresh")]
    NoKey,
    /// An empty key.
    #[error("the key is empty")]
    Empty,
    /// `source-ip` needs an address.
    #[error("source-ip routes by the client address: give an IP address, e.g. 203.0.113.9")]
    NotAnAddress,
    /// `lb-cookie` needs a cookie this balancer sealed.
    #[error(
        "not a balancer cookie this balancer sealed (wrong secret, tampered or not one): give the cookie's value as the browser sends it"
    )]
    NotOurCookie,
}

impl Router {
    /// Probes `key` as `mode` (the mode in force when `None`) reads it, at
    /// router time `now`. Reads the topology and the tables; changes nothing.
    pub fn probe(&self, key: &[u8], mode: Option<AffinityMode>, now: Timestamp) -> Result<Probe, ProbeError> {
        if key.is_empty() {
            return Err(ProbeError::Empty);
        }
        let mode = mode.unwrap_or_else(|| self.affinity.mode());
        let topo = self.topology.load_full();
        let (read_as, session_key, hashed) = match mode {
            AffinityMode::None => return Err(ProbeError::NoKey),
            AffinityMode::AppCookie | AffinityMode::Header | AffinityMode::Query => (
                "an application session id (app-cookie, header and query read it alike)",
                SessionKey::Text(key),
                format!("crc32 of its {} bytes", key.len()),
            ),
            AffinityMode::SourceIp => {
                let ip: IpAddr = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| k.trim().parse().ok())
                    .ok_or(ProbeError::NotAnAddress)?;
                let bytes = if ip.is_ipv4() { 4 } else { 16 };
                (
                    "a client address",
                    SessionKey::Source(ip),
                    format!("crc32 of the address's {bytes} bytes"),
                )
            }
            AffinityMode::LbCookie => {
                let claim = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| self.affinity.codec().decode(k.trim()))
                    .ok_or(ProbeError::NotOurCookie)?;
                (
                    "a balancer cookie",
                    SessionKey::Cookie {
                        session: claim.session,
                        backend: topo.by_tag(claim.tag),
                    },
                    "crc32 of the session id sealed in the cookie (8 bytes)".to_owned(),
                )
            }
        };
        let mut buf = [0u8; 16];
        let (domain, bytes) = super::route::key_material(session_key, &mut buf).ok_or(ProbeError::NoKey)?;
        let position = super::hash::key_position(bytes);
        let fingerprint = self.fingerprinter.fingerprint(domain, bytes);
        let name = |id: BackendId| topo.backend(id).name.to_string();
        let table = self.table(domain);
        let placement = self.placement();
        let up = topo.available().len();
        let live = table.len();
        let bounded = placement == Placement::BoundedRing;
        let walk = walk(&topo, position, |id| {
            let state = Skip::of_state(topo.state(id));
            let sessions = topo.backend(id).counters.sessions(domain);
            match state {
                None if bounded && self.placer.is_full(sessions, live, up) => Some(Skip::Full {
                    sessions,
                    bound: bounded_capacity(live, up, self.placer.bound_factor()),
                }),
                other => other,
            }
        });
        let owner = walk.owner.as_ref().map(|o| o.backend.clone());
        let modulo = (up > 0).then(|| name(topo.available()[position as usize % up]));
        let claim = match session_key {
            SessionKey::Cookie { backend, .. } => backend,
            _ => None,
        };
        let now_s = now.secs();
        let session = table
            .get(fingerprint)
            .filter(|s| now_s.saturating_sub(s.last_seen_secs) < table.idle_secs());
        let mut notes = Vec::new();
        if !matches!(placement, Placement::Ring | Placement::BoundedRing) {
            notes.push(format!(
                "placement {placement} does not walk the ring for new keys; the walk shows what ring would do"
            ));
        }
        if self.ledger.active() != Some(domain) {
            notes.push(format!(
                "the {} are not the ones that route now (affinity is {})",
                domain.sessions_noun(),
                self.affinity.mode()
            ));
        }
        let placed = match placement {
            Placement::Ring | Placement::BoundedRing => owner.clone(),
            Placement::IpModulo => modulo.clone(),
            other => {
                notes.push(format!(
                    "a new session's backend is not decided by the key under {other}: it takes turns or looks at load"
                ));
                None
            }
        };
        let (backend, via) = match (&session, claim) {
            (Some(s), _) if topo.state(s.backend).keeps_sessions() => (Some(name(s.backend)), Via::Table),
            (Some(s), _) => {
                notes.push(format!(
                    "its backend {} left: the next request moves the session clockwise",
                    name(s.backend)
                ));
                (topo.ring_owner(position).map(name), Via::Reassignment)
            }
            (None, Some(b)) if topo.state(b).keeps_sessions() => (Some(name(b)), Via::Cookie),
            (None, Some(b)) => {
                notes.push(format!(
                    "the cookie names {}, which left: a new session is placed",
                    name(b)
                ));
                (placed, Via::Reassignment)
            }
            (None, None) => (placed, Via::Placement),
        };
        let routes_to = backend.map(|backend| Destination {
            differs_from_owner: owner.as_ref() != Some(&backend),
            backend,
            via,
        });
        if let (Some(d), Some(o)) = (&routes_to, &owner)
            && d.differs_from_owner
            && d.via == Via::Table
        {
            notes.push(format!(
                "the session stays on {} although the walk now ends at {o}: sessions stay where they were placed",
                d.backend
            ));
        }
        Ok(Probe {
            mode,
            read_as,
            hashed,
            position,
            degrees: f64::from(position) * 360.0 / 4_294_967_296.0,
            placement,
            walk,
            modulo,
            cookie_names: claim.map(name),
            session: session.map(|s| SessionSeen {
                name: SessionName {
                    fingerprint: s.fingerprint,
                    address: s.address,
                }
                .to_string(),
                backend: name(s.backend),
                reassignments: s.reassignments,
            }),
            routes_to,
            notes,
        })
    }
}

impl fmt::Display for Probe {
    /// The walk as text, one vnode a line, for `ringside ring --probe`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "read as {}", self.read_as)?;
        writeln!(
            f,
            "hash: {} = {:#010x} → position {} ({:.1}° clockwise from the top)",
            self.hashed,
            self.position,
            self.position,
            (self.degrees * 10.0).floor() / 10.0
        )?;
        writeln!(f, "walk clockwise under {}:", self.placement)?;
        for s in &self.walk.steps {
            let verdict = match &s.skip {
                Some(why) => format!("skipped: {} is {why}", s.backend),
                None => "owner".to_owned(),
            };
            writeln!(
                f,
                "  vnode #{:<6} {:<14} at {:>10}  {verdict}",
                s.index, s.vnode, s.position
            )?;
        }
        if self.walk.unlisted > 0 {
            writeln!(f, "  … and {} more skipped before the owner", self.walk.unlisted)?;
        }
        match &self.walk.owner {
            Some(o) => writeln!(f, "owner: {} (vnode {})", o.backend, o.vnode)?,
            None => writeln!(f, "owner: none — no backend takes new keys")?,
        }
        if let Some(m) = &self.modulo {
            writeln!(f, "modulo (position % backends taking new keys) would pick: {m}")?;
        }
        if let Some(c) = &self.cookie_names {
            writeln!(f, "the cookie names: {c}")?;
        }
        match &self.session {
            Some(s) => writeln!(
                f,
                "session {} on {} (moved {} times)",
                s.name, s.backend, s.reassignments
            )?,
            None => writeln!(f, "no session for this key yet")?,
        }
        if let Some(d) = &self.routes_to {
            let via = serde_json::to_value(d.via)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let differs = if d.differs_from_owner {
                ", not the walk's owner"
            } else {
                ""
            };
            writeln!(f, "a request now goes to {} by {via}{differs}", d.backend)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::router::{BackendSpec, NullSink, RouterConfig};

    fn router(placement: Placement) -> Router {
        let r = Router::new(
            RouterConfig {
                placement,
                seed: Some(5),
                ..RouterConfig::default()
            },
            Arc::new(NullSink),
        );
        r.set_affinity(AffinityMode::AppCookie);
        for i in 1..=3u16 {
            let spec = BackendSpec::new(&format!("api-{i}"), ([127, 0, 0, 1], 9000 + i).into(), 1).unwrap();
            r.add_backend(&spec).unwrap();
        }
        r
    }

    /// The first key `prefix-<n>` whose ring walk starts at a vnode of `backend`.
    fn key_starting_at(r: &Router, prefix: &str, backend: &str) -> String {
        let topo = r.topology();
        (0..10_000)
            .map(|i| format!("{prefix}-{i}"))
            .find(|k| {
                let start = topo.ring().successor(crate::router::hash::key_position(k.as_bytes()));
                let v = topo.ring().vnode(start.unwrap()).unwrap();
                &*topo.backend(v.owner).name == backend
            })
            .unwrap()
    }

    #[test]
    fn a_key_whose_owner_is_down_shows_the_skip_and_where_its_session_went() {
        let r = router(Placement::Ring);
        let key = key_starting_at(&r, "user", "api-2");
        let before = r.probe(key.as_bytes(), None, Timestamp(0)).unwrap();
        assert_eq!(before.walk.steps.len(), 1);
        assert_eq!(before.walk.owner.as_ref().unwrap().backend, "api-2");
        assert!(before.walk.owner.as_ref().unwrap().vnode.starts_with("api-2-"));
        assert!(before.session.is_none());
        r.route(SessionKey::Text(key.as_bytes()), Timestamp(0)).unwrap();
        r.set_state("api-2", BackendState::Down).unwrap();

        let p = r.probe(key.as_bytes(), None, Timestamp(0)).unwrap();
        assert_eq!(p.position, crc32fast::hash(key.as_bytes()));
        let first = &p.walk.steps[0];
        assert_eq!((first.backend.as_str(), first.skip), ("api-2", Some(Skip::Down)));
        let owner = p.walk.owner.clone().unwrap();
        assert_ne!(owner.backend, "api-2");
        assert_eq!(p.walk.steps.last(), Some(&owner));
        assert!(
            p.walk.steps[..p.walk.steps.len() - 1]
                .iter()
                .all(|s| s.skip == Some(Skip::Down))
        );
        let placed = r.place(p.position).unwrap();
        assert_eq!(
            &*r.topology().backend(placed).name,
            owner.backend,
            "the probe agrees with the router"
        );
        let session = p.session.clone().unwrap();
        assert_eq!(
            (session.backend.as_str(), session.reassignments),
            (owner.backend.as_str(), 1)
        );
        let to = p.routes_to.clone().unwrap();
        assert_eq!(
            (to.backend, to.via, to.differs_from_owner),
            (owner.backend, Via::Table, false)
        );
        let text = p.to_string();
        assert!(
            text.contains("skipped: api-2 is down (failing health checks)"),
            "{text}"
        );
        assert!(!text.contains(&key), "the report does not repeat the key");
    }

    #[test]
    fn bounded_ring_skips_a_full_backend_with_its_load_and_the_bound() {
        let r = router(Placement::Ring);
        // Ten sessions on api-1 only: under bounded loads it is then full.
        for i in 0..10 {
            let key = key_starting_at(&r, &format!("crowd{i}"), "api-1");
            let route = r.route(SessionKey::Text(key.as_bytes()), Timestamp(0)).unwrap();
            assert_eq!(&*route.backend.name, "api-1");
        }
        r.set_placement(Placement::BoundedRing);
        let key = key_starting_at(&r, "late", "api-1");
        let sessions_before = r.session_count();
        let p = r.probe(key.as_bytes(), None, Timestamp(0)).unwrap();
        let bound = bounded_capacity(10, 3, 1.25);
        assert_eq!(bound, 5);
        assert_eq!(p.walk.steps[0].skip, Some(Skip::Full { sessions: 10, bound }));
        assert!(p.to_string().contains("skipped: api-1 is full: 10 sessions, bound 5"));
        let owner = p.walk.owner.clone().unwrap();
        assert_ne!(owner.backend, "api-1");
        assert_eq!(&*r.topology().backend(r.place(p.position).unwrap()).name, owner.backend);
        assert_eq!(r.session_count(), sessions_before, "a probe creates nothing");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["walk"]["steps"][0]["skip"],
            serde_json::json!({"why": "full", "sessions": 10, "bound": 5})
        );
    }

    #[test]
    fn each_mode_reads_the_key_its_own_way() {
        let r = router(Placement::Ring);
        assert_eq!(
            r.probe(b"x", Some(AffinityMode::None), Timestamp(0)),
            Err(ProbeError::NoKey)
        );
        assert_eq!(r.probe(b"", None, Timestamp(0)), Err(ProbeError::Empty));
        assert_eq!(
            r.probe(b"not-an-ip", Some(AffinityMode::SourceIp), Timestamp(0)),
            Err(ProbeError::NotAnAddress)
        );
        assert_eq!(
            r.probe(b"forged", Some(AffinityMode::LbCookie), Timestamp(0)),
            Err(ProbeError::NotOurCookie)
        );
        let ip = r
            .probe(b"203.0.113.9", Some(AffinityMode::SourceIp), Timestamp(0))
            .unwrap();
        assert_eq!(ip.position, crc32fast::hash(&[203, 0, 113, 9]));
        assert!(ip.notes.iter().any(|n| n.contains("not the ones that route now")));
        // A real balancer cookie: its session id is hashed, and it names its backend.
        let api3 = Arc::clone(r.topology().find("api-3").unwrap());
        let cookie = r.affinity().codec().encode(42, &api3);
        let c = r
            .probe(cookie.as_bytes(), Some(AffinityMode::LbCookie), Timestamp(0))
            .unwrap();
        assert_eq!(c.position, crc32fast::hash(&42u64.to_le_bytes()));
        assert_eq!(c.cookie_names.as_deref(), Some("api-3"));
        let to = c.routes_to.unwrap();
        assert_eq!((to.backend.as_str(), to.via), ("api-3", Via::Cookie));
    }
}
