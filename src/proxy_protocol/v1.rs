//! PROXY protocol version 1: one text line,
//! `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or
//! `PROXY UNKNOWN[ <anything>]\r\n`, at most [`V1_MAX_LEN`] bytes with the
//! CRLF. Fields are separated by exactly one space; addresses and ports are
//! in canonical form (no leading zeros, which could be read as octal).

use std::net::{IpAddr, SocketAddr};

use super::error::{quote, ProxyProtocolError};
use super::{as_v6, Parsed, ProxyHeader};

pub(super) const SIGNATURE: &[u8] = b"PROXY ";

/// Longest v1 line the spec allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// Shortest valid line: `PROXY UNKNOWN\r\n`.
pub(super) const V1_MIN_LEN: usize = 15;

/// The two families a v1 line can name with addresses.
#[derive(Clone, Copy)]
enum Protocol {
    Tcp4,
    Tcp6,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp4 => "TCP4",
            Protocol::Tcp6 => "TCP6",
        }
    }

    fn family(self) -> &'static str {
        match self {
            Protocol::Tcp4 => "IPv4",
            Protocol::Tcp6 => "IPv6",
        }
    }
}

/// `buf` starts with [`SIGNATURE`] or a prefix of it.
pub(super) fn parse(buf: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    let Some(end) = line_end(buf)? else {
        // A line is only complete at its CRLF: one byte at a time past the
        // shortest possible line, so nothing after the header is read.
        return Ok(Parsed::Incomplete { needed: V1_MIN_LEN.saturating_sub(buf.len()).max(1) });
    };
    // `line_end` found the CR at or after SIGNATURE.len(), so end >= 8.
    let line = buf.get(SIGNATURE.len()..end - 2).unwrap_or_default();
    let mut fields = line.splitn(6, |&b| b == b' ');
    let protocol = match fields.next().unwrap_or_default() {
        // The spec tells receivers to ignore whatever follows UNKNOWN.
        b"UNKNOWN" => return Ok(Parsed::Complete { header: ProxyHeader::default(), consumed: end }),
        b"TCP4" => Protocol::Tcp4,
        b"TCP6" => Protocol::Tcp6,
        other => {
            return Err(ProxyProtocolError::BadV1 {
                field: "protocol",
                detail: format!("\"{}\" is not TCP4, TCP6 or UNKNOWN", quote(other)),
            })
        }
    };
    let source = address(fields.next(), protocol, "source address")?;
    let destination = address(fields.next(), protocol, "destination address")?;
    let source_port = port(fields.next(), "source port")?;
    let destination_port = port(fields.next(), "destination port")?;
    if let Some(rest) = fields.next() {
        return Err(ProxyProtocolError::BadV1 {
            field: "destination port",
            detail: format!("unexpected \" {}\" after it, expected CRLF", quote(rest)),
        });
    }
    Ok(Parsed::Complete {
        header: ProxyHeader {
            source: Some(SocketAddr::new(source, source_port)),
            destination: Some(SocketAddr::new(destination, destination_port)),
        },
        consumed: end,
    })
}

/// The index just past the CRLF, or `None` while it has not arrived.
fn line_end(buf: &[u8]) -> Result<Option<usize>, ProxyProtocolError> {
    // A CR at V1_MAX_LEN - 2 is the last whose LF still fits the limit.
    let scan = buf.len().min(V1_MAX_LEN - 1);
    for (i, &byte) in buf.iter().enumerate().take(scan).skip(SIGNATURE.len()) {
        match byte {
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(other) => Err(ProxyProtocolError::BadV1 {
                        field: "line end",
                        detail: format!("CR followed by \"{}\" instead of LF", quote(&[*other])),
                    }),
                    None => Ok(None),
                }
            }
            b'\n' => {
                return Err(ProxyProtocolError::BadV1 { field: "line end", detail: "LF without CR before it".into() })
            }
            _ => {}
        }
    }
    if buf.len() >= V1_MAX_LEN - 1 {
        return Err(ProxyProtocolError::V1TooLong { limit: V1_MAX_LEN });
    }
    Ok(None)
}

