//! The bytes of a request waiting to be written: a reusable buffer (the
//! head, chunk-size lines, small frames copied in), at most one large frame
//! held as it came, and what follows that frame. One vectored write sends
//! them all, so a GET, or a head with a small body, is one syscall.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// Frames up to this size are copied into the buffer; larger ones are held.
const COPY_MAX: usize = 8 * 1024;
/// No more request body is taken while this much waits to be written.
const QUEUE_MAX: usize = 64 * 1024;

/// Request bytes not yet written.
#[derive(Debug, Default)]
pub(super) struct WriteQueue {
    /// Bytes before `data`; `buf[..pos]` is written.
    buf: Vec<u8>,
    pos: usize,
    /// A large frame.
    data: Bytes,
    /// Bytes after `data` (empty while `data` is).
    tail: Vec<u8>,
}

impl WriteQueue {
    /// Gives access to the buffer for writing a head; the queue must be empty.
    pub fn head_buf(&mut self) -> &mut Vec<u8> {
        self.clear();
        &mut self.buf
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// True while another frame may be queued.
    pub fn has_room(&self) -> bool {
        self.data.is_empty() && self.buf.len() - self.pos < QUEUE_MAX
    }

    /// Queues small bytes (framing).
    pub fn push_small(&mut self, bytes: &[u8]) {
        self.small_buf().extend_from_slice(bytes);
    }

    /// The buffer new small bytes go to.
    pub fn small_buf(&mut self) -> &mut Vec<u8> {
        if self.data.is_empty() {
            &mut self.buf
        } else {
            &mut self.tail
        }
    }

    /// Queues a frame's data; call only when [`WriteQueue::has_room`].
    pub fn push_data(&mut self, data: Bytes) {
        if data.len() <= COPY_MAX || !self.data.is_empty() {
            self.small_buf().extend_from_slice(&data);
        } else {
            self.data = data;
        }
    }

    /// Drops what is queued, keeping the buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.data = Bytes::new();
        self.tail.clear();
    }

    /// Writes what it can with one vectored write.
    pub fn poll_write(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let parts = [&self.buf[self.pos..], &self.data[..], &self.tail[..]];
        let mut slices = [IoSlice::new(&[]); 3];
        let mut count = 0;
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            slices[count] = IoSlice::new(part);
            count += 1;
        }
        let n = ready!(Pin::new(stream).poll_write_vectored(cx, &slices[..count]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    fn advance(&mut self, n: usize) {
        let from_buf = n.min(self.buf.len() - self.pos);
        self.pos += from_buf;
        let mut n = n - from_buf;
        let from_data = n.min(self.data.len());
        self.data.advance(from_data);
        n -= from_data;
        if n > 0 {
            self.tail.drain(..n.min(self.tail.len()));
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.data.is_empty() {
                std::mem::swap(&mut self.buf, &mut self.tail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(q: &WriteQueue) -> Vec<u8> {
        [&q.buf[q.pos..], &q.data[..], &q.tail[..]].concat()
    }

    #[test]
    fn keeps_order_across_partial_writes() {
        let mut q = WriteQueue::default();
        q.head_buf().extend_from_slice(b"HEAD");
        q.push_small(b"a\r\n");
        let big = Bytes::from(vec![b'x'; COPY_MAX + 1]);
        q.push_data(big.clone());
        assert!(!q.has_room(), "one large frame at a time");
        q.push_small(b"\r\n0\r\n\r\n");
        let mut expect = b"HEADa\r\n".to_vec();
        expect.extend_from_slice(&big);
        expect.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(pending(&q), expect);
        let mut written = Vec::new();
        for step in [3, 5, COPY_MAX - 6, 4, 1, 100] {
            let before = pending(&q);
            let n = step.min(before.len());
            written.extend_from_slice(&before[..n]);
            q.advance(n);
            if q.data.is_empty() {
                assert!(q.has_room());
            }
            // New small bytes always go after what is queued.
            if n == 4 {
                q.push_small(b"!");
                expect.push(b'!');
            }
        }
        written.extend_from_slice(&pending(&q));
        assert_eq!(written, expect);
        q.advance(pending(&q).len());
        assert!(q.is_empty());
    }

    #[test]
    fn small_frames_are_copied() {
        let mut q = WriteQueue::default();
        q.head_buf().extend_from_slice(b"H");
        q.push_data(Bytes::from_static(b"body"));
        assert!(q.data.is_empty());
        assert_eq!(pending(&q), b"Hbody");
        q.clear();
        assert!(q.is_empty());
    }
}
