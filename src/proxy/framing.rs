//! Request-smuggling guard: follows the bytes a client sends, request head
//! by request head, and flags every head that carries both `Content-Length`
//! and `Transfer-Encoding`.
//!
//! hyper resolves that conflict itself (RFC 9112 §6.3: chunked wins) and
//! drops `Content-Length` before the proxy sees the request, so the conflict
//! can only be seen on the wire. The proxy answers such a request 400 and
//! closes, instead of forwarding it — without exception: the guard follows
//! the framing (fixed length or chunked, skipping body bytes by count, never
//! looking at them) to find where each head starts; lines of any length are
//! read (the start of a framing field's value and its end are kept); a
//! request with `Upgrade` is framed like any other until the proxy says the
//! connection became a tunnel; and when the stream stops making sense (a
//! malformed chunk size, two lengths), every later request on the connection
//! is refused rather than trusted.
//!
//! It also serves `HTTP/1.2` (or any 1.x above 1.1) as 1.1, as RFC 9110 §6.2
//! asks: the minor digit is rewritten in place before hyper reads it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes kept from the start of a line (and from its end).
const KEEP: usize = 64;

/// Shared between a connection's guard and its request handler.
#[derive(Debug)]
pub struct FramingWatch {
    /// Index of the first head with both framing headers, or `u64::MAX`.
    ambiguous: AtomicU64,
    /// Requests handed to the proxy so far on this connection.
    served: AtomicU64,
    /// The stream stopped making sense: refuse everything after it.
    broken_from: AtomicU64,
    /// The connection is a tunnel now: stop watching.
    tunnel: AtomicBool,
}

impl Default for FramingWatch {
    fn default() -> Self {
        FramingWatch {
            ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
            broken_from: AtomicU64::new(u64::MAX),
            tunnel: AtomicBool::new(false),
        }
    }
}

impl FramingWatch {
    /// Called once per request, in order: must this request be refused
    /// (its head carried both framing fields, or came after bytes that did
    /// not frame)?
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        self.ambiguous.load(Ordering::Acquire) == index || index >= self.broken_from.load(Ordering::Acquire)
    }

    /// The connection became a tunnel (101): its bytes are not HTTP now.
    pub fn became_tunnel(&self) {
        self.tunnel.store(true, Ordering::Release);
    }

    fn flag(&self, index: u64) {
        let _ = self
            .ambiguous
            .compare_exchange(u64::MAX, index, Ordering::Release, Ordering::Relaxed);
    }

    fn broken(&self, from: u64) {
        let _ = self
            .broken_from
            .compare_exchange(u64::MAX, from, Ordering::Release, Ordering::Relaxed);
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
    /// The stream stopped framing: every later head is refused.
    Broken,
    /// A tunnel: not watching.
    Off,
}

/// What the current head has said so far.
#[derive(Debug, Default, Clone, Copy)]
struct HeadFacts {
    seen_request_line: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    /// Two different lengths, or one that is not a number.
    bad_length: bool,
}

/// Where the scanner is in a request line, byte by byte (for the version).
#[derive(Debug, Default, Clone, Copy)]
struct RequestLine {
    /// Spaces seen.
    spaces: u8,
    /// The version token's first bytes (after the second space).
    version: [u8; 7],
    /// Bytes of the version token seen.
    version_len: u8,
}

/// Incremental scanner of request framing; see the module docs.
#[derive(Debug)]
pub struct FramingScanner {
    phase: Phase,
    /// The first [`KEEP`] bytes of the current line.
    start: [u8; KEEP],
    start_len: usize,
    /// The last [`KEEP`] bytes of the current line (a ring).
    tail: [u8; KEEP],
    line_len: usize,
    head: HeadFacts,
    request_line: RequestLine,
    heads: u64,
}

impl Default for FramingScanner {
    fn default() -> Self {
        FramingScanner {
            phase: Phase::Head,
            start: [0; KEEP],
            start_len: 0,
            tail: [0; KEEP],
            line_len: 0,
            head: HeadFacts::default(),
            request_line: RequestLine::default(),
            heads: 0,
        }
    }
}

impl FramingScanner {
    /// True while part of a request head has arrived but not all of it.
    pub fn in_head(&self) -> bool {
        self.phase == Phase::Head && (self.head.seen_request_line || self.line_len > 0)
    }

    /// True when the next byte would start a new request head.
    pub fn between_requests(&self) -> bool {
        self.phase == Phase::Head && !self.in_head()
    }

