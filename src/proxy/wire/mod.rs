//! HTTP/1.1 on the wire, for both directions: what the node reads from
//! clients and servers, what it writes to them, and what it refuses.
//!
//! Every byte from a client or a server is hostile until parsed here. The
//! rule that keeps the node from being a smuggling relay: **what the node
//! forwards must mean to the next hop exactly what it meant to the node**.
//! So the node never forwards framing it did not decide itself:
//!
//! - **Requests** ([`request`]). A head is parsed once (RFC 9112 §2-§5):
//!   no obs-fold, no whitespace before the colon, no CR, LF or NUL in a
//!   value, token characters in names. The body's framing is decided from
//!   what was parsed, before any hop-by-hop handling (§6.1-§6.3): a single
//!   `Transfer-Encoding` whose only coding is `chunked`, or
//!   `Content-Length` (one number per field, repeated fields the same
//!   number), or no body. Both together, any other coding, `Transfer-Encoding` in
//!   HTTP/1.0, or a length that is not one number: 400, and the connection
//!   closes. HTTP/1.1 needs exactly one `Host` (§3.2); an absolute-form
//!   target's authority replaces `Host` (§3.2.2). Field names with `_` are
//!   dropped (servers that fold `_` into `-` would read `Transfer_Encoding`
//!   as framing; nginx drops them too). The path is normalised for routing
//!   and forwarded normalised ([`path`]).
//! - **Upstream request heads** ([`request::encode_head`]) are written from
//!   the parsed fields, never copied: the client's `Content-Length`,
//!   `Transfer-Encoding`, `Expect` and hop-by-hop fields are left out, and
//!   exactly one framing field of the node's own that matches the bytes
//!   that follow is written. `Connection` can name fields to drop but
//!   never `Content-Length`, `Transfer-Encoding` or `Host`
//!   ([`fields::is_protected`]): such tokens are ignored, not obeyed.
//! - **Responses** ([`response`]). RFC 9112 §6.3 in order: no body for
//!   HEAD, 1xx, 204 and 304; then `Transfer-Encoding` (chunked last, else
//!   read to close); then `Content-Length` (repeated values must agree);
//!   else read to close. At most [`response::MAX_INTERIM`] interim answers.
//!   A server connection is reused only when its answer left no doubt: not
//!   after `Content-Length` with `Transfer-Encoding`, a body read to close,
//!   `Connection: close`, bytes after the body, any HEAD request (a late
//!   body would reach the next client; nginx does not reuse either), or a
//!   204/304 that announced a body.
//! - **Chunked coding** ([`chunked`]): strict CRLF, bounded lines and
//!   trailers; trailers are read and dropped, never forwarded.
//!
//! Each refusal is counted by reason ([`RequestFault`], [`ResponseFault`])
//! and logged at `warn`, at most a few lines a second ([`report_request`]).
//!
//! hyper still parses the request heads of connections it serves (bodies,
//! upgrades, HTTP/2); the fast path checks the first head of each such
//! connection with these rules before handing it over, hyper's own rules
//! agree on everything that changes framing (the `http1_differential` fuzz
//! target holds them to it), and the service applies the `Host`, `_` and
//! path rules to every request whoever parsed it.

pub mod chunked;
pub mod fields;
pub mod path;
pub mod request;
pub mod response;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::COUNTERS;

/// Why a request was refused, as counted in
/// `sysmanage_malformed_requests_total{reason}` (same order as
/// `metrics::MALFORMED_REQUEST_REASONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// Not HTTP/1.x syntax: bad request line, field syntax, bytes.
    Head,
    ContentLength,
    TransferEncoding,
    /// `Content-Length` and `Transfer-Encoding` together.
    LengthAndEncoding,
    /// No `Host`, more than one, or one that is not an authority.
    Host,
    /// A path that cannot be normalised safely.
    Path,
    /// A head over `limits.max_header_size` (431) or a URI too long (414).
    TooLarge,
    /// Another head error found by hyper (later requests of a connection
    /// hyper serves).
    Hyper,
    /// A client's body that does not decode (a broken chunk, or an HTTP/2
    /// body that disagrees with its `content-length`).
    Body,
}

