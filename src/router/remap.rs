//! Remap accounting: what a topology change did to the live sessions,
//! beside what modulo hashing would have done and the ideal.

use std::fmt;

use crate::text::thousands;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// A backend stopped keeping sessions (down, killed, removed, drain ended).
    Left,
    /// A backend started taking new sessions (added, revived, back up, undrained).
    Joined,
    /// A backend started draining: no session moves, new keys go elsewhere.
    Draining,
    /// A backend's weight changed (or every backend's vnodes).
    Reweighted,
    /// A backend was added but takes nothing until its health checks pass.
    Added,
    /// A drain ended: the sessions still on the backend moved.
    Drained,
}

/// The outcome of one topology change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RemapSummary {
    /// The backend that changed.
    pub backend: String,
    /// How.
    pub kind: ChangeKind,
    /// Live sessions when it happened.
    pub sessions: u64,
    /// Sessions actually moved to another backend because of the change.
    pub moved: u64,
    /// Of those, sessions redispatch moved before the failure was detected.
    pub redispatched: u64,
    /// Sessions whose owner under pure consistent hashing changed.
    pub ring: u64,
    /// Sessions whose owner under `position % backends` changed.
    pub modulo: u64,
    /// The least share any scheme must move: |ΔN| / max(N before, N after).
    pub ideal: f64,
    /// Backends in service (up or draining) before.
    pub backends_before: usize,
    /// Backends in service after.
    pub backends_after: usize,
}

impl RemapSummary {
    /// `moved` as a share of the live sessions.
    pub fn moved_share(&self) -> f64 {
        share(self.moved, self.sessions)
    }

    /// `ring` as a share.
    pub fn ring_share(&self) -> f64 {
        share(self.ring, self.sessions)
    }

    /// `modulo` as a share.
    pub fn modulo_share(&self) -> f64 {
        share(self.modulo, self.sessions)
    }
}

impl RemapSummary {
    /// The same in fewer words, for narrow screens, e.g. "api-2 left: 6 of
    /// 20 sessions moved (30.0%), 2 by redispatch — modulo 70.0%, ideal 33.3%".
    pub fn brief(&self) -> String {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let b = &self.backend;
        let moved = format!(
            "{} of {} sessions moved ({})",
            thousands(self.moved),
            thousands(self.sessions),
            pct(self.moved_share())
        );
        match self.kind {
            ChangeKind::Left => {
                let early = match self.redispatched {
                    0 => String::new(),
                    n => format!(", {} by redispatch", thousands(n)),
                };
                format!(
                    "{b} left: {moved}{early} — modulo {}, ideal {}",
                    pct(self.modulo_share()),
                    pct(self.ideal)
                )
            }
            ChangeKind::Joined => format!(
                "{b} joined: {moved}, sessions stay — stateless ring {}, modulo {}, ideal {}",
                pct(self.ring_share()),
                pct(self.modulo_share()),
                pct(self.ideal)
            ),
            ChangeKind::Draining => format!(
                "{b} is draining: no session moved; its new keys go to the next backend ({} of sessions' keys)",
                pct(self.ring_share())
            ),
            ChangeKind::Drained => format!(
                "{b}'s drain ended: the {} sessions still on it moved ({}); no other",
                thousands(self.moved),
                pct(self.moved_share())
            ),
            ChangeKind::Reweighted => format!(
                "{b} reweighted: {moved}, sessions stay — stateless ring {}",
                pct(self.ring_share())
            ),
            ChangeKind::Added => format!("{b} added: it takes new sessions once its health checks pass"),
        }
    }
}

/// The ideal share to move when the number of backends goes from `before` to `after`.
pub fn ideal_share(before: usize, after: usize) -> f64 {
    let most = before.max(after);
    if most == 0 {
        0.0
    } else {
        before.abs_diff(after) as f64 / most as f64
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

impl fmt::Display for RemapSummary {
    /// e.g. "api-2 left: 1,032 of 3,100 sessions moved (33.3%) — modulo would have moved 66.8%, ideal 33.3%".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moved = |f: &mut fmt::Formatter<'_>| {
            write!(
                f,
                "{} of {} sessions moved ({:.1}%)",
                thousands(self.moved),
                thousands(self.sessions),
                100.0 * self.moved_share()
            )
        };
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let b = &self.backend;
        match self.kind {
            ChangeKind::Left => {
                write!(f, "{b} left: ")?;
                moved(f)?;
                if self.redispatched > 0 {
                    write!(
                        f,
                        ", {} of them by redispatch before it was found down",
                        thousands(self.redispatched)
                    )?;
                }
                write!(
                    f,
                    " — modulo would have moved {}, ideal {}",
                    pct(self.modulo_share()),
                    pct(self.ideal)
                )
            }
            ChangeKind::Joined => {
                write!(f, "{b} joined: ")?;
                moved(f)?;
                write!(
                    f,
                    " (sessions stay) — a stateless ring would have moved {}, modulo {}, ideal {}",
                    pct(self.ring_share()),
                    pct(self.modulo_share()),
                    pct(self.ideal)
                )
            }
            ChangeKind::Draining => write!(
                f,
                "{b} is draining: no session moved; new keys that hash to it (as {} of the {} live sessions' \
                 keys do) go to the next backend clockwise; its sessions stay until the drain ends",
                pct(self.ring_share()),
                thousands(self.sessions)
            ),
            ChangeKind::Drained => write!(
                f,
                "{b}'s drain ended: the {} sessions still on it moved ({} of {} live); no other session moved",
                thousands(self.moved),
                pct(self.moved_share()),
                thousands(self.sessions)
            ),
            ChangeKind::Reweighted => {
                write!(f, "{b} was reweighted: ")?;
                moved(f)?;
                write!(
                    f,
                    " (sessions stay) — a stateless ring would have moved {}",
                    pct(self.ring_share())
                )
            }
            ChangeKind::Added => write!(
                f,
                "{b} was added: it takes new sessions once its health checks pass; no session moved"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_dashboard() {
        let s = RemapSummary {
            backend: "api-2".into(),
            kind: ChangeKind::Left,
            sessions: 3100,
            moved: 1032,
            redispatched: 0,
            ring: 1032,
            modulo: 2071,
            ideal: ideal_share(3, 2),
            backends_before: 3,
            backends_after: 2,
        };
        assert_eq!(
            s.to_string(),
            "api-2 left: 1,032 of 3,100 sessions moved (33.3%) — modulo would have moved 66.8%, ideal 33.3%"
        );
    }

    #[test]
    fn ideal_shares() {
        assert_eq!(ideal_share(4, 5), 0.2);
        assert_eq!(ideal_share(0, 0), 0.0);
    }
}
