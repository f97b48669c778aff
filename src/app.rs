//! Starting ringside for real: the engine, the admin API, logging, signals.

use std::io::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::engine::Engine;

/// Runs the balancer without a dashboard until SIGINT or SIGTERM: logs go to
/// stderr, and one JSON line on stdout gives the bound addresses.
pub async fn run_headless(config: Config) -> anyhow::Result<()> {
    let traffic = config.traffic.enabled.unwrap_or(false);
    let running = Engine::start(config, traffic).await?;
    let engine = Arc::clone(&running.engine);
    let admin_addr = running.admin_listener.local_addr()?;
    tokio::spawn(crate::admin::serve(Arc::clone(&engine), running.admin_listener));
    let line = Addresses {
        proxy: running.proxy_addr.to_string(),
        admin: admin_addr.to_string(),
        backends: engine
            .backends_view()
            .into_iter()
            .map(|b| NamedAddr {
                name: b.name,
                addr: b.addr,
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&line)?)?;
    out.flush()?;
    drop(out);
    wait_for_signal().await;
    tracing::info!("shutting down");
    engine.shutdown().await;
    Ok(())
}

/// The line headless mode prints once bound, so port 0 can be used anywhere.
#[derive(Debug, Serialize)]
struct Addresses {
    proxy: String,
    admin: String,
    backends: Vec<NamedAddr>,
}

#[derive(Debug, Serialize)]
struct NamedAddr {
    name: String,
    addr: String,
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr with `level` (a tracing filter such as `info`).
pub fn log_to_stderr(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
