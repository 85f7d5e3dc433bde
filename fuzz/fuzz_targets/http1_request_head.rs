//! libFuzzer target for the fast path's request head parser
//! (`sysmanage_node::proxy::wire::request::parse`), the checks every request
//! passes (`request::check`) and the head written to servers
//! (`request::encode_head`). Run with `bench/fuzz_http1.sh`.
//!
//! Invariants:
//! - `parse` takes a head (`Parsed::Request`) only when it fills the buffer
//!   exactly: no strict prefix and no extension of such an input is taken;
//! - a taken request is a body-less HTTP/1.1 `GET` carrying no framing,
//!   upgrade or keep-alive field;
//! - after `check` succeeds: exactly one `host` field, no field name with
//!   `_`, a path starting with '/' (or `*` for OPTIONS) that `path::normalize`
//!   leaves as it is (borrowed when it has no escape; escapes that are kept
//!   make `normalize` allocate, but the result must be the same string);
//! - the upstream head `encode_head` writes from it re-parses with httparse
//!   as one complete head of exactly its length, with the same method and
//!   target, the same fields in the same order, and no `content-length` or
//!   `transfer-encoding`.

#![no_main]

use std::borrow::Cow;
use std::net::SocketAddr;

use http::{header, Method, Version};
use libfuzzer_sys::fuzz_target;
use sysmanage_node::proxy::wire::path;
use sysmanage_node::proxy::wire::request::{self, BodyFraming, Parsed};

const MAX_HEAD: usize = 8192;

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Prefixes of a taken head: all of them for short heads, a spread of
/// them (and the last few) for long ones, to keep the target fast.
fn prefix_lengths(len: usize) -> Vec<usize> {
    if len <= 512 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..64).map(|i| i * len / 64).collect();
    v.extend(len.saturating_sub(8)..len);
    v.extend(0..32);
    v
}

fuzz_target!(|data: &[u8]| {
    let req = request::parse(data, MAX_HEAD);
    let Parsed::Request(mut req) = req else { return };

    // A complete head fills the buffer exactly.
    for n in prefix_lengths(data.len()) {
        if let Parsed::Request(_) = request::parse(&data[..n], MAX_HEAD) {
            panic!("a {n}-byte prefix of the {}-byte head {:?} was taken as a request", data.len(), show(data));
        }
    }
    for extra in [&b"G"[..], b"\r\n", b"\n", b" "] {
        let longer = [data, extra].concat();
        if let Parsed::Request(_) = request::parse(&longer, MAX_HEAD) {
            panic!("{:?} followed by {:?} was taken as a request", show(data), show(extra));
        }
    }

    // What the fast path takes.
    assert!(data.len() <= MAX_HEAD);
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.version(), Version::HTTP_11);
    for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION, header::UPGRADE, header::EXPECT]
    {
        assert!(!req.headers().contains_key(&name), "{name} in a fast-path request: {:?}", show(data));
    }
    assert!(http_body::Body::is_end_stream(req.body()));

    if request::check(&mut req, "127.0.0.1:80".parse::<SocketAddr>().unwrap()).is_err() {
        return;
    }
    let headers = req.headers();
    assert_eq!(headers.get_all(header::HOST).iter().count(), 1, "Host fields after check: {headers:?}");
    assert!(headers.keys().all(|k| !k.as_str().contains('_')), "a name with '_' after check: {headers:?}");
    let uri = req.uri();
    assert!(uri.scheme().is_none() && uri.authority().is_none(), "not origin form after check: {uri}");
    let p = uri.path();
    if !(req.method() == Method::OPTIONS && p == "*") {
        assert!(p.starts_with('/'), "path {p:?} after check");
        match path::normalize(p) {
            Ok(Cow::Borrowed(n)) => assert_eq!(n, p),
            // Kept escapes (`%20`) make `normalize` take its slow path;
            // the path must still be a fixed point.
            Ok(Cow::Owned(n)) => {
                assert!(p.contains('%'), "path {p:?} is not normal after check: normalises to {n:?}");
                assert_eq!(n, p, "path {p:?} is not normal after check");
            }
            Err(e) => panic!("path {p:?} after check does not normalise: {e}"),
        }
    }

    // The upstream head.
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let head = request::encode_head(req.method(), target, headers, None, BodyFraming::None);
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    let status = parsed.parse(&head);
    assert_eq!(
        status,
        Ok(httparse::Status::Complete(head.len())),
        "the upstream head {:?} does not parse as one head",
        show(&head)
    );
    assert_eq!(parsed.method, Some(req.method().as_str()));
    assert_eq!(parsed.path, Some(target));
    assert_eq!(parsed.version, Some(1));
    let sent: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(k, _)| *k != header::EXPECT && *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING)
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let got: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(got, sent, "the upstream head {:?} does not carry the request's fields", show(&head));
    for h in parsed.headers.iter() {
        assert!(
            !h.name.eq_ignore_ascii_case("content-length") && !h.name.eq_ignore_ascii_case("transfer-encoding"),
            "a framing field in a body-less upstream head: {:?}",
            show(&head)
        );
    }
});
