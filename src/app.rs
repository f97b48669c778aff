//! One start-up path: the CLI binds every listener once ([`Listeners::bind`])
//! and hands them with the configuration to [`start`], which starts the
//! engine, the proxy and the admin API and returns a [`Handle`]. The
//! dashboard, headless mode, scenarios and tests all run on that handle;
//! one shutdown signal reaches every server, stream and task.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::demo::backend::DemoBackend;
use crate::engine::view::{BackendView, StatsView};
use crate::engine::{BindError, Command, CommandError, Commands, Pending, Shared, StartError};
use crate::shutdown::{Shutdown, ShutdownSignal};

/// Every listening socket ringside needs, bound before anything starts.
#[derive(Debug)]
pub struct Listeners {
    /// The proxy's.
    pub proxy: std::net::TcpListener,
    /// The admin API's.
    pub admin: std::net::TcpListener,
    /// The demo backends', by name (none when external backends are configured).
    pub demo: Vec<(String, std::net::TcpListener)>,
}

impl Listeners {
    /// Binds the proxy, the admin API and the demo backends the
    /// configuration asks for; on failure, reports every address that could
    /// not be bound at once, each with the flag that changes it. Must run
    /// inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Listeners, StartError> {
        config.validate("the configuration")?;
        let mut errors = Vec::new();
        let mut attempt =
            |addr: SocketAddr, what: String, hint: &str, bind: &dyn Fn() -> std::io::Result<std::net::TcpListener>| {
                match bind() {
                    Ok(l) => Some(l),
                    Err(e) => {
                        errors.push(BindError {
                            addr,
                            what,
                            reason: os_error(&e),
                            hint: format!(" (change it with {hint})"),
                        });
                        None
                    }
                }
            };
        let proxy = attempt(config.listen, "proxy".into(), "--listen", &|| {
            crate::proxy::listener(config.listen)
        });
        let admin = attempt(config.admin.listen, "admin API".into(), "--admin", &|| {
            std::net::TcpListener::bind(config.admin.listen)
        });
        let mut demo = Vec::new();
        if config.backends.is_empty() {
            for i in 0..config.demo.backends {
                let port = match config.demo.base_port {
                    0 => 0,
                    base => base.saturating_add(i as u16),
                };
                let name = format!("api-{}", i + 1);
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                if let Some(l) = attempt(addr, format!("demo backend {name}"), "--demo-port", &|| {
                    DemoBackend::bind(addr)
                }) {
                    demo.push((name, l));
                }
            }
        }
        match (proxy, admin) {
            (Some(proxy), Some(admin)) if errors.is_empty() => Ok(Listeners { proxy, admin, demo }),
            _ => Err(StartError::Bind(errors)),
        }
    }
}

/// An OS error once, without the code repeated: `Address already in use`.
fn os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_owned()
}

/// What to start besides the balancer.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Run the synthetic clients.
    pub traffic: bool,
}

/// A running ringside; clones share it.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    commands: Commands,
    shutdown: Shutdown,
    engine: Mutex<Option<JoinHandle<()>>>,
    admin: Mutex<Option<JoinHandle<()>>>,
    proxy_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("proxy", &self.inner.shared.proxy_addr)
            .finish_non_exhaustive()
    }
}

/// Starts ringside on `listeners`: the engine, the proxy's threads, the
/// backends, health checks, the session store and the admin API.
pub async fn start(listeners: Listeners, config: Config, options: StartOptions) -> Result<Handle, StartError> {
    let shutdown = Shutdown::new();
    let admin_addr = listeners.admin.local_addr().map_err(|e| {
        StartError::Bind(vec![BindError {
            addr: config.admin.listen,
            what: "admin API".into(),
            reason: os_error(&e),
            hint: String::new(),
        }])
    })?;
    let started = crate::engine::start(
        config,
        listeners.proxy,
        admin_addr,
        listeners.demo,
        options.traffic,
        &shutdown,
    )
    .await?;
    let admin = crate::admin::serve(
        Arc::clone(&started.shared),
        started.commands.clone(),
        listeners.admin,
        shutdown.signal(),
    )
    .map_err(|e| {
        StartError::Bind(vec![BindError {
            addr: admin_addr,
            what: "admin API".into(),
            reason: os_error(&e),
            hint: String::new(),
        }])
    })?;
    Ok(Handle {
        inner: Arc::new(Inner {
            shared: started.shared,
            commands: started.commands,
            shutdown,
            engine: Mutex::new(Some(started.task)),
            admin: Mutex::new(Some(admin)),
            proxy_threads: Mutex::new(started.proxy_threads),
        }),
    })
}

/// Binds the listeners for `config` and starts ringside on them.
pub async fn bind_and_start(config: Config, options: StartOptions) -> Result<Handle, StartError> {
    let listeners = Listeners::bind(&config)?;
    start(listeners, config, options).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handle {
    /// What views read: the router, the bus, the clock, the store, the figures.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Sends commands to the engine task.
    pub fn commands(&self) -> &Commands {
        &self.inner.commands
    }

    /// Carries out a command after those before it.
    pub async fn execute(&self, command: Command) -> Result<String, CommandError> {
        self.inner.commands.execute(command).await
    }

    /// Queues a command in order without waiting for it.
    pub fn submit(&self, command: Command) -> Result<Pending, CommandError> {
        self.inner.commands.submit(command)
    }

    /// Every backend that is not removed.
    pub fn backends_view(&self) -> Vec<BackendView> {
        self.inner.shared.backends_view()
    }

    /// Balancer-wide figures.
    pub fn stats_view(&self) -> StatsView {
        self.inner.shared.stats_view()
    }

    /// The router.
    pub fn router(&self) -> &Arc<crate::router::Router> {
        &self.inner.shared.router
    }

    /// The shared session store, when configured.
    pub fn store(&self) -> Option<&Arc<crate::store::RedisStore>> {
        self.inner.shared.store.as_ref()
    }

    /// Where the proxy listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.inner.shared.proxy_addr
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.inner.shared.admin_addr
    }

    /// Learns of the shutdown.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.inner.shutdown.signal()
    }

    /// Stops everything, once: the listeners close and so do idle
    /// connections; the synthetic clients stop; requests in flight finish
    /// (at most [`crate::proxy::SHUTDOWN_GRACE`]); then health checks and the
    /// demo backends stop. Returns when all of that is done.
    pub async fn shutdown(&self) {
        self.inner.shutdown.trigger();
        let commands = &self.inner.commands;
        commands.stop_traffic().await;
        let threads = std::mem::take(&mut *lock(&self.inner.proxy_threads));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        commands.stop().await;
        let engine = lock(&self.inner.engine).take();
        if let Some(task) = engine {
            let _ = task.await;
        }
        let admin = lock(&self.inner.admin).take();
        if let Some(task) = admin {
            let _ = task.await;
        }
    }
}