fn present<'a>(field: Option<&'a [u8]>, name: &'static str) -> Result<&'a [u8], ProxyProtocolError> {
    match field {
        None => Err(ProxyProtocolError::BadV1 { field: name, detail: "missing".into() }),
        Some([]) => Err(ProxyProtocolError::BadV1 {
            field: name,
            detail: "empty (fields are separated by exactly one space)".into(),
        }),
        Some(raw) => Ok(raw),
    }
}

fn address(field: Option<&[u8]>, protocol: Protocol, name: &'static str) -> Result<IpAddr, ProxyProtocolError> {
    let raw = present(field, name)?;
    // std's parsers take canonical forms only: no IPv4 leading zeros, no
    // IPv6 zone index.
    let parsed = std::str::from_utf8(raw).ok().and_then(|text| text.parse::<IpAddr>().ok());
    match (protocol, parsed) {
        (Protocol::Tcp4, Some(ip @ IpAddr::V4(_))) | (Protocol::Tcp6, Some(ip @ IpAddr::V6(_))) => Ok(ip),
        (_, Some(_)) => Err(ProxyProtocolError::FamilyMismatch {
            protocol: protocol.name(),
            field: name,
            address: quote(raw),
            expected: protocol.family(),
        }),
        (_, None) => Err(ProxyProtocolError::BadV1 {
            field: name,
            detail: format!("\"{}\" is not an {} address", quote(raw), protocol.family()),
        }),
    }
}

fn port(field: Option<&[u8]>, name: &'static str) -> Result<u16, ProxyProtocolError> {
    let raw = present(field, name)?;
    let bad = || ProxyProtocolError::BadPort { field: name, value: quote(raw) };
    let canonical = raw.len() <= 5 && raw.iter().all(u8::is_ascii_digit) && (raw == b"0" || !raw.starts_with(b"0"));
    if !canonical {
        return Err(bad());
    }
    let value = raw.iter().fold(0u32, |acc, &digit| acc * 10 + u32::from(digit - b'0'));
    u16::try_from(value).map_err(|_| bad())
}

