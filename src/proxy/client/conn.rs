//! One connection to a backend: connect, then send a request and read the
//! response head, full duplex — the response is watched for while the body
//! is written, so an early answer stops the upload and a backend that stops
//! reading cannot deadlock the exchange.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use hyper::body::{Body, Frame};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::body::ResponseBody;
use super::error::{BoxError, ConnectError, SendError};
use super::head::{self, ResponseHead};
use super::pool::Home;
use super::write::WriteQueue;
use super::{Framing, MAX_HEAD, READ_BUF_SIZE, RequestHead, Timeouts, chunked};
use crate::proxy::headers::ConnectionOptions;
use crate::proxy::timer::{Idle, Timer};

/// Called with each interim (1xx) response but `100 Continue` and `101`.
pub type OnInterim<'a> = dyn FnMut(http::Response<()>) + Send + 'a;

/// What a backend answered.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "the final response is the common answer: boxing it would allocate per request"
)]
pub enum Answer {
    /// A final response; its body streams from the connection. With it,
    /// what its `Connection` fields said (read for the connection's reuse):
    /// a proxy strips the fields they name without reading them again.
    Response(http::Response<ResponseBody>, ConnectionOptions),
    /// `101 Switching Protocols`: HTTP is over on this connection.
    Upgraded(Upgraded),
}

/// A connection that left HTTP after `101 Switching Protocols`.
#[derive(Debug)]
pub struct Upgraded {
    /// The 101 response.
    pub head: http::Response<()>,
    /// The connection, for a tunnel.
    pub stream: TcpStream,
    /// Bytes the backend sent after the head, already read.
    pub leftover: Bytes,
}

/// An HTTP/1.1 connection to a backend, idle between requests.
#[derive(Debug)]
pub struct Connection {
    pub(super) stream: TcpStream,
    /// Read buffer: response bytes not yet parsed or yielded.
    pub(super) buf: BytesMut,
    pub(super) out: WriteQueue,
    pub(super) timer: Timer,
    pub(super) timeouts: Timeouts,
    /// The pool it returns to.
    pub(super) home: Option<Home>,
    /// Requests it has completed.
    pub(super) served: u32,
    /// Its pool's purge count when it last went idle (wrapping).
    pub(super) idle_since_purge: u32,
}

