//! Watching a move: after a topology change, which live sessions changed
//! backend, and where a ring without a session table and a modulo balancer
//! would have sent each — so a view can highlight them on the ring, draw
//! them gliding from the old owner's arc to the new one, and set the ring
//! beside modulo hashing. Computed in the walk over the sessions that remap
//! accounting makes anyway (never on a request's path), published once per
//! change through [`super::EventSink::moves`].

use super::BackendId;
use super::remap::RemapSummary;
use super::session::{SessionInfo, SessionName};
use super::topology::Topology;
use crate::text::thousands;

/// The most sessions one change lists; the counts always cover them all.
pub const MOVES_SAMPLE: usize = 500;

/// One live session at a topology change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMove {
    /// How it is shown (a short fingerprint, or the client address).
    pub session: SessionName,
    /// Its key's ring position.
    pub position: u32,
    /// Its backend before the change.
    pub from: BackendId,
    /// Its backend after the change: `from` when it stayed.
    pub to: BackendId,
    /// The owner of its position for a new key, before and after: what a
    /// ring without a session table would have done.
    pub ring: (Option<BackendId>, Option<BackendId>),
    /// `position % backends in service`, before and after: what a modulo
    /// balancer would have done.
    pub modulo: (Option<BackendId>, Option<BackendId>),
}

impl SessionMove {
    /// Sees `session` through a change from `old` to `new`; it is on `to` now.
    pub fn new(old: &Topology, new: &Topology, session: &SessionInfo, to: BackendId) -> Self {
        SessionMove {
            session: session.name(),
            position: session.position,
            from: session.backend,
            to,
            ring: (old.ring_owner(session.position), new.ring_owner(session.position)),
            modulo: (old.modulo_owner(session.position), new.modulo_owner(session.position)),
        }
    }

    /// It changed backend.
    pub fn moved(&self) -> bool {
        self.from != self.to
    }

    /// A ring without a session table would have moved it.
    pub fn ring_moved(&self) -> bool {
        self.ring.0 != self.ring.1
    }

    /// A modulo balancer would have moved it.
    pub fn modulo_moved(&self) -> bool {
        self.modulo.0 != self.modulo.1
    }
}

/// What one topology change did to the live sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Moves {
    /// The change, with exact counts over every live session.
    pub summary: RemapSummary,
    /// The topology generation the change published.
    pub generation: u64,
    /// At most [`MOVES_SAMPLE`] of those sessions. When there are more, each
    /// is listed with the same chance, drawn by its fingerprint (a keyed
    /// hash), so successive changes list mostly the same sessions.
    pub sessions: Vec<SessionMove>,
}

impl Moves {
    /// Sessions that stayed where they were.
    pub fn kept(&self) -> u64 {
        self.summary.sessions.saturating_sub(self.summary.moved)
    }

    /// Whether `sessions` lists only some of the live sessions.
    pub fn sampled(&self) -> bool {
        (self.sessions.len() as u64) < self.summary.sessions
    }

    /// `moved 1,032 · kept 2,068 · modulo would move 2,071`.
    pub fn headline(&self) -> String {
        format!(
            "moved {} · kept {} · modulo would move {}",
            thousands(self.summary.moved),
            thousands(self.kept()),
            thousands(self.summary.modulo)
        )
    }
}

/// Chooses which sessions of a table of `len` are listed: all of them up
/// to [`MOVES_SAMPLE`], else those whose fingerprint falls under a threshold
/// (fingerprints are keyed hashes, so this is a fair draw), at most the cap.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sampler {
    below: u128,
    room: usize,
}

impl Sampler {
    pub(super) fn new(len: u64) -> Self {
        let below = if len as usize <= MOVES_SAMPLE {
            u128::MAX
        } else {
            ((MOVES_SAMPLE as u128) << 64) / u128::from(len)
        };
        Sampler {
            below,
            room: MOVES_SAMPLE,
        }
    }

