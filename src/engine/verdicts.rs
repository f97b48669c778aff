//! Health verdicts: the results of active checks and the proxy's failed
//! connects turn into state changes here, in the engine task.

use super::Engine;
use super::health::{CheckFailure, Verdict};
use crate::bus::{BusEvent, DetectedBy};
use crate::router::{BackendId, BackendState};

impl Engine {
    /// Counts an active check; `rise` good ones bring a down backend up,
    /// `fall` bad ones take a serving backend down. Results from an older
    /// checker, and for killed or removed backends, count for nothing.
    pub(super) fn checked(&mut self, id: BackendId, generation: u64, result: Result<(), CheckFailure>) {
        let topo = self.shared.router.topology();
        let state = topo.state(id);
        let config = self.config();
        let (rise, fall) = (config.health.rise, config.health.fall);
        let Some(r) = self.runtimes.get_mut(&id) else { return };
        if r.generation != generation || matches!(state, BackendState::Killed | BackendState::Removed) {
            return;
        }
        let why = result.as_ref().err().map(ToString::to_string);
        if why.is_some() {
            r.last_failure = why.clone();
        } else if state.keeps_sessions() {
            self.shared.router.forget_redispatches(id);
        }
        match r.health.observe(result.is_ok(), state.keeps_sessions(), rise, fall) {
            Verdict::Down => self.mark_down(id, DetectedBy::HealthCheck, why.unwrap_or_default()),
            Verdict::Up if state == BackendState::Down => {
                r.checking = false;
                r.last_failure = None;
                let name = topo.backend(id).name.to_string();
                match self.shared.router.set_state(&name, BackendState::Up) {
                    Ok(_) => tracing::info!("{name} is up ({rise} good checks)"),
                    Err(e) => tracing::warn!("{name}: {e}"),
                }
            }
            _ => {}
        }
    }

    /// The proxy's connects to a backend failed `fall` times in a row.
    pub(super) fn connects_failing(&mut self, id: BackendId, why: String) {
        if self.shared.router.topology().state(id).keeps_sessions() {
            self.mark_down(id, DetectedBy::Connect, why);
        }
    }

    /// A serving backend stopped answering: it goes down — or `killed` when
    /// an operator's kill explains it, and then the time to detection is
    /// published. A drain in progress ends; health counts start over.
    fn mark_down(&mut self, id: BackendId, by: DetectedBy, why: String) {
        let topo = self.shared.router.topology();
        if !topo.state(id).keeps_sessions() {
            return;
        }
        let name = topo.backend(id).name.to_string();
        let Some(r) = self.runtimes.get_mut(&id) else { return };
        r.drain_deadline = None;
        r.reset_health();
        r.last_failure = Some(why.clone());
        let killed_at = r.killed_at.take();
        if let Some(at) = killed_at {
            r.detected_after = Some(at.elapsed());
        }
        let to = if killed_at.is_some() {
            BackendState::Killed
        } else {
            BackendState::Down
        };
        if let Err(e) = self.shared.router.set_state(&name, to) {
            tracing::warn!("{name}: {e}");
            return;
        }
        self.close_connections(id);
        match killed_at {
            Some(at) => {
                let after = at.elapsed();
                self.shared.bus.publish(BusEvent::Detected {
                    backend: name.clone(),
                    after_ms: after.as_millis() as u64,
                    by,
                });
                tracing::info!("{name} found dead by {by} {} ms after the kill", after.as_millis());
            }
            None => tracing::warn!("{name} is down ({by}: {why})"),
        }
    }
}
