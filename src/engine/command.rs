//! Commands: every operator action, from a key, the admin API, a scenario
//! or a configuration reload, carried out by the engine task in arrival order.

use std::time::Duration;

use crate::config::Config;
use crate::router::affinity::AffinityMode;
use crate::router::{BackendSpec, Placement, RouterError};

/// Shortest drain timeout (or extension) accepted.
pub const MIN_DRAIN: Duration = Duration::from_secs(1);
/// Longest drain timeout (or extension) accepted.
pub const MAX_DRAIN: Duration = Duration::from_secs(24 * 60 * 60);

/// One operator action on the running balancer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Stop a backend: a demo backend's server really stops and the balancer
    /// finds out by itself; an external one is forced out at once.
    Kill(String),
    /// Undo a kill: the backend goes back to health checking and is up
    /// after `rise` good checks. A drained backend returns to service.
    Revive(String),
    /// Start draining: no new sessions; existing ones stay until the drain
    /// ends (empty, or the timeout, default from the config).
    Drain {
        /// The backend.
        backend: String,
        /// How long to wait before closing what is left (1 s – 24 h).
        timeout: Option<Duration>,
    },
    /// Cancel a drain, or return a drained backend to service.
    Undrain(String),
    /// Give a drain more time (1 s – 24 h).
    Extend {
        /// The backend.
        backend: String,
        /// How much more.
        by: Duration,
    },
    /// Set a backend's weight (1–100).
    Weight {
        /// The backend.
        backend: String,
        /// 1–100.
        weight: u32,
    },
    /// Change a backend's weight by `delta` from its value now (a key press).
    WeightBy {
        /// The backend.
        backend: String,
        /// Usually +1 or -1.
        delta: i32,
    },
    /// Start another demo backend on loopback and add it.
    AddDemo,
    /// Add an external backend; it takes traffic after `rise` good checks.
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
    /// Multiply the synthetic clients' rate from its value now (a key press).
    TrafficRateBy(f64),
    /// Forget every session and counter and start the lesson afresh; the
    /// backends stay as they are.
    Restart,
    /// Apply a configuration file read again (SIGHUP): backends added,
    /// removed and reweighted, health, timeouts, affinity and placement.
    Reload(Box<Config>),
}

impl Command {
    /// Whether it changes the backends (their set, states or weights): told
    /// to the other balancers sharing the session store.
    pub fn is_topology(&self) -> bool {
        matches!(
            self,
            Command::Kill(_)
                | Command::Revive(_)
                | Command::Drain { .. }
                | Command::Undrain(_)
                | Command::Extend { .. }
                | Command::Weight { .. }
                | Command::WeightBy { .. }
                | Command::AddDemo
                | Command::Add(_)
                | Command::Remove(_)
                | Command::Vnodes(_)
        )
    }

    /// A short label, e.g. `kill api-2`, for reports and logs.
    pub fn label(&self) -> String {
        match self {
            Command::Kill(n) => format!("kill {n}"),
            Command::Revive(n) => format!("revive {n}"),
            Command::Drain { backend, .. } => format!("drain {backend}"),
            Command::Undrain(n) => format!("undrain {n}"),
            Command::Extend { backend, .. } => format!("extend {backend}"),
            Command::Weight { backend, weight } => format!("weight {backend} {weight}"),
            Command::WeightBy { backend, delta } => format!("weight {backend} {delta:+}"),
            Command::AddDemo => "add a demo backend".into(),
            Command::Add(BackendSpec { name, .. }) => format!("add {name}"),
            Command::Remove(n) => format!("remove {n}"),
            Command::Vnodes(v) => format!("{v} vnodes"),
            Command::Placement(p) => format!("placement {p}"),
            Command::Affinity(m) => format!("affinity {m}"),
            Command::Traffic(on) => format!("traffic {}", if *on { "on" } else { "off" }),
            Command::TrafficRate(r) => format!("traffic rate {r}"),
            Command::TrafficRateBy(f) => format!("traffic rate ×{f}"),
            Command::Restart => "restart the lesson".into(),
            Command::Reload(_) => "reload the configuration".into(),
        }
    }
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
    Router(#[from] RouterError),
    /// A demo backend could not be (re)started.
    #[error("demo backend: {0}")]
    Io(#[from] std::io::Error),
    /// The engine's queue is full (a flood of commands): try again.
    #[error("ringside is busy with earlier commands; try again")]
    Busy,
    /// The engine has stopped (shutting down).
    #[error("ringside is shutting down")]
    Stopped,
}

/// Checks a drain timeout or extension: 1 s – 24 h.
pub fn check_drain(d: Duration) -> Result<Duration, CommandError> {
    if (MIN_DRAIN..=MAX_DRAIN).contains(&d) {
        Ok(d)
    } else {
        Err(CommandError::BadValue(format!(
            "a drain timeout of {}s is out of range: use 1 to 86400 seconds",
            d.as_secs()
        )))
    }
}
