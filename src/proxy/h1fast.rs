//! The HTTP/1.1 fast path: body-less `GET` requests parsed and answered
//! without hyper.
//!
//! Nearly every request a proxy in front of SysManage sees, and every one
//! of the benchmark's, is a `GET` with no body on a keep-alive connection.
//! For those, `http1::Http1Serve` reads the head itself, builds the
//! `http::Request` from one `httparse` pass, calls the same service as for
//! every other request, and writes the response with [`encode_head`] and
//! [`Framing`]. Everything else (other methods, request bodies, `Expect`,
//! `Upgrade`, a `Connection` header, HTTP/1.0, heads that did not arrive in
//! one piece or are followed by pipelined bytes, anything `httparse` or
//! `http` refuses) is handed to hyper with the bytes already read, so the
//! errors (400, 431), keep-alive rules and upgrades stay hyper's.
//!
//! The response follows hyper's server encoding (`proto::h1::role`):
//! lower-case names in the header map's order, a `Content-Length` already
//! in the map trusted (unless the body is known to be empty: then
//! `content-length: 0`), otherwise the length from the body's exact size
//! hint, else chunked; no body and no length for 204 and 304; a `date`
//! unless the map has one; `connection: close` when the connection ends
//! after this response. One difference: the status line is always
//! `HTTP/1.1` (the request was HTTP/1.1), also when the server answered
//! with HTTP/1.0, where hyper would echo `HTTP/1.0` and end the body by
//! closing; here a body of unknown length is chunked and the connection
//! stays open.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::SizeHint;

use super::body::ClientBody;
use super::headers::fold_content_length;

/// Most request header fields the fast path takes; more go to hyper.
const MAX_FIELDS: usize = 32;

/// Header fields that send a request to hyper: they announce a body, an
/// upgrade or interim responses, or change the keep-alive rules.
fn needs_hyper(name: &HeaderName) -> bool {
    [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION, header::UPGRADE, header::EXPECT]
        .contains(name)
}

/// What [`parse`] made of the bytes read so far.
// Returned by value and taken apart at once: boxing the request would cost
// an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// A complete body-less `GET`, exactly `buf`.
    Request(Request<ClientBody>),
    /// The head is not complete yet.
    Partial,
    /// Anything else: hyper takes these bytes.
    Hyper,
    /// A head that is not a request: not HTTP/1.x syntax, or a
    /// `Content-Length` that is not one number. The node answers 400 with
    /// this text and closes (hyper would answer an empty 400).
    Malformed(&'static str),
}

/// The 400 body for a head that does not parse.
pub const MALFORMED_HEAD: &str = "400 Bad Request: malformed request head\n";
/// The 400 body for a `Content-Length` that is not one number.
pub const BAD_CONTENT_LENGTH: &str = "400 Bad Request: invalid Content-Length\n";

/// Whether every `Content-Length` field holds the same decimal number
/// (the rule of [`fold_content_length`], as for servers' answers).
fn content_length_ok(headers: &[httparse::Header<'_>]) -> bool {
    let mut length = None;
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .all(|h| fold_content_length(h.value, &mut length).is_ok())
}

/// Parses `buf` as one request head. Only a complete HTTP/1.1 `GET` head
/// that fills `buf` exactly, with none of the fields of [`needs_hyper`], at
/// most [`MAX_FIELDS`] fields and at most `max_head` bytes, is taken.
pub fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        // Too long (hyper answers 431), or more fields than `fields` holds.
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => return Parsed::Hyper,
        Err(_) => return Parsed::Malformed(MALFORMED_HEAD),
    };
    if !content_length_ok(req.headers) {
        return Parsed::Malformed(BAD_CONTENT_LENGTH);
    }
    if len != buf.len() || len > max_head || req.version != Some(1) || req.method != Some("GET") {
        return Parsed::Hyper;
    }
    let (Some(path), headers) = (req.path, &*req.headers) else { return Parsed::Hyper };
    // One copy of the head; the path and every value are slices of it.
    let head = Bytes::copy_from_slice(buf);
    let part = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        head.slice(start..start + s.len())
    };
    let Ok(uri) = Uri::from_maybe_shared(part(path.as_bytes())) else { return Parsed::Hyper };
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Parsed::Hyper };
        if needs_hyper(&name) {
            return Parsed::Hyper;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(part(h.value)) else { return Parsed::Hyper };
        map.append(name, value);
    }
    let mut request = Request::new(ClientBody::Empty);
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Parsed::Request(request)
}

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ended by a zero-size chunk.
    Chunked,
    /// No body (204, 304, or a refused status): whatever the body yields is
    /// dropped.
    Empty,
}

