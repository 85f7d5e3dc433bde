//! libFuzzer target for the response head parser
//! (`sysmanage_node::proxy::wire::response::parse_head`, what servers send)
//! and the client-side head encoder (`response::encode_head`, what the fast
//! path writes to clients). Run with `bench/fuzz_http1.sh`.
//!
//! The first byte's low bit says whether the request was HEAD; the rest is
//! what the server sent. Interim answers are skipped (at most
//! `MAX_INTERIM + 1` of them are looked at). On a final head:
//! - a body read to close is never followed by another request
//!   (`UntilClose` ⇒ `!reusable`);
//! - after HEAD: no body (`Empty`) and no reuse;
//! - no `transfer-encoding` is left in the headers (except for a 101);
//! - `Content-Length` with `Transfer-Encoding`: never reused, and the
//!   length is not kept; a 204/304 never has a body;
//! - the framing follows RFC 9112 §6.3 as read from the raw fields (checked
//!   against an independent httparse parse of the same bytes), and
//!   `Connection: close` is never reused;
//! - the parsed status and headers, written for a client by `encode_head`,
//!   parse with httparse as one complete response with the same status (a
//!   1xx becomes the 500 hyper sends), at most one framing field, and
//!   that field agrees with the returned `SendFraming`.

#![no_main]

use bytes::BytesMut;
use http::{header, StatusCode};
use http_body::SizeHint;
use libfuzzer_sys::fuzz_target;
use sysmanage_node::proxy::wire::response::{self, Framing, Parsed, SendFraming, MAX_HEADERS, MAX_INTERIM};

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The raw fields of the head at the start of `buf`, read independently.
struct Raw {
    length: Option<Vec<u8>>,
    lengths: usize,
    /// The last `Transfer-Encoding` value.
    encoding: Option<Vec<u8>>,
    close: bool,
}

fn raw_fields(buf: &[u8]) -> Raw {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let st = resp.parse(buf);
    assert!(matches!(st, Ok(httparse::Status::Complete(_))), "parse_head took a head httparse does not: {st:?}");
    let mut raw = Raw { length: None, lengths: 0, encoding: None, close: false };
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            raw.lengths += 1;
            raw.length = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            raw.encoding = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("connection") {
            raw.close |= h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    raw
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let head_request = first & 1 == 1;
    let mut buf = BytesMut::from(rest);
    let mut interim = 0;
    let h = loop {
        let before = buf.clone();
        match response::parse_head(&mut buf, head_request) {
            Ok(Parsed::Interim) => {
                assert!(buf.len() < before.len(), "an interim answer consumed nothing");
                interim += 1;
                if interim > MAX_INTERIM + 1 {
                    return;
                }
            }
            Ok(Parsed::Partial) => {
                assert_eq!(buf, before, "a partial head consumed bytes");
                return;
            }
            Err(e) => {
                let _ = (e.to_string(), e.fault());
                return;
            }
            Ok(Parsed::Head(h)) => break (h, before),
        }
    };
    let (h, before) = h;
    let consumed = before.len() - buf.len();
    assert_eq!(&before[consumed..], &buf[..]);
    let raw = raw_fields(&before[..consumed]);
    let status = h.parts.status;
    let ctx = || format!("head_request={head_request} {:?}", show(&before[..consumed]));

    if h.framing == Framing::UntilClose {
        assert!(!h.reusable, "reused after a body read to close: {}", ctx());
    }
    if head_request {
        assert_eq!(h.framing, Framing::Empty, "{}", ctx());
        assert!(!h.reusable, "reused after HEAD: {}", ctx());
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        assert!(!h.parts.headers.contains_key(header::TRANSFER_ENCODING), "transfer-encoding left: {}", ctx());
    }
    assert!(!status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS, "{}", ctx());
    // A 101 is exempt: `reusable` means nothing for it, the connection
    // becomes a tunnel or is dropped, never pooled (`forward::respond`).
    if raw.length.is_some() && raw.encoding.is_some() && status != StatusCode::SWITCHING_PROTOCOLS {
        assert!(!h.reusable, "reused after Content-Length with Transfer-Encoding: {}", ctx());
        // With a body, the encoding wins and the length goes (HEAD, 204
        // and 304 have no body: their length is only informative).
        let bodiless = head_request || status == 204 || status == 304;
        assert!(bodiless || !h.parts.headers.contains_key(header::CONTENT_LENGTH), "length kept: {}", ctx());
    }
    if raw.close {
        assert!(!h.reusable, "reused after Connection: close: {}", ctx());
    }
    // RFC 9112 §6.3, from the raw fields.
    let bodiless = head_request || status.is_informational() || status == 204 || status == 304;
    let want = if bodiless {
        Framing::Empty
    } else if let Some(te) = &raw.encoding {
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(cl) = &raw.length {
        let first = cl.split(|&b| b == b',').next().unwrap_or_default().trim_ascii();
        let n = std::str::from_utf8(first).ok().and_then(|s| s.parse::<u64>().ok());
        Framing::Length(n.unwrap_or_else(|| panic!("an unreadable Content-Length was taken: {}", ctx())))
    } else {
        Framing::UntilClose
    };
    assert_eq!(h.framing, want, "framing of {}", ctx());
    if let Framing::Length(_) = h.framing {
        assert!(raw.lengths >= 1);
    }

    // The head written to a client.
    let mut out = Vec::new();
    let (framing, _close) = response::encode_head(status, &h.parts.headers, SizeHint::new(), false, false, &mut out);
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut resp = httparse::Response::new(&mut fields);
    let st = resp.parse(&out);
    assert_eq!(st, Ok(httparse::Status::Complete(out.len())), "the client head {:?} is not one head", show(&out));
    let sent = if status.is_informational() { 500 } else { status.as_u16() };
    assert_eq!(resp.code, Some(sent));
    let lengths: Vec<&[u8]> =
        resp.headers.iter().filter(|f| f.name.eq_ignore_ascii_case("content-length")).map(|f| f.value).collect();
    let encodings: Vec<&[u8]> =
        resp.headers.iter().filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding")).map(|f| f.value).collect();
    assert!(lengths.len() + encodings.len() <= 1, "more than one framing field in {:?}", show(&out));
    match framing {
        SendFraming::Length(n) => {
            assert_eq!(encodings.len(), 0);
            // The server's digits are passed on as they came (`03` is 3).
            let v = lengths.first().map(|v| v.trim_ascii()).unwrap_or_default();
            let sent = std::str::from_utf8(v).ok().filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(sent.and_then(|v| v.parse::<u64>().ok()), Some(n), "length {n} sent as {:?}", show(&out));
        }
        SendFraming::Chunked => {
            assert_eq!(encodings, [&b"chunked"[..]], "chunked sent as {:?}", show(&out));
        }
        SendFraming::Empty => {
            assert!(encodings.is_empty(), "a body-less answer sent as chunked: {:?}", show(&out));
        }
    }
});
