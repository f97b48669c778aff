//! What can go wrong, classified so the proxy can answer right: ringside's
//! own limits versus the backend's failures, the backend versus the client,
//! and whether a request may be sent again.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A boxed error of the client's request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection to a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// EMFILE / ENFILE: ringside (or the whole system) has no descriptor left.
    #[error("ringside is out of file descriptors connecting to {addr}: {source} (raise `ulimit -n`)")]
    OutOfDescriptors {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// ENOBUFS / ENOMEM: the kernel has no memory for another socket.
    #[error("ringside is out of socket memory connecting to {addr}: {source}")]
    OutOfMemory {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// EADDRNOTAVAIL: no local port is free for another connection.
    #[error(
        "ringside is out of local ports connecting to {addr}: {source} (too many connections in TIME_WAIT? widen net.ipv4.ip_local_port_range)"
    )]
    OutOfPorts {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The backend refused the connection (nothing listens there).
    #[error("backend {addr} refused the connection: {source}")]
    Refused {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// No route to the backend's host or network.
    #[error("backend {addr} is unreachable: {source}")]
    Unreachable {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The connect took longer than the connect timeout.
    #[error("backend {addr} did not accept the connection within {after:?}")]
    TimedOut {
        /// The backend's address.
        addr: SocketAddr,
        /// The connect timeout.
        after: Duration,
    },
    /// Any other failure (reset, aborted, …).
    #[error("connect to backend {addr} failed: {source}")]
    Failed {
        /// The backend's address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

impl ConnectError {
    /// Classifies a failed connect to `addr`.
    pub fn from_io(addr: SocketAddr, source: io::Error) -> Self {
        use io::ErrorKind as K;
        match (source.raw_os_error(), source.kind()) {
            (Some(EMFILE | ENFILE), _) => ConnectError::OutOfDescriptors { addr, source },
            (Some(ENOBUFS), _) | (_, K::OutOfMemory) => ConnectError::OutOfMemory { addr, source },
            (_, K::AddrNotAvailable) => ConnectError::OutOfPorts { addr, source },
            (_, K::ConnectionRefused) => ConnectError::Refused { addr, source },
            (_, K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown) => {
                ConnectError::Unreachable { addr, source }
            }
            _ => ConnectError::Failed { addr, source },
        }
    }

    /// True when ringside's own resources ran out: not the backend's fault,
    /// so it must not count against the backend's health.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ConnectError::OutOfDescriptors { .. } | ConnectError::OutOfMemory { .. } | ConnectError::OutOfPorts { .. }
        )
    }
}

// errno values std does not classify (ErrorKind::Uncategorized). EMFILE and
// ENFILE are the same on every Unix; ENOBUFS differs.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
#[cfg(any(target_os = "linux", target_os = "android"))]
const ENOBUFS: i32 = 105;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const ENOBUFS: i32 = 55;

/// Why an exchange failed before the response head was handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A reused connection failed (write error, or EOF / reset) before any
    /// byte of a response arrived: the backend had closed it while idle, so
    /// the request is presumed not taken. An idempotent request may be sent
    /// again on a fresh connection.
    #[error("the pooled connection had been closed by the backend (stale); the request was not answered")]
    Stale {
        /// The OS error, if not a plain EOF.
        #[source]
        source: Option<io::Error>,
    },
    /// The backend closed or reset the connection before a complete
    /// response head, after it may have taken the request.
    #[error("the backend closed the connection before answering (request {})", if *request_complete { "sent in full" } else { "partly sent" })]
    BackendFailed {
        /// The whole request, body included, had been written.
        request_complete: bool,
        /// The OS error, if not a plain EOF.
        #[source]
        source: Option<io::Error>,
    },
    /// The backend sent nothing, or accepted no bytes, for `backend_idle`.
    #[error("the backend was silent for longer than its idle timeout")]
    BackendTimeout,
    /// The backend's response head was not valid HTTP/1.x.
    #[error("bad response from the backend: {0}")]
    BadResponse(&'static str),
    /// The client's request body failed (aborted upload, bad framing, a
    /// length that does not match its `Content-Length`): the client's fault.
    #[error("the client's request body failed: {0}")]
    ClientBody(#[source] BoxError),
    /// The client's request body produced nothing for `client_idle`.
    #[error("the client sent no request body for longer than its idle timeout")]
    ClientTimeout,
    /// The request head cannot be written (a caller bug, e.g. a target with
    /// spaces or control characters).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

/// Why a response body ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The backend closed the connection before the body's end.
    #[error("the backend closed the connection before the end of the body")]
    Closed,
    /// Reading from the backend failed (reset).
    #[error("reading the body from the backend failed: {0}")]
    Io(#[from] io::Error),
    /// The backend sent nothing for `backend_idle`.
    #[error("the backend sent no body for longer than its idle timeout")]
    Timeout,
    /// The chunked framing was broken.
    #[error("bad chunked body from the backend: {0}")]
    BadChunk(&'static str),
}

impl BodyError {
    /// True when the idle timeout cut the body (the backend was too slow),
    /// false when the backend broke it.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn resource_exhaustion_is_ringsides_own() {
        for errno in [EMFILE, ENFILE, ENOBUFS] {
            let e = ConnectError::from_io(addr(), io::Error::from_raw_os_error(errno));
            assert!(e.is_local(), "{errno}: {e}");
        }
        let e = ConnectError::from_io(addr(), io::Error::from(io::ErrorKind::AddrNotAvailable));
        assert!(e.is_local());
        assert!(e.to_string().contains("out of local ports"), "{e}");
        let e = ConnectError::from_io(addr(), io::Error::from_raw_os_error(EMFILE));
        assert!(e.to_string().starts_with("ringside is out of file descriptors"), "{e}");
    }

    #[test]
    fn backend_failures_are_not_local() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::TimedOut,
        ] {
            let e = ConnectError::from_io(addr(), io::Error::from(kind));
            assert!(!e.is_local(), "{kind:?}: {e}");
        }
        assert!(matches!(
            ConnectError::from_io(addr(), io::Error::from(io::ErrorKind::ConnectionRefused)),
            ConnectError::Refused { .. }
        ));
    }
}
