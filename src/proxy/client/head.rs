//! Heads: the request head written into a reusable buffer, and the response
//! head parsed with `httparse` into an `http::HeaderMap` whose values are
//! slices of one copy of the head (RFC 9112 §6.3 framing decided here).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::{Framing, MAX_HEAD, MAX_HEADERS, RequestHead};
use crate::proxy::headers::{ConnectionOptions, list_tokens};

/// Writes `head` (always `HTTP/1.1`) after what `out` holds. The map's own
/// `Content-Length` and `Transfer-Encoding` are skipped: the framing choice
/// writes the one that is true.
pub(super) fn write_request(out: &mut Vec<u8>, head: &RequestHead<'_>) -> Result<(), &'static str> {
    let target = head.target.as_bytes();
    if target.is_empty() {
        return Err("empty request target");
    }
    if target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err("request target with a space or a control character");
    }
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers {
        if *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING {
            continue;
        }
        write_field(out, name, value);
    }
    match head.framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes every field of `fields` (a trailer section's lines).
pub(super) fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        write_field(out, name, value);
    }
}

fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyLength {
    /// No body: HEAD, 1xx, 204, 304, or `Content-Length: 0`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// The `Transfer-Encoding` of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    Absent,
    /// The last coding is `chunked`.
    Chunked,
    /// Present, but the last coding is not `chunked`.
    Other,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// The fields, `Content-Length` removed when `Transfer-Encoding` overrode it.
    pub headers: HeaderMap,
    /// Bytes the head took in the buffer.
    pub len: usize,
    length: Option<u64>,
    transfer: Transfer,
    /// What its `Connection` fields say.
    pub connection: ConnectionOptions,
    /// Both `Transfer-Encoding` and `Content-Length` came.
    conflict: bool,
}

impl ResponseHead {
    /// How the body is delimited, for a request that was (or not) a HEAD.
    pub fn body_length(&self, head_request: bool) -> BodyLength {
        let s = self.status.as_u16();
        if head_request || s < 200 || s == 204 || s == 304 {
            return BodyLength::Empty;
        }
        match (self.transfer, self.length) {
            (Transfer::Chunked, _) => BodyLength::Chunked,
            (Transfer::Other, _) => BodyLength::Close,
            (Transfer::Absent, Some(0)) => BodyLength::Empty,
            (Transfer::Absent, Some(n)) => BodyLength::Length(n),
            (Transfer::Absent, None) => BodyLength::Close,
        }
    }

    /// Whether the connection may carry another request once this response
    /// (delimited by `length`) has been read to its end.
    pub fn keeps_alive(&self, length: BodyLength) -> bool {
        if self.connection.close || self.conflict || length == BodyLength::Close {
            return false;
        }
        match self.version {
            Version::HTTP_11 => true,
            // HTTP/1.0: only when asked for, and never with Transfer-Encoding
            // (faulty framing in a 1.0 message, RFC 9112 §6.1).
            _ => self.connection.keep_alive && self.transfer == Transfer::Absent,
        }
    }
}

fn parser() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    // Backends are trusted but may be sloppy in harmless ways.
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true);
    config
}

/// Parses a response head from the start of `buf`: `Ok(None)` while it is
/// incomplete (the caller gives up at [`MAX_HEAD`] bytes), an error reason
/// when it is not valid.
pub(super) fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, &'static str> {
    let buf = &buf[..buf.len().min(MAX_HEAD)];
    // Left uninitialised: httparse fills what it parses (no 4 KiB to clear
    // on every read of a head).
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match parser().parse_response_with_uninit_headers(&mut res, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("more than 128 header fields"),
        Err(_) => return Err("the response head is not valid HTTP/1.x"),
    };
    let version = match res.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0)).map_err(|_| "invalid status code")?;
    let fields = Fields::parse(res.headers, buf, len)?;
    let Fields {
        mut headers,
        length,
        length_error,
        transfer,
        connection,
    } = fields;
    let conflict = transfer != Transfer::Absent && (length.is_some() || length_error.is_some());
    if conflict {
        // Transfer-Encoding wins (RFC 9112 §6.3 rule 3); a Content-Length
        // passed on would contradict the body the caller forwards.
        headers.remove(CONTENT_LENGTH);
    } else if let Some(reason) = length_error {
        return Err(reason);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        len,
        length,
        transfer,
        connection,
        conflict,
    }))
}