/// Why a server's answer was refused or its connection distrusted, as
/// counted in `sysmanage_malformed_responses_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFault {
    Head,
    ContentLength,
    TooLarge,
    /// More than [`response::MAX_INTERIM`] 1xx answers.
    Interim,
    /// A 101 to a request that asked for no upgrade.
    UnexpectedUpgrade,
    /// A chunked body that does not decode.
    Chunked,
    /// A HEAD, 204 or 304 answer that announced a body: not reused.
    BodyAfterBodiless,
    /// Bytes after the end of the body: not reused.
    BytesAfterBody,
}

impl RequestFault {
    pub fn reason(self) -> &'static str {
        crate::metrics::MALFORMED_REQUEST_REASONS[self as usize]
    }
}

impl ResponseFault {
    pub fn reason(self) -> &'static str {
        crate::metrics::MALFORMED_RESPONSE_REASONS[self as usize]
    }
}

/// Counts a refused request and logs it at `warn` (rate-limited).
pub fn report_request(fault: RequestFault, client: Option<IpAddr>, detail: &dyn std::fmt::Display) {
    COUNTERS.malformed[fault as usize].fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = LOG_LIMIT.admit() {
        let client = client.map_or_else(|| "-".to_string(), |c| c.to_string());
        tracing::warn!(%client, reason = fault.reason(), suppressed, "malformed request refused: {detail}");
    }
}

/// Counts a server's answer refused or distrusted and logs it at `warn`
/// (rate-limited).
pub fn report_response(fault: ResponseFault, server: &str, detail: &dyn std::fmt::Display) {
    COUNTERS.malformed_responses[fault as usize].fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = LOG_LIMIT.admit() {
        tracing::warn!(%server, reason = fault.reason(), suppressed, "malformed response from a server: {detail}");
    }
}

/// At most [`LogLimit::PER_SECOND`] refusal lines a second, so a flood of
/// bad requests cannot fill the log; the next line admitted says how many
/// were left out.
struct LogLimit {
    /// The current second (high 32 bits) and lines logged in it (low 32).
    window: AtomicU64,
    suppressed: AtomicU64,
}

static LOG_LIMIT: LogLimit = LogLimit { window: AtomicU64::new(0), suppressed: AtomicU64::new(0) };

impl LogLimit {
    const PER_SECOND: u64 = 5;

    /// `Some(lines left out since the last admitted one)` when this line
    /// may be logged.
    fn admit(&self) -> Option<u64> {
        let now = crate::clock::now_ms() / 1000;
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (sec, n) = (cur >> 32, cur & 0xffff_ffff);
            let next = if sec == now & 0xffff_ffff { (sec << 32) | (n + 1) } else { ((now & 0xffff_ffff) << 32) | 1 };
            if sec == now & 0xffff_ffff && n >= Self::PER_SECOND {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_reasons_follow_the_metric_labels() {
        use RequestFault as Q;
        let all = [
            Q::Head,
            Q::ContentLength,
            Q::TransferEncoding,
            Q::LengthAndEncoding,
            Q::Host,
            Q::Path,
            Q::TooLarge,
            Q::Hyper,
            Q::Body,
        ];
        assert_eq!(all.len(), crate::metrics::MALFORMED_REQUEST_REASONS.len());
        assert_eq!(Q::LengthAndEncoding.reason(), "length_and_encoding");
        assert_eq!(Q::Body.reason(), "body");
        assert_eq!(ResponseFault::BytesAfterBody.reason(), "bytes_after_body");
        assert_eq!(ResponseFault::Head.reason(), "head");
    }

    #[test]
    fn the_log_limit_admits_a_few_lines_a_second() {
        let limit = LogLimit { window: AtomicU64::new(0), suppressed: AtomicU64::new(0) };
        let admitted = (0..100).filter(|_| limit.admit().is_some()).count() as u64;
        // The second may turn during the loop: at most two windows' worth.
        assert!((LogLimit::PER_SECOND..=2 * LogLimit::PER_SECOND).contains(&admitted), "{admitted}");
        assert!(limit.suppressed.load(Ordering::Relaxed) >= 100 - 2 * LogLimit::PER_SECOND);
    }
}
