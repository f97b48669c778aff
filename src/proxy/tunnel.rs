//! Upgraded connections (WebSocket and the like): bytes pumped both ways
//! through a fixed buffer each way, so a side that stops reading holds the
//! other back instead of growing memory; cut when idle for the tunnel
//! timeout, or when the backend is killed, drained or removed.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::Upgraded;
use super::response::ActiveGuard;
use super::signal::Fired;

/// The backend side of an upgrade, kept until hyper hands the client side back.
#[derive(Debug)]
pub struct PendingTunnel {
    /// The backend's connection after its 101.
    pub backend: Upgraded,
    /// Fires when the backend is killed, drained or removed.
    pub closing: Fired,
    /// Counts the tunnel on its backend while it lives.
    pub active: ActiveGuard,
}

/// Bytes read at a time each way.
const BUFFER: usize = 16 * 1024;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// A side closed, or failed.
    Closed,
    /// Nothing moved for the tunnel timeout.
    Idle,
    /// Its backend was killed, drained or removed.
    Cut,
}

/// Pumps bytes between `client` and `backend` until one side closes, both
/// are idle for `idle`, or `closing` fires. `client_early` (what the client
/// sent after its upgrade request) goes to the backend first, and
/// `backend_early` (what the backend sent after its 101) to the client.
pub async fn pump(
    mut client: TcpStream,
    client_early: Bytes,
    mut backend: TcpStream,
    backend_early: Bytes,
    idle: Duration,
    mut closing: Fired,
) -> TunnelEnd {
    if backend.write_all(&client_early).await.is_err() || client.write_all(&backend_early).await.is_err() {
        return TunnelEnd::Closed;
    }
    let (mut client_in, mut client_out) = client.split();
    let (mut backend_in, mut backend_out) = backend.split();
    let mut up = vec![0u8; BUFFER];
    let mut down = vec![0u8; BUFFER];
    let mut last = Instant::now();
    let timer = tokio::time::sleep_until(last + idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            read = client_in.read(&mut up) => match read {
                Ok(0) | Err(_) => return TunnelEnd::Closed,
                Ok(n) => {
                    if backend_out.write_all(&up[..n]).await.is_err() {
                        return TunnelEnd::Closed;
                    }
                    last = Instant::now();
                }
            },
            read = backend_in.read(&mut down) => match read {
                Ok(0) | Err(_) => return TunnelEnd::Closed,
                Ok(n) => {
                    if client_out.write_all(&down[..n]).await.is_err() {
                        return TunnelEnd::Closed;
                    }
                    last = Instant::now();
                }
            },
            _ = &mut timer => {
                if last + idle <= Instant::now() {
                    return TunnelEnd::Idle;
                }
                timer.as_mut().reset(last + idle);
            }
            _ = &mut closing => return TunnelEnd::Cut,
        }
    }
}
