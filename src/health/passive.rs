//! Passive health with nginx semantics: `max_fails` failed attempts within
//! `fail_timeout` make a server unavailable for `fail_timeout`; after that it
//! takes traffic again (the next request, or an active probe, decides).
//!
//! Called by `proxy` after every upstream attempt. Reading availability is a
//! single atomic load; recording a success is an atomic load unless failures
//! are pending; only failures take the small lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
pub struct PassiveHealth {
    max_fails: AtomicU32,
    fail_timeout_ms: AtomicU64,
    /// Milliseconds (on [`crate::clock`]) until which the server is out.
    down_until_ms: AtomicU64,
    /// Failures in the current window, readable without the lock.
    fails: AtomicU32,
    /// Start of the current failure window.
    window_start_ms: Mutex<u64>,
    /// Failed attempts since start (the stats page's "passive failures").
    total: AtomicU64,
}

impl PassiveHealth {
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        PassiveHealth {
            max_fails: AtomicU32::new(max_fails),
            fail_timeout_ms: AtomicU64::new(fail_timeout.as_millis() as u64),
            down_until_ms: AtomicU64::new(0),
            fails: AtomicU32::new(0),
            window_start_ms: Mutex::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// New settings from a reloaded config; the current state is kept.
    pub fn set_params(&self, max_fails: u32, fail_timeout: Duration) {
        self.max_fails.store(max_fails, Ordering::Relaxed);
        self.fail_timeout_ms.store(fail_timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether passive health keeps the server out at `now_ms`.
    pub fn is_down(&self, now_ms: u64) -> bool {
        now_ms < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Records a failed attempt; returns `true` when this failure took the
    /// server out.
    pub fn record_failure(&self, now_ms: u64) -> bool {
        self.total.fetch_add(1, Ordering::Relaxed);
        let max_fails = self.max_fails.load(Ordering::Relaxed);
        let fail_timeout_ms = self.fail_timeout_ms.load(Ordering::Relaxed);
        if max_fails == 0 {
            return false;
        }
        let mut start = self.window_start_ms.lock().unwrap_or_else(|e| e.into_inner());
        let fails = self.fails.load(Ordering::Relaxed);
        let fails = if fails == 0 || now_ms.saturating_sub(*start) >= fail_timeout_ms {
            *start = now_ms;
            1
        } else {
            fails + 1
        };
        if fails >= max_fails {
            self.fails.store(0, Ordering::Relaxed);
            self.down_until_ms.store(now_ms + fail_timeout_ms, Ordering::Relaxed);
            true
        } else {
            self.fails.store(fails, Ordering::Relaxed);
            false
        }
    }

    /// Failed attempts recorded since start.
    pub fn failures_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Records a successful attempt: pending failures are forgotten.
    pub fn record_success(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_fails_within_window_takes_server_out_for_fail_timeout() {
        let h = PassiveHealth::new(3, Duration::from_secs(10));
        assert!(!h.record_failure(1_000));
        assert!(!h.record_failure(2_000));
        assert!(!h.is_down(2_000));
        assert!(h.record_failure(3_000));
        assert!(h.is_down(3_000));
        assert!(h.is_down(12_999));
        assert!(!h.is_down(13_000));
    }

    #[test]
    fn failures_outside_window_do_not_add_up() {
        let h = PassiveHealth::new(2, Duration::from_secs(10));
        assert!(!h.record_failure(0));
        assert!(!h.record_failure(10_000)); // new window
        assert!(h.record_failure(15_000));
    }

    #[test]
    fn success_resets_and_zero_disables() {
        let h = PassiveHealth::new(2, Duration::from_secs(10));
        h.record_failure(0);
        h.record_success();
        assert!(!h.record_failure(1));
        let off = PassiveHealth::new(0, Duration::from_secs(10));
        for t in 0..100 {
            assert!(!off.record_failure(t));
        }
        assert!(!off.is_down(50));
    }
}
