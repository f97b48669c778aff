//! Watching a move: the last topology change's live sessions as the
//! dashboard shows them — which changed backend, where a stateless ring and
//! `hash % N` would have sent each — and the glide that draws the moved
//! ones travelling clockwise to their new owner. Built from the router's
//! [`Moves`] (published once per change), never on a request's path.

use crate::router::{BackendId, Moves, RemapSummary};

/// Frames a glide lasts: about a second at the 30 fps frame cap.
pub const GLIDE_FRAMES: u16 = 30;
/// Seconds the moved sessions stay highlighted after a change (or `w`).
pub const WATCH_SECS: u8 = 12;

/// One live session at the change, backends by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedSession {
    /// Its fingerprint.
    pub fingerprint: u64,
    /// Its key's ring position.
    pub position: u32,
    /// Its backend before the change.
    pub from: String,
    /// Its backend after the change (`from` when it stayed).
    pub to: String,
    /// A ring without a session table would have moved it.
    pub ring_moved: bool,
    /// Where that ring sends it now.
    pub ring_to: Option<String>,
    /// `hash % N` would have moved it.
    pub modulo_moved: bool,
    /// Where `hash % N` sends it now.
    pub modulo_to: Option<String>,
}

impl MovedSession {
    /// It changed backend.
    pub fn moved(&self) -> bool {
        self.from != self.to
    }
}

/// What the last topology change did to the live sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct MovesView {
    /// The topology generation it published (tells one change from the next).
    pub generation: u64,
    /// The change, with exact counts.
    pub summary: RemapSummary,
    /// `moved N · kept M · modulo would move K`.
    pub headline: String,
    /// The sessions listed (all, or a fair sample of them).
    pub sessions: Vec<MovedSession>,
}

impl MovesView {
    /// The router's moves, with backends named by `name`.
    pub fn new(moves: &Moves, name: impl Fn(BackendId) -> String) -> Self {
        let named = |id: Option<BackendId>| id.map(&name);
        MovesView {
            generation: moves.generation,
            summary: moves.summary.clone(),
            headline: moves.headline(),
            sessions: moves
                .sessions
                .iter()
                .map(|s| MovedSession {
                    fingerprint: s.session.fingerprint,
                    position: s.position,
                    from: name(s.from),
                    to: name(s.to),
                    ring_moved: s.ring_moved(),
                    ring_to: named(s.ring.1),
                    modulo_moved: s.modulo_moved(),
                    modulo_to: named(s.modulo.1),
                })
                .collect(),
        }
    }

    /// Whether only some of the live sessions are listed.
    pub fn sampled(&self) -> bool {
        (self.sessions.len() as u64) < self.summary.sessions
    }

    /// The listed sessions that changed backend.
    pub fn moved(&self) -> impl Iterator<Item = &MovedSession> {
        self.sessions.iter().filter(|s| s.moved())
    }
}

/// The highlight of one change's moved sessions, and its glide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    /// The change watched ([`MovesView::generation`]).
    pub generation: u64,
    /// Frames drawn since it began.
    pub frame: u16,
    secs_left: u8,
}

impl Watch {
    /// Starts watching change `generation`, gliding from the first frame.
    pub fn new(generation: u64) -> Self {
        Watch {
            generation,
            frame: 0,
            secs_left: WATCH_SECS,
        }
    }

    /// The glide is under way.
    pub fn gliding(&self) -> bool {
        self.frame < GLIDE_FRAMES
    }

    /// How far the glide has come, 0 to 1, eased in and out.
    pub fn progress(&self) -> f64 {
        let t = f64::from(self.frame.min(GLIDE_FRAMES)) / f64::from(GLIDE_FRAMES);
        t * t * (3.0 - 2.0 * t)
    }

    /// One more frame drawn.
    pub fn advance(&mut self) {
        self.frame = self.frame.saturating_add(1);
    }

    /// One more second gone; false once the watch is over.
    pub fn tick_second(&mut self) -> bool {
        self.secs_left = self.secs_left.saturating_sub(1);
        self.secs_left > 0
    }
}

/// The position `progress` of the way clockwise from `from` to `to`.
pub fn clockwise(from: u32, to: u32, progress: f64) -> u32 {
    let span = to.wrapping_sub(from);
    from.wrapping_add((f64::from(span) * progress.clamp(0.0, 1.0)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glide_eases_over_its_frames_and_goes_clockwise() {
        let mut w = Watch::new(7);
        assert!(w.gliding());
        assert_eq!(w.progress(), 0.0);
        for _ in 0..GLIDE_FRAMES / 2 {
            w.advance();
        }
        assert!((w.progress() - 0.5).abs() < 1e-9);
        for _ in 0..GLIDE_FRAMES {
            w.advance();
        }
        assert!(!w.gliding());
        assert_eq!(w.progress(), 1.0);
        // Across the top of the ring: the short way clockwise, not back.
        assert_eq!(clockwise(u32::MAX - 9, 10, 0.5), 0);
        assert_eq!(clockwise(100, 300, 1.0), 300);
        let mut seconds = 0;
        while w.tick_second() {
            seconds += 1;
        }
        assert_eq!(seconds + 1, WATCH_SECS);
    }
}
