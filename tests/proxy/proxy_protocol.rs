//! PROXY protocol through the public API: every v1 and v2 form, encode →
//! parse round trips, every error with its message, `read_header` over a
//! duplex pipe and a loopback TCP pair leaving the HTTP bytes unread, the
//! timeout under paused time, and a seeded 200k-input "poor man's fuzz" of
//! `parse` that also checks it never asks for bytes past the header.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use sysmanage_node::proxy_protocol::{
    encode_v1, encode_v2, parse, read_header, Parsed, ProxyHeader, ProxyProtocolError, MAX_HEADER_LEN, V1_MAX_LEN,
};

const WAIT: Duration = Duration::from_secs(5);
const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n";

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn header(src: &str, dst: &str) -> ProxyHeader {
    ProxyHeader { source: Some(sa(src)), destination: Some(sa(dst)) }
}

/// A v2 header: fixed part with `ver_cmd` and `family`, then `block`.
fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = SIG.to_vec();
    out.extend_from_slice(&[ver_cmd, family]);
    out.extend_from_slice(&u16::try_from(block.len()).expect("block fits").to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// ALPN "h2", a NOOP with 3 bytes of padding, an authority.
const TLVS: &[u8] =
    &[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x03, 0, 0, 0, 0x02, 0x00, 0x04, b'a', b'.', b'b', b'c'];

fn complete(input: &[u8]) -> (ProxyHeader, usize) {
    match parse(input) {
        Ok(Parsed::Complete { header, consumed }) => (header, consumed),
        other => panic!("expected a header from {:?}, got {other:?}", input.escape_ascii().to_string()),
    }
}

fn message(input: &[u8]) -> String {
    match parse(input) {
        Err(e) => e.to_string(),
        other => panic!("expected an error from {:?}, got {other:?}", input.escape_ascii().to_string()),
    }
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

#[test]
fn v1_every_form() {
    let cases: &[(&[u8], ProxyHeader)] = &[
        (b"PROXY TCP4 192.0.2.10 203.0.113.5 51000 443\r\n", header("192.0.2.10:51000", "203.0.113.5:443")),
        (b"PROXY TCP6 2001:db8::10 2001:db8:1::5 51000 443\r\n", header("[2001:db8::10]:51000", "[2001:db8:1::5]:443")),
        (b"PROXY TCP6 ::ffff:192.0.2.10 ::1 0 65535\r\n", header("[::ffff:192.0.2.10]:0", "[::1]:65535")),
        (b"PROXY UNKNOWN\r\n", ProxyHeader::default()),
        (b"PROXY UNKNOWN 192.0.2.10 203.0.113.5 51000 443\r\n", ProxyHeader::default()),
        (b"PROXY UNKNOWN anything at all\r\n", ProxyHeader::default()),
    ];
    for (line, expected) in cases {
        let mut input = line.to_vec();
        input.extend_from_slice(REQUEST);
        assert_eq!(complete(&input), (*expected, line.len()), "{:?}", line.escape_ascii().to_string());
    }
}

#[test]
fn v2_proxy_tcp4_and_tcp6_with_tlvs_and_local() {
    let mut block = vec![192, 0, 2, 10, 203, 0, 113, 5, 0xc7, 0x38, 0x01, 0xbb];
    block.extend_from_slice(TLVS);
    let input = v2(0x21, 0x11, &block);
    assert_eq!(complete(&[&input[..], REQUEST].concat()), (header("192.0.2.10:51000", "203.0.113.5:443"), input.len()));

    let mut block = "2001:db8::10".parse::<Ipv6Addr>().expect("ip").octets().to_vec();
    block.extend_from_slice(&"2001:db8:1::5".parse::<Ipv6Addr>().expect("ip").octets());
    block.extend_from_slice(&[0xc7, 0x38, 0x01, 0xbb]);
    block.extend_from_slice(TLVS);
    let input = v2(0x21, 0x21, &block);
    assert_eq!(
        complete(&[&input[..], REQUEST].concat()),
        (header("[2001:db8::10]:51000", "[2001:db8:1::5]:443"), input.len())
    );

    // LOCAL: the proxy's own connection (health check); addresses ignored.
    for (family, block) in [(0x00, &[][..]), (0x11, &block[..12]), (0x21, &block[..])] {
        let input = v2(0x20, family, block);
        assert_eq!(complete(&input), (ProxyHeader::default(), input.len()));
    }
    // PROXY with UNSPEC: no address, use the peer's.
    let input = v2(0x21, 0x00, TLVS);
    assert_eq!(complete(&input), (ProxyHeader::default(), input.len()));
}

#[test]
fn encode_then_parse_round_trips() {
    let pairs = [
        ("192.0.2.10:51000", "203.0.113.5:443"),
        ("[2001:db8::10]:1", "[2001:db8:1::5]:65535"),
        ("192.0.2.10:0", "[2001:db8:1::5]:443"),
        ("[2001:db8::10]:51000", "203.0.113.5:80"),
        ("0.0.0.0:0", "255.255.255.255:65535"),
        ("[::]:0", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
    ];
    for (src, dst) in pairs {
        let (src, dst) = (sa(src), sa(dst));
        let expected = if src.is_ipv4() && dst.is_ipv4() {
            ProxyHeader { source: Some(src), destination: Some(dst) }
        } else {
            ProxyHeader { source: Some(mapped(src)), destination: Some(mapped(dst)) }
        };
        for encoded in [encode_v1(src, dst), encode_v2(src, dst)] {
            assert!(encoded.len() <= MAX_HEADER_LEN);
            assert_eq!(complete(&encoded), (expected, encoded.len()), "{src} {dst}");
        }
        assert!(encode_v1(src, dst).len() <= V1_MAX_LEN);
    }
    assert_eq!(encode_v1(sa("192.0.2.10:1"), sa("[::1]:2")), b"PROXY TCP6 ::ffff:192.0.2.10 ::1 1 2\r\n");
}

#[test]
fn every_parse_error_and_its_message() {
    let ip6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let too_long = format!("PROXY UNKNOWN {ip6} {ip6} 65535 65535 \r\n");
    let mut huge = v2(0x21, 0x11, &[]);
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            REQUEST.to_vec(),
            "not a PROXY protocol header: the connection starts with \"GET / HTTP/1.1\\r\\nHost: example.test\\r\\n\\r\\n\", \
             expected \"PROXY \" (v1) or the v2 signature; check that the sender has PROXY protocol enabled",
        ),
        (b"PROXY TCP5 a b 1 2\r\n".to_vec(), "bad PROXY v1 header: protocol: \"TCP5\" is not TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n".to_vec(), "bad PROXY v1 header: source address: \"1.2.3\" is not an IPv4 address"),
        (
            b"PROXY TCP6 ::1 ::2 1 2 3\r\n".to_vec(),
            "bad PROXY v1 header: destination port: unexpected \" 3\" after it, expected CRLF",
        ),
        (b"PROXY TCP6 ::1 ::2 1\r\n".to_vec(), "bad PROXY v1 header: destination port: missing"),
        (
            b"PROXY TCP4 1.2.3.4 ::2 1 2\r\n".to_vec(),
            "bad PROXY v1 header: destination address \"::2\" is not an IPv4 address as TCP4 requires",
        ),
        (
            b"PROXY TCP6 1.2.3.4 ::2 1 2\r\n".to_vec(),
            "bad PROXY v1 header: source address \"1.2.3.4\" is not an IPv6 address as TCP6 requires",
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(),
            "bad PROXY v1 header: destination port \"65536\" is not a port (decimal 0-65535 without leading zeros)",
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
            "bad PROXY v1 header: source port \"01\" is not a port (decimal 0-65535 without leading zeros)",
        ),
        (too_long.into_bytes(), "PROXY v1 header longer than 107 bytes: no CRLF within the first 107 bytes"),
        (v2(0x11, 0x11, &[0; 12]), "PROXY v2 header has version 1, expected 2"),
        (v2(0x2f, 0x11, &[0; 12]), "PROXY v2 header has command 0xf, expected 0x0 (LOCAL) or 0x1 (PROXY)"),
        (v2(0x21, 0x41, &[0; 12]), "PROXY v2 header has undefined address family/protocol byte 0x41"),
        (huge, "PROXY v2 header announces 65535 bytes after the fixed part, more than the limit of 4096"),
        (
            v2(0x21, 0x21, &[0; 12]),
            "PROXY v2 header announces 12 bytes after the fixed part, too short for TCP over IPv6 addresses (36 bytes)",
        ),
        (
            v2(0x21, 0x11, &[0; 4]),
            "PROXY v2 header announces 4 bytes after the fixed part, too short for TCP over IPv4 addresses (12 bytes)",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(message(&input), expected, "{:?}", input.escape_ascii().to_string());
    }
}

#[test]
fn a_tls_client_hello_is_not_a_header() {
    let err = parse(&[0x16, 0x03, 0x01, 0x02, 0x00]).expect_err("TLS is not PROXY");
    assert!(matches!(err, ProxyProtocolError::NotProxy { .. }));
    assert_eq!(err.kind(), "not_proxy");
}

#[tokio::test]
async fn read_header_over_a_duplex_leaves_the_request_unread() {
    for header_bytes in [
        encode_v1(sa("192.0.2.10:51000"), sa("203.0.113.5:443")),
        encode_v1(sa("[2001:db8::10]:51000"), sa("[2001:db8:1::5]:443")),
        b"PROXY UNKNOWN\r\n".to_vec(),
        encode_v2(sa("192.0.2.10:51000"), sa("203.0.113.5:443")),
        v2(0x21, 0x11, &[&[192, 0, 2, 10, 203, 0, 113, 5, 0xc7, 0x38, 0x01, 0xbb][..], TLVS].concat()),
        v2(0x20, 0x00, &[]),
    ] {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[&header_bytes[..], REQUEST].concat()).await.expect("write");
        drop(client);
        let got = read_header(&mut server, WAIT).await.expect("valid header");
        let expected = parse(&header_bytes).expect("valid header");
        assert_eq!(Parsed::Complete { header: got, consumed: header_bytes.len() }, expected);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("read rest");
        assert_eq!(rest, REQUEST);
    }
}

#[tokio::test]
async fn read_header_over_loopback_tcp_in_small_pieces() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let sent = [&encode_v2(sa("[2001:db8::10]:51000"), sa("203.0.113.5:443"))[..], REQUEST].concat();
    let client = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        // Pieces that cut the fixed part, the addresses and the request.
        for piece in sent.chunks(7) {
            stream.write_all(piece).await.expect("write");
            stream.flush().await.expect("flush");
            tokio::task::yield_now().await;
        }
        stream.shutdown().await.expect("shutdown");
    });
    let (mut server, _) = tokio::time::timeout(WAIT, listener.accept()).await.expect("accept in time").expect("accept");
    let got = read_header(&mut server, WAIT).await.expect("valid header");
    assert_eq!(got.source, Some(sa("[2001:db8::10]:51000")));
    assert_eq!(got.destination, Some(sa("[::ffff:203.0.113.5]:443")));
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, server.read_to_end(&mut rest)).await.expect("read in time").expect("read");
    assert_eq!(rest, REQUEST);
    client.await.expect("client task");
}

