//! A process-wide monotonic millisecond clock, cheap to read on the hot path
//! and comparable across threads (stored in atomics by health state).

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process.
pub fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
