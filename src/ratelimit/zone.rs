//! A named zone: its definition ([`ZoneConfig`]), which part of a request
//! keys it ([`KeySource`]), and the table of per-key state behind
//! [`Zone::check`].

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName};

use super::bucket::Bucket;
use super::key::{key_for_header, key_for_ip};
use super::table::{Table, ZoneStats};
use super::window::Window;
use super::{Decision, RateLimitError};

/// A zone's definition, as the proxy builds it from the validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    /// The `[[rate_limits]]` name; labels metrics and logs.
    pub name: String,
    pub kind: ZoneKind,
    pub key: KeySource,
    /// Most keys (clients) the zone remembers at once: its memory bound.
    pub max_keys: usize,
}

/// The limiting algorithm and its numbers. See the module docs of
/// [`super`] for the exact semantics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ZoneKind {
    /// Token bucket, nginx `limit_req rate=… burst=… nodelay`.
    Bucket {
        /// Sustained requests per second (a per-minute rate divided by 60).
        per_second: f64,
        /// Requests beyond the rate that may pass at once.
        burst: u32,
    },
    /// At most `limit` requests in any rolling `window`, HAProxy
    /// `sc_http_req_rate(window)`. Whole milliseconds.
    Window { limit: u32, window: Duration },
}

impl ZoneKind {
    /// `rate=Nr/m`: a bucket refilling `per_minute` requests per minute.
    pub fn per_minute(per_minute: f64, burst: u32) -> ZoneKind {
        ZoneKind::Bucket { per_second: per_minute / 60.0, burst }
    }
}

/// What identifies a client to a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The client's address as the proxy established it (after PROXY
    /// protocol or trusted forwarding headers).
    ClientIp,
    /// The value of a request header (the first one if repeated).
    Header(HeaderName),
}

/// Most keys per zone one node publishes to its cluster per round.
pub const PUBLISH_MAX: usize = 512;

/// One rate-limit zone. `Send + Sync`; share it behind an `Arc`.
pub struct Zone {
    name: String,
    key: KeySource,
    limiter: Limiter,
    /// Other nodes' counts per key (cluster-wide window zones), with the
    /// time (this process's clock) until which each holds. Consulted only
    /// once something was set.
    remote: [std::sync::Mutex<std::collections::HashMap<u64, (u32, u64)>>; REMOTE_SHARDS],
    has_remote: std::sync::atomic::AtomicBool,
}

const REMOTE_SHARDS: usize = 16;

/// The algorithm decides the shape of the per-key state, so each has its own
/// table; matching here keeps the hot path free of dynamic dispatch.
enum Limiter {
    Bucket(Table<Bucket>),
    Window(Table<Window>),
}