impl Connection {
    /// Connects to `addr` (TCP_NODELAY on) within `timeout`, with default
    /// [`Timeouts`]. Such a connection has no pool: it serves one exchange
    /// (see [`super::Pool::connect`] for one that returns to a pool).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::TimedOut { addr, after: timeout }),
            Ok(Err(e)) => return Err(ConnectError::from_io(addr, e)),
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true).map_err(|e| ConnectError::from_io(addr, e))?;
        Ok(Connection {
            stream,
            buf: BytesMut::new(),
            out: WriteQueue::default(),
            timer: Timer::default(),
            timeouts: Timeouts::default(),
            home: None,
            served: 0,
            idle_since_purge: 0,
        })
    }

    /// Sets the inactivity limits for the exchanges to come.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// The inactivity limits.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// True when it has served a request before (it came from a pool): a
    /// failure before any response byte is then [`SendError::Stale`].
    pub fn is_reused(&self) -> bool {
        self.served > 0
    }

    /// The local address (tells connections apart in logs and tests).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// True when an idle connection still looks open: nothing arrived on
    /// it since its last read (an EOF, a reset, or bytes the backend should
    /// not have sent all mean it is unusable). Asked of the runtime's
    /// readiness first, which costs no system call: the last read of an
    /// exchange drained the socket and cleared it (see [`Self::poll_fill`]),
    /// so only an event since sets it. Set, a non-blocking read decides.
    pub(super) fn is_alive(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the socket has into the buffer, so that it holds at most
    /// `max` bytes, and at most [`READ_BUF_SIZE`] more per read. `Ok(0)` is
    /// EOF.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let room = max.saturating_sub(self.buf.len()).min(READ_BUF_SIZE);
        if room == 0 {
            return Poll::Ready(Err(io::Error::other("read buffer full")));
        }
        if self.buf.capacity() - self.buf.len() < room {
            // Takes back the old allocation when no frame still holds it.
            self.buf.reserve(room);
        }
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut (&mut self.buf).limit(room)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(n) if n > 0 && n < room => {
                    // A short read drained the socket (as tokio's own reads
                    // assume on epoll): clear the readiness now, so that an
                    // idle connection is checked without a read of its own.
                    let _ = self
                        .stream
                        .try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                    return Poll::Ready(Ok(n));
                }
                r => return Poll::Ready(r),
            }
        }
    }

    /// Sends one request and reads its response head; the response body
    /// streams afterwards from the returned [`ResponseBody`], which hands
    /// the connection back to its pool once the body has ended (if the
    /// exchange allows reuse). Any error closes the connection.
    ///
    /// `body` is polled only with [`Framing::Length`] or
    /// [`Framing::Chunked`]; pass `&mut body` to keep it. It is not waited
    /// for: the head is written at once, with whatever part of the body is
    /// ready. A final response arriving before the body is sent stops the
    /// upload (the connection is then not reused). `Expect: 100-continue`
    /// is not waited on; a `100 Continue` is swallowed, other 1xx but 101
    /// go to `on_interim`.
    pub async fn send<B>(
        mut self,
        head: &RequestHead<'_>,
        body: B,
        on_interim: Option<&mut OnInterim<'_>>,
    ) -> Result<Answer, SendError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        head::write_request(self.out.head_buf(), head).map_err(SendError::InvalidRequest)?;
        let body = pin!(body);
        let open = head.framing != Framing::None;
        let mut ex = Exchange {
            body_open: open && !body.is_end_stream(),
            body,
            conn: &mut self,
            framing: head.framing,
            sent: 0,
            body_done: !open,
            write_error: None,
            read_any: false,
            unparsed: false,
            backend: Idle::default(),
            client: Idle::default(),
            on_interim,
        };
        if open && !ex.body_open {
            ex.finish_body(None)?;
        }
        let parsed = poll_fn(|cx| ex.poll(cx)).await;
        let request_sent = ex.request_sent();
        let parsed = parsed?;
        self.out.clear();
        if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
            let leftover = self.buf.split().freeze();
            return Ok(Answer::Upgraded(Upgraded {
                head: response(parsed.status, parsed.version, parsed.headers, ()),
                stream: self.stream,
                leftover,
            }));
        }
        let length = parsed.body_length(*head.method == Method::HEAD);
        let reusable = request_sent && parsed.keeps_alive(length);
        let (status, version, connection) = (parsed.status, parsed.version, parsed.connection);
        let body = ResponseBody::new(self, length, reusable);
        Ok(Answer::Response(
            response(status, version, parsed.headers, body),
            connection,
        ))
    }
}

fn response<T>(status: StatusCode, version: http::Version, headers: HeaderMap, body: T) -> http::Response<T> {
    let mut r = http::Response::new(body);
    *r.status_mut() = status;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    r
}

/// A request on its way and the response head awaited.
struct Exchange<'a, 'f, B> {
    conn: &'a mut Connection,
    body: Pin<&'a mut B>,
    framing: Framing,
    /// The body is still polled for frames.
    body_open: bool,
    /// The body ended (its last framing is queued).
    body_done: bool,
    /// Data bytes taken from the body.
    sent: u64,
    /// Writing failed; the response is still read (it may be there).
    write_error: Option<io::Error>,
    /// Some response byte arrived.
    read_any: bool,
    /// The buffer has bytes not yet tried as a head.
    unparsed: bool,
    backend: Idle,
    client: Idle,
    on_interim: Option<&'a mut OnInterim<'f>>,
}

