//! Chunked transfer coding (RFC 9112 §7.1): the size line the node writes,
//! and a strict decoder for what servers send.
//!
//! The decoder is pure (bytes in, data out) so that it can be fuzzed on its
//! own; `h1client::ServerBody` feeds it from the socket. It is strict where
//! leniency has been exploited: every line ends in CRLF (no bare LF), a
//! chunk's data is followed by exactly CRLF, sizes are hex digits (leading
//! zeros allowed) that fit in 60 bits, and lines and trailers are bounded.

use bytes::{Bytes, BytesMut};

/// Longest chunk-size or trailer line accepted.
pub const MAX_LINE: usize = 4 * 1024;
/// Most bytes of trailer fields accepted (they are read and dropped).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Appends the size line of one chunk: `len` in hex, then CRLF.
pub fn size_line(len: usize, dst: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        dst.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    dst.extend_from_slice(b"\r\n");
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    Size,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("a line of the chunked body does not end in CRLF")]
    BareLf,
    #[error("chunk-size or trailer line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("trailer fields larger than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
    #[error("invalid trailer field")]
    Trailer,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The last chunk and the trailers were read: the body is complete.
    End,
    /// More bytes are needed; at most this many are useful now.
    NeedMore(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// A chunked body's decoder. Feed it the bytes read so far in `buf`; it
/// consumes what it decodes and leaves the rest.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { state: State::Size }
    }
}

impl Decoder {
    /// The body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes the next piece of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore(left));
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(ChunkError::DataEnd);
                        }
                        return Ok(Decoded::NeedMore(2 - buf.len() as u64));
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::DataEnd);
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Size => {
                    let Some(line) = take_line(buf)? else { return Ok(Decoded::NeedMore(1)) };
                    match chunk_size(&line) {
                        Some(0) => self.state = State::Trailers(0),
                        Some(n) => self.state = State::Data(n),
                        None => return Err(ChunkError::Size),
                    }
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf)? else { return Ok(Decoded::NeedMore(1)) };
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    if !valid_trailer(&line) {
                        return Err(ChunkError::Trailer);
                    }
                    self.state = State::Trailers(seen);
                }
            }
        }
    }
}

/// One CRLF-terminated line (without the CRLF), if a whole one is in `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, ChunkError> {
    let Some(end) = buf.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE + 1 { Err(ChunkError::LineTooLong) } else { Ok(None) };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(ChunkError::BareLf);
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// The size of a chunk from its size line: hex digits, optional
/// whitespace, then optional extensions after `;` (ignored, but no control
/// characters). `1a;ext=1` → 26.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let (hex, rest) = line.split_at(digits);
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && (rest[0] != b';' || rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)) {
        return None;
    }
    let significant = &hex[hex.iter().take_while(|&&b| b == b'0').count()..];
    if significant.len() > 15 {
        return None;
    }
    Some(significant.iter().fold(0u64, |n, &d| n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))))
}

/// A trailer line: `name: value` with a token name and no control bytes.
fn valid_trailer(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
    colon > 0
        && line[..colon].iter().all(|&b| super::fields::is_tchar(b))
        && line[colon + 1..].iter().all(|&b| b >= 0x20 && b != 0x7f || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed one byte at a time and all at once: both must
    /// agree.
    fn decode(input: &[u8]) -> Result<(Vec<u8>, bool), ChunkError> {
        let whole = {
            let mut d = Decoder::default();
            let mut buf = BytesMut::from(input);
            let mut out = Vec::new();
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::End => break (out, true),
                    Decoded::NeedMore(_) => break (out, false),
                }
            }
        };
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut done = false;
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::End => {
                        done = true;
                        break;
                    }
                    Decoded::NeedMore(_) => break,
                }
            }
            if done {
                break;
            }
        }
        assert_eq!((out.clone(), done), whole, "byte by byte and whole differ");
        Ok(whole)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n"), Ok((b"hello".to_vec(), true)));
        assert_eq!(decode(b"0005;a=b\r\nhello\r\n1 ; x\r\n!\r\n0\r\nX-T: 1\r\n\r\n"), Ok((b"hello!".to_vec(), true)));
        assert_eq!(decode(b"5\r\nhel"), Ok((b"hel".to_vec(), false)));
        let mut buf = BytesMut::from(&b"0\r\n\r\nNEXT"[..]);
        let mut d = Decoder::default();
        assert_eq!(d.decode(&mut buf), Ok(Decoded::End));
        assert_eq!(&buf[..], b"NEXT", "bytes after the body are left");
        assert!(d.is_done());
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        for (input, want) in [
            (&b"zz\r\n"[..], ChunkError::Size),
            (b"\r\n", ChunkError::Size),
            (b"-5\r\n", ChunkError::Size),
            (b"0x5\r\n", ChunkError::Size),
            (b"5 5\r\n", ChunkError::Size),
            (b"5\n", ChunkError::BareLf),
            (b"5\r\nhelloXY", ChunkError::DataEnd),
            (b"5\r\nhello\n", ChunkError::DataEnd),
            (b"1000000000000000\r\n", ChunkError::Size),
            (b"5;a\x00b\r\n", ChunkError::Size),
            (b"0\r\nbad trailer\r\n\r\n", ChunkError::Trailer),
            (b"0\r\nX: a\rb\r\n\r\n", ChunkError::Trailer),
        ] {
            assert_eq!(decode(input), Err(want), "{:?}", String::from_utf8_lossy(input));
        }
        let long = [&[b'1'; MAX_LINE + 2][..], b"\r\n"].concat();
        assert_eq!(decode(&long), Err(ChunkError::LineTooLong));
        let trailers: Vec<u8> =
            [&b"0\r\n"[..], &b"X: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(600), b"\r\n"].concat();
        assert_eq!(decode(&trailers), Err(ChunkError::TrailersTooLarge));
        assert_eq!(chunk_size(b"000000000000000000000ff"), Some(255), "leading zeros do not count");
        assert_eq!(chunk_size(b"fffffffffffffff"), Some(0xfff_ffff_ffff_ffff));
    }

    #[test]
    fn size_lines_are_hex() {
        for (n, want) in [(0usize, "0\r\n"), (1, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (65536, "10000\r\n")] {
            let mut v = Vec::new();
            size_line(n, &mut v);
            assert_eq!(String::from_utf8(v).unwrap(), want);
        }
    }
}