/// The response head as hyper's server would write it for a `GET` on an
/// HTTP/1.1 connection (see the module header). `body`: the body's size
/// hint; `empty`: the body is known to have ended already. `close`: the
/// connection ends after this response. Returns the body's framing and
/// whether the connection must close after it (also when the map says
/// `Connection: close`).
pub fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    body: SizeHint,
    empty: bool,
    close: bool,
    dst: &mut Vec<u8>,
) -> (Framing, bool) {
    let mut close = close;
    if status.is_informational() {
        // hyper answers a 1xx from a service with an empty 500 (a 101 only
        // follows an upgrade request, which never takes this path).
        dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        extend_date(dst);
        dst.extend_from_slice(b"connection: close\r\n\r\n");
        return (Framing::Empty, true);
    }
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let has_body = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut framing = None;
    let mut wrote_date = false;
    let mut said_close = false;
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING || *name == header::TRAILER {
            // The framing is decided here; no trailers are sent.
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if empty {
                // hyper drops it and writes `content-length: 0` below
                // (nothing for 204 and 304).
                continue;
            }
            let len = std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.trim().parse::<u64>().ok());
            match (len, framing) {
                (Some(len), None) => framing = Some(Framing::Length(len)),
                // A repeated or unreadable length is dropped; the body's own
                // size decides below.
                _ => continue,
            }
        }
        if *name == header::DATE {
            wrote_date = true;
        }
        if *name == header::CONNECTION
            && value.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            said_close = true;
            close = true;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let framing = if !has_body {
        Framing::Empty
    } else if let Some(f) = framing {
        f
    } else if let Some(len) = if empty { Some(0) } else { body.exact() } {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(itoa_u64(len, &mut [0u8; 20]));
        dst.extend_from_slice(b"\r\n");
        Framing::Length(len)
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !wrote_date {
        extend_date(dst);
    }
    if close && !said_close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    (framing, close)
}

