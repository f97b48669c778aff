//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder for
//! response bodies and the encoder's pieces for request bodies.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::head;

/// Longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 4096;

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section.
    Trailers,
    /// Done.
    End,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    /// Some chunk data.
    Data(Bytes),
    /// The body's end, with its trailer fields (empty if none).
    End(HeaderMap),
    /// The buffer holds no complete piece: read more.
    NeedMore,
}

/// Decodes a chunked body from a read buffer, consuming what it decodes.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder { state: State::Size }
    }

    /// True once the last chunk and the trailers have been read.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// True while the trailer section is awaited (it may be large).
    pub fn in_trailers(&self) -> bool {
        self.state == State::Trailers
    }

    /// Takes the next piece from `buf`; data at most `max` bytes at a time.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Decoded, &'static str> {
        loop {
            match self.state {
                State::Size => {
                    let window = &buf[..buf.len().min(MAX_SIZE_LINE)];
                    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
                        if window.len() == MAX_SIZE_LINE {
                            return Err("chunk-size line too long");
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&window[..nl])?;
                    buf.advance(nl + 1);
                    self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = buf.len().min(max).min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => match &buf[..] {
                    [b'\r', b'\n', ..] => {
                        buf.advance(2);
                        self.state = State::Size;
                    }
                    [b'\n', ..] => {
                        buf.advance(1);
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(Decoded::NeedMore),
                    _ => return Err("chunk data not followed by CRLF"),
                },
                State::Trailers => {
                    let Some((len, fields)) = head::parse_trailers(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(len);
                    self.state = State::End;
                    return Ok(Decoded::End(fields));
                }
                State::End => return Ok(Decoded::End(HeaderMap::new())),
            }
        }
    }
}

/// The size of a chunk-size line (without its LF); extensions are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size missing");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or("chunk size too large")?;
    }
    let rest = line[digits..].trim_ascii_start();
    match rest.first() {
        None => Ok(size),
        Some(b';') if rest.iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f)) => Ok(size),
        _ => Err("invalid chunk size"),
    }
}

/// Writes a chunk's size line.
pub(super) fn push_size_line(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len as u64;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Writes the last chunk and the trailer section.
pub(super) fn push_end(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        head::write_fields(out, t);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of the given sizes (cycled).
    fn decode_in_pieces(
        input: &[u8],
        pieces: &[usize],
        max: usize,
    ) -> Result<(Vec<u8>, HeaderMap, usize), &'static str> {
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut out = Vec::new();
        let mut p = 0;
        loop {
            match d.decode(&mut buf, max)? {
                Decoded::Data(b) => {
                    assert!(!b.is_empty() && b.len() <= max);
                    out.extend_from_slice(&b);
                }
                Decoded::End(t) => return Ok((out, t, buf.len())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err("truncated");
                    }
                    let n = pieces[p % pieces.len()].max(1).min(input.len() - fed);
                    p += 1;
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    const BODY: &[u8] = b"5;name=value\r\nhello\r\n6 ; ext\r\n world\r\nA\r\n0123456789\r\n0\r\nx-sum: 7\r\n\r\nNEXT";

    #[test]
    fn decodes_with_extensions_and_trailers_whatever_the_split() {
        for pieces in [&[1][..], &[2, 3], &[7], &[1000]] {
            for max in [1, 4, 16 * 1024] {
                let (data, trailers, _) = decode_in_pieces(BODY, pieces, max).unwrap();
                assert_eq!(data, b"hello world0123456789");
                assert_eq!(trailers["x-sum"], "7");
            }
        }
        let mut buf = BytesMut::from(BODY);
        let mut d = Decoder::new();
        while !d.is_done() {
            d.decode(&mut buf, 100).unwrap();
        }
        assert_eq!(&buf[..], b"NEXT", "stops at the end of the body");
    }

    #[test]
    fn bare_lf_and_no_trailers() {
        let (data, trailers, rest) = decode_in_pieces(b"3\nabc\n0\n\n", &[1], 8).unwrap();
        assert_eq!(data, b"abc");
        assert!(trailers.is_empty());
        assert_eq!(rest, 0);
    }

    #[test]
    fn bad_chunks_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5 x\r\nhello\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"0x5\r\n",
            b"5;a\x01\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let mut d = Decoder::new();
            let r = (0..10).try_for_each(|_| d.decode(&mut buf, 64).map(|_| ()));
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'0'; MAX_SIZE_LINE];
        assert_eq!(
            Decoder::new().decode(&mut BytesMut::from(&long[..]), 64),
            Err("chunk-size line too long")
        );
        assert_eq!(chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
    }

    #[test]
    fn encodes_size_lines() {
        let mut out = Vec::new();
        push_size_line(&mut out, 0x1a2b);
        push_size_line(&mut out, 1);
        push_end(&mut out, None);
        assert_eq!(out, b"1a2b\r\n1\r\n0\r\n\r\n");
    }

    #[test]
    fn random_chunk_streams_never_panic_and_valid_ones_round_trip() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..3000 {
            // A valid stream of random chunks.
            let mut input = Vec::new();
            let mut expect = Vec::new();
            for _ in 0..rng.usize(0..6) {
                let data: Vec<u8> = (0..rng.usize(1..40)).map(|_| rng.u8(..)).collect();
                push_size_line(&mut input, data.len());
                input.extend_from_slice(&data);
                input.extend_from_slice(b"\r\n");
                expect.extend_from_slice(&data);
            }
            push_end(&mut input, None);
            let pieces: Vec<usize> = (0..3).map(|_| rng.usize(1..20)).collect();
            let (data, _, _) = decode_in_pieces(&input, &pieces, rng.usize(1..50)).unwrap();
            assert_eq!(data, expect);
            // The same, damaged: any answer but a panic.
            for _ in 0..3 {
                if input.is_empty() {
                    break;
                }
                let i = rng.usize(..input.len());
                input[i] = rng.u8(..);
            }
            input.truncate(rng.usize(..=input.len()));
            let _ = decode_in_pieces(&input, &pieces, 7);
        }
    }
}
