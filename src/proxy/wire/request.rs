//! Requests: the fast path's head parser (body-less `GET`s served without
//! hyper, every other head checked before hyper sees it), the checks every
//! request passes whoever parsed it, and the head sent to servers.

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};

use super::fields::fold_content_length;
use super::path::{self, PathError};
use super::RequestFault;
use crate::proxy::body::ClientBody;
use crate::proxy::headers::Forwarded;

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
    /// A head that passed the framing checks (or one too long or with too
    /// many fields for the fast path to check): hyper takes these bytes.
    Hyper,
    /// A head that is refused: the node answers 400 with
    /// [`refusal_text`] and closes.
    Malformed(RequestFault),
}

/// The 400 (or 431) body the client gets for a refused request.
pub fn refusal_text(fault: RequestFault) -> &'static str {
    match fault {
        RequestFault::Head | RequestFault::Hyper => "400 Bad Request: malformed request head\n",
        RequestFault::ContentLength => "400 Bad Request: invalid Content-Length\n",
        RequestFault::TransferEncoding => "400 Bad Request: invalid Transfer-Encoding (only chunked is accepted)\n",
        RequestFault::LengthAndEncoding => "400 Bad Request: Content-Length and Transfer-Encoding together\n",
        RequestFault::Host => "400 Bad Request: a request needs exactly one valid Host\n",
        RequestFault::Path => "400 Bad Request: the path cannot be normalised safely\n",
        RequestFault::TooLarge => "431 Request Header Fields Too Large\n",
        RequestFault::Body => "400 Bad Request: the request body could not be read\n",
    }
}

/// The framing rules for a request head (module `wire` header): every
/// `Content-Length` field one number, and the same; at most one `Transfer-Encoding`,
/// exactly `chunked`, only in HTTP/1.1, never with `Content-Length`.
fn check_framing(headers: &[httparse::Header<'_>], http11: bool) -> Result<(), RequestFault> {
    let mut length = None;
    let mut encodings = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            // One number per field: a list (`5, 5`) is refused, as hyper
            // does (RFC 9110 §8.6 lets a recipient refuse it), so that both
            // parsers agree; equal separate fields are accepted.
            if h.value.contains(&b',') {
                return Err(RequestFault::ContentLength);
            }
            fold_content_length(h.value, &mut length).map_err(|_| RequestFault::ContentLength)?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            if !http11 || encodings > 1 || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(RequestFault::TransferEncoding);
            }
        }
    }
    if length.is_some() && encodings > 0 {
        return Err(RequestFault::LengthAndEncoding);
    }
    Ok(())
}

/// Parses `buf` as one request head. Every complete head is checked
/// against the framing rules; only a complete HTTP/1.1 `GET` head that
/// fills `buf` exactly, with none of the fields of [`needs_hyper`], at most
/// [`MAX_FIELDS`] fields and at most `max_head` bytes, is taken here.
pub fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        // Too long (hyper answers 431), or more fields than `fields` holds.
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => return Parsed::Hyper,
        Err(_) => return Parsed::Malformed(RequestFault::Head),
    };
    if let Err(fault) = check_framing(req.headers, req.version == Some(1)) {
        return Parsed::Malformed(fault);
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

/// A request refused by [`check`]: what to count, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub fault: RequestFault,
    pub detail: String,
}

fn refused(fault: RequestFault, detail: impl Into<String>) -> Refused {
    Refused { fault, detail: detail.into() }
}

/// The checks every request passes before routing, whoever parsed it
/// (fast path, hyper, HTTP/2), in place:
/// - field names with `_` are dropped;
/// - `Host`: exactly one for HTTP/1.1 (none is fine for HTTP/1.0: the
///   address the client connected to, `local`, is sent instead), a valid
///   authority; the target's authority (absolute form, or HTTP/2's
///   `:authority`) replaces it, and an HTTP/1 target becomes origin form;
/// - the path is normalised ([`path::normalize`]), query untouched.
pub fn check<B>(req: &mut Request<B>, local: SocketAddr) -> Result<(), Refused> {
    drop_underscored(req.headers_mut());
    let authority = req.uri().authority().cloned();
    let http1 = req.version() != Version::HTTP_2;
    let http10 = req.version() == Version::HTTP_10;
    let headers = req.headers_mut();
    let mut hosts = headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    // Two Host fields: refused (RFC 9112 §3.2), also over HTTP/2 unless
    // `:authority` (which replaces them all) is there.
    if second.is_some() && (http1 || authority.is_none()) {
        return Err(refused(RequestFault::Host, "more than one Host field"));
    }
    if let Some(a) = authority {
        if a.as_str().contains('@') {
            return Err(refused(RequestFault::Host, "user information in the request target"));
        }
        let v = HeaderValue::from_str(a.as_str()).map_err(|_| refused(RequestFault::Host, "invalid authority"))?;
        headers.insert(header::HOST, v);
    } else {
        match first {
            Some(v) if !valid_host(v.as_bytes()) => {
                return Err(refused(
                    RequestFault::Host,
                    format!("invalid Host {:?}", String::from_utf8_lossy(v.as_bytes())),
                ))
            }
            Some(_) => {}
            None if http10 => {
                let v =
                    HeaderValue::from_str(&local.to_string()).map_err(|_| refused(RequestFault::Host, "no Host"))?;
                headers.insert(header::HOST, v);
            }
            None => return Err(refused(RequestFault::Host, "no Host field")),
        }
    }
    normalize_target(req, http1)
}

