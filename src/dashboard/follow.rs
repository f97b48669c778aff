//! Following one client: the followed session as the dashboard shows it —
//! its history from the engine's recorder, where its key sits on the ring
//! now — and its history in words, one line per happening.

use crate::engine::follow::{EndWhy, Happening, History, MoveWhy};
use crate::text::plural;

/// The session the dashboard follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    /// Its fingerprint.
    pub fingerprint: u64,
    /// Its history, from the engine's recorder.
    pub history: History,
    /// Its key's ring position, while it lives.
    pub position: Option<u32>,
}

impl Followed {
    /// Who it is: `client-7 · #3fa2c1e9`, or the session alone.
    pub fn label(&self) -> String {
        match self.history.client {
            Some(c) => format!("client-{c} · {}", self.history.session),
            None => self.history.session.clone(),
        }
    }

    /// Each backend it lived on, `api-2 → api-1`.
    pub fn lived_on(&self) -> String {
        self.history.lived_on().join(" → ")
    }

    /// Whether its user lost their login, in words.
    pub fn login(&self) -> String {
        match self.history.lost_logins {
            0 => "its user kept their login".to_owned(),
            n => format!("its user lost their login ({})", plural(u64::from(n), "time")),
        }
    }

    /// What happened, oldest first: (router seconds, text, a bad thing).
    pub fn lines(&self) -> Vec<(u64, String, bool)> {
        self.history.happenings.iter().map(happening).collect()
    }
}

fn happening(h: &Happening) -> (u64, String, bool) {
    match h {
        Happening::Placed { at_ms, backend } => (at_ms / 1000, format!("placed on {backend}"), false),
        Happening::Followed {
            at_ms,
            backend,
            earlier_moves,
        } => (
            at_ms / 1000,
            format!(
                "followed from here, on {backend} after {}",
                plural(u64::from(*earlier_moves), "move")
            ),
            false,
        ),
        Happening::Moved { at_ms, from, to, why } => (
            at_ms / 1000,
            format!("moved {from} → {to}{}", move_why(*why, from)),
            true,
        ),
        Happening::LostLogin { at_ms, backend } => (
            at_ms / 1000,
            format!(
                "lost its login: {} did not know the user",
                backend.as_deref().unwrap_or("the backend")
            ),
            true,
        ),
        Happening::Ended { at_ms, backend, why } => {
            (at_ms / 1000, format!("ended on {backend}: {}", end_why(*why)), false)
        }
    }
}

/// Why it moved, after `moved api-2 → api-1` (short: the panel is narrow).
fn move_why(why: MoveWhy, from: &str) -> String {
    match why {
        MoveWhy::Killed => format!(": {from} killed"),
        MoveWhy::Down => format!(": {from} down"),
        MoveWhy::Removed => format!(": {from} removed"),
        MoveWhy::Drained => format!(": {from} drained"),
        MoveWhy::Redispatch => " by redispatch".to_owned(),
    }
}

fn end_why(why: EndWhy) -> &'static str {
    match why {
        EndWhy::Logout => "logout",
        EndWhy::Expired => "expired (idle)",
        EndWhy::Evicted => "evicted (table full)",
        EndWhy::Gone => "gone (a restart, or unheard)",
    }
}
