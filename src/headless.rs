//! Headless mode: ringside without the dashboard. Logs go to stderr, one
//! JSON line on stdout gives the bound addresses, SIGINT or SIGTERM stops it
//! cleanly, and SIGHUP reloads the configuration file.

use std::io::Write as _;

use serde::Serialize;

use crate::app::{Handle, Listeners, StartOptions};
use crate::config::Config;
use crate::engine::Command;

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

/// Runs until SIGINT or SIGTERM. `reread` reads the configuration again
/// for a SIGHUP (the file with the command line on top); without one, a
/// hangup is logged and ignored.
pub async fn run(
    listeners: Listeners,
    config: Config,
    reread: Option<Box<dyn Fn() -> anyhow::Result<Config> + Send>>,
) -> anyhow::Result<()> {
    // Signals are caught before the addresses are printed: whoever reads
    // them may signal at once.
    let mut hangups = crate::signals::Hangups::catch();
    let terminated = crate::signals::terminated();
    tokio::pin!(terminated);
    let traffic = config.traffic.enabled.unwrap_or(false);
    let handle = crate::app::start(listeners, config, StartOptions { traffic }).await?;
    print_addresses(&handle)?;
    loop {
        tokio::select! {
            _ = &mut terminated => break,
            _ = hangups.next() => reload(&handle, reread.as_deref()).await,
        }
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

fn print_addresses(handle: &Handle) -> anyhow::Result<()> {
    let line = Addresses {
        proxy: handle.proxy_addr().to_string(),
        admin: handle.admin_addr().to_string(),
        backends: handle
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
    Ok(())
}

/// A SIGHUP: the file is read again and applied through the engine; a bad
/// file is refused with its reason and the running configuration stays.
async fn reload(handle: &Handle, reread: Option<&(dyn Fn() -> anyhow::Result<Config> + Send)>) {
    let Some(reread) = reread else {
        tracing::info!("SIGHUP ignored: ringside was started without --config, so there is no file to reload");
        return;
    };
    let mut config = match reread() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: the configuration was not reloaded, the running one stays: {e:#}");
            handle
                .shared()
                .bus
                .publish(crate::bus::BusEvent::Command(format!("reload refused: {e:#}")));
            return;
        }
    };
    // The cookie secret of a running balancer does not change.
    config.affinity.secret = handle.shared().config().affinity.secret.clone();
    match handle.execute(Command::Reload(Box::new(config))).await {
        Ok(text) => tracing::info!("SIGHUP: {text}"),
        Err(e) => tracing::error!("SIGHUP: the configuration was not reloaded, the running one stays: {e}"),
    }
}