/// `n` in decimal, written at the end of `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The size line of one chunk: `len` in hex, then CRLF.
pub fn chunk_size_line(len: usize, dst: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        dst.push(HEX[(len >> (i * 4)) & 0xf]);
    }
    dst.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `date` header line of the current second, formatted once per
    /// second per thread (hyper caches it the same way).
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends `date: <IMF-fixdate>\r\n` for now.
fn extend_date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            d.1.clear();
            d.1.extend_from_slice(b"date: ");
            d.1.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            d.1.extend_from_slice(b"\r\n");
            d.0 = secs;
        }
        dst.extend_from_slice(&d.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(buf: &[u8]) -> Request<ClientBody> {
        match parse(buf, 8192) {
            Parsed::Request(r) => r,
            other => panic!("not taken: {other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn a_plain_get_is_taken_whole() {
        let r = fast(b"GET /api/x?y=1 HTTP/1.1\r\nHost: a.example\r\nX-Two: 1\r\nx-two: 2\r\n\r\n");
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.version(), Version::HTTP_11);
        assert_eq!(r.uri().path(), "/api/x");
        assert_eq!(r.uri().query(), Some("y=1"));
        assert_eq!(r.headers()["host"], "a.example");
        let two: Vec<_> = r.headers().get_all("x-two").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(two, ["1", "2"]);
        assert!(http_body::Body::is_end_stream(r.body()));
        // Absolute form, as a client of a proxy may send.
        assert_eq!(fast(b"GET http://h/p HTTP/1.1\r\n\r\n").uri().path(), "/p");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 1..full.len() {
            assert!(matches!(parse(&full[..cut], 8192), Parsed::Partial), "cut at {cut}");
        }
        // Partial, but already as long as a head may be: hyper answers it.
        assert!(matches!(parse(&full[..20], 20), Parsed::Hyper));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            // Pipelined: the next request is already here.
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            // One length, said twice or as a list: hyper frames the body.
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            // Longer than allowed: hyper answers 431.
            &[b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 9000], b"\r\n\r\n"].concat(),
        ];
        for c in cases {
            assert!(matches!(parse(c, 8192), Parsed::Hyper), "taken: {:?}", String::from_utf8_lossy(c));
        }
        let many: Vec<u8> = [
            b"GET / HTTP/1.1\r\n".to_vec(),
            (0..MAX_FIELDS + 1).flat_map(|i| format!("x-{i}: v\r\n").into_bytes()).collect(),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert!(matches!(parse(&many, 8192), Parsed::Hyper));
    }

    #[test]
    fn malformed_heads_are_answered_here() {
        let cases: &[(&[u8], &str)] = &[
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", MALFORMED_HEAD),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", MALFORMED_HEAD),
            (b"GARBAGE\r\n\r\n", MALFORMED_HEAD),
            (b"GET / HTTP/9.9\r\n\r\n", MALFORMED_HEAD),
            // Not complete yet, but already wrong: no need to wait.
            (b"\x00\x01\x02", MALFORMED_HEAD),
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", BAD_CONTENT_LENGTH),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", BAD_CONTENT_LENGTH),
            (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", BAD_CONTENT_LENGTH),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", BAD_CONTENT_LENGTH),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", BAD_CONTENT_LENGTH),
            (b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n", BAD_CONTENT_LENGTH),
        ];
        for (c, want) in cases {
            match parse(c, 8192) {
                Parsed::Malformed(text) => assert_eq!(text, *want, "{:?}", String::from_utf8_lossy(c)),
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(c)),
            }
        }
    }

    fn head(status: StatusCode, headers: &[(&str, &str)], body: SizeHint, close: bool) -> (String, Framing, bool) {
        head_of(status, headers, body, false, close)
    }

    fn head_of(
        status: StatusCode,
        headers: &[(&str, &str)],
        body: SizeHint,
        empty: bool,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut dst = Vec::new();
        let (framing, close) = encode_head(status, &map, body, empty, close, &mut dst);
        (String::from_utf8(dst).unwrap(), framing, close)
    }

    #[test]
    fn heads_are_encoded_as_hyper_does() {
        let (h, f, c) = head(StatusCode::OK, &[("content-type", "text/plain")], SizeHint::with_exact(3), false);
        assert!(h.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\ndate: "), "{h}");
        assert!(h.ends_with(" GMT\r\n\r\n"), "{h}");
        assert_eq!((f, c), (Framing::Length(3), false));

        let (h, f, _) = head(StatusCode::BAD_GATEWAY, &[("date", "x")], SizeHint::new(), false);
        assert_eq!(h, "HTTP/1.1 502 Bad Gateway\r\ndate: x\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(f, Framing::Chunked);

        // A length in the map wins; 204 and 304 have no body.
        let (h, f, _) = head(StatusCode::OK, &[("content-length", "10"), ("date", "x")], SizeHint::new(), false);
        assert_eq!((h.as_str(), f), ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\ndate: x\r\n\r\n", Framing::Length(10)));
        let (h, f, _) = head(StatusCode::NO_CONTENT, &[("date", "x")], SizeHint::with_exact(0), false);
        assert_eq!((h.as_str(), f), ("HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n", Framing::Empty));
        let (h, f, _) = head(StatusCode::NOT_MODIFIED, &[("date", "x")], SizeHint::new(), false);
        assert_eq!((h.as_str(), f), ("HTTP/1.1 304 Not Modified\r\ndate: x\r\n\r\n", Framing::Empty));

        // Closing: said once, also when the map already says it.
        let (h, _, c) = head(StatusCode::OK, &[("date", "x")], SizeHint::with_exact(0), true);
        let want = "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert_eq!((h.as_str(), c), (want, true));
        let (h, _, c) = head(StatusCode::OK, &[("connection", "Close"), ("date", "x")], SizeHint::with_exact(0), false);
        assert_eq!(
            (h.as_str(), c),
            ("HTTP/1.1 200 OK\r\nconnection: Close\r\ndate: x\r\ncontent-length: 0\r\n\r\n", true)
        );

        // A length in the map with a body that has already ended: hyper's
        // `content-length: 0` instead (none for 204).
        let (h, f, _) =
            head_of(StatusCode::OK, &[("content-length", "10"), ("date", "x")], SizeHint::with_exact(0), true, false);
        assert_eq!((h.as_str(), f), ("HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 0\r\n\r\n", Framing::Length(0)));
        let (h, f, _) = head_of(
            StatusCode::NO_CONTENT,
            &[("content-length", "10"), ("date", "x")],
            SizeHint::with_exact(0),
            true,
            false,
        );
        assert_eq!((h.as_str(), f), ("HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n", Framing::Empty));
        // Closing while the map says keep-alive: close is said too.
        let (h, _, c) =
            head(StatusCode::OK, &[("connection", "keep-alive"), ("date", "x")], SizeHint::with_exact(0), true);
        let want =
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ndate: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert_eq!((h.as_str(), c), (want, true));

        // A 1xx from a service is refused as hyper does.
        let (h, f, c) = head(StatusCode::CONTINUE, &[], SizeHint::new(), false);
        assert!(h.starts_with("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n"), "{h}");
        assert_eq!((f, c), (Framing::Empty, true));
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        for (n, want) in [(0usize, "0\r\n"), (1, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (65536, "10000\r\n")] {
            let mut v = Vec::new();
            chunk_size_line(n, &mut v);
            assert_eq!(String::from_utf8(v).unwrap(), want);
        }
        assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
        assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }
}