    /// Scans `bytes`, the next ones the client sent, rewriting an `HTTP/1.x`
    /// version above 1.1 in place; tells `watch` of every head with both
    /// framing headers and of a stream that stopped framing.
    pub fn scan(&mut self, mut bytes: &mut [u8], watch: &FramingWatch) {
        if watch.tunnel.load(Ordering::Acquire) {
            self.phase = Phase::Off;
        }
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off | Phase::Broken => return,
                Phase::Fixed(n) | Phase::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &mut bytes[take as usize..];
                    let left = n - take;
                    self.phase = match (self.phase, left) {
                        (Phase::Fixed(_), 0) => Phase::Head,
                        (Phase::Fixed(_), l) => Phase::Fixed(l),
                        (_, 0) => Phase::ChunkEnd,
                        (_, l) => Phase::ChunkData(l),
                    };
                }
                Phase::Head | Phase::ChunkSize | Phase::ChunkEnd | Phase::Trailer => {
                    let end = memchr::memchr(b'\n', bytes);
                    if let Some(end) = end
                        && self.phase == Phase::Head
                        && self.line_len == 0
                        && self.head.seen_request_line
                        && self.header_line_in_place(&bytes[..end], watch)
                    {
                        bytes = &mut bytes[end + 1..];
                        continue;
                    }
                    let len = end.unwrap_or(bytes.len());
                    let line_part = &mut bytes[..len];
                    if self.phase == Phase::Head && !self.head.seen_request_line {
                        self.request_line_bytes(line_part);
                    }
                    self.keep(line_part);
                    let Some(end) = end else { return };
                    bytes = &mut bytes[end + 1..];
                    self.end_of_line(watch);
                    self.start_len = 0;
                    self.line_len = 0;
                }
            }
        }
    }

    /// Follows the request line to its version and serves 1.x above 1.1 as 1.1.
    fn request_line_bytes(&mut self, part: &mut [u8]) {
        let rl = &mut self.request_line;
        for b in part.iter_mut() {
            if *b == b' ' {
                rl.spaces = rl.spaces.saturating_add(1);
                continue;
            }
            if rl.spaces != 2 || *b == b'\r' {
                continue;
            }
            match rl.version_len {
                n @ 0..7 => rl.version[usize::from(n)] = *b,
                7 if (b'2'..=b'9').contains(b) && rl.version.eq_ignore_ascii_case(b"HTTP/1.") => *b = b'1',
                _ => {}
            }
            rl.version_len = rl.version_len.saturating_add(1);
        }
    }

    /// Keeps the next `part` of the current line: its first bytes in
    /// `start`, and — for a line that may be `Transfer-Encoding`, whose last
    /// coding is at its end — its last bytes in the `tail` ring once it is
    /// longer than `start` holds. Other lines cost one copy.
    fn keep(&mut self, part: &[u8]) {
        let room = KEEP - self.start_len;
        let n = part.len().min(room);
        self.start[self.start_len..self.start_len + n].copy_from_slice(&part[..n]);
        self.start_len += n;
        let len = self.line_len + part.len();
        if len > KEEP && matches!(self.start[0], b't' | b'T') {
            if self.line_len <= KEEP {
                // The ring starts now: `start` holds the line so far.
                self.tail[..self.line_len].copy_from_slice(&self.start[..self.line_len]);
            }
            let skip = part.len().saturating_sub(KEEP);
            let mut at = (self.line_len + skip) % KEEP;
            let mut rest = &part[skip..];
            while !rest.is_empty() {
                let n = rest.len().min(KEEP - at);
                self.tail[at..at + n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                at = 0;
            }
        }
        self.line_len = len;
    }

    /// The last [`KEEP`] bytes of a `Transfer-Encoding` line longer than
    /// `start` holds (the ring keeps no other), a trailing CR removed.
    fn line_end(&self) -> Vec<u8> {
        let mut end: Vec<u8> = (self.line_len - KEEP..self.line_len)
            .map(|i| self.tail[i % KEEP])
            .collect();
        if end.last() == Some(&b'\r') {
            end.pop();
        }
        end
    }

    /// The line's first bytes, a trailing CR removed when the line is short.
    fn line_start(&self) -> &[u8] {
        let kept = &self.start[..self.start_len];
        if self.line_len == self.start_len {
            kept.strip_suffix(b"\r").unwrap_or(kept)
        } else {
            kept
        }
    }

    fn is_empty_line(&self) -> bool {
        self.line_len == 0 || (self.line_len == 1 && self.start[0] == b'\r')
    }

    fn end_of_line(&mut self, watch: &FramingWatch) {
        let empty = self.is_empty_line();
        match self.phase {
            Phase::Head if empty => {
                // Empty lines before a request line are allowed and skipped.
                if self.head.seen_request_line {
                    self.phase = self.end_of_head(watch);
                }
            }
            Phase::Head => self.header_line(),
            Phase::ChunkSize => {
                self.phase = match chunk_size(self.line_start()) {
                    Some(0) => Phase::Trailer,
                    Some(n) => Phase::ChunkData(n),
                    None => self.broken(watch),
                };
            }
            Phase::ChunkEnd if empty => self.phase = Phase::ChunkSize,
            Phase::ChunkEnd => self.phase = self.broken(watch),
            Phase::Trailer if empty => self.phase = Phase::Head,
            Phase::Trailer | Phase::Fixed(_) | Phase::ChunkData(_) | Phase::Broken | Phase::Off => {}
        }
    }

    /// The stream stopped making sense: the request being read (and every
    /// one after) is refused.
    fn broken(&self, watch: &FramingWatch) -> Phase {
        watch.broken(self.heads.saturating_sub(1));
        Phase::Broken
    }

    /// A header line that starts and ends in the bytes at hand (`line`, its
    /// LF removed), read where it lies: most lines cost no copy. False for
    /// a line that may be a framing field and is longer than [`KEEP`]: it
    /// is read as the guard reads a line in pieces, with the same result.
    fn header_line_in_place(&mut self, line: &[u8], watch: &FramingWatch) -> bool {
        let whole = line.len() <= KEEP;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.phase = self.end_of_head(watch);
        } else if may_frame(line) {
            if !whole {
                return false;
            }
            self.framing_field(line, true);
        }
        true
    }

    fn header_line(&mut self) {
        if !self.head.seen_request_line {
            self.head.seen_request_line = true;
            return;
        }
        if !may_frame(self.line_start()) {
            return;
        }
        let mut copy = [0u8; KEEP];
        let kept = self.line_start().len();
        copy[..kept].copy_from_slice(&self.start[..kept]);
        self.framing_field(&copy[..kept], self.line_len == self.start_len);
    }

    /// Reads a line that may be `Content-Length` or `Transfer-Encoding` from
    /// its `start` (the whole line when `whole`, its CR removed).
    fn framing_field(&mut self, start: &[u8], whole: bool) {
        let Some(colon) = start.iter().position(|&b| b == b':') else {
            return;
        };
        let name = &start[..colon];
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = trim(&start[colon + 1..]);
            match parse_decimal(value).filter(|_| whole) {
                Some(n) if self.head.content_length.is_none_or(|prev| prev == n) => self.head.content_length = Some(n),
                _ => {
                    self.head.content_length = Some(u64::MAX);
                    self.head.bad_length = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = true;
            let value = if whole {
                trim(&start[colon + 1..]).to_vec()
            } else {
                self.line_end()
            };
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            self.head.chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn end_of_head(&mut self, watch: &FramingWatch) -> Phase {
        let head = std::mem::take(&mut self.head);
        self.request_line = RequestLine::default();
        let index = self.heads;
        self.heads += 1;
        if head.transfer_encoding && head.content_length.is_some() {
            watch.flag(index);
        }
        if head.bad_length && !head.transfer_encoding {
            // hyper refuses it and closes; nothing after it is trusted.
            return self.broken(watch);
        }
        match head {
            HeadFacts {
                transfer_encoding: true,
                chunked: true,
                ..
            } => Phase::ChunkSize,
            // A request coding that does not end in chunked is refused
            // (hyper: 400, the proxy: 501); nothing after it frames.
            HeadFacts {
                transfer_encoding: true,
                ..
            } => self.broken(watch),
            HeadFacts {
                content_length: Some(n),
                ..
            } if n > 0 => Phase::Fixed(n),
            _ => Phase::Head,
        }
    }
}

/// Whether a header line may be `Content-Length` or `Transfer-Encoding`,
/// the only fields that frame a request.
fn may_frame(line: &[u8]) -> bool {
    line.get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"con") || p.eq_ignore_ascii_case(b"tra"))
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

/// The size of a chunk-size line, extensions ignored (only the digits,
/// which come first, need to be kept).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = trim(line.split(|&b| b == b';').next().unwrap_or_default());
    if digits.is_empty() || digits.len() > 15 || digits.len() == KEEP {
        return None;
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| Some(n * 16 + u64::from((d as char).to_digit(16)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requests refused (by index, of `requests`) when `input` arrives in
    /// pieces of `step` bytes, and the bytes as hyper would see them.
    fn refused(input: &[u8], step: usize, requests: u64) -> (Vec<u64>, Vec<u8>) {
        let mut scanner = FramingScanner::default();
        let watch = FramingWatch::default();
        let mut seen = Vec::new();
        for piece in input.chunks(step) {
            let mut piece = piece.to_vec();
            scanner.scan(&mut piece, &watch);
            seen.extend_from_slice(&piece);
        }
        let refused = (0..requests).filter(|_| watch.next_is_ambiguous()).collect();
        (refused, seen)
    }

    /// The same answer whatever the pieces.
    fn every_split(input: &[u8], requests: u64) -> Vec<u64> {
        let (whole, _) = refused(input, input.len(), requests);
        for step in 1..input.len() {
            assert_eq!(refused(input, step, requests).0, whole, "split every {step} bytes");
        }
        whole
    }

    #[test]
    fn fixed_length_and_chunked_bodies_are_skipped() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\nGET / HTTP/1.1\r\nX: y\r\n\r\n\
POST /b HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n\
5;ext=1\r\nhello\r\n20\r\nContent-Length: 1\r\n\r\nabcdefghijk\r\n0\r\nTrailer: t\r\n\r\n\
GET /c HTTP/1.1\r\n\r\n";
        assert!(every_split(input, 3).is_empty());
    }

    #[test]
    fn both_framing_headers_are_flagged_in_either_order() {
        let te_first = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(te_first, 2), vec![1]);
        let cl_first = b"POST / HTTP/1.1\r\ncontent-length: 4\r\nTRANSFER-ENCODING:  chunked \r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(cl_first, 1), vec![0]);
    }

    #[test]
    fn bare_line_feeds_and_leading_empty_lines_count_as_lines() {
        let input = b"\r\n\nPOST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n0\n\n";
        assert_eq!(every_split(input, 1), vec![0]);
    }

    #[test]
    fn an_upgrade_header_does_not_stop_the_watch() {
        let input = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(input, 2), vec![1]);
    }

    #[test]
    fn a_tunnel_is_not_watched() {
        let watch = FramingWatch::default();
        let mut scanner = FramingScanner::default();
        let mut head = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        scanner.scan(&mut head, &watch);
        assert!(!watch.next_is_ambiguous());
        watch.became_tunnel();
        let mut frames = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        scanner.scan(&mut frames, &watch);
        assert!(!watch.next_is_ambiguous());
    }

    #[test]
    fn long_lines_never_blind_the_guard() {
        let long_te = [
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: ".as_slice(),
            &[b'x'; 300],
            b", chunked\r\n\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&long_te, 1), vec![0]);
        let long_cl = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: ".as_slice(),
            &[b'1'; 300],
            b"\r\n\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&long_cl, 1), vec![0]);
        // A length padded past the bytes kept of a line: not trusted as a
        // length, in one read or in pieces (nothing after it frames).
        let padded_cl = [
            b"POST / HTTP/1.1\r\nContent-Length:".as_slice(),
            &[b' '; 60],
            b"5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&padded_cl, 2), vec![0, 1]);
        // A long chunk extension, then a smuggling attempt: still seen.
        let long_ext = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;".as_slice(),
            &[b'e'; 300],
            b"\r\nhello\r\n0\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&long_ext, 2), vec![1]);
        // A chunk size longer than any real one: nothing after it is trusted.
        let long_size = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
            &[b'0'; 300],
            b"5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        ]
        .concat();
        assert_eq!(every_split(&long_size, 2), vec![0, 1]);
    }

    #[test]
    fn a_transfer_encoding_line_of_any_length_is_read_to_its_last_coding() {
        // Lines around and past the bytes kept from a line's start, each
        // ending in `chunked` (its body skipped: the next head is watched)
        // or in another coding (the stream cannot be framed).
        for codings in [2, 6, 7, 8, 12, 30] {
            let te = ["gzip, "; 30][..codings].concat();
            let chunked = format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: {te}chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            );
            assert_eq!(
                every_split(chunked.as_bytes(), 2),
                vec![1],
                "{codings} codings, then chunked"
            );
            let not_last =
                format!("POST / HTTP/1.1\r\ntransfer-encoding: chunked, {te}gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n");
            assert_eq!(
                every_split(not_last.as_bytes(), 2),
                vec![0, 1],
                "chunked, then {codings} codings"
            );
        }
    }

    #[test]
    fn unframeable_streams_refuse_what_follows() {
        let bad_size = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(bad_size, 2), vec![0, 1]);
        let two_lengths = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(two_lengths, 2), vec![0, 1]);
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
        assert!(every_split(&input, 97).is_empty());
    }

    #[test]
    fn http_1_2_is_read_as_1_1_whatever_the_split() {
        let input = b"GET / HTTP/1.2\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET /y HTTP/2.0\r\n\r\n";
        for step in 1..input.len() {
            let (_, seen) = refused(input, step, 3);
            assert_eq!(
                seen, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET /y HTTP/2.0\r\n\r\n",
                "split every {step}"
            );
        }
        let long_target = [b"GET /".as_slice(), &[b'a'; 200], b" HTTP/1.9\r\n\r\n"].concat();
        let (_, seen) = refused(&long_target, 13, 1);
        assert!(
            seen.ends_with(b" HTTP/1.1\r\n\r\n"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
}
