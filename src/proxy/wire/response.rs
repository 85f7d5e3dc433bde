//! Responses: the head a server sends (parsed, with the framing and reuse
//! rules of the module `wire` header), and the head the fast path writes to
//! a client.
//!
//! The client-side head follows hyper's server encoding
//! (`proto::h1::role`): lower-case names in the header map's order, a
//! `Content-Length` already in the map trusted (unless the body is known to
//! be empty: then `content-length: 0`), otherwise the length from the
//! body's exact size hint, else chunked; no body and no length for 204 and
//! 304; a `date` unless the map has one; `connection: close` when the
//! connection ends after this response. One difference: the status line is
//! always `HTTP/1.1` (the request was HTTP/1.1), also when the server
//! answered with HTTP/1.0, where hyper would echo `HTTP/1.0` and end the
//! body by closing; here a body of unknown length is chunked and the
//! connection stays open.

use std::cell::RefCell;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use http_body::SizeHint;

use super::fields::{ends_chunked, fold_content_length, is_hop_by_hop, BadContentLength};
use super::ResponseFault;

/// Largest response head accepted (status line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Most interim (1xx) answers before the final one; more is a server
/// stalling the node with a stream of 100 Continue.
pub const MAX_INTERIM: usize = 8;

/// Why reading a response head failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("the server closed the connection before sending a response")]
    Closed,
    #[error("the server closed the connection in the middle of the response head")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{detail}")]
    Invalid { fault: ResponseFault, detail: String },
}

impl HeadError {
    /// The fault to count, for an answer that was refused.
    pub fn fault(&self) -> Option<ResponseFault> {
        match self {
            HeadError::Invalid { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head.
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub reusable: bool,
    /// Hop-by-hop fields may remain in `parts.headers` (a 101, or fields
    /// named in `Connection`); the fixed ones were left out otherwise.
    pub hop_by_hop_left: bool,
    /// Why the connection is not reused although the answer was taken
    /// (to count it).
    pub distrust: Option<ResponseFault>,
}

/// What [`parse_head`] made of the bytes read so far.
pub enum Parsed {
    Head(Head),
    /// A 1xx response was skipped.
    Interim,
    Partial,
}

fn invalid(fault: ResponseFault, what: impl Into<String>) -> HeadError {
    HeadError::Invalid { fault, detail: what.into() }
}

/// Where a field's name and value are in the head: offsets and lengths.
type Span = (u32, u32, u32, u32);

/// Parses a response head at the start of `buf` (consumed, with an interim
/// answer); `head_request`: the request was HEAD, so no body follows.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, HeadError> {
    // Offsets of names and values in `buf`, so that values can share the
    // frozen head instead of being copied one by one.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let Some((len, code, minor, n)) = scan(buf, &mut spans)? else { return Ok(Parsed::Partial) };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| invalid(ResponseFault::Head, format!("invalid status code {code}")))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim);
    }
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let (mut headers, mut facts) = fields(&head, &spans[..n], upgrade)?;
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let (framing, reusable, distrust) = framing(status, version, head_request, &facts, &mut headers);
    let hop_by_hop_left = upgrade || facts.names_others;
    if facts.names_others {
        let (first, rest) = std::mem::take(&mut facts.connection_values);
        for v in first.into_iter().chain(rest) {
            headers.append(header::CONNECTION, v);
        }
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    let (parts, ()) = resp.into_parts();
    Ok(Parsed::Head(Head { parts, framing, reusable, hop_by_hop_left, distrust }))
}

/// httparse over the head: its length, status code, minor version and
/// number of fields, the fields' places written to `spans`; `None` while
/// the head is incomplete.
#[inline]
fn scan(buf: &BytesMut, spans: &mut [Span; MAX_HEADERS]) -> Result<Option<(usize, u16, u8, usize)>, HeadError> {
    // Uninitialised: filling 100 empty headers first costs more than
    // parsing a typical head.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(ResponseFault::Head, format!("malformed response head: {e}"))),
    };
    let base = buf.as_ptr() as usize;
    let n = resp.headers.len();
    for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        *span = (name as u32, h.name.len() as u32, value as u32, h.value.len() as u32);
    }
    Ok(Some((len, resp.code.unwrap_or(0), resp.version.unwrap_or(1), n)))
}