#[tokio::test(start_paused = true)]
async fn half_a_header_then_silence_times_out() {
    for half in [&b"PROXY TCP4 192.0.2.10 "[..], &encode_v2(sa("192.0.2.10:1"), sa("192.0.2.11:2"))[..20]] {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(half).await.expect("write");
        let started = tokio::time::Instant::now();
        let err = read_header(&mut server, Duration::from_secs(3)).await.expect_err("must time out");
        assert_eq!(err.to_string(), "no complete PROXY protocol header within 3s");
        assert_eq!(err.kind(), "timeout");
        assert!(started.elapsed() >= Duration::from_secs(3));
        drop(client);
    }
}

#[tokio::test]
async fn closed_early_and_io_errors() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(&encode_v2(sa("192.0.2.10:1"), sa("192.0.2.11:2"))[..20]).await.expect("write");
    drop(client);
    let err = read_header(&mut server, WAIT).await.expect_err("closed early");
    assert_eq!(err.to_string(), "connection closed after 20 bytes, before the PROXY protocol header was complete");

    let mut nothing = &b""[..];
    let err = read_header(&mut nothing, WAIT).await.expect_err("closed at once");
    assert_eq!(err.to_string(), "connection closed after 0 bytes, before the PROXY protocol header was complete");

    let err = read_header(&mut Failing, WAIT).await.expect_err("I/O error");
    assert_eq!(err.to_string(), "reading the PROXY protocol header: connection reset by test");
    assert_eq!(err.kind(), "io");

    // A bad header is refused without waiting for the rest of it.
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"GET").await.expect("write");
    let err = read_header(&mut server, WAIT).await.expect_err("not proxy");
    assert!(matches!(err, ProxyProtocolError::NotProxy { .. }), "{err}");
}