/// `Host` = uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2): a
/// reg-name or IPv4 address (unreserved, percent-encoded and sub-delim
/// characters), or an IP literal in brackets, then an optional port; no
/// user information. Empty is allowed (RFC 9112 §3.2). Checked by hand,
/// once per request: parsing it into an `Authority` would copy it.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = match v.first() {
        Some(b'[') => match v.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &v[1..end];
                if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b":.".contains(&b)) {
                    return false;
                }
                (&v[..0], &v[end + 1..])
            }
            None => return false,
        },
        _ => match v.iter().position(|&b| b == b':') {
            Some(colon) => (&v[..colon], &v[colon..]),
            None => (v, &v[..0]),
        },
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    let port_ok = port.is_empty() || (port[0] == b':' && port.len() <= 6 && port[1..].iter().all(u8::is_ascii_digit));
    host.iter().all(reg_name) && port_ok
}

/// Removes every field whose name has `_`: no standard field has one, and
/// servers that fold `_` into `-` (CGI, some frameworks) would read
/// `Transfer_Encoding` or `Content_Length` as framing.
fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().contains('_')).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Normalises the path of the target (borrowing, the common case, costs
/// one pass); an HTTP/1 target in absolute form becomes origin form.
fn normalize_target<B>(req: &mut Request<B>, http1: bool) -> Result<(), Refused> {
    let uri = req.uri();
    let absolute = http1 && uri.authority().is_some();
    let path = uri.path();
    if req.method() == Method::OPTIONS && path == "*" {
        return Ok(());
    }
    if path.is_empty() {
        return Err(refused(RequestFault::Path, "no path in the request target"));
    }
    let normal = path::normalize(path).map_err(|e: PathError| refused(RequestFault::Path, e.to_string()))?;
    if matches!(normal, std::borrow::Cow::Borrowed(_)) && !absolute {
        return Ok(());
    }
    let pq = match uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal.into_owned(),
    };
    let pq =
        PathAndQuery::try_from(pq).map_err(|_| refused(RequestFault::Path, "normalised path is not a valid URI"))?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    if absolute {
        parts.scheme = None;
        parts.authority = None;
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| refused(RequestFault::Path, "invalid request target"))?;
    Ok(())
}

/// How a request's body goes to the server: decided once, from what was
/// parsed, and written as the head's only framing field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no framing field.
    None,
    /// `content-length`: exactly this many bytes follow.
    Length(u64),
    /// `transfer-encoding: chunked`: the node chunk-encodes the body.
    Chunked,
}

