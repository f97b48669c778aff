//! Placements: how a key that has no session yet gets a backend.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::BackendId;
use super::hash::KeyDomain;
use super::hash::mix64;
use super::topology::Topology;

/// The placement algorithms, switchable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Each available backend in turn.
    RoundRobin,
    /// Smooth weighted round-robin (nginx's): turns in proportion to weight, interleaved.
    Weighted,
    /// The backend with the fewest active connections (ties: fewest sessions, then lowest id).
    LeastConn,
    /// Power of two random choices: of two random backends, the one with fewer connections.
    P2c,
    /// `position % available backends`: the baseline that remaps almost everything.
    IpModulo,
    /// Consistent hashing: the first available vnode clockwise from the key.
    #[default]
    Ring,
    /// Consistent hashing with bounded loads: clockwise past backends holding
    /// `ceil(c × mean sessions)` or more.
    BoundedRing,
}

impl Placement {
    /// Every placement, in the order `p` cycles through them.
    pub const ALL: [Placement; 7] = [
        Placement::RoundRobin,
        Placement::Weighted,
        Placement::LeastConn,
        Placement::P2c,
        Placement::IpModulo,
        Placement::Ring,
        Placement::BoundedRing,
    ];

    /// The name used on the command line, in config files and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::RoundRobin => "round-robin",
            Placement::Weighted => "weighted",
            Placement::LeastConn => "least-conn",
            Placement::P2c => "p2c",
            Placement::IpModulo => "ip-modulo",
            Placement::Ring => "ring",
            Placement::BoundedRing => "bounded-ring",
        }
    }

    /// The next placement in [`Placement::ALL`], wrapping.
    pub fn next(self) -> Placement {
        let i = Placement::ALL.iter().position(|&p| p == self).unwrap_or(0);
        Placement::ALL[(i + 1) % Placement::ALL.len()]
    }

    fn to_u8(self) -> u8 {
        Placement::ALL.iter().position(|&p| p == self).unwrap_or(0) as u8
    }

    fn from_u8(v: u8) -> Placement {
        Placement::ALL[v as usize % Placement::ALL.len()]
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Placement::ALL.iter().copied().find(|p| p.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Placement::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown placement {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// The mutable state the placements need, shared by all requests.
#[derive(Debug)]
pub struct Placer {
    /// The placement in force, as an index into [`Placement::ALL`].
    current: std::sync::atomic::AtomicU8,
    /// Round-robin cursor.
    cursor: AtomicUsize,
    /// Smooth weighted round-robin's current weights, by backend id.
    smooth: Mutex<Vec<i64>>,
    /// SplitMix64 state for p2c's random choices (seeded: runs are repeatable).
    rng: AtomicU64,
    /// Bounded-ring's load factor c (> 1).
    bound_factor: f64,
    /// c in thousandths, for the division-free fullness check.
    bound_milli: u64,
}

impl Placer {
    /// A placer starting with `placement`.
    pub fn new(placement: Placement, bound_factor: f64, seed: u64) -> Self {
        Placer {
            current: std::sync::atomic::AtomicU8::new(placement.to_u8()),
            cursor: AtomicUsize::new(0),
            smooth: Mutex::new(Vec::new()),
            rng: AtomicU64::new(seed),
            bound_factor,
            bound_milli: (bound_factor * 1000.0).round().max(1000.0) as u64,
        }
    }

    /// The placement in force.
    pub fn placement(&self) -> Placement {
        Placement::from_u8(self.current.load(Ordering::Relaxed))
    }

    /// Switches placement; takes effect for the next new key.
    pub fn set_placement(&self, p: Placement) {
        self.current.store(p.to_u8(), Ordering::Relaxed);
    }

    /// Bounded-ring's load factor.
    pub fn bound_factor(&self) -> f64 {
        self.bound_factor
    }

    /// Whether a backend holding `sessions` is full under bounded loads, with
    /// `live_sessions` in the table and `backends` taking new sessions: it
    /// holds [`bounded_capacity`] or more (checked without a division).
    pub fn is_full(&self, sessions: u64, live_sessions: u64, backends: usize) -> bool {
        // s < ceil(c·(L+1)/n) ⇔ s·n < c·(L+1) for whole s.
        let bound = self.bound_milli.saturating_mul(live_sessions + 1);
        sessions.saturating_mul(backends as u64 * 1000) >= bound
    }

    /// A random 64-bit value from the seeded generator (also used for session ids).
    pub fn random(&self) -> u64 {
        mix64(
            self.rng
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x9e37_79b9_7f4a_7c15),
        )
    }

    /// Picks a backend for a key at ring `position` with the placement in
    /// force, for a session of `domain`'s table (`None`: no session);
    /// `live_sessions` is that table's size, for bounded loads.
    pub fn place(
        &self,
        topo: &Topology,
        position: u32,
        domain: Option<KeyDomain>,
        live_sessions: u64,
    ) -> Option<BackendId> {
        self.place_with(self.placement(), topo, position, domain, live_sessions)
    }

    /// Picks a backend with placement `p`.
    pub fn place_with(
        &self,
        p: Placement,
        topo: &Topology,
        position: u32,
        domain: Option<KeyDomain>,
        live_sessions: u64,
    ) -> Option<BackendId> {
        let sessions = |id: BackendId| domain.map_or(0, |d| topo.backend(id).counters.sessions(d));
        let up = topo.available();
        if up.is_empty() {
            return None;
        }
        match p {
            Placement::RoundRobin => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed);
                Some(up[i % up.len()])
            }
            Placement::Weighted => Some(self.smooth_weighted(topo)),
            Placement::LeastConn => up
                .iter()
                .copied()
                .min_by_key(|&id| (topo.backend(id).counters.active(), sessions(id))),
            Placement::P2c => {
                let r = self.random();
                let a = up[(r % up.len() as u64) as usize];
                let b = up[((r >> 32) % up.len() as u64) as usize];
                let load = |id: BackendId| topo.backend(id).counters.active();
                Some(if load(b) < load(a) { b } else { a })
            }
            Placement::IpModulo => Some(up[position as usize % up.len()]),
            Placement::Ring => topo
                .ring()
                .lookup(position, |id| topo.state(id).takes_new_sessions())
                .map(|v| v.owner),
            Placement::BoundedRing => topo
                .ring()
                .lookup(position, |id| {
                    topo.state(id).takes_new_sessions() && !self.is_full(sessions(id), live_sessions, up.len())
                })
                .map(|v| v.owner),
        }
    }

    fn smooth_weighted(&self, topo: &Topology) -> BackendId {
        let up = topo.available();
        let mut current = self.smooth.lock().unwrap_or_else(|e| e.into_inner());
        if current.len() < topo.backend_count() {
            current.resize(topo.backend_count(), 0);
        }
        let total: i64 = up.iter().map(|&id| i64::from(topo.weight(id))).sum();
        let mut best = up[0];
        for &id in up {
            current[id.index()] += i64::from(topo.weight(id));
            if current[id.index()] > current[best.index()] {
                best = id;
            }
        }
        current[best.index()] -= total;
        best
    }
}

