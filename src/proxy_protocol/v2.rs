//! PROXY protocol version 2: a 16-byte fixed part (12-byte signature,
//! version/command, family/protocol, big-endian length of the rest) then
//! `length` bytes: the addresses (12 for TCP over IPv4, 36 for TCP over
//! IPv6) and TLVs. TLVs are skipped unread: the length bounds them, so a
//! malformed TLV cannot make us read past the header.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::ProxyProtocolError;
use super::{as_v6, Parsed, ProxyHeader};

pub(super) const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/protocol, length.
pub(super) const FIXED_LEN: usize = 16;

/// The most bytes accepted after the fixed part. The wire allows 65535;
/// addresses and the TLVs load balancers send (ALPN, authority, TLS details,
/// cloud endpoint ids) fit in far less, and the limit bounds what a client
/// can make us buffer before it is authenticated by anything.
pub const V2_MAX_LEN: u16 = 4096;

const VERSION: u8 = 2;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;

const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
const TCP4_LEN: u16 = 12;
const TCP6_LEN: u16 = 36;

/// Family/protocol bytes the spec defines that carry no address for a TCP
/// proxy (UNSPEC, UDP, UNIX): accepted, and the TCP peer address is used,
/// as HAProxy does.
const WITHOUT_ADDRESS: [u8; 5] = [0x00, 0x12, 0x22, 0x31, 0x32];

enum Addresses {
    None,
    Tcp4,
    Tcp6,
}

/// `buf` starts with [`SIGNATURE`] or a prefix of it.
pub(super) fn parse(buf: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    // Refuse a wrong version or command as soon as its byte is in.
    if let Some(&ver_cmd) = buf.get(12) {
        let version = ver_cmd >> 4;
        if version != VERSION {
            return Err(ProxyProtocolError::V2Version { version });
        }
        let command = ver_cmd & 0x0f;
        if command != CMD_LOCAL && command != CMD_PROXY {
            return Err(ProxyProtocolError::V2Command { command });
        }
    }
    let Some(fixed) = buf.first_chunk::<FIXED_LEN>() else {
        return Ok(Parsed::Incomplete { needed: FIXED_LEN - buf.len() });
    };
    let command = fixed[12] & 0x0f;
    let family = fixed[13];
    let len = u16::from_be_bytes([fixed[14], fixed[15]]);
    if len > V2_MAX_LEN {
        return Err(ProxyProtocolError::V2TooLong { len, limit: V2_MAX_LEN });
    }
    // LOCAL (health checks from the proxy itself): the spec says to ignore
    // the family and the whole block.
    let addresses = match (command, family) {
        (CMD_LOCAL, _) => Addresses::None,
        (_, TCP4) => Addresses::Tcp4,
        (_, TCP6) => Addresses::Tcp6,
        (_, byte) if WITHOUT_ADDRESS.contains(&byte) => Addresses::None,
        (_, byte) => return Err(ProxyProtocolError::V2Family { byte }),
    };
    let too_short = |family, need| ProxyProtocolError::V2TooShort { len, family, need };
    match addresses {
        Addresses::Tcp4 if len < TCP4_LEN => return Err(too_short("TCP over IPv4", TCP4_LEN)),
        Addresses::Tcp6 if len < TCP6_LEN => return Err(too_short("TCP over IPv6", TCP6_LEN)),
        _ => {}
    }
    let total = FIXED_LEN + usize::from(len);
    let Some(block) = buf.get(FIXED_LEN..total) else {
        return Ok(Parsed::Incomplete { needed: total - buf.len() });
    };
    let mut rest = block;
    let header = match addresses {
        Addresses::None => ProxyHeader::default(),
        Addresses::Tcp4 => {
            let (Some(src), Some(dst), Some(sport), Some(dport)) =
                (take::<4>(&mut rest), take::<4>(&mut rest), take::<2>(&mut rest), take::<2>(&mut rest))
            else {
                return Err(too_short("TCP over IPv4", TCP4_LEN));
            };
            ProxyHeader {
                source: Some(SocketAddr::new(Ipv4Addr::from(src).into(), u16::from_be_bytes(sport))),
                destination: Some(SocketAddr::new(Ipv4Addr::from(dst).into(), u16::from_be_bytes(dport))),
            }
        }
        Addresses::Tcp6 => {
            let (Some(src), Some(dst), Some(sport), Some(dport)) =
                (take::<16>(&mut rest), take::<16>(&mut rest), take::<2>(&mut rest), take::<2>(&mut rest))
            else {
                return Err(too_short("TCP over IPv6", TCP6_LEN));
            };
            ProxyHeader {
                source: Some(SocketAddr::new(Ipv6Addr::from(src).into(), u16::from_be_bytes(sport))),
                destination: Some(SocketAddr::new(Ipv6Addr::from(dst).into(), u16::from_be_bytes(dport))),
            }
        }
    };
    Ok(Parsed::Complete { header, consumed: total })
}

/// The next `N` bytes of `rest`, advancing it; `None` if fewer are left.
fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