/// `PROXY TCP4 …` when both addresses are IPv4, otherwise `PROXY TCP6 …`
/// with IPv4 addresses written IPv4-mapped (`::ffff:a.b.c.d`), as HAProxy
/// does.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let line = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            format!("PROXY TCP4 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port())
        }
        _ => format!("PROXY TCP6 {} {} {} {}\r\n", as_v6(src.ip()), as_v6(dst.ip()), src.port(), dst.port()),
    };
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::parse as parse_any;
    use super::*;

    fn complete(input: &[u8]) -> (ProxyHeader, usize) {
        match parse_any(input) {
            Ok(Parsed::Complete { header, consumed }) => (header, consumed),
            other => panic!("expected a complete header from {:?}, got {other:?}", input.escape_ascii().to_string()),
        }
    }

    fn error(input: &[u8]) -> String {
        match parse_any(input) {
            Err(e) => e.to_string(),
            other => panic!("expected an error from {:?}, got {other:?}", input.escape_ascii().to_string()),
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("test address"))
    }

    #[test]
    fn tcp4_and_tcp6_lines() {
        let (h, n) = complete(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET /");
        assert_eq!(n, 45);
        assert_eq!(h.source, addr("192.0.2.1:56324"));
        assert_eq!(h.destination, addr("198.51.100.7:443"));

        let (h, n) = complete(b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n");
        assert_eq!(n, 48);
        assert_eq!(h.source, addr("[2001:db8::1]:0"));
        assert_eq!(h.destination, addr("[::ffff:10.0.0.1]:65535"));
    }

    #[test]
    fn unknown_with_and_without_addresses() {
        let (h, n) = complete(b"PROXY UNKNOWN\r\nrest");
        assert_eq!((h, n), (ProxyHeader::default(), 15));
        let line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(complete(line), (ProxyHeader::default(), line.len()));
    }

    #[test]
    fn longest_line_is_accepted_and_one_more_byte_is_not() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let max = format!("PROXY UNKNOWN {ip} {ip} 65535 65535\r\n");
        assert_eq!(max.len(), V1_MAX_LEN);
        assert_eq!(complete(max.as_bytes()).1, V1_MAX_LEN);
        let over = format!("PROXY UNKNOWN {ip} {ip} 65535 655351\r\n");
        assert_eq!(error(over.as_bytes()), "PROXY v1 header longer than 107 bytes: no CRLF within the first 107 bytes");
        // The CR as the 107th byte: its LF could only be the 108th.
        assert_eq!(error(&over.as_bytes()[..V1_MAX_LEN]), error(over.as_bytes()));
    }

    #[test]
    fn incomplete_lines_ask_for_bytes_that_are_still_header() {
        assert_eq!(parse_any(b"PRO").ok(), Some(Parsed::Incomplete { needed: 12 }));
        assert_eq!(parse_any(b"PROXY TCP4 1.2.3.4").ok(), Some(Parsed::Incomplete { needed: 1 }));
        assert_eq!(parse_any(b"PROXY UNKNOWN\r").ok(), Some(Parsed::Incomplete { needed: 1 }));
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                "bad PROXY v1 header: protocol: \"UDP4\" is not TCP4, TCP6 or UNKNOWN",
            ),
            (b"PROXY \r\n", "bad PROXY v1 header: protocol: \"\" is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY TCP4\r\n", "bad PROXY v1 header: source address: missing"),
            (b"PROXY TCP4 1.2.3.4\r\n", "bad PROXY v1 header: destination address: missing"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n", "bad PROXY v1 header: source port: missing"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "bad PROXY v1 header: destination port: missing"),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                "bad PROXY v1 header: source address: empty (fields are separated by exactly one space)",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                "bad PROXY v1 header: destination port: unexpected \" \" after it, expected CRLF",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 x\r\n",
                "bad PROXY v1 header: destination port: unexpected \" x\" after it, expected CRLF",
            ),
            (
                b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
                "bad PROXY v1 header: source address: \"1.2.3.04\" is not an IPv4 address",
            ),
            (
                b"PROXY TCP4 1.2.3.4 host 1 2\r\n",
                "bad PROXY v1 header: destination address: \"host\" is not an IPv4 address",
            ),
            (
                b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
                "bad PROXY v1 header: source address: \"fe80::1%eth0\" is not an IPv6 address",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bad PROXY v1 header: line end: LF without CR before it"),
            (b"PROXY TCP4 1.2.3.4\rx", "bad PROXY v1 header: line end: CR followed by \"x\" instead of LF"),
            (
                b"PROXY TCP4 \xff 5.6.7.8 1 2\r\n",
                "bad PROXY v1 header: source address: \"\\xff\" is not an IPv4 address",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(error(input), *message, "input {:?}", input.escape_ascii().to_string());
        }
    }

    #[test]
    fn family_mismatch() {
        assert_eq!(
            error(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"),
            "bad PROXY v1 header: source address \"::1\" is not an IPv4 address as TCP4 requires"
        );
        assert_eq!(
            error(b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n"),
            "bad PROXY v1 header: destination address \"5.6.7.8\" is not an IPv6 address as TCP6 requires"
        );
    }

    #[test]
    fn ports_are_canonical_decimal_up_to_65535() {
        for bad in ["65536", "99999", "080", "00", "-1", "+1", "1a", "123456", "0x10"] {
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {bad} 80\r\n");
            assert_eq!(
                error(line.as_bytes()),
                format!(
                    "bad PROXY v1 header: source port \"{bad}\" is not a port (decimal 0-65535 without leading zeros)"
                )
            );
        }
        let (h, _) = complete(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n");
        assert_eq!(h.source.map(|a| a.port()), Some(0));
        assert_eq!(h.destination.map(|a| a.port()), Some(65535));
    }

    #[test]
    fn encode_v4_v6_and_mixed() {
        let v4a = "192.0.2.1:1234".parse().expect("addr");
        let v4b = "198.51.100.2:80".parse().expect("addr");
        let v6 = "[2001:db8::2]:443".parse().expect("addr");
        assert_eq!(encode_v1(v4a, v4b), b"PROXY TCP4 192.0.2.1 198.51.100.2 1234 80\r\n");
        assert_eq!(encode_v1(v4a, v6), b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1234 443\r\n");
        assert_eq!(encode_v1(v6, v4b), b"PROXY TCP6 2001:db8::2 ::ffff:198.51.100.2 443 80\r\n");
    }
}