impl<B> Exchange<'_, '_, B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// The whole request, body included, has been written.
    fn request_sent(&self) -> bool {
        self.body_done && self.write_error.is_none() && self.conn.out.is_empty()
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, SendError>> {
        loop {
            let mut progress = false;
            if self.body_open && self.conn.out.has_room() {
                match self.body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.client.active();
                        self.take_frame(frame)?;
                        progress = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(SendError::ClientBody(e.into()))),
                    Poll::Ready(None) => {
                        self.client.active();
                        self.finish_body(None)?;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if self.write_error.is_none() && !self.conn.out.is_empty() {
                match self.conn.out.poll_write(&mut self.conn.stream, cx) {
                    Poll::Ready(Ok(_)) => {
                        self.backend.active();
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        // The backend may have answered, then closed: read on.
                        self.write_error = Some(e);
                        self.body_open = false;
                        self.conn.out.clear();
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(r) = self.poll_head(cx) {
                return Poll::Ready(r);
            }
            if !progress {
                return self.poll_timeouts(cx);
            }
        }
    }

    /// Queues a frame of the request body.
    fn take_frame(&mut self, frame: Frame<Bytes>) -> Result<(), SendError> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                return match frame.into_trailers() {
                    Ok(trailers) => self.finish_body(Some(&trailers)),
                    Err(_) => Ok(()),
                };
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::Length(n) => {
                self.sent += data.len() as u64;
                if self.sent > n {
                    return Err(SendError::ClientBody(
                        "the request body is longer than its Content-Length".into(),
                    ));
                }
                self.conn.out.push_data(data);
            }
            Framing::Chunked => {
                chunked::push_size_line(self.conn.out.small_buf(), data.len());
                self.conn.out.push_data(data);
                self.conn.out.push_small(b"\r\n");
            }
            Framing::None => {}
        }
        Ok(())
    }

    /// The body ended (with `trailers`, if any): queue its end.
    fn finish_body(&mut self, trailers: Option<&HeaderMap>) -> Result<(), SendError> {
        self.body_open = false;
        self.body_done = true;
        match self.framing {
            Framing::Length(n) if self.sent < n => Err(SendError::ClientBody(
                format!("the request body ended after {} of its {n} bytes", self.sent).into(),
            )),
            Framing::Chunked => {
                chunked::push_end(self.conn.out.small_buf(), trailers);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads until a final response head (interim ones handled on the
    /// way), or EOF, or nothing more to read now.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, SendError>> {
        loop {
            if self.unparsed {
                self.unparsed = false;
                match head::parse_response(&self.conn.buf) {
                    Err(reason) => return Poll::Ready(Err(SendError::BadResponse(reason))),
                    Ok(None) if self.conn.buf.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(SendError::BadResponse("response head larger than 64 KiB")));
                    }
                    Ok(None) => {}
                    Ok(Some(head)) => {
                        self.conn.buf.advance(head.len);
                        self.unparsed = !self.conn.buf.is_empty();
                        match head.status.as_u16() {
                            100 => continue,
                            101 => return Poll::Ready(Ok(head)),
                            102..=199 => {
                                if let Some(f) = self.on_interim.as_mut() {
                                    f(response(head.status, head.version, head.headers, ()));
                                }
                                continue;
                            }
                            _ => return Poll::Ready(Ok(head)),
                        }
                    }
                }
            }
            match ready!(self.conn.poll_fill(cx, MAX_HEAD)) {
                Ok(0) => return Poll::Ready(Err(self.failed(None))),
                Ok(_) => {
                    self.read_any = true;
                    self.unparsed = true;
                    self.backend.active();
                }
                Err(e) => return Poll::Ready(Err(self.failed(Some(e)))),
            }
        }
    }

    /// The backend closed or reset the connection before a final head.
    fn failed(&mut self, source: Option<io::Error>) -> SendError {
        let source = source.or_else(|| self.write_error.take());
        if self.conn.is_reused() && !self.read_any {
            SendError::Stale { source }
        } else {
            SendError::BackendFailed {
                request_complete: self.request_sent(),
                source,
            }
        }
    }

    /// Nothing can progress now: fails if a side kept us waiting too long.
    fn poll_timeouts(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, SendError>> {
        let limits = self.conn.timeouts;
        let mut now = None;
        // The client is waited on while its body is polled; the backend
        // unless all we wait for is the client's next frame.
        let client = if self.body_open && self.conn.out.has_room() {
            Some(self.client.waiting(&mut now, limits.client_idle))
        } else {
            self.client.active();
            None
        };
        let backend = if self.body_open && self.conn.out.is_empty() {
            self.backend.active();
            None
        } else {
            Some(self.backend.waiting(&mut now, limits.backend_idle))
        };
        let (deadline, timeout) = match (backend, client) {
            (Some(b), Some(c)) if c < b => (c, SendError::ClientTimeout),
            (Some(b), _) => (b, SendError::BackendTimeout),
            (None, Some(c)) => (c, SendError::ClientTimeout),
            (None, None) => return Poll::Pending,
        };
        ready!(self.conn.timer.poll_until(cx, deadline));
        Poll::Ready(Err(timeout))
    }
}