/// Encodes a request head for a server: request line and header fields
/// (lower-case names, as hyper writes them), the forwarding headers of
/// `fwd` in place of any of those names in `headers`, and `framing` as the
/// only framing field: the client's `Content-Length`, `Transfer-Encoding`
/// and `Expect` are never copied.
pub fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    fwd: Option<&Forwarded>,
    framing: BodyFraming,
) -> Bytes {
    let mut len = method.as_str().len() + target.len() + 13 + fwd.map_or(0, Forwarded::len_hint) + 40;
    for (k, v) in headers {
        len += k.as_str().len() + v.len() + 4;
    }
    let mut out = Vec::with_capacity(len + 2);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        // `Expect: 100-continue` was the client's question to us (hyper
        // answered it when the body was first read); the body goes to the
        // server without waiting, so the server is not asked.
        if (fwd.is_some() && Forwarded::replaces(k))
            || k == header::EXPECT
            || k == header::CONTENT_LENGTH
            || k == header::TRANSFER_ENCODING
        {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(super::response::itoa_u64(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if let Some(f) = fwd {
        f.write(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
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
            b"GET / HTTP/1.1\r\ntransfer-encoding:\tChunked \r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            // Pipelined: the next request is already here.
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            // One length, said twice: hyper frames the body.
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
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
        use RequestFault::*;
        let cases: &[(&[u8], RequestFault)] = &[
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Head),
            (b"GET / HTTP/1.1\r\nName : x\r\n\r\n", Head),
            (b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", Head),
            (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", Head),
            (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", Head),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", Head),
            (b"GARBAGE\r\n\r\n", Head),
            (b"GET / HTTP/9.9\r\n\r\n", Head),
            // Not complete yet, but already wrong: no need to wait.
            (b"\x00\x01\x02", Head),
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", LengthAndEncoding),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncoding),
        ];
        for (c, want) in cases {
            match parse(c, 8192) {
                Parsed::Malformed(fault) => assert_eq!(fault, *want, "{:?}", String::from_utf8_lossy(c)),
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(c)),
            }
        }
    }

    fn checked(req: &[u8]) -> Result<Request<ClientBody>, RequestFault> {
        let mut r = match parse(req, 8192) {
            Parsed::Request(r) => r,
            other => panic!("{other:?}"),
        };
        check(&mut r, "10.0.0.1:80".parse().unwrap()).map_err(|e| e.fault)?;
        Ok(r)
    }

    #[test]
    fn host_rules() {
        assert_eq!(checked(b"GET / HTTP/1.1\r\n\r\n").err(), Some(RequestFault::Host));
        assert_eq!(checked(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").err(), Some(RequestFault::Host));
        assert_eq!(checked(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").err(), Some(RequestFault::Host));
        assert_eq!(checked(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n").err(), Some(RequestFault::Host));
        assert_eq!(checked(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n").err(), Some(RequestFault::Host));
        for bad in ["a:b", "a:1:2", "a:1234567", "[::1", "[]", "[zz]", "a,b c", "a?b", "a#b"] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        for good in
            ["a.example", "a.example:8080", "127.0.0.1:80", "[::1]", "[2001:db8::7]:443", "xn--bcher-kva.de", "a_b", ""]
        {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        let r = checked(b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n").unwrap();
        assert_eq!(r.headers()["host"], "a.example:8080");
        assert!(checked(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").is_ok(), "an empty Host is allowed");
        // The target's authority wins; the target becomes origin form.
        let r = checked(b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n").unwrap();
        assert_eq!(r.headers()["host"], "a.example");
        assert_eq!(r.uri().to_string(), "/p?q=1");
        // HTTP/1.0 without Host: the address the client connected to.
        let mut r = Request::get("/").version(Version::HTTP_10).body(()).unwrap();
        check(&mut r, "10.0.0.1:80".parse().unwrap()).unwrap();
        assert_eq!(r.headers()["host"], "10.0.0.1:80");
        // HTTP/2: `:authority` replaces any Host; two Hosts without it are
        // refused.
        let mut r = Request::get("http://a.example/x").version(Version::HTTP_2).body(()).unwrap();
        r.headers_mut().append(header::HOST, HeaderValue::from_static("b"));
        r.headers_mut().append(header::HOST, HeaderValue::from_static("c"));
        check(&mut r, "10.0.0.1:80".parse().unwrap()).unwrap();
        assert_eq!(r.headers().get_all(header::HOST).iter().collect::<Vec<_>>(), ["a.example"]);
        let mut r = Request::get("/x").version(Version::HTTP_2).body(()).unwrap();
        r.headers_mut().append(header::HOST, HeaderValue::from_static("b"));
        r.headers_mut().append(header::HOST, HeaderValue::from_static("c"));
        assert_eq!(check(&mut r, "10.0.0.1:80".parse().unwrap()).map_err(|e| e.fault), Err(RequestFault::Host));
    }

    #[test]
    fn underscores_are_dropped_and_paths_normalised() {
        let r = checked(b"GET /a//b/../c?x=%2F HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nX_A: 1\r\n\r\n")
            .unwrap();
        assert_eq!(r.headers().len(), 1, "{:?}", r.headers());
        assert_eq!(r.uri().to_string(), "/a/c?x=%2F");
        for bad in [&b"/a%2Fb"[..], b"/a%00", b"/../x", b"/%2e%2e/x"] {
            let req = [&b"GET "[..], bad, b" HTTP/1.1\r\nHost: h\r\n\r\n"].concat();
            assert_eq!(checked(&req).err(), Some(RequestFault::Path), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut r = Request::options("*").body(()).unwrap();
        r.headers_mut().insert(header::HOST, HeaderValue::from_static("h"));
        assert!(check(&mut r, "10.0.0.1:80".parse().unwrap()).is_ok());
    }

    #[test]
    fn upstream_heads_carry_only_the_nodes_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("70000"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let head = encode_head(&Method::POST, "/p?q=1", &h, None, BodyFraming::Length(5));
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: example.org\r\nx-a: 1\r\nx-a: 2\r\nx-real-ip: 6.6.6.6\r\ncontent-length: 5\r\n\r\n"
        );
        let head = encode_head(&Method::POST, "/", &h, None, BodyFraming::Chunked);
        assert!(std::str::from_utf8(&head)
            .unwrap()
            .ends_with("x-real-ip: 6.6.6.6\r\ntransfer-encoding: chunked\r\n\r\n"));
        let head = encode_head(&Method::GET, "/", &h, None, BodyFraming::None);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(!text.contains("content-length") && !text.contains("transfer-encoding"), "{text}");
        let ip = "192.0.2.1".parse().unwrap();
        let fwd = crate::proxy::headers::forwarded(&h, ip, ip, false, "http", None);
        let head = encode_head(&Method::GET, "/", &h, Some(&fwd), BodyFraming::None);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(!text.contains("6.6.6.6"), "the client's X-Real-IP is replaced: {text}");
        assert!(text.ends_with("x-real-ip: 192.0.2.1\r\nx-forwarded-proto: http\r\n\r\n"), "{text}");
    }
}
