//! Header-field rules shared by both directions: the hop-by-hop list and
//! `Connection`, `Content-Length` and `Transfer-Encoding`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop fields (RFC 9110 §7.6.1, and the non-standard
/// `Keep-Alive` and `Proxy-Connection` that clients still send).
fn fixed_hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::TE,
        &header::TRAILER,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
}

/// Whether `name` is one of [`fixed_hop_by_hop`], compared without hashing.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    fixed_hop_by_hop().contains(&name)
}

/// Fields a `Connection` token can never remove: the node decides framing
/// and `Host` itself, so a client (or server) naming them in `Connection`
/// is ignored rather than obeyed. Obeying is how `Connection:
/// content-length` once sent a body upstream with no framing field at all.
pub fn is_protected(token: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"].iter().any(|p| token.eq_ignore_ascii_case(p))
}

/// Removes hop-by-hop fields, and every field named in `Connection` except
/// the protected ones ([`is_protected`]). With `keep_upgrade` (a WebSocket
/// handshake being passed through) `Connection: upgrade` and `Upgrade`
/// stay.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Fast path, the common case: one pass over the few names present, no
    // hashing, when none of them is hop-by-hop.
    let hop = |k: &HeaderName| is_hop_by_hop(k) || k == header::PROXY_AUTHORIZATION;
    if !keep_upgrade && !headers.keys().any(hop) {
        return;
    }
    // Names listed in Connection: collected first, since removing while
    // iterating the same map is not possible. Rare, so a small Vec is fine.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || is_protected(token) || (keep_upgrade && token.eq_ignore_ascii_case(b"upgrade")) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in fixed_hop_by_hop().into_iter().chain([&header::PROXY_AUTHORIZATION]) {
        if keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A byte of a token, such as a field name (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a `Content-Length` field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadContentLength {
    /// An item that is not a decimal number of at most 19 digits.
    Invalid,
    /// A number other than the one seen before.
    Conflicting,
}

/// Adds one `Content-Length` field value to `length` (the number seen so
/// far): every comma-separated item must be the same decimal number, in
/// this field and the ones before (RFC 9110 §8.6, RFC 9112 §6.3 item 5).
pub fn fold_content_length(value: &[u8], length: &mut Option<u64>) -> Result<(), BadContentLength> {
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(BadContentLength::Invalid);
        }
        let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(BadContentLength::Conflicting);
        }
        *length = Some(n);
    }
    Ok(())
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked` (the
/// rule for responses, RFC 9112 §6.3 item 4).
pub fn ends_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Whether a request asks to switch to WebSocket (HTTP/1.1 Upgrade).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket")));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    upgrade && connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_fixed_and_named_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn connection_never_removes_framing_or_host() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Content-Length, host ,TRANSFER-ENCODING, x-a"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::HOST, HeaderValue::from_static("h"));
        h.insert("x-a", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        assert_eq!(h[header::HOST], "h");
        assert!(!h.contains_key("x-a") && !h.contains_key(header::CONNECTION), "{h:?}");
    }

    #[test]
    fn keeps_upgrade_for_websocket() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn content_length_values_must_agree() {
        let fold = |vals: &[&str]| {
            let mut l = None;
            vals.iter().try_for_each(|v| fold_content_length(v.as_bytes(), &mut l)).map(|()| l)
        };
        assert_eq!(fold(&["5"]), Ok(Some(5)));
        assert_eq!(fold(&["5, 5", " 5 "]), Ok(Some(5)));
        assert_eq!(fold(&["5", "6"]), Err(BadContentLength::Conflicting));
        for bad in ["", "+5", "-1", "0x5", "5 5", "5,", "99999999999999999999"] {
            assert_eq!(fold(&[bad]), Err(BadContentLength::Invalid), "{bad:?}");
        }
        assert!(ends_chunked(b"gzip, Chunked") && !ends_chunked(b"chunked, gzip") && !ends_chunked(b"xchunked"));
    }
}
