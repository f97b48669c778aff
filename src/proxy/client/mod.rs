//! A purpose-built HTTP/1.1 client for the proxy's upstream side.
//!
//! hyper keeps facing clients — its hardened parser is where untrusted bytes
//! arrive — while the connections to trusted backends use this client: no
//! task or channel per connection, heads parsed with `httparse` straight
//! into an `http::HeaderMap`, one bounded read buffer per connection, and
//! the control the proxy needs: inactivity timeouts on both sides, early
//! and interim (1xx) responses, upgrades, failures classified for retries
//! and answers, and a per-backend connection cap with a queue.
//!
//! - [`Connection`]: connect, then [`Connection::send`] one
//!   request (full duplex: an early response stops the upload) and get an
//!   [`Answer`]: a response whose [`ResponseBody`] streams the body and
//!   hands the connection back to its [`Pool`] at the end, or an upgraded
//!   stream.
//! - [`Pool`]: idle connections per backend and per thread, LIFO.
//! - [`ConnLimit`]: requests in flight per backend, with a FIFO queue.
//!
//! Framing follows RFC 9112 §6.3. The body a [`ResponseBody`] yields is
//! de-chunked; the `Transfer-Encoding` field is left in the returned head
//! untouched, so a caller can tell that `gzip, chunked` content is still
//! gzip-coded (it strips the field as hop-by-hop and re-frames). When a
//! response carries both `Transfer-Encoding` and `Content-Length`, the
//! latter is removed from the returned head.

mod body;
mod chunked;
mod conn;
mod error;
mod head;
mod limit;
mod pool;
mod write;

#[cfg(test)]
mod tests;

use std::time::Duration;

use http::{HeaderMap, Method};

pub use body::ResponseBody;
pub use conn::{Answer, Connection, OnInterim, Upgraded};
pub use error::{BodyError, BoxError, ConnectError, SendError};
pub use limit::{ConnLimit, Permit, QueueError};
pub use pool::{Pool, PoolConfig};

/// Largest response head (and trailer section).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most fields in a response head.
pub const MAX_HEADERS: usize = 128;
/// Size of a connection's read buffer, and the most a body frame holds.
pub const READ_BUF_SIZE: usize = 16 * 1024;

/// How a request's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: no framing field is written and the body is not polled
    /// (a POST with an empty body wants `Length(0)`).
    None,
    /// `Content-Length: n`; the body must yield exactly `n` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: one chunk per data frame, a trailers
    /// frame written after the last chunk.
    Chunked,
}

/// A request head, borrowed so a caller keeps it for a resend.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The origin-form target (`/path?query`).
    pub target: &'a str,
    /// The fields, hop-by-hop fields already removed. A `Content-Length`
    /// or `Transfer-Encoding` here is ignored: `framing` decides.
    pub headers: &'a HeaderMap,
    /// How the body is framed.
    pub framing: Framing,
}

/// Inactivity limits; neither bounds a whole exchange, so a long upload or
/// download that keeps moving never times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The backend sent nothing (while a response head or body is awaited)
    /// or accepted no byte (while a request is written) for this long.
    pub backend_idle: Duration,
    /// The client's request body produced no frame for this long.
    pub client_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            backend_idle: Duration::from_secs(60),
            client_idle: Duration::from_secs(60),
        }
    }
}