struct Failing;

impl AsyncRead for Failing {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by test")))
    }
}

/// Hands out its bytes in chunks of random size, as a network would.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    rng: fastrand::Rng,
}

impl AsyncRead for Trickle {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let chunk = this.rng.usize(1..=32).min(buf.remaining()).min(this.data.len() - this.at);
        buf.put_slice(&this.data[this.at..this.at + chunk]);
        this.at += chunk;
        Poll::Ready(Ok(()))
    }
}

// ---- seeded "poor man's fuzz" ------------------------------------------

fn random_addr(rng: &mut fastrand::Rng) -> SocketAddr {
    let ip: IpAddr = if rng.bool() {
        Ipv4Addr::from(rng.u32(..)).into()
    } else if rng.u8(..4) == 0 {
        Ipv4Addr::from(rng.u32(..)).to_ipv6_mapped().into()
    } else {
        Ipv6Addr::from(rng.u128(..)).into()
    };
    SocketAddr::new(ip, rng.u16(..))
}

/// A valid header of some form, sometimes followed by client bytes.
fn seed(rng: &mut fastrand::Rng) -> Vec<u8> {
    let (src, dst) = (random_addr(rng), random_addr(rng));
    let mut out = match rng.u8(..6) {
        0 => encode_v1(src, dst),
        1 => encode_v2(src, dst),
        2 => b"PROXY UNKNOWN\r\n".to_vec(),
        3 => {
            let mut line = encode_v1(src, dst);
            line.splice(6..10, b"UNKNOWN".iter().copied());
            line.truncate(V1_MAX_LEN);
            line
        }
        4 => {
            let mut header = encode_v2(src, dst);
            let tlvs = rng.usize(..200);
            header.extend((0..tlvs).map(|_| rng.u8(..)));
            let len = u16::try_from(header.len() - 16).expect("fits");
            header[14..16].copy_from_slice(&len.to_be_bytes());
            header
        }
        _ => v2(0x20, rng.u8(..), &(0..rng.usize(..64)).map(|_| rng.u8(..)).collect::<Vec<_>>()),
    };
    if rng.bool() {
        out.extend_from_slice(REQUEST);
    }
    out
}

fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=input.len());
        match rng.u8(..8) {
            0 if at < input.len() => input[at] = rng.u8(..),
            1 => input.insert(at, rng.u8(..)),
            2 if at < input.len() => {
                input.remove(at);
            }
            3 => input.truncate(at),
            4 if input.len() >= 16 && input.starts_with(SIG) => {
                let len = if rng.bool() { rng.u16(..) } else { rng.u16(..64) };
                input[14..16].copy_from_slice(&len.to_be_bytes());
            }
            // TCP4 <-> TCP6: addresses of the other family.
            6 if input.starts_with(b"PROXY TCP") && input.len() > 9 => input[9] ^= b'4' ^ b'6',
            5 if at < input.len() => input[at] = *b" \r\n0123456789:.".get(rng.usize(..15)).unwrap_or(&b' '),
            _ => {
                let from = rng.usize(..=input.len());
                let end = (from + rng.usize(..16)).min(input.len());
                let copy = input[from..end].to_vec();
                input.splice(at..at, copy);
            }
        }
    }
}

#[derive(Default)]
struct Outcomes {
    complete: usize,
    incomplete: usize,
    errors: std::collections::BTreeMap<&'static str, usize>,
}

/// Every property `parse` promises, on one input.
fn check(input: &[u8], outcomes: &mut Outcomes) {
    match parse(input) {
        Ok(Parsed::Complete { header, consumed }) => {
            outcomes.complete += 1;
            assert!(consumed <= input.len() && (15..=MAX_HEADER_LEN).contains(&consumed));
            // The header ends at `consumed` whatever follows it ...
            assert_eq!(parse(&input[..consumed]).ok(), Some(Parsed::Complete { header, consumed }));
            // ... and on the way there, parse only ever asked for header bytes.
            for cut in 0..consumed {
                match parse(&input[..cut]) {
                    Ok(Parsed::Incomplete { needed }) => assert!(needed >= 1 && cut + needed <= consumed),
                    other => panic!("prefix {cut} of a valid header gave {other:?}"),
                }
            }
            if let (Some(src), Some(dst)) = (header.source, header.destination) {
                for encoded in [encode_v1(src, dst), encode_v2(src, dst)] {
                    assert_eq!(parse(&encoded).ok(), Some(Parsed::Complete { header, consumed: encoded.len() }));
                }
            }
        }
        Ok(Parsed::Incomplete { needed }) => {
            outcomes.incomplete += 1;
            assert!(needed >= 1 && input.len() + needed <= MAX_HEADER_LEN, "needed {needed} after {}", input.len());
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty() && text.len() < 400, "{text}");
            *outcomes.errors.entry(e.kind()).or_default() += 1;
        }
    }
}