    /// Whether to list the session with `fingerprint` (counts it when so).
    pub(super) fn take(&mut self, fingerprint: u64) -> bool {
        let take = self.room > 0 && u128::from(fingerprint) < self.below;
        self.room -= usize::from(take);
        take
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::router::affinity::AffinityMode;
    use crate::router::event::CollectSink;
    use crate::router::{BackendSpec, BackendState, ChangeKind, Router, RouterConfig, SessionKey, Timestamp};

    fn router(sessions: usize) -> (Router, Arc<CollectSink>) {
        let sink = Arc::new(CollectSink::default());
        let r = Router::new(
            RouterConfig {
                seed: Some(3),
                ..RouterConfig::default()
            },
            Arc::clone(&sink) as Arc<dyn crate::router::EventSink>,
        );
        r.set_affinity(AffinityMode::AppCookie);
        for i in 1..=3u16 {
            let spec = BackendSpec::new(&format!("api-{i}"), ([127, 0, 0, 1], 9000 + i).into(), 1).unwrap();
            r.add_backend(&spec).unwrap();
        }
        for k in 0..sessions {
            r.route(SessionKey::Text(format!("user-{k}").as_bytes()), Timestamp(0))
                .unwrap();
        }
        sink.take_moves();
        (r, sink)
    }

    #[test]
    fn a_kill_lists_each_session_with_where_it_went_and_what_modulo_would_do() {
        let (r, sink) = router(300);
        let api2 = r.topology().find("api-2").unwrap().id;
        let summary = r.set_state("api-2", BackendState::Killed).unwrap().unwrap();
        let moves = sink.take_moves();
        assert_eq!(moves.len(), 1, "one publication per change");
        let m = &moves[0];
        assert_eq!(m.summary, summary);
        assert_eq!(r.last_moves().as_deref(), Some(&**m));
        assert_eq!(m.sessions.len(), 300, "a small table is listed whole");
        assert!(!m.sampled());
        let topo = r.topology();
        for s in &m.sessions {
            assert_eq!(s.moved(), s.from == api2, "only api-2's sessions move");
            assert_eq!(
                s.to,
                if s.moved() {
                    topo.ring_owner(s.position).unwrap()
                } else {
                    s.from
                }
            );
            assert_eq!(r.sessions().unwrap().get(s.session.fingerprint).unwrap().backend, s.to);
        }
        let count = |f: fn(&SessionMove) -> bool| m.sessions.iter().filter(|s| f(s)).count() as u64;
        assert_eq!(count(SessionMove::moved), summary.moved);
        assert_eq!(count(SessionMove::modulo_moved), summary.modulo);
        assert!(summary.modulo > summary.moved, "{summary:?}");
        assert_eq!(m.kept(), 300 - summary.moved);
        assert_eq!(
            m.headline(),
            format!(
                "moved {} · kept {} · modulo would move {}",
                summary.moved,
                300 - summary.moved,
                summary.modulo
            )
        );
    }

    #[test]
    fn a_join_moves_no_session_but_says_what_a_stateless_ring_would_have() {
        let (r, sink) = router(2000);
        r.add_backend(&BackendSpec::new("api-4", ([127, 0, 0, 1], 9004).into(), 1).unwrap())
            .unwrap();
        let m = sink.take_moves().pop().unwrap();
        assert_eq!(m.summary.kind, ChangeKind::Joined);
        assert!(m.sampled() && m.sessions.len() <= MOVES_SAMPLE && m.sessions.len() > 300);
        assert!(m.sessions.iter().all(|s| !s.moved()), "sessions stay where they are");
        let api4 = r.topology().find("api-4").unwrap().id;
        let ring_moved: Vec<&SessionMove> = m.sessions.iter().filter(|s| s.ring_moved()).collect();
        assert!(!ring_moved.is_empty());
        assert!(
            ring_moved.iter().all(|s| s.ring.1 == Some(api4)),
            "a join only takes keys"
        );
        r.clear_sessions();
        assert!(r.last_moves().is_none(), "a restart forgets the last change");
    }

    #[test]
    fn small_tables_are_listed_whole_and_large_ones_sampled_to_the_cap() {
        let mut all = Sampler::new(10);
        assert!((0..10u64).all(|i| all.take(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        let n = 20_000u64;
        let mut s = Sampler::new(n);
        let taken = (0..n).filter(|&i| s.take(super::super::hash::mix64(i))).count();
        assert!(taken <= MOVES_SAMPLE && taken > MOVES_SAMPLE * 8 / 10, "{taken}");
        let mut again = Sampler::new(n);
        let first: Vec<u64> = (0..n)
            .map(super::super::hash::mix64)
            .filter(|&f| again.take(f))
            .take(5)
            .collect();
        let mut third = Sampler::new(n);
        let same: Vec<u64> = (0..n)
            .map(super::super::hash::mix64)
            .filter(|&f| third.take(f))
            .take(5)
            .collect();
        assert_eq!(first, same, "the draw is stable from one change to the next");
    }
}