impl Zone {
    pub fn new(config: ZoneConfig) -> Result<Zone, RateLimitError> {
        let ZoneConfig { name, kind, key, max_keys } = config;
        if max_keys == 0 {
            return Err(RateLimitError::ZeroMaxKeys { zone: name });
        }
        let limiter = match kind {
            ZoneKind::Bucket { per_second, burst } => {
                Limiter::Bucket(Table::new(Bucket::new(&name, per_second, burst)?, max_keys))
            }
            ZoneKind::Window { limit, window } => {
                Limiter::Window(Table::new(Window::new(&name, limit, window)?, max_keys))
            }
        };
        Ok(Zone {
            name,
            key,
            limiter,
            remote: std::array::from_fn(|_| Default::default()),
            has_remote: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_source(&self) -> &KeySource {
        &self.key
    }

    /// The request's key in this zone, or `None` when the header the zone is
    /// keyed by is missing or empty: such requests are not limited (as nginx
    /// does not account requests with an empty key).
    pub fn key_for_request(&self, client_ip: IpAddr, headers: &HeaderMap) -> Option<u64> {
        match &self.key {
            KeySource::ClientIp => Some(key_for_ip(client_ip)),
            KeySource::Header(name) => {
                headers.get(name).map(|v| v.as_bytes()).filter(|v| !v.is_empty()).map(key_for_header)
            }
        }
    }

    /// Decides one request of `key` at `now_ms` (milliseconds on one
    /// monotonic clock) and records it if admitted.
    pub fn check(&self, key: u64, now_ms: u64) -> Decision {
        match &self.limiter {
            Limiter::Bucket(t) => t.check(key, now_ms),
            Limiter::Window(t) => t.check_extra(key, now_ms, self.remote_count(key, now_ms)),
        }
    }

    fn remote_shard(&self, key: u64) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (u32, u64)>> {
        let i = (super::key::mix(key) >> 40) as usize % REMOTE_SHARDS;
        self.remote[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the other nodes of the cluster counted for `key` and still holds.
    pub fn remote_count(&self, key: u64, now_ms: u64) -> u32 {
        if !self.has_remote.load(std::sync::atomic::Ordering::Relaxed) {
            return 0;
        }
        match self.remote_shard(key).get(&key) {
            Some(&(n, until)) if until > now_ms => n,
            _ => 0,
        }
    }

    /// Sets the other nodes' summed count for `key`, valid until `until_ms`
    /// (this process's clock); 0 forgets the key. Memory is bounded by what
    /// the peers publish (at most [`PUBLISH_MAX`] keys each per zone) and
    /// expired entries are dropped by [`Zone::sweep`].
    pub fn set_remote(&self, key: u64, count: u32, until_ms: u64) {
        self.has_remote.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut shard = self.remote_shard(key);
        if count == 0 {
            shard.remove(&key);
        } else {
            shard.insert(key, (count, until_ms));
        }
    }

    /// This node's counts now (window zones), the highest first: what a
    /// node of a cluster publishes. Keys below `min` are left out.
    pub fn local_counts(&self, now_ms: u64, min: u32) -> Vec<(u64, u32)> {
        match &self.limiter {
            Limiter::Bucket(_) => Vec::new(),
            Limiter::Window(t) => t.counts(now_ms, min, PUBLISH_MAX),
        }
    }

    /// The window of a window zone.
    pub fn window(&self) -> Option<Duration> {
        match &self.limiter {
            Limiter::Bucket(_) => None,
            Limiter::Window(t) => Some(t.limit().window()),
        }
    }

    /// Drops the keys whose state no longer matters at `now_ms` and returns
    /// spare map memory; returns how many keys were dropped. Cost: one pass
    /// over every key, one shard locked at a time. Call every few seconds.
    pub fn sweep(&self, now_ms: u64) -> usize {
        for shard in &self.remote {
            shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, (_, until)| *until > now_ms);
        }
        match &self.limiter {
            Limiter::Bucket(t) => t.sweep(now_ms),
            Limiter::Window(t) => t.sweep(now_ms),
        }
    }

    /// Keys held, refusals and early evictions so far. Locks every shard
    /// in turn: for metrics and status, not the request path.
    pub fn stats(&self) -> ZoneStats {
        match &self.limiter {
            Limiter::Bucket(t) => t.stats(),
            Limiter::Window(t) => t.stats(),
        }
    }

    /// The most keys this zone holds: `max_keys` rounded down to a multiple
    /// of its shard count (up to 63 fewer).
    pub fn max_keys(&self) -> usize {
        match &self.limiter {
            Limiter::Bucket(t) => t.capacity(),
            Limiter::Window(t) => t.capacity(),
        }
    }
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone").field("name", &self.name).field("key", &self.key).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::net::Ipv4Addr;

    fn zone(kind: ZoneKind, key: KeySource) -> Zone {
        Zone::new(ZoneConfig { name: "api".into(), kind, key, max_keys: 10_000 }).expect("valid zone")
    }

    #[test]
    fn seed_configurations_behave_as_in_nginx_and_haproxy() {
        // limit_req zone=api rate=10r/s burst=20 nodelay
        let api = zone(ZoneKind::Bucket { per_second: 10.0, burst: 20 }, KeySource::ClientIp);
        let k = key_for_ip(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!((0..30).filter(|_| api.check(k, 0).is_allowed()).count(), 21);
        // limit_req zone=auth rate=5r/s burst=10
        let auth = zone(ZoneKind::Bucket { per_second: 5.0, burst: 10 }, KeySource::ClientIp);
        assert_eq!((0..30).filter(|_| auth.check(k, 0).is_allowed()).count(), 11);
        assert_eq!(auth.check(k, 0), Decision::Reject { retry_after: Duration::from_millis(200) });
        // deny if { sc_http_req_rate(0) gt 20 } over 10 s
        let rate = zone(ZoneKind::Window { limit: 20, window: Duration::from_secs(10) }, KeySource::ClientIp);
        assert_eq!((0..30).filter(|_| rate.check(k, 0).is_allowed()).count(), 20);
        assert_eq!(rate.stats(), ZoneStats { keys: 1, rejected: 10, evicted_live: 0 });
    }

    #[test]
    fn per_minute_zone() {
        let z = zone(ZoneKind::per_minute(30.0, 0), KeySource::ClientIp);
        assert!(z.check(1, 0).is_allowed());
        assert_eq!(z.check(1, 0), Decision::Reject { retry_after: Duration::from_secs(2) });
        assert!(z.check(1, 2_000).is_allowed());
    }

    #[test]
    fn header_keyed_zone_ignores_requests_without_the_header() {
        let name = HeaderName::from_static("x-agent-hostname");
        let z = zone(ZoneKind::Bucket { per_second: 1.0, burst: 0 }, KeySource::Header(name.clone()));
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut headers = HeaderMap::new();
        assert_eq!(z.key_for_request(ip, &headers), None);
        headers.insert(name.clone(), HeaderValue::from_static(""));
        assert_eq!(z.key_for_request(ip, &headers), None);
        headers.insert(name.clone(), HeaderValue::from_static("host-a"));
        let a = z.key_for_request(ip, &headers).expect("key");
        headers.insert(name, HeaderValue::from_static("host-b"));
        let b = z.key_for_request(ip, &headers).expect("key");
        assert_eq!(a, key_for_header(b"host-a"));
        assert!(z.check(a, 0).is_allowed());
        assert!(!z.check(a, 0).is_allowed());
        assert!(z.check(b, 0).is_allowed());
    }

    #[test]
    fn ip_keyed_zone_uses_the_client_address() {
        let z = zone(ZoneKind::Bucket { per_second: 1.0, burst: 0 }, KeySource::ClientIp);
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(z.key_for_request(ip, &HeaderMap::new()), Some(key_for_ip(ip)));
    }

    #[test]
    fn invalid_zones_name_themselves() {
        let bad = |kind, max_keys| {
            Zone::new(ZoneConfig { name: "auth".into(), kind, key: KeySource::ClientIp, max_keys })
                .expect_err("invalid")
                .to_string()
        };
        let ok = ZoneKind::Bucket { per_second: 5.0, burst: 10 };
        assert_eq!(bad(ok, 0), "rate limit \"auth\": max_keys must be at least 1 (it bounds the zone's memory)");
        assert_eq!(
            bad(ZoneKind::Bucket { per_second: 0.0, burst: 1 }, 10),
            "rate limit \"auth\": rate must be a number of requests above zero, got 0/s"
        );
        assert_eq!(
            bad(ZoneKind::Window { limit: 0, window: Duration::from_secs(1) }, 10),
            "rate limit \"auth\": the limit per window must be at least 1 request"
        );
        assert!(bad(ZoneKind::Window { limit: 5, window: Duration::ZERO }, 10).contains("window must be between"));
    }

    #[test]
    fn reported_capacity_is_the_effective_cap() {
        let z = Zone::new(ZoneConfig {
            name: "z".into(),
            kind: ZoneKind::Bucket { per_second: 1.0, burst: 0 },
            key: KeySource::ClientIp,
            max_keys: 100_000,
        })
        .expect("valid");
        assert_eq!(z.max_keys(), 99_968);
        for k in 0..200_000 {
            z.check(k, 0);
        }
        assert!(z.stats().keys <= 99_968);
    }

    #[test]
    fn zones_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Zone>();
    }
}
