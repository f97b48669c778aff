//! Each command, carried out by the engine task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::command::check_drain;
use super::health::{CheckSettings, HealthProgress, spawn_checker};
use super::{BackendKind, Command, CommandError, Engine, Runtime};
use crate::bus::BusEvent;
use crate::demo::backend::DemoBackend;
use crate::demo::traffic::{Traffic, TrafficConfig, TrafficEvent};
use crate::router::{Backend, BackendId, BackendSpec, BackendState};

/// The fastest synthetic traffic a command may ask for, requests per second.
const MAX_TRAFFIC_RATE: f64 = 100_000.0;

impl Engine {
    pub(super) async fn apply(&mut self, command: Command) -> Result<String, CommandError> {
        match command {
            Command::Kill(name) => self.kill(&name).await,
            Command::Revive(name) => self.revive(&name).await,
            Command::Drain { backend, timeout } => {
                let timeout = match timeout {
                    Some(t) => check_drain(t)?,
                    None => Duration::from_secs(self.config().drain.timeout_secs),
                };
                self.drain(&backend, timeout)
            }
            Command::Undrain(name) => self.undrain(&name),
            Command::Extend { backend, by } => self.extend(&backend, check_drain(by)?),
            Command::Weight { backend, weight } => self.weight(&backend, weight),
            Command::WeightBy { backend, delta } => {
                let b = self.find(&backend)?;
                let now = self.shared.router.topology().weight(b.id);
                let to = i64::from(now) + i64::from(delta);
                if !(1..=100).contains(&to) {
                    return Err(CommandError::BadValue(format!(
                        "the weight of {backend} is already {now} (weights are 1 to 100)"
                    )));
                }
                self.weight(&backend, to as u32)
            }
            Command::AddDemo => self.add_demo().await,
            Command::Add(spec) => self.add_external(spec),
            Command::Remove(name) => self.remove(&name).await,
            Command::Vnodes(n) => {
                let summary = self.shared.router.set_vnodes(n)?;
                let vnodes = crate::text::plural(u64::from(n), "virtual node");
                Ok(format!("{vnodes} per unit of weight — {summary}"))
            }
            Command::Placement(p) => {
                self.shared.router.set_placement(p);
                Ok(format!("placement is now {p}"))
            }
            Command::Affinity(m) => Ok(self.shared.router.set_affinity(m).to_string()),
            Command::Traffic(on) => self.traffic(on),
            Command::TrafficRate(rate) => self.traffic_rate(rate),
            Command::TrafficRateBy(factor) => {
                let now = self.traffic.as_ref().map_or(self.config().traffic.rate, Traffic::rate);
                let to = (now * factor).round().clamp(1.0, MAX_TRAFFIC_RATE);
                if to == now {
                    let bound = if factor < 1.0 { "slowest" } else { "fastest" };
                    return Err(CommandError::BadValue(format!(
                        "the traffic rate is already {now:.0} requests/s, the {bound} it goes"
                    )));
                }
                self.traffic_rate(to)
            }
            Command::Restart => {
                let live = self.shared.router.session_count();
                self.shared.router.clear_sessions();
                self.shared.proxy.reset_stats();
                self.shared.upstreams.reset_latency();
                if let Some(t) = &self.traffic {
                    t.reset();
                }
                for r in self.runtimes.values() {
                    if let BackendKind::Demo(d) = &r.kind {
                        d.forget_sessions();
                    }
                }
                self.last_second = (0, 0);
                Ok(format!(
                    "the lesson starts afresh: the {} and every counter are forgotten; the backends stay as they are",
                    crate::text::plural(live, "session")
                ))
            }
            Command::Reload(config) => self.reload(*config).await,
        }
    }

