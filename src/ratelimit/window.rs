//! Rolling-window zones, like HAProxy's `sc_http_req_rate(period)`: at most
//! `limit` requests in any window of `window` length, estimated from two
//! fixed windows (the previous one weighted by how much of it still overlaps
//! the rolling window, plus the current one). The approximation is HAProxy's
//! own (`freq_ctr` periods) and costs 12 bytes per key. See the module docs
//! of [`super`] for the exact rules.

use std::time::Duration;

use super::table::Limit;
use super::{Decision, RateLimitError};

const NS_PER_MS: u64 = 1_000_000;
const MAX_WINDOW_MS: u64 = 365 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    limit: u32,
    window_ms: u64,
}

/// Per-key state: 12 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowState {
    /// Index of the fixed window `cur` counts, `now_ms / window_ms`, wrapped
    /// to 32 bits: only the difference to the current index matters, and an
    /// entry older than two windows is idle and swept long before 2^32
    /// windows pass.
    window: u32,
    /// Requests admitted in that window.
    cur: u32,
    /// Requests admitted in the window before it.
    prev: u32,
}

/// Where `now_ms` falls relative to a state's window.
enum Position {
    /// The state's window is current; `elapsed` ms into it.
    Same { elapsed: u64 },
    /// The state's window is the previous one.
    Next { elapsed: u64 },
    /// Two or more windows later: the state carries nothing.
    Later { elapsed: u64 },
    /// The caller's clock is behind the state (threads read the clock before
    /// taking the shard lock): counted as the start of the state's window,
    /// which weighs the previous window fully, the strictest reading.
    Behind,
}

impl Window {
    pub(super) fn new(zone: &str, limit: u32, window: Duration) -> Result<Window, RateLimitError> {
        if limit == 0 {
            return Err(RateLimitError::ZeroLimit { zone: zone.to_string() });
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if !(1..=MAX_WINDOW_MS).contains(&window_ms) {
            return Err(RateLimitError::BadWindow { zone: zone.to_string(), window });
        }
        Ok(Window { limit, window_ms })
    }

    pub(super) fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    fn position(&self, state: &WindowState, now_ms: u64) -> Position {
        let index = now_ms / self.window_ms;
        let elapsed = now_ms % self.window_ms;
        match (index as u32).wrapping_sub(state.window) {
            0 => Position::Same { elapsed },
            1 => Position::Next { elapsed },
            d if d > u32::MAX / 2 => Position::Behind,
            _ => Position::Later { elapsed },
        }
    }

    /// The wait until a request would be admitted, `elapsed` ms into a window
    /// whose previous window admitted `prev` and which has admitted `cur`,
    /// if nothing else is admitted meanwhile. Exact to the millisecond.
    fn retry_ms(&self, prev: u64, cur: u64, elapsed: u64) -> u64 {
        let (n, w) = (u64::from(self.limit), self.window_ms);
        if cur < n {
            // Admitted at elapsed e' once prev·(w − e') ≤ (n − 1 − cur)·w,
            // as the previous window slides out (prev > 0, or we would have
            // admitted now).
            let room = (n - 1 - cur) * w / prev.max(1);
            let at = w - room.min(w);
            at.saturating_sub(elapsed).max(1)
        } else {
            // Full on its own: in the next window `cur` becomes the previous
            // count; admitted at e'' once cur·(w − e'') ≤ (n − 1)·w.
            let room = (n - 1) * w / cur;
            let at = w - room.min(w);
            (w - elapsed) + at
        }
    }
}

impl Limit for Window {
    type State = WindowState;

    fn fresh(&self, now_ms: u64) -> WindowState {
        WindowState { window: (now_ms / self.window_ms) as u32, cur: 0, prev: 0 }
    }

    fn admit(&self, state: &mut WindowState, now_ms: u64) -> Decision {
        self.admit_extra(state, now_ms, 0)
    }

    fn count(&self, state: &WindowState, now_ms: u64) -> u32 {
        let w = u128::from(self.window_ms);
        let (p, c) = match self.position(state, now_ms) {
            Position::Same { elapsed } => {
                (u128::from(state.prev) * (w - u128::from(elapsed)), u128::from(state.cur) * w)
            }
            Position::Next { elapsed } => (u128::from(state.cur) * (w - u128::from(elapsed)), 0),
            Position::Later { .. } => (0, 0),
            Position::Behind => (u128::from(state.prev) * w, u128::from(state.cur) * w),
        };
        // Rounded up: a node never under-reports.
        ((p + c).div_ceil(w)).min(u128::from(u32::MAX)) as u32
    }

