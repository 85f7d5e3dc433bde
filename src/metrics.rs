//! Counters the data path updates: plain atomics, no lock, no allocation.
//! Metric names are constants here, shared with whoever exposes them (the
//! admin API in its own issue).

use std::sync::atomic::{AtomicU64, Ordering};

pub const ACTIVE_CONNECTIONS: &str = "sysmanage_active_connections";
pub const REQUESTS_TOTAL: &str = "sysmanage_requests_total";
pub const RETRIES_TOTAL: &str = "sysmanage_retries_total";

/// Process-wide data-path counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub active_connections: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Responses by class: 1xx..5xx at index 1..5.
    pub responses: [AtomicU64; 6],
    /// Upstream failures (connect, timeout, invalid, reset).
    pub upstream_errors: AtomicU64,
    pub no_server: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    active_connections: AtomicU64::new(0),
    requests: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    responses: [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ],
    upstream_errors: AtomicU64::new(0),
    no_server: AtomicU64::new(0),
};

pub fn count_response(status: u16) {
    let class = usize::from(status / 100).min(5);
    COUNTERS.responses[class].fetch_add(1, Ordering::Relaxed);
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