/// Parses a trailer section (field lines, then an empty line) from the
/// start of `buf`: `Ok(None)` while incomplete; else its length and fields.
pub(super) fn parse_trailers(buf: &[u8]) -> Result<Option<(usize, HeaderMap)>, &'static str> {
    let buf = &buf[..buf.len().min(MAX_HEAD)];
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, parsed))) => {
            let fields = Fields::parse(parsed, buf, len)?;
            Ok(Some((len, fields.headers)))
        }
        Ok(httparse::Status::Partial) if buf.len() == MAX_HEAD => Err("trailer section larger than 64 KiB"),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err("more than 128 trailer fields"),
        Err(_) => Err("invalid trailer section"),
    }
}

/// Room left in a response's field map for the fields added on its way to
/// the client (`Keep-Alive`, `Set-Cookie`, `Cache-Control`, and hyper's own),
/// so that adding them does not grow and rehash the map.
const ADDED_FIELDS: usize = 4;

/// The fields of a head, and what framing they declare.
struct Fields {
    headers: HeaderMap,
    length: Option<u64>,
    length_error: Option<&'static str>,
    transfer: Transfer,
    connection: ConnectionOptions,
}

impl Fields {
    /// `parsed` are httparse's fields over `buf`, whose first `len` bytes
    /// are the head: copied once, every value a slice of the copy.
    fn parse(parsed: &[httparse::Header<'_>], buf: &[u8], len: usize) -> Result<Self, &'static str> {
        let head = Bytes::copy_from_slice(&buf[..len]);
        let base = buf.as_ptr() as usize;
        let mut f = Fields {
            headers: HeaderMap::with_capacity(parsed.len() + ADDED_FIELDS),
            length: None,
            length_error: None,
            transfer: Transfer::Absent,
            connection: ConnectionOptions::default(),
        };
        for field in parsed {
            let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "invalid header name")?;
            let raw = field.value;
            if name == CONTENT_LENGTH {
                if let Err(reason) = content_length(raw, &mut f.length) {
                    f.length_error.get_or_insert(reason);
                }
            } else if name == TRANSFER_ENCODING {
                if let Some(last) = list_tokens(raw).last() {
                    f.transfer = if last.eq_ignore_ascii_case(b"chunked") {
                        Transfer::Chunked
                    } else {
                        Transfer::Other
                    };
                } else if f.transfer == Transfer::Absent {
                    f.transfer = Transfer::Other;
                }
            } else if name == CONNECTION {
                f.connection.add(raw);
            }
            let start = (raw.as_ptr() as usize).wrapping_sub(base);
            let value = if raw.is_empty() {
                Ok(HeaderValue::from_static(""))
            } else if start < len && raw.len() <= len - start {
                HeaderValue::from_maybe_shared(head.slice(start..start + raw.len()))
            } else {
                HeaderValue::from_bytes(raw)
            }
            .map_err(|_| "invalid header value")?;
            f.headers.append(name, value);
        }
        Ok(f)
    }
}

/// Folds one `Content-Length` field (possibly a list of equal values) into
/// `seen`.
fn content_length(value: &[u8], seen: &mut Option<u64>) -> Result<(), &'static str> {
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        // 19 digits always fit in a u64.
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        match *seen {
            Some(m) if m != n => return Err("conflicting Content-Length values"),
            _ => *seen = Some(n),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn parse(s: &str) -> Result<Option<ResponseHead>, &'static str> {
        parse_response(s.as_bytes())
    }

    fn head(s: &str) -> ResponseHead {
        parse(s).unwrap().unwrap()
    }

