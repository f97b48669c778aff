//! Backends: identity, validated specs, states and live counters.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RouterError;
use super::hash::KeyDomain;
use crate::counter::{Counter, Gauge};

/// Weights a backend may have; a weight scales its virtual nodes.
pub const WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=100;

/// Longest backend name accepted.
pub const MAX_NAME_LEN: usize = 32;

/// A backend's stable identity inside one router: an index that is never
/// reused for another name, so sessions can hold it across topology changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl BackendId {
    /// The index into per-backend vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The lifecycle state of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Healthy: takes new sessions and keeps its own.
    Up,
    /// Failing health checks: takes nothing; its sessions are reassigned.
    Down,
    /// Leaving gracefully: no new sessions, existing ones stay until the drain ends.
    Draining,
    /// Stopped by the operator: takes nothing; its sessions are reassigned.
    Killed,
    /// A drain that ended: out of the pool (no sessions, no new ones) until
    /// undrained or revived; health checks keep watching it.
    Drained,
    /// Taken out of the ring for good; its name may be added again later.
    Removed,
}

impl BackendState {
    /// All states, in display order.
    pub const ALL: [BackendState; 6] = [
        BackendState::Up,
        BackendState::Down,
        BackendState::Draining,
        BackendState::Drained,
        BackendState::Killed,
        BackendState::Removed,
    ];

    /// May a new session be placed here?
    pub fn takes_new_sessions(self) -> bool {
        self == BackendState::Up
    }

    /// May a session already here stay here?
    pub fn keeps_sessions(self) -> bool {
        matches!(self, BackendState::Up | BackendState::Draining)
    }

    /// The lower-case name used in the UI, the API and the simulator.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "draining",
            BackendState::Drained => "drained",
            BackendState::Killed => "killed",
            BackendState::Removed => "removed",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What it takes to add a backend: checked by [`BackendSpec::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Unique name, shown everywhere and used for the vnode labels `"<name>-<i>"`.
    pub name: String,
    /// Where the proxy connects to reach it.
    pub addr: SocketAddr,
    /// Relative capacity, 1–100: scales its virtual nodes and weighted shares.
    pub weight: u32,
}

impl BackendSpec {
    /// A validated spec: the name is `[A-Za-z0-9][A-Za-z0-9._-]{0,31}`, the
    /// port is not 0 and the weight is within [`WEIGHT_RANGE`].
    pub fn new(name: &str, addr: SocketAddr, weight: u32) -> Result<Self, RouterError> {
        validate_name(name)?;
        validate_weight(weight)?;
        if addr.port() == 0 {
            return Err(RouterError::BadSpec(format!(
                "{addr}: port 0 is not a backend; use 1-65535"
            )));
        }
        Ok(BackendSpec {
            name: name.to_owned(),
            addr,
            weight,
        })
    }
}

/// Parses `name=host:port[*weight]`, the form of `--backend`.
impl FromStr for BackendSpec {
    type Err = RouterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| RouterError::BadSpec(format!("{s:?}: expected NAME=HOST:PORT[*WEIGHT]")))?;
        let (addr, weight) = match rest.split_once('*') {
            Some((addr, w)) => {
                let w = w.parse().map_err(|_| RouterError::BadWeight(w.to_owned()))?;
                (addr, w)
            }
            None => (rest, 1),
        };
        let addr = addr
            .parse()
            .map_err(|_| RouterError::BadSpec(format!("{addr:?} is not an IP:PORT address")))?;
        BackendSpec::new(name, addr, weight)
    }
}

/// Checks a backend name: `[A-Za-z0-9][A-Za-z0-9._-]{0,31}` — so `.`, `..`
/// and `-` are not names, and every name is safe in a URL path.
pub fn validate_name(name: &str) -> Result<(), RouterError> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RouterError::BadName(name.to_owned()))
    }
}

/// Checks a weight against [`WEIGHT_RANGE`].
pub fn validate_weight(weight: u32) -> Result<(), RouterError> {
    if WEIGHT_RANGE.contains(&weight) {
        Ok(())
    } else {
        Err(RouterError::BadWeight(weight.to_string()))
    }
}

/// A backend as the router knows it. Identity is immutable; state and weight
/// live in the topology snapshot, live figures in atomic counters.
#[derive(Debug)]
pub struct Backend {
    /// Stable identity, the index into every per-backend vector.
    pub id: BackendId,
    /// Unique name.
    pub name: Box<str>,
    /// Where the proxy connects.
    pub addr: SocketAddr,
    /// The opaque id written into balancer cookies instead of the name.
    pub tag: u32,
    /// Live figures, updated without locks.
    pub counters: BackendCounters,
}

impl Backend {
    pub(super) fn new(id: BackendId, name: &str, addr: SocketAddr) -> Self {
        Backend {
            id,
            name: name.into(),
            addr,
            tag: backend_tag(name),
            counters: BackendCounters::default(),
        }
    }
}

/// Per-backend figures that the proxy and the router update concurrently
/// (each proxy thread on lines of its own).
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Connections (requests in flight or tunnels open) to this backend now.
    pub active: Gauge,
    /// Requests routed here since it was added.
    pub requests: Counter,
    /// Live sessions held by this backend in each session table (by
    /// [`KeyDomain`]): O(1) to read.
    pub sessions: [AtomicU64; KeyDomain::COUNT],
    /// Sessions (of the table in force) that redispatch moved off this
    /// backend since it was last known healthy: they left because of the
    /// failure that has not been detected yet, so its `left` summary counts them.
    pub redispatched_away: AtomicU64,
}

impl BackendCounters {
    /// Active connections now.
    pub fn active(&self) -> u64 {
        self.active.get()
    }

    /// Live sessions now in the table of `domain`.
    pub fn sessions(&self, domain: KeyDomain) -> u64 {
        self.sessions[domain.index()].load(Ordering::Relaxed)
    }

    /// Live sessions now in every table.
    pub fn all_sessions(&self) -> u64 {
        self.sessions.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    /// Requests routed so far.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }
}

/// The opaque backend id carried in cookies: a mixed CRC of the name, stable
/// across restarts and balancers, which reveals nothing without the name list.
pub fn backend_tag(name: &str) -> u32 {
    super::hash::fmix32(crc32fast::hash(name.as_bytes()) ^ 0x5bd1_e995)
}
