//! Commands: every operator action, from a key, the admin API or a script.

use std::time::Duration;

use crate::router::affinity::AffinityMode;
use crate::router::{BackendSpec, Placement};

/// One operator action on the running balancer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Stop a backend: a demo backend's server really stops and the balancer
    /// finds out by itself; an external one is forced out at once.
    Kill(String),
    /// Undo a kill (the backend goes back to health checking), or return a
    /// removed backend to service.
    Revive(String),
    /// Start draining: no new sessions; existing ones stay until the drain
    /// ends (empty, or the timeout, default from the config).
    Drain {
        /// The backend.
        backend: String,
        /// How long to wait before closing what is left.
        timeout: Option<Duration>,
    },
    /// Cancel a drain.
    Undrain(String),
    /// Give a drain more time.
    Extend {
        /// The backend.
        backend: String,
        /// How much more.
        by: Duration,
    },
    /// Change a backend's weight.
    Weight {
        /// The backend.
        backend: String,
        /// 1–100.
        weight: u32,
    },
    /// Start another demo backend and add it.
    AddDemo,
    /// Add an external backend.
    Add(BackendSpec),
    /// Take a backend out for good (its sessions move).
    Remove(String),
    /// Re-place every backend with this many virtual nodes per unit of weight.
    Vnodes(u32),
    /// Switch the placement for new sessions.
    Placement(Placement),
    /// Switch the affinity mode.
    Affinity(AffinityMode),
    /// Turn the synthetic clients on or off.
    Traffic(bool),
    /// Set the synthetic clients' total request rate.
    TrafficRate(f64),
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No backend has that name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// The command does not apply in the backend's state.
    #[error("{0}")]
    Conflict(String),
    /// A value out of range.
    #[error("{0}")]
    BadValue(String),
    /// The router refused it.
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    /// A demo backend could not be (re)started.
    #[error("demo backend: {0}")]
    Io(#[from] std::io::Error),
}

impl CommandError {
    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            CommandError::UnknownBackend(_) => 404,
            CommandError::Router(crate::router::RouterError::UnknownBackend(_)) => 404,
            CommandError::Conflict(_) => 409,
            CommandError::Router(crate::router::RouterError::DuplicateName(_)) => 409,
            CommandError::Io(_) => 500,
            _ => 400,
        }
    }
}