/// The most sessions a backend may hold under bounded loads before the walk
/// passes it by: `ceil(c × (sessions + 1) / backends)`, counting the session
/// being placed (Mirrokni, Thorup, Zadimoghaddam 2016).
pub fn bounded_capacity(live_sessions: u64, backends: usize, c: f64) -> u64 {
    if backends == 0 {
        return 0;
    }
    (c * (live_sessions + 1) as f64 / backends as f64).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cycle() {
        for p in Placement::ALL {
            assert_eq!(p.as_str().parse::<Placement>(), Ok(p));
        }
        assert_eq!(Placement::BoundedRing.next(), Placement::RoundRobin);
        assert!("modulo".parse::<Placement>().unwrap_err().contains("ip-modulo"));
    }

    #[test]
    fn division_free_check_matches_the_capacity() {
        let milli = 1250u64;
        for live in 0..300u64 {
            for n in 1..9u64 {
                for s in 0..120u64 {
                    let fast = s * n * 1000 < milli * (live + 1);
                    assert_eq!(
                        fast,
                        s < bounded_capacity(live, n as usize, 1.25),
                        "L={live} n={n} s={s}"
                    );
                }
            }
        }
    }

    #[test]
    fn is_full_agrees_with_the_capacity() {
        let placer = Placer::new(Placement::BoundedRing, 1.25, 1);
        for live in [0u64, 7, 99, 1000] {
            for n in 1..6usize {
                for s in 0..300u64 {
                    assert_eq!(placer.is_full(s, live, n), s >= bounded_capacity(live, n, 1.25));
                }
            }
        }
    }

    #[test]
    fn bounded_capacity_rounds_up() {
        assert_eq!(bounded_capacity(0, 4, 1.25), 1);
        assert_eq!(bounded_capacity(99, 4, 1.25), 32);
        assert_eq!(bounded_capacity(5, 0, 1.25), 0);
    }
}
