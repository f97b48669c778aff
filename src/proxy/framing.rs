//! Request-smuggling guard: watches the bytes a client sends, request head by
//! request head, and remembers the first head that carries both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! hyper resolves that conflict itself (RFC 9112 §6.3: chunked wins, the
//! connection closes afterwards) and drops `Content-Length` before the proxy
//! sees the request, so the conflict can only be seen on the wire. The proxy
//! answers such a request 400 instead of forwarding it.
//!
//! The guard follows the message framing (fixed length or chunked) to find
//! where each head starts. Whenever it is unsure — an upgrade, a line too long
//! to keep, a malformed size — it stops watching; hyper's own parser still
//! frames every request, so giving up never lets a request through unframed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest line kept: request lines and header lines beyond it are only
/// scanned for their end, and a framing header beyond it stops the guard.
const LINE_CAP: usize = 256;

/// Shared between a connection's guard and its request handler.
#[derive(Debug)]
pub struct FramingWatch {
    /// Index of the first head with both framing headers, or `u64::MAX`.
    ambiguous: AtomicU64,
    /// Requests handed to the proxy so far on this connection.
    served: AtomicU64,
}

impl Default for FramingWatch {
    fn default() -> Self {
        FramingWatch {
            ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }
    }
}

impl FramingWatch {
    /// Called once per request, in order: is this request's head the one
    /// that carried both `Content-Length` and `Transfer-Encoding`?
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        self.ambiguous.load(Ordering::Acquire) == index
    }

    fn flag(&self, index: u64) {
        let _ = self
            .ambiguous
            .compare_exchange(u64::MAX, index, Ordering::Release, Ordering::Relaxed);
    }
}

/// Where the scanner is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a request head (request line or header lines).
    Head,
    /// Skipping this many body bytes.
    Fixed(u64),
    /// In a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// The line ending after chunk data.
    ChunkEnd,
    /// Trailer lines after the last chunk.
    Trailer,
    /// No longer watching (upgrade, or unsure).
    Off,
}

/// What the current head has said so far.
#[derive(Debug, Default, Clone, Copy)]
struct HeadFacts {
    seen_request_line: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    upgrade: bool,
}

/// Incremental scanner of request framing; see the module docs.
#[derive(Debug)]
pub struct FramingScanner {
    phase: Phase,
    line: [u8; LINE_CAP],
    line_len: usize,
    line_truncated: bool,
    head: HeadFacts,
    heads: u64,
}

impl Default for FramingScanner {
    fn default() -> Self {
        FramingScanner {
            phase: Phase::Head,
            line: [0; LINE_CAP],
            line_len: 0,
            line_truncated: false,
            head: HeadFacts::default(),
            heads: 0,
        }
    }
}

impl FramingScanner {
    /// Scans `bytes`, the next ones the client sent; calls `flag(index)` for
    /// every head (counted from 0) with both framing headers.
    pub fn scan(&mut self, mut bytes: &[u8], flag: &mut impl FnMut(u64)) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Fixed(n) | Phase::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = n - take;
                    self.phase = match (self.phase, left) {
                        (Phase::Fixed(_), 0) => Phase::Head,
                        (Phase::Fixed(_), l) => Phase::Fixed(l),
                        (_, 0) => Phase::ChunkEnd,
                        (_, l) => Phase::ChunkData(l),
                    };
                }
                Phase::Head | Phase::ChunkSize | Phase::ChunkEnd | Phase::Trailer => {
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        self.keep(bytes);
                        return;
                    };
                    self.keep(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    self.end_of_line(flag);
                    self.line_len = 0;
                    self.line_truncated = false;
                }
            }
        }
    }

    fn keep(&mut self, part: &[u8]) {
        let room = LINE_CAP - self.line_len;
        let n = part.len().min(room);
        self.line[self.line_len..self.line_len + n].copy_from_slice(&part[..n]);
        self.line_len += n;
        if part.len() > room {
            self.line_truncated = true;
        }
    }

    fn end_of_line(&mut self, flag: &mut impl FnMut(u64)) {
        if !self.line_truncated && self.line[..self.line_len].ends_with(b"\r") {
            self.line_len -= 1;
        }
        let line = &self.line[..self.line_len];
        let line_empty = line.is_empty() && !self.line_truncated;
        match self.phase {
            Phase::Head if line_empty => {
                // Empty lines before a request line are allowed and skipped.
                if self.head.seen_request_line {
                    self.phase = self.end_of_head(flag);
                }
            }
            Phase::Head => self.header_line(),
            Phase::ChunkSize => {
                self.phase = match chunk_size(line).filter(|_| !self.line_truncated) {
                    Some(0) => Phase::Trailer,
                    Some(n) => Phase::ChunkData(n),
                    None => Phase::Off,
                };
            }
            Phase::ChunkEnd => self.phase = if line_empty { Phase::ChunkSize } else { Phase::Off },
            Phase::Trailer if line_empty => self.phase = Phase::Head,
            Phase::Trailer | Phase::Fixed(_) | Phase::ChunkData(_) | Phase::Off => {}
        }
    }

    fn header_line(&mut self) {
        let line = &self.line[..self.line_len];
        if !self.head.seen_request_line {
            self.head.seen_request_line = true;
            if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"CONNECT ") {
                self.head.upgrade = true;
            }
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_decimal(value).filter(|_| !self.line_truncated) {
                Some(n) if self.head.content_length.is_none_or(|prev| prev == n) => self.head.content_length = Some(n),
                _ => self.phase = Phase::Off,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.line_truncated {
                self.phase = Phase::Off;
                return;
            }
            self.head.transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            self.head.chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.head.upgrade = true;
        }
    }

    fn end_of_head(&mut self, flag: &mut impl FnMut(u64)) -> Phase {
        let head = std::mem::take(&mut self.head);
        let index = self.heads;
        self.heads += 1;
        if head.transfer_encoding && head.content_length.is_some() {
            flag(index);
        }
        match head {
            HeadFacts { upgrade: true, .. } => Phase::Off,
            HeadFacts {
                transfer_encoding: true,
                chunked,
                ..
            } => {
                if chunked {
                    Phase::ChunkSize
                } else {
                    Phase::Off
                }
            }
            HeadFacts {
                content_length: Some(n),
                ..
            } if n > 0 => Phase::Fixed(n),
            _ => Phase::Head,
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = trim(line.split(|&b| b == b';').next().unwrap_or_default());
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| Some(n * 16 + u64::from((d as char).to_digit(16)?)))
}

