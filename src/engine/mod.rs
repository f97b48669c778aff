//! The engine: one task owns topology and runs every change in arrival
//! order through one bounded queue — commands from the dashboard's keys,
//! the admin API, scenarios and configuration reloads, and the results of
//! active and passive health checks. No proxy thread ever runs a remap.
//!
//! Files: the task and its queue here; start-up in `start`; each command in
//! `commands`; health verdicts in `verdicts`; the once-a-second work
//! (expiry, drains, figures) in `tick`; read-only views in `view`; a
//! configuration reload in `reload`; followed sessions' histories in `follow`.

pub mod command;
mod commands;
pub mod follow;
pub mod health;
mod reload;
mod start;
mod tick;
mod verdicts;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bus::EventBus;
use crate::clock::Clock;
use crate::config::Config;
use crate::demo::backend::DemoBackend;
use crate::demo::traffic::{Traffic, TrafficProbe};
use crate::proxy::upstream::Upstreams;
use crate::proxy::{PassiveHealth, Proxy};
use crate::router::{Backend, BackendId, Router};
use crate::shutdown::ShutdownSignal;
use crate::store::RedisStore;
pub use command::{Command, CommandError};
use health::{CheckFailure, HealthProgress};
pub use start::{BindError, StartError, Started, start};

/// Messages the engine task takes, in arrival order.
#[derive(Debug)]
pub(crate) enum Message {
    /// An operator action and where to send its outcome.
    Command {
        command: Command,
        reply: oneshot::Sender<Result<String, CommandError>>,
    },
    /// An active health check's result.
    Checked {
        backend: BackendId,
        /// The checker's generation: results from an older one are ignored.
        generation: u64,
        result: Result<(), CheckFailure>,
    },
    /// The proxy's connects to a backend failed `fall` times in a row.
    ConnectsFailing { backend: BackendId, why: String },
    /// Ringside ran out of its own resources (never a backend's fault).
    RingsideShort { why: String },
    /// Stop the synthetic clients (first step of a shutdown).
    StopTraffic(oneshot::Sender<()>),
    /// Stop checkers and demo backends, then end the task.
    Stop(oneshot::Sender<()>),
}

/// Queue length of the engine task.
const QUEUE: usize = 1024;

/// Sends commands to the engine task; clones share the queue.
#[derive(Debug, Clone)]
pub struct Commands {
    tx: mpsc::Sender<Message>,
}

/// The outcome of a submitted command, once the engine has carried it out.
pub type Pending = oneshot::Receiver<Result<String, CommandError>>;

