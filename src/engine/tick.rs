//! Once a second, in the engine task: idle sessions expire, drains report
//! their progress and end, and the second's figures are published.

use tokio::time::Instant;

use super::Engine;
use crate::bus::{BusEvent, DrainEnd};
use crate::router::{BackendId, BackendState};

impl Engine {
    pub(super) fn tick(&mut self) {
        let now = self.shared.clock.now();
        self.shared.router.sweep(now);
        self.drains();
        let stats = self.shared.proxy.stats();
        let requests = stats.requests.get();
        let errors = stats.by_class[5].get();
        let (was_requests, was_errors) = self.last_second;
        self.shared.bus.publish(BusEvent::Second {
            requests: requests.saturating_sub(was_requests),
            errors: errors.saturating_sub(was_errors),
            sessions: self.shared.router.session_count(),
            lost_sessions: self.shared.traffic().map_or(0, |t| t.stats().lost_sessions),
            dropped: self.shared.bus.dropped(),
        });
        self.last_second = (requests, errors);
        let purged = self.shared.upstreams.purge_idle();
        let open = stats.client_connections.get();
        if self
            .trimmer
            .due(open, open.saturating_sub(stats.parked_connections.get()), purged)
        {
            tokio::task::spawn_blocking(crate::memory::trim);
        }
        self.publish_runtimes();
    }

    /// Reports every drain's progress; a drain ends when its backend holds
    /// no session and no connection, or at its deadline (what is left is
    /// closed, and its sessions move). A drained backend stays out of the
    /// pool until undrained or revived.
    fn drains(&mut self) {
        let topo = self.shared.router.topology();
        let draining: Vec<(BackendId, Instant)> = self
            .runtimes
            .iter()
            .filter_map(|(id, r)| r.drain_deadline.map(|d| (*id, d)))
            .collect();
        for (id, deadline) in draining {
            if topo.state(id) != BackendState::Draining {
                if let Some(r) = self.runtimes.get_mut(&id) {
                    r.drain_deadline = None;
                }
                continue;
            }
            let backend = topo.backend(id);
            let active = backend.counters.active();
            let sessions = self.shared.router.sessions_on(backend);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let done = if active == 0 && sessions == 0 {
                Some(DrainEnd::Empty)
            } else if remaining.is_zero() {
                Some(DrainEnd::Timeout)
            } else {
                None
            };
            self.shared.bus.publish(BusEvent::Drain {
                backend: backend.name.to_string(),
                active,
                sessions,
                remaining_secs: remaining.as_secs(),
                done,
            });
            let Some(end) = done else { continue };
            if let Some(r) = self.runtimes.get_mut(&id) {
                r.drain_deadline = None;
            }
            self.close_connections(id);
            self.shared.proxy.stats().closed_by_drain.add(active);
            let name = backend.name.to_string();
            let summary = match self.shared.router.set_state(&name, BackendState::Drained) {
                Ok(Some(s)) => format!(" — {s}"),
                Ok(None) => String::new(),
                Err(e) => format!(" — {e}"),
            };
            let closed = match active {
                0 => String::new(),
                1 => ", 1 connection closed".into(),
                n => format!(", {n} connections closed"),
            };
            let text = format!(
                "drain of {name} ended ({end}{closed}): it is drained, out of the pool until undrained (u) or revived (r){summary}"
            );
            tracing::info!("{text}");
            self.shared.bus.publish(BusEvent::Command(text));
        }
    }
}
