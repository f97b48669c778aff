//! Keep-alive connections to one backend.
//!
//! ringside connects before it sends, so a refused connect leaves the request
//! in hand for redispatch. Idle connections wait in a short stack (the lock
//! is never held across an await); `close_all` drops them and tells every
//! open connection, tunnels included, to close — for a killed backend or a
//! drain that timed out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::signal::{Fired, Signal};

/// What the proxy sends upstream: the client's body, or none (a replay).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable).
    #[error("connect to {addr} failed: {source}")]
    Refused {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TCP connect took longer than the connect timeout.
    #[error("connect to {addr} timed out")]
    TimedOut {
        /// The backend's address.
        addr: SocketAddr,
    },
    /// The HTTP handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The backend's address.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
}

impl ConnectError {
    /// Why, in a few words and without the address: `connection refused`,
    /// `connect timeout`, `handshake failed: …`.
    pub fn reason(&self) -> String {
        match self {
            ConnectError::Refused { source, .. } => crate::engine::health::os_error_text(source),
            ConnectError::TimedOut { .. } => "connect timeout".into(),
            ConnectError::Handshake { source, .. } => format!("handshake failed: {source}"),
        }
    }
}

/// Idle lists per proxy shard, plus one for threads that are not shards.
const SHARD_SLOTS: usize = 65;

thread_local! {
    /// This thread's proxy shard (0: not a shard).
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as proxy shard `i` (1-based): its requests reuse
/// the connections it opened, which its own runtime drives.
pub fn set_shard(i: usize) {
    SHARD.with(|s| s.set(i % SHARD_SLOTS));
}

fn shard() -> usize {
    SHARD.with(|s| s.get())
}

/// The pool of one backend.
#[derive(Debug)]
pub struct BackendPool {
    addr: SocketAddr,
    /// Idle connections by shard: a connection is driven by the runtime of
    /// the thread that opened it, so only that thread reuses it.
    idle: Box<[Mutex<Vec<SendRequest<UpstreamBody>>>]>,
    max_idle: usize,
    /// Fired to close every connection this pool opened.
    close: Arc<Signal>,
}

impl BackendPool {
    /// A pool for `addr` keeping at most `max_idle` idle connections.
    pub fn new(addr: SocketAddr, max_idle: usize) -> Self {
        BackendPool {
            addr,
            idle: (0..SHARD_SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
            close: Arc::default(),
        }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection ready for a request: an idle one if any is still open,
    /// else a new one. The second value is true for a reused connection.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<(SendRequest<UpstreamBody>, bool), ConnectError> {
        while let Some(mut sender) = self.pop_idle() {
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect(connect_timeout, false).await?, false))
    }

    fn pop_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        self.idle[shard()].lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns a connection whose response has been read to the end.
    pub fn checkin(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle[shard()].lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    /// A new connection; `upgrades` keeps it able to become a tunnel.
    pub async fn connect(&self, timeout: Duration, upgrades: bool) -> Result<SendRequest<UpstreamBody>, ConnectError> {
        let addr = self.addr;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::TimedOut { addr }),
            Ok(Err(source)) => return Err(ConnectError::Refused { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        let close = self.close.wait();
        tokio::spawn(async move {
            if upgrades {
                let conn = conn.with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    _ = close => {}
                }
            } else {
                tokio::select! {
                    _ = conn => {}
                    _ = close => {}
                }
            }
        });
        Ok(sender)
    }

    /// Drops idle connections and closes every open one, tunnels included.
    pub fn close_all(&self) {
        for idle in self.idle.iter() {
            idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.close.fire();
    }

    /// Resolves when [`BackendPool::close_all`] is next called (tunnels wait on it).
    pub fn closing(&self) -> Fired {
        self.close.wait()
    }
}
