//! The engine: the one owner of topology changes. It starts the proxy, the
//! demo world, health checks, drains and the session sweeper, and carries out
//! every [`Command`] — from the dashboard's keys, the admin API or a script —
//! the same way.

pub mod command;
pub mod health;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bus::{BusEvent, EventBus};
use crate::clock::Clock;
use crate::config::Config;
use crate::demo::backend::DemoBackend;
use crate::demo::traffic::{Traffic, TrafficConfig, TrafficEvent};
use crate::proxy::headers::CookieAttributes;
use crate::proxy::upstream::Upstreams;
use crate::proxy::{PassiveHealth, Proxy, ProxySettings};
use crate::router::affinity::{Affinity, AffinityConfig, IpNet};
use crate::router::lb_cookie::CookieCodec;
use crate::router::{Backend, BackendId, BackendSpec, BackendState, Router, RouterConfig};
use crate::store::RedisStore;
pub use command::{Command, CommandError};
use health::{HealthProgress, Verdict};

/// The environment variable that may hold the cookie secret.
pub const SECRET_ENV: &str = "RINGSIDE_COOKIE_SECRET";

/// Why ringside could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listening address could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// "proxy", "admin API" or "demo backend api-1".
        what: String,
        /// The OS error (e.g. address in use).
        source: std::io::Error,
    },
    /// The configuration is invalid (checked again here, whoever built it).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The session store address is unusable.
    #[error(transparent)]
    Store(#[from] crate::store::BadStoreUrl),
    /// The cookie secret is unusable.
    #[error(transparent)]
    Secret(#[from] crate::router::lb_cookie::ShortSecret),
    /// The router refused a backend.
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    /// A backend could not be registered.
    #[error(transparent)]
    Backend(#[from] CommandError),
}

/// How a backend is run.
#[derive(Debug, Clone)]
pub enum BackendKind {
    /// An in-process demo backend that a kill really stops.
    Demo(DemoBackend),
    /// Someone else's server.
    External,
}

/// What the engine keeps per backend besides the router's view.
#[derive(Debug)]
struct Runtime {
    kind: BackendKind,
    health: HealthProgress,
    /// Set by a kill of a demo backend until the balancer notices.
    killed_at: Option<Instant>,
    /// The measured time from the last kill to the state going down.
    detected_after: Option<Duration>,
    /// A drain in progress: its deadline and its task.
    drain: Option<(Instant, JoinHandle<()>)>,
    health_task: Option<JoinHandle<()>>,
}

/// The running balancer.
pub struct Engine {
    config: Config,
    clock: Clock,
    bus: Arc<EventBus>,
    router: Arc<Router>,
    affinity: Arc<Affinity>,
    upstreams: Arc<Upstreams>,
    proxy: Arc<Proxy>,
    store: Option<Arc<RedisStore>>,
    runtimes: Mutex<HashMap<BackendId, Runtime>>,
    traffic: Mutex<Option<Traffic>>,
    shutdown: watch::Sender<bool>,
    proxy_addr: SocketAddr,
    /// The proxy's threads, joined at shutdown.
    proxy_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set once the engine is shared, for tasks it spawns later.
    this: std::sync::OnceLock<std::sync::Weak<Engine>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("proxy", &self.proxy_addr)
            .finish_non_exhaustive()
    }
}

/// A started balancer: the engine and its bound addresses.
#[derive(Debug)]
pub struct Running {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// The admin API's listener, bound and not yet served.
    pub admin_listener: TcpListener,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Binds everything and starts the proxy, backends, health checks and
    /// sweeper. With no external backend in `config`, demo backends start.
    /// `traffic` starts the synthetic clients.
    pub async fn start(mut config: Config, traffic: bool) -> Result<Running, StartError> {
        if config.affinity.secret.is_none() {
            config.affinity.secret = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        }
        config.validate("the configuration")?;
        let clock = Clock::start();
        let bus = Arc::new(EventBus::new(clock));
        let router_config = RouterConfig {
            vnodes_per_weight: config.routing.vnodes,
            vnode_hash: config.routing.vnode_hash,
            placement: config.routing.placement,
            bound_factor: config.routing.bound_factor,
            idle_timeout_secs: config.sessions.idle_timeout_secs,
            max_sessions: config.sessions.max,
            seed: None,
        };
        let secret = config.affinity.secret.clone();
        let store = match (&config.sessions.store, &secret) {
            (Some(url), Some(secret)) => {
                let store = RedisStore::new(
                    url,
                    config.sessions.idle_timeout_secs,
                    Duration::from_millis(config.sessions.store_timeout_ms),
                    Arc::clone(&bus),
                )?;
                Some((store, secret.as_bytes()))
            }
            _ => None,
        };
        let router = Arc::new(match &store {
            Some((store, secret)) => Router::mirrored(router_config, bus.clone(), secret, store.clone()),
            None => Router::new(router_config, bus.clone()),
        });
        let store = store.map(|(s, _)| s);
        let a = &config.affinity;
        let codec = CookieCodec::new(&a.cookie_name, a.protection, secret.as_deref().map(str::as_bytes))?;
        if codec.is_ephemeral() {
            tracing::warn!(
                "no cookie secret configured ({SECRET_ENV} or affinity.secret): balancer cookies will not survive a restart"
            );
        }
        let affinity = Arc::new(Affinity::new(
            AffinityConfig {
                mode: a.mode,
                app_cookie: a.app_cookie.clone(),
                header: http::HeaderName::from_bytes(a.header.as_bytes())
                    .unwrap_or(http::HeaderName::from_static("x-session-id")),
                query_param: a.query_param.clone(),
                trusted_proxies: a
                    .trusted_proxies
                    .iter()
                    .filter_map(|p| p.parse::<IpNet>().ok())
                    .collect(),
            },
            codec,
        ));

        let bind = |addr: SocketAddr, what: String| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        // A plain bind first: SO_REUSEPORT would quietly share a port that
        // another ringside holds, and that must be an error.
        let proxy_err = |source| StartError::Bind {
            addr: config.listen,
            what: "proxy".into(),
            source,
        };
        let probe = std::net::TcpListener::bind(config.listen).map_err(proxy_err)?;
        let port = probe.local_addr().map_err(proxy_err)?;
        drop(probe);
        let proxy_listener = crate::proxy::reuseport_listener(port).map_err(proxy_err)?;
        let admin_listener = bind(config.admin.listen, "admin API".into()).await?;
        let proxy_addr = proxy_listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            what: "proxy".into(),
            source,
        })?;

        let upstreams = Arc::new(Upstreams::default());
        let health_relay = Arc::new(HealthRelay(std::sync::OnceLock::new()));
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&router),
            Arc::clone(&affinity),
            Arc::clone(&upstreams),
            clock,
            ProxySettings {
                connect_timeout: Duration::from_millis(config.proxy.connect_timeout_ms),
                backend_timeout: Duration::from_millis(config.proxy.backend_timeout_ms),
                header_read_timeout: Duration::from_millis(config.proxy.header_read_timeout_ms),
                max_header_bytes: config.proxy.max_header_bytes,
                retries: config.proxy.retries,
                fall: config.health.fall,
                cookie: CookieAttributes {
                    secure: a.secure,
                    max_age_secs: a.max_age_secs,
                },
            },
            health_relay.clone(),
            store.clone(),
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let engine = Arc::new(Engine {
            config,
            clock,
            bus,
            router,
            affinity,
            upstreams,
            proxy: Arc::clone(&proxy),
            store: store.clone(),
            runtimes: Mutex::new(HashMap::new()),
            traffic: Mutex::new(None),
            shutdown,
            proxy_addr,
            proxy_threads: Mutex::new(Vec::new()),
            this: std::sync::OnceLock::new(),
        });
        let _ = engine.this.set(Arc::downgrade(&engine));
        let _ = health_relay.0.set(Arc::downgrade(&engine));

        if engine.config.backends.is_empty() {
            for i in 0..engine.config.demo.backends {
                let port = match engine.config.demo.base_port {
                    0 => 0,
                    base => base.saturating_add(i as u16),
                };
                let name = format!("api-{}", i + 1);
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let demo = DemoBackend::start(&name, addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr,
                        what: format!("demo backend {name}"),
                        source,
                    })?;
                engine.register(BackendSpec::new(&name, demo.addr(), 1)?, BackendKind::Demo(demo))?;
            }
        } else {
            for b in engine.config.backends.clone() {
                engine.register(BackendSpec::new(&b.name, b.addr, b.weight)?, BackendKind::External)?;
            }
        }

        let shards = match engine.config.proxy.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let threads = proxy
            .serve_sharded(proxy_listener, proxy_addr, shards, shutdown_rx.clone())
            .map_err(|source| StartError::Bind {
                addr: proxy_addr,
                what: "proxy".into(),
                source,
            })?;
        *lock(&engine.proxy_threads) = threads;
        if let Some(store) = &store {
            tokio::spawn(Arc::clone(store).run(Arc::clone(&engine.router), shutdown_rx.clone()));
        }
        tokio::spawn(sweeper(Arc::downgrade(&engine), shutdown_rx));
        if traffic {
            engine.start_traffic();
        }
        Ok(Running {
            engine,
            proxy_addr,
            admin_listener,
        })
    }

    /// Adds a backend to the router, the proxy and the health checker.
    fn register(&self, spec: BackendSpec, kind: BackendKind) -> Result<BackendId, CommandError> {
        let id = self.router.add_backend(&spec)?;
        let backend = Arc::clone(self.router.topology().backend(id));
        self.upstreams
            .register(&backend, self.config.proxy.pool_idle_per_backend);
        let interval = match kind {
            BackendKind::Demo(_) => self.config.demo.health_interval_ms,
            BackendKind::External => self.config.health.interval_ms,
        };
        let task = self.this.get().map(|weak| {
            tokio::spawn(health_loop(
                weak.clone(),
                backend,
                Duration::from_millis(interval),
                self.shutdown.subscribe(),
            ))
        });
        lock(&self.runtimes).insert(
            id,
            Runtime {
                kind,
                health: HealthProgress::default(),
                killed_at: None,
                detected_after: None,
                drain: None,
                health_task: task,
            },
        );
        Ok(id)
    }

    /// The shared session store, when one is configured.
    pub fn store(&self) -> Option<&Arc<RedisStore>> {
        self.store.as_ref()
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The affinity extractor.
    pub fn affinity(&self) -> &Arc<Affinity> {
        &self.affinity
    }

    /// The event bus.
    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    /// The proxy.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Per-backend proxy state (pools, latency).
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Router time.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Where the proxy listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// A receiver that turns true at shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops accepting and the demo clients, lets requests in flight finish
    /// (at most [`crate::proxy::SHUTDOWN_GRACE`]), then stops health checks
    /// and demo backends.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let traffic = lock(&self.traffic).take();
        if let Some(t) = traffic {
            t.stop().await;
        }
        // The proxy finishes the requests in flight (at most
        // `SHUTDOWN_GRACE`) before the demo backends that serve them stop.
        let threads = std::mem::take(&mut *lock(&self.proxy_threads));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let demos: Vec<DemoBackend> = {
            let mut runtimes = lock(&self.runtimes);
            runtimes
                .values_mut()
                .filter_map(|r| {
                    if let Some((_, task)) = r.drain.take() {
                        task.abort();
                    }
                    if let Some(task) = r.health_task.take() {
                        task.abort();
                    }
                    match &r.kind {
                        BackendKind::Demo(d) => Some(d.clone()),
                        BackendKind::External => None,
                    }
                })
                .collect()
        };
        for d in demos {
            d.kill().await;
        }
    }

    /// Carries out a command; returns what it did, in words for the log.
    pub async fn execute(&self, command: Command) -> Result<String, CommandError> {
        let result = self.apply(command).await;
        if let Ok(text) = &result {
            tracing::info!("{text}");
            self.bus.publish(BusEvent::Command(text.clone()));
        }
        result
    }

    async fn apply(&self, command: Command) -> Result<String, CommandError> {
        match command {
            Command::Kill(name) => self.kill(&name).await,
            Command::Revive(name) => self.revive(&name).await,
            Command::Drain { backend, timeout } => {
                let timeout = timeout.unwrap_or(Duration::from_secs(self.config.drain.timeout_secs));
                self.drain(&backend, timeout)
            }
            Command::Undrain(name) => self.undrain(&name),
            Command::Extend { backend, by } => self.extend(&backend, by),
            Command::Weight { backend, weight } => {
                let summary = self.router.set_weight(&backend, weight)?;
                Ok(format!("{backend}: weight {weight} — {summary}"))
            }
            Command::AddDemo => self.add_demo().await,
            Command::Add(spec) => {
                let name = spec.name.clone();
                let addr = spec.addr;
                self.register(spec, BackendKind::External)?;
                Ok(format!("added {name} at {addr}"))
            }
            Command::Remove(name) => self.remove(&name).await,
            Command::Vnodes(n) => {
                let summary = self.router.set_vnodes(n)?;
                Ok(format!("{n} virtual nodes per backend — {summary}"))
            }
            Command::Placement(p) => {
                self.router.set_placement(p);
                Ok(format!("placement is now {p}"))
            }
            Command::Affinity(m) => {
                self.affinity.set_mode(m);
                Ok(format!("affinity is now {m}"))
            }
            Command::Traffic(on) => {
                let running = lock(&self.traffic).as_ref().map(|t| t.is_running());
                match (on, running) {
                    (true, None) => self.start_traffic(),
                    (true, Some(_)) => lock(&self.traffic).as_ref().map_or((), |t| t.resume()),
                    (false, Some(_)) => lock(&self.traffic).as_ref().map_or((), |t| t.pause()),
                    (false, None) => {}
                }
                Ok(format!("traffic {}", if on { "on" } else { "off" }))
            }
            Command::TrafficRate(rate) => {
                if !(rate > 0.0 && rate <= 100_000.0) {
                    return Err(CommandError::BadValue(format!(
                        "traffic rate {rate}: use more than 0 and at most 100000 requests/s"
                    )));
                }
                if let Some(t) = lock(&self.traffic).as_ref() {
                    t.set_rate(rate);
                }
                Ok(format!("traffic rate {rate:.0} requests/s"))
            }
        }
    }

    fn find(&self, name: &str) -> Result<Arc<Backend>, CommandError> {
        self.router
            .topology()
            .find(name)
            .cloned()
            .ok_or_else(|| CommandError::UnknownBackend(name.to_owned()))
    }

    async fn kill(&self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let state = self.router.topology().state(backend.id);
        if state == BackendState::Killed {
            return Err(CommandError::Conflict(format!("{name} is already killed")));
        }
        let kind = lock(&self.runtimes).get(&backend.id).map(|r| r.kind.clone());
        match kind {
            Some(BackendKind::Demo(demo)) => {
                if let Some(r) = lock(&self.runtimes).get_mut(&backend.id) {
                    r.killed_at = Some(Instant::now());
                    r.detected_after = None;
                    // A kill ends a drain: the backend must be found dead,
                    // not retired as "drained" once its sessions ran elsewhere.
                    if let Some((_, task)) = r.drain.take() {
                        task.abort();
                    }
                }
                demo.kill().await;
                Ok(format!(
                    "killed {name}: its server stopped; the balancer will notice by failed connects and health checks"
                ))
            }
            Some(BackendKind::External) => {
                if let Some((_, task)) = lock(&self.runtimes).get_mut(&backend.id).and_then(|r| r.drain.take()) {
                    task.abort();
                }
                let summary = self.router.set_state(name, BackendState::Killed)?;
                if let Some(u) = self.upstreams.get(backend.id) {
                    u.pool.close_all();
                }
                Ok(match summary {
                    Some(s) => format!("killed {name} (forced out) — {s}"),
                    None => format!("killed {name} (forced out)"),
                })
            }
            None => Err(CommandError::UnknownBackend(name.to_owned())),
        }
    }

    async fn revive(&self, name: &str) -> Result<String, CommandError> {
        let topo = self.router.topology();
        let backend = (0..topo.backend_count())
            .rev()
            .map(|i| Arc::clone(topo.backend(BackendId(i as u32))))
            .find(|b| &*b.name == name)
            .ok_or_else(|| CommandError::UnknownBackend(name.to_owned()))?;
        let state = topo.state(backend.id);
        let kind = lock(&self.runtimes).get(&backend.id).map(|r| r.kind.clone());
        if let Some(BackendKind::Demo(demo)) = &kind
            && !demo.is_running()
        {
            demo.revive().await?;
            if let Some(r) = lock(&self.runtimes).get_mut(&backend.id) {
                r.killed_at = None;
                r.health = HealthProgress::default();
            }
        }
        match state {
            BackendState::Killed => {
                self.router.set_state(name, BackendState::Down)?;
                Ok(format!(
                    "revived {name}: back to health checking (up after {} good checks)",
                    self.config.health.rise
                ))
            }
            BackendState::Removed => {
                self.router.set_state(name, BackendState::Down)?;
                Ok(format!("returned {name} to service: health checks bring it up"))
            }
            _ if kind.is_some() => Ok(format!("revived {name}")),
            _ => Err(CommandError::Conflict(format!("{name} is {state}, not killed"))),
        }
    }

    fn drain(&self, name: &str, timeout: Duration) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let state = self.router.topology().state(backend.id);
        if state != BackendState::Up {
            return Err(CommandError::Conflict(format!(
                "{name} is {state}; only an up backend can drain"
            )));
        }
        self.router.set_state(name, BackendState::Draining)?;
        let deadline = Instant::now() + timeout;
        let task = tokio::spawn(drain_loop(
            self.this.get().cloned().unwrap_or_default(),
            Arc::clone(&backend),
        ));
        if let Some(r) = lock(&self.runtimes).get_mut(&backend.id) {
            if let Some((_, old)) = r.drain.replace((deadline, task)) {
                old.abort();
            }
        }
        Ok(format!(
            "draining {name}: no new sessions; it leaves when empty or in {}s",
            timeout.as_secs()
        ))
    }

    fn undrain(&self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let drain = lock(&self.runtimes).get_mut(&backend.id).and_then(|r| r.drain.take());
        let Some((_, task)) = drain else {
            return Err(CommandError::Conflict(format!("{name} is not draining")));
        };
        task.abort();
        self.router.set_state(name, BackendState::Up)?;
        Ok(format!("undrained {name}: it takes new sessions again"))
    }

    fn extend(&self, name: &str, by: Duration) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let mut runtimes = lock(&self.runtimes);
        let Some((deadline, _)) = runtimes.get_mut(&backend.id).and_then(|r| r.drain.as_mut()) else {
            return Err(CommandError::Conflict(format!("{name} is not draining")));
        };
        *deadline += by;
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        Ok(format!(
            "extended the drain of {name} by {}s ({left}s left)",
            by.as_secs()
        ))
    }

    async fn add_demo(&self) -> Result<String, CommandError> {
        let topo = self.router.topology();
        let n = (1..).find(|i| topo.find(&format!("api-{i}")).is_none()).unwrap_or(1);
        let name = format!("api-{n}");
        let demo = DemoBackend::start(&name, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = demo.addr();
        let spec = BackendSpec::new(&name, addr, 1)?;
        self.register(spec, BackendKind::Demo(demo))?;
        Ok(format!("added demo backend {name} at {addr}"))
    }

    async fn remove(&self, name: &str) -> Result<String, CommandError> {
        let backend = self.find(name)?;
        let summary = self.router.remove_backend(name)?;
        let runtime = lock(&self.runtimes).remove(&backend.id);
        if let Some(u) = self.upstreams.get(backend.id) {
            u.pool.close_all();
        }
        if let Some(r) = runtime {
            if let Some((_, t)) = r.drain {
                t.abort();
            }
            if let Some(t) = r.health_task {
                t.abort();
            }
            if let BackendKind::Demo(d) = r.kind {
                d.kill().await;
            }
        }
        Ok(format!("removed {name} — {summary}"))
    }

    fn start_traffic(&self) {
        let t = &self.config.traffic;
        let (tx, mut rx) = mpsc::channel(1024);
        let traffic = Traffic::start(
            self.proxy_addr,
            TrafficConfig {
                clients: t.clients,
                rate: t.rate,
                nat_share: t.nat_share,
                ..TrafficConfig::default()
            },
            tx,
            false,
        );
        *lock(&self.traffic) = Some(traffic);
        let bus = Arc::clone(&self.bus);
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let TrafficEvent::LostSession { client, backend } = &e {
                    tracing::info!(
                        "client {client} lost its session on {}",
                        backend.as_deref().unwrap_or("?")
                    );
                }
                bus.publish(BusEvent::Traffic(e));
            }
        });
    }

    /// The synthetic clients' figures, when they run.
    pub fn traffic_stats(&self) -> Option<crate::demo::traffic::TrafficStats> {
        lock(&self.traffic).as_ref().map(|t| t.stats())
    }

    /// Whether the synthetic clients are sending, and at what rate.
    pub fn traffic_state(&self) -> Option<(bool, f64)> {
        lock(&self.traffic).as_ref().map(|t| (t.is_running(), t.rate()))
    }

    /// A backend stopped answering (health checks or connects): it goes down,
    /// or `killed` when an operator's kill explains it (then the time to
    /// detection is published).
    fn mark_down(&self, backend: &Arc<Backend>, by: &'static str) {
        let state = self.router.topology().state(backend.id);
        if !state.keeps_sessions() {
            return;
        }
        // Whatever was in progress is over: a drain ends, health counts restart.
        let killed_at = match lock(&self.runtimes).get_mut(&backend.id) {
            Some(r) => {
                if let Some((_, task)) = r.drain.take() {
                    task.abort();
                }
                r.health = HealthProgress::default();
                r.killed_at
            }
            None => None,
        };
        let to = if killed_at.is_some() {
            BackendState::Killed
        } else {
            BackendState::Down
        };
        if let Err(e) = self.router.set_state(&backend.name, to) {
            tracing::warn!("{}: {e}", backend.name);
            return;
        }
        if let Some(u) = self.upstreams.get(backend.id) {
            u.pool.close_all();
        }
        if let Some(at) = killed_at {
            let after = at.elapsed();
            if let Some(r) = lock(&self.runtimes).get_mut(&backend.id) {
                r.detected_after = Some(after);
                r.killed_at = None;
            }
            self.bus.publish(BusEvent::Detected {
                backend: backend.name.to_string(),
                after_ms: after.as_millis() as u64,
                by,
            });
            tracing::info!(
                "{} found dead by {by} {} ms after the kill",
                backend.name,
                after.as_millis()
            );
        } else {
            tracing::warn!("{} is down ({by})", backend.name);
        }
    }

    fn observe_health(&self, backend: &Arc<Backend>, ok: bool) {
        let state = self.router.topology().state(backend.id);
        let (rise, fall) = (self.config.health.rise, self.config.health.fall);
        let verdict = match lock(&self.runtimes).get_mut(&backend.id) {
            Some(r) => r.health.observe(ok, state.keeps_sessions(), rise, fall),
            None => return,
        };
        match verdict {
            Verdict::Down => self.mark_down(backend, "health-check"),
            Verdict::Up if state == BackendState::Down => {
                if let Err(e) = self.router.set_state(&backend.name, BackendState::Up) {
                    tracing::warn!("{}: {e}", backend.name);
                } else {
                    tracing::info!("{} is up ({rise} good checks)", backend.name);
                }
            }
            _ => {}
        }
    }

    /// Health progress and kill detection of a backend, for views.
    pub fn health_of(&self, id: BackendId) -> Option<(HealthProgress, Option<Duration>, Option<Duration>)> {
        lock(&self.runtimes).get(&id).map(|r| {
            let left = r
                .drain
                .as_ref()
                .map(|(d, _)| d.saturating_duration_since(Instant::now()));
            (r.health, r.detected_after, left)
        })
    }

    /// True for a demo backend.
    pub fn is_demo(&self, id: BackendId) -> bool {
        matches!(
            lock(&self.runtimes).get(&id).map(|r| &r.kind),
            Some(BackendKind::Demo(_))
        )
    }
}