/// A v2 PROXY command without TLVs: TCP over IPv4 when both addresses are
/// IPv4, otherwise TCP over IPv6 with IPv4 addresses IPv4-mapped, as
/// HAProxy does.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + usize::from(TCP6_LEN));
    out.extend_from_slice(SIGNATURE);
    out.push(VERSION << 4 | CMD_PROXY);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(TCP4);
            out.extend_from_slice(&TCP4_LEN.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => {
            out.push(TCP6);
            out.extend_from_slice(&TCP6_LEN.to_be_bytes());
            out.extend_from_slice(&as_v6(src.ip()).octets());
            out.extend_from_slice(&as_v6(dst.ip()).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse as parse_any;
    use super::*;

    /// A v2 header with `block` after the fixed part, its length field set
    /// to `block.len()`.
    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&u16::try_from(block.len()).expect("test block fits").to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn error(input: &[u8]) -> String {
        match parse_any(input) {
            Err(e) => e.to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const TLVS: &[u8] = &[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00, 0x02, 0x00, 0x03, b'a', b'b', b'c'];

    #[test]
    fn proxy_tcp4_with_tlvs() {
        let mut block = vec![192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb];
        block.extend_from_slice(TLVS);
        let mut input = v2(0x21, TCP4, &block);
        let len = input.len();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let header = ProxyHeader {
            source: Some("192.0.2.1:56324".parse().expect("addr")),
            destination: Some("198.51.100.7:443".parse().expect("addr")),
        };
        assert_eq!(parse_any(&input).ok(), Some(Parsed::Complete { header, consumed: len }));
    }

    #[test]
    fn proxy_tcp6_with_tlvs() {
        let src: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let dst: Ipv6Addr = "2001:db8::ffff".parse().expect("addr");
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        block.extend_from_slice(TLVS);
        let input = v2(0x21, TCP6, &block);
        let header = ProxyHeader {
            source: Some("[2001:db8::1]:12345".parse().expect("addr")),
            destination: Some("[2001:db8::ffff]:80".parse().expect("addr")),
        };
        assert_eq!(parse_any(&input).ok(), Some(Parsed::Complete { header, consumed: input.len() }));
    }

    #[test]
    fn local_ignores_family_and_block() {
        for (family, block) in [(0x00, &[][..]), (TCP4, &[1, 2, 3][..]), (0xff, TLVS)] {
            let input = v2(0x20, family, block);
            assert_eq!(
                parse_any(&input).ok(),
                Some(Parsed::Complete { header: ProxyHeader::default(), consumed: input.len() })
            );
        }
    }

    #[test]
    fn families_without_tcp_addresses_use_the_peer() {
        for family in WITHOUT_ADDRESS {
            let input = v2(0x21, family, &[0; 36]);
            assert_eq!(
                parse_any(&input).ok(),
                Some(Parsed::Complete { header: ProxyHeader::default(), consumed: input.len() })
            );
        }
    }

    #[test]
    fn incomplete_asks_for_exactly_the_rest() {
        let input = v2(0x21, TCP4, &[0; 20]);
        assert_eq!(parse_any(&input[..5]).ok(), Some(Parsed::Incomplete { needed: 11 }));
        assert_eq!(parse_any(&input[..16]).ok(), Some(Parsed::Incomplete { needed: 20 }));
        assert_eq!(parse_any(&input[..35]).ok(), Some(Parsed::Incomplete { needed: 1 }));
    }

    #[test]
    fn errors() {
        assert_eq!(error(&v2(0x11, TCP4, &[0; 12])), "PROXY v2 header has version 1, expected 2");
        assert_eq!(error(&v2(0x31, TCP4, &[0; 12])[..13]), "PROXY v2 header has version 3, expected 2");
        assert_eq!(
            error(&v2(0x22, TCP4, &[0; 12])[..13]),
            "PROXY v2 header has command 0x2, expected 0x0 (LOCAL) or 0x1 (PROXY)"
        );
        assert_eq!(error(&v2(0x21, 0x13, &[0; 12])), "PROXY v2 header has undefined address family/protocol byte 0x13");
        assert_eq!(
            error(&v2(0x21, TCP4, &[0; 11])),
            "PROXY v2 header announces 11 bytes after the fixed part, too short for TCP over IPv4 addresses (12 bytes)"
        );
        assert_eq!(
            error(&v2(0x21, TCP6, &[0; 35])[..16]),
            "PROXY v2 header announces 35 bytes after the fixed part, too short for TCP over IPv6 addresses (36 bytes)"
        );
        let mut huge = v2(0x21, TCP4, &[]);
        huge[14..16].copy_from_slice(&4097u16.to_be_bytes());
        assert_eq!(
            error(&huge),
            "PROXY v2 header announces 4097 bytes after the fixed part, more than the limit of 4096"
        );
    }

    #[test]
    fn encode_v4_v6_and_mixed() {
        let v4a: SocketAddr = "192.0.2.1:1234".parse().expect("addr");
        let v4b: SocketAddr = "198.51.100.2:80".parse().expect("addr");
        let v6: SocketAddr = "[2001:db8::2]:443".parse().expect("addr");
        let mut expected = v2(0x21, TCP4, &[192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0x00, 0x50]);
        assert_eq!(encode_v2(v4a, v4b), expected);

        let mut block = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets().to_vec();
        block.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().expect("addr").octets());
        block.extend_from_slice(&[0x04, 0xd2, 0x01, 0xbb]);
        expected = v2(0x21, TCP6, &block);
        assert_eq!(encode_v2(v4a, v6), expected);
    }
}