/// A client connection seen through a [`FramingScanner`].
#[derive(Debug)]
pub struct FramingGuard<S> {
    inner: S,
    scanner: FramingScanner,
    watch: std::sync::Arc<FramingWatch>,
}

impl<S> FramingGuard<S> {
    /// Watches what `inner` reads; findings go to `watch`.
    pub fn new(inner: S, watch: std::sync::Arc<FramingWatch>) -> Self {
        FramingGuard {
            inner,
            scanner: FramingScanner::default(),
            watch,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let watch = &this.watch;
            this.scanner.scan(&buf.filled()[before..], &mut |i| watch.flag(i));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads flagged when `input` arrives in pieces of `step` bytes.
    fn flagged(input: &[u8], step: usize) -> (Vec<u64>, u64, Phase) {
        let mut scanner = FramingScanner::default();
        let mut found = Vec::new();
        for piece in input.chunks(step) {
            scanner.scan(piece, &mut |i| found.push(i));
        }
        (found, scanner.heads, scanner.phase)
    }

    fn every_split(input: &[u8]) -> (Vec<u64>, u64, Phase) {
        let whole = flagged(input, input.len());
        for step in 1..input.len() {
            assert_eq!(flagged(input, step), whole, "split every {step} bytes");
        }
        whole
    }

    #[test]
    fn fixed_length_and_chunked_bodies_are_skipped() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\nGET / HTTP/1.1\r\nX: y\r\n\r\n\
POST /b HTTP/1.1\r\ntransfer-encoding: gzip, Chunked\r\n\r\n\
5;ext=1\r\nhello\r\n20\r\nContent-Length: 1\r\n\r\nabcdefghijk\r\n0\r\nTrailer: t\r\n\r\n\
GET /c HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(input), (vec![], 3, Phase::Head));
    }

    #[test]
    fn both_framing_headers_are_flagged_in_either_order() {
        let te_first = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(te_first).0, vec![1]);
        let cl_first = b"POST / HTTP/1.1\r\ncontent-length: 4\r\nTRANSFER-ENCODING:  chunked \r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(cl_first).0, vec![0]);
    }

    #[test]
    fn bare_line_feeds_and_leading_empty_lines_count_as_lines() {
        let input = b"\r\n\nPOST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n0\n\n";
        assert_eq!(every_split(input), (vec![0], 1, Phase::Head));
    }

    #[test]
    fn upgrades_and_anything_unclear_stop_the_watch() {
        let upgrade =
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(every_split(upgrade), (vec![], 1, Phase::Off));
        let connect = b"CONNECT a:1 HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(connect).2, Phase::Off);
        let bad_size = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(every_split(bad_size).2, Phase::Off);
        let two_lengths = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(every_split(two_lengths).2, Phase::Off);
        let long = [
            b"POST / HTTP/1.1\r\nContent-Length: ".as_slice(),
            &[b'1'; 300],
            b"\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&long).2, Phase::Off);
    }

    #[test]
    fn long_lines_elsewhere_are_fine() {
        let input = [
            b"GET /".as_slice(),
            &[b'a'; 1000],
            b" HTTP/1.1\r\nCookie: ",
            &[b'c'; 1000],
            b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&input), (vec![], 2, Phase::Head));
    }
}