/// Passes the proxy's passive-health reports to the engine.
struct HealthRelay(std::sync::OnceLock<std::sync::Weak<Engine>>);

impl PassiveHealth for HealthRelay {
    fn connects_failing(&self, backend: &Arc<Backend>) {
        if let Some(engine) = self.0.get().and_then(|w| w.upgrade()) {
            engine.mark_down(backend, "connect");
        }
    }
}

/// Checks one backend at `interval` until shutdown or removal.
async fn health_loop(
    engine: std::sync::Weak<Engine>,
    backend: Arc<Backend>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::proxy::stopped(&mut shutdown) => return,
        }
        let Some(e) = engine.upgrade() else { return };
        let state = e.router.topology().state(backend.id);
        let external = !e.is_demo(backend.id);
        // A killed external backend is in maintenance: not checked until revived.
        if state == BackendState::Removed || (state == BackendState::Killed && external) {
            continue;
        }
        let path = e.config.health.path.clone();
        let timeout = Duration::from_millis(e.config.health.timeout_ms).min(interval.max(Duration::from_millis(10)));
        drop(e);
        let ok = health::probe(backend.addr, &path, timeout).await;
        match engine.upgrade() {
            Some(e) => e.observe_health(&backend, ok),
            None => return,
        }
    }
}