    fn admit_extra(&self, state: &mut WindowState, now_ms: u64, extra: u32) -> Decision {
        let index = (now_ms / self.window_ms) as u32;
        let elapsed = match self.position(state, now_ms) {
            Position::Same { elapsed } => elapsed,
            Position::Next { elapsed } => {
                *state = WindowState { window: index, cur: 0, prev: state.cur };
                elapsed
            }
            Position::Later { elapsed } => {
                *state = WindowState { window: index, cur: 0, prev: 0 };
                elapsed
            }
            Position::Behind => 0,
        };
        let (p, c) = (u64::from(state.prev), u64::from(state.cur));
        let (n, w) = (u128::from(self.limit), u128::from(self.window_ms));
        // estimate = prev·(w − elapsed)/w + cur (+ other nodes' counts);
        // admit if estimate + 1 ≤ limit.
        let weighted = u128::from(p) * (w - u128::from(elapsed)) + (u128::from(c) + u128::from(extra) + 1) * w;
        if weighted <= n * w {
            // cur + 1 ≤ limit here, so this cannot overflow.
            state.cur += 1;
            Decision::Allow
        } else {
            let c = (c + u64::from(extra)).min(u64::from(self.limit));
            Decision::Reject { retry_after: Duration::from_millis(self.retry_ms(p, c, elapsed)) }
        }
    }

    fn remaining_ns(&self, state: &WindowState, now_ms: u64) -> u64 {
        let w = self.window_ms;
        let ms = match self.position(state, now_ms) {
            // `cur` weighs in until the end of the next window, `prev` until
            // the end of this one.
            Position::Same { elapsed } if state.cur > 0 => 2 * w - elapsed,
            Position::Same { elapsed } if state.prev > 0 => w - elapsed,
            Position::Next { elapsed } if state.cur > 0 => w - elapsed,
            Position::Behind => 2 * w,
            _ => 0,
        };
        ms * NS_PER_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u32, ms: u64) -> Window {
        Window::new("t", limit, Duration::from_millis(ms)).expect("valid window")
    }

    fn burst_at(w: &Window, s: &mut WindowState, now_ms: u64, n: usize) -> usize {
        (0..n).filter(|_| w.admit(s, now_ms).is_allowed()).count()
    }

    #[test]
    fn other_nodes_counts_are_added_and_the_count_is_the_rolling_estimate() {
        let w = window(10, 10_000);
        let mut s = w.fresh(0);
        let admitted = (0..10).filter(|_| w.admit_extra(&mut s, 0, 7).is_allowed()).count();
        assert_eq!(admitted, 3, "7 counted elsewhere leave room for 3");
        match w.admit_extra(&mut s, 1_000, 7) {
            Decision::Reject { retry_after } => assert!(retry_after > Duration::ZERO),
            Decision::Allow => panic!("over the summed limit"),
        }
        assert_eq!(w.count(&s, 5_000), 3);
        // Half of the previous window still weighs in; rounded up.
        assert_eq!(w.count(&s, 15_000), 2);
        assert_eq!(w.count(&s, 25_000), 0);
    }

    #[test]
    fn limit_requests_pass_within_one_window() {
        // HAProxy `deny if { sc_http_req_rate(0) gt 20 }` over 10 s: 20 pass.
        let w = window(20, 10_000);
        let mut s = w.fresh(0);
        assert_eq!(burst_at(&w, &mut s, 0, 25), 20);
        assert!(!w.admit(&mut s, 9_999).is_allowed());
    }

    #[test]
    fn the_window_boundary_does_not_reset_the_count() {
        // The flaw of plain fixed windows: 20 at the end of one window and 20
        // more at the start of the next. The rolling estimate refuses that.
        let w = window(20, 10_000);
        let mut s = w.fresh(9_999);
        assert_eq!(burst_at(&w, &mut s, 9_999, 20), 20);
        assert!(!w.admit(&mut s, 10_000).is_allowed());
        // Half the previous window has slid out at 15 s: 10 more fit.
        assert_eq!(burst_at(&w, &mut s, 15_000, 20), 10);
        // At 20 s the 10 admitted at 15 s are the previous window, fully weighted.
        assert_eq!(burst_at(&w, &mut s, 20_000, 20), 10);
        // Two quiet windows later everything is forgotten.
        assert_eq!(burst_at(&w, &mut s, 40_000, 30), 20);
    }

    #[test]
    fn previous_window_weight_is_linear_in_elapsed_time() {
        let w = window(10, 1_000);
        let mut s = w.fresh(0);
        assert_eq!(burst_at(&w, &mut s, 0, 10), 10);
        // 250 ms into the next window the estimate is 10·0.75 = 7.5: two more fit
        // (7.5 + 1 ≤ 10, 7.5 + 2 ≤ 10, 7.5 + 3 > 10).
        assert_eq!(burst_at(&w, &mut s, 1_250, 5), 2);
    }

