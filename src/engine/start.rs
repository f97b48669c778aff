//! Start-up: the router, the proxy on its threads, the session store, the
//! backends and the engine task, on listeners bound beforehand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{BackendKind, Commands, Engine, QUEUE, Shared};
use crate::bus::EventBus;
use crate::clock::Clock;
use crate::config::Config;
use crate::demo::backend::DemoBackend;
use crate::proxy::upstream::Upstreams;
use crate::proxy::{Proxy, ProxySettings};
use crate::router::affinity::Affinity;
use crate::router::lb_cookie::CookieCodec;
use crate::router::{BackendSpec, BackendState, Mirror, Router, RouterConfig};
use crate::shutdown::Shutdown;
use crate::store::{RedisStore, StoreSettings};

/// Why ringside could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Listening addresses could not be bound: every one that failed.
    #[error("{}", bind_errors(.0))]
    Bind(Vec<BindError>),
    /// The configuration is invalid (checked again here, whoever built it).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The session store address is unusable.
    #[error(transparent)]
    Store(#[from] crate::store::BadStoreUrl),
    /// The cookie secret is unusable.
    #[error(transparent)]
    Secret(#[from] crate::router::lb_cookie::ShortSecret),
    /// A backend could not be registered.
    #[error(transparent)]
    Backend(#[from] super::CommandError),
    /// A backend would send requests back to ringside itself.
    #[error("backend {name} at {addr} is ringside's own {what}: requests would loop; point it at another address")]
    Loop {
        /// The backend.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// "proxy" or "admin API".
        what: &'static str,
    },
}

/// One failure as it is, or several, one an indented line each.
fn bind_errors(errors: &[BindError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let lines: Vec<String> = many.iter().map(|e| format!("\n  {e}")).collect();
            format!("{} addresses are taken or unusable:{}", many.len(), lines.concat())
        }
    }
}

/// One address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {what}: {reason}{hint}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// "proxy", "admin API" or "demo backend api-1".
    pub what: String,
    /// The OS error, once.
    pub reason: String,
    /// The flag that changes the address, e.g. " (change it with --listen)".
    pub hint: String,
}

/// A started engine, before the admin API and signals are wired to it.
pub struct Started {
    /// Sends commands to the engine task.
    pub commands: Commands,
    /// What views read.
    pub shared: Arc<Shared>,
    /// The engine task.
    pub task: JoinHandle<()>,
    /// The proxy's threads, joined at shutdown.
    pub proxy_threads: Vec<std::thread::JoinHandle<()>>,
}

