//! Metric names and the lock-free primitives the data path records into:
//! plain atomics and fixed-bucket histograms, no lock and no allocation per
//! request. The admin API renders them in Prometheus text format
//! (`crate::admin::prometheus`); the names here are the contract.

use std::sync::atomic::{AtomicU64, Ordering};

pub const ACTIVE_CONNECTIONS: &str = "sysmanage_active_connections";
pub const REQUEST_DURATION: &str = "sysmanage_request_duration_seconds";
pub const REQUESTS_TOTAL: &str = "sysmanage_requests_total";
pub const CPU_USAGE: &str = "sysmanage_cpu_usage_percent";
pub const MEMORY_USAGE: &str = "sysmanage_memory_usage_bytes";
pub const BACKEND_UP: &str = "sysmanage_backend_up";
pub const BACKEND_ACTIVE: &str = "sysmanage_backend_active_connections";
pub const BACKEND_REQUESTS: &str = "sysmanage_backend_requests_total";
pub const BACKEND_RESPONSE: &str = "sysmanage_backend_response_seconds";
pub const HEALTH_CHECKS: &str = "sysmanage_health_checks_total";
pub const STATE_CHANGES: &str = "sysmanage_backend_state_changes_total";
pub const RETRIES_TOTAL: &str = "sysmanage_retries_total";
pub const MALFORMED_TOTAL: &str = "sysmanage_malformed_requests_total";
pub const MALFORMED_RESPONSES: &str = "sysmanage_malformed_responses_total";

/// The `reason` labels of [`MALFORMED_TOTAL`], by index of
/// `Counters::malformed` (the proxy's `wire::RequestFault` in this order).
pub const MALFORMED_REQUEST_REASONS: [&str; 9] = [
    "head",
    "content_length",
    "transfer_encoding",
    "length_and_encoding",
    "host",
    "path",
    "too_large",
    "hyper",
    "body",
];
/// The `reason` labels of [`MALFORMED_RESPONSES`], by index of
/// `Counters::malformed_responses` (the proxy's `wire::ResponseFault`).
pub const MALFORMED_RESPONSE_REASONS: [&str; 8] = [
    "head",
    "content_length",
    "too_large",
    "interim",
    "unexpected_upgrade",
    "chunked",
    "body_after_bodiless",
    "bytes_after_body",
];
pub const WEBSOCKET_TUNNELS: &str = "sysmanage_websocket_tunnels";
pub const TUNNEL_BUFFERED_BYTES: &str = "sysmanage_tunnel_buffered_bytes";
pub const TLS_HANDSHAKE: &str = "sysmanage_tls_handshake_seconds";
pub const TLS_HANDSHAKE_FAILURES: &str = "sysmanage_tls_handshake_failures_total";
pub const RATELIMITED: &str = "sysmanage_ratelimited_total";
pub const SESSIONS: &str = "sysmanage_sessions";
pub const AFFINITY: &str = "sysmanage_affinity_total";
pub const TUNNEL_BYTES: &str = "sysmanage_tunnel_bytes_total";
pub const TUNNELS_ENDED: &str = "sysmanage_tunnels_ended_total";
/// The `reason` labels of [`TUNNELS_ENDED`], by index of
/// `Counters::tunnels_ended` (the proxy's `tunnel::End::index`).
pub const TUNNEL_END_REASONS: [&str; 10] = [
    "closed",
    "idle",
    "half_closed",
    "maintenance",
    "server_down",
    "not_active",
    "shutdown",
    "draining",
    "upgrade",
    "error",
];
pub const BUSY_POLL: &str = "sysmanage_busy_poll_total";
pub const CLUSTER_NODES: &str = "sysmanage_cluster_nodes";
pub const CLUSTER_SYNCING: &str = "sysmanage_cluster_syncing";
pub const CLUSTER_DATAGRAMS: &str = "sysmanage_cluster_datagrams_total";
pub const CLUSTER_DROPPED: &str = "sysmanage_cluster_datagrams_dropped_total";
pub const CLUSTER_BYTES: &str = "sysmanage_cluster_gossip_bytes_total";
pub const CLUSTER_SESSIONS: &str = "sysmanage_cluster_sessions_total";
pub const CLUSTER_STATE_BYTES: &str = "sysmanage_cluster_state_bytes";
pub const ACCEPT_ERRORS: &str = "sysmanage_accept_errors_total";
pub const STORE_PENDING: &str = "sysmanage_session_store_pending";
pub const STORE_WRITE_ERRORS: &str = "sysmanage_session_store_write_errors_total";
/// The `reason` labels of [`ACCEPT_ERRORS`], by index of `Counters::accept_errors`.
pub const ACCEPT_ERROR_REASONS: [&str; 3] = ["descriptors", "memory", "other"];
pub const CLIENT_TIMEOUTS: &str = "sysmanage_client_timeouts_total";
/// The `timeout` labels of [`CLIENT_TIMEOUTS`], by index of `Counters::client_timeouts`.
pub const CLIENT_TIMEOUT_KINDS: [&str; 2] = ["header", "send"];

