//! `[[rate_limits]]`: the zones routes name in `rate_limit`.

use std::collections::HashSet;
use std::time::Duration;

use super::Ctx;
use crate::config::raw::*;
use crate::config::*;

/// Every `[[rate_limits]]` entry. `cluster` says whether the node has a
/// `[cluster]` table, which cluster-wide zones need.
pub(super) fn validate_rate_limits(
    cx: &mut Ctx,
    raw: &[RawRateLimit],
    rp: KeyPath,
    cluster: bool,
) -> Vec<RateLimitConfig> {
    let mut names = HashSet::new();
    raw.iter().enumerate().map(|(i, rr)| validate_rate_limit(cx, rr, rp.index(i), &mut names, cluster)).collect()
}

/// One zone: a unique name, its kind, what it counts by, and its answer.
fn validate_rate_limit(
    cx: &mut Ctx,
    rr: &RawRateLimit,
    p: KeyPath,
    names: &mut HashSet<String>,
    cluster: bool,
) -> RateLimitConfig {
    let name = cx.name(&rr.name, p.key("name"), "rate limit", names);
    let kind = rate_kind(cx, rr, &p);
    let key = match rr.key.as_deref() {
        None | Some("client_ip") => RateKey::ClientIp,
        Some(k) => match k.strip_prefix("header:").map(|h| http::HeaderName::from_bytes(h.trim().as_bytes())) {
            Some(Ok(h)) => RateKey::Header(h),
            _ => {
                cx.err(p.key("key"), format!("expected \"client_ip\" or \"header:NAME\", got \"{k}\""));
                RateKey::ClientIp
            }
        },
    };
    let status = cx.int(rr.status, p.key("status"), 400, 599, 429) as u16;
    let max_keys = cx.int(rr.max_keys, p.key("max_keys"), 64, 100_000_000, 1_000_000) as usize;
    check_zone_limits(cx, &name, kind, &p);
    let cluster = match rr.cluster {
        Some(true) if !matches!(kind, RateKind::Window { .. }) => {
            cx.err(
                p.key("cluster"),
                "applies only to window zones (requests + window): a token bucket cannot be summed across nodes",
            );
            false
        }
        Some(true) if !cluster => {
            cx.err(p.key("cluster"), "needs a [cluster] table: a standalone node has no peers to sum with");
            false
        }
        c => c.unwrap_or(false),
    };
    RateLimitConfig { name, kind, key, status, max_keys, cluster }
}

/// The kind of a zone: a token bucket (`rate`, `burst`) or a window
/// (`requests`, `window`), never a mix of the two.
fn rate_kind(cx: &mut Ctx, rr: &RawRateLimit, p: &KeyPath) -> RateKind {
    match (&rr.rate, rr.requests, &rr.window) {
        (Some(r), None, None) => {
            let per_second = parse_rate(r).unwrap_or_else(|e| {
                cx.err(p.key("rate"), e);
                1.0
            });
            RateKind::Bucket { per_second, burst: cx.int(rr.burst, p.key("burst"), 0, 1_000_000, 0) as u32 }
        }
        (None, Some(_), Some(_)) => {
            if rr.burst.is_some() {
                cx.err(p.key("burst"), "only applies to rate zones (rate = ...), not to requests/window zones");
            }
            let window = cx.duration(&rr.window, p.key("window"), Duration::from_secs(10));
            if window < Duration::from_millis(1) {
                cx.err(p.key("window"), "must be at least 1ms");
            }
            RateKind::Window { limit: cx.int(rr.requests, p.key("requests"), 1, 1_000_000_000, 1) as u32, window }
        }
        _ => {
            cx.err(
                p.clone(),
                "set either rate (with burst), e.g. rate = \"10/s\", or requests and window, e.g. requests = 20, window = \"10s\"",
            );
            RateKind::Bucket { per_second: 1.0, burst: 0 }
        }
    }
}

/// The limiter's own limits (e.g. a bucket that would take years to
/// refill), checked now rather than failing at start.
fn check_zone_limits(cx: &mut Ctx, name: &str, kind: RateKind, p: &KeyPath) {
    let probe = crate::ratelimit::ZoneConfig {
        name: name.to_string(),
        kind: match kind {
            RateKind::Bucket { per_second, burst } => crate::ratelimit::ZoneKind::Bucket { per_second, burst },
            RateKind::Window { limit, window } => crate::ratelimit::ZoneKind::Window { limit, window },
        },
        key: crate::ratelimit::KeySource::ClientIp,
        max_keys: 64,
    };
    if let Err(e) = crate::ratelimit::Zone::new(probe) {
        cx.err(p.clone(), e.to_string());
    }
}

/// `"10/s"`, `"300/m"`, `"10r/s"` (nginx spelling) → requests per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    let expected = "expected a rate such as \"10/s\" or \"300/m\"";
    let (n, unit) = text.split_once('/').ok_or_else(|| format!("{expected}, got \"{text}\""))?;
    let n: f64 = n.trim().trim_end_matches('r').parse().map_err(|_| format!("{expected}, got \"{text}\""))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("{expected}, and above zero, got \"{text}\""));
    }
    match unit.trim() {
        "s" => Ok(n),
        "m" => Ok(n / 60.0),
        other => Err(format!("{expected}: unknown unit \"{other}\" (use s or m)")),
    }
}