#[test]
fn parse_survives_200k_random_and_mutated_inputs() {
    let mut rng = fastrand::Rng::with_seed(0x5052_4f58_5932);
    let mut outcomes = Outcomes::default();
    for round in 0..200_000 {
        let input = match round % 4 {
            0 => {
                let len = rng.usize(..160);
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                // Random bytes behind a real signature reach the parsers.
                let prefix: &[u8] = match rng.u8(..3) {
                    0 => b"PROXY ",
                    1 => SIG,
                    _ => b"",
                };
                bytes.splice(0..0, prefix.iter().copied());
                bytes
            }
            1 => seed(&mut rng),
            _ => {
                let mut bytes = seed(&mut rng);
                mutate(&mut rng, &mut bytes);
                bytes
            }
        };
        check(&input, &mut outcomes);
    }
    // Guard against a generator that never reaches the interesting paths.
    assert!(outcomes.complete > 50_000, "complete: {}", outcomes.complete);
    assert!(outcomes.incomplete > 5_000, "incomplete: {}", outcomes.incomplete);
    for kind in [
        "not_proxy",
        "bad_v1",
        "family_mismatch",
        "bad_port",
        "v1_too_long",
        "v2_version",
        "v2_command",
        "v2_family",
        "v2_too_long",
        "v2_too_short",
    ] {
        assert!(outcomes.errors.get(kind).copied().unwrap_or(0) > 10, "{kind}: {:?}", outcomes.errors);
    }
}

#[tokio::test]
async fn read_header_agrees_with_parse_on_trickled_input() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2_000 {
        let mut data = seed(&mut rng);
        if rng.bool() {
            mutate(&mut rng, &mut data);
        }
        let expected = match parse(&data) {
            Ok(Parsed::Complete { header, consumed }) => Ok((header, consumed)),
            Ok(Parsed::Incomplete { .. }) => Err("closed".to_string()),
            Err(e) => Err(e.kind().to_string()),
        };
        let mut io = Trickle { data, at: 0, rng: fastrand::Rng::with_seed(rng.u64(..)) };
        let got = match read_header(&mut io, WAIT).await {
            Ok(header) => Ok((header, io.at)),
            Err(e) => Err(e.kind().to_string()),
        };
        assert_eq!(got, expected);
    }
}