    #[test]
    fn writes_the_request_head_with_its_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("b"));
        headers.insert("content-length", HeaderValue::from_static("99"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut out = b"junk".to_vec();
        out.clear();
        let h = RequestHead {
            method: &Method::POST,
            target: "/a?b=c",
            headers: &headers,
            framing: Framing::Length(12345678901),
        };
        write_request(&mut out, &h).unwrap();
        assert_eq!(
            out,
            b"POST /a?b=c HTTP/1.1\r\nhost: b\r\ncontent-length: 12345678901\r\n\r\n"
        );
        out.clear();
        let h = RequestHead {
            framing: Framing::Chunked,
            ..h
        };
        write_request(&mut out, &h).unwrap();
        assert_eq!(
            out,
            b"POST /a?b=c HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        for bad in ["", "/a b", "/a\r\nx: y", "/\x7f"] {
            let h = RequestHead { target: bad, ..h };
            assert!(write_request(&mut out, &h).is_err(), "{bad:?}");
        }
        let mut d = Vec::new();
        push_decimal(&mut d, 0);
        push_decimal(&mut d, u64::MAX);
        assert_eq!(d, b"018446744073709551615");
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        let full = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        for cut in 0..full.len() - 2 {
            assert!(parse(&full[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let h = head(full);
        assert_eq!(h.len, full.len() - 2);
        assert_eq!(h.body_length(false), BodyLength::Length(2));
        assert!(h.keeps_alive(BodyLength::Length(2)));
    }

    #[test]
    fn values_are_slices_of_one_copy_and_names_are_lowercase() {
        let h = head("HTTP/1.1 200 OK\r\nX-A:  one \r\nx-a: two\r\nEmpty:\r\n\r\n");
        let all: Vec<_> = h.headers.get_all("x-a").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(all, [&b"one"[..], b"two"]);
        assert_eq!(h.headers["empty"], "");
    }

    #[test]
    fn framing_rules() {
        let cases: &[(&str, bool, BodyLength, bool)] = &[
            ("HTTP/1.1 204 No Content\r\n\r\n", false, BodyLength::Empty, true),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false,
                BodyLength::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                true,
                BodyLength::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                false,
                BodyLength::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                BodyLength::Empty,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, BodyLength::Close, false),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                BodyLength::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                BodyLength::Close,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\nConnection: close\r\n\r\n",
                false,
                BodyLength::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive, Close\r\n\r\n",
                false,
                BodyLength::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                false,
                BodyLength::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
                false,
                BodyLength::Length(3),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
                false,
                BodyLength::Close,
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
                false,
                BodyLength::Chunked,
                false,
            ),
        ];
        for (text, head_request, length, reuse) in cases {
            let h = head(text);
            assert_eq!(h.body_length(*head_request), *length, "{text:?}");
            assert_eq!(h.keeps_alive(*length), *reuse, "{text:?}");
        }
    }

    #[test]
    fn every_connection_field_is_read_into_the_options() {
        let h = head("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\nConnection: , x-trace\r\n\r\n");
        let want = ConnectionOptions {
            keep_alive: true,
            names_fields: true,
            ..ConnectionOptions::default()
        };
        assert_eq!(h.connection, want);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").connection,
            ConnectionOptions::default()
        );
        let h = head("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.connection.upgrade && !h.connection.names_fields);
    }

    #[test]
    fn transfer_encoding_overrides_and_removes_content_length() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body_length(false), BodyLength::Chunked);
        assert!(h.headers.get("content-length").is_none());
        assert!(!h.keeps_alive(BodyLength::Chunked));
        // Even an invalid Content-Length is overridden, not an error.
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.headers.get("content-length").is_none());
    }

    #[test]
    fn bad_heads_are_errors() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let many: String = (0..129).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err(),
            "more than 128 header fields"
        );
    }

    #[test]
    fn heads_stop_at_64_kib() {
        let big = format!("HTTP/1.1 200 OK\r\nx: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(parse(&big).unwrap().is_none(), "never complete within the limit");
        let fits = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD - 100));
        assert!(parse(&fits).unwrap().is_some());
    }

    #[test]
    fn trailers() {
        let (len, map) = parse_trailers(b"x-sum: 1\r\nx-b: 2\r\n\r\nrest").unwrap().unwrap();
        assert_eq!(len, 20);
        assert_eq!(map["x-sum"], "1");
        assert_eq!(parse_trailers(b"\r\n").unwrap().unwrap().0, 2);
        assert!(parse_trailers(b"x-sum: 1\r\n").unwrap().is_none());
        assert!(parse_trailers(b"bad line\r\n\r\n").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"HTP/1.0 2\r\n:;,-abcCLchunked\x00\xff";
        for _ in 0..20_000 {
            let n = rng.usize(0..80);
            let mut v: Vec<u8> = (0..n).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            if rng.bool() {
                v.splice(0..0, b"HTTP/1.1 200 OK\r\n".iter().copied());
            }
            let _ = parse_response(&v);
            let _ = parse_trailers(&v);
        }
    }
}
