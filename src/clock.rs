//! Router time for live components: milliseconds since the process started,
//! from tokio's clock so tests can pause and advance it.

use tokio::time::Instant;

use crate::router::Timestamp;

/// A monotonic clock whose epoch is its creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock { start: Instant::now() }
    }

    /// Router time now.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.start.elapsed().as_millis() as u64)
    }

    /// Seconds since the clock started.
    pub fn uptime_secs(&self) -> u64 {
        self.start.elapsed().as_secs()
    }
}