    #[test]
    fn retry_after_is_the_exact_wait_to_admission() {
        for (limit, ms) in [(20, 10_000), (1, 1_000), (3, 7), (5, 60_000), (100, 1_000)] {
            let w = window(limit, ms);
            let mut s = w.fresh(0);
            let mut now = 0;
            let mut rejections = 0;
            for i in 0..400u64 {
                match w.admit(&mut s, now) {
                    Decision::Allow => now += i % 3,
                    Decision::Reject { retry_after } => {
                        rejections += 1;
                        let wait = retry_after.as_millis() as u64;
                        assert!(wait > 0);
                        let mut probe = s;
                        assert!(
                            !w.admit(&mut probe, now + wait - 1).is_allowed(),
                            "limit {limit} window {ms} at {now}"
                        );
                        let mut probe = s;
                        assert!(w.admit(&mut probe, now + wait).is_allowed(), "limit {limit} window {ms} at {now}");
                        now += wait / 3 + (i % 2);
                    }
                }
            }
            assert!(rejections > 10, "limit {limit} window {ms}: the test did not exercise rejections");
        }
    }

    #[test]
    fn retry_after_values_at_known_points() {
        let w = window(20, 10_000);
        let mut s = w.fresh(0);
        burst_at(&w, &mut s, 0, 20);
        // Full on its own at 0: next window, once 20·(10 s − e) ≤ 19·10 s, e = 500 ms.
        assert_eq!(w.admit(&mut s, 0), Decision::Reject { retry_after: Duration::from_millis(10_500) });
        assert_eq!(w.admit(&mut s, 10_000), Decision::Reject { retry_after: Duration::from_millis(500) });
        // Limit 1: the previous window must slide out completely.
        let w = window(1, 1_000);
        let mut s = w.fresh(0);
        assert!(w.admit(&mut s, 400).is_allowed());
        assert_eq!(w.admit(&mut s, 400), Decision::Reject { retry_after: Duration::from_millis(1_600) });
        assert!(w.admit(&mut s, 2_000).is_allowed());
    }

    #[test]
    fn only_admitted_requests_count() {
        let w = window(5, 1_000);
        let mut s = w.fresh(0);
        assert_eq!(burst_at(&w, &mut s, 0, 5), 5);
        // Hammering while refused does not push admission further out.
        for t in 1..2_000 {
            let _ = w.admit(&mut s, t);
        }
        assert!(w.admit(&mut s, 2_000).is_allowed());
    }

    #[test]
    fn remaining_tracks_when_the_state_stops_mattering() {
        let w = window(20, 10_000);
        let mut s = w.fresh(3_000);
        assert_eq!(w.remaining_ns(&s, 3_000), 0);
        assert!(w.admit(&mut s, 3_000).is_allowed());
        assert_eq!(w.remaining_ns(&s, 3_000), 17_000 * NS_PER_MS);
        assert_eq!(w.remaining_ns(&s, 12_000), 8_000 * NS_PER_MS);
        assert_eq!(w.remaining_ns(&s, 19_999), NS_PER_MS);
        assert_eq!(w.remaining_ns(&s, 20_000), 0);
        // A refused request in the next window rolls the state without extending it.
        let w = window(1, 10_000);
        let mut s = w.fresh(3_000);
        assert!(w.admit(&mut s, 3_000).is_allowed());
        assert!(!w.admit(&mut s, 12_000).is_allowed());
        assert_eq!(w.remaining_ns(&s, 12_000), 8_000 * NS_PER_MS);
    }

    #[test]
    fn a_clock_behind_the_state_counts_strictly_and_does_not_reset() {
        let w = window(2, 1_000);
        let mut s = w.fresh(5_000);
        assert_eq!(burst_at(&w, &mut s, 5_000, 2), 2);
        assert!(!w.admit(&mut s, 4_999).is_allowed());
        assert!(!w.admit(&mut s, 0).is_allowed());
        assert_eq!(burst_at(&w, &mut s, 7_000, 3), 2);
    }

    #[test]
    fn invalid_windows_are_refused() {
        assert!(matches!(Window::new("z", 0, Duration::from_secs(1)), Err(RateLimitError::ZeroLimit { .. })));
        assert!(matches!(Window::new("z", 1, Duration::from_micros(999)), Err(RateLimitError::BadWindow { .. })));
        assert!(matches!(
            Window::new("z", 1, Duration::from_secs(400 * 86_400)),
            Err(RateLimitError::BadWindow { .. })
        ));
        assert!(Window::new("z", u32::MAX, Duration::from_secs(365 * 86_400)).is_ok());
    }
}
