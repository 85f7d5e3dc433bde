//! HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): the header a
//! load balancer in front of us (HAProxy, AWS NLB, another node) sends first
//! on a TCP connection to say who the client really is, and the header we
//! send to servers that want it.
//!
//! Owns parsing and encoding of that header and reading it off a stream:
//! - [`read_header`] for a listener that expects the header: it reads
//!   exactly the header's bytes, so the stream then starts at the client's
//!   first HTTP (or TLS) byte, and bounds the read in size and time.
//! - [`parse`] is the pure parser under it (also the fuzz target's entry).
//! - [`encode_v1`] / [`encode_v2`] for upstream connections.
//!
//! Nothing else: no sockets, config, logging or metrics. The caller decides
//! per listener whether the header is required, and must only require it on
//! listeners reachable solely by trusted proxies: the header is whatever
//! the peer says it is. On any error it closes the connection; what was
//! read from the stream by then is unspecified (never more than a header
//! could have been).

mod error;
mod v1;
mod v2;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub use error::ProxyProtocolError;
pub use v1::{encode_v1, V1_MAX_LEN};
pub use v2::{encode_v2, V2_MAX_LEN};

/// The longest header [`parse`] accepts, and so the most [`read_header`]
/// ever reads: a v2 header at its length limit.
pub const MAX_HEADER_LEN: usize = v2::FIXED_LEN + V2_MAX_LEN as usize;

/// The shortest header of either version (`PROXY UNKNOWN\r\n`).
const MIN_HEADER_LEN: usize = v1::V1_MIN_LEN;

/// What the header says about the connection.
///
/// `None` (v1 `UNKNOWN`, v2 `LOCAL`, v2 UNSPEC/UDP/UNIX families) means the
/// header carries no client address: use the TCP peer address. Addresses are
/// as sent: an IPv4 client behind an IPv6 `TCP6` header stays IPv4-mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyHeader {
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The header is complete; it is the first `consumed` bytes of the input
    /// and whatever follows belongs to the client's stream.
    Complete { header: ProxyHeader, consumed: usize },
    /// More bytes are needed. At least `needed` (>= 1) more bytes certainly
    /// belong to the header, so reading up to that many never reads past it;
    /// input length + `needed` never exceeds [`MAX_HEADER_LEN`].
    Incomplete { needed: usize },
}

/// Parses a PROXY protocol header (v1 or v2) at the start of `buf`.
///
/// Errors come as soon as the bytes so far cannot start a valid header, so a
/// client that speaks HTTP directly is refused at its first byte.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    if buf.is_empty() {
        Ok(Parsed::Incomplete { needed: MIN_HEADER_LEN })
    } else if starts_like(buf, v1::SIGNATURE) {
        v1::parse(buf)
    } else if starts_like(buf, v2::SIGNATURE) {
        v2::parse(buf)
    } else {
        Err(ProxyProtocolError::NotProxy { start: error::quote(buf) })
    }
}

/// Whether `buf` and `signature` agree on their common length.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// Reads one PROXY protocol header (v1 or v2) from `io`, and not one byte
/// more: afterwards `io` is positioned at the first byte the client sent
/// after the header.
///
/// The whole read must finish within `timeout`; at most [`MAX_HEADER_LEN`]
/// bytes are read. Each read asks only for bytes known to be part of the
/// header, so a v1 line is read byte by byte once its first 15 bytes are in
/// (a handful of small reads, once per connection) and a v2 header in two
/// reads. Wrapping `io` in a buffered reader would defeat this.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyProtocolError> {
    match tokio::time::timeout(timeout, read_header_unbounded(io)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyProtocolError::Timeout { after: timeout }),
    }
}

async fn read_header_unbounded<R: AsyncRead + Unpin>(io: &mut R) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut buf = Vec::with_capacity(v1::V1_MAX_LEN);
    loop {
        let filled = buf.len();
        let needed = match parse(&buf)? {
            Parsed::Complete { header, .. } => return Ok(header),
            Parsed::Incomplete { needed } => needed.max(1),
        };
        // `parse` keeps filled + needed <= MAX_HEADER_LEN.
        buf.resize(filled + needed, 0);
        let n = io.read(&mut buf[filled..]).await.map_err(|source| ProxyProtocolError::Io { source })?;
        if n == 0 {
            return Err(ProxyProtocolError::Closed { received: filled });
        }
        buf.truncate(filled + n);
    }
}

/// An IPv4 address as IPv4-mapped IPv6, for a `TCP6` header with a mixed
/// pair of addresses.
fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_proxy_is_refused_at_the_first_wrong_byte() {
        let message = |input: &[u8]| parse(input).map_err(|e| e.to_string()).err();
        assert_eq!(
            message(b"G").as_deref(),
            Some(
                "not a PROXY protocol header: the connection starts with \"G\", expected \"PROXY \" (v1) \
                 or the v2 signature; check that the sender has PROXY protocol enabled"
            )
        );
        assert!(message(b"PROXY\t").is_some());
        assert!(message(b"\r\n\r\n\0\r\nQUIT\r").is_some());
        assert_eq!(parse(b"PROXY").ok(), Some(Parsed::Incomplete { needed: 10 }));
        assert_eq!(parse(b"\r\n\r").ok(), Some(Parsed::Incomplete { needed: 13 }));
        assert_eq!(parse(b"").ok(), Some(Parsed::Incomplete { needed: 15 }));
    }

    #[test]
    fn quoted_bytes_are_escaped_and_cut() {
        let mut input = b"\x16\x03\x01 TLS client hello\n".to_vec();
        input.extend_from_slice(&[b'x'; 100]);
        let message = parse(&input).map_err(|e| e.to_string()).err().unwrap_or_default();
        // 21 bytes of hello, then x up to the 48 quoted bytes.
        let quoted = format!("\"\\x16\\x03\\x01 TLS client hello\\n{}...\"", "x".repeat(27));
        assert!(message.contains(&quoted), "{message}");
    }

    #[test]
    fn error_kinds_are_distinct() {
        let errors = [
            ProxyProtocolError::NotProxy { start: String::new() },
            ProxyProtocolError::Timeout { after: Duration::from_secs(1) },
            ProxyProtocolError::Closed { received: 3 },
            ProxyProtocolError::V1TooLong { limit: 107 },
        ];
        let kinds: std::collections::HashSet<_> = errors.iter().map(ProxyProtocolError::kind).collect();
        assert_eq!(kinds.len(), errors.len());
    }

    #[tokio::test]
    async fn reads_the_header_and_nothing_after_it() {
        for header in [
            encode_v1("192.0.2.1:5000".parse().expect("addr"), "192.0.2.2:80".parse().expect("addr")),
            encode_v2("[2001:db8::1]:5000".parse().expect("addr"), "192.0.2.2:80".parse().expect("addr")),
            b"PROXY UNKNOWN\r\n".to_vec(),
        ] {
            let mut input = header.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let mut stream = &input[..];
            let parsed = read_header(&mut stream, Duration::from_secs(1)).await.expect("valid header");
            assert_eq!(stream, b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(
                Ok(Parsed::Complete { header: parsed, consumed: header.len() }),
                parse(&header).map_err(|e| e.to_string())
            );
        }
    }

    #[tokio::test]
    async fn closed_before_the_header_is_complete() {
        let mut stream = &b"PROXY TCP4 1.2."[..];
        let err = read_header(&mut stream, Duration::from_secs(1)).await.expect_err("closed early");
        assert_eq!(err.to_string(), "connection closed after 15 bytes, before the PROXY protocol header was complete");
    }
}
