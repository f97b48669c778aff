//! A response body streamed from its connection: read only when polled
//! (a slow client slows the backend), at most [`READ_BUF_SIZE`] per frame,
//! and the connection handed back to its pool the moment the body is
//! complete — or closed, if the body is dropped before its end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::chunked::{Decoded, Decoder};
use super::conn::Connection;
use super::error::BodyError;
use super::head::BodyLength;
use super::{MAX_HEAD, READ_BUF_SIZE};
use crate::proxy::timer::Idle;

/// How the rest of the body is delimited.
#[derive(Debug)]
enum Kind {
    Empty,
    /// Bytes left.
    Length(u64),
    Chunked(Decoder),
    /// Until EOF.
    Close,
}

/// What the buffer gave.
enum Step {
    Frame(Frame<Bytes>),
    /// The body is complete (a trailers frame may come with it).
    End(Option<Frame<Bytes>>),
    NeedMore,
}

/// A backend's response body.
#[derive(Debug)]
pub struct ResponseBody {
    /// The connection, until the body ends (or fails).
    conn: Option<Connection>,
    kind: Kind,
    /// The connection may carry another request after this body.
    reusable: bool,
    ended: bool,
    backend: Idle,
}

impl ResponseBody {
    pub(super) fn new(conn: Connection, length: BodyLength, reusable: bool) -> Self {
        let kind = match length {
            BodyLength::Empty => Kind::Empty,
            BodyLength::Length(n) => Kind::Length(n),
            BodyLength::Chunked => Kind::Chunked(Decoder::new()),
            BodyLength::Close => Kind::Close,
        };
        let mut body = ResponseBody {
            conn: Some(conn),
            kind,
            reusable,
            ended: false,
            backend: Idle::default(),
        };
        if matches!(body.kind, Kind::Empty) {
            body.finish();
        }
        body
    }

    /// Whether the connection goes back to its pool at the body's end
    /// (false once it is known it will not, or did not).
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Bytes read from the backend and not yet yielded (at most one read
    /// buffer).
    pub fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.buf.len())
    }

    /// The body is complete: the connection goes back to its pool if it can,
    /// else it is closed.
    fn finish(&mut self) {
        self.ended = true;
        if let Some(conn) = self.conn.take() {
            // Bytes past the response mean the backend is out of step.
            if self.reusable && conn.buf.is_empty() {
                conn.release();
            } else {
                self.reusable = false;
            }
        }
    }

    /// The body failed: the connection is closed.
    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.ended = true;
        self.reusable = false;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// Takes the next frame out of the read buffer.
    fn step(&mut self) -> Result<Step, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End(None));
        };
        let buf = &mut conn.buf;
        match &mut self.kind {
            Kind::Empty => Ok(Step::End(None)),
            Kind::Length(0) => Ok(Step::End(None)),
            Kind::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = buf
                    .len()
                    .min(READ_BUF_SIZE)
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                let frame = Frame::data(buf.split_to(n).freeze());
                if *left == 0 {
                    Ok(Step::End(Some(frame)))
                } else {
                    Ok(Step::Frame(frame))
                }
            }
            Kind::Chunked(decoder) => match decoder.decode(buf, READ_BUF_SIZE) {
                Ok(Decoded::Data(data)) => Ok(Step::Frame(Frame::data(data))),
                Ok(Decoded::End(trailers)) if trailers.is_empty() => Ok(Step::End(None)),
                Ok(Decoded::End(trailers)) => Ok(Step::End(Some(Frame::trailers(trailers)))),
                Ok(Decoded::NeedMore) => Ok(Step::NeedMore),
                Err(reason) => Err(BodyError::BadChunk(reason)),
            },
            Kind::Close if buf.is_empty() => Ok(Step::NeedMore),
            Kind::Close => {
                let n = buf.len().min(READ_BUF_SIZE);
                Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())))
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.step() {
                Err(e) => return this.fail(e),
                Ok(Step::Frame(frame)) => {
                    this.backend.active();
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::End(last)) => {
                    this.finish();
                    return Poll::Ready(last.map(Ok));
                }
                Ok(Step::NeedMore) => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // Only a trailer section may need more than one read buffer.
            let max = match &this.kind {
                Kind::Chunked(decoder) if decoder.in_trailers() => MAX_HEAD,
                _ => READ_BUF_SIZE,
            };
            match conn.poll_fill(cx, max) {
                Poll::Ready(Ok(0)) if matches!(this.kind, Kind::Close) => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(BodyError::Closed),
                Poll::Ready(Ok(_)) => this.backend.active(),
                Poll::Ready(Err(e)) => return this.fail(BodyError::Io(e)),
                Poll::Pending => {
                    let deadline = this.backend.waiting(&mut None, conn.timeouts.backend_idle);
                    ready!(conn.timer.poll_until(cx, deadline));
                    return this.fail(BodyError::Timeout);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            _ if self.ended => SizeHint::with_exact(0),
            Kind::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
