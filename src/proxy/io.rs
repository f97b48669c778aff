//! A client connection as hyper reads and writes it.
//!
//! On the way in, the framing guard follows every byte of every request head
//! (see [`super::framing`]). On the way out, interim responses (`103 Early
//! Hints`) are written ahead of hyper's answer. And the connection's limits
//! live here, each an inactivity limit, checked by one timer armed only while
//! something waits: the time to send a request head (`header_read_timeout`),
//! the keep-alive idle time between requests (`keepalive_timeout`), and a
//! client that reads nothing of its answer (`client_timeout`).
//!
//! An idle keep-alive connection is handed back from hyper after a short
//! while ("parked"): hyper's buffers go with it, so ten thousand idle
//! connections cost their sockets and little else; it is served by a fresh
//! hyper connection when it speaks again.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::framing::{FramingScanner, FramingWatch};
use super::signal::Fired;
use super::timer::Timer;
use super::tunnel::PendingTunnel;

/// How a connection left hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ended {
    /// Still served (or closed by the client or an error).
    No = 0,
    /// Idle long enough to give hyper's buffers back; wait for it to speak.
    Parked = 1,
    /// Idle past the keep-alive timeout: close it.
    Idle = 2,
    /// A client limit passed (head too slow, nothing read): close it.
    TimedOut = 3,
    /// Ringside is shutting down: close it once idle.
    Stopping = 4,
}

/// The limits of a client connection.
#[derive(Debug, Clone, Copy)]
pub struct IoLimits {
    /// A request head must arrive within this, from its first byte (and a
    /// new connection's first head from the connect).
    pub head: Duration,
    /// Idle between requests at most this long.
    pub keepalive: Duration,
    /// Idle this long, a connection is parked (`None`: never).
    pub park_after: Option<Duration>,
    /// A client that accepts none of its answer for this long is cut.
    pub send: Duration,
}

/// What a client connection shares with the requests served on it.
#[derive(Debug)]
pub struct ConnShared {
    /// The smuggling guard's findings.
    pub watch: FramingWatch,
    /// Requests being answered now.
    in_flight: AtomicU32,
    /// When the last answer ended (ms after `born`).
    idle_since_ms: AtomicU64,
    born: Instant,
    /// Interim responses waiting to be written.
    interim: Mutex<Vec<u8>>,
    has_interim: AtomicBool,
    /// hyper has bytes it could not write yet.
    backlog: AtomicBool,
    /// The next bytes hyper writes are an answer to an HTTP/1.0 request,
    /// whose status line hyper writes as `HTTP/1.0`: ringside speaks 1.1.
    version_fix: AtomicBool,
    ended: AtomicU8,
    /// The backend side of an upgrade, for the tunnel once hyper is done.
    tunnel: Mutex<Option<PendingTunnel>>,
}

impl Default for ConnShared {
    fn default() -> Self {
        ConnShared {
            watch: FramingWatch::default(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            born: Instant::now(),
            interim: Mutex::new(Vec::new()),
            has_interim: AtomicBool::new(false),
            backlog: AtomicBool::new(false),
            version_fix: AtomicBool::new(false),
            ended: AtomicU8::new(Ended::No as u8),
            tunnel: Mutex::new(None),
        }
    }
}

/// Counts one request in flight until dropped (with its answer's body).
#[derive(Debug)]
pub struct InFlight(Arc<ConnShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let shared = &self.0;
        let ms = shared.born.elapsed().as_millis() as u64;
        shared.idle_since_ms.store(ms, Ordering::Relaxed);
        shared.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl ConnShared {
    /// A request begins; it ends when the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Acquire);
        InFlight(Arc::clone(self))
    }

    /// Queues an interim response to go out before the final one — when
    /// hyper has nothing waiting to be written (else it could land inside
    /// an earlier answer's bytes). Returns false when it was dropped.
    pub fn interim(&self, bytes: &[u8]) -> bool {
        if self.backlog.load(Ordering::Acquire) {
            return false;
        }
        lock(&self.interim).extend_from_slice(bytes);
        self.has_interim.store(true, Ordering::Release);
        true
    }

    /// The answer about to be written is for an HTTP/1.0 request: its status
    /// line says `HTTP/1.1` (RFC 9110 §6.2: ringside's own version) — when
    /// nothing of an earlier answer is still to be written.
    pub fn answer_http10(&self) {
        if !self.backlog.load(Ordering::Acquire) {
            self.version_fix.store(true, Ordering::Release);
        }
    }

    /// Keeps the backend side of an upgrade for the tunnel.
    pub fn set_tunnel(&self, tunnel: PendingTunnel) {
        self.watch.became_tunnel();
        *lock(&self.tunnel) = Some(tunnel);
    }

    /// Takes the backend side of an upgrade, if the answer was 101.
    pub fn take_tunnel(&self) -> Option<PendingTunnel> {
        lock(&self.tunnel).take()
    }

    /// When the last answer ended (or the connection began).
    pub fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }

    /// How the connection left hyper.
    pub fn ended(&self) -> Ended {
        match self.ended.load(Ordering::Acquire) {
            1 => Ended::Parked,
            2 => Ended::Idle,
            3 => Ended::TimedOut,
            4 => Ended::Stopping,
            _ => Ended::No,
        }
    }

