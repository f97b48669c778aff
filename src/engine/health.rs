//! Active health checks: `GET <path>` on a fresh connection, counted against
//! the `rise` and `fall` thresholds.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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

/// One check: true when `GET path` answers 2xx within `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, probe_once(addr, path))
        .await
        .unwrap_or(false)
}

async fn probe_once(addr: SocketAddr, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return false;
    };
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "ringside-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let ok = match req {
        Ok(req) => matches!(sender.send_request(req).await, Ok(r) if r.status().is_success()),
        Err(_) => false,
    };
    driver.abort();
    ok
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
    async fn a_closed_port_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(!probe(addr, "/health", Duration::from_millis(500)).await);
    }
}