/// Process-wide data-path counters.
#[derive(Debug)]
pub struct Counters {
    pub active_connections: AtomicU64,
    pub websocket_tunnels: AtomicU64,
    /// Bytes read from one side of a tunnel that the other side has not
    /// taken yet (the only buffers a tunnel holds; none while idle).
    pub tunnel_buffered_bytes: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Requests refused as malformed, by reason
    /// ([`MALFORMED_REQUEST_REASONS`]).
    pub malformed: [AtomicU64; MALFORMED_REQUEST_REASONS.len()],
    /// Servers' answers refused or distrusted, by reason
    /// ([`MALFORMED_RESPONSE_REASONS`]).
    pub malformed_responses: [AtomicU64; MALFORMED_RESPONSE_REASONS.len()],
    /// Responses by class: 1xx..5xx at index 1..5.
    pub responses: [AtomicU64; 6],
    /// Upstream failures (connect, timeout, invalid, reset).
    pub upstream_errors: AtomicU64,
    pub no_server: AtomicU64,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
    pub request_duration: Histogram,
    pub tls_handshake: Histogram,
    pub tls_handshake_failures: AtomicU64,
    /// Bytes read from clients / servers through WebSocket tunnels.
    pub tunnel_bytes_up: AtomicU64,
    pub tunnel_bytes_down: AtomicU64,
    /// WebSocket tunnels ended, by reason ([`TUNNEL_END_REASONS`]).
    pub tunnels_ended: [AtomicU64; TUNNEL_END_REASONS.len()],
    /// Requests whose affinity key had a live record on an available server.
    pub affinity_hits: AtomicU64,
    /// Keys seen for the first time (or expired): a server was assigned.
    pub affinity_misses: AtomicU64,
    /// Keys whose server was unavailable: moved to another server.
    pub affinity_reassigned: AtomicU64,
    /// Session records written here that the gossip queue had no room for.
    pub sessions_not_gossiped: AtomicU64,
    /// Session records from peers (gossip or catch-up) that won over the one held.
    pub sessions_merged: AtomicU64,
    /// Failed `accept` calls on the listeners, by reason ([`ACCEPT_ERROR_REASONS`]).
    pub accept_errors: [AtomicU64; ACCEPT_ERROR_REASONS.len()],
    /// Client connections closed by `header_timeout` or `send_timeout`
    /// ([`CLIENT_TIMEOUT_KINDS`]).
    pub client_timeouts: [AtomicU64; CLIENT_TIMEOUT_KINDS.len()],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static COUNTERS: Counters = Counters {
    active_connections: ZERO,
    websocket_tunnels: ZERO,
    tunnel_buffered_bytes: ZERO,
    requests: ZERO,
    retries: ZERO,
    malformed: [ZERO; MALFORMED_REQUEST_REASONS.len()],
    malformed_responses: [ZERO; MALFORMED_RESPONSE_REASONS.len()],
    responses: [ZERO; 6],
    upstream_errors: ZERO,
    no_server: ZERO,
    checks_ok: ZERO,
    checks_failed: ZERO,
    request_duration: Histogram::new(),
    tls_handshake: Histogram::new(),
    tls_handshake_failures: ZERO,
    tunnel_bytes_up: ZERO,
    tunnel_bytes_down: ZERO,
    tunnels_ended: [ZERO; TUNNEL_END_REASONS.len()],
    affinity_hits: ZERO,
    affinity_misses: ZERO,
    affinity_reassigned: ZERO,
    sessions_not_gossiped: ZERO,
    sessions_merged: ZERO,
    accept_errors: [ZERO; ACCEPT_ERROR_REASONS.len()],
    client_timeouts: [ZERO; CLIENT_TIMEOUT_KINDS.len()],
};

pub fn count_response(status: u16) {
    let class = usize::from(status / 100).min(5);
    COUNTERS.responses[class].fetch_add(1, Ordering::Relaxed);
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Upper bounds of the latency buckets, in microseconds (the last bucket,
/// +Inf, is implicit).
pub const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// A latency histogram with fixed buckets: recording is two atomic adds.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; index 14 is +Inf.
    pub buckets: [AtomicU64; 15],
    pub sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram { buckets: [ZERO; 15], sum_us: ZERO }
    }

    pub fn record_us(&self, us: u64) {
        let i = BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Current bucket counts (non-cumulative) and the sum.
    pub fn read(&self) -> ([u64; 15], u64) {
        let mut out = [0u64; 15];
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            *o = b.load(Ordering::Relaxed);
        }
        (out, self.sum_us.load(Ordering::Relaxed))
    }
}

/// The `q` quantile (0..1) of bucket counts, in seconds, interpolated
/// linearly inside the bucket as Prometheus' `histogram_quantile` does.
pub fn quantile(counts: &[u64; 15], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        if *c > 0 && (seen + c) as f64 >= rank {
            let lower = if i == 0 { 0 } else { BUCKETS_US[i - 1] } as f64;
            let upper = BUCKETS_US.get(i).copied().unwrap_or(BUCKETS_US[BUCKETS_US.len() - 1]) as f64;
            let within = (rank - seen as f64) / *c as f64;
            return Some((lower + (upper - lower) * within.clamp(0.0, 1.0)) / 1e6);
        }
        seen += c;
    }
    Some(BUCKETS_US[BUCKETS_US.len() - 1] as f64 / 1e6)
}

/// Differences `now - before`, per bucket.
pub fn delta(now: &[u64; 15], before: &[u64; 15]) -> [u64; 15] {
    let mut out = [0u64; 15];
    for i in 0..15 {
        out[i] = now[i].saturating_sub(before[i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::new();
        for _ in 0..90 {
            h.record_us(800); // bucket (500, 1000]
        }
        for _ in 0..10 {
            h.record_us(40_000); // bucket (25ms, 50ms]
        }
        h.record_us(99_000_000); // +Inf
        let (counts, sum) = h.read();
        assert_eq!(counts[1], 90);
        assert_eq!(counts[6], 10);
        assert_eq!(counts[14], 1);
        assert_eq!(sum, 90 * 800 + 10 * 40_000 + 99_000_000);
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!(p50 > 0.0005 && p50 <= 0.001, "{p50}");
        let p95 = quantile(&counts, 0.95).unwrap();
        assert!(p95 > 0.025 && p95 <= 0.05, "{p95}");
        assert_eq!(quantile(&[0; 15], 0.5), None);
    }
}
