//! Process signals: SIGINT and SIGTERM stop ringside; SIGHUP reloads the
//! configuration file (headless), or, when the terminal that shows the
//! dashboard is closed, stops ringside cleanly.

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn terminated() {
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

/// SIGHUPs as they arrive. While this lives, a hangup no longer kills the
/// process.
pub struct Hangups {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Starts catching SIGHUP.
    pub fn catch() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Hangups {
                inner: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// The next hangup; never resolves when SIGHUP cannot be caught.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}
