//! Per-key request rate limits in named zones (design §2: route match ─▶
//! rate limit). `proxy` builds one [`Zone`] per `[[rate_limits]]` entry,
//! maps each request to a key with [`Zone::key_for_request`] (or
//! [`key_for_ip`] / [`key_for_header`]) and asks [`Zone::check`]; something
//! long-lived calls [`Zone::sweep`] every few seconds to return memory.
//!
//! A zone owns its per-key state and nothing else: it reads no config file,
//! no clock and no request. The caller passes the time as milliseconds on
//! one monotonic clock (`crate::clock::now_ms()` in production, plain
//! numbers in tests), so every decision is deterministic. Checks are
//! synchronous, take one shard lock briefly, and allocate only for a key not
//! seen before. State is per node; it is not shared through the cluster.
//!
//! # Bucket zones: nginx `limit_req zone=… rate=R burst=B nodelay`
//!
//! [`ZoneKind::Bucket`] with `per_second` = R (a per-minute rate is R/60)
//! and `burst` = B, as GCRA (a token bucket kept as one timestamp):
//! - a key's bucket holds B + 1 requests and refills at R per second, never
//!   beyond B + 1. A new or long-idle key can send **B + 1 requests at once**
//!   (`rate=5r/s burst=10`: 11 pass, the 12th is refused); after that one
//!   request per 1/R s.
//! - Requests that fit pass at once (`nodelay`); the rest are refused, never
//!   queued or delayed. A refused request costs nothing: it does not push
//!   the key's next admission later (as in nginx).
//! - This is exactly nginx's `excess` accounting with `nodelay` (in
//!   requests rather than nginx's thousandths): a request passes iff
//!   `max(0, excess − R·elapsed + 1) ≤ B`, which becomes the new `excess`;
//!   a new key starts at `excess = 0`. GCRA's timestamp is `excess + 1`
//!   requests' worth of time ahead of the last admission.
//!
//! # Window zones: HAProxy `sc_http_req_rate(W)` with `deny if … gt N`
//!
//! [`ZoneKind::Window`] with `limit` = N and `window` = W: at most N admitted
//! requests in any rolling window of length W, estimated from two fixed
//! windows `[kW, (k+1)W)` as HAProxy does: at time `kW + e`,
//! `estimate = prev·(W − e)/W + cur`, where `prev` and `cur` are the requests
//! admitted in windows k − 1 and k. A request passes iff `estimate + 1 ≤ N`.
//! So N requests pass at once; a burst at the end of one window still weighs
//! fully at the start of the next (no double burst across the boundary) and
//! fades linearly over the following window.
//!
//! One difference from HAProxy: only **admitted** requests are counted.
//! HAProxy's stick table counts the refused ones too, so a client that keeps
//! hammering stays refused indefinitely; here a refused request costs
//! nothing, as in bucket zones, and `retry_after` is exact.
//!
//! # Decisions and `retry_after`
//!
//! [`Decision::Reject`] carries `retry_after`: the shortest wait after which
//! the same key's next request is admitted, provided no other request of
//! that key is admitted meanwhile, rounded up to whole milliseconds. (It is
//! exact: one millisecond earlier is refused.) For an HTTP `Retry-After`
//! header, round it up to whole seconds ([`Decision::retry_after_secs`]).
//!
//! # Keys and memory
//!
//! Keys are 64-bit keyed hashes of the client IP or of a header value
//! ([`key`]). A zone holds at most `max_keys` keys (rounded down to a
//! multiple of its shard count). A key whose state no longer matters (bucket
//! full again, window counts aged out) is dropped by [`Zone::sweep`] and
//! before a shard's map grows. When a shard is full, a new key first
//! displaces idle keys, then the keys nearest to idle (the oldest): such a
//! client's limit is forgotten early and it starts over with a full bucket.
//! [`ZoneStats::evicted_live`] counts those; nonzero means `max_keys` is
//! smaller than the set of active clients. Per key: 8 bytes of state in
//! bucket zones, 12 in window zones, plus the 8-byte key and the map's
//! overhead (see `bench/RATELIMIT.md` for measured memory).

mod bucket;
pub mod key;
mod table;
mod window;
mod zone;

use std::time::Duration;

pub use key::{key_for_header, key_for_ip};
pub use table::ZoneStats;
pub use zone::{KeySource, Zone, ZoneConfig, ZoneKind};

/// The outcome of one [`Zone::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass the request on.
    Allow,
    /// Refuse it (429). `retry_after`: see the module docs.
    Reject { retry_after: Duration },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// `retry_after` rounded up to whole seconds, for a `Retry-After`
    /// header; `None` for [`Decision::Allow`].
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Decision::Allow => None,
            Decision::Reject { retry_after } => Some(retry_after.as_millis().div_ceil(1_000) as u64),
        }
    }
}

/// A zone definition that cannot work. Config validation should catch these
/// first with file and line; these messages name the zone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit \"{zone}\": rate must be a number of requests above zero, got {rate}/s")]
    BadRate { zone: String, rate: f64 },
    #[error(
        "rate limit \"{zone}\": {rate}/s with burst {burst} takes over a year to refill; use a higher rate or a smaller burst"
    )]
    TooSlow { zone: String, rate: f64, burst: u32 },
    #[error("rate limit \"{zone}\": the limit per window must be at least 1 request")]
    ZeroLimit { zone: String },
    #[error("rate limit \"{zone}\": window must be between 1 ms and 365 days, got {window:?}")]
    BadWindow { zone: String, window: Duration },
    #[error("rate limit \"{zone}\": max_keys must be at least 1 (it bounds the zone's memory)")]
    ZeroMaxKeys { zone: String },
}