/// Publishes a drain's progress every second and ends it when the backend is
/// empty or the deadline passes (then what is left is closed and moved).
async fn drain_loop(engine: std::sync::Weak<Engine>, backend: Arc<Backend>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let Some(e) = engine.upgrade() else { return };
        let Some(deadline) = lock(&e.runtimes)
            .get(&backend.id)
            .and_then(|r| r.drain.as_ref().map(|d| d.0))
        else {
            return;
        };
        let active = backend.counters.active();
        let sessions = backend.counters.sessions();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let done = if active == 0 && sessions == 0 {
            Some("empty")
        } else if remaining.is_zero() {
            Some("timeout")
        } else {
            None
        };
        e.bus.publish(BusEvent::Drain {
            backend: backend.name.to_string(),
            active,
            sessions,
            remaining_secs: remaining.as_secs(),
            done,
        });
        if let Some(reason) = done {
            if let Some(r) = lock(&e.runtimes).get_mut(&backend.id) {
                r.drain = None;
            }
            if let Some(u) = e.upstreams.get(backend.id) {
                u.pool.close_all();
            }
            e.proxy
                .stats()
                .closed_by_drain
                .fetch_add(active, std::sync::atomic::Ordering::Relaxed);
            match e.router.set_state(&backend.name, BackendState::Removed) {
                Ok(Some(summary)) => tracing::info!("drain of {} ended ({reason}) — {summary}", backend.name),
                Ok(None) => {}
                Err(err) => tracing::warn!("drain of {}: {err}", backend.name),
            }
            let closed = match active {
                0 => String::new(),
                1 => ", 1 connection closed".into(),
                n => format!(", {n} connections closed"),
            };
            e.bus.publish(BusEvent::Command(format!(
                "drain of {} ended ({reason}{closed})",
                backend.name
            )));
            return;
        }
    }
}

/// Once a second: expires idle sessions and publishes the second's figures.
async fn sweeper(engine: std::sync::Weak<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let (mut requests, mut errors) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::proxy::stopped(&mut shutdown) => return,
        }
        let Some(e) = engine.upgrade() else { return };
        e.router.sweep(e.clock.now());
        let stats = e.proxy.stats();
        let now_requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
        let now_errors = stats.by_class[5].load(std::sync::atomic::Ordering::Relaxed);
        e.bus.publish(BusEvent::Second {
            requests: now_requests - requests,
            errors: now_errors - errors,
            sessions: e.router.sessions().len(),
            lost_sessions: e.traffic_stats().map_or(0, |t| t.lost_sessions),
            dropped: e.bus.dropped(),
        });
        (requests, errors) = (now_requests, now_errors);
    }
}