    pub(super) fn find(&self, name: &str) -> Result<Arc<Backend>, CommandError> {
        let topo = self.shared.router.topology();
        if let Some(b) = topo.find(name) {
            return Ok(Arc::clone(b));
        }
        if topo.find_removed(name).is_some() {
            return Err(CommandError::Conflict(format!(
                "{name} was removed; add it again (`a` for a demo backend, or POST /api/backends)"
            )));
        }
        Err(CommandError::UnknownBackend(name.to_owned()))
    }

    /// Adds a backend to the router, the proxy and the health checker.
    pub(super) fn register(
        &mut self,
        spec: BackendSpec,
        kind: BackendKind,
        state: BackendState,
    ) -> Result<BackendId, CommandError> {
        let (proxy, admin) = (self.shared.proxy_addr, self.shared.admin_addr);
        if let Some(what) = super::start::own_address(spec.addr, proxy, admin) {
            return Err(CommandError::BadValue(format!(
                "{} is ringside's own {what}: requests would loop; point {} at another address",
                spec.addr, spec.name
            )));
        }
        let id = self.shared.router.add_backend_in(&spec, state)?;
        let backend = Arc::clone(self.shared.router.topology().backend(id));
        let upstream = self.upstream_config();
        self.shared.upstreams.register(&backend, upstream);
        self.rebalance();
        let generation = self.next_generation();
        let mut runtime = Runtime {
            kind,
            health: HealthProgress::default(),
            checking: !state.keeps_sessions(),
            killed_at: None,
            detected_after: None,
            drain_deadline: None,
            last_failure: None,
            generation,
            checker: None,
        };
        runtime.checker = Some(self.spawn_checker(&backend, &runtime));
        self.runtimes.insert(id, runtime);
        Ok(id)
    }

    pub(super) fn spawn_checker(&self, backend: &Arc<Backend>, runtime: &Runtime) -> tokio::task::JoinHandle<()> {
        let config = self.config();
        let interval = match runtime.kind {
            BackendKind::Demo(_) => config.demo.health_interval_ms,
            BackendKind::External => config.health.interval_ms,
        };
        let settings = CheckSettings {
            path: config.health.path.clone(),
            interval: Duration::from_millis(interval),
            timeout: Duration::from_millis(config.health.timeout_ms),
        };
        spawn_checker(
            Arc::clone(backend),
            runtime.generation,
            settings,
            self.tx.clone(),
            self.shutdown.clone(),
        )
    }

    /// Starts a new checker for `id` (its counts start over).
    pub(super) fn restart_checker(&mut self, id: BackendId) {
        let generation = self.next_generation();
        let backend = Arc::clone(self.shared.router.topology().backend(id));
        let Some(r) = self.runtimes.get_mut(&id) else { return };
        if let Some(old) = r.checker.take() {
            old.abort();
        }
        r.generation = generation;
        r.reset_health();
        let r = &self.runtimes[&id];
        let checker = self.spawn_checker(&backend, r);
        if let Some(r) = self.runtimes.get_mut(&id) {
            r.checker = Some(checker);
        }
    }

    async fn kill(&mut self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let state = self.shared.router.topology().state(backend.id);
        if state == BackendState::Killed {
            return Err(CommandError::Conflict(format!("{name} is already killed")));
        }
        let Some(r) = self.runtimes.get_mut(&backend.id) else {
            return Err(CommandError::UnknownBackend(name.to_owned()));
        };
        // A kill ends a drain: the backend must be found dead, not retired
        // as drained once its sessions ran elsewhere. Health counts restart.
        r.drain_deadline = None;
        r.reset_health();
        match r.kind.clone() {
            // A backend that takes no traffic (drained, down) cannot be found
            // dead by failed checks or connects: its state changes at once.
            BackendKind::Demo(demo) if !state.keeps_sessions() => {
                r.killed_at = None;
                r.detected_after = None;
                demo.kill().await;
                self.shared.router.set_state(name, BackendState::Killed)?;
                Ok(format!(
                    "killed {name}: its server stopped (it was {state}, out of the pool)"
                ))
            }
            BackendKind::Demo(demo) => {
                r.killed_at = Some(Instant::now());
                r.detected_after = None;
                demo.kill().await;
                Ok(format!(
                    "killed {name}: its server stopped; the balancer will notice by failed connects and health checks"
                ))
            }
            BackendKind::External => {
                let summary = self.shared.router.set_state(name, BackendState::Killed)?;
                self.close_connections(backend.id);
                Ok(match summary {
                    Some(s) => format!("killed {name} (forced out, no longer checked) — {s}"),
                    None => format!("killed {name} (forced out, no longer checked)"),
                })
            }
        }
    }