/// The response's fields, in one pass: framing and connection facts are
/// noted as the fields go by, and hop-by-hop fields are left out (kept for
/// a 101, whose `Upgrade` the tunnel needs; `Connection` values that name
/// other fields are kept aside in the facts). Room for the security
/// headers added later, so the map does not grow per response.
#[inline]
fn fields(head: &Bytes, spans: &[Span], upgrade: bool) -> Result<(HeaderMap, Facts), HeadError> {
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    let mut facts = Facts::default();
    for &(ns, nl, vs, vl) in spans {
        let name = HeaderName::from_bytes(&head[ns as usize..(ns + nl) as usize])
            .map_err(|_| invalid(ResponseFault::Head, "invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..(vs + vl) as usize))
            .map_err(|_| invalid(ResponseFault::Head, format!("invalid value for header {name}")))?;
        if name == header::CONTENT_LENGTH {
            facts.content_length(&value)?;
        } else if name == header::TRANSFER_ENCODING {
            facts.transfer_encoding(&value);
        } else if name == header::CONNECTION {
            facts.connection(&value);
            if !upgrade {
                // Put back by `parse_head` if it names other fields, for
                // `remove_hop_by_hop` to read.
                match facts.connection_values.0 {
                    None => facts.connection_values.0 = Some(value),
                    Some(_) => facts.connection_values.1.push(value),
                }
                continue;
            }
        }
        if !upgrade && is_hop_by_hop(&name) {
            continue;
        }
        headers.append(name, value);
    }
    Ok((headers, facts))
}

/// How the body is framed (RFC 9112 §6.3), whether the connection may
/// carry another request after it, and why not if the server's framing is
/// distrusted.
#[inline]
fn framing(
    status: StatusCode,
    version: Version,
    head_request: bool,
    facts: &Facts,
    headers: &mut HeaderMap,
) -> (Framing, bool, Option<ResponseFault>) {
    let mut reusable = match version {
        // `Transfer-Encoding` in HTTP/1.0 is faulty framing (RFC 9112
        // §6.1): read it, but close the connection after.
        Version::HTTP_10 => facts.keep_alive && !facts.transfer_encoding,
        _ => !facts.close,
    };
    let mut distrust = None;
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if head_request || status.is_informational() || bodiless {
        if head_request {
            // A server that sends a body anyway, late, would hand it to the
            // next request on this connection: never reused (as nginx).
            reusable = false;
        } else if bodiless && (facts.transfer_encoding || facts.length.is_some_and(|n| n > 0)) {
            reusable = false;
            distrust = Some(ResponseFault::BodyAfterBodiless);
        }
        Framing::Empty
    } else if facts.transfer_encoding {
        if facts.length.is_some() {
            // Both: Transfer-Encoding wins, and the connection is not
            // trusted with another request (RFC 9112 §6.3).
            headers.remove(header::CONTENT_LENGTH);
            reusable = false;
            distrust = Some(ResponseFault::ContentLength);
        }
        if facts.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = facts.length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    (framing, reusable, distrust)
}

/// What the header fields say about framing and the connection.
#[derive(Default)]
struct Facts {
    length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` names other fields (hop-by-hop by that listing).
    names_others: bool,
    /// The `Connection` fields (the first inline: servers send one).
    connection_values: (Option<HeaderValue>, Vec<HeaderValue>),
}

impl Facts {
    /// A `Content-Length` value: every one (and every comma-separated item)
    /// must be the same number.
    fn content_length(&mut self, v: &HeaderValue) -> Result<(), HeadError> {
        fold_content_length(v.as_bytes(), &mut self.length).map_err(|e| match e {
            BadContentLength::Invalid => invalid(ResponseFault::ContentLength, "invalid Content-Length"),
            BadContentLength::Conflicting => invalid(ResponseFault::ContentLength, "conflicting Content-Length values"),
        })
    }

    /// `Transfer-Encoding`: the last coding of the last field decides.
    fn transfer_encoding(&mut self, v: &HeaderValue) {
        self.transfer_encoding = true;
        self.chunked_last = ends_chunked(v.as_bytes());
    }

    fn connection(&mut self, v: &HeaderValue) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"upgrade") {
                self.names_others = true;
            }
        }
    }
}

/// How a response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFraming {
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
) -> (SendFraming, bool) {
    if status.is_informational() {
        // hyper answers a 1xx from a service with an empty 500 (a 101 only
        // follows an upgrade request, which never takes this path).
        dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        extend_date(dst);
        dst.extend_from_slice(b"connection: close\r\n\r\n");
        return (SendFraming::Empty, true);
    }
    status_line(status, dst);
    let has_body = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let written = write_fields(headers, empty, dst);
    let close = close || written.close;
    let framing = if !has_body {
        SendFraming::Empty
    } else if let Some(f) = written.framing {
        f
    } else if let Some(len) = if empty { Some(0) } else { body.exact() } {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(itoa_u64(len, &mut [0u8; 20]));
        dst.extend_from_slice(b"\r\n");
        SendFraming::Length(len)
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        SendFraming::Chunked
    };
    if !written.date {
        extend_date(dst);
    }
    if close && !written.close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    (framing, close)
}

#[inline]
fn status_line(status: StatusCode, dst: &mut Vec<u8>) {
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
}

/// What [`write_fields`] saw: the response's own length, a `Date`, a
/// `Connection: close`.
struct Written {
    framing: Option<SendFraming>,
    date: bool,
    close: bool,
}

/// The response's fields, but not its framing ones: `Transfer-Encoding`
/// and `Trailer` never (the framing is decided by the caller; no trailers
/// are sent), `Content-Length` once (and not for an `empty` body).
#[inline]
fn write_fields(headers: &HeaderMap, empty: bool, dst: &mut Vec<u8>) -> Written {
    let mut written = Written { framing: None, date: false, close: false };
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING || *name == header::TRAILER {
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if empty {
                // hyper drops it and writes `content-length: 0` (nothing for
                // 204 and 304).
                continue;
            }
            let len = std::str::from_utf8(value.as_bytes()).ok().and_then(|v| v.trim().parse::<u64>().ok());
            match (len, written.framing) {
                (Some(len), None) => written.framing = Some(SendFraming::Length(len)),
                // A repeated or unreadable length is dropped; the body's own
                // size decides.
                _ => continue,
            }
        }
        if *name == header::DATE {
            written.date = true;
        }
        if *name == header::CONNECTION
            && value.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            written.close = true;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    written
}

/// `n` in decimal, written at the end of `buf`.
pub fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

    fn parse(text: &str, head_request: bool) -> Result<(Head, BytesMut), HeadError> {
        let mut buf = BytesMut::from(text);
        loop {
            match parse_head(&mut buf, head_request)? {
                Parsed::Head(h) => return Ok((h, buf)),
                Parsed::Interim => continue,
                Parsed::Partial => return Err(HeadError::Truncated),
            }
        }
    }

    #[test]
    fn a_content_length_response_keeps_its_body_bytes_and_is_reusable() {
        let (h, rest) = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello", false).unwrap();
        assert_eq!(h.parts.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.reusable);
        assert_eq!(h.parts.headers["x-y"], "z");
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (h, _) = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
        assert_eq!(h.parts.status, StatusCode::NO_CONTENT);
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn framing_rules() {
        let f = |t: &str, head: bool| parse(t, head).map(|(h, _)| (h.framing, h.reusable));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap(),
            (Framing::Empty, false),
            "never reused after HEAD: a late body would reach the next request"
        );
        let d = |t: &str| parse(t, false).map(|(h, _)| (h.reusable, h.distrust)).unwrap();
        assert_eq!(
            d("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
            (false, Some(ResponseFault::BodyAfterBodiless))
        );
        assert_eq!(
            d("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (false, Some(ResponseFault::BodyAfterBodiless))
        );
        assert_eq!(d("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"), (true, None));
        assert_eq!(f("HTTP/1.1 304 Not Modified\r\n\r\n", false).unwrap(), (Framing::Empty, true));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false).unwrap(),
            (Framing::Chunked, true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false).unwrap(),
            (Framing::Chunked, false),
            "both: chunked wins, the connection is not reused"
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap(),
            (Framing::UntilClose, false)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false).unwrap(), (Framing::UntilClose, false));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false).unwrap(),
            (Framing::Length(1), false)
        );
        assert_eq!(f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap(), (Framing::Length(1), false));
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap(),
            (Framing::Chunked, false)
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false).unwrap(),
            (Framing::Length(1), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n", false).unwrap(),
            (Framing::Length(4), true)
        );
    }

    #[test]
    fn hop_by_hop_fields_are_left_out_in_the_same_pass() {
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.parts.headers.len(), 1, "{:?}", h.parts.headers);
        assert!(!h.hop_by_hop_left);
        assert_eq!(h.framing, Framing::Chunked);
        // Fields named in Connection: the Connection field stays for
        // `remove_hop_by_hop` to read.
        let (h, _) =
            parse("HTTP/1.1 200 OK\r\nX-Secret: s\r\nConnection: x-secret\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap();
        assert!(h.hop_by_hop_left);
        assert_eq!(h.parts.headers["connection"], "x-secret");
        // A 101 keeps Connection and Upgrade for the tunnel.
        let (h, _) =
            parse("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false)
                .unwrap();
        assert_eq!(h.parts.headers["upgrade"], "websocket");
        assert!(h.hop_by_hop_left);
    }

    #[test]
    fn bad_heads_are_refused_with_a_reason() {
        let err = |t: &str| parse(t, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n").contains("conflicting"));
        assert!(err("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("invalid Content-Length"));
        assert!(err("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n").contains("invalid"));
        assert!(err("SSH-2.0-OpenSSH\r\n\r\n").contains("malformed response head"));
        assert!(err("HTTP/1.1 099 Odd\r\n\r\n").contains("invalid status code"));
    }

    fn head(status: StatusCode, headers: &[(&str, &str)], body: SizeHint, close: bool) -> (String, SendFraming, bool) {
        head_of(status, headers, body, false, close)
    }

    fn head_of(
        status: StatusCode,
        headers: &[(&str, &str)],
        body: SizeHint,
        empty: bool,
        close: bool,
    ) -> (String, SendFraming, bool) {
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
        assert_eq!((f, c), (SendFraming::Length(3), false));

        let (h, f, _) = head(StatusCode::BAD_GATEWAY, &[("date", "x")], SizeHint::new(), false);
        assert_eq!(h, "HTTP/1.1 502 Bad Gateway\r\ndate: x\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(f, SendFraming::Chunked);

        // A length in the map wins; 204 and 304 have no body.
        let (h, f, _) = head(StatusCode::OK, &[("content-length", "10"), ("date", "x")], SizeHint::new(), false);
        assert_eq!(
            (h.as_str(), f),
            ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\ndate: x\r\n\r\n", SendFraming::Length(10))
        );
        let (h, f, _) = head(StatusCode::NO_CONTENT, &[("date", "x")], SizeHint::with_exact(0), false);
        assert_eq!((h.as_str(), f), ("HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n", SendFraming::Empty));
        let (h, f, _) = head(StatusCode::NOT_MODIFIED, &[("date", "x")], SizeHint::new(), false);
        assert_eq!((h.as_str(), f), ("HTTP/1.1 304 Not Modified\r\ndate: x\r\n\r\n", SendFraming::Empty));

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
        assert_eq!(
            (h.as_str(), f),
            ("HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 0\r\n\r\n", SendFraming::Length(0))
        );
        let (h, f, _) = head_of(
            StatusCode::NO_CONTENT,
            &[("content-length", "10"), ("date", "x")],
            SizeHint::with_exact(0),
            true,
            false,
        );
        assert_eq!((h.as_str(), f), ("HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n", SendFraming::Empty));
        // Closing while the map says keep-alive: close is said too.
        let (h, _, c) =
            head(StatusCode::OK, &[("connection", "keep-alive"), ("date", "x")], SizeHint::with_exact(0), true);
        let want =
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ndate: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert_eq!((h.as_str(), c), (want, true));

        // A 1xx from a service is refused as hyper does.
        let (h, f, c) = head(StatusCode::CONTINUE, &[], SizeHint::new(), false);
        assert!(h.starts_with("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n"), "{h}");
        assert_eq!((f, c), (SendFraming::Empty, true));
    }

    #[test]
    fn interim_answers_are_bounded() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nrest"[..]);
        assert!(matches!(parse_head(&mut buf, false), Ok(Parsed::Interim)));
        assert!(matches!(parse_head(&mut buf, false), Ok(Parsed::Interim)));
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
        assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }
}
