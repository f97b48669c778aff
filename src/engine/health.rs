//! Active health checks: `GET <path>` on a fresh connection, counted against
//! the `rise` and `fall` thresholds. A checker task per backend only probes
//! and reports; the engine task owns the counts and the verdicts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Message;
use crate::router::Backend;
use crate::shutdown::ShutdownSignal;

/// Successes and failures in a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HealthProgress {
    /// Successes in a row.
    pub successes: u32,
    /// Failures in a row.
    pub failures: u32,
}

/// What a health observation means for the backend's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes.
    Stay,
    /// `fall` failures in a row: it goes down.
    Down,
    /// `rise` successes in a row: it comes up.
    Up,
}

impl HealthProgress {
    /// Counts one check of a backend that is `serving` (up or draining) or not.
    pub fn observe(&mut self, ok: bool, serving: bool, rise: u32, fall: u32) -> Verdict {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !serving && self.successes >= rise {
                self.successes = 0;
                return Verdict::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if serving && self.failures >= fall {
                self.failures = 0;
                return Verdict::Down;
            }
        }
        Verdict::Stay
    }

    /// e.g. `fall 2/3` while failing, `rise 1/2` while recovering, or empty.
    pub fn describe(&self, serving: bool, rise: u32, fall: u32) -> String {
        if serving && self.failures > 0 {
            format!("fall {}/{fall}", self.failures)
        } else if !serving && self.successes > 0 {
            format!("rise {}/{rise}", self.successes)
        } else {
            String::new()
        }
    }
}

/// Why a check failed, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// The TCP connect failed (e.g. `connection refused`).
    Connect(String),
    /// No answer within the check timeout.
    Timeout,
    /// An answer that was not 2xx.
    Status(u16),
    /// The HTTP exchange failed.
    Http(String),
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckFailure::Connect(e) => f.write_str(e),
            CheckFailure::Timeout => f.write_str("timeout"),
            CheckFailure::Status(s) => write!(f, "status {s}"),
            CheckFailure::Http(e) => write!(f, "bad answer: {e}"),
        }
    }
}

/// One check: `GET path` must answer 2xx within `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), CheckFailure> {
    tokio::time::timeout(timeout, probe_once(addr, path))
        .await
        .unwrap_or(Err(CheckFailure::Timeout))
}

async fn probe_once(addr: SocketAddr, path: &str) -> Result<(), CheckFailure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| CheckFailure::Connect(os_error_text(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CheckFailure::Http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "ringside-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| CheckFailure::Http(e.to_string()))?;
    let result = match sender.send_request(req).await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(CheckFailure::Status(r.status().as_u16())),
        Err(e) => Err(CheckFailure::Http(e.to_string())),
    };
    driver.abort();
    result
}

/// An OS error as people say it: `connection refused`, without the code.
pub fn os_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::TimedOut => "timeout".into(),
        _ => {
            let text = e.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_lowercase()
        }
    }
}

/// What a checker needs to know.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// The path checked.
    pub path: String,
    /// Between checks.
    pub interval: Duration,
    /// A check slower than this failed.
    pub timeout: Duration,
}

/// Checks `backend` every `settings.interval` and reports each result to the
/// engine, tagged with `generation` so that results from before a kill,
/// revive or removal are told apart, until shutdown or until aborted. The
/// first check runs at once.
pub(super) fn spawn_checker(
    backend: Arc<Backend>,
    generation: u64,
    settings: CheckSettings,
    engine: mpsc::Sender<Message>,
    mut shutdown: ShutdownSignal,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timeout = settings.timeout.min(settings.interval.max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.stopped() => return,
            }
            let result = tokio::select! {
                r = probe(backend.addr, &settings.path, timeout) => r,
                _ = shutdown.stopped() => return,
            };
            let report = Message::Checked {
                backend: backend.id,
                generation,
                result,
            };
            if engine.send(report).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_then_rise() {
        let mut p = HealthProgress::default();
        assert_eq!(p.observe(false, true, 2, 3), Verdict::Stay);
        assert_eq!(p.describe(true, 2, 3), "fall 1/3");
        assert_eq!(p.observe(true, true, 2, 3), Verdict::Stay, "a success resets the run");
        assert_eq!(p.observe(false, true, 2, 3), Verdict::Stay);
        assert_eq!(p.observe(false, true, 2, 3), Verdict::Stay);
        assert_eq!(p.observe(false, true, 2, 3), Verdict::Down);
        assert_eq!(p.observe(true, false, 2, 3), Verdict::Stay);
        assert_eq!(p.describe(false, 2, 3), "rise 1/2");
        assert_eq!(p.observe(true, false, 2, 3), Verdict::Up);
        assert_eq!(p.describe(true, 2, 3), "");
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy_and_says_why() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert_eq!(
            probe(addr, "/health", Duration::from_millis(500)).await,
            Err(CheckFailure::Connect("connection refused".into()))
        );
    }
}