/// Builds the router and the proxy, starts the proxy's threads on `proxy`,
/// the demo backends on `demo` (when no external backend is configured),
/// health checks, the session store and the engine task; `traffic` starts
/// the synthetic clients.
pub async fn start(
    config: Config,
    proxy: std::net::TcpListener,
    admin_addr: SocketAddr,
    demo: Vec<(String, std::net::TcpListener)>,
    traffic: bool,
    shutdown: &Shutdown,
) -> Result<Started, StartError> {
    config.validate("the configuration")?;
    let proxy_addr = proxy.local_addr().map_err(|e| {
        StartError::Bind(vec![BindError {
            addr: config.listen,
            what: "proxy".into(),
            reason: e.to_string(),
            hint: String::new(),
        }])
    })?;
    for b in &config.backends {
        if let Some(what) = own_address(b.addr, proxy_addr, admin_addr) {
            return Err(StartError::Loop {
                name: b.name.clone(),
                addr: b.addr,
                what,
            });
        }
    }
    let clock = Clock::start();
    let bus = Arc::new(EventBus::new(clock));
    let secret = config.affinity.secret.clone();
    let store = match (&config.sessions.store, &secret) {
        (Some(url), Some(_)) => Some(RedisStore::new(
            StoreSettings {
                url: url.clone(),
                idle_timeout_secs: config.sessions.idle_timeout_secs,
                timeout: Duration::from_millis(config.sessions.store_timeout_ms),
                max_keys: config.sessions.store_max,
                clock,
                label: proxy_addr.to_string(),
            },
            Arc::clone(&bus),
        )?),
        _ => None,
    };
    let a = &config.affinity;
    let codec = CookieCodec::new(&a.cookie_name, a.protection, secret.as_deref().map(str::as_bytes))?;
    if codec.is_ephemeral() {
        tracing::warn!("the cookie secret is ephemeral: balancer cookies will not survive a restart");
    }
    let affinity = Affinity::new(config.affinity_config(), codec);
    let mirror = match (&store, &secret) {
        (Some(store), Some(secret)) => Some(Mirror {
            shared_secret: secret.as_bytes(),
            sink: Arc::clone(store) as Arc<dyn crate::router::SessionMirror>,
        }),
        _ => None,
    };
    let router = Arc::new(Router::build(
        router_config(&config),
        Arc::clone(&bus) as Arc<dyn crate::router::EventSink>,
        affinity,
        mirror,
    ));
    let (tx, rx) = mpsc::channel(QUEUE);
    let commands = Commands { tx: tx.clone() };
    let upstreams = Arc::new(Upstreams::default());
    let threads = match config.proxy.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let backends = if config.backends.is_empty() {
        config.demo.backends
    } else {
        config.backends.len()
    };
    let budget = crate::limits::budget(&config, crate::limits::fd_limit(), backends, threads);
    tracing::info!(
        "descriptor limit {}: at most {} clients at once, {} requests in flight per backend",
        budget.fd_limit,
        budget.max_connections,
        budget.max_conns_per_backend
    );
    let proxy_server = Arc::new(Proxy::new(
        Arc::clone(&router),
        Arc::clone(&upstreams),
        clock,
        ProxySettings::from_config(&config, proxy_addr),
        Arc::new(commands.clone()),
        store.clone(),
        budget.max_connections,
    ));
    let shared = Arc::new(Shared {
        clock,
        bus,
        router,
        upstreams,
        proxy: Arc::clone(&proxy_server),
        store: store.clone(),
        proxy_addr,
        admin_addr,
        config: ArcSwap::from_pointee(config),
        runtimes: ArcSwap::from_pointee(HashMap::new()),
        traffic: ArcSwapOption::empty(),
        follows: super::follow::Follows::default(),
    });
    tokio::spawn(super::follow::record(Arc::clone(&shared), shutdown.signal()));
    let mut engine = Engine {
        shared: Arc::clone(&shared),
        runtimes: HashMap::new(),
        traffic: None,
        tx,
        shutdown: shutdown.signal(),
        generations: 0,
        last_second: (0, 0),
        trimmer: Default::default(),
        threads,
        short_reported: None,
        short_since: 0,
    };
    let config = shared.config();
    if config.backends.is_empty() {
        for (name, listener) in demo {
            let demo = DemoBackend::serve_on(&name, listener).map_err(super::CommandError::Io)?;
            let spec = BackendSpec::new(&name, demo.addr(), 1).map_err(super::CommandError::Router)?;
            engine.register(spec, BackendKind::Demo(demo), BackendState::Up)?;
        }
    } else {
        for b in &config.backends {
            let spec = BackendSpec::new(&b.name, b.addr, b.weight).map_err(super::CommandError::Router)?;
            engine.register(spec, BackendKind::External, BackendState::Up)?;
        }
    }
    engine.publish_runtimes();
    engine.rebalance();
    let proxy_threads = proxy_server
        .serve_threads(proxy, threads, shutdown.signal())
        .map_err(|e| {
            StartError::Bind(vec![BindError {
                addr: proxy_addr,
                what: "proxy".into(),
                reason: e.to_string(),
                hint: String::new(),
            }])
        })?;
    if let Some(store) = &store {
        tokio::spawn(Arc::clone(store).run(Arc::clone(&shared.router), shutdown.signal()));
    }
    if traffic {
        engine.start_traffic();
    }
    let task = tokio::spawn(engine.run(rx));
    Ok(Started {
        commands,
        shared,
        task,
        proxy_threads,
    })
}

/// The router's settings from the configuration.
fn router_config(config: &Config) -> RouterConfig {
    RouterConfig {
        vnodes_per_weight: config.routing.vnodes,
        vnode_hash: config.routing.vnode_hash,
        placement: config.routing.placement,
        bound_factor: config.routing.bound_factor,
        idle_timeout_secs: config.sessions.idle_timeout_secs,
        max_sessions: config.sessions.max,
        seed: None,
    }
}

/// Whether `addr` is one of ringside's own listeners (requests would loop).
pub(super) fn own_address(addr: SocketAddr, proxy: SocketAddr, admin: SocketAddr) -> Option<&'static str> {
    let same = |own: SocketAddr| {
        own.port() == addr.port() && (own.ip() == addr.ip() || own.ip().is_unspecified() || addr.ip().is_unspecified())
    };
    if same(proxy) {
        Some("proxy")
    } else if same(admin) {
        Some("admin API")
    } else {
        None
    }
}