    async fn revive(&mut self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let state = self.shared.router.topology().state(backend.id);
        let rise = self.config().health.rise;
        let Some(r) = self.runtimes.get_mut(&backend.id) else {
            return Err(CommandError::UnknownBackend(name.to_owned()));
        };
        let restarted = match &r.kind {
            BackendKind::Demo(demo) if !demo.is_running() => {
                demo.revive().await?;
                true
            }
            _ => false,
        };
        r.killed_at = None;
        r.detected_after = None;
        match state {
            BackendState::Killed | BackendState::Down => {
                r.checking = true;
                if state == BackendState::Killed {
                    self.shared.router.set_state(name, BackendState::Down)?;
                }
                self.restart_checker(backend.id);
                Ok(format!(
                    "revived {name}: back to health checking; up after {rise} good checks"
                ))
            }
            BackendState::Drained => {
                let summary = self.shared.router.set_state(name, BackendState::Up)?;
                Ok(with_summary(format!("{name} is back in service"), summary))
            }
            _ if restarted => {
                self.restart_checker(backend.id);
                Ok(format!(
                    "revived {name}: its server is back before anyone noticed it was gone"
                ))
            }
            _ => Err(CommandError::Conflict(format!("{name} is {state}, not killed"))),
        }
    }

    fn drain(&mut self, name: &str, timeout: Duration) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let state = self.shared.router.topology().state(backend.id);
        if state != BackendState::Up {
            return Err(CommandError::Conflict(format!(
                "{name} is {state}; only an up backend can drain"
            )));
        }
        let summary = self.shared.router.set_state(name, BackendState::Draining)?;
        if let Some(r) = self.runtimes.get_mut(&backend.id) {
            r.drain_deadline = Some(Instant::now() + timeout);
        }
        Ok(with_summary(
            format!(
                "draining {name}: no new sessions; it leaves when empty or in {}s",
                timeout.as_secs()
            ),
            summary,
        ))
    }

    fn undrain(&mut self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let state = self.shared.router.topology().state(backend.id);
        if !matches!(state, BackendState::Draining | BackendState::Drained) {
            return Err(CommandError::Conflict(format!("{name} is {state}, not draining")));
        }
        if let Some(r) = self.runtimes.get_mut(&backend.id) {
            r.drain_deadline = None;
        }
        let summary = self.shared.router.set_state(name, BackendState::Up)?;
        Ok(with_summary(
            format!("undrained {name}: it takes new sessions again"),
            summary,
        ))
    }

    fn extend(&mut self, name: &str, by: Duration) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let Some(deadline) = self
            .runtimes
            .get_mut(&backend.id)
            .and_then(|r| r.drain_deadline.as_mut())
        else {
            return Err(CommandError::Conflict(format!("{name} is not draining")));
        };
        let left = deadline.saturating_duration_since(Instant::now()) + by;
        if left > super::command::MAX_DRAIN {
            return Err(CommandError::BadValue(format!(
                "the drain of {name} would last {}s more; at most 86400",
                left.as_secs()
            )));
        }
        *deadline = Instant::now() + left;
        Ok(format!(
            "extended the drain of {name} by {}s ({}s left)",
            by.as_secs(),
            left.as_secs()
        ))
    }

    fn weight(&mut self, name: &str, weight: u32) -> Result<String, CommandError> {
        self.find(name)?;
        let summary = self.shared.router.set_weight(name, weight)?;
        Ok(format!("{name}: weight {weight} — {summary}"))
    }

    async fn add_demo(&mut self) -> Result<String, CommandError> {
        let topo = self.shared.router.topology();
        let n = (1..).find(|i| topo.find(&format!("api-{i}")).is_none()).unwrap_or(1);
        let name = format!("api-{n}");
        let demo = DemoBackend::start(&name, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = demo.addr();
        let spec = BackendSpec::new(&name, addr, 1)?;
        if let Err(e) = self.register(spec, BackendKind::Demo(demo.clone()), BackendState::Down) {
            demo.kill().await;
            return Err(e);
        }
        let rise = self.config().health.rise;
        Ok(format!(
            "added demo backend {name} at {addr}; it takes traffic after {rise} good health checks"
        ))
    }

    fn add_external(&mut self, spec: BackendSpec) -> Result<String, CommandError> {
        let (name, addr) = (spec.name.clone(), spec.addr);
        self.register(spec, BackendKind::External, BackendState::Down)?;
        let rise = self.config().health.rise;
        Ok(format!(
            "added {name} at {addr}; it takes traffic after {rise} good health checks"
        ))
    }

    pub(super) async fn remove(&mut self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let summary = self.shared.router.remove_backend(name)?;
        self.close_connections(backend.id);
        self.shared.upstreams.unregister(backend.id);
        self.rebalance();
        if let Some(r) = self.runtimes.remove(&backend.id) {
            if let Some(t) = r.checker {
                t.abort();
            }
            if let BackendKind::Demo(d) = r.kind {
                d.kill().await;
            }
        }
        Ok(with_summary(format!("removed {name}"), summary))
    }

    fn traffic(&mut self, on: bool) -> Result<String, CommandError> {
        match (on, &self.traffic) {
            (true, None) => self.start_traffic(),
            (true, Some(t)) => t.resume(),
            (false, Some(t)) => t.pause(),
            (false, None) => {}
        }
        Ok(format!("traffic {}", if on { "on" } else { "off" }))
    }

    fn traffic_rate(&mut self, rate: f64) -> Result<String, CommandError> {
        if !(rate > 0.0 && rate <= MAX_TRAFFIC_RATE) {
            return Err(CommandError::BadValue(format!(
                "traffic rate {rate}: use more than 0 and at most {MAX_TRAFFIC_RATE} requests/s"
            )));
        }
        if let Some(t) = &self.traffic {
            t.set_rate(rate);
        }
        Ok(format!("traffic rate {rate:.0} requests/s"))
    }

    /// Starts the synthetic clients; what they notice goes to the bus.
    pub(super) fn start_traffic(&mut self) {
        let config = self.config();
        let t = &config.traffic;
        let (tx, mut rx) = mpsc::channel(1024);
        let traffic = Traffic::start(
            self.shared.proxy_addr,
            TrafficConfig {
                clients: t.clients,
                rate: t.rate,
                nat_share: t.nat_share,
                ..TrafficConfig::default()
            },
            tx,
            false,
        );
        self.shared.traffic.store(Some(Arc::new(traffic.probe())));
        self.traffic = Some(traffic);
        let bus = Arc::clone(&self.shared.bus);
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let TrafficEvent::LostSession { client, backend } = &e {
                    tracing::info!(
                        "client-{client} lost its session on {}",
                        backend.as_deref().unwrap_or("?")
                    );
                }
                bus.publish(BusEvent::Traffic(e));
            }
        });
    }

    /// Closes every connection to a backend (kill, drain timeout, removal).
    pub(super) fn close_connections(&self, id: BackendId) {
        if let Some(u) = self.shared.upstreams.get(id) {
            u.close_all();
        }
    }
}

/// `text`, and what the change moved when it moved anything.
fn with_summary(text: String, summary: Option<crate::router::RemapSummary>) -> String {
    match summary {
        Some(s) => format!("{text} — {s}"),
        None => text,
    }
}