    fn end(&self, how: Ended) {
        self.ended.store(how as u8, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client connection seen through the framing guard, with its limits.
#[derive(Debug)]
pub struct ClientIo {
    stream: TcpStream,
    shared: Arc<ConnShared>,
    scanner: FramingScanner,
    limits: IoLimits,
    stopping: Fired,
    stop_seen: bool,
    /// When the current head's first byte (or the connection) arrived.
    head_since: Option<Instant>,
    /// When hyper's writes began to wait.
    stalled_since: Option<Instant>,
    timer: Timer,
}

impl ClientIo {
    /// Serves `stream` for `shared`; `fresh` when no request was read on it
    /// yet (its first head is timed from now).
    pub fn new(stream: TcpStream, shared: Arc<ConnShared>, limits: IoLimits, stopping: Fired, fresh: bool) -> Self {
        ClientIo {
            stream,
            shared,
            scanner: FramingScanner::default(),
            limits,
            stopping,
            stop_seen: false,
            head_since: fresh.then(Instant::now),
            stalled_since: None,
            timer: Timer::default(),
        }
    }

    /// The socket, once hyper is done with it.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Writes waiting interim responses; `Ready(Ok)` once none is left.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shared.has_interim.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let mut queue = lock(&self.shared.interim);
        while !queue.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &queue) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    queue.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.shared.has_interim.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    /// Whether ringside is shutting down (checked cheaply, once it fired).
    fn stopping(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.stop_seen {
            self.stop_seen = Pin::new(&mut self.stopping).poll(cx).is_ready();
        }
        self.stop_seen
    }

    /// Waits until `deadline`; `true` once it has passed. The timer moves
    /// only to an earlier deadline: a later one (the next request's
    /// keep-alive, say) is taken up when the armed one fires, so a request
    /// neither reads the clock here nor re-files the timer.
    fn passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        self.timer.poll_until(cx, deadline).is_ready()
    }

    /// Nothing to read now: is a limit passed? `Some` is what to return.
    fn read_limits(&mut self, cx: &mut Context<'_>) -> Option<io::Result<()>> {
        let answering = self.shared.in_flight.load(Ordering::Acquire) > 0;
        if answering || !self.scanner.between_requests() && !self.scanner.in_head() {
            // A request (or its body) is in hand: the exchange's own limits apply.
            return None;
        }
        if self.scanner.in_head() || self.head_since.is_some() {
            let since = *self.head_since.get_or_insert_with(Instant::now);
            if self.passed(cx, since + self.limits.head) {
                self.shared.end(Ended::TimedOut);
                return Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not send its request head in time",
                )));
            }
            return None;
        }
        if self.stopping(cx) {
            self.shared.end(Ended::Stopping);
            return Some(Ok(()));
        }
        let idle = self.shared.idle_since();
        if let Some(park) = self.limits.park_after
            && park < self.limits.keepalive
        {
            if self.passed(cx, idle + park) {
                self.shared.end(Ended::Parked);
                return Some(Ok(()));
            }
            return None;
        }
        if self.passed(cx, idle + self.limits.keepalive) {
            self.shared.end(Ended::Idle);
            return Some(Ok(()));
        }
        None
    }

    /// hyper's write would wait: cut a client that reads nothing for long.
    fn write_limit(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let since = *self.stalled_since.get_or_insert_with(Instant::now);
        if self.passed(cx, since + self.limits.send) {
            self.shared.end(Ended::TimedOut);
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its answer in time",
            ));
        }
        None
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &mut buf.filled_mut()[before..];
                if !new.is_empty() {
                    let idle = this.scanner.between_requests();
                    this.scanner.scan(new, &this.shared.watch);
                    if this.scanner.in_head() {
                        if idle || this.head_since.is_none() {
                            this.head_since = Some(Instant::now());
                        }
                    } else {
                        this.head_since = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.read_limits(cx) {
                Some(outcome) => Poll::Ready(outcome),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_interim(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return this.stalled(cx),
        }
        let fixed;
        let data = if this.shared.version_fix.swap(false, Ordering::AcqRel) && data.starts_with(b"HTTP/1.0 ") {
            let mut head = data.to_vec();
            head[7] = b'1';
            fixed = head;
            &fixed[..]
        } else {
            data
        };
        match Pin::new(&mut this.stream).poll_write(cx, data) {
            Poll::Pending => this.stalled(cx),
            done => {
                this.stalled_since = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_interim(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return this.stalled(cx),
        }
        let fixed;
        let mut patched: Vec<io::IoSlice<'_>>;
        let bufs = match bufs.first() {
            Some(first) if this.shared.version_fix.swap(false, Ordering::AcqRel) && first.starts_with(b"HTTP/1.0 ") => {
                let mut head = first.to_vec();
                head[7] = b'1';
                fixed = head;
                patched = Vec::with_capacity(bufs.len());
                patched.push(io::IoSlice::new(&fixed));
                patched.extend(bufs[1..].iter().map(|b| io::IoSlice::new(b)));
                &patched[..]
            }
            _ => bufs,
        };
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stalled(cx),
            done => {
                this.stalled_since = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes only once everything it had is written.
        let this = &mut *self;
        this.shared.backlog.store(false, Ordering::Release);
        match this.poll_interim(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.stream).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl ClientIo {
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.shared.backlog.store(true, Ordering::Release);
        match self.write_limit(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }
}