impl Commands {
    /// Carries out a command after those before it; returns what it did, in
    /// words for the log.
    pub async fn execute(&self, command: Command) -> Result<String, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Message::Command { command, reply })
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }

    /// Queues a command without waiting, so that commands submitted one
    /// after another run in that order; the outcome arrives on the receiver.
    pub fn submit(&self, command: Command) -> Result<Pending, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Message::Command { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy,
                mpsc::error::TrySendError::Closed(_) => CommandError::Stopped,
            })?;
        Ok(rx)
    }

    /// Stops the synthetic clients (the first step of a shutdown).
    pub(crate) async fn stop_traffic(&self) {
        self.ask(Message::StopTraffic).await;
    }

    /// Stops checkers and demo backends and ends the engine task.
    pub(crate) async fn stop(&self) {
        self.ask(Message::Stop).await;
    }

    async fn ask(&self, message: impl FnOnce(oneshot::Sender<()>) -> Message) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(message(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl PassiveHealth for Commands {
    fn connects_failing(&self, backend: &Backend, why: String) {
        // Never waits: a full queue has health news enough already.
        let _ = self.tx.try_send(Message::ConnectsFailing {
            backend: backend.id,
            why,
        });
    }

    fn ringside_short(&self, why: String) {
        let _ = self.tx.try_send(Message::RingsideShort { why });
    }
}

/// How a backend is run.
#[derive(Debug, Clone)]
pub enum BackendKind {
    /// An in-process demo backend that a kill really stops.
    Demo(DemoBackend),
    /// Someone else's server.
    External,
}

/// What views see of a backend's health and operator state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeView {
    /// A demo backend (in-process).
    pub demo: bool,
    /// Checks in a row.
    pub health: HealthProgress,
    /// Added or revived and not yet up: waiting for `rise` good checks.
    pub checking: bool,
    /// Time from the last kill to its detection, until a revive.
    pub detected_after: Option<Duration>,
    /// A drain's deadline.
    pub drain_deadline: Option<Instant>,
    /// Why the last check or connect failed, while it is failing.
    pub last_failure: Option<String>,
}

/// State shared by the engine task and everything that reads from it.
pub struct Shared {
    /// Router time.
    pub clock: Clock,
    /// Events for the dashboard, the log and `/api/events`.
    pub bus: Arc<EventBus>,
    /// The routing brain.
    pub router: Arc<Router>,
    /// Per-backend proxy state (pools, latency).
    pub upstreams: Arc<Upstreams>,
    /// The proxy (its counters).
    pub proxy: Arc<Proxy>,
    /// The shared session store, when configured.
    pub store: Option<Arc<RedisStore>>,
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    config: ArcSwap<Config>,
    runtimes: ArcSwap<HashMap<BackendId, RuntimeView>>,
    traffic: ArcSwapOption<TrafficProbe>,
    /// The followed sessions' histories.
    follows: follow::Follows,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("proxy", &self.proxy_addr)
            .field("admin", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The configuration in force (a reload replaces it).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// What the engine knows of each backend beyond the router.
    pub fn runtimes(&self) -> Arc<HashMap<BackendId, RuntimeView>> {
        self.runtimes.load_full()
    }

    /// The synthetic clients, when they run.
    pub fn traffic(&self) -> Option<Arc<TrafficProbe>> {
        self.traffic.load_full()
    }
}

/// What the engine keeps per backend besides the router's view.
#[derive(Debug)]
struct Runtime {
    kind: BackendKind,
    health: HealthProgress,
    checking: bool,
    /// Set by a kill of a demo backend until the balancer notices.
    killed_at: Option<Instant>,
    /// The measured time from the last kill to the state going down.
    detected_after: Option<Duration>,
    drain_deadline: Option<Instant>,
    last_failure: Option<String>,
    /// The checker's generation; bumped whenever its results must restart.
    generation: u64,
    checker: Option<JoinHandle<()>>,
}

impl Runtime {
    fn view(&self) -> RuntimeView {
        RuntimeView {
            demo: matches!(self.kind, BackendKind::Demo(_)),
            health: self.health,
            checking: self.checking,
            detected_after: self.detected_after,
            drain_deadline: self.drain_deadline,
            last_failure: self.last_failure.clone(),
        }
    }

    /// Counting starts over (a kill, a revive, a new checker).
    fn reset_health(&mut self) {
        self.health = HealthProgress::default();
        self.last_failure = None;
    }
}

/// The engine task's state: the one owner of topology changes.
struct Engine {
    shared: Arc<Shared>,
    runtimes: HashMap<BackendId, Runtime>,
    traffic: Option<Traffic>,
    /// For checkers to report to.
    tx: mpsc::Sender<Message>,
    shutdown: ShutdownSignal,
    generations: u64,
    /// Requests and 5xx answers at the last tick.
    last_second: (u64, u64),
    /// Gives memory back after many connections closed or parked.
    trimmer: crate::memory::Trimmer,
    /// Proxy threads (for the descriptor budget).
    threads: usize,
    /// When ringside's own shortage was last reported (at most every 10 s).
    short_reported: Option<Instant>,
    /// Shortages since then.
    short_since: u64,
}

impl Engine {
    /// Runs messages in arrival order, and the once-a-second work, until told to stop.
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut second = tokio::time::interval(Duration::from_secs(1));
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                m = rx.recv() => m,
                _ = second.tick() => {
                    self.tick();
                    continue;
                }
            };
            match message {
                Some(Message::Command { command, reply }) => {
                    let label = command.label();
                    let topology = command.is_topology();
                    let result = self.apply(command).await;
                    match &result {
                        Ok(text) => {
                            tracing::info!("{text}");
                            self.shared.bus.publish(crate::bus::BusEvent::Command(text.clone()));
                            if topology && let Some(store) = &self.shared.store {
                                store.announce(text);
                            }
                        }
                        Err(e) => tracing::info!("refused: {label}: {e}"),
                    }
                    self.publish_runtimes();
                    let _ = reply.send(result);
                }
                Some(Message::Checked {
                    backend,
                    generation,
                    result,
                }) => {
                    self.checked(backend, generation, result);
                    self.publish_runtimes();
                }
                Some(Message::ConnectsFailing { backend, why }) => {
                    self.connects_failing(backend, why);
                    self.publish_runtimes();
                }
                Some(Message::RingsideShort { why }) => self.ringside_short(why),
                Some(Message::StopTraffic(done)) => {
                    if let Some(t) = self.traffic.take() {
                        t.stop().await;
                    }
                    self.shared.traffic.store(None);
                    let _ = done.send(());
                }
                Some(Message::Stop(done)) => {
                    self.stop().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    self.stop().await;
                    return;
                }
            }
        }
    }

    /// Stops checkers, the clients and the demo backends.
    async fn stop(&mut self) {
        if let Some(t) = self.traffic.take() {
            t.stop().await;
        }
        for r in self.runtimes.values_mut() {
            if let Some(c) = r.checker.take() {
                c.abort();
            }
            if let BackendKind::Demo(d) = &r.kind {
                d.kill().await;
            }
        }
    }

    /// Publishes what views see of every backend.
    fn publish_runtimes(&self) {
        let views = self.runtimes.iter().map(|(id, r)| (*id, r.view())).collect();
        self.shared.runtimes.store(Arc::new(views));
    }

    fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    /// Ringside ran short of its own resources: logged and shown, at most
    /// every ten seconds, never blamed on a backend.
    fn ringside_short(&mut self, why: String) {
        self.short_since += 1;
        if self
            .short_reported
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        let text = match self.short_since {
            1 => why,
            n => format!("{why} ({n} times since the last report)"),
        };
        tracing::error!("{text}");
        self.shared.bus.publish(crate::bus::BusEvent::Command(text));
        self.short_reported = Some(Instant::now());
        self.short_since = 0;
    }

    /// How the proxy keeps connections to a backend, as the descriptor
    /// budget allows with the backends there are now.
    fn upstream_config(&self) -> crate::proxy::upstream::UpstreamConfig {
        let config = self.config();
        let backends = self.shared.router.topology().members().count().max(1);
        let budget = crate::limits::budget(&config, crate::limits::fd_limit(), backends, self.threads);
        crate::proxy::upstream::UpstreamConfig {
            max_idle: budget.max_idle,
            connect_timeout: Duration::from_millis(config.proxy.connect_timeout_ms),
            max_conns: budget.max_conns_per_backend,
            max_queue: budget.max_queue,
        }
    }

    /// Shares the descriptor budget out again (a backend came or went).
    fn rebalance(&self) {
        self.shared.upstreams.set_max_conns(self.upstream_config().max_conns);
    }

    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }
}
