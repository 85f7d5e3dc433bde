//! A process-wide monotonic millisecond clock, cheap to read on the hot path
//! and comparable across threads (stored in atomics by health state).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process.
pub fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// [`now_ms`] at `at`, for a caller that already read the time (an
/// instant before the clock's start counts as its start).
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(*START.get_or_init(Instant::now)).as_millis() as u64
}

/// The instant [`now_ms`] reads as `ms` ([`ms_at`] of it is `ms`), to arm a
/// timer at a deadline kept in this clock's time.
pub fn instant_at(ms: u64) -> Instant {
    *START.get_or_init(Instant::now) + Duration::from_millis(ms)
}
